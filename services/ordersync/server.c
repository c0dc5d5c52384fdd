/*
 * server: wiring. Database connections: `ingest1..N` carry only group
 * commits (so a slow reload never delays an ack; N batches commit in
 * parallel), `aux` carries LISTEN, reloads, the schema check and the pollers'
 * statements, `maintain` partitions and pruning, `relay` and `feed` their
 * own work. `aux` and `maintain` keep session state and go to
 * ORDERSYNC_SESSION_DATABASE_URL when it is set (DATABASE_URL then goes
 * through a transaction-mode pooler, and nothing is prepared on it).
 *
 * Shutdown: stop accepting; let what is queued or in flight commit and be
 * answered; then close everything. A timer bounds the wait.
 */
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "api.h"
#include "app.h"
#include "log.h"
#include "maintain.h"
#include "metrics.h"
#include "migrate.h"
#include "poller.h"
#include "relay.h"

/*
 * Connections the admin listener takes at once: probes and a Prometheus
 * scraper need a handful. The cap keeps a runaway client of the admin port
 * from using the file descriptors the public port needs.
 */
#define ADMIN_MAX_CONNECTIONS 64

static const struct db_stmt ingest_stmts[] = {
    {"ingest_batch",
     "SELECT idx, outcome, order_id, emitted FROM ingest_batch($1::jsonb, $2::text[])"},
};

struct server {
    struct app app;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t reload_timer, stop_timer, backlog_timer;
    struct relay *relay;
    struct poller *poller;
    struct maintain *maintain;
    bool sources_in_flight, dests_in_flight, backlog_in_flight, relay_stopped;
    /* a change notified while a reload was out: its snapshot may predate the
     * change, so reload once more when it is back */
    bool sources_again, dests_again;
    uint64_t stop_started_ms;
    int exit_code;
};

static void reload_table(struct server *s, bool dests);

static void on_sources(PGresult *res, const char *err, void *data)
{
    struct server *s = data;
    s->sources_in_flight = false;
    if (err != NULL || res == NULL) {
        log_warn("could not reload sources", json_pack("{s:s}", "detail", err ? err : "?"));
    } else {
        int rc = store_load(s->app.store, res);
        if (rc < 0)
            log_error("could not load sources", json_pack("{s:i}", "errno", -rc));
        else
            log_debug("sources loaded",
                      json_pack("{s:i}", "count", (int)store_source_count(s->app.store)));
    }
    if (s->sources_again)
        reload_table(s, false);
}

static void on_dests(PGresult *res, const char *err, void *data)
{
    struct server *s = data;
    s->dests_in_flight = false;
    if (err != NULL || res == NULL)
        log_warn("could not reload destinations", json_pack("{s:s}", "detail", err ? err : "?"));
    else if (destinations_load(s->app.dests, res) == 0 && s->relay != NULL)
        relay_reload(s->relay);
    if (s->dests_again)
        reload_table(s, true);
}

/* The sources, or the destinations, again. Asked while its reload is out,
 * it reloads once more when that one is back: the query out may have read
 * the table before the change that asked. */
static void reload_table(struct server *s, bool dests)
{
    bool *in_flight = dests ? &s->dests_in_flight : &s->sources_in_flight;
    bool *again = dests ? &s->dests_again : &s->sources_again;
    if (*in_flight) {
        *again = true;
        return;
    }
    *again = false;
    if (s->app.db_aux == NULL || !db_is_ready(s->app.db_aux))
        return; /* aux_ready reloads both */
    if (db_query(s->app.db_aux, false, dests ? destinations_sql : store_sources_sql, 0, NULL,
                 dests ? on_dests : on_sources, s) == 0)
        *in_flight = true;
}

/* Sources and destinations: the copies ingest, relay and feeds work from. */
static void reload_sources(struct server *s)
{
    reload_table(s, false);
    reload_table(s, true);
}

