/*
 * source_standard: any sender that speaks Standard Webhooks, as a source kind
 * (source_kind.h): webhook-id, webhook-timestamp and the body are signed
 * together (lib/verify.c), and the type is in the signed body.
 *
 * Bodies {"type", "timestamp", "data"} → canonical order. The sender either speaks our canonical
 * order already (data checked field by field against schema/order.schema.json and copied, unknown
 * fields dropped) or sends a thin {"id": ...} as BigCommerce does, which becomes a partial order:
 * the id and the time of the event.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "normalize_internal.h"
#include "source_internal.h"
#include "source_kind.h"

enum field_type { F_NSTRING, F_ENUM, F_CURRENCY, F_DECIMAL, F_ADDRESS, F_LINES, F_TIME };

struct field {
    const char *name;
    enum field_type type;
    const char *const *allowed; /* F_ENUM: NULL-terminated */
};

static const char *const statuses[] = {"open", "cancelled", "closed", NULL};
static const char *const financials[] = {
    "pending", "authorized", "paid", "partially_paid", "partially_refunded", "refunded",
    "voided",  "unpaid",     NULL};
static const char *const fulfillments[] = {"unfulfilled", "partial", "fulfilled", NULL};

/* Schema order; source, external_id, updated_at and partial are handled apart. */
static const struct field fields[] = {
    {"number", F_NSTRING, NULL},
    {"status", F_ENUM, statuses},
    {"financial_status", F_ENUM, financials},
    {"fulfillment_status", F_ENUM, fulfillments},
    {"currency", F_CURRENCY, NULL},
    {"total", F_DECIMAL, NULL},
    {"subtotal", F_DECIMAL, NULL},
    {"tax", F_DECIMAL, NULL},
    {"shipping", F_DECIMAL, NULL},
    {"refunded", F_DECIMAL, NULL},
    {"customer_email", F_NSTRING, NULL},
    {"shipping_address", F_ADDRESS, NULL},
    {"lines", F_LINES, NULL},
    {"created_at", F_TIME, NULL},
};

static int nstring(const json_t *v, const char *path, json_t **out, struct norm_err *e)
{
    if (json_is_null(v)) {
        *out = json_null();
        return 0;
    }
    if (!json_is_string(v))
        return norm_fail(e, path, "must be a string or null");
    *out = json_string(json_string_value(v));
    return *out != NULL ? 0 : -ENOMEM;
}

static int decimal(const json_t *v, const char *path, json_t **out, struct norm_err *e)
{
    char s[NORM_MONEY_SIZE];
    int rc;

    /* Canonical amounts are strings: a JSON number here would already have lost exactness. */
    if (!json_is_string(v))
        return norm_fail(e, path, "must be a decimal string like \"12.34\"");
    rc = norm_money(v, 2, path, s, e);
    if (rc < 0)
        return rc;
    *out = json_string(s);
    return *out != NULL ? 0 : -ENOMEM;
}

static int address(const json_t *v, const char *path, json_t **out, struct norm_err *e)
{
    static const char *const keys[] = {"name",   "line1",       "line2",  "city",
                                       "region", "postal_code", "country"};
    const char *parts[7];
    char p[128];

    if (json_is_null(v)) {
        *out = json_null();
        return 0;
    }
    if (!json_is_object(v))
        return norm_fail(e, path, "must be an object or null");
    for (size_t i = 0; i < 7; i++) {
        const json_t *part = json_object_get(v, keys[i]);

        snprintf(p, sizeof(p), "%s.%s", path, keys[i]);
        if (part != NULL && !json_is_null(part) && !json_is_string(part))
            return norm_fail(e, p, "must be a string or null");
        parts[i] = json_string_value(part);
    }
    *out = norm_address(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6]);
    return *out != NULL ? 0 : -ENOMEM;
}

static int enum_fail(const struct field *f, const char *path, struct norm_err *e)
{
    char list[160] = "";
    size_t n = 0;

    for (const char *const *a = f->allowed; *a != NULL && n < sizeof(list); a++)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s\"%s\"", n > 0 ? ", " : "", *a);
    return norm_fail(e, path, "must be one of %s", list);
}

static int convert(const struct field *f, const json_t *v, json_t **out, struct norm_err *e)
{
    char path[64], buf[NORM_TIME_SIZE];
    int rc;

    snprintf(path, sizeof(path), "data.%s", f->name);
    switch (f->type) {
    case F_NSTRING:
        return nstring(v, path, out, e);
    case F_ENUM:
        for (const char *const *a = f->allowed; *a != NULL; a++) {
            if (json_is_string(v) && strcmp(json_string_value(v), *a) == 0) {
                *out = json_string(*a);
                return *out != NULL ? 0 : -ENOMEM;
            }
        }
        return enum_fail(f, path, e);
    case F_CURRENCY: {
        char c[4];

        rc = norm_currency(v, path, c, e);
        if (rc < 0)
            return rc;
        *out = json_string(c);
        return *out != NULL ? 0 : -ENOMEM;
    }
    case F_DECIMAL:
        return decimal(v, path, out, e);
    case F_ADDRESS:
        return address(v, path, out, e);
    case F_LINES:
        /* strict: prices are decimal strings, kept verbatim, so minor (2) is never used. */
        return norm_lines(v, path, "title", "unit_price", 2, true, out, e);
    case F_TIME:
        rc = norm_time(v, false, path, buf, e);
        if (rc < 0)
            return rc;
        *out = json_string(buf);
        return *out != NULL ? 0 : -ENOMEM;
    }
    return -EINVAL;
}

