/*
 * db: one asynchronous PostgreSQL connection on the libuv loop (shared by
 * ordersync and the helper services).
 *
 * libpq runs non-blocking (PQconnectStart/PQconnectPoll, PQsetnonblocking,
 * PQsendQueryPrepared, PQflush, PQconsumeInput/PQisBusy/PQgetResult,
 * PQnotifies) under a uv_poll_t on PQsocket(), which is re-bound whenever the
 * socket changes, also between PQconnectPoll() calls. Queries queue in FIFO
 * order and run one at a time; a query's statement is either one of the
 * statements given at open (prepared on every connection before it is
 * reported ready) or plain SQL.
 *
 * High availability: a multi-host connection string
 * (postgresql://u@h1:p1,h2:p2/db?target_session_attrs=read-write) is walked
 * by libpq host by host, so after a failover the next attempt lands on the
 * new primary; a connection whose server stops taking writes (fenced or
 * demoted in place) is dropped for a new attempt. TCP keepalives and tcp_user_timeout are on by
 * default (conninfo.h), so a silent peer fails the connection within seconds.
 *
 * A lost connection fails every queued query (callback with res == NULL) and
 * reconnects with a short capped backoff, so callers decide what "failed"
 * means (ingest answers 503; the relay retries later).
 */
#ifndef OS_DB_H
#define OS_DB_H

#include <stdbool.h>
#include <libpq-fe.h>
#include <uv.h>

struct db;

struct db_stmt {
    const char *name; /* prepared statement name; borrowed, static */
    const char *sql;
};

struct db_callbacks {
    /* Connected and every statement prepared. */
    void (*on_ready)(struct db *db, void *data);
    /* The connection was lost or an attempt failed; `err` says why (borrowed). */
    void (*on_down)(struct db *db, const char *err, void *data);
    /* A NOTIFY arrived (LISTEN through db_query). Strings borrowed. */
    void (*on_notify)(struct db *db, const char *channel, const char *payload, void *data);
};

/*
 * Result callback. `res` is borrowed for the call (NULL when the connection
 * failed before a result came: the outcome of the query is then unknown);
 * `err` is NULL on success, else a message (borrowed). Runs exactly once per
 * accepted query, including when the db is closed with queries pending.
 */
typedef void (*db_result_fn)(PGresult *res, const char *err, void *data);

/*
 * Starts connecting (never blocks: every host name of the list is resolved on
 * libuv's thread pool, except hosts that come from a service file, which
 * libpq resolves itself). `conninfo` may be NULL (libpq's PG* environment)
 * and is copied;
 * `stmts` (n of them) and `cbs` are borrowed and must outlive the db.
 * Returns 0 or a negative errno.
 */
int db_open(uv_loop_t *loop, const char *conninfo, const char *name, const struct db_stmt *stmts,
            int n_stmts, const struct db_callbacks *cbs, void *data, struct db **out)
    __attribute__((warn_unused_result));

/*
 * Process-wide, before the first db_open(): statements given at open are not
 * prepared but sent with each query as unnamed statements (a pooler in
 * transaction mode runs each transaction on any server connection, where a
 * named statement may not exist). Costs a parse per query.
 */
void db_use_unnamed_statements(bool on);

bool db_is_ready(const struct db *db);
/* Queries accepted and not yet answered. */
unsigned db_queue_length(const struct db *db);

/*
 * Queues a query: `stmt` is the name of a statement given at open (when
 * `prepared`) or SQL text. Parameters are text (NULL for SQL NULL); the
 * statement and parameters are copied, so the caller's may go away at once.
 * Returns 0, or -ENOTCONN when the db is not ready (the callback will not
 * run; answer the caller now).
 */
int db_query(struct db *db, bool prepared, const char *stmt, int nparams, const char *const *values,
             db_result_fn cb, void *data) __attribute__((warn_unused_result));

/* Fails pending queries, closes the connection, frees the db after libuv closed its handles. */
void db_close(struct db **db);

/* Last connection error text, or "" (borrowed). */
const char *db_last_error(const struct db *db);

/*
 * Finds the index of each named column of `res` (PQfnumber), so results are
 * read by name and a reordered SELECT fails loudly instead of shifting
 * fields. Returns 0, or -EINVAL after logging which column of `what` is
 * missing.
 */
int db_columns(const PGresult *res, const char *what, const char *const *names, int *idx, int n)
    __attribute__((warn_unused_result));

#endif
