/*
 * source_stripe: Stripe, as a source kind (source_kind.h). Events are signed
 * whole (Stripe-Signature: a timestamp and HMACs of "t.body"), their type
 * included, so nothing unsigned names the event. Stripe has no orders list
 * to poll.
 *
 * Event bodies → canonical order: a Checkout
 * Session is the order (with no line items: Stripe leaves them out of the
 * webhook); payment intents and charges only change part of an order, so
 * they become partial orders. Amounts are integers in the currency's minor
 * units and currencies are lower case, as in every canonical order.
 *
 * Linking: a session is keyed by client_reference_id, else metadata.order_id,
 * else its own id; an intent or charge by metadata.order_id, else the
 * payment intent id. A charge whose order was keyed by client_reference_id
 * only links if the shop copied the order id into the charge's metadata
 * (payment_intent_data.metadata): Stripe does not carry it over by itself.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalize_internal.h"
#include "source_internal.h"
#include "source_kind.h"

static int amount(const json_t *obj, const char *key, const char *prefix, int minor, bool optional,
                  char out[NORM_MONEY_SIZE], struct norm_err *e)
{
    const json_t *v = json_object_get(obj, key);
    char path[64];

    if (optional && (v == NULL || json_is_null(v))) {
        norm_money_minor(0, minor, out);
        return 0;
    }
    if (!json_is_integer(v)) {
        snprintf(path, sizeof(path), "%s%s", prefix, key);
        return norm_fail(e, path, "must be an integer amount in minor units");
    }
    norm_money_minor(json_integer_value(v), minor, out);
    return 0;
}

/* First usable id among the candidates, in order. */
static int link_id(const json_t *obj, const char *first, const char *second, const char *path,
                   char out[NORM_ID_SIZE], struct norm_err *e)
{
    const json_t *meta = json_object_get(obj, "metadata");
    const json_t *candidates[3] = {
        first != NULL ? json_object_get(obj, first) : NULL,
        json_object_get(meta, "order_id"),
        json_object_get(obj, second),
    };

    for (int i = 0; i < 3; i++) {
        const json_t *c = candidates[i];

        /* Stripe ids are strings; "" means "not set" in metadata. */
        if (json_is_string(c) && json_string_length(c) > 0)
            return norm_id(c, path, out, e);
        if (json_is_integer(c))
            return norm_id(c, path, out, e);
    }
    return norm_fail(e, path, "is missing: no order id to link this object to");
}

static json_t *address(const json_t *details)
{
    const json_t *a = json_object_get(details, "address");

    if (!json_is_object(a))
        return json_null();
    return norm_address(
        norm_str(json_object_get(details, "name")), norm_str(json_object_get(a, "line1")),
        norm_str(json_object_get(a, "line2")), norm_str(json_object_get(a, "city")),
        norm_str(json_object_get(a, "state")), norm_str(json_object_get(a, "postal_code")),
        norm_str(json_object_get(a, "country")));
}

static int session(const char *source, const json_t *s, const char *updated, json_t **out,
                   struct norm_err *e)
{
    const char *prefix = "data.object.";
    char id[NORM_ID_SIZE], currency[4], created[NORM_TIME_SIZE];
    char total[NORM_MONEY_SIZE], subtotal[NORM_MONEY_SIZE], tax[NORM_MONEY_SIZE];
    char shipping[NORM_MONEY_SIZE], zero[NORM_MONEY_SIZE];
    const json_t *td = json_object_get(s, "total_details");
    const json_t *ship = json_object_get(s, "shipping_details");
    const char *pay = json_string_value(json_object_get(s, "payment_status"));
    const char *st = json_string_value(json_object_get(s, "status"));
    const char *fin, *email;
    bool oom = false;
    json_t *o, *lines;
    int minor, rc;

