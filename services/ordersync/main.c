/*
 * ordersync: entry point. Sub-commands:
 *   ordersync [serve]   run the service (ingest, relay, feeds, pollers) on one libuv loop
 *   ordersync migrate   apply pending schema migrations and exit
 *   ordersync replay    make dead (or, with --all, delivered) outbox rows pending again
 *   ordersync settings  print the settings table (--markdown for the README)
 * Start-up (config, schema check, migrations) may block; after the loop
 * starts nothing does.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "config.h"
#include "conninfo.h"
#include "log.h"
#include "migrate.h"
#include "server.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: ordersync [serve | migrate | settings [--markdown] | --help | --version]\n"
                 "       ordersync replay [--destination ID] [--order ID] [--since TIME]\n"
                 "                        [--until TIME] [--all]\n"
                 "\n"
                 "Receives signed purchase webhooks, commits each order with its outbox rows in\n"
                 "PostgreSQL, and delivers the events as signed webhooks to downstream systems.\n"
                 "\n"
                 "settings (environment variables):\n");
    config_print(out, false);
}

/*
 * Blocking connection for start-up work; NULL with a logged reason on
 * failure. The same parameters as the service's own connections (conninfo.c:
 * keepalive defaults, so a migration against a dead peer fails instead of
 * hanging), with connect_timeout applied per host as libpq does in blocking
 * mode: a multi-host URL moves on to the next host.
 */
static PGconn *connect_blocking(const struct config *cfg)
{
    char timeout[32], err[256];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)cfg->db_connect_timeout_s);
    struct conninfo *ci = NULL;
    const char *const *keys, *const *vals;
    PGconn *conn = NULL;
    int rc = conninfo_new(cfg->database_url, err, sizeof(err), &ci);
    if (rc == 0)
        rc = conninfo_set(ci, "connect_timeout", timeout);
    if (rc == 0)
        rc = conninfo_set(ci, "application_name", "ordersync-startup");
    if (rc == 0)
        rc = conninfo_params(ci, 0, &keys, &vals);
    if (rc < 0) {
        log_error("invalid database connection string",
                  json_pack("{s:s,s:s}", "detail", rc == -ENOMEM ? "out of memory" : err, "hint",
                            "check DATABASE_URL (a libpq URL or key=value string)"));
        conninfo_free(&ci);
        return NULL;
    }
    /* expand_dbname=0: conninfo_new() already parsed the string */
    conn = PQconnectdbParams(keys, vals, 0);
    conninfo_free(&ci);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        const char *why = conn ? PQerrorMessage(conn) : "out of memory";
        char detail[512];
        snprintf(detail, sizeof(detail), "%s", why);
        size_t n = strlen(detail);
        while (n > 0 && (detail[n - 1] == '\n' || detail[n - 1] == ' '))
            detail[--n] = '\0';
        log_error("could not connect to the database",
                  json_pack("{s:s,s:s}", "detail", detail, "hint",
                            "set DATABASE_URL (or PG* variables) to a reachable PostgreSQL"));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/*
 * ordersync replay [--destination ID] [--order ID] [--since TIME] [--until TIME] [--all]
 * Makes dead rows (with --all: delivered ones too) pending again with their
 * webhook-id unchanged; the same as SELECT outbox_replay(...) in psql.
 */
static int cmd_replay(const struct config *cfg, int argc, char **argv)
{
    const char *dest = NULL, *order = NULL, *since = NULL, *until = NULL;
    const char *dead_only = "true";
    for (int i = 2; i < argc; i++) {
        const char **slot = NULL;
        if (strcmp(argv[i], "--destination") == 0)
            slot = &dest;
        else if (strcmp(argv[i], "--order") == 0)
            slot = &order;
        else if (strcmp(argv[i], "--since") == 0)
            slot = &since;
        else if (strcmp(argv[i], "--until") == 0)
            slot = &until;
        else if (strcmp(argv[i], "--all") == 0) {
            dead_only = "false";
            continue;
        } else {
            fprintf(stderr, "replay: unknown option %s\n", argv[i]);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "replay: %s needs a value\n", argv[i]);
            return 2;
        }
        *slot = argv[++i];
    }
    PGconn *conn = connect_blocking(cfg);
    if (conn == NULL)
        return 1;
    const char *params[5] = {dest, order, since, until, dead_only};
    PGresult *res = PQexecParams(conn,
                                 "SELECT outbox_replay($1, $2::bigint, $3::timestamptz,"
                                 " $4::timestamptz, $5::boolean)",
                                 5, NULL, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("replay failed", json_pack("{s:s}", "detail", PQresultErrorMessage(res)));
        rc = 1;
    } else {
        printf("%s row(s) scheduled for redelivery\n", PQgetvalue(res, 0, 0));
        PQclear(PQexec(conn, "NOTIFY ordersync_outbox"));
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

static int cmd_migrate(const struct config *cfg)
{
    PGconn *conn = connect_blocking(cfg);
    if (conn == NULL)
        return 1;
    char detail[512];
    int n = migrate_apply(conn, detail, sizeof(detail));
    PQfinish(conn);
    if (n < 0) {
        log_error("migration failed", json_pack("{s:s}", "detail", detail));
        return 1;
    }
    log_info("schema is current", json_pack("{s:s}", "detail", detail));
    return 0;
}

/* Refuses to serve on a schema this binary was not built for. */
static int check_schema(const struct config *cfg)
{
    PGconn *conn = connect_blocking(cfg);
    if (conn == NULL)
        return -1;
    char detail[512];
    int rc = 0;
    if (cfg->migrate_on_start) {
        if (migrate_apply(conn, detail, sizeof(detail)) < 0) {
            log_error("migration failed", json_pack("{s:s}", "detail", detail));
            rc = -1;
        }
    } else {
        enum schema_status st = migrate_check(conn, detail, sizeof(detail));
        if (st != SCHEMA_CURRENT) {
            log_error("database schema is not current",
                      json_pack("{s:s,s:s}", "detail", detail, "hint",
                                "run `ordersync migrate` or set ORDERSYNC_MIGRATE_ON_START=1"));
            rc = -1;
        }
    }
    PQfinish(conn);
    return rc;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("ordersync %s\n", ORDERSYNC_VERSION);
        return 0;
    }
    if (strcmp(cmd, "settings") == 0) {
        config_print(stdout, argc > 2 && strcmp(argv[2], "--markdown") == 0);
        return 0;
    }

    setvbuf(stderr, NULL, _IONBF, 0);
    log_set_service("ordersync");
    struct config cfg;
    char err[256];
    if (config_load(&cfg, err, sizeof(err)) < 0) {
        log_error("invalid configuration", json_pack("{s:s}", "detail", err));
        return 2;
    }
    enum log_level level;
    if (log_parse_level(cfg.log_level, &level) == 0)
        log_set_level(level);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("could not initialize libcurl", NULL);
        config_free(&cfg);
        return 1;
    }
    int rc;
    if (strcmp(cmd, "migrate") == 0) {
        rc = cmd_migrate(&cfg);
    } else if (strcmp(cmd, "replay") == 0) {
        rc = cmd_replay(&cfg, argc, argv);
    } else if (strcmp(cmd, "serve") == 0) {
        rc = check_schema(&cfg) < 0 ? 1 : server_run(&cfg);
    } else {
        usage(stderr);
        rc = 2;
    }
    config_free(&cfg);
    curl_global_cleanup();
    return rc;
}
