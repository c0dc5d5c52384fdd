/*
 * api_console: routes of the operator console (see api_console.h). Every
 * answer carries headers that keep a browser from doing more than shown:
 * no caching, no framing, no sniffing, and on pages a Content-Security-Policy
 * that runs only the console's own script (so a string that escaped escaping
 * still could not run). JSON documents from PostgreSQL are passed on with
 * '<', '>' and '&' written as \u escapes, so that no browser can read them
 * as markup either.
 */
#include "api_console.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "api.h"
#include "api_destination.h"
#include "api_console_internal.h"
#include "buf.h"
#include "console.h"
#include "console_assets.h"
#include "console_auth.h"
#include "log.h"
#include "metrics.h"
#include "signing_keys.h"

/* A JSON document from the console is a page of a bounded list; more is a bug. */
#define MAX_DOC_BYTES ((size_t)16 << 20)
/* Most events one replay or skip request may name. */
#define MAX_ITEMS 500
/* Longest search text: an email or external id that ingest accepted must be findable. */
#define MAX_QUERY 1024
/* Page sizes of lists. */
#define DEFAULT_LIMIT 50
#define MAX_LIMIT     200

static const char csp_page[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'";
static const char csp_api[] = "default-src 'none'; frame-ancestors 'none'";

#define N_COMMON    5
#define MAX_HEADERS 10

/* Fills h[0..N_COMMON) with the headers every console answer carries. */
static void common_headers(struct http_header *h, bool page)
{
    h[0] = (struct http_header){"Cache-Control", "no-store"};
    h[1] = (struct http_header){"X-Content-Type-Options", "nosniff"};
    h[2] = (struct http_header){"X-Frame-Options", "DENY"};
    /* not no-referrer: with it, browsers send "Origin: null" on our own POSTs */
    h[3] = (struct http_header){"Referrer-Policy", "same-origin"};
    h[4] = (struct http_header){"Content-Security-Policy", page ? csp_page : csp_api};
}

/* Answers with the common headers plus `extra` (n_extra <= MAX_HEADERS - N_COMMON). */
void api_console_respond(struct http_request *req, int status, const char *ctype, const char *body,
                         size_t len, const struct http_header *extra, size_t n_extra, bool page)
{
    struct http_header h[MAX_HEADERS];
    common_headers(h, page);
    for (size_t i = 0; i < n_extra && N_COMMON + i < MAX_HEADERS; i++)
        h[N_COMMON + i] = extra[i];
    size_t n = N_COMMON + (n_extra < MAX_HEADERS - N_COMMON ? n_extra : MAX_HEADERS - N_COMMON);
    api_respond(req, status, ctype, body, len, h, n);
}

void api_console_error(struct http_request *req, int status, const char *error, const char *detail,
                       const struct http_header *extra, size_t n_extra)
{
    struct http_header h[MAX_HEADERS];
    common_headers(h, false);
    for (size_t i = 0; i < n_extra && N_COMMON + i < MAX_HEADERS; i++)
        h[N_COMMON + i] = extra[i];
    api_reply_error(req, status, error, detail, NULL, h, N_COMMON + n_extra);
}

void api_console_method_not_allowed(struct http_request *req, const char *allow)
{
    struct http_header h = {"Allow", allow};
    api_console_error(req, 405, "method_not_allowed", "this method is not allowed here", &h, 1);
}

bool api_console_is_get(const struct http_request *req)
{
    const char *m = http_request_method(req);
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0;
}

bool api_console_is_post(const struct http_request *req)
{
    return strcmp(http_request_method(req), "POST") == 0;
}

/* Sends a document from console.c as JSON, markup characters escaped (see the top). */
static void send_doc(struct http_request *req, const char *doc)
{
    struct buf b;
    buf_init(&b, MAX_DOC_BYTES);
    int rc = 0;
    for (const char *p = doc; *p != '\0' && rc == 0;) {
        size_t run = strcspn(p, "<>&");
        rc = buf_append(&b, p, run);
        p += run;
        if (rc == 0 && *p != '\0') {
            /* outside strings JSON has none of these: the escape is always inside one */
            rc = buf_printf(&b, "\\u%04x", (unsigned)(unsigned char)*p);
            p++;
        }
    }
    if (rc < 0)
        api_console_error(req, 500, "internal_error", "the answer is too large", NULL, 0);
    else
        api_console_respond(req, 200, "application/json", b.data ? b.data : "", b.len, NULL, 0,
                            false);
    buf_free(&b);
}

static void send_json(struct http_request *req, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text == NULL) {
        api_console_error(req, 500, "internal_error", "out of memory", NULL, 0);
        return;
    }
    if (status == 200)
        send_doc(req, text);
    else
        api_console_respond(req, status, "application/json", text, strlen(text), NULL, 0, false);
    free(text);
}

