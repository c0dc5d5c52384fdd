/*
 * api_console_session: who is asking the console, and its pages (see
 * api_console_internal.h for the split with api_console.c).
 *
 * The admin token opens the console, so each client address may guess it
 * only a few times before it has to wait (console_throttle.h): a throttled
 * address's token is not even compared. A session cookie is a signature
 * (console_auth.h) and a row in console_sessions (migration 014), so that a
 * logout, an idle timeout and the 12-hour limit hold on every instance and
 * across restarts: each request that comes with a cookie asks its row
 * first (one indexed UPDATE on the console's own connection).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <openssl/rand.h>

#include "api_console.h"
#include "api_console_internal.h"
#include "buf.h"
#include "console.h"
#include "console_assets.h"
#include "log.h"
#include "metrics.h"

/* ---------------------------------------------------------------- who is asking */

static void count_refusal(const char *reason)
{
    char labels[48];
    snprintf(labels, sizeof(labels), "reason=\"%s\"", reason);
    metric_add(metrics_counter("ordersync_console_auth_refused_total",
                               "Admin tokens refused: wrong, or not compared (throttled)", labels),
               1);
}

/*
 * Is `token` (`len` bytes) the admin token, from this request's address?
 * A throttled address's token is not compared at all (see console_throttle.h).
 */
static enum api_console_auth check_token(struct app *app, struct http_request *req,
                                         const char *token, size_t len, const char *via,
                                         uint64_t *wait_ms)
{
    const char *peer = http_request_peer(req);
    uint64_t now = uv_now(app->loop);
    *wait_ms = console_throttle_wait(app->console_throttle, peer, now);
    if (*wait_ms > 0) {
        count_refusal("throttled");
        return API_CONSOLE_AUTH_THROTTLED;
    }
    if (console_auth_token_ok(&app->console_auth, token, len)) {
        console_throttle_succeeded(app->console_throttle, peer);
        return API_CONSOLE_AUTH_OK;
    }
    count_refusal("wrong_token");
    unsigned failures = 0;
    uint64_t d = console_throttle_failed(app->console_throttle, peer, now, &failures);
    log_warn("console token refused",
             json_pack("{s:s,s:s,s:i}", "peer", peer, "via", via, "failures", (int)failures));
    if (d > 0)
        log_warn("console token guesses throttled",
                 json_pack("{s:s,s:i,s:I}", "peer", peer, "failures", (int)failures,
                           "retry_after_s", (json_int_t)((d + 999) / 1000)));
    return API_CONSOLE_AUTH_NONE;
}

/* Served over TLS (said by the setting, or by the proxy in front)? Then Secure + __Host-. */
static bool secure(struct app *app, struct http_request *req)
{
    if (app->cfg->console_secure)
        return true;
    const char *proto = http_request_header(req, "x-forwarded-proto");
    return proto != NULL && strcasecmp(proto, "https") == 0;
}

/*
 * The session cookie's value, or NULL. With ORDERSYNC_CONSOLE_SECURE only
 * the __Host- cookie counts: a plain one may have been planted over HTTP.
 */
static const char *session_value(struct app *app, struct http_request *req, size_t *len,
                                 bool *host_cookie)
{
    const char *h = http_request_header(req, "cookie");
    const char *v = console_auth_cookie(h, CONSOLE_AUTH_COOKIE_SECURE, len);
    *host_cookie = v != NULL;
    if (v == NULL && !app->cfg->console_secure)
        v = console_auth_cookie(h, CONSOLE_AUTH_COOKIE, len);
    return v;
}

/*
 * Who sent req, as far as it can be told without the database: a bearer
 * token (checked, and throttled per address), or a session cookie whose
 * signature holds (whether the session is still alive is the database's to
 * say: session_alive). A wrong bearer token is never rescued by a cookie.
 */
enum api_console_auth api_console_identify(struct app *app, struct http_request *req,
                                           struct api_console_caller *who, uint64_t *wait_ms)
{
    memset(who, 0, sizeof(*who));
    *wait_ms = 0;
    const char *auth = http_request_header(req, "authorization");
    if (auth != NULL) {
        static const char bearer[] = "Bearer ";
        if (strncasecmp(auth, bearer, sizeof(bearer) - 1) != 0)
            return API_CONSOLE_AUTH_NONE;
        const char *t = auth + sizeof(bearer) - 1;
        return check_token(app, req, t, strlen(t), "bearer", wait_ms);
    }
    size_t len;
    const char *v = session_value(app, req, &len, &who->host_cookie);
    if (v == NULL || !console_auth_session_check(&app->console_auth, v, len, time(NULL), &who->s))
        return API_CONSOLE_AUTH_NONE;
    who->session = true;
    return API_CONSOLE_AUTH_OK;
}

