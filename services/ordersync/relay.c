/*
 * relay: the loop and the lifecycle of delivery. relay.h says what the relay
 * does; relay_internal.h how its files share the work, one conversation with
 * the outside each. This file holds what concerns all of them:
 *
 *   - the statements, prepared on the relay's two connections (each file
 *     keeps its own SQL next to the code that reads its columns);
 *   - start-up (connections, timers) and every (re)connection, after which
 *     what was in flight on the old connection is unknown: the streams are
 *     read again from the database's cursor, and rows leased to this process
 *     that no request of it works on any more are released at once
 *     (relay_release_own) rather than when their lease runs out;
 *   - the stop: graceful (nothing new starts, what is in flight ends and is
 *     written, then relay_leave hands the streams back to the others) or at
 *     once (requests aborted, their rows released), and freeing;
 *   - the lifecycle state and the one-at-a-time conversations.
 */
#include "relay_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "log.h"
#include "metrics.h"

static const char sql_release_own[] =
    "SELECT relay_release_own($1, $2::text[], $3::bigint[]) AS released";
/* the notification goes with the commit that frees the streams */
static const char sql_leave[] =
    "SELECT relay_leave($1), pg_notify('" RELAY_STREAMS_CHANNEL "', $1)";

static const struct db_stmt stmts[] = {
    {"claim", relay_sql_claim},
    {"complete", relay_sql_complete},
    {"acquire", relay_sql_acquire},
    {"next_due", relay_sql_next_due},
    {"sweep", relay_sql_sweep},
    {"release_own", sql_release_own},
    {"leave", sql_leave},
    {"pause", relay_sql_pause},
    {"resume", relay_sql_resume},
    {"disable", relay_sql_disable},
    {"limited", relay_sql_limited},
    {"alert", relay_sql_alert},
    {"streams_changed", relay_sql_streams_changed},
};

/* The read connection's one statement (relay_read.c). */
static const struct db_stmt read_stmts[] = {
    {"stream_read", relay_sql_stream_read},
};

/* ---------------------------------------------------------------- states */

static const char *const state_names[] = {"running", "stopping", "leaving", "stopped", "closing"};

static bool may_become(enum relay_state from, enum relay_state to)
{
    switch (to) {
    case RELAY_RUNNING:
        return false;
    case RELAY_STOPPING:
        return from == RELAY_RUNNING;
    case RELAY_LEAVING:
        return from == RELAY_STOPPING;
    case RELAY_STOPPED:
        return from == RELAY_STOPPING || from == RELAY_LEAVING;
    case RELAY_CLOSING:
        return from != RELAY_CLOSING;
    }
    return false;
}

void relay_set_state(struct relay *r, enum relay_state to)
{
    if (!may_become(r->state, to)) {
        log_error("impossible relay state change",
                  json_pack("{s:s,s:s}", "from", state_names[r->state], "to", state_names[to]));
        abort();
    }
    r->state = to;
}

static void conv_impossible(const char *what, enum relay_conv c)
{
    static const char *const names[] = {"idle", "in flight", "in flight, again"};
    log_error("impossible relay statement state",
              json_pack("{s:s,s:s}", "event", what, "state", names[c]));
    abort();
}

bool relay_conv_want(enum relay_conv *c)
{
    if (*c == RELAY_CONV_IDLE)
        return true;
    *c = RELAY_CONV_AGAIN;
    return false;
}

void relay_conv_sent(enum relay_conv *c)
{
    if (*c != RELAY_CONV_IDLE)
        conv_impossible("sent", *c);
    *c = RELAY_CONV_IN_FLIGHT;
}

bool relay_conv_back(enum relay_conv *c)
{
    /* an answer nobody waits for: db.c runs each callback exactly once,
       failing every query of a lost connection before it reconnects */
    if (*c == RELAY_CONV_IDLE)
        conv_impossible("answered", *c);
    bool again = *c == RELAY_CONV_AGAIN;
    *c = RELAY_CONV_IDLE;
    return again;
}