/* ---------------------------------------------------------------- parameters */

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * Finds name=value in an application/x-www-form-urlencoded string (a query
 * or a form body, `len` bytes) and decodes it into out. Returns 1 when found,
 * 0 when absent, -EINVAL when it does not fit or is badly encoded.
 */
int api_console_form_value(const char *s, size_t len, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    const char *end = s + len;
    for (const char *p = s; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t o = 0;
            for (const char *q = p + nl + 1; q < stop; q++) {
                char c = *q;
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    int hi = q + 2 < stop ? unhex(q[1]) : -1, lo = q + 2 < stop ? unhex(q[2]) : -1;
                    if (hi < 0 || lo < 0)
                        return -EINVAL;
                    c = (char)(hi * 16 + lo);
                    q += 2;
                }
                if (c == '\0' || o + 1 >= size)
                    return -EINVAL;
                out[o++] = c;
            }
            out[o] = '\0';
            return 1;
        }
        p = amp ? amp + 1 : end;
    }
    return 0;
}

int api_console_query_value(struct http_request *req, const char *name, char *out, size_t size)
{
    const char *q = http_request_query(req);
    return api_console_form_value(q, strlen(q), name, out, size);
}

/* An id or position: 1 to 18 digits (well inside bigint). */
static bool is_id(const char *s, size_t len)
{
    if (len == 0 || len > 18)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
    }
    return true;
}

/* The sources' and destinations' id rule (migrations/001): safe inside an array literal. */
static bool is_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* ?limit= as text, or DEFAULT_LIMIT; false when out of range */
static bool page_limit(struct http_request *req, char out[8])
{
    char v[8];
    int rc = api_console_query_value(req, "limit", v, sizeof(v));
    if (rc == 0) {
        snprintf(out, 8, "%d", DEFAULT_LIMIT);
        return true;
    }
    if (rc < 0 || !is_id(v, strlen(v)) || atoi(v) < 1 || atoi(v) > MAX_LIMIT)
        return false;
    snprintf(out, 8, "%d", atoi(v));
    return true;
}

/* ---------------------------------------------------------------- the JSON API */

static void on_doc(void *ctx, enum console_status st, const char *json, const char *detail)
{
    struct http_request *req = ctx;
    switch (st) {
    case CONSOLE_OK:
        send_doc(req, json);
        return;
    case CONSOLE_NOT_FOUND:
        api_console_error(req, 404, "not_found", "no such order or event", NULL, 0);
        return;
    case CONSOLE_BAD_INPUT:
        api_console_error(req, 400, "bad_parameter", detail, NULL, 0);
        return;
    case CONSOLE_UNAVAILABLE: {
        struct http_header h = {"Retry-After", "1"};
        api_console_error(req, 503, "database_unavailable", detail, &h, 1);
        return;
    }
    case CONSOLE_FAILED:
        api_console_error(req, 500, "internal_error", detail, NULL, 0);
        return;
    }
}

