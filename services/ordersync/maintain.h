/*
 * maintain: keeps the event store's storage bounded (005_event_store.sql).
 * Every few minutes (a quarter of the partition interval, at most one
 * minute) it replaces partitions made ahead at another interval that hold
 * nothing yet (event_store_respan, 010_partition_interval.sql), makes
 * partitions ahead (event_store_extend), detaches (concurrently) and drops
 * those past the retention that hold nothing undelivered
 * (event_store_retirable, event_store_drop_detached:
 * 013_operations.sql), and deletes expired dedupe keys and forgotten orders
 * in bounded batches (event_store_prune). Several instances may run it: the
 * functions take their own locks, one instance retires partitions at a
 * time, and a round that finds the work done does nothing.
 *
 * maintain_setup() is start-up work (blocking): it stores the settings and
 * makes the first partitions before anything is served.
 */
#ifndef OS_MAINTAIN_H
#define OS_MAINTAIN_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <uv.h>

#include "db.h"

struct maintain;

/*
 * Blocking, at start-up: stores `retention` and `partition_interval`
 * (PostgreSQL intervals), replaces the partitions made ahead at another
 * interval that hold nothing yet (a warning if they are busy: the rounds try
 * again), and makes partitions for the next intervals; sets
 * *every_ms to the period of the rounds. Returns 0, or -1 with the reason in
 * `detail` (a bad interval, say).
 */
int maintain_setup(PGconn *conn, const char *retention, const char *partition_interval,
                   uint64_t *every_ms, char *detail, size_t detail_len);

/*
 * Starts the periodic rounds, on a connection of its own to `conninfo`
 * (copied; it needs a session: a pooler in transaction mode will not do), the
 * first as soon as it is connected. `every_ms` is the period. Returns 0 or a
 * negative errno.
 */
int maintain_new(uv_loop_t *loop, const char *conninfo, uint64_t every_ms, struct maintain **out)
    __attribute__((warn_unused_result));
/* Runs a round now (unless one is running). */
void maintain_run(struct maintain *m);
/* Stops and frees (after its timer closed). Sets *m to NULL. */
void maintain_free(struct maintain **m);

#endif
