/*
 * http_client: outbound HTTP requests with libcurl's multi socket API driven
 * by a libuv loop (curl's docs/examples/multi-uv.c pattern:
 * CURLMOPT_SOCKETFUNCTION maps curl's sockets to uv_poll_t,
 * CURLMOPT_TIMERFUNCTION to one uv_timer_t). Connections are kept alive and
 * reused per host by the multi handle's pool; easy handles are recycled.
 *
 * It only moves bytes and reports: the callers (the relay's deliveries, the
 * pollers' list fetches) decide what a result means.
 */
#ifndef OS_HTTP_CLIENT_H
#define OS_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#define HTTP_CLIENT_EXCERPT_MAX 256
/* Response headers a request can ask to have kept, and how long each may be */
#define HTTP_CLIENT_MAX_CAPTURE  4
#define HTTP_CLIENT_CAPTURE_SIZE 2048
/* A Retry-After further out than this (a day) is read as this */
#define HTTP_CLIENT_RETRY_AFTER_MAX_S 86400.0

struct http_client;

struct http_client_request {
    const char *url;
    bool get;         /* GET instead of POST */
    const char *body; /* POST body, borrowed until the callback */
    size_t body_len;
    const char *const *headers; /* "Name: value" lines, NULL-terminated; copied */
    long timeout_ms;            /* the whole request, connecting included */
    size_t capture;             /* keep up to this many body bytes (0: the excerpt only) */
    /* lower-case names of response headers to keep (at most HTTP_CLIENT_MAX_CAPTURE),
     * NULL-terminated */
    const char *const *capture_headers;
};

struct http_client_result {
    long http_status;     /* 0 when no response (transport error) */
    const char *error;    /* NULL on a response; else curl's description (borrowed) */
    double retry_after_s; /* from Retry-After (seconds or HTTP date); < 0 when absent */
    char excerpt[HTTP_CLIENT_EXCERPT_MAX + 1]; /* start of the response body */
    double seconds;                            /* duration of the request */
    long connects;    /* connections it opened (0: it went on a kept-alive one) */
    const char *body; /* captured body (NUL-terminated) when capture > 0, else NULL */
    size_t body_len;
    bool truncated; /* the body was longer than capture */
    /* values of the capture_headers, in their order ("" when absent; trimmed) */
    const char *header[HTTP_CLIENT_MAX_CAPTURE];
    bool aborted; /* http_client_free() cut it short: nothing was decided */
};

/* Called once per started request, on the loop. `res` is borrowed for the call. */
typedef void (*http_client_done_fn)(const struct http_client_result *res, void *data);

/*
 * Returns 0 or a negative errno. `user_agent` is copied. `max_connections`
 * bounds the idle keep-alive pool.
 */
int http_client_new(uv_loop_t *loop, const char *user_agent, unsigned max_connections,
                    struct http_client **out) __attribute__((warn_unused_result));
/*
 * Starts a request. Returns 0 (the callback will run exactly once, never
 * from inside this call) or a negative errno (it will not).
 */
int http_client_start(struct http_client *c, const struct http_client_request *req,
                      http_client_done_fn cb, void *data) __attribute__((warn_unused_result));
/* Requests started and not yet finished. */
unsigned http_client_in_flight(const struct http_client *c);
/*
 * Aborts what is in flight (callbacks run now, with `aborted` set) and frees
 * everything once libuv closed its handles. Sets *c to NULL.
 */
void http_client_free(struct http_client **c);

/*
 * If the response header line `line` (n bytes, as libcurl hands it over, with
 * its CRLF) is the header `name` (case-insensitive), copies its value, blanks
 * around it trimmed, into `out` (cut to out_size - 1 bytes) and returns true.
 * Pure.
 */
bool http_client_header_value(const char *line, size_t n, const char *name, char *out,
                              size_t out_size);

/*
 * Seconds to wait from a Retry-After value (trimmed): delay-seconds or an
 * HTTP-date, relative to `now`, at most HTTP_CLIENT_RETRY_AFTER_MAX_S; -1 when
 * it is neither. Always finite. Pure.
 */
double http_client_retry_after(const char *value, time_t now);

#endif
