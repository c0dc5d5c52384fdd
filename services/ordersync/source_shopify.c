/*
 * source_shopify: Shopify, as a source kind (source_kind.h). Webhooks of the
 * REST Admin API: the body is signed (X-Shopify-Hmac-Sha256), the topic
 * header is not. The orders/... topics carry the whole order; refunds/create
 * carries a refund object, which becomes a partial order keyed by its
 * order_id. Money fields are decimal strings and are kept verbatim; ids may
 * exceed 2^53 and arrive as json_int_t, never through a double. The orders
 * list (GET /admin/api/.../orders.json) can be polled.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalize_internal.h"
#include "source_internal.h"
#include "source_kind.h"

static int financial_status(const json_t *v, const char **out, struct norm_err *e)
{
    static const char *const same[] = {"pending",  "authorized", "partially_paid",    "paid",
                                       "refunded", "voided",     "partially_refunded"};
    const char *s;

    /* Shopify leaves it null on orders that never had a payment (drafts, $0 orders). */
    if (v == NULL || json_is_null(v)) {
        *out = "pending";
        return 0;
    }
    s = json_is_string(v) ? json_string_value(v) : "";
    for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
        if (strcmp(s, same[i]) == 0) {
            *out = same[i];
            return 0;
        }
    }
    /* An authorization that lapsed: nothing was captured, as with a void. */
    if (strcmp(s, "expired") == 0) {
        *out = "voided";
        return 0;
    }
    return norm_fail(e, "financial_status", "must be a Shopify financial status");
}

static int fulfillment_status(const json_t *v, const char **out, struct norm_err *e)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;

    /* null means nothing shipped yet; "restocked" means shipped items came back. */
    if (v == NULL || json_is_null(v) ||
        (s != NULL && (strcmp(s, "unfulfilled") == 0 || strcmp(s, "restocked") == 0))) {
        *out = "unfulfilled";
        return 0;
    }
    if (s != NULL && strcmp(s, "fulfilled") == 0) {
        *out = "fulfilled";
        return 0;
    }
    if (s != NULL && strcmp(s, "partial") == 0) {
        *out = "partial";
        return 0;
    }
    return norm_fail(e, "fulfillment_status", "must be null, \"partial\" or \"fulfilled\"");
}

static bool present(const json_t *v)
{
    return v != NULL && !json_is_null(v);
}

/* Optional money: absent or null counts as zero. */
static int money_or_zero(const json_t *v, int minor, const char *path, char out[NORM_MONEY_SIZE],
                         struct norm_err *e)
{
    if (v == NULL || json_is_null(v)) {
        norm_money_minor(0, minor, out);
        return 0;
    }
    return norm_money(v, minor, path, out, e);
}

/*
 * The order has no "total refunded" field: add up the successful refund
 * transactions of refunds[], in exact decimal arithmetic.
 */
static int refunded_total(const json_t *order, int minor, char out[NORM_MONEY_SIZE],
                          struct norm_err *e)
{
    const json_t *refunds = json_object_get(order, "refunds");
    int64_t sum = 0;
    int decimals = minor;
    size_t i, j;
    const json_t *r, *t;
    char path[96];

    if (refunds != NULL && !json_is_null(refunds) && !json_is_array(refunds))
        return norm_fail(e, "refunds", "must be an array");
    json_array_foreach(refunds, i, r)
    {
        const json_t *txs = json_object_get(r, "transactions");

        json_array_foreach(txs, j, t)
        {
            const char *kind = json_string_value(json_object_get(t, "kind"));
            const char *status = json_string_value(json_object_get(t, "status"));
            const char *amount = json_string_value(json_object_get(t, "amount"));
            int64_t micros;
            int d;

            if (kind == NULL || strcmp(kind, "refund") != 0 || status == NULL ||
                strcmp(status, "success") != 0)
                continue;
            snprintf(path, sizeof(path), "refunds[%zu].transactions[%zu].amount", i, j);
            if (amount == NULL || norm_decimal_parse(amount, &micros, &d) < 0)
                return norm_fail(e, path, "must be a decimal amount like \"12.34\"");
            if (__builtin_add_overflow(sum, micros, &sum))
                return norm_fail(e, path, "makes the refunded total out of range");
            if (d > decimals)
                decimals = d;
        }
    }
    norm_decimal_format(sum, decimals, out);
    return 0;
}

static json_t *address(const json_t *a)
{
    const char *region = norm_str(json_object_get(a, "province_code"));
    char name[512];

    if (!json_is_object(a))
        return json_null();
    if (region == NULL)
        region = norm_str(json_object_get(a, "province"));
    norm_join_name(norm_str(json_object_get(a, "first_name")),
                   norm_str(json_object_get(a, "last_name")), name, sizeof(name));
    if (name[0] == '\0' && norm_str(json_object_get(a, "name")) != NULL)
        snprintf(name, sizeof(name), "%s", norm_str(json_object_get(a, "name")));
    return norm_address(
        name, norm_str(json_object_get(a, "address1")), norm_str(json_object_get(a, "address2")),
        norm_str(json_object_get(a, "city")), region, norm_str(json_object_get(a, "zip")),
        norm_str(json_object_get(a, "country_code")));
}