static void on_schema(PGresult *res, const char *err, void *data)
{
    struct server *s = data;
    if (err != NULL || res == NULL) {
        s->app.schema_current = false;
        return;
    }
    static const char *const cols[] = {"version"};
    int col;
    if (PQntuples(res) != 1 || db_columns(res, "schema_version", cols, &col, 1) < 0) {
        s->app.schema_current = false;
        return;
    }
    int latest = atoi(PQgetvalue(res, 0, col));
    /* a newer release's schema is current enough: a rolling upgrade (migrate.h) */
    s->app.schema_current = migrate_compatible(latest);
    if (!s->app.schema_current)
        log_error("database schema is not the one this ordersync expects",
                  json_pack("{s:i,s:i}", "database_version", latest, "expected",
                            migrate_latest_version()));
}

static void on_listen(PGresult *res, const char *err, void *data)
{
    if (err != NULL)
        log_warn("LISTEN failed", json_pack("{s:s}", "detail", err));
}

static void aux_ready(struct db *db, void *data)
{
    struct server *s = data;
    /* order matters only for readability: each runs in turn on the one connection */
    if (db_query(db, false, "LISTEN ordersync_config", 0, NULL, on_listen, s) < 0 ||
        db_query(db, false, "LISTEN ordersync_events", 0, NULL, on_listen, s) < 0 ||
        db_query(db, false, "LISTEN ordersync_deliveries", 0, NULL, on_listen, s) < 0 ||
        db_query(db, false, "LISTEN " RELAY_STREAMS_CHANNEL, 0, NULL, on_listen, s) < 0 ||
        db_query(db, false, "SELECT coalesce(max(version), 0) AS version FROM schema_migrations", 0,
                 NULL, on_schema, s) < 0)
        return;
    s->sources_in_flight = s->dests_in_flight = false;
    s->sources_again = s->dests_again = false;
    s->backlog_in_flight = false;
    reload_sources(s);
    /* a NOTIFY may have been missed while we were away */
    if (s->relay != NULL)
        relay_wake(s->relay);
    feed_wake(s->app.feed);
    poller_reload(s->poller);
}

static void aux_notify(struct db *db, const char *channel, const char *payload, void *data)
{
    struct server *s = data;
    if (strcmp(channel, "ordersync_config") == 0) {
        log_info("configuration changed", json_pack("{s:s}", "table", payload));
        reload_sources(s);
        poller_reload(s->poller);
    } else if (strcmp(channel, "ordersync_deliveries") == 0) {
        /* an operator replayed or skipped: rows may be due */
        if (s->relay != NULL)
            relay_rows_changed(s->relay);
    } else if (strcmp(channel, RELAY_STREAMS_CHANNEL) == 0) {
        if (s->relay != NULL)
            relay_streams_changed(s->relay, payload);
    } else if (strcmp(channel, "ordersync_events") == 0) {
        /* another instance committed events */
        if (s->relay != NULL)
            relay_wake(s->relay);
        feed_wake(s->app.feed);
    }
}

static const struct db_callbacks aux_cbs = {.on_ready = aux_ready, .on_notify = aux_notify};
static const struct db_callbacks ingest_cbs = {0};

static void on_reload_timer(uv_timer_t *t)
{
    struct server *s = t->data;
    reload_sources(s);
    poller_reload(s->poller);
}

static void on_committed(void *data)
{
    struct server *s = data;
    if (s->relay != NULL)
        relay_wake(s->relay);
    feed_wake(s->app.feed);
}

/*
 * Backlog gauges for /metrics, per destination: events after its stream's
 * cursor (positions, so gaps and events of types it does not take count
 * too: an upper bound that costs one index probe) and its open rows by
 * state (the small `deliveries` table). Not the sync_backlog view: that one
 * counts exactly, per type taken (from event_counts' checkpoints, a few
 * milliseconds), more than a gauge read every 15 s needs.
 */