/* A request waiting for its session's row: what to do with the answer. */
struct session_wait {
    struct app *app;
    struct http_request *req;
    struct api_console_caller who;
    api_console_serve_fn serve;
};

static void on_session_touched(void *ctx, enum console_status st, const char *json,
                               const char *detail)
{
    struct session_wait *w = ctx;
    json_t *doc = st == CONSOLE_OK ? json_loads(json, 0, NULL) : NULL;
    if (doc != NULL) {
        bool alive = json_is_true(json_object_get(doc, "alive"));
        bool gone = json_is_true(json_object_get(doc, "ended")) ||
                    !json_is_true(json_object_get(doc, "known"));
        w->serve(w->app, w->req, &w->who, alive ? NULL : gone ? "invalid" : "expired");
        json_decref(doc);
    } else {
        /* whether it was logged out cannot be told: closed, not open */
        struct http_header h = {"Retry-After", "1"};
        api_console_error(w->req, 503, "database_unavailable",
                          "the console's database connection is down; try again", &h, 1);
    }
    free(w);
}

/*
 * Is the session of a signed cookie still alive: not logged out, not idle
 * past ORDERSYNC_CONSOLE_IDLE_TIMEOUT_S, not past its 12 hours? Asks its row
 * (which counts this use), then calls serve(alive) once, or answers 503.
 */
void api_console_session_alive(struct app *app, struct http_request *req,
                               const struct api_console_caller *who, api_console_serve_fn serve)
{
    struct session_wait *w = malloc(sizeof(*w));
    if (w == NULL) {
        api_console_error(req, 500, "internal_error", "out of memory", NULL, 0);
        return;
    }
    *w = (struct session_wait){.app = app, .req = req, .who = *who, .serve = serve};
    char idle[24];
    snprintf(idle, sizeof(idle), "%lld", (long long)app->cfg->console_idle_timeout_s);
    const char *p[] = {who->s.id, idle};
    int rc = console_run(app->console, CONSOLE_SESSION_TOUCH, p, on_session_touched, w);
    if (rc < 0) {
        free(w);
        struct http_header h = {"Retry-After", "1"};
        api_console_error(req, 503, "database_unavailable",
                          "the console's database connection is down", &h, 1);
    }
}

/*
 * Why a request that came with a session cookie was refused, for the page to
 * tell the operator: "expired" when the cookie's own expiry (its second
 * field, "v1.<expires>.…") has passed, "invalid" otherwise (logged out,
 * revoked, or the admin token changed), NULL without a cookie. Only a hint:
 * the cookie was not accepted either way.
 */
const char *api_console_session_problem(struct app *app, struct http_request *req)
{
    size_t len;
    bool host_cookie;
    const char *v = session_value(app, req, &len, &host_cookie);
    if (v == NULL || len == 0)
        return NULL;
    if (len > 3 && memcmp(v, "v1.", 3) == 0) {
        char *end = NULL;
        long long expires = strtoll(v + 3, &end, 10);
        if (end != NULL && *end == '.' && expires > 0 && expires <= (long long)time(NULL))
            return "expired";
    }
    return "invalid";
}

bool api_console_same_origin(struct http_request *req)
{
    return console_auth_same_origin(http_request_header(req, "origin"),
                                    http_request_header(req, "sec-fetch-site"),
                                    http_request_header(req, "host"));
}

/* "Retry-After: <s>" for a wait in ms, rounded up (buf of 24). */
struct http_header api_console_retry_after(uint64_t wait_ms, char buf[24])
{
    snprintf(buf, 24, "%llu", (unsigned long long)((wait_ms + 999) / 1000));
    return (struct http_header){"Retry-After", buf};
}

/* ---------------------------------------------------------------- pages */

/* An embedded file, a page's message slot filled with `message`, and extra headers. */
static void send_asset_with(struct http_request *req, const char *name, int status,
                            const char *message, const struct http_header *extra, size_t n_extra)
{
    const struct console_asset *a = console_asset_find(name);
    if (a == NULL) {
        api_console_error(req, 404, "not_found", "no such file", NULL, 0);
        return;
    }
    bool page = strstr(a->content_type, "text/html") != NULL;
    static const char slot[] = "<!--message-->";
    const char *at = page && message ? strstr((const char *)a->data, slot) : NULL;
    if (at == NULL) {
        api_console_respond(req, status, a->content_type, (const char *)a->data, a->len, extra,
                            n_extra, page);
        return;
    }
    /* messages are constant strings of ours: nothing from the request is echoed */
    struct buf b;
    buf_init(&b, a->len + strlen(message) + 1);
    size_t before = (size_t)(at - (const char *)a->data);
    if (buf_append(&b, a->data, before) < 0 || buf_append_str(&b, message) < 0 ||
        buf_append_str(&b, at + sizeof(slot) - 1) < 0)
        api_console_error(req, 500, "internal_error", "out of memory", NULL, 0);
    else
        api_console_respond(req, status, a->content_type, b.data, b.len, extra, n_extra, true);
    buf_free(&b);
}