/* ---------------------------------------------------------------- connections */

static void on_released_own(PGresult *res, const char *err, void *data)
{
    (void)data;
    static const char *const cols[] = {"released"};
    int c;
    if (err != NULL)
        log_warn("could not release this process's leases; they expire by themselves",
                 json_pack("{s:s}", "detail", err));
    else if (res != NULL && PQntuples(res) == 1 &&
             db_columns(res, "release_own", cols, &c, 1) == 0 && atoi(PQgetvalue(res, 0, c)) > 0)
        log_info("own leases released after reconnecting",
                 json_pack("{s:i}", "rows", atoi(PQgetvalue(res, 0, c))));
}

/* Rows leased to this process whose request no longer runs here go back now. */
static void release_own(struct relay *r)
{
    struct buf ds, ps;
    buf_init(&ds, RELAY_PARAM_CAP);
    buf_init(&ps, RELAY_PARAM_CAP);
    int rc = buf_append_str(&ds, "{");
    if (rc == 0)
        rc = buf_append_str(&ps, "{");
    /* rows whose request is still running here keep their lease */
    unsigned n = 0;
    struct list_node *node;
    list_foreach(node, &r->in_http)
    {
        struct job *j = list_entry(node, struct job, http);
        if (j->kind != JOB_ROW || rc < 0)
            continue;
        rc = buf_append_str(&ds, n ? "," : "");
        if (rc == 0)
            rc = relay_append_str(&ds, j->rd->d->id);
        if (rc == 0)
            rc = buf_printf(&ps, "%s%" PRId64, n ? "," : "", j->position);
        n++;
    }
    if (rc == 0)
        rc = buf_append_str(&ds, "}");
    if (rc == 0)
        rc = buf_append_str(&ps, "}");
    const char *v[3] = {r->instance, ds.data, ps.data};
    if (rc == 0 && db_query(r->db, true, "release_own", 3, v, on_released_own, r) < 0)
        log_debug("release_own not sent", NULL);
    buf_free(&ds);
    buf_free(&ps);
}

/*
 * (Re)connected. Whatever was in flight on the old connection failed with
 * it (db.c answers every query of a lost connection before reconnecting),
 * so every conversation is idle; what it did is unknown, so every stream is
 * read again from the database's cursor.
 */
static void on_ready(struct db *db, void *data)
{
    (void)db;
    struct relay *r = data;
    relay_dest_repay_all(r); /* a claim lost with the connection */
    relay_stream_drop_all(r);
    release_own(r);
    relay_acquire(r);
    relay_on_sweep_timer(&r->sweep_timer);
}

static const struct db_callbacks relay_cbs = {.on_ready = on_ready};

static void on_read_ready(struct db *db, void *data)
{
    (void)db;
    relay_read(data);
}

static const struct db_callbacks read_cbs = {.on_ready = on_read_ready};

/* ---------------------------------------------------------------- start */

void relay_core_init(struct relay *r, const struct relay_config *cfg)
{
    r->cfg = *cfg;
    if (r->cfg.claim_batch == 0)
        r->cfg.claim_batch = 256;
    if (r->cfg.sweep_interval_s == 0)
        r->cfg.sweep_interval_s = 30;
    if (r->cfg.lease_s == 0)
        r->cfg.lease_s = 60;
    r->state = RELAY_RUNNING;
    list_init(&r->rdests);
    list_init(&r->streams);
    list_init(&r->in_http);
    buf_init(&r->doc, RELAY_PARAM_CAP);
    buf_init(&r->claim_ids, RELAY_PARAM_CAP);
    buf_init(&r->claim_room, RELAY_PARAM_CAP);
    buf_init(&r->due_ids, RELAY_PARAM_CAP);
    buf_init(&r->acquire_ids, RELAY_PARAM_CAP);
    for (int i = 0; i < 5; i++)
        buf_init(&r->read_params[i], RELAY_PARAM_CAP);
}