static void on_backlog(PGresult *res, const char *err, void *data)
{
    struct server *s = data;
    s->backlog_in_flight = false;
    if (err != NULL || res == NULL)
        return;
    /* the last four are the states of `deliveries`, and the label values too */
    enum { C_DEST, C_LAG, C_STATES, N_STATES = 4 };
    static const char *const cols[C_STATES + N_STATES] = {
        "destination_id", "lag_positions", "pending", "delivering", "blocked", "dead"};
    int c[C_STATES + N_STATES];
    if (db_columns(res, "backlog", cols, c, C_STATES + N_STATES) < 0)
        return;
    for (int r = 0; r < PQntuples(res); r++) {
        char dest[128], labels[192];
        metrics_escape(dest, sizeof(dest), PQgetvalue(res, r, c[C_DEST]));
        snprintf(labels, sizeof(labels), "destination=\"%s\"", dest);
        metric_set(metrics_gauge("ordersync_stream_lag_positions",
                                 "Positions between a destination's cursor and the last event",
                                 labels),
                   atof(PQgetvalue(res, r, c[C_LAG])));
        for (int i = C_STATES; i < C_STATES + N_STATES; i++) {
            snprintf(labels, sizeof(labels), "destination=\"%s\",state=\"%s\"", dest, cols[i]);
            metric_set(metrics_gauge("ordersync_deliveries_open",
                                     "Events not delivered at the first attempt, by state", labels),
                       atof(PQgetvalue(res, r, c[i])));
        }
    }
}

static void on_backlog_timer(uv_timer_t *t)
{
    struct server *s = t->data;
    if (s->backlog_in_flight || !db_is_ready(s->app.db_aux))
        return;
    if (db_query(s->app.db_aux, false,
                 "SELECT st.destination_id,"
                 " greatest((SELECT coalesce(max(position), 0) FROM events) - st.position, 0)"
                 "   AS lag_positions,"
                 " count(x.*) FILTER (WHERE x.state = 'pending') AS pending,"
                 " count(x.*) FILTER (WHERE x.state = 'delivering') AS delivering,"
                 " count(x.*) FILTER (WHERE x.state = 'blocked') AS blocked,"
                 " count(x.*) FILTER (WHERE x.state = 'dead') AS dead"
                 " FROM delivery_streams st"
                 " LEFT JOIN deliveries x ON x.destination_id = st.destination_id"
                 " GROUP BY st.destination_id, st.position",
                 0, NULL, on_backlog, s) == 0)
        s->backlog_in_flight = true;
}

static void close_all(struct server *s)
{
    uv_timer_stop(&s->stop_timer);
    uv_close((uv_handle_t *)&s->stop_timer, NULL);
    uv_close((uv_handle_t *)&s->reload_timer, NULL);
    uv_close((uv_handle_t *)&s->backlog_timer, NULL);
    relay_free(&s->relay);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    for (unsigned i = 0; i < s->app.n_ingest; i++)
        db_close(&s->app.db_ingest[i]);
    db_close(&s->app.db_aux); /* before the poller: its statements call back into it */
    poller_free(&s->poller);
    maintain_free(&s->maintain);
    ingest_free(&s->app.ingest);
    feed_free(&s->app.feed);
    /* before the servers: its queries in flight answer their requests (503) */
    http_client_free(&s->app.test_http);
    console_free(&s->app.console);
    http_server_close(&s->app.http, NULL, NULL);
    http_server_close(&s->app.admin_http, NULL, NULL);
}

/* Polls until nothing is queued or in flight, or the deadline passed. */
static void on_stop_tick(uv_timer_t *t)
{
    struct server *s = t->data;
    uint64_t waited_ms = uv_now(&s->loop) - s->stop_started_ms;
    bool idle = ingest_pending(s->app.ingest) == 0 && http_server_pending(s->app.http) == 0 &&
                (s->app.admin_http == NULL || http_server_pending(s->app.admin_http) == 0) &&
                s->relay_stopped;
    if (!idle && waited_ms < (uint64_t)s->app.cfg->shutdown_timeout_s * 1000)
        return;
    if (!idle) {
        log_warn("shutdown timeout: abandoning work in flight",
                 json_pack("{s:i,s:i}", "ingest_pending", (int)ingest_pending(s->app.ingest),
                           "deliveries", s->relay ? (int)relay_busy(s->relay) : 0));
        if (s->relay != NULL && !s->relay_stopped) {
            /* aborted deliveries are released (best effort); leases cover the rest */
            relay_abort(s->relay);
            if (!s->relay_stopped)
                return; /* the release statement is on its way; next tick closes */
        }
    }
    close_all(s);
}

