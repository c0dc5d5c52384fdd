/*
 * source_woocommerce: WooCommerce, as a source kind (source_kind.h).
 * Webhooks carry REST API v3 order bodies, signed (X-WC-Webhook-Signature);
 * the topic header is not signed, and WooCommerce never retries a failed
 * delivery (hence polling for reconciliation). Totals are decimal strings
 * (kept verbatim); a line's `price` is a JSON number, rounded to the
 * currency's minor units by norm_money. Dates ending in _gmt carry no zone
 * but are UTC. There is no order-level subtotal or refunded total: both are
 * summed from line_items[] and refunds[].
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalize_internal.h"
#include "source_internal.h"
#include "source_kind.h"

struct woo_status {
    const char *status;
    const char *financial; /* NULL: depends on whether date_paid_gmt is set */
    const char *fulfillment;
};

/*
 * WooCommerce order statuses. Shops add custom ones (plugins for "shipped",
 * "awaiting-pickup"...): those are open orders, paid or not by date_paid_gmt,
 * rather than a 422 that WooCommerce would never retry.
 */
static struct woo_status map_status(const char *s)
{
    static const struct {
        const char *woo;
        struct woo_status to;
    } table[] = {
        {"pending", {"open", "pending", "unfulfilled"}},
        {"processing", {"open", "paid", "unfulfilled"}},
        {"on-hold", {"open", "pending", "unfulfilled"}},
        {"completed", {"closed", "paid", "fulfilled"}},
        {"cancelled", {"cancelled", NULL, "unfulfilled"}},
        {"refunded", {"closed", "refunded", "unfulfilled"}},
        {"failed", {"open", "unpaid", "unfulfilled"}},
        {"checkout-draft", {"open", "pending", "unfulfilled"}},
        /* A trashed order is what order.deleted reports when the body is full. */
        {"trash", {"cancelled", NULL, "unfulfilled"}},
    };
    struct woo_status other = {"open", NULL, "unfulfilled"};

    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcmp(s, table[i].woo) == 0)
            return table[i].to;
    }
    return other;
}

/* Sums decimal strings found at items[i].<field>; `negate` for refunds ("-5.00"). */
static int sum_field(const json_t *items, const char *array_name, const char *field, bool negate,
                     int minor, char out[NORM_MONEY_SIZE], int64_t *micros_out, struct norm_err *e)
{
    int64_t sum = 0;
    int decimals = minor;
    const json_t *it;
    size_t i;
    char path[96];

    if (items != NULL && !json_is_null(items) && !json_is_array(items))
        return norm_fail(e, array_name, "must be an array");
    json_array_foreach(items, i, it)
    {
        const char *s = json_string_value(json_object_get(it, field));
        int64_t micros;
        int d;

        snprintf(path, sizeof(path), "%s[%zu].%s", array_name, i, field);
        if (s == NULL || norm_decimal_parse(s, &micros, &d) < 0)
            return norm_fail(e, path, "must be a decimal amount like \"12.34\"");
        if (__builtin_add_overflow(sum, negate ? -micros : micros, &sum))
            return norm_fail(e, path, "makes the sum out of range");
        if (d > decimals)
            decimals = d;
    }
    norm_decimal_format(sum, decimals, out);
    *micros_out = sum;
    return 0;
}

static json_t *address(const json_t *a)
{
    char name[512];

    if (!json_is_object(a))
        return json_null();
    norm_join_name(norm_str(json_object_get(a, "first_name")),
                   norm_str(json_object_get(a, "last_name")), name, sizeof(name));
    return norm_address(
        name, norm_str(json_object_get(a, "address_1")), norm_str(json_object_get(a, "address_2")),
        norm_str(json_object_get(a, "city")), norm_str(json_object_get(a, "state")),
        norm_str(json_object_get(a, "postcode")), norm_str(json_object_get(a, "country")));
}

/*
 * {"id": n} is how WooCommerce sends a deleted resource (it drops everything
 * else), so the body itself says "deleted": the order is cancelled whatever
 * the topic header claims, and a topic other than order.deleted contradicts
 * it. The header is unsigned; the body is the only thing that sets state.
 */
static int thin(const char *source, const char *topic, const char *id, time_t received_at,
                json_t **out, struct norm_err *e)
{
    char updated[NORM_TIME_SIZE];
    bool oom = false;
    json_t *o;

    if (topic == NULL || strcmp(topic, "order.deleted") != 0)
        return norm_mismatch(e,
                             "the body is a deletion notice (only an id), not what topic "
                             "'%.64s' says",
                             topic ? topic : "");
    o = norm_order_new(source, id);
    if (o == NULL)
        return -ENOMEM;
    norm_put(o, "status", json_string("cancelled"), &oom);
    norm_time_epoch((int64_t)received_at, updated);
    if (oom || norm_order_finish(o, NULL, updated, true) < 0) {
        json_decref(o);
        return -ENOMEM;
    }
    *out = o;
    return 0;
}

