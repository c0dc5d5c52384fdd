/*
 * api: routing, per-request logging and HTTP metrics, for the public listener
 * (api_handle) and the admin one (api_admin_handle). The webhook route does
 * the cheap refusals first (method, source, database) so a flood of bad
 * requests costs no HMAC and no parsing.
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_console.h"
#include "buf.h"
#include "feed.h"
#include "inbound.h"
#include "ingest.h"
#include "json_arena.h"
#include "log.h"
#include "metrics.h"
#include "trace.h"

enum route {
    R_WEBHOOKS,
    R_FEEDS,
    R_HEALTHZ,
    R_READYZ,
    R_METRICS,
    R_CONSOLE,
    R_CONSOLE_API,
    R_OTHER,
    R_COUNT
};

static const char *const route_names[R_COUNT] = {"webhooks", "feeds",   "healthz",     "readyz",
                                                 "metrics",  "console", "console_api", "other"};

static struct metric *m_requests[R_COUNT][6];
static struct metric *m_seconds[R_COUNT];

#define MAX_METRICS_TEXT ((size_t)4 << 20)

static enum route route_of(const struct http_request *req)
{
    return (enum route)(uintptr_t)http_request_get_data(req);
}

static void count(enum route r, int status, double secs)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    if (m_requests[r][cls] == NULL) {
        char labels[64];
        snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%dxx\"", route_names[r], cls);
        m_requests[r][cls] = metrics_counter("ordersync_http_requests_total",
                                             "HTTP requests by route and status class", labels);
    }
    metric_add(m_requests[r][cls], 1);
    if (m_seconds[r] == NULL) {
        char labels[64];
        snprintf(labels, sizeof(labels), "route=\"%s\"", route_names[r]);
        m_seconds[r] = metrics_get(METRIC_HISTOGRAM, "ordersync_http_request_seconds",
                                   "Time from a complete request to its answer", labels,
                                   metrics_latency_buckets, metrics_latency_buckets_n);
    }
    metric_observe(m_seconds[r], secs);
}

static void log_request(struct http_request *req, int status, const char *outcome,
                        const char *source, const char *error, const char *detail,
                        const char *trace_id, double secs)
{
    enum log_level lvl = status >= 500 ? LOG_WARN : LOG_INFO;
    if (!log_enabled(lvl))
        return;
    json_t *f = json_pack("{s:I,s:s,s:s,s:i,s:f}", "request_id", (json_int_t)http_request_id(req),
                          "method", http_request_method(req), "path", http_request_path(req),
                          "status", status, "duration_ms", secs * 1000.0);
    if (f != NULL && source != NULL)
        json_object_set_new(f, "source", json_string(source));
    if (f != NULL && outcome != NULL)
        json_object_set_new(f, "outcome", json_string(outcome));
    if (f != NULL && error != NULL)
        json_object_set_new(f, "error", json_string(error));
    if (f != NULL && detail != NULL)
        json_object_set_new(f, "detail", json_string(detail));
    if (f != NULL && trace_id != NULL && trace_id[0] != '\0')
        json_object_set_new(f, "trace_id", json_string(trace_id));
    log_json(lvl, "request", f);
}

static double elapsed(const struct http_request *req)
{
    return (double)(uv_hrtime() - http_request_start_ns(req)) / 1e9;
}

/* An answer whose log line also names the webhook's trace. */
static void reply_traced(struct http_request *req, int status, const char *json,
                         const char *outcome, const char *source, const char *trace_id)
{
    double secs = elapsed(req);
    count(route_of(req), status, secs);
    log_request(req, status, outcome, source, NULL, NULL, trace_id, secs);
    http_respond_json(req, status, json);
}

void api_reply(struct http_request *req, int status, const char *json, const char *outcome,
               const char *source)
{
    reply_traced(req, status, json, outcome, source, NULL);
}

