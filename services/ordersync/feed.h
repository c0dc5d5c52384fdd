/*
 * feed: GET /feeds/{destination} for destinations that poll instead of
 * receiving webhooks (mode 'poll').
 *
 *   GET /feeds/inventory?after=<cursor>&limit=<n>&wait=<seconds>
 *   Authorization: Bearer <destinations.feed_token>
 *   -> {"events": [{"id": "msg_...", "type", "timestamp", "data"}, ...], "next": "<cursor>"}
 *
 * Each event is the envelope a push destination would get, with its
 * webhook-id as "id". Acknowledgement model: reading with after=C acknowledges
 * every event up to C (those rows become 'delivered'); a consumer that crashes
 * before its next read gets the same events again. An empty feed holds the
 * request up to `wait` seconds (max 60) and answers within milliseconds of a
 * commit that adds events; waiting costs memory only, no database connection.
 */
#ifndef OS_FEED_H
#define OS_FEED_H

#include <uv.h>

#include "http.h"

struct feed;

/* Opens the feed's database connection. Returns 0 or a negative errno. */
int feed_new(uv_loop_t *loop, const char *conninfo, struct feed **out)
    __attribute__((warn_unused_result));
/* Answers (now or after a wait) GET /feeds/{dest_id}; takes over answering `req`. */
void feed_handle(struct feed *f, struct http_request *req, const char *dest_id);
/* Events were committed (here or by another instance): waiting readers look again. NULL ok. */
void feed_wake(struct feed *f);
/* Destinations changed: reload tokens. NULL ok. */
void feed_reload(struct feed *f);
/* Answers every waiting reader with what it has (an empty list) and frees the feed. */
void feed_free(struct feed **f);

#endif