void api_console_run(struct app *app, struct http_request *req, enum console_query q,
                     const char *const *params)
{
    int rc = console_run(app->console, q, params, on_doc, req);
    if (rc == -ENOTCONN) {
        struct http_header h = {"Retry-After", "1"};
        api_console_error(req, 503, "database_unavailable",
                          "the console's database connection is down", &h, 1);
    } else if (rc < 0) {
        api_console_error(req, 500, "internal_error", "could not run the query", NULL, 0);
    }
}

/* The destinations, with the public keys of the keys loaded (signing_keys.h): SQL cannot derive
 * them. */
struct dests_ctx {
    struct app *app;
    struct http_request *req;
};

static void on_destinations(void *ctx, enum console_status st, const char *json, const char *detail)
{
    struct dests_ctx c = *(struct dests_ctx *)ctx;
    free(ctx);
    json_t *doc = st == CONSOLE_OK ? json_loads(json, 0, NULL) : NULL;
    if (doc != NULL && signing_keys_annotate(c.app->dests, doc) == 0) {
        send_json(c.req, 200, doc);
        return;
    }
    json_decref(doc);
    on_doc(c.req, st, json, detail);
}

static void get_session(struct app *app, struct http_request *req,
                        const struct api_console_caller *who)
{
    json_t *doc = who->session
                      ? json_pack("{s:s,s:s,s:I,s:s}", "auth", "session", "operator", who->s.name,
                                  "expires", (json_int_t)who->s.expires, "csrf", who->s.csrf)
                      : json_pack("{s:s}", "auth", "bearer");
    send_json(req, 200, doc);
}

static void get_orders(struct app *app, struct http_request *req)
{
    char q[MAX_QUERY + 1], before[24], limit[8];
    int hq = api_console_query_value(req, "q", q, sizeof(q));
    int hb = api_console_query_value(req, "before", before, sizeof(before));
    if (hq < 0 || hb < 0 || (hb == 1 && !is_id(before, strlen(before))) ||
        !page_limit(req, limit)) {
        api_console_error(req, 400, "bad_parameter",
                          "q is at most 1024 bytes, before an order id, limit 1 to 200", NULL, 0);
        return;
    }
    /* what a person pastes often comes with blanks around it */
    char *s = q;
    while (hq == 1 && *s == ' ')
        s++;
    size_t n = hq == 1 ? strlen(s) : 0;
    while (n > 0 && s[n - 1] == ' ')
        s[--n] = '\0';
    const char *b = hb == 1 ? before : NULL;
    if (n == 0) {
        const char *p[] = {b, limit};
        api_console_run(app, req, CONSOLE_RECENT, p);
    } else {
        const char *p[] = {s, b, limit};
        api_console_run(app, req, CONSOLE_SEARCH, p);
    }
}

/* /api/orders/{id}[/inbound/{id} | /events/{position}] */
static void get_order(struct app *app, struct http_request *req, const char *rest)
{
    char id[24], sub[24];
    size_t n = strcspn(rest, "/");
    if (!is_id(rest, n)) {
        api_console_error(req, 404, "not_found", "no such order", NULL, 0);
        return;
    }
    snprintf(id, sizeof(id), "%.*s", (int)n, rest);
    rest += n;
    if (*rest == '\0') {
        const char *p[] = {id};
        api_console_run(app, req, CONSOLE_ORDER, p);
        return;
    }
    enum console_query q;
    if (strncmp(rest, "/inbound/", 9) == 0) {
        q = CONSOLE_INBOUND;
        rest += 9;
    } else if (strncmp(rest, "/events/", 8) == 0) {
        q = CONSOLE_EVENT;
        rest += 8;
    } else {
        api_console_error(req, 404, "not_found", "no such endpoint", NULL, 0);
        return;
    }
    if (!is_id(rest, strlen(rest))) {
        api_console_error(req, 404, "not_found", "no such webhook or event", NULL, 0);
        return;
    }
    snprintf(sub, sizeof(sub), "%s", rest);
    const char *p[] = {id, sub};
    api_console_run(app, req, q, p);
}

