/*
 * normalize_internal: the conversions every source kind's normalize hook
 * (source_<name>.c) shares, defined in normalize.c, so that money, time and
 * ids come out of one set of rules whatever the source. Not for use outside
 * the kinds: the entry points are the hooks of source_kind.h.
 *
 * The canonical order (schema/order.schema.json): source, external_id,
 * number, status, financial_status, fulfillment_status, currency, total,
 * subtotal, tax, shipping, refunded, customer_email, shipping_address,
 * lines, created_at, updated_at, partial. A partial order (partial = true)
 * carries only source, external_id, updated_at, partial and the fields the
 * payload really knows; it is merged into the stored order instead of
 * replacing it. State comes only from the body: a topic (an unsigned header
 * for Shopify and WooCommerce) never sets a field of the order; it is only
 * checked against what the body is.
 *
 * Conventions: functions return 0, -EINVAL (the value is unusable; err filled
 * with the field's path), -EPROTO (see norm_mismatch) or -ENOMEM. Paths are the JSON paths of the
 * sender's payload, because that is what the sender can fix.
 */
#ifndef ORDERSYNC_NORMALIZE_INTERNAL_H
#define ORDERSYNC_NORMALIZE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Big enough for any amount we accept (|x| < 1e15 with up to 6 decimals). */
#define NORM_MONEY_SIZE 40
/* "2026-01-02T03:04:05Z" and its NUL. */
#define NORM_TIME_SIZE 21
/* Ids: an int64 in decimal or a sender's string id, capped. */
#define NORM_ID_SIZE 256

/* Where a conversion reports its error; err_size 0 discards the message. */
struct norm_err {
    char *buf;
    size_t size;
};

/* Formats "field '<path>' <what>" into e and returns -EINVAL. */
int norm_fail(struct norm_err *e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The body is a usable order or refund, but not the kind the sender's topic
 * names (which is not signed): formats the reason into e and returns -EPROTO.
 */
int norm_mismatch(struct norm_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Digits after the decimal point of a currency's minor unit (ISO 4217; JPY 0, KWD 3, else 2). */
int norm_minor_units(const char *currency);

/* Reads an ISO 4217 code in either case into out as upper case. Required. */
int norm_currency(const json_t *v, const char *path, char out[4], struct norm_err *e);

/*
 * Money as a decimal string. A string matching ^-?[0-9]+(\.[0-9]+)?$ is kept
 * verbatim (Shopify's and WooCommerce's totals: exact as sent). A JSON number
 * (WooCommerce line price) is rounded to `minor` decimals; see normalize.c for
 * why that is exact. Anything else is -EINVAL.
 */
int norm_money(const json_t *v, int minor, const char *path, char out[NORM_MONEY_SIZE],
               struct norm_err *e);

/* An integer amount in minor units (Stripe) → decimal string with `minor` decimals. */
void norm_money_minor(int64_t amount, int minor, char out[NORM_MONEY_SIZE]);

/*
 * Decimal string arithmetic for sums of amounts (refund totals, Woo subtotal):
 * values are parsed into an integer count of 10^-6 units (and the number of
 * decimals they were written with, so a sum can be printed as precisely as its
 * terms). Returns -EINVAL on a bad or too large value (> 12 integer digits or
 * > 6 decimals).
 */
int norm_decimal_parse(const char *s, int64_t *micros, int *decimals);
void norm_decimal_format(int64_t micros, int decimals, char out[NORM_MONEY_SIZE]);

/* RFC 3339 date-time with any offset (or none when assume_utc) → UTC "...Z". */
int norm_time(const json_t *v, bool assume_utc, const char *path, char out[NORM_TIME_SIZE],
              struct norm_err *e);
/* Unix seconds (years 0..9999) → RFC 3339 UTC. */
void norm_time_epoch(int64_t t, char out[NORM_TIME_SIZE]);
/* A JSON integer of Unix seconds → RFC 3339 UTC; -EINVAL when not one. */
int norm_epoch(const json_t *v, const char *path, char out[NORM_TIME_SIZE], struct norm_err *e);

/* An id: a non-empty string kept as is, or an integer printed exactly. */
int norm_id(const json_t *v, const char *path, char out[NORM_ID_SIZE], struct norm_err *e);

/* A positive integer quantity. */
int norm_quantity(const json_t *v, const char *path, json_int_t *out, struct norm_err *e);

/*
 * A sender's array of line items → canonical lines [{sku, title, quantity,
 * unit_price}] in *out (new reference). array_name is the array's path in
 * error messages ("line_items", "data.lines"); title_key and price_key name
 * the item's title and price fields; prices go through norm_money with
 * `minor`. A missing, empty or non-string sku becomes null, unless strict
 * (canonical input), where a sku must be a string or null and a price a
 * decimal string.
 */
int norm_lines(const json_t *items, const char *array_name, const char *title_key,
               const char *price_key, int minor, bool strict, json_t **out, struct norm_err *e);

/* v if it is a non-empty string, else NULL (borrowed). */
const char *norm_str(const json_t *v);

/* A new JSON string for s, or JSON null for NULL/"" (new reference). */
json_t *norm_string_or_null(const char *s);

/*
 * Sets obj[key] = v (takes ownership of v). On failure sets *oom; callers
 * check it once after a run of sets instead of after each.
 */
void norm_put(json_t *obj, const char *key, json_t *v, bool *oom);

/*
 * Builds the canonical address object from already-extracted parts (each may
 * be NULL or ""); returns JSON null when every part is empty (new reference).
 */
json_t *norm_address(const char *name, const char *line1, const char *line2, const char *city,
                     const char *region, const char *postal_code, const char *country);

/* "first last" from two optional parts into out; empty when both are. */
void norm_join_name(const char *first, const char *last, char *out, size_t size);

/*
 * A new canonical order holding source and external_id, or NULL (new
 * reference). Callers add the other fields in schema order and end with
 * norm_order_finish().
 */
json_t *norm_order_new(const char *source, const char *external_id);
/* Adds created_at (NULL: omitted), updated_at and partial; returns 0 or -ENOMEM. */
int norm_order_finish(json_t *order, const char *created_at, const char *updated_at, bool partial);

#endif
