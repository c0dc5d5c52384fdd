/*
 * api_console_internal: what the console's two halves of the api layer
 * share. api_console.c is the JSON API and the answers' headers;
 * api_console_session.c is who is asking (the admin token, throttled per
 * address; session cookies and their rows in console_sessions) and the
 * pages (the console, its login and logout). Not for use elsewhere.
 */
#ifndef OS_API_CONSOLE_INTERNAL_H
#define OS_API_CONSOLE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "console_auth.h"
#include "http.h"

/* ------------------------------------------------ answers (api_console.c) */

/*
 * Answers with the console's common headers (no caching, no framing, no
 * sniffing, a Content-Security-Policy: the page's when `page`) plus `extra`
 * (borrowed, at most 5). The body is copied.
 */
void api_console_respond(struct http_request *req, int status, const char *ctype, const char *body,
                         size_t len, const struct http_header *extra, size_t n_extra, bool page);
/* Answers {"error", "detail"} with the common headers plus `extra` (at most 5). */
void api_console_error(struct http_request *req, int status, const char *error, const char *detail,
                       const struct http_header *extra, size_t n_extra);
/* 405 with Allow: `allow`. */
void api_console_method_not_allowed(struct http_request *req, const char *allow);
bool api_console_is_get(const struct http_request *req);
bool api_console_is_post(const struct http_request *req);
/*
 * Finds name=value in an application/x-www-form-urlencoded string (a query
 * or a form body, `len` bytes) and decodes it into out. Returns 1 when found,
 * 0 when absent, -EINVAL when it does not fit or is badly encoded.
 */
int api_console_form_value(const char *s, size_t len, const char *name, char *out, size_t size);
/* The same for the request's query string. */
int api_console_query_value(struct http_request *req, const char *name, char *out, size_t size);

/* ------------------------------------------------ who is asking (api_console_session.c) */

struct api_console_caller {
    bool session;     /* by cookie (else by bearer token) */
    bool host_cookie; /* the cookie was the __Host- one */
    struct console_session s;
};

enum api_console_auth {
    API_CONSOLE_AUTH_OK,
    API_CONSOLE_AUTH_NONE,      /* no credentials, or wrong ones: 401 */
    API_CONSOLE_AUTH_THROTTLED, /* this address guessed wrong too often: 429 after *wait_ms */
};

/*
 * What to do with a request once its caller is known; `ended` is NULL when
 * the session lives (or there is none: a bearer token), else why it does not:
 * "expired" (idle too long, or past its 12 hours) or "invalid" (logged out,
 * or not known: made before this release).
 */
typedef void (*api_console_serve_fn)(struct app *app, struct http_request *req,
                                     const struct api_console_caller *who, const char *ended);

/*
 * Who sent req, as far as it can be told without the database: a bearer
 * token (compared, and throttled per client address), or a session cookie
 * whose signature holds; whether that session still lives is
 * api_console_session_alive's to say. A wrong bearer token is never rescued
 * by a cookie. *wait_ms is set when the answer is API_CONSOLE_AUTH_THROTTLED.
 */
enum api_console_auth api_console_identify(struct app *app, struct http_request *req,
                                           struct api_console_caller *who, uint64_t *wait_ms);
/*
 * Asks the session's row whether it still lives (which counts this use
 * against the idle timeout), then calls serve exactly once; or answers 503
 * itself when the database cannot say (closed, not open). `who` is copied.
 */
void api_console_session_alive(struct app *app, struct http_request *req,
                               const struct api_console_caller *who, api_console_serve_fn serve);
/*
 * Why a request that came with a session cookie was refused, for the page to
 * tell the operator: "expired" when the cookie's own expiry has passed,
 * "invalid" otherwise, NULL without a cookie. Only a hint.
 */
const char *api_console_session_problem(struct app *app, struct http_request *req);
/* May a state-changing request be trusted not to come from another site? (console_auth.h) */
bool api_console_same_origin(struct http_request *req);
/* A Retry-After header for a wait in ms, rounded up to seconds; `buf` holds its value. */
struct http_header api_console_retry_after(uint64_t wait_ms, char buf[24]);

#endif