static bool state_ok(const char *s)
{
    return strcmp(s, "dead") == 0 || strcmp(s, "blocked") == 0 || strcmp(s, "pending") == 0;
}

static void get_deliveries(struct app *app, struct http_request *req)
{
    char state[16] = "dead", dest[64], since[64], until[64], before[96], limit[8];
    int hs = api_console_query_value(req, "state", state, sizeof(state));
    int hd = api_console_query_value(req, "destination", dest, sizeof(dest));
    int h1 = api_console_query_value(req, "since", since, sizeof(since));
    int h2 = api_console_query_value(req, "until", until, sizeof(until));
    int hb = api_console_query_value(req, "before", before, sizeof(before));
    /* the cursor is "position:destination", as the previous page's "next" gave it */
    char *colon = hb == 1 ? strchr(before, ':') : NULL;
    if (colon != NULL)
        *colon = '\0';
    if (hs < 0 || hd < 0 || h1 < 0 || h2 < 0 || hb < 0 || !state_ok(state) ||
        (hd == 1 && dest[0] != '\0' && !is_name(dest)) ||
        (hb == 1 && (colon == NULL || !is_id(before, strlen(before)) || !is_name(colon + 1))) ||
        !page_limit(req, limit)) {
        api_console_error(req, 400, "bad_parameter",
                          "state is dead, blocked or pending; destination an id; before a cursor "
                          "given as next; limit 1 to 200",
                          NULL, 0);
        return;
    }
    const char *p[] = {state,
                       hd == 1 && dest[0] ? dest : NULL,
                       h1 == 1 && since[0] ? since : NULL,
                       h2 == 1 && until[0] ? until : NULL,
                       hb == 1 ? before : NULL,
                       hb == 1 ? colon + 1 : NULL,
                       limit};
    api_console_run(app, req, CONSOLE_DELIVERIES, p);
}

/* "console:alice" for a browser's operator; "api:<actor>" for a token holder. */
static void actor_of(const struct api_console_caller *who, json_t *body, char *out, size_t size)
{
    if (who->session) {
        snprintf(out, size, "console:%s", who->s.name);
        return;
    }
    const char *a = json_string_value(json_object_get(body, "actor"));
    snprintf(out, size, "api:%s", a != NULL && console_auth_name_ok(a) ? a : "token");
}

/*
 * POST /api/deliveries/{replay,skip}:
 *   {"items": [{"destination": "shipping", "position": 12}, ...]}   those events
 *   {"matching": {"destination", "since", "until", "state"}}          every one matching
 */
