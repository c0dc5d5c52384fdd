/*
 * inbound: the one call the HTTP handler makes for POST /webhooks/{source}.
 * It runs the source kind's hooks (source_kind.h: signature on the raw
 * bytes, topic, dedupe key, topic rules, normalize) with the content-type
 * check and the JSON parsing, in the order the inbound contract requires
 * (see inbound.c), and says which HTTP status a rejection deserves. Pure: no
 * I/O; the clock is a parameter.
 */
#ifndef ORDERSYNC_INBOUND_H
#define ORDERSYNC_INBOUND_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "source_kind.h"

struct inbound_source {
    const char *id;                 /* used in the URL and stored with every event */
    const struct source_kind *kind; /* from source_kind_parse(); never NULL */
    const char *secrets[2];         /* current, previous during a rotation; [1] may be NULL */
    int tolerance_s;                /* signed-timestamp tolerance; <= 0 means 300 s */
    struct hmac_sha256 *keys[2];    /* secrets[i] pre-keyed (store.h), or NULL: keyed per call */
};

/* inbound_event.ignored_reason when an unsigned topic asks for an event the signed body denies. */
#define INBOUND_TOPIC_MISMATCH "topic_mismatch"

/* Filled on success; inbound_event_clear() frees. */
struct inbound_event {
    char *dedupe_key; /* new allocation */
    char *topic;      /* sender's topic/type as received, new allocation */
    /*
     * Static: "order.created" | "order.updated" | "order.paid" |
     * "order.cancelled" | "order.refunded" | "order.fulfilled", or NULL when
     * the event is to be recorded and emit nothing: the topic is not about
     * orders, or it contradicts the signed body (ignored_reason says so).
     */
    const char *event_type;
    /*
     * NULL, or INBOUND_TOPIC_MISMATCH: the topic (a header Shopify and
     * WooCommerce do not sign) named an event the signed body does not
     * support, such as orders/cancelled for an order whose cancelled_at is
     * null. ignored_detail then says what disagreed, for the log.
     */
    const char *ignored_reason;
    char ignored_detail[256];
    /*
     * With ignored_reason: the external id of the order the signed body
     * names (new allocation), or NULL when it names none; the webhook is
     * stored linked to that order.
     */
    char *order_ref;
    /* W3C trace id (32 hex): the webhook's traceparent's, else a new trace's (api.c) */
    char trace_id[33];
    json_t *order;   /* canonical order, new reference; NULL when ignored */
    json_t *payload; /* the parsed body, new reference (stored raw as jsonb for audit) */
};

struct inbound_error {
    int http_status;   /* 400, 401, 415, 422, or 500 for our own failures */
    const char *error; /* static machine code: "invalid_signature", "malformed_json", ... */
    char detail[SOURCE_DETAIL_SIZE]; /* human explanation; never a secret */
};

/* Returned for a platform's unsigned URL check (source_kind.is_ping): answer exactly 200, write
 * nothing. */
#define INBOUND_PING 1

/*
 * Verifies, parses and normalizes one webhook. All arguments are borrowed;
 * get_header(ctx, lower_case_name) returns a header's value or NULL.
 * content_type may be NULL (absent). Returns:
 *   0             out filled (new allocations/references; inbound_event_clear frees),
 *                 possibly with no event type (see inbound_event);
 *   INBOUND_PING  nothing filled;
 *   < 0           err filled: 401 invalid_signature, 415 unsupported_media_type,
 *                 400 malformed_json, missing_topic or invalid_header (a topic or
 *                 id header that is not 1..200 printable ASCII), 422 not_an_order,
 *                 500 internal_error (-ENOMEM, unusable secret).
 * On failure out is left cleared.
 */
int inbound_parse(const struct inbound_source *src,
                  const char *(*get_header)(void *ctx, const char *name), void *ctx,
                  const char *content_type, const char *body, size_t len, time_t now,
                  struct inbound_event *out, struct inbound_error *err);

/* Frees what an event holds and zeroes it; safe on a zeroed or already cleared event. */
void inbound_event_clear(struct inbound_event *ev);

#endif