static void reply_error_traced(struct http_request *req, int status, const char *error,
                               const char *detail, const char *source,
                               const struct http_header *headers, size_t n_headers,
                               const char *trace_id)
{
    double secs = elapsed(req);
    enum route r = route_of(req);
    count(r, status, secs);
    if (r == R_WEBHOOKS) {
        char labels[96];
        snprintf(labels, sizeof(labels), "outcome=\"rejected\",reason=\"%s\"", error);
        metric_add(metrics_counter("ordersync_webhooks_total",
                                   "Webhooks by outcome (rejected ones by reason)", labels),
                   1);
    }
    log_request(req, status, NULL, source, error, detail, trace_id, secs);
    http_respond_error(req, status, error, detail, headers, n_headers);
}

void api_reply_error(struct http_request *req, int status, const char *error, const char *detail,
                     const char *source, const struct http_header *headers, size_t n_headers)
{
    reply_error_traced(req, status, error, detail, source, headers, n_headers, NULL);
}

void api_respond(struct http_request *req, int status, const char *content_type, const char *body,
                 size_t len, const struct http_header *headers, size_t n_headers)
{
    double secs = elapsed(req);
    count(route_of(req), status, secs);
    log_request(req, status, NULL, NULL, NULL, NULL, NULL, secs);
    http_respond(req, status, content_type, body, len, headers, n_headers);
}

static void reply_method_not_allowed(struct http_request *req, const char *allow)
{
    struct http_header h = {"Allow", allow};
    char detail[96];
    snprintf(detail, sizeof(detail), "%s is not allowed here; use %s", http_request_method(req),
             allow);
    api_reply_error(req, 405, "method_not_allowed", detail, NULL, &h, 1);
}

static const char *get_header(void *ctx, const char *name)
{
    return http_request_header(ctx, name);
}

/* The process's app: every request of both listeners carries the same one. */
static struct app *the_app;

static void reply_unavailable(struct http_request *req, const char *error, const char *detail,
                              const char *source)
{
    char ra[16];
    snprintf(ra, sizeof(ra), "%lld", (long long)(the_app ? the_app->cfg->retry_after_s : 5));
    struct http_header h = {"Retry-After", ra};
    api_reply_error(req, 503, error, detail, source, &h, 1);
}

static const char *source_of(const struct http_request *req)
{
    return http_request_path(req) + strlen("/webhooks/");
}

/* Appends a, b and c to out (size bytes, *n used), cut short as snprintf would cut them. */
static void body_add(char *out, size_t size, size_t *n, const char *a, const char *b, const char *c)
{
    const char *parts[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(parts[i]);
        if (len > size - 1 - *n)
            len = size - 1 - *n;
        memcpy(out + *n, parts[i], len);
        *n += len;
    }
    out[*n] = '\0';
}

/* ingest's outcome for one webhook → its answer */
static void on_ingested(void *ctx, const struct ingest_outcome *o)
{
    struct http_request *req = ctx;
    const char *source = source_of(req);
    switch (o->result) {
    case INGEST_UNAVAILABLE: {
        char ra[16];
        snprintf(ra, sizeof(ra), "%lld", (long long)(the_app ? the_app->cfg->retry_after_s : 5));
        struct http_header h = {"Retry-After", ra};
        reply_error_traced(req, 503, "database_unavailable", o->detail, source, &h, 1, o->trace_id);
        return;
    }
    case INGEST_REJECTED:
        reply_error_traced(req, 422, "rejected_by_database", o->detail, source, NULL, 0,
                           o->trace_id);
        return;
    case INGEST_FAILED:
        reply_error_traced(req, 500, "internal_error", o->detail, source, NULL, 0, o->trace_id);
        return;
    case INGEST_DONE:
        break;
    }
    /* "applied" is the database's word; senders are told "accepted" */
    const char *status = strcmp(o->outcome, "applied") == 0 ? "accepted" : o->outcome;
    /* every value is a static word or digits: put together, not built with jansson
       or printed (this is once per webhook, and allocation-free) */
    char body[160];
    size_t n = 0;
    body_add(body, sizeof(body), &n, "{\"status\":\"", status, "\"");
    /* the sender (or whoever forged its topic) learns why nothing happened */
    if (o->reason != NULL)
        body_add(body, sizeof(body), &n, ",\"reason\":\"", o->reason, "\"");
    if (o->order_id != NULL && o->order_id[0] != '\0')
        body_add(body, sizeof(body), &n, ",\"order_id\":\"", o->order_id, "\"");
    if (o->events > 0) {
        char digits[12], *d = digits + sizeof(digits);
        unsigned v = (unsigned)o->events;
        *--d = '\0';
        do {
            *--d = (char)('0' + v % 10);
            v /= 10;
        } while (v != 0);
        body_add(body, sizeof(body), &n, ",\"events\":", d, "");
    }
    body_add(body, sizeof(body), &n, "}", "", "");
    reply_traced(req, 200, body, status, source, o->trace_id);
}