static void post_action(struct app *app, struct http_request *req, bool replay,
                        const struct api_console_caller *who)
{
    const char *ctype = http_request_header(req, "content-type");
    if (ctype == NULL || strncasecmp(ctype, "application/json", 16) != 0) {
        api_console_error(req, 415, "unsupported_media_type", "send application/json", NULL, 0);
        return;
    }
    size_t len;
    const char *body = http_request_body(req, &len);
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *items = json_object_get(doc, "items");
    json_t *matching = json_object_get(doc, "matching");
    json_t *jpreview = json_object_get(doc, "preview");
    /* "preview": true counts what the action would touch and changes nothing */
    const char *preview = json_is_true(jpreview) ? "true" : "false";
    char actor[96];
    actor_of(who, doc, actor, sizeof(actor));
    struct buf dests, positions;
    buf_init(&dests, (size_t)MAX_ITEMS * 66 + 4);
    buf_init(&positions, (size_t)MAX_ITEMS * 20 + 4);
    const char *bad = NULL;

    if (jpreview != NULL && !json_is_boolean(jpreview)) {
        bad = "preview is true or false";
    } else if (json_is_array(items) && matching == NULL) {
        size_t n = json_array_size(items);
        if (n == 0 || n > MAX_ITEMS)
            bad = "items holds 1 to 500 events";
        int rc = buf_append_str(&dests, "{") | buf_append_str(&positions, "{");
        for (size_t i = 0; bad == NULL && rc == 0 && i < n; i++) {
            json_t *it = json_array_get(items, i);
            const char *d = json_string_value(json_object_get(it, "destination"));
            json_t *pos = json_object_get(it, "position");
            if (!is_name(d) || !json_is_integer(pos) || json_integer_value(pos) < 1) {
                bad = "each item is {\"destination\": id, \"position\": integer}";
                break;
            }
            /* ids are [a-z0-9_-]: nothing to quote inside an array literal */
            rc = buf_printf(&dests, "%s%s", i ? "," : "", d) |
                 buf_printf(&positions, "%s%lld", i ? "," : "", (long long)json_integer_value(pos));
        }
        if (bad == NULL &&
            (rc != 0 || buf_append_str(&dests, "}") < 0 || buf_append_str(&positions, "}") < 0))
            bad = "too many items";
        if (bad == NULL) {
            const char *p[] = {dests.data, positions.data, actor, preview};
            api_console_run(app, req, replay ? CONSOLE_REPLAY : CONSOLE_SKIP, p);
        }
    } else if (json_is_object(matching) && items == NULL) {
        const char *d = json_string_value(json_object_get(matching, "destination"));
        const char *since = json_string_value(json_object_get(matching, "since"));
        const char *until = json_string_value(json_object_get(matching, "until"));
        const char *state = json_string_value(json_object_get(matching, "state"));
        if (state == NULL)
            state = "dead";
        if ((d != NULL && !is_name(d)) || (since != NULL && strlen(since) > 64) ||
            (until != NULL && strlen(until) > 64) ||
            (strcmp(state, "dead") != 0 && (replay || strcmp(state, "blocked") != 0))) {
            bad = "matching is {\"destination\", \"since\", \"until\", \"state\": dead (or "
                  "blocked, to skip)}";
        } else if (replay) {
            const char *p[] = {d, since, until, actor, preview};
            api_console_run(app, req, CONSOLE_REPLAY_MATCHING, p);
        } else {
            char states[16];
            snprintf(states, sizeof(states), "{%s}", state);
            const char *p[] = {d, since, until, states, actor, preview};
            api_console_run(app, req, CONSOLE_SKIP_MATCHING, p);
        }
    } else {
        bad = doc == NULL ? "the body is not JSON" : "give either items or matching";
    }
    if (bad != NULL)
        api_console_error(req, 400, "bad_request", bad, NULL, 0);
    else if (!json_is_true(jpreview))
        log_info(replay ? "console replay" : "console skip",
                 json_pack("{s:s,s:i}", "actor", actor, "items",
                           json_is_array(items) ? (int)json_array_size(items) : -1));
    buf_free(&dests);
    buf_free(&positions);
    json_decref(doc);
}