    rc = link_id(s, "client_reference_id", "id", "data.object.client_reference_id", id, e);
    if (rc < 0)
        return rc;
    rc = norm_currency(json_object_get(s, "currency"), "data.object.currency", currency, e);
    if (rc < 0)
        return rc;
    minor = norm_minor_units(currency);
    rc = amount(s, "amount_total", prefix, minor, false, total, e);
    if (rc < 0)
        return rc;
    rc = amount(s, "amount_subtotal", prefix, minor, true, subtotal, e);
    if (rc < 0)
        return rc;
    rc = amount(td, "amount_tax", "data.object.total_details.", minor, true, tax, e);
    if (rc < 0)
        return rc;
    rc = amount(td, "amount_shipping", "data.object.total_details.", minor, true, shipping, e);
    if (rc < 0)
        return rc;
    rc = norm_epoch(json_object_get(s, "created"), "data.object.created", created, e);
    if (rc < 0)
        return rc;
    /* "unpaid" is a session that completed but whose (delayed) payment has not arrived yet. */
    if (pay != NULL && strcmp(pay, "unpaid") == 0)
        fin = "unpaid";
    else if (pay != NULL && (strcmp(pay, "paid") == 0 || strcmp(pay, "no_payment_required") == 0))
        fin = "paid";
    else
        return norm_fail(e, "data.object.payment_status",
                         "must be \"paid\", \"unpaid\" or \"no_payment_required\"");
    norm_money_minor(0, minor, zero);
    email = norm_str(json_object_get(json_object_get(s, "customer_details"), "email"));
    if (email == NULL)
        email = norm_str(json_object_get(s, "customer_email"));
    /* API versions from 2024-10 moved shipping_details under collected_information. */
    if (!json_is_object(ship))
        ship = json_object_get(json_object_get(s, "collected_information"), "shipping_details");

    o = norm_order_new(source, id);
    if (o == NULL)
        return -ENOMEM;
    norm_put(o, "number", json_null(), &oom);
    norm_put(o, "status",
             json_string(st != NULL && strcmp(st, "expired") == 0 ? "cancelled" : "open"), &oom);
    norm_put(o, "financial_status", json_string(fin), &oom);
    norm_put(o, "fulfillment_status", json_string("unfulfilled"), &oom);
    norm_put(o, "currency", json_string(currency), &oom);
    norm_put(o, "total", json_string(total), &oom);
    norm_put(o, "subtotal", json_string(subtotal), &oom);
    norm_put(o, "tax", json_string(tax), &oom);
    norm_put(o, "shipping", json_string(shipping), &oom);
    norm_put(o, "refunded", json_string(zero), &oom);
    norm_put(o, "customer_email", norm_string_or_null(email), &oom);
    norm_put(o, "shipping_address", address(ship), &oom);
    lines = json_array();
    norm_put(o, "lines", lines, &oom);
    if (oom || norm_order_finish(o, created, updated, false) < 0) {
        json_decref(o);
        return -ENOMEM;
    }
    *out = o;
    return 0;
}

static int payment_intent(const char *source, const json_t *pi, const char *updated, json_t **out,
                          struct norm_err *e)
{
    char id[NORM_ID_SIZE], currency[4], total[NORM_MONEY_SIZE];
    const char *st = json_string_value(json_object_get(pi, "status"));
    const char *fin = "pending";
    bool oom = false;
    json_t *o;
    int rc;

    rc = link_id(pi, NULL, "id", "data.object.metadata.order_id", id, e);
    if (rc < 0)
        return rc;
    rc = norm_currency(json_object_get(pi, "currency"), "data.object.currency", currency, e);
    if (rc < 0)
        return rc;
    rc = amount(pi, "amount", "data.object.", norm_minor_units(currency), false, total, e);
    if (rc < 0)
        return rc;
    if (st != NULL && strcmp(st, "succeeded") == 0)
        fin = "paid";
    else if (st != NULL && strcmp(st, "requires_capture") == 0)
        fin = "authorized";
    else if (st != NULL && strcmp(st, "canceled") == 0)
        fin = "voided";

    o = norm_order_new(source, id);
    if (o == NULL)
        return -ENOMEM;
    norm_put(o, "financial_status", json_string(fin), &oom);
    norm_put(o, "currency", json_string(currency), &oom);
    norm_put(o, "total", json_string(total), &oom);
    if (oom || norm_order_finish(o, NULL, updated, true) < 0) {
        json_decref(o);
        return -ENOMEM;
    }
    *out = o;
    return 0;
}

static int charge(const char *source, const json_t *ch, const char *updated, json_t **out,
                  struct norm_err *e)
{
    char id[NORM_ID_SIZE], currency[4], refunded[NORM_MONEY_SIZE];
    const json_t *amt = json_object_get(ch, "amount");
    const json_t *ref = json_object_get(ch, "amount_refunded");
    const char *fin;
    bool oom = false;
    json_t *o;
    int rc;

