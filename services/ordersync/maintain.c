/*
 * maintain: one round = respan, extend, retire, then prune until a call deletes
 * less than a batch (each call is its own short transaction, so a big
 * backlog of old rows never becomes one long lock). Statements go on the
 * shared aux connection one after the other.
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

struct maintain {
    uv_loop_t *loop;
    struct db *db;
    uv_timer_t timer;
    bool running;
    unsigned prune_batches;
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
    res = PQexec(conn, "SELECT event_store_respan()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        log_warn("could not replace the partitions made at another interval",
                 json_pack("{s:s}", "detail", PQresultErrorMessage(res)));
    else
        log_respan(atoi(PQgetvalue(res, 0, 0)));
    PQclear(res);
    /* a quarter of the interval, between 5 s and a minute: partitions are made
       three intervals ahead, so three rounds can fail before ingest needs one */
    res = PQexec(conn, "SELECT event_store_extend(now() + 3 * partition_interval),"
                       " 1000 * extract(epoch FROM least(greatest(partition_interval / 4,"
                       " interval '5 seconds'), interval '1 minute'))::float8"
                       " FROM event_store_settings");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(detail, detail_len, "%s", PQresultErrorMessage(res));
        rc = -1;
    } else {
        *every_ms = (uint64_t)atof(PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return rc;
}

static void prune(struct maintain *m);

static void on_pruned(PGresult *res, const char *err, void *data)
{
    struct maintain *m = data;
    if (err != NULL || res == NULL) {
        if (err != NULL)
            log_warn("pruning failed", json_pack("{s:s}", "detail", err));
        m->running = false;
        return;
    }
    int n = PQntuples(res) ? atoi(PQgetvalue(res, 0, 0)) : 0;
    metric_add(m->m_pruned, n);
    if (n >= PRUNE_BATCH_N && ++m->prune_batches < PRUNE_MAX_BATCHES) {
        prune(m);
        return;
    }
    m->running = false;
}

static void prune(struct maintain *m)
{
    const char *v[1] = {PRUNE_BATCH};
    if (db_query(m->db, false, "SELECT event_store_prune($1::integer)", 1, v, on_pruned, m) < 0)
        m->running = false;
}

static void on_retired(PGresult *res, const char *err, void *data)
{
    struct maintain *m = data;
    if (err != NULL || res == NULL) {
        if (err != NULL)
            log_warn("dropping old partitions failed", json_pack("{s:s}", "detail", err));
    } else {
        for (int r = 0; r < PQntuples(res); r++) {
            const char *action = PQgetvalue(res, r, 4);
            json_t *f =
                json_pack("{s:s,s:s,s:s,s:s}", "partition", PQgetvalue(res, r, 1), "from",
                          PQgetvalue(res, r, 2), "to", PQgetvalue(res, r, 3), "action", action);
            if (strcmp(action, "dropped") == 0) {
                metric_add(m->m_dropped, 1);
                log_info("partition dropped", f);
            } else {
                /* kept past the retention: say why, it is storage an operator pays for */
                log_warn("partition kept past the retention", f);
            }
        }
    }
    m->prune_batches = 0;
    prune(m);
}

static void on_extended(PGresult *res, const char *err, void *data)
{
    struct maintain *m = data;
    if (err != NULL) {
        log_error("could not make partitions ahead", json_pack("{s:s}", "detail", err));
    } else if (res != NULL && PQntuples(res) == 1 && atoi(PQgetvalue(res, 0, 0)) > 0) {
        log_info("partitions made", json_pack("{s:i}", "count", atoi(PQgetvalue(res, 0, 0))));
    }
    if (db_query(m->db, false,
                 "SELECT parent, name, lo::text, hi::text, action FROM event_store_retire()", 0,
                 NULL, on_retired, m) < 0)
        m->running = false;
}

static void on_respanned(PGresult *res, const char *err, void *data)
{
    struct maintain *m = data;
    if (err != NULL)
        log_warn("could not replace the partitions made at another interval",
                 json_pack("{s:s}", "detail", err));
    else if (res != NULL && PQntuples(res) == 1)
        log_respan(atoi(PQgetvalue(res, 0, 0)));
    if (db_query(m->db, false,
                 "SELECT event_store_extend(now() + 3 * partition_interval)"
                 " FROM event_store_settings",
                 0, NULL, on_extended, m) < 0)
        m->running = false;
}

void maintain_run(struct maintain *m)
{
    if (m->running || !db_is_ready(m->db))
        return;
    if (db_query(m->db, false, "SELECT event_store_respan()", 0, NULL, on_respanned, m) == 0)
        m->running = true;
}

static void on_timer(uv_timer_t *t)
{
    maintain_run(t->data);
}

int maintain_new(uv_loop_t *loop, struct db *db, uint64_t every_ms, struct maintain **out)
{
    struct maintain *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    m->loop = loop;
    m->db = db;
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
    uv_timer_start(&m->timer, on_timer, every_ms, every_ms);
    *out = m;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void maintain_free(struct maintain **pm)
{
    struct maintain *m = *pm;
    if (m == NULL)
        return;
    *pm = NULL;
    uv_close((uv_handle_t *)&m->timer, on_closed);
}
