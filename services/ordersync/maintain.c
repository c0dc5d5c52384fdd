/*
 * maintain: one round = respan, extend, retire, then prune until a call deletes
 * less than a batch (each call is its own short transaction, so a big
 * backlog of old rows never becomes one long lock).
 *
 * Retiring a partition is two statements that must each be a transaction of
 * their own, so they come from here and not from a function:
 * `ALTER TABLE <parent> DETACH PARTITION <p> CONCURRENTLY` (it takes SHARE
 * UPDATE EXCLUSIVE on the parent, which writers and readers do not wait for;
 * DROP TABLE on a partition takes ACCESS EXCLUSIVE on the parent, and every
 * ingest batch queued behind it: 100-250 ms stalls at each drop in the soak),
 * then `SELECT * FROM event_store_drop_detached(<p>)`, which drops the
 * detached table (locking only it). event_store_retirable() says which
 * partitions may go and writes the statements (013_operations.sql). A detach
 * interrupted by a crash or a lock_timeout leaves the partition "detach
 * pending"; the next round finishes it (DETACH ... FINALIZE).
 *
 * The rounds run on a connection of their own: a detach waits for every
 * transaction that uses the parent, and `aux` (LISTEN, reloads) must not wait
 * with it. One instance retires at a time (a session advisory lock); the
 * others skip that part of their round.
 */
#include "maintain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

#define PRUNE_BATCH       "5000"
#define PRUNE_BATCH_N     5000
#define PRUNE_MAX_BATCHES 40 /* per round: 200k rows */
/*
 * How long a detach (or its FINALIZE, or a DDL of the round) waits for the
 * transactions using the parent: ingest's last milliseconds; past this
 * something holds the table (an operator's long query) and the partition
 * waits, detach pending, for the next round.
 */
#define LOCK_TIMEOUT "SET lock_timeout = '10s'"
#define RETIRE_LOCK  "event_store_position_lock() + 2"

enum step {
    STEP_IDLE,
    STEP_SETUP,
    STEP_RESPAN,
    STEP_EXTEND,
    STEP_LOCK,
    STEP_LIST,
    STEP_DETACH,
    STEP_DROP,
    STEP_UNLOCK,
    STEP_PRUNE
};

/* A partition the round acts on: the statement to run first (NULL: none), then the drop. */
struct retiring {
    char *name;
    char *statement;
};

struct maintain {
    uv_loop_t *loop;
    struct db *db;
    uv_timer_t timer;
    enum step step; /* STEP_IDLE between rounds */
    bool setup_done;
    unsigned prune_batches;
    struct retiring *todo; /* this round's partitions, `n_todo` of them */
    size_t n_todo, next_todo;
    struct metric *m_dropped, *m_pruned;
};

/* The outcome of event_store_respan(): partitions replaced, or -1 when busy. */
static void log_respan(int n)
{
    if (n > 0)
        log_info("partitions made ahead at another interval replaced",
                 json_pack("{s:i}", "count", n));
    else if (n < 0)
        log_warn("partitions made ahead at another interval kept",
                 json_pack("{s:s}", "reason", "busy: tried again at the next round"));
}

/* The first column of a one-row result, by its name; NULL when absent. */
static const char *value(const PGresult *res, const char *column)
{
    int c = PQfnumber(res, column);
    return c >= 0 && PQntuples(res) > 0 && !PQgetisnull(res, 0, c) ? PQgetvalue(res, 0, c) : NULL;
}