static void on_relay_stopped(void *data)
{
    struct server *s = data;
    s->relay_stopped = true;
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *s = h->data;
    if (s->app.stopping) {
        log_warn("second signal: exiting now", NULL);
        s->exit_code = 1;
        uv_stop(&s->loop);
        return;
    }
    log_info("shutting down", json_pack("{s:s}", "signal", strsignal(signum)));
    s->app.stopping = true;
    /* the admin listener stays: probes see /readyz turn 503 while in-flight work drains */
    http_server_stop_accepting(s->app.http);
    /* long-polling readers are answered now, or they would hold the exit for up to 60 s */
    feed_free(&s->app.feed);
    if (s->relay != NULL)
        relay_stop(s->relay, on_relay_stopped, s);
    else
        s->relay_stopped = true;
    s->stop_started_ms = uv_now(&s->loop);
    uv_timer_start(&s->stop_timer, on_stop_tick, 0, 20);
}

/*
 * Every connection is a file descriptor, and a soft limit of 1024 (a common
 * default) is reached long before ORDERSYNC_MAX_CONNECTIONS: accept() then
 * fails with EMFILE, and libuv closes what it cannot accept without a word,
 * health checks included. The hard limit is what the administrator allows;
 * take all of it so that the connection cap, not the fd limit, decides.
 */
static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn("could not read the open file limit",
                 json_pack("{s:s}", "detail", strerror(errno)));
        return;
    }
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("could not raise the open file limit",
                     json_pack("{s:I,s:I,s:s}", "soft", (json_int_t)was, "hard",
                               (json_int_t)rl.rlim_max, "detail", strerror(errno)));
            rl.rlim_cur = was;
        }
    }
    log_info("open file limit", json_pack("{s:I,s:I,s:I}", "soft", (json_int_t)rl.rlim_cur, "hard",
                                          (json_int_t)rl.rlim_max, "was", (json_int_t)was));
    /* past the cap, as many connections again are answered 503 before new ones are dropped */
    rlim_t need = 2 * (rlim_t)cfg->max_connections + ADMIN_MAX_CONNECTIONS + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        log_warn("the open file limit is below what ORDERSYNC_MAX_CONNECTIONS needs",
                 json_pack("{s:I,s:I,s:s}", "limit", (json_int_t)rl.rlim_cur, "needed",
                           (json_int_t)need, "hint",
                           "raise the hard limit (ulimit -Hn, LimitNOFILE=)"));
}

/*
 * The console, when ORDERSYNC_ADMIN_TOKEN is set: its keys and its own
 * database connection. 0, or a negative errno (logged).
 */
static int start_console(struct app *app, const struct config *cfg)
{
    if (cfg->admin_token == NULL)
        return 0;
    if (console_auth_init(&app->console_auth, cfg->admin_token) < 0) {
        log_error("ORDERSYNC_ADMIN_TOKEN is too short",
                  json_pack("{s:i}", "minimum_length", CONSOLE_AUTH_MIN_TOKEN));
        return -EINVAL;
    }
    /* long enough to be accepted, but a person may have typed it: say so, once */
    const char *weak = console_auth_token_weak(cfg->admin_token);
    if (weak != NULL)
        log_warn("ORDERSYNC_ADMIN_TOKEN looks weak",
                 json_pack("{s:s,s:s}", "detail", weak, "hint",
                           "use 32 random characters, e.g. head -c 24 /dev/urandom | base64"));
    if (cfg->admin_listen.host == NULL) {
        /* never on the public port: without an admin listener there is no console */
        log_warn("ORDERSYNC_ADMIN_TOKEN is set but ORDERSYNC_ADMIN_LISTEN is not: the console "
                 "is served only on the admin listener, so it is off",
                 NULL);
        return 0;
    }
    app->console_throttle = console_throttle_new();
    if (app->console_throttle == NULL)
        return -ENOMEM;
    int rc = console_new(app->loop, cfg->database_url, &app->console);
    if (rc < 0) {
        log_error("could not start the console", json_pack("{s:s}", "detail", uv_strerror(rc)));
        return rc;
    }
    app->console_enabled = true;
    return 0;
}

