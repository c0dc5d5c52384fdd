/*
 * inbound: one webhook request → one inbound_event, or the HTTP status that
 * rejects it. The order of the checks is part of the inbound contract: the
 * platform's unsigned URL check (ping), then the signature on the raw bytes
 * (nothing unauthenticated gets parsed), then the content type, the JSON,
 * and last the order itself, checked against the topic. What differs per
 * platform is asked of the source's kind (source_kind.h); nothing here
 * names a platform.
 */
#include "inbound.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json_guard.h"

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

/* A kind's refusal → its status and machine code (see inbound.h). */
static int refused(struct inbound_error *err, const struct source_refused *why)
{
    static const struct {
        int status;
        const char *code;
    } answer[] = {
        [SOURCE_MISSING_TOPIC] = {400, "missing_topic"},
        [SOURCE_INVALID_HEADER] = {400, "invalid_header"},
        [SOURCE_NOT_AN_ORDER] = {422, "not_an_order"},
    };

    return fail(err, answer[why->why].status, answer[why->why].code, -EINVAL, "%s", why->detail);
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

/* The kind's rule for a topic, or NULL when the topic is not about orders. */
static const struct source_topic *find_rule(const struct source_kind *kind, const char *topic)
{
    for (const struct source_topic *r = kind->topics; r->topic != NULL; r++) {
        if (strcmp(r->topic, topic) == 0)
            return r;
    }
    return NULL;
}

/* Whether the canonical order shows the state the rule's event claims; else says why. */
static bool claim_holds(const struct source_topic *rule, const json_t *order, char *detail,
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

/*
 * Topic, dedupe key, and the event type the topic asks for with its rule
 * (NULL when the topic is not about orders); 0 or <0 with err filled.
 */
static int classify(const struct source_kind *kind, const struct source_request *req,
                    struct inbound_event *ev, const struct source_topic **rule,
                    struct inbound_error *err)
{
    struct source_refused why;
    const char *topic = NULL;
    int rc;

    if (kind->topic(req, ev->payload, &topic, &why) < 0)
        return refused(err, &why);
    rc = kind->dedupe_key(req, ev->payload, topic, &ev->dedupe_key, &why);
    if (rc == -EINVAL)
        return refused(err, &why);
    if (rc == 0)
        ev->topic = strdup(topic);
    if (ev->dedupe_key == NULL || ev->topic == NULL)
        return fail(err, 500, "internal_error", -ENOMEM, "out of memory");
    *rule = find_rule(kind, topic);
    if (*rule != NULL)
        ev->event_type =
            kind->event_of != NULL ? kind->event_of(*rule, ev->payload) : (*rule)->event_type;
    return 0;
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
    if (s == NULL || s[0] == '\0' || strlen(s) > SOURCE_MAX_TOKEN_LEN)
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
static int interpret(const struct inbound_source *src, const struct source_topic *rule, time_t now,
                     struct inbound_event *ev, struct inbound_error *err)
{
    char detail[SOURCE_DETAIL_SIZE] = "";
    int rc = src->kind->normalize(src->id, ev->topic, ev->payload, now, &ev->order, detail,
                                  sizeof(detail));

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
    const struct source_kind *kind = src->kind;
    struct source_request req = {.secrets = src->secrets,
                                 .keys = src->keys,
                                 .tolerance_s = src->tolerance_s,
                                 .get_header = get_header,
                                 .ctx = ctx,
                                 .body = body,
                                 .len = len,
                                 .now = now};
    char detail[sizeof(err->detail)];
    const struct source_topic *rule = NULL;
    enum verify_result vr;
    json_error_t jerr;
    int rc;

    memset(out, 0, sizeof(*out));
    memset(err, 0, sizeof(*err));
    /* An HTTP server may hand over no buffer at all for an empty body. */
    if (body == NULL) {
        req.body = "";
        req.len = 0;
    }
    if (kind->is_ping != NULL && kind->is_ping(&req))
        return INBOUND_PING;

    detail[0] = '\0';
    vr = kind->verify(&req, detail, sizeof(detail));
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
     * order whose fields have two values means two things at once. Out of
     * memory is ours (a 400 would make the sender drop a good webhook), and
     * only the guard knows it (json_guard.h).
     */
    out->payload =
        json_guard_loadb(req.body, req.len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr, &rc);
    if (rc == -ENOMEM)
        return fail(err, 500, "internal_error", rc, "out of memory");
    if (rc < 0)
        return fail(err, 400, "malformed_json", rc, "line %d column %d: %s", jerr.line, jerr.column,
                    jerr.text);

    rc = classify(kind, &req, out, &rule, err);
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
