/*
 * normalize_stripe: Stripe Event bodies → canonical order. A Checkout
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
#include "normalize.h"
#include "normalize_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

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

int normalize_stripe(const char *source, const json_t *event, json_t **out, char *err,
                     size_t err_size)
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
