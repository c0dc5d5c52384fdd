/*
 * ingest: group commit of verified webhooks.
 *
 * Webhooks that passed verification and normalization are queued with
 * ingest_submit(). After the loop's I/O phase (a uv_check handle), everything
 * queued goes to Postgres as ONE statement, `SELECT * FROM ingest_batch($1,
 * $2)`, and so one transaction and one fsync; while a batch is in flight on
 * every connection the next one accumulates. Each webhook's outcome is
 * reported (the callback) only after its batch committed, or as "unavailable"
 * when the database is away. A batch that fails on data (SQLSTATE classes 22
 * and 23) is re-run one webhook per transaction, so one bad request never
 * fails the others and only it is rejected; any other database error is
 * ours, not the sender's: the whole batch is "unavailable". This module does
 * not speak HTTP: api.c turns outcomes into answers.
 */
#ifndef OS_INGEST_H
#define OS_INGEST_H

#include <stdbool.h>
#include <uv.h>

#include "db.h"
#include "inbound.h"

struct ingest;

#define INGEST_MAX_CONNECTIONS 16

struct ingest_config {
    unsigned batch_max;     /* most requests per transaction */
    unsigned max_pending;   /* most requests queued or being committed (ingest_full) */
    unsigned retry_after_s; /* sent with 503 */
    /* Called after a commit that emitted events (wakes the local relay). */
    void (*on_committed)(void *data);
    void *data;
};

/*
 * Returns 0 or a negative errno. `dbs` (n_dbs of them, at most
 * INGEST_MAX_CONNECTIONS) are borrowed and must outlive the ingest; a batch is
 * in flight on each at most, so n_dbs transactions run in parallel.
 */
int ingest_new(uv_loop_t *loop, struct db *const *dbs, unsigned n_dbs,
               const struct ingest_config *cfg, struct ingest **out)
    __attribute__((warn_unused_result));

enum ingest_result {
    INGEST_DONE,        /* committed: `outcome` says how */
    INGEST_UNAVAILABLE, /* the database is away or the transaction failed: retry later */
    INGEST_REJECTED,    /* the database refused this webhook's data (constraint) */
    INGEST_FAILED,      /* a bug: the batch result had no row for it */
};

struct ingest_outcome {
    enum ingest_result result;
    /* INGEST_DONE: "applied", "stale", "ignored" or "duplicate" (static) */
    const char *outcome;
    /* "ignored" for a reason the sender should learn ("topic_mismatch"), else NULL; static */
    const char *reason;
    const char *order_id; /* may be NULL; borrowed for the call */
    int events;           /* events emitted */
    const char *detail;   /* why, when not done; borrowed for the call */
    const char *trace_id; /* the webhook's trace id ("" if none); borrowed for the call */
};

/* Called exactly once per submitted webhook, on the loop. */
typedef void (*ingest_done_fn)(void *ctx, const struct ingest_outcome *o);

/*
 * The webhook's ingest_batch() element as JSON text (a new allocation):
 * source, dedupe key, topic, event type, canonical order, the order an
 * ignored webhook names, trace id. NULL when out of memory or when a string
 * is not UTF-8 (jansson would not have written it either).
 */
char *ingest_element(const char *source_id, const struct inbound_event *ev);

/*
 * Queues a webhook for the next batch. Takes ownership of the contents of
 * `ev` (left cleared). `body` (the raw bytes, stored as received) is
 * borrowed until `done` runs; `source_id` is copied. `done` runs from inside
 * this call only when memory ran out.
 */
void ingest_submit(struct ingest *ing, const char *source_id, struct inbound_event *ev,
                   const char *body, size_t body_len, ingest_done_fn done, void *ctx);

/*
 * True when max_pending requests already wait for a commit: the caller
 * answers 503 + Retry-After before doing any work on the request, so an
 * overload costs bounded memory.
 */
bool ingest_full(const struct ingest *ing);
/* True when at least one connection can take a batch. */
bool ingest_ready(const struct ingest *ing);
/* Why the connections are down ("" when they are not); borrowed. */
const char *ingest_last_error(const struct ingest *ing);
/* Requests queued or in flight. */
unsigned ingest_pending(const struct ingest *ing);

/*
 * Reports everything still queued as unavailable and frees the ingest after
 * its handle closed. Close the db first: its in-flight batch calls back into us.
 */
void ingest_free(struct ingest **ing);

#endif
