/*
 * deliver: outbound HTTP POSTs with libcurl's multi socket API driven by the
 * libuv loop (curl's docs/examples/multi-uv.c pattern: CURLMOPT_SOCKETFUNCTION
 * maps curl's sockets to uv_poll_t, CURLMOPT_TIMERFUNCTION to one uv_timer_t).
 * Connections are kept alive and reused per host by the multi handle's pool;
 * easy handles are recycled. The relay decides what to send and what a
 * result means; this module only moves bytes and reports.
 */
#ifndef OS_DELIVER_H
#define OS_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define DELIVER_EXCERPT_MAX 256

struct deliver;

struct deliver_request {
    const char *url;
    bool get;         /* GET (pollers) instead of POST */
    size_t capture;   /* keep up to this many body bytes in the result (0: excerpt only) */
    const char *body; /* POST body, borrowed until the callback */
    size_t body_len;
    const char *const *headers; /* "Name: value" lines, NULL-terminated; copied */
    long timeout_ms;
};

struct deliver_result {
    long http_status;     /* 0 when no response (transport error) */
    const char *error;    /* NULL on a response; else curl's description (borrowed) */
    double retry_after_s; /* from Retry-After (seconds or HTTP date); < 0 when absent */
    char excerpt[DELIVER_EXCERPT_MAX + 1]; /* start of the response body */
    double seconds;                        /* duration of the attempt */
    const char *body; /* captured body (NUL-terminated) when capture > 0, else NULL */
    size_t body_len;
    bool truncated; /* the body was longer than capture */
    char etag[256]; /* response headers pollers need ("" when absent) */
    char last_modified[64];
    char next_url[2048]; /* Link: <...>; rel="next" */
    bool aborted;        /* deliver_free() cut it short: not an attempt at all */
};

/* Called once per started request, on the loop. `res` is borrowed for the call. */
typedef void (*deliver_done_fn)(const struct deliver_result *res, void *data);

/* Returns 0 or a negative errno. `user_agent` is copied. */
int deliver_new(uv_loop_t *loop, const char *user_agent, unsigned max_connections,
                struct deliver **out) __attribute__((warn_unused_result));
/*
 * Starts a POST. Returns 0 (the callback will run exactly once) or a negative
 * errno (it will not).
 */
int deliver_start(struct deliver *d, const struct deliver_request *req, deliver_done_fn cb,
                  void *data) __attribute__((warn_unused_result));
/* Requests started and not yet finished. */
unsigned deliver_in_flight(const struct deliver *d);
/*
 * Aborts what is in flight (callbacks run with error "aborted") and frees
 * everything once libuv closed its handles.
 */
void deliver_free(struct deliver **d);

#endif