int maintain_setup(PGconn *conn, const char *retention, const char *partition_interval,
                   uint64_t *every_ms, char *detail, size_t detail_len)
{
    const char *v[2] = {retention, partition_interval};
    PGresult *res = PQexecParams(conn,
                                 "UPDATE event_store_settings SET retention = $1::interval,"
                                 " partition_interval = $2::interval",
                                 2, NULL, v, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(detail, detail_len, "%s", PQresultErrorMessage(res));
        rc = -1;
    }
    PQclear(res);
    if (rc < 0)
        return rc;
    /* before the first row: a new database gets the interval from its first partition */
    res = PQexec(conn, "SELECT event_store_respan() AS replaced");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || value(res, "replaced") == NULL)
        log_warn("could not replace the partitions made at another interval",
                 json_pack("{s:s}", "detail", PQresultErrorMessage(res)));
    else
        log_respan(atoi(value(res, "replaced")));
    PQclear(res);
    /* a quarter of the interval, between 5 s and a minute: partitions are made
       three intervals ahead, so three rounds can fail before ingest needs one */
    res = PQexec(conn, "SELECT event_store_extend(now() + 3 * partition_interval) AS made,"
                       " 1000 * extract(epoch FROM least(greatest(partition_interval / 4,"
                       " interval '5 seconds'), interval '1 minute'))::float8 AS every_ms"
                       " FROM event_store_settings");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || value(res, "every_ms") == NULL) {
        snprintf(detail, detail_len, "%s", PQresultErrorMessage(res));
        rc = -1;
    } else {
        *every_ms = (uint64_t)atof(value(res, "every_ms"));
    }
    PQclear(res);
    return rc;
}

static void forget_todo(struct maintain *m)
{
    for (size_t i = 0; i < m->n_todo; i++) {
        free(m->todo[i].name);
        free(m->todo[i].statement);
    }
    free(m->todo);
    m->todo = NULL;
    m->n_todo = m->next_todo = 0;
}

static void on_result(PGresult *res, const char *err, void *data);

/* Sends the statement of the round's current step; the round ends when it cannot. */
static void round_query(struct maintain *m, const char *sql, int nparams, const char *const *params)
{
    if (db_query(m->db, false, sql, nparams, params, on_result, m) < 0) {
        forget_todo(m);
        m->step = STEP_IDLE;
    }
}

static void prune(struct maintain *m)
{
    const char *v[1] = {PRUNE_BATCH};
    m->step = STEP_PRUNE;
    round_query(m, "SELECT event_store_prune($1::integer) AS pruned", 1, v);
}

static void unlock_then_prune(struct maintain *m)
{
    forget_todo(m);
    m->step = STEP_UNLOCK;
    round_query(m, "SELECT pg_advisory_unlock(" RETIRE_LOCK ")", 0, NULL);
}

/* The next partition of the round: its statement if it has one, else the drop. */
static void next_partition(struct maintain *m)
{
    if (m->next_todo == m->n_todo) {
        unlock_then_prune(m);
        return;
    }
    struct retiring *r = &m->todo[m->next_todo];
    if (r->statement != NULL) {
        m->step = STEP_DETACH;
        round_query(m, r->statement, 0, NULL);
        return;
    }
    const char *v[1] = {r->name};
    m->step = STEP_DROP;
    round_query(m,
                "SELECT parent, name, lo::text AS lo, hi::text AS hi, action"
                " FROM event_store_drop_detached($1)",
                1, v);
}

