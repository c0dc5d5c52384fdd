/*
 * hook: the webhook pipeline (see hook.h for the flow). A hook is an object
 * with an explicit state; hook_finish() is the one way out of every state.
 *
 * Lifetime: a hook that started its latency timer embeds a uv handle, so it
 * is freed only in that timer's close callback; one without a timer is freed
 * at once. Either way it leaves ds->hooks when it answers, so shutdown sees
 * only hooks that still owe an answer.
 */
#include "hook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "list.h"
#include "log.h"
#include "record.h"
#include "verify.h"

/* db.c reconnects within ~0.5 s (its backoff cap): one second is enough. */
#define DB_RETRY_AFTER "1"

enum hook_state { HOOK_NEW, HOOK_DELAYING, HOOK_APPLYING, HOOK_DONE };

struct hook {
    struct list_node node; /* ds->hooks while the answer is owed */
    struct downstream *ds;
    struct http_request *req; /* owned by the server until answered */
    enum hook_state state;
    enum fault fault;
    unsigned retry_after_s;
    bool timer_open;
    uv_timer_t timer;
    const char *params[2]; /* webhook-id and body, borrowed from req until the answer */
};

static void set_state(struct hook *h, enum hook_state to)
{
    /* forward only: an answered hook must never be touched again */
    if (to <= h->state)
        abort();
    h->state = to;
}

static void on_timer_closed(uv_handle_t *handle)
{
    free(handle->data);
}

/* Unlinks and releases a hook whose request was answered. */
static void hook_finish(struct hook *h)
{
    set_state(h, HOOK_DONE);
    list_remove(&h->node);
    h->req = NULL;
    if (h->timer_open)
        uv_close((uv_handle_t *)&h->timer, on_timer_closed);
    else
        free(h);
}

static void log_answer(const struct hook *h, int status, const char *outcome, const char *detail)
{
    /* successes at debug: a benchmark sends thousands per second */
    enum log_level lvl = status < 300 ? LOG_DEBUG : status >= 500 ? LOG_WARN : LOG_INFO;
    if (h->fault != FAULT_NONE)
        lvl = LOG_INFO; /* asked for: not a warning */
    if (!log_enabled(lvl))
        return;
    const char *id = http_request_header(h->req, "webhook-id");
    json_t *f =
        json_pack("{s:I,s:s,s:i,s:s,s:f}", "request_id", (json_int_t)http_request_id(h->req),
                  "path", http_request_path(h->req), "status", status, "outcome", outcome,
                  "duration_ms", (double)(uv_hrtime() - http_request_start_ns(h->req)) / 1e6);
    if (f != NULL && id != NULL)
        json_object_set_new(f, "webhook_id", json_string(id));
    if (f != NULL && detail != NULL)
        json_object_set_new(f, "detail", json_string(detail));
    log_json(lvl, "webhook", f);
}

static void answer_ok(struct hook *h, const char *outcome)
{
    char body[64];
    snprintf(body, sizeof(body), "{\"outcome\":\"%s\"}", outcome);
    log_answer(h, 200, outcome, NULL);
    http_respond_json(h->req, 200, body);
    hook_finish(h);
}

/* `retry_after` (may be NULL) becomes a Retry-After header. */
static void answer_error(struct hook *h, int status, const char *error, const char *detail,
                         const char *retry_after)
{
    struct http_header hdr = {"Retry-After", retry_after};
    log_answer(h, status, error, detail);
    http_respond_error(h->req, status, error, detail, retry_after ? &hdr : NULL,
                       retry_after ? 1 : 0);
    hook_finish(h);
}

static void answer_unavailable(struct hook *h, const char *detail)
{
    h->ds->counters.unavailable++;
    answer_error(h, 503, "database_unavailable", detail, DB_RETRY_AFTER);
}

