/*
 * ordersync: entry point. Sub-commands:
 *   ordersync [serve]   run the service (ingest, relay, feeds, pollers) on one libuv loop
 *   ordersync migrate   apply pending schema migrations and exit
 *   ordersync settings  print the settings table (--markdown for the README)
 * Start-up (config, schema check, migrations) may block; after the loop
 * starts nothing does.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "config.h"
#include "log.h"
#include "migrate.h"
#include "server.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: ordersync [serve | migrate | settings [--markdown] | --help | --version]\n"
                 "\n"
                 "Receives signed purchase webhooks, commits each order with its outbox rows in\n"
                 "PostgreSQL, and delivers the events as signed webhooks to downstream systems.\n"
                 "\n"
                 "settings (environment variables):\n");
    config_print(out, false);
}

/* Blocking connection for start-up work; NULL with a logged reason on failure. */
static PGconn *connect_blocking(const struct config *cfg)
{
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)cfg->db_connect_timeout_s);
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {cfg->database_url ? cfg->database_url : "", timeout,
                          "ordersync-startup", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
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

    int rc;
    if (strcmp(cmd, "migrate") == 0) {
        rc = cmd_migrate(&cfg);
    } else if (strcmp(cmd, "serve") == 0) {
        rc = check_schema(&cfg) < 0 ? 1 : server_run(&cfg);
    } else {
        usage(stderr);
        rc = 2;
    }
    config_free(&cfg);
    return rc;
}