static void send_asset(struct http_request *req, const char *name, int status, const char *message)
{
    send_asset_with(req, name, status, message, NULL, 0);
}

static void redirect(struct http_request *req, const char *to, const char *cookie)
{
    struct http_header h[2] = {{"Location", to}, {"Set-Cookie", cookie}};
    api_console_respond(req, 303, "text/plain; charset=utf-8", "", 0, h, cookie ? 2 : 1, true);
}

/*
 * Cookie attributes: the page's script never sees it, other sites never
 * send it; over TLS the browser sends it over TLS only, and its __Host- name
 * keeps any other origin from setting or shadowing it.
 */
static void session_cookie(bool host_cookie, const char *value, long max_age, char *out,
                           size_t size)
{
    snprintf(out, size, "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%ld%s",
             host_cookie ? CONSOLE_AUTH_COOKIE_SECURE : CONSOLE_AUTH_COOKIE, value, max_age,
             host_cookie ? "; Secure" : "");
}

/* A login waiting for its session's row. */
struct login_wait {
    struct http_request *req;
    char cookie[CONSOLE_AUTH_COOKIE_SIZE + 128];
    char name[CONSOLE_AUTH_MAX_NAME + 1];
};

static void on_session_started(void *ctx, enum console_status st, const char *json,
                               const char *detail)
{
    struct login_wait *w = ctx;
    if (st == CONSOLE_OK) {
        log_info("console login",
                 json_pack("{s:s,s:s}", "peer", http_request_peer(w->req), "operator", w->name));
        redirect(w->req, "/console", w->cookie);
    } else {
        send_asset(w->req, "login.html", 503,
                   "The console's database connection is down: try again in a moment.");
    }
    free(w);
}

/* The login page's message for /console/login?why=...: constant strings, nothing echoed. */
static const char *login_message(struct http_request *req)
{
    char why[16];
    if (api_console_query_value(req, "why", why, sizeof(why)) != 1)
        return "";
    if (strcmp(why, "expired") == 0)
        return "Your session expired: log in again to go back to where you were.";
    if (strcmp(why, "invalid") == 0)
        return "Your session is no longer valid (you logged out, it was revoked, or the admin "
               "token changed): log in again to go back to where you were.";
    return "";
}

static void login(struct app *app, struct http_request *req)
{
    if (api_console_is_get(req)) {
        send_asset(req, "login.html", 200, login_message(req));
        return;
    }
    if (!api_console_is_post(req)) {
        api_console_method_not_allowed(req, "GET, POST");
        return;
    }
    if (!api_console_same_origin(req)) {
        send_asset(req, "login.html", 403, "This form was sent from another site.");
        return;
    }
    size_t len;
    const char *body = http_request_body(req, &len);
    char token[512], name[CONSOLE_AUTH_MAX_NAME + 1];
    int t = api_console_form_value(body, len, "token", token, sizeof(token));
    int n = api_console_form_value(body, len, "name", name, sizeof(name));
    uint64_t wait_ms = 0;
    enum api_console_auth a = t == 1
                                  ? check_token(app, req, token, strlen(token), "login", &wait_ms)
                                  : API_CONSOLE_AUTH_NONE;
    if (a == API_CONSOLE_AUTH_THROTTLED) {
        /* the token was not even compared; the page says no more than the header */
        char ra[24];
        struct http_header h = api_console_retry_after(wait_ms, ra);
        send_asset_with(req, "login.html", 429,
                        "Too many wrong tokens from your address: wait a while and try again.", &h,
                        1);
        return;
    }
    if (a != API_CONSOLE_AUTH_OK) {
        send_asset(req, "login.html", 401, "That is not the admin token.");
        return;
    }
    if (n != 1 || !console_auth_name_ok(name)) {
        send_asset(req, "login.html", 400,
                   "Give your name (letters in any language, digits, spaces and . _ @ - ', at "
                   "most 64 bytes): it is recorded with every replay and skip.");
        return;
    }
    unsigned char nonce[16];
    char value[CONSOLE_AUTH_COOKIE_SIZE];
    struct console_session s;
    time_t now = time(NULL);
    struct login_wait *w = malloc(sizeof(*w));
    if (w == NULL || RAND_bytes(nonce, sizeof(nonce)) != 1 ||
        console_auth_session_new(&app->console_auth, name, now, nonce, value) < 0 ||
        !console_auth_session_check(&app->console_auth, value, strlen(value), now, &s)) {
        free(w);
        api_console_error(req, 500, "internal_error", "could not start a session", NULL, 0);
        return;
    }
    w->req = req;
    snprintf(w->name, sizeof(w->name), "%s", name);
    session_cookie(secure(app, req), value, CONSOLE_AUTH_SESSION_S, w->cookie, sizeof(w->cookie));
    char expires[24];
    snprintf(expires, sizeof(expires), "%lld", (long long)s.expires);
    const char *p[] = {s.id, name, http_request_peer(req), expires};
    if (console_run(app->console, CONSOLE_SESSION_START, p, on_session_started, w) < 0) {
        free(w);
        send_asset(req, "login.html", 503,
                   "The console's database connection is down: try again in a moment.");
    }
}