void relay_core_free(struct relay *r)
{
    for (unsigned i = 0; i < r->n_results; i++)
        relay_job_free(r->results[i]);
    free(r->results);
    r->results = NULL;
    r->n_results = r->cap_results = 0;
    relay_stream_drop_all(r);
    relay_dest_free_all(r);
    buf_free(&r->doc);
    buf_free(&r->claim_ids);
    buf_free(&r->claim_room);
    buf_free(&r->due_ids);
    buf_free(&r->acquire_ids);
    for (int i = 0; i < 5; i++)
        buf_free(&r->read_params[i]);
}

int relay_new(uv_loop_t *loop, const struct relay_config *cfg, struct destinations *dests,
              struct relay **out)
{
    struct relay *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    relay_core_init(r, cfg);
    r->loop = loop;
    r->dests = dests;
    r->instance = strdup(cfg->instance ? cfg->instance : "ordersync");
    r->conninfo = cfg->conninfo ? strdup(cfg->conninfo) : NULL;
    /* set but empty: no alerts, as when unset */
    bool alerts = cfg->alert_destination != NULL && cfg->alert_destination[0] != '\0';
    r->alert_dest = alerts ? strdup(cfg->alert_destination) : NULL;
    if (r->instance == NULL || (cfg->conninfo != NULL && r->conninfo == NULL) ||
        (alerts && r->alert_dest == NULL))
        goto fail;
    r->cfg.instance = r->instance;
    r->cfg.conninfo = r->conninfo;
    r->cfg.alert_destination = r->alert_dest;
    char ua[64];
    snprintf(ua, sizeof(ua), "ordersync/%s", ORDERSYNC_VERSION);
    if (http_client_new(loop, ua, 1024, &r->http) < 0)
        goto fail;
    uv_timer_init(loop, &r->due_timer);
    uv_timer_init(loop, &r->sweep_timer);
    uv_timer_init(loop, &r->acquire_timer);
    uv_timer_init(loop, &r->rate_timer);
    uv_check_init(loop, &r->check);
    r->due_timer.data = r->sweep_timer.data = r->acquire_timer.data = r->rate_timer.data =
        r->check.data = r;
    r->open_handles = 5;
    uv_check_start(&r->check, relay_on_check);
    uv_unref((uv_handle_t *)&r->check);
    uv_timer_start(&r->sweep_timer, relay_on_sweep_timer, (uint64_t)r->cfg.sweep_interval_s * 1000,
                   (uint64_t)r->cfg.sweep_interval_s * 1000);
    /* renewed at a quarter of the lease: three renewals can fail before it runs out */
    uint64_t every = (uint64_t)r->cfg.lease_s * 1000 / 4;
    uv_timer_start(&r->acquire_timer, relay_on_acquire_timer, every, every);
    r->m_claims = metrics_counter("ordersync_relay_claims_total", "Claim statements run", "");
    r->m_reads = metrics_counter("ordersync_relay_reads_total", "Stream reads run", "");
    r->m_db_errors = metrics_counter("ordersync_db_errors_total", "Failed database operations",
                                     "component=\"relay\"");
    int rc = db_open(loop, r->conninfo, "relay", stmts, (int)(sizeof(stmts) / sizeof(stmts[0])),
                     &relay_cbs, r, &r->db);
    if (rc == 0)
        rc = db_open(loop, r->conninfo, "relay-read", read_stmts, 1, &read_cbs, r, &r->db_read);
    if (rc < 0) {
        relay_free(&r);
        return rc;
    }
    *out = r;
    return 0;
fail:
    http_client_free(&r->http);
    relay_core_free(r);
    free(r->instance);
    free(r->conninfo);
    free(r->alert_dest);
    free(r);
    return -ENOMEM;
}

void relay_wake(struct relay *r)
{
    if (!relay_running(r))
        return;
    struct list_node *n;
    list_foreach(n, &r->streams)
    {
        relay_dispatch(r, list_entry(n, struct stream, node));
    }
    relay_read(r);
}

