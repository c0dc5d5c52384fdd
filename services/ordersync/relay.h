/*
 * relay: delivers events to push destinations, on the same loop as ingest.
 *
 * Each push destination's stream (its cursor over the events, see
 * 007_delivery.sql) is delivered by one instance at a time, which holds the
 * stream's lease (relay_acquire shares the streams out between the live
 * instances). For the streams it holds, the relay:
 *
 *   wake (ingest commit in-process | NOTIFY ordersync_events | timers)
 *     -> reads events after each cursor (stream_read, every stream in one
 *        query, on a connection of its own) into a window per stream
 *        (relay_window.h: ordering per order, blocking)
 *     -> POSTs them with lib/http_client, Standard Webhooks signed, with the
 *        destination's extra headers, within its rate limit (relay_rate.h)
 *     -> claims due rows of `deliveries` (retries, unblocked events)
 *     -> once per loop turn writes everything settled in one statement
 *        (relay_complete): the cursor moves, failures become rows, rows
 *        settle
 *
 * No transaction is open while an HTTP request is. What a result means is
 * decided by relay_policy.h. How the relay_*.c files share the work (one
 * conversation with PostgreSQL or libcurl each): relay_internal.h.
 */
#ifndef OS_RELAY_H
#define OS_RELAY_H

#include <stdbool.h>
#include <uv.h>

#include "destinations.h"

struct relay;

struct relay_config {
    const char *conninfo; /* NULL: libpq environment */
    const char *instance; /* lease owner name */
    unsigned lease_s;
    unsigned claim_batch;
    unsigned sweep_interval_s;
    const char *alert_destination; /* NULL: no operational alerts (relay_alert.c) */
    unsigned alert_interval_s;
};

/*
 * Starts the relay (its own database connection). `dests` is borrowed and
 * must outlive the relay; call relay_reload() whenever it was reloaded.
 * Returns 0 or a negative errno.
 */
int relay_new(uv_loop_t *loop, const struct relay_config *cfg, struct destinations *dests,
              struct relay **out) __attribute__((warn_unused_result));
/* New events may have been committed: read as soon as possible. Cheap; call freely. */
void relay_wake(struct relay *r);
/* Rows of `deliveries` may have become due (an operator replayed or skipped): claim. */
void relay_rows_changed(struct relay *r);
/* The destinations were reloaded: take or let go of streams accordingly. */
void relay_reload(struct relay *r);
/*
 * A NOTIFY on RELAY_STREAMS_CHANNEL: instance `from` let go of streams or
 * joined, so that the shares changed; take or let go now rather than at the
 * next lease round (a quarter of the lease). Its own notifications are
 * ignored.
 */
#define RELAY_STREAMS_CHANNEL "ordersync_streams"
void relay_streams_changed(struct relay *r, const char *from);
/*
 * Can it deliver? Running, both its database connections up, and it has
 * taken its share of the streams (an acquire answered, which it sends only
 * once the destinations are loaded) at least once. /readyz asks.
 */
bool relay_ready(const struct relay *r);
/* Deliveries in flight plus results not yet written. */
unsigned relay_busy(const struct relay *r);
/*
 * Graceful stop: nothing new starts; deliveries in flight finish and their
 * results are written. `done` runs once that is over (or after relay_abort).
 */
void relay_stop(struct relay *r, void (*done)(void *data), void *data);
/* Stops now: aborts deliveries in flight and releases their leases (best effort). */
void relay_abort(struct relay *r);
/* Frees everything (after relay_stop's done or relay_abort). Sets *r to NULL. */
void relay_free(struct relay **r);

#endif