static int refund(const char *source, const json_t *r, json_t **out, struct norm_err *e)
{
    char id[NORM_ID_SIZE], updated[NORM_TIME_SIZE];
    json_t *o;
    int rc;

    if (!json_is_object(r))
        return norm_fail(e, "$", "must be a refund object");
    rc = norm_id(json_object_get(r, "order_id"), "order_id", id, e);
    if (rc < 0)
        return rc;
    rc = norm_time(json_object_get(r, "created_at"), false, "created_at", updated, e);
    if (rc < 0)
        return rc;
    /*
     * A refund says how much this refund returned, not the order's refunded
     * total nor whether it is now fully refunded: those come with the
     * orders/updated webhook Shopify sends alongside. So only identity and
     * time are merged; the event type (order.refunded) carries the news.
     */
    o = norm_order_new(source, id);
    if (o == NULL || norm_order_finish(o, NULL, updated, true) < 0) {
        json_decref(o);
        return -ENOMEM;
    }
    *out = o;
    return 0;
}

static int order(const char *source, const json_t *p, json_t **out, struct norm_err *e)
{
    char id[NORM_ID_SIZE], currency[4], created[NORM_TIME_SIZE], updated[NORM_TIME_SIZE];
    char total[NORM_MONEY_SIZE], subtotal[NORM_MONEY_SIZE], tax[NORM_MONEY_SIZE];
    char shipping[NORM_MONEY_SIZE], refunded[NORM_MONEY_SIZE];
    const char *fin = NULL, *ful = NULL, *status, *email;
    const json_t *ship_set;
    json_t *o = NULL, *ls = NULL;
    bool oom = false;
    int minor, rc;

    if (!json_is_object(p))
        return norm_fail(e, "$", "must be an order object");
    rc = norm_id(json_object_get(p, "id"), "id", id, e);
    if (rc < 0)
        return rc;
    rc = norm_currency(json_object_get(p, "currency"), "currency", currency, e);
    if (rc < 0)
        return rc;
    minor = norm_minor_units(currency);
    rc = financial_status(json_object_get(p, "financial_status"), &fin, e);
    if (rc < 0)
        return rc;
    rc = fulfillment_status(json_object_get(p, "fulfillment_status"), &ful, e);
    if (rc < 0)
        return rc;
    rc = norm_money(json_object_get(p, "total_price"), minor, "total_price", total, e);
    if (rc < 0)
        return rc;
    rc = money_or_zero(json_object_get(p, "subtotal_price"), minor, "subtotal_price", subtotal, e);
    if (rc < 0)
        return rc;
    rc = money_or_zero(json_object_get(p, "total_tax"), minor, "total_tax", tax, e);
    if (rc < 0)
        return rc;
    ship_set = json_object_get(json_object_get(p, "total_shipping_price_set"), "shop_money");
    rc = money_or_zero(json_object_get(ship_set, "amount"), minor,
                       "total_shipping_price_set.shop_money.amount", shipping, e);
    if (rc < 0)
        return rc;
    rc = refunded_total(p, minor, refunded, e);
    if (rc < 0)
        return rc;
    rc = norm_time(json_object_get(p, "created_at"), false, "created_at", created, e);
    if (rc < 0)
        return rc;
    rc = norm_time(json_object_get(p, "updated_at"), false, "updated_at", updated, e);
    if (rc < 0)
        return rc;
    rc = norm_lines(json_object_get(p, "line_items"), "line_items", "title", "price", minor, false,
                    &ls, e);
    if (rc < 0)
        return rc;
    /* A cancelled order is also closed by Shopify; cancellation is the news. */
    if (present(json_object_get(p, "cancelled_at")))
        status = "cancelled";
    else if (present(json_object_get(p, "closed_at")))
        status = "closed";
    else
        status = "open";
    email = norm_str(json_object_get(p, "email"));
    if (email == NULL)
        email = norm_str(json_object_get(json_object_get(p, "customer"), "email"));

    o = norm_order_new(source, id);
    if (o == NULL)
        goto nomem;
    norm_put(o, "number", norm_string_or_null(norm_str(json_object_get(p, "name"))), &oom);
    norm_put(o, "status", json_string(status), &oom);
    norm_put(o, "financial_status", json_string(fin), &oom);
    norm_put(o, "fulfillment_status", json_string(ful), &oom);
    norm_put(o, "currency", json_string(currency), &oom);
    norm_put(o, "total", json_string(total), &oom);
    norm_put(o, "subtotal", json_string(subtotal), &oom);
    norm_put(o, "tax", json_string(tax), &oom);
    norm_put(o, "shipping", json_string(shipping), &oom);
    norm_put(o, "refunded", json_string(refunded), &oom);
    norm_put(o, "customer_email", norm_string_or_null(email), &oom);
    norm_put(o, "shipping_address", address(json_object_get(p, "shipping_address")), &oom);
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

/*
 * Which of Shopify's two bodies this is, from its own (signed) fields: a
 * refund names its order (order_id) and lists refund_line_items; an order has
 * line_items and a total_price. A body with both or neither is read as the
 * topic says, and fails there with the missing field named.
 */
static const char *kind_of(const json_t *p)
{
    bool refund =
        json_object_get(p, "order_id") != NULL || json_object_get(p, "refund_line_items") != NULL;
    bool order =
        json_object_get(p, "line_items") != NULL || json_object_get(p, "total_price") != NULL;

    if (refund == order)
        return NULL;
    return refund ? "a refund" : "an order";
}

static int shopify_normalize(const char *source, const char *topic, const json_t *payload,
                             time_t now, json_t **out, char *err, size_t err_size)
{
    struct norm_err e = {err, err_size};
    bool want_refund = topic != NULL && strcmp(topic, "refunds/create") == 0;
    const char *is = kind_of(payload);

    /*
     * X-Shopify-Topic is outside the HMAC: a refund replayed as orders/create
     * or an order as refunds/create must not be read as what it is not.
     */
    if (is != NULL && strcmp(is, want_refund ? "an order" : "a refund") == 0)
        return norm_mismatch(&e, "the body is %s, not %s as topic '%.64s' says", is,
                             want_refund ? "a refund" : "an order", topic ? topic : "");
    if (want_refund)
        return refund(source, payload, out, &e);
    return order(source, payload, out, &e);
}

/* ------------------------------------------------------------ webhooks */

static enum verify_result shopify_verify(const struct source_request *req, char *detail,
                                         size_t size)
{
    return source_verify_body_hmac(req, "x-shopify-hmac-sha256", "X-Shopify-Hmac-Sha256", detail,
                                   size);
}

static int shopify_topic(const struct source_request *req, const json_t *payload, const char **out,
                         struct source_refused *why)
{
    *out = req->get_header(req->ctx, "x-shopify-topic");
    if (*out == NULL)
        return source_refuse(why, SOURCE_MISSING_TOPIC, "X-Shopify-Topic header is missing");
    return source_check_token(*out, "X-Shopify-Topic", why);
}

/*
 * X-Shopify-Webhook-Id is stable across retries of one delivery; the event
 * id is shared by every topic of one merchant action, so it keys with the
 * topic; a body hash is the last resort.
 */
static int shopify_dedupe_key(const struct source_request *req, const json_t *payload,
                              const char *topic, char **key, struct source_refused *why)
{
    const char *webhook_id = req->get_header(req->ctx, "x-shopify-webhook-id");
    const char *event_id = req->get_header(req->ctx, "x-shopify-event-id");
    char *k = NULL;

    if ((webhook_id != NULL && source_check_token(webhook_id, "X-Shopify-Webhook-Id", why) < 0) ||
        (event_id != NULL && source_check_token(event_id, "X-Shopify-Event-Id", why) < 0))
        return -EINVAL;
    if (webhook_id != NULL)
        k = strdup(webhook_id);
    else if (event_id == NULL)
        k = source_body_key(req->body, req->len);
    else if (asprintf(&k, "%s:%s", topic, event_id) < 0)
        k = NULL;
    *key = k;
    return k != NULL ? 0 : -ENOMEM;
}

static const struct source_topic shopify_topics[] = {
    {"orders/create", "order.created", NULL, NULL},
    {"orders/updated", "order.updated", NULL, NULL},
    /* Shopify sends orders/paid when financial_status becomes paid, with that body */
    {"orders/paid", "order.paid", "financial_status", "paid"},
    /* cancelled_at set; shopify_normalize makes that status "cancelled" */
    {"orders/cancelled", "order.cancelled", "status", "cancelled"},
    {"orders/fulfilled", "order.fulfilled", "fulfillment_status", "fulfilled"},
    {"orders/partially_fulfilled", "order.updated", NULL, NULL},
    {"refunds/create", "order.refunded", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

/* ------------------------------------------------------------- polling */

/* The orders list holds whole orders, each in its latest state. */
static int shopify_poll_order(const char *source, const json_t *item, time_t now, json_t **out,
                              char *err, size_t err_size)
{
    return shopify_normalize(source, "orders/updated", item, now, out, err, err_size);
}

const struct source_kind source_shopify = {
    .name = "shopify",
    .verify = shopify_verify,
    .topic = shopify_topic,
    .dedupe_key = shopify_dedupe_key,
    .topics = shopify_topics,
    .normalize = shopify_normalize,
    .poll_order = shopify_poll_order,
};