/* `received_at` dates a deletion notice, whose body carries no date. */
static int woo_normalize(const char *source, const char *topic, const json_t *p, time_t received_at,
                         json_t **out, char *err, size_t err_size)
{
    struct norm_err ee = {err, err_size}, *e = &ee;
    char id[NORM_ID_SIZE], currency[4], created[NORM_TIME_SIZE], updated[NORM_TIME_SIZE];
    char total[NORM_MONEY_SIZE], subtotal[NORM_MONEY_SIZE], tax[NORM_MONEY_SIZE];
    char shipping[NORM_MONEY_SIZE], refunded[NORM_MONEY_SIZE], number[NORM_ID_SIZE];
    const json_t *status_v, *number_v;
    struct woo_status st;
    const char *fin;
    json_t *o = NULL, *ls = NULL;
    bool oom = false, paid;
    int64_t micros, refunded_micros;
    int minor, rc, d;

    if (!json_is_object(p))
        return norm_fail(e, "$", "must be an order object");
    rc = norm_id(json_object_get(p, "id"), "id", id, e);
    if (rc < 0)
        return rc;
    status_v = json_object_get(p, "status");
    if (status_v == NULL)
        return thin(source, topic, id, received_at, out, e);
    if (!json_is_string(status_v))
        return norm_fail(e, "status", "must be a string");
    rc = norm_currency(json_object_get(p, "currency"), "currency", currency, e);
    if (rc < 0)
        return rc;
    minor = norm_minor_units(currency);
    rc = norm_money(json_object_get(p, "total"), minor, "total", total, e);
    if (rc < 0)
        return rc;
    rc = norm_money(json_object_get(p, "total_tax"), minor, "total_tax", tax, e);
    if (rc < 0)
        return rc;
    rc = norm_money(json_object_get(p, "shipping_total"), minor, "shipping_total", shipping, e);
    if (rc < 0)
        return rc;
    rc = sum_field(json_object_get(p, "line_items"), "line_items", "subtotal", false, minor,
                   subtotal, &micros, e);
    if (rc < 0)
        return rc;
    rc = sum_field(json_object_get(p, "refunds"), "refunds", "total", true, minor, refunded,
                   &refunded_micros, e);
    if (rc < 0)
        return rc;
    rc = norm_time(json_object_get(p, "date_created_gmt"), true, "date_created_gmt", created, e);
    if (rc < 0)
        return rc;
    rc = norm_time(json_object_get(p, "date_modified_gmt"), true, "date_modified_gmt", updated, e);
    if (rc < 0)
        return rc;
    number_v = json_object_get(p, "number");
    number[0] = '\0';
    if (number_v != NULL && !json_is_null(number_v)) {
        rc = norm_id(number_v, "number", number, e);
        if (rc < 0)
            return rc;
    }
    rc = norm_lines(json_object_get(p, "line_items"), "line_items", "name", "price", minor, false,
                    &ls, e);
    if (rc < 0)
        return rc;

    st = map_status(json_string_value(status_v));
    paid = norm_str(json_object_get(p, "date_paid_gmt")) != NULL;
    fin = st.financial != NULL ? st.financial : paid ? "paid" : "unpaid";
    /*
     * Refunds do not always change the status (a partial refund leaves it
     * "processing"/"completed"; a cancelled paid order may be refunded in
     * full): the refunds[] sum says how much went back.
     */
    if (strcmp(fin, "paid") == 0 && refunded_micros > 0)
        fin = norm_decimal_parse(total, &micros, &d) == 0 && refunded_micros >= micros
                  ? "refunded"
                  : "partially_refunded";

    o = norm_order_new(source, id);
    if (o == NULL)
        goto nomem;
    norm_put(o, "number", norm_string_or_null(number), &oom);
    norm_put(o, "status", json_string(st.status), &oom);
    norm_put(o, "financial_status", json_string(fin), &oom);
    norm_put(o, "fulfillment_status", json_string(st.fulfillment), &oom);
    norm_put(o, "currency", json_string(currency), &oom);
    norm_put(o, "total", json_string(total), &oom);
    norm_put(o, "subtotal", json_string(subtotal), &oom);
    norm_put(o, "tax", json_string(tax), &oom);
    norm_put(o, "shipping", json_string(shipping), &oom);
    norm_put(o, "refunded", json_string(refunded), &oom);
    norm_put(o, "customer_email",
             norm_string_or_null(norm_str(json_object_get(json_object_get(p, "billing"), "email"))),
             &oom);
    norm_put(o, "shipping_address", address(json_object_get(p, "shipping")), &oom);
    norm_put(o, "lines", ls, &oom);
    ls = NULL;
    if (oom || norm_order_finish(o, created, updated, false) < 0)
        goto nomem;
    *out = o;
    return 0;
nomem:
    json_decref(ls);
    json_decref(o);
    return -ENOMEM;
}