/* event_store_retirable(): what may go now. Partitions kept past the retention are logged. */
static void on_list(struct maintain *m, const PGresult *res)
{
    int c_parent = PQfnumber(res, "parent"), c_name = PQfnumber(res, "name"),
        c_lo = PQfnumber(res, "lo"), c_hi = PQfnumber(res, "hi"),
        c_action = PQfnumber(res, "action"), c_stmt = PQfnumber(res, "statement");
    if (c_parent < 0 || c_name < 0 || c_lo < 0 || c_hi < 0 || c_action < 0 || c_stmt < 0) {
        log_error("event_store_retirable() answered without its columns", NULL);
        unlock_then_prune(m);
        return;
    }
    int n = PQntuples(res);
    m->todo = n > 0 ? calloc((size_t)n, sizeof(*m->todo)) : NULL;
    if (n > 0 && m->todo == NULL) {
        unlock_then_prune(m);
        return;
    }
    for (int r = 0; r < n; r++) {
        const char *action = PQgetvalue(res, r, c_action);
        if (strncmp(action, "kept", 4) == 0) {
            /* kept past the retention: say why, it is storage an operator pays for */
            log_warn("partition kept past the retention",
                     json_pack("{s:s,s:s,s:s,s:s}", "partition", PQgetvalue(res, r, c_name), "from",
                               PQgetvalue(res, r, c_lo), "to", PQgetvalue(res, r, c_hi), "action",
                               action));
            continue;
        }
        struct retiring *t = &m->todo[m->n_todo];
        t->name = strdup(PQgetvalue(res, r, c_name));
        t->statement = PQgetisnull(res, r, c_stmt) ? NULL : strdup(PQgetvalue(res, r, c_stmt));
        m->n_todo++;
        if (t->name == NULL || (!PQgetisnull(res, r, c_stmt) && t->statement == NULL)) {
            log_error("out of memory listing partitions to drop", NULL);
            unlock_then_prune(m);
            return;
        }
    }
    next_partition(m);
}

/* event_store_drop_detached(): one row, or none when another round got there first. */
static void on_dropped(struct maintain *m, const PGresult *res)
{
    const char *action = value(res, "action");
    if (action != NULL) {
        json_t *f = json_pack("{s:s,s:s,s:s,s:s}", "partition", value(res, "name"), "from",
                              value(res, "lo"), "to", value(res, "hi"), "action", action);
        if (strcmp(action, "dropped") == 0) {
            metric_add(m->m_dropped, 1);
            log_info("partition dropped", f);
        } else {
            log_warn("partition not dropped", f);
        }
    }
    m->next_todo++;
    next_partition(m);
}

static void on_result(PGresult *res, const char *err, void *data)
{
    struct maintain *m = data;
    if (res == NULL) {
        /* the connection went: a new round starts once it is back */
        forget_todo(m);
        m->step = STEP_IDLE;
        return;
    }
    switch (m->step) {
    case STEP_SETUP:
        if (err != NULL)
            log_warn("could not set the maintenance lock_timeout",
                     json_pack("{s:s}", "detail", err));
        m->setup_done = true;
        m->step = STEP_RESPAN;
        round_query(m, "SELECT event_store_respan() AS replaced", 0, NULL);
        return;
    case STEP_RESPAN:
        if (err != NULL)
            log_warn("could not replace the partitions made at another interval",
                     json_pack("{s:s}", "detail", err));
        else if (value(res, "replaced") != NULL)
            log_respan(atoi(value(res, "replaced")));
        m->step = STEP_EXTEND;
        round_query(m,
                    "SELECT event_store_extend(now() + 3 * partition_interval) AS made"
                    " FROM event_store_settings",
                    0, NULL);
        return;
    case STEP_EXTEND:
        if (err != NULL)
            log_error("could not make partitions ahead", json_pack("{s:s}", "detail", err));
        else if (value(res, "made") != NULL && atoi(value(res, "made")) > 0)
            log_info("partitions made", json_pack("{s:i}", "count", atoi(value(res, "made"))));
        m->step = STEP_LOCK;
        round_query(m, "SELECT pg_try_advisory_lock(" RETIRE_LOCK ") AS locked", 0, NULL);
        return;
    case STEP_LOCK:
        if (err != NULL || value(res, "locked") == NULL || strcmp(value(res, "locked"), "t") != 0) {
            /* another instance is retiring partitions now */
            prune(m);
            return;
        }
        m->step = STEP_LIST;
        round_query(m,
                    "SELECT parent, name, lo::text AS lo, hi::text AS hi, action, statement"
                    " FROM event_store_retirable()",
                    0, NULL);
        return;
    case STEP_LIST:
        if (err != NULL) {
            log_warn("could not list the partitions past the retention",
                     json_pack("{s:s}", "detail", err));
            unlock_then_prune(m);
            return;
        }
        on_list(m, res);
        return;
    case STEP_DETACH: {
        struct retiring *r = &m->todo[m->next_todo];
        if (err != NULL)
            /* interrupted (lock_timeout): detach pending, finished next round */
            log_warn("detaching a partition failed",
                     json_pack("{s:s,s:s}", "partition", r->name, "detail", err));
        const char *v[1] = {r->name};
        m->step = STEP_DROP;
        round_query(m,
                    "SELECT parent, name, lo::text AS lo, hi::text AS hi, action"
                    " FROM event_store_drop_detached($1)",
                    1, v);
        return;
    }
    case STEP_DROP:
        if (err != NULL) {
            log_warn(
                "dropping a detached partition failed",
                json_pack("{s:s,s:s}", "partition", m->todo[m->next_todo].name, "detail", err));
            m->next_todo++;
            next_partition(m);
            return;
        }
        on_dropped(m, res);
        return;
    case STEP_UNLOCK:
        m->prune_batches = 0;
        prune(m);
        return;
    case STEP_PRUNE: {
        if (err != NULL) {
            log_warn("pruning failed", json_pack("{s:s}", "detail", err));
            m->step = STEP_IDLE;
            return;
        }
        int n = value(res, "pruned") != NULL ? atoi(value(res, "pruned")) : 0;
        metric_add(m->m_pruned, n);
        if (n >= PRUNE_BATCH_N && ++m->prune_batches < PRUNE_MAX_BATCHES) {
            prune(m);
            return;
        }
        m->step = STEP_IDLE;
        return;
    }
    case STEP_IDLE:
        break;
    }
    abort(); /* a result with no round running */
}

