/*
 * inbound: one webhook request → one inbound_event, or the HTTP status that
 * rejects it. The order of the checks is part of the inbound contract:
 * WooCommerce's unsigned ping, then the signature on the raw bytes (nothing
 * unauthenticated gets parsed), then the content type, the JSON, and last the
 * order itself, checked against the topic. The sender-specific knowledge here
 * is limited to topics and dedupe keys; field mapping lives in
 * normalize_<kind>.c.
 */
#include "inbound.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "normalize.h"
#include "verify.h"

static const char *const kind_names[] = {
    [SOURCE_SHOPIFY] = "shopify",
    [SOURCE_WOOCOMMERCE] = "woocommerce",
    [SOURCE_STRIPE] = "stripe",
    [SOURCE_STANDARD] = "standard",
};

int source_kind_parse(const char *s, enum source_kind *out)
{
    for (size_t i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++) {
        if (s != NULL && strcmp(s, kind_names[i]) == 0) {
            *out = (enum source_kind)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *source_kind_name(enum source_kind kind)
{
    if ((size_t)kind < sizeof(kind_names) / sizeof(kind_names[0]))
        return kind_names[kind];
    return "unknown";
}

void inbound_event_clear(struct inbound_event *ev)
{
    free(ev->dedupe_key);
    free(ev->topic);
    free(ev->order_ref);
    json_decref(ev->order);
    json_decref(ev->payload);
    memset(ev, 0, sizeof(*ev));
}

static int fail(struct inbound_error *err, int status, const char *code, int rc, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

static int fail(struct inbound_error *err, int status, const char *code, int rc, const char *fmt,
                ...)
{
    va_list ap;

    err->http_status = status;
    err->error = code;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
    return rc;
}

/*
 * WooCommerce pings a new webhook's URL with a form body `webhook_id=<n>` and
 * none of its X-WC-Webhook-* headers, unsigned, and shows the shop owner an
 * error unless the answer is exactly 200. Recognized narrowly, so that a
 * signed delivery with a stripped signature header is still a 401.
 */
static bool is_woo_ping(const char *(*get_header)(void *, const char *), void *ctx,
                        const char *body, size_t len)
{
    static const char *const headers[] = {"x-wc-webhook-signature",  "x-wc-webhook-topic",
                                          "x-wc-webhook-id",         "x-wc-webhook-source",
                                          "x-wc-webhook-resource",   "x-wc-webhook-event",
                                          "x-wc-webhook-delivery-id"};
    static const char prefix[] = "webhook_id=";
    size_t plen = sizeof(prefix) - 1;

    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        if (get_header(ctx, headers[i]) != NULL)
            return false;
    }
    if (len <= plen || len > plen + 20 || memcmp(body, prefix, plen) != 0)
        return false;
    for (size_t i = plen; i < len; i++) {
        if (!isdigit((unsigned char)body[i]))
            return false;
    }
    return true;
}

/* application/json, any case, optionally followed by parameters (charset=utf-8). */
static bool is_json_content_type(const char *ct)
{
    static const char want[] = "application/json";
    size_t n = sizeof(want) - 1;

    if (ct == NULL)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static char *sha256_key(const char *body, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[VERIFY_SHA256_LEN];
    unsigned int n = VERIFY_SHA256_LEN;
    char *key;

    if (verify_sha256(body, len, md) < 0)
        return NULL;
    key = malloc(7 + 2 * n + 1);
    if (key == NULL)
        return NULL;
    memcpy(key, "sha256:", 7);
    for (unsigned int i = 0; i < n; i++) {
        key[7 + 2 * i] = digits[md[i] >> 4];
        key[7 + 2 * i + 1] = digits[md[i] & 15];
    }
    key[7 + 2 * n] = '\0';
    return key;
}

static char *join3(const char *a, const char *b, const char *c)
{
    char *s = NULL;

    if (asprintf(&s, "%s%s%s", a, b, c) < 0)
        return NULL;
    return s;
}

/*
 * Topic → event type, per kind. Shopify and WooCommerce sign the body but not
 * the topic header, so a validly signed body replayed under another topic (an
 * open order as orders/cancelled) must not become that event: the header only
 * chooses among the events the signed body supports. A rule whose event
 * claims a state names the canonical field that must show it (`field` ==
 * `value`); whether the body is an order, a refund or a deletion notice at
 * all is checked by normalize_<kind> (-EPROTO). Stripe and Standard Webhooks
 * carry the type inside what is signed, so their rules claim nothing more.
 */
struct topic_rule {
    const char *topic;
    const char *event_type;
    const char *field; /* NULL: any body normalize accepts for this topic */
    const char *value;
};

static const struct topic_rule shopify_rules[] = {
    {"orders/create", "order.created", NULL, NULL},
    {"orders/updated", "order.updated", NULL, NULL},
    /* Shopify sends orders/paid when financial_status becomes paid, with that body */
    {"orders/paid", "order.paid", "financial_status", "paid"},
    /* cancelled_at set; normalize_shopify makes that status "cancelled" */
    {"orders/cancelled", "order.cancelled", "status", "cancelled"},
    {"orders/fulfilled", "order.fulfilled", "fulfillment_status", "fulfilled"},
    {"orders/partially_fulfilled", "order.updated", NULL, NULL},
    {"refunds/create", "order.refunded", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static const struct topic_rule woocommerce_rules[] = {
    {"order.created", "order.created", NULL, NULL},
    {"order.updated", "order.updated", NULL, NULL},
    /* a deletion notice, or the trashed/cancelled order: status "cancelled" either way */
    {"order.deleted", "order.cancelled", "status", "cancelled"},
    {"order.restored", "order.updated", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static const struct topic_rule stripe_rules[] = {
    {"checkout.session.completed", "order.created", NULL, NULL},
    {"checkout.session.async_payment_succeeded", "order.paid", NULL, NULL},
    {"checkout.session.async_payment_failed", "order.updated", NULL, NULL},
    {"checkout.session.expired", "order.cancelled", NULL, NULL},
    {"payment_intent.succeeded", "order.paid", NULL, NULL},
    {"charge.refunded", "order.refunded", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static const struct topic_rule standard_rules[] = {
    {"order.created", "order.created", NULL, NULL},
    {"order.updated", "order.updated", NULL, NULL},
    {"order.paid", "order.paid", NULL, NULL},
    {"order.cancelled", "order.cancelled", NULL, NULL},
    {"order.refunded", "order.refunded", NULL, NULL},
    {"order.fulfilled", "order.fulfilled", NULL, NULL},
    {NULL, NULL, NULL, NULL},
};

static const struct topic_rule *const rules_of[] = {
    [SOURCE_SHOPIFY] = shopify_rules,
    [SOURCE_WOOCOMMERCE] = woocommerce_rules,
    [SOURCE_STRIPE] = stripe_rules,
    [SOURCE_STANDARD] = standard_rules,
};

/* The rule for a topic, or NULL when the topic is not about orders. */
static const struct topic_rule *find_rule(enum source_kind kind, const char *topic)
{
    if ((size_t)kind >= sizeof(rules_of) / sizeof(rules_of[0]))
        return NULL;
    for (const struct topic_rule *r = rules_of[kind]; r->topic != NULL; r++) {
        if (strcmp(r->topic, topic) == 0)
            return r;
    }
    return NULL;
}

/*
 * The event a rule selects for this body. WooCommerce has no cancel or refund
 * topic: those status changes arrive as order.updated, and the (signed) status
 * tells them apart.
 */
static const char *event_of(enum source_kind kind, const struct topic_rule *rule,
                            const json_t *payload)
{
    const char *status = json_string_value(json_object_get(payload, "status"));

    if (kind == SOURCE_WOOCOMMERCE && strcmp(rule->topic, "order.updated") == 0 && status != NULL) {
        if (strcmp(status, "cancelled") == 0)
            return "order.cancelled";
        if (strcmp(status, "refunded") == 0)
            return "order.refunded";
    }
    return rule->event_type;
}

/* Whether the canonical order shows the state the rule's event claims; else says why. */
static bool claim_holds(const struct topic_rule *rule, const json_t *order, char *detail,
                        size_t size)
{
    const char *have;

    if (rule->field == NULL)
        return true;
    have = json_string_value(json_object_get(order, rule->field));
    if (have != NULL && strcmp(have, rule->value) == 0)
        return true;
    snprintf(detail, size, "topic '%s' needs %s '%s' but the signed body's is '%s'", rule->topic,
             rule->field, rule->value, have != NULL ? have : "absent");
    return false;
}

static enum verify_result verify(const struct inbound_source *src,
                                 const char *(*get_header)(void *, const char *), void *ctx,
                                 const char *body, size_t len, time_t now, char *detail,
                                 size_t size)
{
    switch (src->kind) {
    case SOURCE_SHOPIFY:
        return verify_shopify(src->secrets, get_header, ctx, body, len, detail, size);
    case SOURCE_WOOCOMMERCE:
        return verify_woocommerce(src->secrets, get_header, ctx, body, len, detail, size);
    case SOURCE_STRIPE:
        return verify_stripe(src->secrets, get_header, ctx, body, len, now, src->tolerance_s,
                             detail, size);
    case SOURCE_STANDARD:
        return verify_standard(src->secrets, get_header, ctx, body, len, now, src->tolerance_s,
                               detail, size);
    }
    snprintf(detail, size, "unknown source kind");
    return VERIFY_ERROR;
}

/*
 * Unsigned header values that become the dedupe key or the topic must be
 * short printable ASCII, as every platform sends them. Anything else would
 * fail the whole group-commit batch it rides in, other senders' webhooks
 * included: bytes that are not UTF-8 cannot go into the batch's JSON, and a
 * key over ~2.7 kB does not fit the dedupe index (SQLSTATE 54000).
 */
#define MAX_TOKEN_LEN 200

static int check_token(const char *value, const char *display, struct inbound_error *err)
{
    size_t n = 0;

    for (; value[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)value[n];

        if (ch < 0x21 || ch > 0x7e || n >= MAX_TOKEN_LEN)
            break;
    }
    if (n == 0 || value[n] != '\0')
        return fail(err, 400, "invalid_header", -EINVAL,
                    "%s header must be 1 to %d printable ASCII characters", display, MAX_TOKEN_LEN);
    return 0;
}

/*
 * Topic, dedupe key, and the event type the topic asks for with its rule
 * (NULL when the topic is not about orders); 0 or <0 with err filled.
 */
static int classify(const struct inbound_source *src,
                    const char *(*get_header)(void *, const char *), void *ctx, const char *body,
                    size_t len, struct inbound_event *ev, const struct topic_rule **rule,
                    struct inbound_error *err)
{
    const json_t *p = ev->payload;
    const char *topic = NULL;

    switch (src->kind) {
    case SOURCE_SHOPIFY: {
        const char *event_id = get_header(ctx, "x-shopify-event-id");
        const char *key;

        topic = get_header(ctx, "x-shopify-topic");
        if (topic == NULL)
            return fail(err, 400, "missing_topic", -EINVAL, "X-Shopify-Topic header is missing");
        /*
         * X-Shopify-Webhook-Id is stable across retries of one delivery; the
         * event id is shared by every topic of one merchant action.
         */
        key = get_header(ctx, "x-shopify-webhook-id");
        if (check_token(topic, "X-Shopify-Topic", err) < 0 ||
            (key != NULL && check_token(key, "X-Shopify-Webhook-Id", err) < 0) ||
            (event_id != NULL && check_token(event_id, "X-Shopify-Event-Id", err) < 0))
            return -EINVAL;
        if (key != NULL)
            ev->dedupe_key = strdup(key);
        else if (event_id != NULL)
            ev->dedupe_key = join3(topic, ":", event_id);
        else
            ev->dedupe_key = sha256_key(body, len);
        break;
    }
    case SOURCE_WOOCOMMERCE: {
        const char *modified = json_string_value(json_object_get(p, "date_modified_gmt"));
        char id[64];

        topic = get_header(ctx, "x-wc-webhook-topic");
        if (topic == NULL)
            return fail(err, 400, "missing_topic", -EINVAL, "X-WC-Webhook-Topic header is missing");
        if (check_token(topic, "X-WC-Webhook-Topic", err) < 0)
            return -EINVAL;
        /*
         * Never X-WC-Webhook-Delivery-ID: it comes from a whole-second clock
         * and repeats. An order's id with its modification time names one
         * state of the order exactly.
         */
        id[0] = '\0';
        if (json_is_integer(json_object_get(p, "id")))
            snprintf(id, sizeof(id), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(p, "id")));
        /* a date is ~20 characters: anything much longer is not one, hash the body instead */
        if (strncmp(topic, "order.", 6) == 0 && id[0] != '\0' && modified != NULL &&
            modified[0] != '\0' && strlen(modified) <= 40) {
            char prefix[80];

            snprintf(prefix, sizeof(prefix), "order:%s:", id);
            ev->dedupe_key = join3(prefix, modified, "");
        } else {
            ev->dedupe_key = sha256_key(body, len);
        }
        break;
    }
    case SOURCE_STRIPE:
    case SOURCE_STANDARD:
        topic = json_string_value(json_object_get(p, "type"));
        if (topic == NULL)
            return fail(err, 422, "not_an_order", -EINVAL, "field 'type' must be a string");
        if (src->kind == SOURCE_STRIPE) {
            const char *id = json_string_value(json_object_get(p, "id"));

            if (id == NULL || id[0] == '\0' || strlen(id) > MAX_TOKEN_LEN)
                return fail(err, 422, "not_an_order", -EINVAL,
                            "field 'id' must be the event id (evt_...)");
            ev->dedupe_key = strdup(id);
        } else {
            /* verify_standard made sure the header is there; it is signed, but may be long. */
            const char *id = get_header(ctx, "webhook-id");

            if (check_token(id, "webhook-id", err) < 0)
                return -EINVAL;
            ev->dedupe_key = strdup(id);
        }
        break;
    }
    ev->topic = strdup(topic);
    if (ev->dedupe_key == NULL || ev->topic == NULL)
        return fail(err, 500, "internal_error", -ENOMEM, "out of memory");
    *rule = find_rule(src->kind, topic);
    if (*rule != NULL)
        ev->event_type = event_of(src->kind, *rule, p);
    return 0;
}

/* The canonical order of ev->payload; 0 or the normalize_<kind> error with detail filled. */
static int normalize(const struct inbound_source *src, time_t now, struct inbound_event *ev,
                     char *detail, size_t size)
{
    switch (src->kind) {
    case SOURCE_SHOPIFY:
        return normalize_shopify(src->id, ev->topic, ev->payload, &ev->order, detail, size);
    case SOURCE_WOOCOMMERCE:
        return normalize_woocommerce(src->id, ev->topic, ev->payload, now, &ev->order, detail,
                                     size);
    case SOURCE_STRIPE:
        return normalize_stripe(src->id, ev->payload, &ev->order, detail, size);
    case SOURCE_STANDARD:
        return normalize_standard(src->id, ev->payload, &ev->order, detail, size);
    }
    snprintf(detail, size, "unknown source kind");
    return -EINVAL;
}

/*
 * The external id of the order a topic-mismatched body names, so that the
 * ignored webhook shows in that order's journey: the normalized order's when
 * the body normalized (only the topic's claim failed), else the body's own
 * order_id (a refund names its order) or id (an order, or WooCommerce's
 * deletion notice). *out is a new allocation, or NULL when the body names
 * none. Returns 0 or -ENOMEM.
 */
static int named_order(const struct inbound_event *ev, char **out)
{
    const json_t *v = json_object_get(ev->order, "external_id");
    char num[32];
    const char *s;

    *out = NULL;
    if (v == NULL)
        v = json_object_get(ev->payload, "order_id");
    if (v == NULL || json_is_null(v))
        v = json_object_get(ev->payload, "id");
    if (json_is_integer(v)) {
        snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        s = num;
    } else {
        s = json_string_value(v);
    }
    if (s == NULL || s[0] == '\0' || strlen(s) > MAX_TOKEN_LEN)
        return 0;
    *out = strdup(s);
    return *out != NULL ? 0 : -ENOMEM;
}

/*
 * Normalizes the order and checks that the signed body supports the event
 * the topic asks for. When it does not, the event is kept without an event
 * type or order: recorded and answered 200 (a genuine sender then stops
 * retrying), emitting nothing.
 */
static int interpret(const struct inbound_source *src, const struct topic_rule *rule, time_t now,
                     struct inbound_event *ev, struct inbound_error *err)
{
    char detail[NORMALIZE_ERR_SIZE] = "";
    int rc = normalize(src, now, ev, detail, sizeof(detail));

    if (rc == -ENOMEM)
        return fail(err, 500, "internal_error", rc, "out of memory");
    if (rc == 0 && claim_holds(rule, ev->order, detail, sizeof(detail)))
        return 0;
    if (rc < 0 && rc != -EPROTO)
        return fail(err, 422, "not_an_order", rc, "%s", detail);
    rc = named_order(ev, &ev->order_ref);
    if (rc < 0)
        return fail(err, 500, "internal_error", rc, "out of memory");
    json_decref(ev->order);
    ev->order = NULL;
    ev->event_type = NULL;
    ev->ignored_reason = INBOUND_TOPIC_MISMATCH;
    snprintf(ev->ignored_detail, sizeof(ev->ignored_detail), "%s", detail);
    return 0;
}

int inbound_parse(const struct inbound_source *src,
                  const char *(*get_header)(void *ctx, const char *name), void *ctx,
                  const char *content_type, const char *body, size_t len, time_t now,
                  struct inbound_event *out, struct inbound_error *err)
{
    char detail[sizeof(err->detail)];
    const struct topic_rule *rule = NULL;
    enum verify_result vr;
    json_error_t jerr;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(err, 0, sizeof(*err));
    /* An HTTP server may hand over no buffer at all for an empty body. */
    if (body == NULL) {
        body = "";
        len = 0;
    }
    if (src->kind == SOURCE_WOOCOMMERCE && is_woo_ping(get_header, ctx, body, len))
        return INBOUND_PING;

    detail[0] = '\0';
    vr = verify(src, get_header, ctx, body, len, now, detail, sizeof(detail));
    if (vr == VERIFY_ERROR)
        return fail(err, 500, "internal_error", -EIO, "%s", detail);
    if (vr != VERIFY_OK)
        return fail(err, 401, "invalid_signature", -EACCES, "%s", detail);

    /* Strict: every supported sender labels its JSON, so anything else is not for us. */
    if (!is_json_content_type(content_type))
        return fail(err, 415, "unsupported_media_type", -EPROTO,
                    "Content-Type must be application/json");

    /*
     * JSON_DECODE_INT_AS_REAL stays off: integers remain int64 so ids beyond
     * 2^53 are exact. JSON_DECODE_ANY lets a scalar body parse, so that it is
     * a 422 (not an order) rather than a 400. Duplicate keys are refused: an
     * order whose fields have two values means two things at once.
     */
    out->payload = json_loadb(body, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (out->payload == NULL)
        return fail(err, 400, "malformed_json", -EBADMSG, "line %d column %d: %s", jerr.line,
                    jerr.column, jerr.text);

    rc = classify(src, get_header, ctx, body, len, out, &rule, err);
    if (rc < 0)
        goto fail;
    if (out->event_type != NULL) {
        rc = interpret(src, rule, now, out, err);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:
    inbound_event_clear(out);
    return rc;
}