    rc = link_id(ch, NULL, "payment_intent", "data.object.metadata.order_id", id, e);
    if (rc < 0)
        return rc;
    rc = norm_currency(json_object_get(ch, "currency"), "data.object.currency", currency, e);
    if (rc < 0)
        return rc;
    if (!json_is_integer(amt))
        return norm_fail(e, "data.object.amount", "must be an integer amount in minor units");
    rc = amount(ch, "amount_refunded", "data.object.", norm_minor_units(currency), false, refunded,
                e);
    if (rc < 0)
        return rc;
    if (json_is_true(json_object_get(ch, "refunded")) ||
        json_integer_value(ref) >= json_integer_value(amt))
        fin = "refunded";
    else if (json_integer_value(ref) > 0)
        fin = "partially_refunded";
    else
        fin = "paid";

    o = norm_order_new(source, id);
    if (o == NULL)
        return -ENOMEM;
    norm_put(o, "financial_status", json_string(fin), &oom);
    norm_put(o, "currency", json_string(currency), &oom);
    norm_put(o, "refunded", json_string(refunded), &oom);
    if (oom || norm_order_finish(o, NULL, updated, true) < 0) {
        json_decref(o);
        return -ENOMEM;
    }
    *out = o;
    return 0;
}

/* The type is inside the signed event: topic says nothing more, and every event is dated. */
static int stripe_normalize(const char *source, const char *topic, const json_t *event, time_t now,
                            json_t **out, char *err, size_t err_size)
{
    struct norm_err e = {err, err_size};
    const json_t *obj = json_object_get(json_object_get(event, "data"), "object");
    const char *kind = json_string_value(json_object_get(obj, "object"));
    char updated[NORM_TIME_SIZE];
    int rc;

    if (!json_is_object(event))
        return norm_fail(&e, "$", "must be a Stripe event object");
    /* The event's creation time orders updates: objects have no updated timestamp. */
    rc = norm_epoch(json_object_get(event, "created"), "created", updated, &e);
    if (rc < 0)
        return rc;
    if (!json_is_object(obj))
        return norm_fail(&e, "data.object", "must be an object");
    if (kind != NULL && strcmp(kind, "checkout.session") == 0)
        return session(source, obj, updated, out, &e);
    if (kind != NULL && strcmp(kind, "payment_intent") == 0)
        return payment_intent(source, obj, updated, out, &e);
    if (kind != NULL && strcmp(kind, "charge") == 0)
        return charge(source, obj, updated, out, &e);
    return norm_fail(&e, "data.object.object",
                     "must be \"checkout.session\", \"payment_intent\" or \"charge\"");
}

/* ------------------------------------------------------------ signature */

static bool is_lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
            return false;
    }
    return true;
}

int source_stripe_parse_header(const char *value, struct source_stripe_header *out)
{
    bool have_t = false;
    const char *p = value;

    memset(out, 0, sizeof(*out));
    /*
     * Stripe's libraries split on ',' then on the first '='; keys other than
     * t and v1 (v0 test signatures, future schemes) are ignored.
     */
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t item_len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', item_len);

        if (eq != NULL) {
            size_t klen = (size_t)(eq - p);
            const char *v = eq + 1;
            size_t vlen = item_len - klen - 1;

            if (klen == 1 && p[0] == 't') {
                char buf[16];

                if (have_t || vlen == 0 || vlen >= sizeof(buf))
                    return -EINVAL;
                memcpy(buf, v, vlen);
                buf[vlen] = '\0';
                if (verify_parse_timestamp(buf, &out->t) < 0)
                    return -EINVAL;
                have_t = true;
            } else if (klen == 2 && p[0] == 'v' && p[1] == '1') {
                if (vlen != 2 * VERIFY_SHA256_LEN || !is_lower_hex(v, vlen))
                    return -EINVAL;
                if (out->n_v1 == VERIFY_MAX_SIGS)
                    return -EINVAL;
                memcpy(out->v1[out->n_v1], v, vlen);
                out->v1[out->n_v1][vlen] = '\0';
                out->n_v1++;
            }
        }
        p += item_len;
        if (*p == ',')
            p++;
    }
    return have_t && out->n_v1 > 0 ? 0 : -EINVAL;
}