static void handle_webhook(struct app *app, struct http_request *req, const char *source_id)
{
    if (strcmp(http_request_method(req), "POST") != 0) {
        reply_method_not_allowed(req, "POST");
        return;
    }
    if (!store_loaded(app->store)) {
        struct http_header h = {"Retry-After", "1"};
        api_reply_error(req, 503, "starting", "sources are not loaded yet", source_id, &h, 1);
        return;
    }
    const struct source *src = store_find_source(app->store, source_id);
    if (src == NULL) {
        char detail[160];
        snprintf(detail, sizeof(detail), "no source with id '%.64s'", source_id);
        api_reply_error(req, 404, "unknown_source", detail, NULL, NULL, 0);
        return;
    }
    if (!src->enabled || src->secret == NULL) {
        api_reply_error(req, 403, "source_disabled",
                        src->enabled ? "this source has no secret to verify webhooks with"
                                     : "this source is disabled",
                        src->id, NULL, 0);
        return;
    }
    if (!ingest_ready(app->ingest) || app->stopping) {
        reply_unavailable(req, "database_unavailable",
                          app->stopping ? "ordersync is shutting down"
                                        : "the database is not connected; retry later",
                          src->id);
        return;
    }
    if (ingest_full(app->ingest)) {
        /* refused before any verification or parsing: overload must cost little */
        reply_unavailable(req, "overloaded",
                          "too many webhooks are waiting for their commit; retry later", src->id);
        return;
    }
    struct inbound_source isrc = {.id = src->id,
                                  .kind = src->kind,
                                  .secrets = {src->secret, src->previous_secret},
                                  .keys = {src->keys[0], src->keys[1]},
                                  .tolerance_s = src->tolerance_s};
    size_t len;
    const char *body = http_request_body(req, &len);
    struct inbound_event ev;
    struct inbound_error err;
    memset(&ev, 0, sizeof(ev));
    memset(&err, 0, sizeof(err));
    /* the body's values and the canonical order come from the arena (json_arena.h); they are
     * freed when ingest_submit() has written the batch element, at the end of this call */
    json_arena_begin();
    int rc = inbound_parse(&isrc, get_header, req, http_request_header(req, "content-type"), body,
                           len, time(NULL), &ev, &err);
    json_arena_end();
    if (rc == INBOUND_PING) {
        api_reply(req, 200, "{\"status\":\"ping\"}", "ping", src->id);
        return;
    }
    if (rc < 0) {
        api_reply_error(req, err.http_status, err.error, err.detail, src->id, NULL, 0);
        return;
    }
    if (ev.ignored_reason != NULL)
        /* a forged replay or a confused sender: recorded and acknowledged, emits nothing */
        log_warn("webhook topic contradicts its signed body",
                 json_pack("{s:I,s:s,s:s,s:s,s:s}", "request_id", (json_int_t)http_request_id(req),
                           "source", src->id, "topic", ev.topic, "reason", ev.ignored_reason,
                           "detail", ev.ignored_detail));
    /* the shop's trace, if it sent a valid one (an invalid one is ignored, never refused) */
    if (!trace_parse_parent(http_request_header(req, "traceparent"), ev.trace_id) &&
        !trace_new_id(ev.trace_id))
        ev.trace_id[0] = '\0'; /* no randomness: the database starts the trace */
    ingest_submit(app->ingest, src->id, &ev, body, len, on_ingested, req);
}