void relay_reload(struct relay *r)
{
    /* settings are applied where they are read; stream ownership may change */
    struct list_node *n;
    list_foreach(n, &r->rdests)
    {
        struct relay_dest *rd = list_entry(n, struct relay_dest, node);
        metric_set(rd->m_held, rd->d->set.held);
    }
    relay_acquire(r);
}

void relay_streams_changed(struct relay *r, const char *from)
{
    if (strcmp(from, r->instance) != 0)
        relay_acquire(r);
}

void relay_rows_changed(struct relay *r)
{
    relay_claim(r);
}

bool relay_ready(const struct relay *r)
{
    return relay_running(r) && r->acquired && db_is_ready(r->db) && db_is_ready(r->db_read);
}

unsigned relay_busy(const struct relay *r)
{
    return r->jobs_in_http + r->n_results + (r->complete != RELAY_CONV_IDLE ? 1 : 0);
}

/* ---------------------------------------------------------------- stop */

static void stopped(struct relay *r)
{
    relay_set_state(r, RELAY_STOPPED);
    void (*done)(void *) = r->stop_done;
    r->stop_done = NULL;
    if (done != NULL)
        done(r->stop_data);
}

static void on_left(PGresult *res, const char *err, void *data)
{
    (void)res;
    struct relay *r = data;
    if (err != NULL)
        log_warn("could not hand the streams back; their leases run out instead",
                 json_pack("{s:s}", "detail", err));
    if (r->state == RELAY_LEAVING) /* else relay_free failed it: nobody waits */
        stopped(r);
}

void relay_check_stopped(struct relay *r)
{
    if (r->state != RELAY_STOPPING || r->stop_done == NULL)
        return;
    if (r->jobs_in_http > 0 || r->complete != RELAY_CONV_IDLE)
        return;
    if (db_is_ready(r->db) && relay_complete_pending(r)) {
        relay_complete_flush(r);
        if (r->complete != RELAY_CONV_IDLE)
            return;
    }
    /* everything written: the streams go back to the others now, not when the lease ends */
    const char *v[1] = {r->instance};
    if (db_is_ready(r->db) && db_query(r->db, true, "leave", 1, v, on_left, r) == 0) {
        relay_set_state(r, RELAY_LEAVING);
        return;
    }
    stopped(r);
}

void relay_stop(struct relay *r, void (*done)(void *data), void *data)
{
    if (r->state == RELAY_RUNNING)
        relay_set_state(r, RELAY_STOPPING);
    r->stop_done = done;
    r->stop_data = data;
    uv_timer_stop(&r->due_timer);
    uv_timer_stop(&r->sweep_timer);
    uv_timer_stop(&r->acquire_timer);
    uv_timer_stop(&r->rate_timer);
    relay_check_stopped(r);
}

void relay_abort(struct relay *r)
{
    if (r->state == RELAY_RUNNING)
        relay_set_state(r, RELAY_STOPPING);
    /* callbacks run now with `aborted`: leased rows become "released" results */
    http_client_free(&r->http);
    relay_check_stopped(r);
}

/* The memory embeds the handles: it goes with the last one closed. */
static void on_handle_closed(uv_handle_t *h)
{
    struct relay *r = h->data;
    if (--r->open_handles > 0)
        return;
    relay_core_free(r);
    free(r->instance);
    free(r->conninfo);
    free(r->alert_dest);
    free(r);
}

void relay_free(struct relay **pr)
{
    struct relay *r = *pr;
    if (r == NULL)
        return;
    *pr = NULL;
    relay_set_state(r, RELAY_CLOSING);
    r->stop_done = NULL;
    http_client_free(&r->http); /* aborts anything left; callbacks only record */
    db_close(&r->db);           /* fails queued statements: their callbacks see closing */
    db_close(&r->db_read);
    uv_close((uv_handle_t *)&r->due_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->sweep_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->acquire_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->rate_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->check, on_handle_closed);
}
