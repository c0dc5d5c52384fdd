/*
 * ingest: group commit of verified webhooks.
 *
 * Requests that passed verification and normalization are queued with
 * ingest_submit(). After the loop's I/O phase (a uv_check handle), everything
 * queued goes to Postgres as ONE statement, `SELECT * FROM ingest_batch($1)`,
 * and so one transaction and one fsync; while a batch is in flight on every
 * connection the next one accumulates. Each request is answered only after its batch committed:
 * 200 with its outcome, or 503 + Retry-After when the database is away.
 * A batch that fails on data (SQLSTATE classes 22 and 23) is re-run one
 * request per transaction, so one bad request never fails the others and only
 * it gets 422; any other database error is ours, not the sender's: the whole
 * batch gets 503 + Retry-After.
 */
#ifndef OS_INGEST_H
#define OS_INGEST_H

#include <stdbool.h>
#include <uv.h>

#include "db.h"
#include "http.h"
#include "inbound.h"

struct ingest;

#define INGEST_MAX_CONNECTIONS 16

struct ingest_config {
    unsigned batch_max;     /* most requests per transaction */
    unsigned retry_after_s; /* sent with 503 */
    /* Called after a commit that created outbox rows (wakes the local relay). */
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

/*
 * Queues a request for the next batch. Takes ownership of the contents of `ev`
 * (left cleared) and of answering `req`. `source_id` is copied.
 */
void ingest_submit(struct ingest *ing, struct http_request *req, const char *source_id,
                   struct inbound_event *ev);

/* True when at least one connection can take a batch. */
bool ingest_ready(const struct ingest *ing);
/* Why the connections are down ("" when they are not); borrowed. */
const char *ingest_last_error(const struct ingest *ing);
/* Requests queued or in flight. */
unsigned ingest_pending(const struct ingest *ing);

/*
 * Answers everything still queued with 503 and frees the ingest after its
 * handle closed. Close the db first: its in-flight batch calls back into us.
 */
void ingest_free(struct ingest **ing);

#endif