/* ---------------------------------------------------------------- feeds */

static bool parse_uint(const char *s, size_t len, unsigned long long max, unsigned long long *out)
{
    if (len == 0 || len > 19)
        return false;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* Finds name=value in a query string; returns the value's length or -1. */
static int query_param(const char *q, const char *name, const char **val)
{
    size_t nl = strlen(name);
    for (const char *p = q; p != NULL && *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            *val = p + nl + 1;
            return (int)(len - nl - 1);
        }
        p = amp ? amp + 1 : NULL;
    }
    return -1;
}

static bool feed_client_gone(void *ctx)
{
    return http_request_peer_gone(ctx);
}

static void on_feed(void *ctx, enum feed_status st, const char *body, size_t n_events,
                    const char *detail)
{
    struct http_request *req = ctx;
    switch (st) {
    case FEED_OK:
        api_reply(req, 200, body, n_events ? "events" : "empty", NULL);
        return;
    case FEED_UNKNOWN:
        api_reply_error(req, 404, "unknown_feed", detail, NULL, NULL, 0);
        return;
    case FEED_UNAUTHORIZED: {
        struct http_header h = {"WWW-Authenticate", "Bearer realm=\"ordersync\""};
        api_reply_error(req, 401, "unauthorized", detail, NULL, &h, 1);
        return;
    }
    case FEED_FORBIDDEN:
        api_reply_error(req, 403, "forbidden", detail, NULL, NULL, 0);
        return;
    case FEED_BAD_CURSOR:
        api_reply_error(req, 400, "bad_cursor", detail, NULL, NULL, 0);
        return;
    case FEED_UNAVAILABLE: {
        struct http_header h = {"Retry-After", "1"};
        api_reply_error(req, 503, "database_unavailable", detail, NULL, &h, 1);
        return;
    }
    }
}

static void handle_feed(struct app *app, struct http_request *req, const char *dest_id)
{
    if (strcmp(http_request_method(req), "GET") != 0) {
        reply_method_not_allowed(req, "GET");
        return;
    }
    if (app->feed == NULL || app->stopping) {
        struct http_header h = {"Retry-After", "1"};
        api_reply_error(req, 503, "shutting_down", "ordersync is shutting down", NULL, &h, 1);
        return;
    }
    const char *q = http_request_query(req);
    const char *v;
    int vl;
    unsigned long long after = 0, limit = 100, wait = 0;
    if ((vl = query_param(q, "after", &v)) >= 0 &&
        !parse_uint(v, (size_t)vl, 9223372036854775807ULL, &after)) {
        api_reply_error(req, 400, "bad_cursor", "after must be a cursor returned as \"next\"", NULL,
                        NULL, 0);
        return;
    }
    if ((vl = query_param(q, "limit", &v)) >= 0 &&
        (!parse_uint(v, (size_t)vl, FEED_MAX_LIMIT, &limit) || limit == 0)) {
        api_reply_error(req, 400, "bad_limit", "limit must be an integer from 1 to 1000", NULL,
                        NULL, 0);
        return;
    }
    if ((vl = query_param(q, "wait", &v)) >= 0 &&
        !parse_uint(v, (size_t)vl, FEED_MAX_WAIT_S, &wait)) {
        api_reply_error(req, 400, "bad_wait", "wait must be an integer from 0 to 60 (seconds)",
                        NULL, NULL, 0);
        return;
    }
    const char *auth = http_request_header(req, "authorization");
    static const char bearer[] = "Bearer ";
    const char *token = auth != NULL && strncasecmp(auth, bearer, sizeof(bearer) - 1) == 0
                            ? auth + sizeof(bearer) - 1
                            : NULL;
    struct feed_request rq = {.dest_id = dest_id,
                              .bearer = token,
                              .after = (int64_t)after,
                              .limit = (unsigned)limit,
                              .wait_s = (unsigned)wait};
    feed_read(app->feed, &rq, on_feed, feed_client_gone, req);
}

