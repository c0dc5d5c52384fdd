/*
 * poller: fetches orders from sources that cannot push (mode 'poll'), and
 * reconciles push sources that may have dropped webhooks (reconcile_interval;
 * WooCommerce never retries a failed delivery).
 *
 * A run: take the source's poll lease (one instance polls a source at a
 * time) -> GET poll_url?updated_at_min=<cursor> with If-None-Match /
 * If-Modified-Since and the source's auth header -> follow Link rel="next"
 * -> each page's orders go through the same normalization and
 * ingest_batch() as pushed webhooks (event type derived in SQL, dedupe on
 * order id + updated_at) -> on the last page the cursor advances in the same
 * transaction. 304 costs nothing; 429/503 honour Retry-After; errors back off
 * exponentially. Counters land in source_polls (view poll_state). What one
 * response means is decided by poll_page (pure); the poller applies it.
 */
#ifndef OS_POLLER_H
#define OS_POLLER_H

#include <uv.h>

#include "db.h"

struct poller;

/* `db` is borrowed (the aux connection). Returns 0 or a negative errno. */
int poller_new(uv_loop_t *loop, struct db *db, const char *instance, struct poller **out)
    __attribute__((warn_unused_result));
/* Sources changed (or the db reconnected): reload the list of polled sources. */
void poller_reload(struct poller *p);
/* Stops timers and aborts runs in flight (their leases expire); frees after handles close. */
void poller_free(struct poller **p);

#endif
