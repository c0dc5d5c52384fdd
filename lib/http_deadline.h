/*
 * http_deadline: the clocks a request runs against while it is being
 * received, as pure functions of (deadlines, event, now). The server
 * (http.c) applies them with libuv's clock and one timer per connection; the
 * fuzzer (tests/fuzz/fuzz_http.c) applies the very same functions with a
 * simulated clock, so a rule that lets a request outlive its deadline shows
 * up there deterministically.
 *
 *   head     request line and headers complete within header_ms of the
 *            request's first byte (of the accept, for a connection's first
 *            request): slow headers get 408;
 *   body     body bytes keep arriving, at most header_ms apart: a stalled
 *            upload gets 408;
 *   request  the whole request, head and body, within request_ms of the same
 *            start. The body clock restarts with every read, so a peer that
 *            sends one byte every second of a 100 kB body would pass it
 *            forever; this one it cannot restart.
 *
 * Times are milliseconds on the caller's monotonic clock; 0 means not armed.
 * Internal to lib/.
 */
#ifndef OS_HTTP_DEADLINE_H
#define OS_HTTP_DEADLINE_H

#include <stdint.h>

#include "http_parse.h"

struct http_deadline_limits {
    uint64_t header_ms;  /* head, and the longest pause inside a body */
    uint64_t request_ms; /* head and body together */
};

struct http_deadline {
    uint64_t head;
    uint64_t body;
    uint64_t request;
};

enum http_deadline_expiry {
    HTTP_DEADLINE_NONE,
    HTTP_DEADLINE_HEAD,
    HTTP_DEADLINE_BODY,
    HTTP_DEADLINE_REQUEST,
};

/* A connection was accepted at `now`: its first request is due from then. */
void http_deadline_accepted(struct http_deadline *d, const struct http_deadline_limits *l,
                            uint64_t now);
/*
 * The first byte of a request is about to be parsed at `now`. The head clock
 * starts again; the request clock starts only if no request is under way
 * (the first request's started at the accept).
 */
void http_deadline_request_begins(struct http_deadline *d, const struct http_deadline_limits *l,
                                  uint64_t now);
/*
 * A read was parsed and the parser is now in `phase`. In the body the body
 * clock restarts; with no request under way every clock stops.
 */
void http_deadline_after_read(struct http_deadline *d, const struct http_deadline_limits *l,
                              enum http_parse_phase phase, uint64_t now);
/* The request was received whole, or refused: nothing is due until the next one begins. */
void http_deadline_clear(struct http_deadline *d);
/* The earliest armed deadline, or 0 when none is. */
uint64_t http_deadline_next(const struct http_deadline *d);
/* Which deadline has passed at `now` (the earliest one when several have), or NONE. */
enum http_deadline_expiry http_deadline_expired(const struct http_deadline *d, uint64_t now);

#endif