/* ------------------------------------------------------------ webhooks */

/*
 * WooCommerce pings a new webhook's URL with a form body `webhook_id=<n>` and
 * none of its X-WC-Webhook-* headers, unsigned, and shows the shop owner an
 * error unless the answer is exactly 200. Recognized narrowly, so that a
 * signed delivery with a stripped signature header is still a 401.
 */
static bool woo_is_ping(const struct source_request *req)
{
    static const char *const headers[] = {"x-wc-webhook-signature",  "x-wc-webhook-topic",
                                          "x-wc-webhook-id",         "x-wc-webhook-source",
                                          "x-wc-webhook-resource",   "x-wc-webhook-event",
                                          "x-wc-webhook-delivery-id"};
    static const char prefix[] = "webhook_id=";
    size_t plen = sizeof(prefix) - 1;

    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        if (req->get_header(req->ctx, headers[i]) != NULL)
            return false;
    }
    if (req->len <= plen || req->len > plen + 20 || memcmp(req->body, prefix, plen) != 0)
        return false;
    for (size_t i = plen; i < req->len; i++) {
        if (!isdigit((unsigned char)req->body[i]))
            return false;
    }
    return true;
}

static enum verify_result woo_verify(const struct source_request *req, char *detail, size_t size)
{
    return source_verify_body_hmac(req, "x-wc-webhook-signature", "X-WC-Webhook-Signature", detail,
                                   size);
}

static int woo_topic(const struct source_request *req, const json_t *payload, const char **out,
                     struct source_refused *why)
{
    *out = req->get_header(req->ctx, "x-wc-webhook-topic");
    if (*out == NULL)
        return source_refuse(why, SOURCE_MISSING_TOPIC, "X-WC-Webhook-Topic header is missing");
    return source_check_token(*out, "X-WC-Webhook-Topic", why);
}

/*
 * Never X-WC-Webhook-Delivery-ID: it comes from a whole-second clock and
 * repeats. An order's id with its modification time names one state of the
 * order exactly; anything else is keyed by its bytes.
 */
static int woo_dedupe_key(const struct source_request *req, const json_t *payload,
                          const char *topic, char **key, struct source_refused *why)
{
    const json_t *id = json_object_get(payload, "id");
    const char *modified = json_string_value(json_object_get(payload, "date_modified_gmt"));
    char *k = NULL;

    /* a date is ~20 characters: anything much longer is not one, hash the body instead */
    if (strncmp(topic, "order.", 6) == 0 && json_is_integer(id) && modified != NULL &&
        modified[0] != '\0' && strlen(modified) <= 40) {
        if (asprintf(&k, "order:%" JSON_INTEGER_FORMAT ":%s", json_integer_value(id), modified) < 0)
            k = NULL;
    } else {
        k = source_body_key(req->body, req->len);
    }
    *key = k;
    return k != NULL ? 0 : -ENOMEM;
}

static const struct source_topic woo_topics[] = {
    {"order.created", "order.created", NULL, NULL},
    {"order.updated", "order.updated", NULL, NULL},
    /* a deletion notice, or the trashed/cancelled order: status "cancelled" either way */
    {"order.deleted", "order.cancelled", "status", "cancelled"},
    {"order.restored", "order.updated", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

/*
 * WooCommerce has no cancel or refund topic: those status changes arrive as
 * order.updated, and the (signed) status tells them apart.
 */
static const char *woo_event_of(const struct source_topic *rule, const json_t *payload)
{
    const char *status = json_string_value(json_object_get(payload, "status"));

    if (strcmp(rule->topic, "order.updated") == 0 && status != NULL) {
        if (strcmp(status, "cancelled") == 0)
            return "order.cancelled";
        if (strcmp(status, "refunded") == 0)
            return "order.refunded";
    }
    return rule->event_type;
}

/* ------------------------------------------------------------- polling */

/* GET /wp-json/wc/v3/orders lists whole orders, each in its latest state. */
static int woo_poll_order(const char *source, const json_t *item, time_t now, json_t **out,
                          char *err, size_t err_size)
{
    return woo_normalize(source, "order.updated", item, now, out, err, err_size);
}

const struct source_kind source_woocommerce = {
    .name = "woocommerce",
    .is_ping = woo_is_ping,
    .verify = woo_verify,
    .topic = woo_topic,
    .dedupe_key = woo_dedupe_key,
    .topics = woo_topics,
    .event_of = woo_event_of,
    .normalize = woo_normalize,
    .poll_order = woo_poll_order,
};
