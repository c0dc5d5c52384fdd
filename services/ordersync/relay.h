/*
 * relay: delivers outbox rows to push destinations, on the same loop as ingest.
 *
 *   wake (ingest commit in-process | NOTIFY ordersync_outbox | retry timer | sweep)
 *     -> claim due rows in one statement (outbox_claim: FOR UPDATE SKIP LOCKED,
 *        lease, per-destination room, ordering per order and destination)
 *     -> POST each with deliver.c (libcurl multi on libuv), Standard Webhooks signed
 *     -> results written back in one statement per loop turn (outbox_complete)
 *     -> claim again
 * No transaction is open while an HTTP request is: a claim commits before the
 * first byte goes out. A process that dies leaves leases that expire; the
 * sweep (any instance) makes those rows claimable again.
 */
#ifndef OS_RELAY_H
#define OS_RELAY_H

#include <stdbool.h>
#include <uv.h>

struct relay;

struct relay_config {
    const char *conninfo; /* NULL: libpq environment */
    const char *instance; /* lease owner name */
    unsigned lease_s;
    unsigned claim_batch;
    unsigned sweep_interval_s;
    unsigned retention_days; /* 0 keeps everything */
};

/* Starts the relay (its own database connection). Returns 0 or a negative errno. */
int relay_new(uv_loop_t *loop, const struct relay_config *cfg, struct relay **out)
    __attribute__((warn_unused_result));
/* New rows may be due: claim as soon as possible. Cheap; call freely. */
void relay_wake(struct relay *r);
/* Destinations changed (NOTIFY ordersync_config): reload them. */
void relay_reload(struct relay *r);
/* Deliveries in flight plus results not yet written. */
unsigned relay_busy(const struct relay *r);
/*
 * Graceful stop: no new claims; deliveries in flight finish and their results
 * are written. `done` runs once that is over (or after relay_abort).
 */
void relay_stop(struct relay *r, void (*done)(void *data), void *data);
/* Stops now: aborts deliveries in flight and releases their leases (best effort). */
void relay_abort(struct relay *r);
/* Frees everything (after relay_stop's done or relay_abort). */
void relay_free(struct relay **r);

#endif