/* Answers an injected fault chosen at arrival. */
static void answer_fault(struct hook *h)
{
    char ra[16];
    snprintf(ra, sizeof(ra), "%u", h->retry_after_s);
    h->ds->counters.injected[h->fault]++;
    switch (h->fault) {
    case FAULT_DOWN:
        answer_error(h, 503, "down", "injected: inside the down window", ra);
        return;
    case FAULT_THROTTLE:
        answer_error(h, 429, "throttled", "injected: throttle_rate", ra);
        return;
    case FAULT_FAIL:
        answer_error(h, 500, "injected_failure", "injected: fail_rate; nothing was applied", NULL);
        return;
    case FAULT_FAIL_AFTER_APPLY:
        answer_error(h, 500, "injected_failure",
                     "injected: fail_after_apply_rate; the event was applied", NULL);
        return;
    case FAULT_NONE:
        break;
    }
    abort();
}

/* After the event was applied (or counted, for the sink). */
static void answer_applied(struct hook *h, const char *outcome)
{
    if (strcmp(outcome, "duplicate") == 0)
        h->ds->counters.duplicates++;
    else
        h->ds->counters.applied++;
    if (h->fault == FAULT_FAIL_AFTER_APPLY)
        answer_fault(h);
    else
        answer_ok(h, outcome);
}

static const char *get_header(void *ctx, const char *name)
{
    return http_request_header(ctx, name);
}

static const char *const event_types[] = {"order.created",   "order.updated",  "order.paid",
                                          "order.cancelled", "order.refunded", "order.fulfilled"};

static bool is_nonempty_string(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0;
}

/*
 * Checks the envelope the SQL relies on. Returns NULL when fine, else a static
 * explanation for the 400. When fine and `line` is not NULL, writes the
 * record line of the event there ("<type>\t<source>:<external_id>").
 */
static const char *check_event(const char *body, size_t len, char *line, size_t line_size)
{
    json_error_t jerr;
    json_t *ev = json_loadb(body, len, 0, &jerr);
    const char *why = NULL;
    if (ev == NULL)
        return "the body is not valid JSON";
    const json_t *type = json_object_get(ev, "type");
    const json_t *data = json_object_get(ev, "data");
    if (!json_is_object(ev)) {
        why = "the body is not a JSON object";
    } else if (!json_is_string(type)) {
        why = "\"type\" is missing or not a string";
    } else if (!json_is_object(data)) {
        why = "\"data\" is missing or not an object";
    } else if (!is_nonempty_string(json_object_get(data, "source")) ||
               !is_nonempty_string(json_object_get(data, "external_id"))) {
        why = "data.source and data.external_id must be non-empty strings";
    } else {
        why = "unknown event type";
        for (size_t i = 0; i < sizeof(event_types) / sizeof(event_types[0]); i++)
            if (strcmp(json_string_value(type), event_types[i]) == 0)
                why = NULL;
    }
    if (why == NULL && line != NULL)
        snprintf(line, line_size, "%s\t%s:%s", json_string_value(type),
                 json_string_value(json_object_get(data, "source")),
                 json_string_value(json_object_get(data, "external_id")));
    json_decref(ev);
    return why;
}

static bool is_json_content_type(const char *ct)
{
    static const char json_type[] = "application/json";
    size_t n = sizeof(json_type) - 1;
    return strncasecmp(ct, json_type, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/*
 * Result of <role>.apply(). SQLSTATE classes 22 (data exception: a cast of a
 * bad number, lines that are not an array) and 23 (constraint: an invoice
 * without total) mean the event itself is wrong: 400, so the sender's
 * attempts count toward disabling instead of retrying a poison event
 * silently. Anything else is our side: 503, the sender retries.
 */
static void on_applied(PGresult *res, const char *err, void *data)
{
    struct hook *h = data;
    if (res == NULL) {
        /* connection lost: the transaction may or may not have committed; a
         * redelivery is deduplicated either way */
        answer_unavailable(h, err ? err : "the database connection was lost");
        return;
    }
    if (err != NULL) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        if (state != NULL && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)) {
            h->ds->counters.malformed++;
            answer_error(h, 400, "invalid_event", primary ? primary : err, NULL);
            return;
        }
        log_error("applying an event failed", json_pack("{s:s,s:s}", "sqlstate", state ? state : "",
                                                        "detail", primary ? primary : err));
        answer_unavailable(h, "the event could not be applied; retry later");
        return;
    }
    static const char *const cols[] = {ROLE_COL_OUTCOME};
    int outcome;
    if (PQntuples(res) != 1 || db_columns(res, "apply", cols, &outcome, 1) < 0) {
        answer_unavailable(h, "unexpected result from apply()");
        return;
    }
    answer_applied(h, PQgetvalue(res, 0, outcome));
}