/* The admin listener, when ORDERSYNC_ADMIN_LISTEN is set: 0 or a libuv error (logged). */
static int start_admin(struct app *app, const struct config *cfg)
{
    if (cfg->admin_listen.host == NULL)
        return 0;
    char err[160];
    if (admin_hosts_init(&app->admin_hosts, cfg->admin_listen.host, cfg->admin_hosts, err,
                         sizeof(err)) < 0) {
        log_error("invalid configuration", json_pack("{s:s}", "detail", err));
        return -EINVAL;
    }
    struct http_server_config acfg = {
        .host = cfg->admin_listen.host,
        .port = cfg->admin_listen.port,
        .max_header = (size_t)cfg->max_header,
        .max_body = (size_t)cfg->max_body,
        .max_conns = ADMIN_MAX_CONNECTIONS,
        .header_timeout_ms = (uint64_t)cfg->header_timeout_ms,
        .request_timeout_ms = (uint64_t)cfg->request_timeout_s * 1000,
        .idle_timeout_ms = (uint64_t)cfg->idle_timeout_ms,
    };
    int rc = http_server_start(app->loop, &acfg, api_admin_handle, app, &app->admin_http);
    if (rc < 0) {
        log_error("could not listen", json_pack("{s:s,s:s,s:i,s:s}", "listener", "admin", "host",
                                                cfg->admin_listen.host, "port",
                                                cfg->admin_listen.port, "detail", uv_strerror(rc)));
        return rc;
    }
    /* not "listening": that line names the public port, which tools wait for */
    log_info("admin listening",
             json_pack("{s:s,s:i,s:i,s:b}", "host", cfg->admin_listen.host, "port",
                       http_server_port(app->admin_http), "max_connections", ADMIN_MAX_CONNECTIONS,
                       "console", app->console_enabled));
    return 0;
}