void maintain_run(struct maintain *m)
{
    if (m->step != STEP_IDLE || !db_is_ready(m->db))
        return;
    m->prune_batches = 0;
    if (!m->setup_done) {
        m->step = STEP_SETUP;
        round_query(m, LOCK_TIMEOUT, 0, NULL);
        return;
    }
    m->step = STEP_RESPAN;
    round_query(m, "SELECT event_store_respan() AS replaced", 0, NULL);
}

static void on_ready(struct db *db, void *data)
{
    (void)db;
    struct maintain *m = data;
    m->setup_done = false; /* a new session: its settings again */
    maintain_run(m);
}

static const struct db_callbacks maintain_cbs = {.on_ready = on_ready};

static void on_closed(uv_handle_t *h)
{
    struct maintain *m = h->data;
    forget_todo(m);
    free(m);
}

static void on_timer(uv_timer_t *t)
{
    maintain_run(t->data);
}

int maintain_new(uv_loop_t *loop, const char *conninfo, uint64_t every_ms, struct maintain **out)
{
    struct maintain *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->loop = loop;
    m->m_dropped = metrics_counter("ordersync_partitions_dropped_total",
                                   "Partitions dropped past the retention", "");
    m->m_pruned = metrics_counter("ordersync_rows_pruned_total",
                                  "Old dedupe keys and forgotten orders deleted", "");
    int rc = uv_timer_init(loop, &m->timer);
    if (rc < 0) {
        free(m);
        return rc;
    }
    m->timer.data = m;
    rc = db_open(loop, conninfo, "maintain", NULL, 0, &maintain_cbs, m, &m->db);
    if (rc < 0) {
        /* the timer is inside m: m goes in its close callback */
        uv_close((uv_handle_t *)&m->timer, on_closed);
        return rc;
    }
    uv_timer_start(&m->timer, on_timer, every_ms, every_ms);
    *out = m;
    return 0;
}

void maintain_free(struct maintain **pm)
{
    struct maintain *m = *pm;
    if (m == NULL)
        return;
    *pm = NULL;
    /* a query in flight is answered (res NULL) while the db closes: m is still alive then */
    db_close(&m->db);
    uv_close((uv_handle_t *)&m->timer, on_closed);
}
