/*
 * console_auth: who may use the operator console, without I/O (the clock and
 * the random bytes are the only things it takes from outside), so every rule
 * is unit-tested on its own (tests/unit/test_console_auth.c).
 *
 * One secret, ORDERSYNC_ADMIN_TOKEN, opens the console:
 *   - API clients send it as `Authorization: Bearer <token>`;
 *   - a browser posts it once to the login form and gets a session cookie.
 * The cookie never holds the token: it is "v1.<expires>.<nonce>.<name>.<mac>",
 * signed with a key derived from the token (HMAC), so no one can make one
 * without the token, and all end when the token changes. The operator's name
 * rides in the signed cookie and is recorded with every replay and skip.
 * A signature alone cannot be taken back, so each session also has a row in
 * console_sessions, keyed by its nonce (api_console.c, migration 014): logout
 * ends it there, for every instance and across restarts, and the row's last
 * use carries the idle timeout.
 * Cookie-authenticated requests that change something must carry the
 * session's CSRF token (an HMAC of its nonce), which only a page of the
 * console's own origin can read.
 */
#ifndef OS_CONSOLE_AUTH_H
#define OS_CONSOLE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* A token shorter than this is refused at start: it could be guessed. */
#define CONSOLE_AUTH_MIN_TOKEN 16
/* How long a login lasts. */
#define CONSOLE_AUTH_SESSION_S (12 * 3600)
/* Operator names: 1 to this many bytes of UTF-8 letters, digits and " ._@-'". */
#define CONSOLE_AUTH_MAX_NAME 64
/* Room for a cookie value (and its NUL). */
#define CONSOLE_AUTH_COOKIE_SIZE 320
/* Room for a CSRF token: 64 hex digits and a NUL. */
#define CONSOLE_AUTH_CSRF_SIZE 65
/* The cookie's name. */
#define CONSOLE_AUTH_COOKIE "ordersync_console"
/*
 * Its name when it is Secure: a browser takes a "__Host-" cookie only from a
 * secure origin, with Path=/ and no Domain, so neither a plain-HTTP
 * neighbour nor a sibling subdomain can plant or shadow it.
 */
#define CONSOLE_AUTH_COOKIE_SECURE "__Host-ordersync_console"
/* A token is called weak (a warning at start) below this length... */
#define CONSOLE_AUTH_GOOD_TOKEN 24
/* ...or with fewer distinct characters than this. */
#define CONSOLE_AUTH_GOOD_DISTINCT 10

struct console_auth {
    unsigned char token_digest[32]; /* SHA-256 of the token: compared, never the token */
    unsigned char key[32];          /* HMAC key of sessions and CSRF tokens */
};

struct console_session {
    char id[33]; /* the nonce, in hex: the session's row in console_sessions */
    char name[CONSOLE_AUTH_MAX_NAME + 1];
    char csrf[CONSOLE_AUTH_CSRF_SIZE];
    time_t expires;
};

/* Derives the keys from `token` (borrowed). Returns 0, or -EINVAL when it is too short. */
int console_auth_init(struct console_auth *a, const char *token)
    __attribute__((warn_unused_result));
/*
 * Why `token` (borrowed) looks guessable, or NULL when it does not: shorter
 * than CONSOLE_AUTH_GOOD_TOKEN, or fewer than CONSOLE_AUTH_GOOD_DISTINCT
 * distinct characters ("aaaa...", "abababab..."). A static string.
 */
const char *console_auth_token_weak(const char *token);
/* Is `given` the token? Constant time, whatever the lengths. */
bool console_auth_token_ok(const struct console_auth *a, const char *given, size_t len);
/* Is `name` an acceptable operator name? */
bool console_auth_name_ok(const char *name);
/*
 * Writes a new session cookie value for `name` (checked) valid from `now`,
 * with `nonce` (16 random bytes from the caller). Returns 0 or -EINVAL.
 */
int console_auth_session_new(const struct console_auth *a, const char *name, time_t now,
                             const unsigned char nonce[16], char out[CONSOLE_AUTH_COOKIE_SIZE])
    __attribute__((warn_unused_result));
/*
 * Checks a cookie value (`len` bytes, borrowed): well-formed, signed by this
 * token and not expired at `now`. Fills *out and returns true, else false.
 */
bool console_auth_session_check(const struct console_auth *a, const char *value, size_t len,
                                time_t now, struct console_session *out);
/* Is `given` the session's CSRF token? Constant time. */
bool console_auth_csrf_ok(const struct console_session *s, const char *given);
/*
 * Finds cookie `name` in a Cookie header (borrowed): returns a pointer to its
 * value and its length in *len, or NULL.
 */
const char *console_auth_cookie(const char *header, const char *name, size_t *len);
/*
 * May a state-changing request be trusted not to come from another site?
 * `origin` (the Origin header), `fetch_site` (Sec-Fetch-Site) and `host`
 * (Host) may each be NULL. A browser sends Origin with every POST; when it
 * names another host, or Sec-Fetch-Site says cross-site or same-site, no.
 * Clients that send neither (curl) pass: they carry no ambient cookie.
 */
bool console_auth_same_origin(const char *origin, const char *fetch_site, const char *host);

#endif