/* The type is inside the signed body: topic says nothing more, and every body is dated. */
static int standard_normalize(const char *source, const char *topic, const json_t *body, time_t now,
                              json_t **out, char *err, size_t err_size)
{
    struct norm_err e = {err, err_size};
    const json_t *data = json_object_get(body, "data");
    const json_t *idv, *upd, *partial_v;
    char id[NORM_ID_SIZE], updated[NORM_TIME_SIZE];
    bool partial, oom = false, any = false;
    json_t *o;
    int rc;

    if (!json_is_object(body))
        return norm_fail(&e, "$", "must be an object {\"type\", \"timestamp\", \"data\"}");
    if (!json_is_object(data))
        return norm_fail(&e, "data", "must be an object");
    idv = json_object_get(data, "external_id");
    rc = norm_id(idv != NULL ? idv : json_object_get(data, "id"),
                 idv != NULL ? "data.external_id" : "data.id", id, &e);
    if (rc < 0)
        return rc;
    /* The order's own updated_at when it has one, else when the event happened. */
    upd = json_object_get(data, "updated_at");
    rc = upd != NULL
             ? norm_time(upd, false, "data.updated_at", updated, &e)
             : norm_time(json_object_get(body, "timestamp"), false, "timestamp", updated, &e);
    if (rc < 0)
        return rc;
    partial_v = json_object_get(data, "partial");
    if (partial_v != NULL && !json_is_boolean(partial_v))
        return norm_fail(&e, "data.partial", "must be a boolean");
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        any = any || json_object_get(data, fields[i].name) != NULL;
    /* Thin payloads ({"id": 250}) say only which order changed: merge, never replace. */
    partial = json_is_true(partial_v) || !any;

    o = norm_order_new(source, id);
    if (o == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const json_t *v = json_object_get(data, fields[i].name);
        json_t *conv = NULL;
        char path[64];

        if (v == NULL && partial)
            continue;
        if (v == NULL) {
            snprintf(path, sizeof(path), "data.%s", fields[i].name);
            rc = norm_fail(&e, path, "is required in a full order (or set \"partial\": true)");
            goto fail;
        }
        rc = convert(&fields[i], v, &conv, &e);
        if (rc < 0)
            goto fail;
        norm_put(o, fields[i].name, conv, &oom);
        if (oom) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    /* created_at went in with the fields above, so finish adds only the rest. */
    rc = norm_order_finish(o, NULL, updated, partial);
    if (rc < 0)
        goto fail;
    *out = o;
    return 0;
fail:
    json_decref(o);
    return rc;
}

/* ------------------------------------------------------------ webhooks */

static enum verify_result standard_verify(const struct source_request *req, char *detail,
                                          size_t size)
{
    return verify_standard(req->secrets, req->get_header, req->ctx, req->body, req->len, req->now,
                           req->tolerance_s, detail, size);
}

static int standard_topic(const struct source_request *req, const json_t *payload, const char **out,
                          struct source_refused *why)
{
    *out = json_string_value(json_object_get(payload, "type"));
    if (*out == NULL)
        return source_refuse(why, SOURCE_NOT_AN_ORDER, "field 'type' must be a string");
    return 0;
}

/* The webhook-id: standard_verify made sure it is there; it is signed, but may be long. */
static int standard_dedupe_key(const struct source_request *req, const json_t *payload,
                               const char *topic, char **key, struct source_refused *why)
{
    const char *id = req->get_header(req->ctx, "webhook-id");

    if (source_check_token(id, "webhook-id", why) < 0)
        return -EINVAL;
    *key = strdup(id);
    return *key != NULL ? 0 : -ENOMEM;
}

static const struct source_topic standard_topics[] = {
    {"order.created", "order.created", NULL, NULL},
    {"order.updated", "order.updated", NULL, NULL},
    {"order.paid", "order.paid", NULL, NULL},
    {"order.cancelled", "order.cancelled", NULL, NULL},
    {"order.refunded", "order.refunded", NULL, NULL},
    {"order.fulfilled", "order.fulfilled", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

/* ------------------------------------------------------------- polling */

/* A polled list holds the `data` of order.updated events: canonical or thin orders. */
static int standard_poll_order(const char *source, const json_t *item, time_t now, json_t **out,
                               char *err, size_t err_size)
{
    json_t *body = json_pack("{s:s,s:O}", "type", "order.updated", "data", item);
    int rc;

    if (body == NULL)
        return -ENOMEM;
    rc = standard_normalize(source, "order.updated", body, now, out, err, err_size);
    json_decref(body);
    return rc;
}

const struct source_kind source_standard = {
    .name = "standard",
    .verify = standard_verify,
    .topic = standard_topic,
    .dedupe_key = standard_dedupe_key,
    .topics = standard_topics,
    .normalize = standard_normalize,
    .poll_order = standard_poll_order,
};