/* Everything after the latency delay. */
static void hook_run(struct hook *h)
{
    struct downstream *ds = h->ds;
    if (h->fault != FAULT_NONE && h->fault != FAULT_FAIL_AFTER_APPLY) {
        answer_fault(h);
        return;
    }
    size_t len;
    const char *body = http_request_body(h->req, &len);
    char detail[160] = "";
    enum verify_result vr = verify_standard(ds->secrets, get_header, h->req, body, len, time(NULL),
                                            0, detail, sizeof(detail));
    if (vr == VERIFY_ERROR) {
        answer_error(h, 500, "internal_error", detail, NULL);
        return;
    }
    if (vr != VERIFY_OK) {
        ds->counters.invalid++;
        answer_error(h, 401, "invalid_signature", detail, NULL);
        return;
    }
    ds->counters.valid++;
    const char *ct = http_request_header(h->req, "content-type");
    if (ct != NULL && !is_json_content_type(ct)) {
        ds->counters.malformed++;
        answer_error(h, 415, "unsupported_media_type", "the body must be application/json", NULL);
        return;
    }
    char what[400];
    const char *why = check_event(body, len, what, sizeof(what));
    if (why != NULL) {
        ds->counters.malformed++;
        answer_error(h, 400, "malformed_event", why, NULL);
        return;
    }
    if (!role_has_db(ds->role)) {
        if (ds->record != NULL) {
            /* the arrival time (µs, wall clock) lets a benchmark measure commit -> delivery */
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            char line[512];
            int n = snprintf(line, sizeof(line), "%s\t%s\t%lld",
                             http_request_header(h->req, "webhook-id"), what,
                             (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000);
            if (n > 0)
                record_line(ds->record, line,
                            (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
        }
        answer_applied(h, "applied");
        return;
    }
    if (ds->db == NULL || !db_is_ready(ds->db)) {
        answer_unavailable(h, "the database is not connected; retry later");
        return;
    }
    /* verify_standard succeeded, so webhook-id is present */
    h->params[0] = http_request_header(h->req, "webhook-id");
    h->params[1] = body;
    set_state(h, HOOK_APPLYING);
    if (db_query(ds->db, true, ROLE_STMT_APPLY, 2, h->params, on_applied, h) < 0)
        answer_unavailable(h, "the database is not connected; retry later");
}

static void on_latency(uv_timer_t *t)
{
    hook_run(t->data);
}

void hook_start(struct downstream *ds, struct http_request *req)
{
    ds->counters.received++;
    struct hook *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        struct http_header hdr = {"Retry-After", "1"};
        http_respond_error(req, 503, "out_of_memory", "try again later", &hdr, 1);
        return;
    }
    h->ds = ds;
    h->req = req;
    list_prepend(&ds->hooks, &h->node);
    h->fault = faults_decide(&ds->faults, uv_now(ds->loop), &h->retry_after_s);
    int64_t latency = ds->faults.knobs.latency_ms;
    if (latency <= 0) {
        hook_run(h);
        return;
    }
    uv_timer_init(ds->loop, &h->timer);
    h->timer.data = h;
    h->timer_open = true;
    set_state(h, HOOK_DELAYING);
    uv_timer_start(&h->timer, on_latency, (uint64_t)latency, 0);
}

void hook_abort_all(struct downstream *ds)
{
    while (!list_empty(&ds->hooks)) {
        struct hook *h = list_entry(list_first(&ds->hooks), struct hook, node);
        if (h->state != HOOK_DELAYING)
            abort(); /* db_close() must have answered every applying hook */
        uv_timer_stop(&h->timer);
        answer_error(h, 503, "shutting_down", "the receiver is stopping; retry later", "1");
    }
}