/* An /api/ request from an identified caller (a session: once its row said whether it lives). */
static void serve_api(struct app *app, struct http_request *req, const struct api_console_caller *c,
                      const char *ended)
{
    if (ended != NULL) {
        struct http_header h = {"WWW-Authenticate", "Bearer realm=\"ordersync console\""};
        if (strcmp(ended, "expired") == 0)
            api_console_error(
                req, 401, "session_expired",
                "your session expired (idle too long, or past its 12 hours): log in again", &h, 1);
        else
            api_console_error(
                req, 401, "session_invalid",
                "your session has ended (logged out, or made before an upgrade): log in "
                "again",
                &h, 1);
        return;
    }
    const struct api_console_caller who = *c;
    const char *path = http_request_path(req) + strlen("/api/");
    bool replay = strcmp(path, "deliveries/replay") == 0;
    /* destinations/ID/ACTION: pause, resume, test, replay, filter (api_destination.c) */
    bool dest_action = strncmp(path, "destinations/", 13) == 0 && strchr(path + 13, '/') != NULL;
    if (replay || strcmp(path, "deliveries/skip") == 0 || dest_action) {
        if (!api_console_is_post(req)) {
            api_console_method_not_allowed(req, "POST");
            return;
        }
        /* a browser's cookie comes along on any request: prove the page is ours */
        if (!api_console_same_origin(req)) {
            api_console_error(req, 403, "cross_origin", "requests from other sites are refused",
                              NULL, 0);
            return;
        }
        if (who.session &&
            !console_auth_csrf_ok(&who.s, http_request_header(req, "x-csrf-token"))) {
            api_console_error(req, 403, "csrf",
                              "X-CSRF-Token is missing or wrong: reload the console", NULL, 0);
            return;
        }
        if (dest_action)
            api_destination_post(app, req, path + 13, who.session ? who.s.name : NULL);
        else
            post_action(app, req, replay, &who);
        return;
    }
    if (!api_console_is_get(req)) {
        api_console_method_not_allowed(req, "GET");
        return;
    }
    if (strcmp(path, "session") == 0) {
        get_session(app, req, &who);
    } else if (strcmp(path, "overview") == 0) {
        api_console_run(app, req, CONSOLE_OVERVIEW, NULL);
    } else if (strcmp(path, "orders") == 0) {
        get_orders(app, req);
    } else if (strncmp(path, "orders/", 7) == 0) {
        get_order(app, req, path + 7);
    } else if (strcmp(path, "deliveries") == 0) {
        get_deliveries(app, req);
    } else if (strcmp(path, "sources") == 0) {
        api_console_run(app, req, CONSOLE_SOURCES, NULL);
    } else if (strcmp(path, "destinations") == 0) {
        struct dests_ctx *dc = malloc(sizeof(*dc));
        if (dc != NULL)
            *dc = (struct dests_ctx){app, req};
        int rc =
            dc ? console_run(app->console, CONSOLE_DESTINATIONS, NULL, on_destinations, dc) : -1;
        if (rc < 0) {
            free(dc);
            api_console_run(app, req, CONSOLE_DESTINATIONS,
                            NULL); /* answers the error as for the others */
        }
    } else {
        api_console_error(req, 404, "not_found", "no such endpoint", NULL, 0);
    }
}

void api_console_api(struct app *app, struct http_request *req)
{
    if (!app->console_enabled) {
        api_console_error(req, 404, "console_off",
                          "the console is off: set ORDERSYNC_ADMIN_TOKEN to turn it on", NULL, 0);
        return;
    }
    struct api_console_caller who;
    uint64_t wait_ms;
    switch (api_console_identify(app, req, &who, &wait_ms)) {
    case API_CONSOLE_AUTH_THROTTLED: {
        char ra[24];
        struct http_header h = api_console_retry_after(wait_ms, ra);
        api_console_error(
            req, 429, "too_many_attempts",
            "too many wrong tokens from this address: try again after Retry-After seconds", &h, 1);
        return;
    }
    case API_CONSOLE_AUTH_NONE: {
        /* a cookie that came with it says why, for the page to tell the operator */
        const char *why = http_request_header(req, "authorization")
                              ? NULL
                              : api_console_session_problem(app, req);
        struct http_header h = {"WWW-Authenticate", "Bearer realm=\"ordersync console\""};
        api_console_error(
            req, 401,
            why == NULL                   ? "unauthorized"
            : strcmp(why, "expired") == 0 ? "session_expired"
                                          : "session_invalid",
            why == NULL ? "send Authorization: Bearer <ORDERSYNC_ADMIN_TOKEN>, or log in at "
                          "/console"
            : strcmp(why, "expired") == 0
                ? "your session expired: log in again"
                : "your session is no longer valid (logged out, revoked, or the admin "
                  "token changed): log in again",
            &h, 1);
        return;
    }
    case API_CONSOLE_AUTH_OK:
        break;
    }
    if (who.session)
        api_console_session_alive(app, req, &who, serve_api);
    else
        serve_api(app, req, &who, NULL);
}
