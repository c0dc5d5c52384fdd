/*
 * config: ordersync's settings table, read by lib/settings. Adding a setting
 * = one field in struct config and one row below; --help, the README table
 * (`ordersync settings --markdown`, kept true by tests/integration/test_docs.py)
 * and validation follow from the row.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define F(field) offsetof(struct config, field)

static const struct setting rows[] = {
    SETTING_ROW("DATABASE_URL", NULL, SETTING_STRING, NULL, 0, 0, F(database_url),
                "libpq connection string or URL; when unset, libpq's PG* variables apply"),
    SETTING_ROW(
        "ORDERSYNC_SESSION_DATABASE_URL", NULL, SETTING_STRING, NULL, 0, 0, F(session_database_url),
        "set it when DATABASE_URL goes through a pooler in transaction mode (pgbouncer"
        " pool_mode=transaction): a connection string to PostgreSQL itself (or a session-mode"
        " pool) for what needs a session of its own (LISTEN, maintenance, migrations); the"
        " connections on DATABASE_URL then prepare no statements (unset: DATABASE_URL for"
        " everything, and a transaction-mode pooler there is refused at start)"),
    SETTING_ROW("ORDERSYNC_LISTEN", NULL, SETTING_LISTEN, "0.0.0.0:8080", 0, 0, F(listen),
                "address:port of the HTTP server (port 0 picks a free one)"),
    SETTING_ROW("ORDERSYNC_ADMIN_LISTEN", NULL, SETTING_LISTEN, NULL, 0, 0, F(admin_listen),
                "address:port of the admin listener: /healthz, /readyz and /metrics outside "
                "ORDERSYNC_MAX_CONNECTIONS, and the operator console (unset: off)"),
    SETTING_ROW(
        "ORDERSYNC_ADMIN_TOKEN", NULL, SETTING_STRING, NULL, 0, 0, F(admin_token),
        "turns on the operator console at /console on the admin listener: its bearer token and"
        " login password, at least 16 characters (unset: the console is off)"),
    SETTING_ROW("ORDERSYNC_ADMIN_HOSTS", NULL, SETTING_STRING, NULL, 0, 0, F(admin_hosts),
                "comma-separated host names the admin listener answers besides localhost and IP"
                " addresses (Host header; others get 421: DNS rebinding)"),
    SETTING_ROW("ORDERSYNC_CONSOLE_SECURE", NULL, SETTING_BOOL, "0", 0, 1, F(console_secure),
                "console cookies are Secure and named __Host-... whatever the request says (set"
                " it when the console is reached over HTTPS)"),
    SETTING_ROW("ORDERSYNC_CONSOLE_IDLE_TIMEOUT_S", NULL, SETTING_INT, "1800", 1, 43200,
                F(console_idle_timeout_s),
                "a console session unused this long ends (besides its 12-hour limit)"),
    SETTING_ROW("ORDERSYNC_MIGRATE_ON_START", NULL, SETTING_BOOL, "0", 0, 1, F(migrate_on_start),
                "apply pending migrations at start instead of refusing to run"),
    SETTING_ROW("ORDERSYNC_MIGRATE_LOCK_TIMEOUT_MS", NULL, SETTING_INT, "500", 10, 600000,
                F(migrate_lock_timeout_ms),
                "a migration statement waits at most this long for a lock (instances running"
                " beside it queue behind it meanwhile); then the migration is rolled back and"
                " tried again"),
    SETTING_ROW("ORDERSYNC_MIGRATE_RETRIES", NULL, SETTING_INT, "60", 0, 100000, F(migrate_retries),
                "times a migration that waited too long for a lock is tried again (after 0.5 s,"
                " 1 s, ... 8 s)"),
    SETTING_ROW("ORDERSYNC_LOG_LEVEL", NULL, SETTING_STRING, "info", 0, 0, F(log_level),
                "debug, info, warn or error"),
    SETTING_ROW("ORDERSYNC_MAX_BODY", NULL, SETTING_INT, "1048576", 1024, 67108864, F(max_body),
                "largest accepted request body in bytes (413 above)"),
    SETTING_ROW("ORDERSYNC_MAX_HEADER", NULL, SETTING_INT, "16384", 1024, 1048576, F(max_header),
                "largest request line + headers in bytes (431 above)"),
    SETTING_ROW("ORDERSYNC_MAX_CONNECTIONS", NULL, SETTING_INT, "1024", 1, 100000,
                F(max_connections), "open client connections; more are answered 503 and closed"),
    SETTING_ROW(
        "ORDERSYNC_HEADER_TIMEOUT_MS", NULL, SETTING_INT, "10000", 10, 600000, F(header_timeout_ms),
        "time a client has to send complete request headers, and the longest pause inside a body "
        "(408 after)"),
    SETTING_ROW("ORDERSYNC_REQUEST_TIMEOUT_S", NULL, SETTING_INT, "30", 1, 3600,
                F(request_timeout_s),
                "a whole request, headers and body, must arrive within this (408 after)"),
    SETTING_ROW("ORDERSYNC_IDLE_TIMEOUT_MS", NULL, SETTING_INT, "60000", 10, 3600000,
                F(idle_timeout_ms), "idle keep-alive connections are closed after this"),
    SETTING_ROW("ORDERSYNC_BATCH_MAX", NULL, SETTING_INT, "256", 1, 10000, F(batch_max),
                "most webhooks committed in one transaction (group commit)"),
    SETTING_ROW(
        "ORDERSYNC_INGEST_QUEUE_MAX", NULL, SETTING_INT, "2048", 16, 1000000, F(ingest_queue_max),
        "webhooks waiting for their commit at most; more are answered 503 + Retry-After at once"),
    SETTING_ROW("ORDERSYNC_INGEST_CONNECTIONS", NULL, SETTING_INT, "2", 1, 16,
                F(ingest_connections), "database connections committing batches in parallel"),
    SETTING_ROW("ORDERSYNC_RETRY_AFTER_S", NULL, SETTING_INT, "5", 1, 3600, F(retry_after_s),
                "Retry-After sent with 503 when Postgres is unavailable"),
    SETTING_ROW("ORDERSYNC_RELOAD_INTERVAL_S", NULL, SETTING_INT, "30", 1, 86400,
                F(reload_interval_s),
                "sources/destinations are reloaded on change (NOTIFY) and at least this often"),
    SETTING_ROW("ORDERSYNC_SHUTDOWN_TIMEOUT_S", NULL, SETTING_INT, "10", 1, 600,
                F(shutdown_timeout_s),
                "on SIGTERM/SIGINT, time given to in-flight work before exiting"),
    SETTING_ROW("ORDERSYNC_DB_CONNECT_TIMEOUT_S", NULL, SETTING_INT, "5", 1, 600,
                F(db_connect_timeout_s),
                "start-up connections (migrate, schema check, replay) give up after this"),
    SETTING_ROW("ORDERSYNC_RELAY", NULL, SETTING_BOOL, "1", 0, 1, F(relay_enabled),
                "deliver events to destinations from this process (0: ingest only)"),
    SETTING_ROW(
        "ORDERSYNC_LEASE_S", NULL, SETTING_INT, "60", 5, 3600, F(lease_s),
        "a destination's stream, or a claimed delivery, passes to another instance this long after"
        " its process died"),
    SETTING_ROW("ORDERSYNC_CLAIM_BATCH", NULL, SETTING_INT, "256", 1, 10000, F(claim_batch),
                "most events read from a stream, or deliveries claimed, in one query"),
    SETTING_ROW("ORDERSYNC_SWEEP_INTERVAL_S", NULL, SETTING_INT, "30", 1, 3600, F(sweep_interval_s),
                "how often expired leases and due retries are looked for without a wake-up"),
    SETTING_ROW(
        "ORDERSYNC_ALERT_DESTINATION", NULL, SETTING_STRING, NULL, 0, 0, F(alert_destination),
        "id of a push destination that receives operational alerts (destination.disabled,"
        " .blocked, .breaker_opened, .recovered; README: Operational alerts) as signed events,"
        " retried like any (unset: no alerts)"),
    SETTING_ROW("ORDERSYNC_ALERT_INTERVAL_S", NULL, SETTING_INT, "300", 0, 604800,
                F(alert_interval_s),
                "at most one alert of each kind about each destination in this many seconds"),
    SETTING_ROW(
        "ORDERSYNC_RETENTION", NULL, SETTING_STRING, "30 days", 0, 0, F(retention),
        "events, webhooks received and delivery records are kept this long (a PostgreSQL interval),"
        " then dropped a partition at a time; nothing undelivered is dropped; dedupe keys are kept"
        " for their source's dedupe_window, whatever this is"),
    SETTING_ROW(
        "ORDERSYNC_PARTITION_INTERVAL", NULL, SETTING_STRING, "1 day", 0, 0, F(partition_interval),
        "time span of one partition of the event store (a PostgreSQL interval, at least 1 minute)"),
    SETTING_ROW("ORDERSYNC_INSTANCE", NULL, SETTING_STRING, NULL, 0, 0, F(instance),
                "name of this process in leases and logs; hostname:pid when unset"),
};

#define N_ROWS (sizeof(rows) / sizeof(rows[0]))

int config_load(struct config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    int rc = settings_load_env(rows, N_ROWS, cfg, err, errlen);
    if (rc < 0)
        goto fail;
    if (cfg->instance == NULL) {
        char host[256] = "ordersync";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        char name[300];
        snprintf(name, sizeof(name), "%s:%ld", host, (long)getpid());
        cfg->instance = strdup(name);
        if (cfg->instance == NULL) {
            snprintf(err, errlen, "out of memory");
            rc = -ENOMEM;
            goto fail;
        }
    }
    return 0;
fail:
    config_free(cfg);
    return rc;
}

void config_free(struct config *cfg)
{
    settings_free(rows, N_ROWS, cfg);
}

void config_print(FILE *out, bool markdown)
{
    if (markdown)
        settings_print_markdown(out, rows, N_ROWS);
    else
        settings_print_env(out, rows, N_ROWS);
}