/*
 * `detail` (libpq's error text: the database's host, port and user) only on
 * the admin listener; the public port says where to look instead.
 */
static void readyz(struct app *app, struct http_request *req, bool admin)
{
    bool db = ingest_ready(app->ingest);
    /* ready means able to deliver too: a test or a rolling upgrade that acts
       on 200 must not find the relay or the feeds still starting */
    const struct relay *relay = app->relay != NULL ? *app->relay : NULL;
    bool relay_ok = !app->cfg->relay_enabled || (relay != NULL && relay_ready(relay));
    bool feeds_ok = feed_ready(app->feed);
    bool ready = db && app->schema_current && store_loaded(app->store) && relay_ok && feeds_ok &&
                 !app->stopping;
    json_t *body = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s}", "status", ready ? "ready" : "unavailable",
                             "database", db ? "connected" : "disconnected", "schema",
                             app->schema_current ? "current" : "not current", "sources",
                             (int)store_source_count(app->store), "relay",
                             !app->cfg->relay_enabled ? "off"
                             : relay_ok               ? "ready"
                                                      : "not ready",
                             "feeds", feeds_ok ? "ready" : "not ready");
    if (body != NULL && !db)
        json_object_set_new(body, "detail",
                            json_string(admin ? ingest_last_error(app->ingest)
                                              : "the database is not reachable: the reason is in"
                                                " the log and on the admin listener's /readyz"));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    api_reply(req, ready ? 200 : 503, text ? text : "{}", NULL, NULL);
    free(text);
}

static void handle_readyz(struct app *app, struct http_request *req)
{
    readyz(app, req, false);
}

static void handle_readyz_admin(struct app *app, struct http_request *req)
{
    readyz(app, req, true);
}

static void handle_metrics(struct app *app, struct http_request *req)
{
    metric_set(
        metrics_gauge("ordersync_db_connected", "1 when the connection is ready", "db=\"ingest\""),
        ingest_ready(app->ingest));
    metric_set(
        metrics_gauge("ordersync_db_connected", "1 when the connection is ready", "db=\"aux\""),
        db_is_ready(app->db_aux));
    metric_set(metrics_gauge("ordersync_ingest_pending", "Webhooks queued or being committed", ""),
               ingest_pending(app->ingest));
    metric_set(metrics_gauge("ordersync_http_requests_in_progress",
                             "Requests received and not yet answered", ""),
               http_server_pending(app->http));
    struct buf out;
    buf_init(&out, MAX_METRICS_TEXT);
    int rc = metrics_render(&out);
    double secs = elapsed(req);
    count(R_METRICS, rc == 0 ? 200 : 500, secs);
    if (rc == 0)
        http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len, NULL,
                     0);
    else
        http_respond_error(req, 500, "internal_error", "metrics too large", NULL, 0);
    buf_free(&out);
}

static void handle_healthz(struct app *app, struct http_request *req)
{
    api_reply(req, 200, "{\"status\":\"ok\"}", NULL, NULL);
}

/*
 * A route: an exact path answering GET and HEAD (dispatch refuses the rest),
 * or, with `prefix`, the path and everything under it ("/api/": everything
 * under it), for a handler that checks methods itself.
 */
struct api_route {
    const char *path;
    enum route route;
    void (*handle)(struct app *app, struct http_request *req);
    bool prefix;
};

/* What an orchestrator's probes read on the public port. */
static const struct api_route probe_routes[] = {
    {"/healthz", R_HEALTHZ, handle_healthz, false},
    {"/readyz", R_READYZ, handle_readyz, false},
    {NULL, R_OTHER, NULL, false},
};

/* The same on the admin listener, where /readyz also says why the database is away. */
static const struct api_route admin_probe_routes[] = {
    {"/healthz", R_HEALTHZ, handle_healthz, false},
    {"/readyz", R_READYZ, handle_readyz_admin, false},
    {NULL, R_OTHER, NULL, false},
};