static void hex_lower(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/*
 * Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]; the HMAC key is the
 * whole secret string ("whsec_..." included), the message "t.body".
 */
static enum verify_result stripe_verify(const struct source_request *req, char *detail, size_t size)
{
    const char *value = req->get_header(req->ctx, "stripe-signature");
    struct source_stripe_header h;
    char tbuf[24];
    unsigned char mac[VERIFY_SHA256_LEN];
    char hex[2 * VERIFY_SHA256_LEN + 1];
    bool matched = false;

    if (value == NULL)
        return source_verdict(VERIFY_MISSING, detail, size, "Stripe-Signature header is missing");
    if (source_stripe_parse_header(value, &h) < 0)
        return source_verdict(
            VERIFY_MALFORMED, detail, size,
            "Stripe-Signature header must be t=<unix time>,v1=<64 hex digits>[,v1=...]");
    if (!source_have_secret(req->secrets))
        return source_verdict(VERIFY_ERROR, detail, size,
                              "no secret is configured for this source");
    snprintf(tbuf, sizeof(tbuf), "%lld", (long long)h.t);
    for (int i = 0; i < 2 && !matched; i++) {
        const char *secret = req->secrets[i];
        const void *parts[3] = {tbuf, ".", req->body};
        size_t lens[3] = {strlen(tbuf), 1, req->len};

        if (secret == NULL || secret[0] == '\0')
            continue;
        /* Stripe keys the HMAC with the secret as given, "whsec_" prefix included. */
        if (source_hmac(req, i, parts, lens, 3, mac) < 0)
            return source_verdict(VERIFY_ERROR, detail, size, "HMAC computation failed");
        hex_lower(mac, VERIFY_SHA256_LEN, hex);
        for (size_t j = 0; j < h.n_v1; j++) {
            if (verify_equal(hex, h.v1[j], 2 * VERIFY_SHA256_LEN))
                matched = true;
        }
    }
    if (!matched)
        return source_verdict(VERIFY_MISMATCH, detail, size,
                              "no v1 signature in Stripe-Signature matches the body");
    /*
     * Checked after the signature on purpose: a stale result then means an
     * authentic but old (possibly replayed) message, which is worth knowing.
     */
    if (verify_age(h.t, req->now, req->tolerance_s, "Stripe-Signature timestamp", detail, size) !=
        VERIFY_OK)
        return VERIFY_STALE;
    return source_verdict(VERIFY_OK, detail, size, "Stripe-Signature matches");
}

/* ------------------------------------------------------------ webhooks */

static int stripe_topic(const struct source_request *req, const json_t *payload, const char **out,
                        struct source_refused *why)
{
    *out = json_string_value(json_object_get(payload, "type"));
    if (*out == NULL)
        return source_refuse(why, SOURCE_NOT_AN_ORDER, "field 'type' must be a string");
    return 0;
}

/* The event id (evt_...): the same in every retry of one event. */
static int stripe_dedupe_key(const struct source_request *req, const json_t *payload,
                             const char *topic, char **key, struct source_refused *why)
{
    const char *id = json_string_value(json_object_get(payload, "id"));

    if (id == NULL || id[0] == '\0' || strlen(id) > SOURCE_MAX_TOKEN_LEN)
        return source_refuse(why, SOURCE_NOT_AN_ORDER, "field 'id' must be the event id (evt_...)");
    *key = strdup(id);
    return *key != NULL ? 0 : -ENOMEM;
}

static const struct source_topic stripe_topics[] = {
    {"checkout.session.completed", "order.created", NULL, NULL},
    {"checkout.session.async_payment_succeeded", "order.paid", NULL, NULL},
    {"checkout.session.async_payment_failed", "order.updated", NULL, NULL},
    {"checkout.session.expired", "order.cancelled", NULL, NULL},
    {"payment_intent.succeeded", "order.paid", NULL, NULL},
    {"charge.refunded", "order.refunded", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

const struct source_kind source_stripe = {
    .name = "stripe",
    .verify = stripe_verify,
    .topic = stripe_topic,
    .dedupe_key = stripe_dedupe_key,
    .topics = stripe_topics,
    .normalize = stripe_normalize,
};
