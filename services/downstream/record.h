/*
 * record: an append-only log of the events a downstream accepted, one line
 * each ("<webhook-id>\t<type>\t<source>:<external_id>\t<arrival, µs since
 * the epoch>"), for tests and benchmarks that must know exactly what arrived
 * and when (the sink keeps no state).
 * Lines are buffered and written with libuv's asynchronous file I/O, so the
 * loop never waits for the disk.
 */
#ifndef DS_RECORD_H
#define DS_RECORD_H

#include <stddef.h>
#include <uv.h>

struct record;

/* Opens (creates, appends to) `path` at start-up (blocking). Returns 0 or a negative errno. */
int record_open(uv_loop_t *loop, const char *path, struct record **out)
    __attribute__((warn_unused_result));
/* Queues one line (a newline is added). Lines past a cap of unwritten bytes are counted, not kept.
 */
void record_line(struct record *r, const char *line, size_t len);
/* Writes what is left, closes the file (after the loop finishes its writes). Sets *r to NULL. */
void record_close(struct record **r);

#endif