/*
 * Every source and destination by name, with their volumes: on the admin
 * listener, and on the public port only while there is no admin listener
 * (where else would Prometheus scrape it).
 */
static const struct api_route metrics_routes[] = {
    {"/metrics", R_METRICS, handle_metrics, false},
    {NULL, R_OTHER, NULL, false},
};

/* The operator console: its pages and its JSON API (api_console.c). */
static const struct api_route console_routes[] = {
    {"/console", R_CONSOLE, api_console_page, true},
    {"/api/", R_CONSOLE_API, api_console_api, true},
    {NULL, R_OTHER, NULL, false},
};

/*
 * The admin listener's routes: the operations ones, and what only operators
 * may reach (the console). One table per listener, so an admin-only route is
 * one line here and can never leak onto the public port.
 */
static const struct api_route *const admin_tables[] = {admin_probe_routes, metrics_routes,
                                                       console_routes, NULL};
static const struct api_route *const public_tables[] = {probe_routes, metrics_routes, NULL};
static const struct api_route *const public_tables_with_admin[] = {probe_routes, NULL};

/* Routes req through the tables; answers 404 or 405 itself when nothing fits. */
static void dispatch(struct app *app, struct http_request *req,
                     const struct api_route *const *tables)
{
    const char *path = http_request_path(req);
    const char *method = http_request_method(req);
    const struct api_route *found = NULL;

    for (const struct api_route *const *t = tables; *t != NULL && found == NULL; t++) {
        for (const struct api_route *r = *t; r->path != NULL; r++) {
            size_t n = strlen(r->path);
            /* "/console" owns "/console/..." but not "/consoles" */
            bool under = r->prefix && strncmp(path, r->path, n) == 0 &&
                         (path[n] == '\0' || path[n] == '/' || r->path[n - 1] == '/');
            if (under || strcmp(path, r->path) == 0) {
                found = r;
                break;
            }
        }
    }
    http_request_set_data(req, (void *)(uintptr_t)(found != NULL ? found->route : R_OTHER));
    if (found == NULL) {
        api_reply_error(req, 404, "not_found", "no such endpoint", NULL, NULL, 0);
        return;
    }
    if (!found->prefix && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        reply_method_not_allowed(req, "GET");
        return;
    }
    found->handle(app, req);
}

void api_handle(struct http_request *req, void *data)
{
    struct app *app = data;
    the_app = app;
    const char *path = http_request_path(req);
    static const char prefix[] = "/webhooks/";
    if (strncmp(path, prefix, sizeof(prefix) - 1) == 0 && path[sizeof(prefix) - 1] != '\0' &&
        strchr(path + sizeof(prefix) - 1, '/') == NULL) {
        http_request_set_data(req, (void *)(uintptr_t)R_WEBHOOKS);
        handle_webhook(app, req, path + sizeof(prefix) - 1);
        return;
    }
    static const char feeds[] = "/feeds/";
    if (strncmp(path, feeds, sizeof(feeds) - 1) == 0 && path[sizeof(feeds) - 1] != '\0' &&
        strchr(path + sizeof(feeds) - 1, '/') == NULL) {
        http_request_set_data(req, (void *)(uintptr_t)R_FEEDS);
        handle_feed(app, req, path + sizeof(feeds) - 1);
        return;
    }
    dispatch(app, req,
             app->cfg->admin_listen.host != NULL ? public_tables_with_admin : public_tables);
}

void api_admin_handle(struct http_request *req, void *data)
{
    struct app *app = data;
    the_app = app;
    /* before any route: a page whose name was rebound to us must not read even /metrics */
    if (!admin_hosts_allowed(&app->admin_hosts, http_request_header(req, "host"))) {
        http_request_set_data(req, (void *)(uintptr_t)R_OTHER);
        api_reply_error(req, 421, "misdirected_request",
                        "this Host is not one the admin listener answers: use localhost or an IP "
                        "address, or list the name in ORDERSYNC_ADMIN_HOSTS",
                        NULL, NULL, 0);
        return;
    }
    dispatch(app, req, admin_tables);
}