/* A logout waiting for its session's row to be ended. */
struct logout_wait {
    struct http_request *req;
    char cookie[128];
};

static void on_session_ended(void *ctx, enum console_status st, const char *json,
                             const char *detail)
{
    struct logout_wait *w = ctx;
    if (st == CONSOLE_OK || st == CONSOLE_NOT_FOUND) {
        redirect(w->req, "/console/login", w->cookie);
    } else {
        /* the cookie would still open the console elsewhere: say so, keep it */
        struct http_header h = {"Retry-After", "1"};
        api_console_error(w->req, 503, "database_unavailable",
                          "the session could not be ended (database unavailable): try again", &h,
                          1);
    }
    free(w);
}

static void logout(struct app *app, struct http_request *req)
{
    if (!api_console_is_post(req)) {
        api_console_method_not_allowed(req, "POST");
        return;
    }
    struct api_console_caller who;
    size_t len;
    const char *body = http_request_body(req, &len);
    char csrf[CONSOLE_AUTH_CSRF_SIZE + 1] = "";
    if (api_console_form_value(body, len, "csrf", csrf, sizeof(csrf)) != 1) {
        const char *h = http_request_header(req, "x-csrf-token");
        snprintf(csrf, sizeof(csrf), "%s", h ? h : "");
    }
    uint64_t wait_ms;
    if (!api_console_same_origin(req) ||
        api_console_identify(app, req, &who, &wait_ms) != API_CONSOLE_AUTH_OK || !who.session ||
        !console_auth_csrf_ok(&who.s, csrf)) {
        api_console_error(req, 403, "forbidden", "not a logout from this console", NULL, 0);
        return;
    }
    struct logout_wait *w = malloc(sizeof(*w));
    if (w == NULL) {
        api_console_error(req, 500, "internal_error", "out of memory", NULL, 0);
        return;
    }
    w->req = req;
    session_cookie(who.host_cookie, "", 0, w->cookie, sizeof(w->cookie));
    const char *p[] = {who.s.id};
    if (console_run(app->console, CONSOLE_SESSION_END, p, on_session_ended, w) < 0) {
        free(w);
        struct http_header h = {"Retry-After", "1"};
        api_console_error(req, 503, "database_unavailable",
                          "the session could not be ended (database unavailable): try again", &h,
                          1);
    }
}

/* GET /console once the session's row has answered. */
static void serve_index(struct app *app, struct http_request *req,
                        const struct api_console_caller *who, const char *ended)
{
    if (ended == NULL)
        send_asset(req, "index.html", 200, NULL);
    else
        redirect(req, "/console/login", NULL);
}

void api_console_page(struct app *app, struct http_request *req)
{
    const char *path = http_request_path(req);
    const char *rest = path + strlen("/console");
    /* the script and the style hold nothing secret: the login and "off" pages use them too */
    if ((strcmp(rest, "/app.css") == 0 || strcmp(rest, "/app.js") == 0) &&
        api_console_is_get(req)) {
        send_asset(req, rest + 1, 200, NULL);
        return;
    }
    if (!app->console_enabled) {
        send_asset(req, "off.html", 404, NULL);
        return;
    }
    if (strcmp(rest, "/login") == 0) {
        login(app, req);
        return;
    }
    if (strcmp(rest, "/logout") == 0) {
        logout(app, req);
        return;
    }
    if (!api_console_is_get(req)) {
        api_console_method_not_allowed(req, "GET");
        return;
    }
    if (rest[0] == '\0' || strcmp(rest, "/") == 0) {
        struct api_console_caller who;
        uint64_t wait_ms;
        enum api_console_auth a = api_console_identify(app, req, &who, &wait_ms);
        if (a != API_CONSOLE_AUTH_OK)
            redirect(req, "/console/login", NULL);
        else if (who.session)
            api_console_session_alive(app, req, &who, serve_index);
        else
            send_asset(req, "index.html", 200, NULL);
        return;
    }
    api_console_error(req, 404, "not_found", "no such page", NULL, 0);
}