int server_run(const struct config *cfg)
{
    struct server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return 1;
    struct app *app = &s->app;
    int rc = uv_loop_init(&s->loop);
    if (rc < 0) {
        free(s);
        return 1;
    }
    app->loop = &s->loop;
    app->relay = &s->relay; /* for /readyz */
    app->cfg = cfg;
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(cfg);

    /* DATABASE_URL goes through a transaction-mode pooler: main.c checked the rest */
    const char *session_url = cfg->session_database_url;
    if (session_url != NULL)
        db_use_unnamed_statements(true);
    else
        session_url = cfg->database_url;

    app->store = store_new();
    app->dests = destinations_new();
    if (app->store == NULL || app->dests == NULL)
        goto fail;
    for (unsigned i = 0; i < (unsigned)cfg->ingest_connections; i++) {
        char name[24];
        snprintf(name, sizeof(name), "ingest%u", i + 1);
        rc = db_open(app->loop, cfg->database_url, name, ingest_stmts,
                     (int)(sizeof(ingest_stmts) / sizeof(ingest_stmts[0])), &ingest_cbs, s,
                     &app->db_ingest[i]);
        if (rc < 0)
            goto fail;
        app->n_ingest++;
    }
    /* LISTEN needs a session of its own (pooler.h) */
    rc = db_open(app->loop, session_url, "aux", NULL, 0, &aux_cbs, s, &app->db_aux);
    if (rc < 0)
        goto fail;
    struct ingest_config icfg = {.batch_max = (unsigned)cfg->batch_max,
                                 .max_pending = (unsigned)cfg->ingest_queue_max,
                                 .retry_after_s = (unsigned)cfg->retry_after_s,
                                 .on_committed = on_committed,
                                 .data = s};
    rc = ingest_new(app->loop, app->db_ingest, app->n_ingest, &icfg, &app->ingest);
    if (rc < 0)
        goto fail;
    rc = feed_new(app->loop, cfg->database_url, app->dests, &app->feed);
    if (rc < 0)
        goto fail;

    struct http_server_config hcfg = {
        .host = cfg->listen.host,
        .port = cfg->listen.port,
        .max_header = (size_t)cfg->max_header,
        .max_body = (size_t)cfg->max_body,
        .max_conns = (unsigned)cfg->max_connections,
        .header_timeout_ms = (uint64_t)cfg->header_timeout_ms,
        .request_timeout_ms = (uint64_t)cfg->request_timeout_s * 1000,
        .idle_timeout_ms = (uint64_t)cfg->idle_timeout_ms,
    };
    http_server_config_defaults(&hcfg);
    rc = http_server_start(app->loop, &hcfg, api_handle, app, &app->http);
    if (rc < 0) {
        log_error("could not listen", json_pack("{s:s,s:i,s:s}", "host", cfg->listen.host, "port",
                                                cfg->listen.port, "detail", uv_strerror(rc)));
        goto fail;
    }
    rc = start_console(app, cfg);
    if (rc < 0)
        goto fail;
    rc = start_admin(app, cfg);
    if (rc < 0)
        goto fail;
    log_info("listening", json_pack("{s:s,s:i,s:s}", "host", cfg->listen.host, "port",
                                    http_server_port(app->http), "version", ORDERSYNC_VERSION));

    uv_timer_init(app->loop, &s->reload_timer);
    s->reload_timer.data = s;
    uv_timer_start(&s->reload_timer, on_reload_timer, (uint64_t)cfg->reload_interval_s * 1000,
                   (uint64_t)cfg->reload_interval_s * 1000);
    if (cfg->relay_enabled) {
        struct relay_config rcfg = {.conninfo = cfg->database_url,
                                    .instance = cfg->instance,
                                    .lease_s = (unsigned)cfg->lease_s,
                                    .claim_batch = (unsigned)cfg->claim_batch,
                                    .sweep_interval_s = (unsigned)cfg->sweep_interval_s,
                                    .alert_destination = cfg->alert_destination,
                                    .alert_interval_s = (unsigned)cfg->alert_interval_s};
        rc = relay_new(app->loop, &rcfg, app->dests, &s->relay);
        if (rc < 0) {
            log_error("could not start the relay", json_pack("{s:s}", "detail", uv_strerror(rc)));
            goto fail;
        }
    }
    rc = poller_new(app->loop, app->db_aux, cfg->instance, &s->poller);
    if (rc < 0)
        goto fail;
    rc = maintain_new(app->loop, session_url, cfg->maintain_every_ms, &s->maintain);
    if (rc < 0)
        goto fail;
    uv_timer_init(app->loop, &s->backlog_timer);
    s->backlog_timer.data = s;
    /* counting a large backlog takes a while: every 15 s is plenty for a gauge */
    uv_timer_start(&s->backlog_timer, on_backlog_timer, 1000, 15000);
    uv_timer_init(app->loop, &s->stop_timer);
    s->stop_timer.data = s;
    uv_signal_init(app->loop, &s->sigterm);
    uv_signal_init(app->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);

    uv_run(app->loop, UV_RUN_DEFAULT);
    /* after uv_stop (second signal) handles may still be open: close and drain them */
    if (app->http != NULL || app->db_aux != NULL) {
        if (!uv_is_closing((uv_handle_t *)&s->stop_timer))
            close_all(s);
        uv_run(app->loop, UV_RUN_DEFAULT);
    }
    int code = s->exit_code;
    store_free(&app->store);
    destinations_free(&app->dests);
    console_throttle_free(&app->console_throttle);
    uv_loop_close(app->loop);
    metrics_reset();
    free(s);
    log_info("stopped", json_pack("{s:i}", "exit_code", code));
    return code;

fail:
    db_close(&app->db_aux);
    poller_free(&s->poller);
    relay_free(&s->relay);
    http_server_close(&app->http, NULL, NULL);
    http_server_close(&app->admin_http, NULL, NULL);
    feed_free(&app->feed);
    http_client_free(&app->test_http);
    console_free(&app->console);
    for (unsigned i = 0; i < app->n_ingest; i++)
        db_close(&app->db_ingest[i]);
    db_close(&app->db_aux);
    ingest_free(&app->ingest);
    maintain_free(&s->maintain);
    uv_run(app->loop, UV_RUN_DEFAULT);
    store_free(&app->store);
    destinations_free(&app->dests);
    console_throttle_free(&app->console_throttle);
    uv_loop_close(app->loop);
    metrics_reset();
    free(s);
    return 1;
}
