/*
 * feed: pull feeds for destinations that poll instead of receiving webhooks
 * (mode 'poll'). api.c maps GET /feeds/{destination}?after=&limit=&wait= to
 * feed_read() and turns its outcome into HTTP.
 *
 * A feed is the destination's stream (007_delivery.sql): events in commit
 * order, so a consumer that has read past position P never misses an event
 * committed later. Acknowledgement model: reading with after=C acknowledges
 * every event up to C (the stream's cursor moves there; a cursor beyond the
 * end of the stream is refused); a consumer that crashes before its next read
 * gets the same events again. Each event is the envelope a push destination
 * would get, with its webhook-id as "id". An empty feed holds the request up
 * to `wait` seconds and answers within milliseconds of a commit that adds
 * events; waiting costs memory only, no database connection.
 */
#ifndef OS_FEED_H
#define OS_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "destinations.h"

struct feed;

#define FEED_MAX_WAIT_S 60
#define FEED_MAX_LIMIT  1000

struct feed_request {
    const char *dest_id; /* borrowed for the call */
    const char *bearer;  /* the token presented, or NULL (borrowed for the call) */
    int64_t after;       /* cursor: every event up to here is acknowledged */
    unsigned limit;      /* 1..FEED_MAX_LIMIT */
    unsigned wait_s;     /* 0..FEED_MAX_WAIT_S */
};

enum feed_status {
    FEED_OK,           /* body: {"events": [...], "next": "<cursor>"} */
    FEED_UNKNOWN,      /* no enabled destination with mode 'poll' has this id */
    FEED_UNAUTHORIZED, /* no token presented */
    FEED_FORBIDDEN,    /* the token does not open this feed */
    FEED_BAD_CURSOR,   /* after is beyond the end of the stream */
    FEED_UNAVAILABLE,  /* the database is away (or ordersync is starting or stopping) */
};

/*
 * The outcome of one feed_read(); `body` (FEED_OK) and `detail` are
 * borrowed for the call. `n_events` says how many events the body holds.
 */
typedef void (*feed_done_fn)(void *ctx, enum feed_status status, const char *body, size_t n_events,
                             const char *detail);
/* Asked while a reader waits: has its client gone away? */
typedef bool (*feed_gone_fn)(void *ctx);

/*
 * Opens the feed's database connection. `dests` is borrowed and must
 * outlive the feed. Returns 0 or a negative errno.
 */
int feed_new(uv_loop_t *loop, const char *conninfo, const struct destinations *dests,
             struct feed **out) __attribute__((warn_unused_result));
/*
 * Can a feed be read now? The destinations are loaded and, when some
 * destination is read through a feed (mode 'poll', enabled), the feed's
 * connection is up. False for NULL (the feed is gone: stopping). /readyz asks.
 */
bool feed_ready(const struct feed *f);
/* Reads a feed; `done` runs exactly once, now or later (never after feed_free returned). */
void feed_read(struct feed *f, const struct feed_request *rq, feed_done_fn done, feed_gone_fn gone,
               void *ctx);
/* Events were committed (here or by another instance): waiting readers look again. NULL ok. */
void feed_wake(struct feed *f);
/* Answers every waiting reader with what it has (an empty list) and frees the feed. */
void feed_free(struct feed **f);

#endif
