/*
 * ordersync: entry point. Sub-commands:
 *   ordersync [serve]   run the service (ingest, relay, feeds, pollers) on one libuv loop
 *   ordersync migrate   apply pending schema migrations and exit
 *   ordersync replay    deliver dead (or, with --all, delivered) events again
 *   ordersync skip      give up on dead events so that the ones after them go on
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
#include "maintain.h"
#include "migrate.h"
#include "pooler.h"
#include "server.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: ordersync [serve | settings [--markdown] | --help | --version]\n"
                 "       ordersync migrate [--to VERSION]\n"
                 "       ordersync replay [--destination ID] [--order ID] [--since TIME]\n"
                 "                        [--until TIME] [--all]\n"
                 "       ordersync skip [--destination ID] [--order ID] [--since TIME]\n"
                 "                      [--until TIME] [--blocked] [--pending]\n"
                 "\n"
                 "Receives signed purchase webhooks, commits each order with its events in\n"
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
static PGconn *connect_to(const struct config *cfg, const char *url)
{
    char timeout[32], err[256];
    snprintf(timeout, sizeof(timeout), "%lld", (long long)cfg->db_connect_timeout_s);
    struct conninfo *ci = NULL;
    const char *const *keys, *const *vals;
    PGconn *conn = NULL;
    int rc = conninfo_new(url, err, sizeof(err), &ci);
    if (rc == 0)
        rc = conninfo_set(ci, "connect_timeout", timeout);
    if (rc == 0)
        rc = conninfo_set(ci, "application_name", "ordersync-startup");
    if (rc == 0)
        rc = conninfo_params(ci, 0, &keys, &vals);
    if (rc < 0) {
        log_error("invalid database connection string",
                  json_pack("{s:s,s:s}", "detail", rc == -ENOMEM ? "out of memory" : err, "hint",
                            url == cfg->database_url
                                ? "check DATABASE_URL (a libpq URL or key=value string)"
                                : "check ORDERSYNC_SESSION_DATABASE_URL (a libpq URL or"
                                  " key=value string)"));
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

/* A connection on DATABASE_URL (replay, skip: one statement each, fine through any pooler). */
static PGconn *connect_blocking(const struct config *cfg)
{
    return connect_to(cfg, cfg->database_url);
}

/*
 * A connection with a session of its own, for migrations (a session advisory
 * lock, SET lock_timeout): ORDERSYNC_SESSION_DATABASE_URL when DATABASE_URL
 * goes through a transaction-mode pooler.
 */
static PGconn *connect_session(const struct config *cfg)
{
    return connect_to(cfg, cfg->session_database_url != NULL ? cfg->session_database_url
                                                             : cfg->database_url);
}

/*
 * Refuses a transaction-mode pooler on DATABASE_URL unless
 * ORDERSYNC_SESSION_DATABASE_URL is set (pooler.h). `conn` is borrowed.
 */
static int check_pooler(const struct config *cfg, PGconn *conn)
{
    if (cfg->session_database_url != NULL)
        return 0;
    PGconn *other = connect_blocking(cfg);
    if (other == NULL)
        return -1;
    bool per_transaction;
    char detail[256];
    int rc = pooler_detect(conn, other, &per_transaction, detail, sizeof(detail));
    PQfinish(other);
    if (rc < 0) {
        log_error("could not tell whether DATABASE_URL goes through a connection pooler",
                  json_pack("{s:s}", "detail", detail));
        return -1;
    }
    if (per_transaction) {
        log_error("DATABASE_URL goes through a connection pooler in transaction mode",
                  json_pack("{s:s,s:s}", "detail", detail, "hint",
                            "ordersync keeps session state (LISTEN, prepared statements,"
                            " advisory locks): set ORDERSYNC_SESSION_DATABASE_URL to a"
                            " connection string that reaches PostgreSQL itself (or a"
                            " session-mode pool), or use pool_mode = session"));
        return -1;
    }
    return 0;
}

/*
 * ordersync replay|skip [--destination ID] [--order ID] [--since TIME] [--until TIME]
 *                       [--all (replay) | --blocked --pending (skip)]
 * replay: dead events (with --all: delivered ones too) are delivered again,
 * with their webhook-id unchanged; the same as SELECT delivery_replay(...).
 * skip: dead events (with --blocked and --pending: the ones waiting behind
 * them, or for a retry, too) are given up, so that the events after them for
 * the same order go on; the same as SELECT delivery_skip(...). Both are
 * recorded in operator_actions.
 */
static int cmd_replay_skip(const struct config *cfg, bool skip, int argc, char **argv)
{
    const char *cmd = skip ? "skip" : "replay";
    const char *dest = NULL, *order = NULL, *since = NULL, *until = NULL;
    bool flag = false, blocked = false;
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
        else if (strcmp(argv[i], skip ? "--pending" : "--all") == 0) {
            flag = true;
            continue;
        } else if (skip && strcmp(argv[i], "--blocked") == 0) {
            blocked = true;
            continue;
        } else {
            fprintf(stderr, "%s: unknown option %s\n", cmd, argv[i]);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", cmd, argv[i]);
            return 2;
        }
        *slot = argv[++i];
    }
    PGconn *conn = connect_blocking(cfg);
    if (conn == NULL)
        return 1;
    char actor[300];
    const char *user = getenv("USER");
    snprintf(actor, sizeof(actor), "cli:%s", user && user[0] ? user : "unknown");
    const char *params[6] = {dest, order, since, until, NULL, actor};
    PGresult *res;
    if (skip) {
        static const char *const sets[2][2] = {{"{dead}", "{dead,pending}"},
                                               {"{dead,blocked}", "{dead,blocked,pending}"}};
        params[4] = sets[blocked][flag];
        res = PQexecParams(conn,
                           "SELECT delivery_skip($1, $2::bigint, $3::timestamptz,"
                           " $4::timestamptz, $5::text[], $6)",
                           6, NULL, params, NULL, NULL, 0);
    } else {
        params[4] = flag ? "false" : "true";
        res = PQexecParams(conn,
                           "SELECT delivery_replay($1, $2::bigint, $3::timestamptz,"
                           " $4::timestamptz, $5::boolean, $6)",
                           6, NULL, params, NULL, NULL, 0);
    }
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error(skip ? "skip failed" : "replay failed",
                  json_pack("{s:s}", "detail", PQresultErrorMessage(res)));
        rc = 1;
    } else if (skip) {
        printf("%s delivery(ies) skipped\n", PQgetvalue(res, 0, 0));
    } else {
        printf("%s delivery(ies) scheduled again\n", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* ordersync migrate [--to VERSION] */
static int cmd_migrate(const struct config *cfg, int argc, char **argv)
{
    int upto = 0;
    if (argc == 4 && strcmp(argv[2], "--to") == 0 && atoi(argv[3]) > 0) {
        upto = atoi(argv[3]);
    } else if (argc != 2) {
        fprintf(stderr, "usage: ordersync migrate [--to VERSION]\n");
        return 2;
    }
    PGconn *conn = connect_session(cfg);
    if (conn == NULL)
        return 1;
    /* a session advisory lock through a transaction pooler would never be released */
    if (check_pooler(cfg, conn) < 0) {
        PQfinish(conn);
        return 1;
    }
    char detail[512];
    struct migrate_options mo = {.lock_timeout_ms = (int)cfg->migrate_lock_timeout_ms,
                                 .retries = (int)cfg->migrate_retries};
    int n = migrate_apply(conn, upto, &mo, detail, sizeof(detail));
    PQfinish(conn);
    if (n < 0) {
        log_error("migration failed", json_pack("{s:s}", "detail", detail));
        return 1;
    }
    log_info("schema is current", json_pack("{s:s}", "detail", detail));
    return 0;
}

/* Refuses to serve on a schema this binary was not built for; prepares the event store. */
static int check_schema(struct config *cfg)
{
    PGconn *conn = connect_session(cfg);
    if (conn == NULL)
        return -1;
    char detail[512];
    int rc = check_pooler(cfg, conn);
    enum schema_status st = rc == 0 ? migrate_check(conn, detail, sizeof(detail)) : SCHEMA_ERROR;
    if (rc < 0) {
        /* logged */
    } else if (st == SCHEMA_PENDING && cfg->migrate_on_start) {
        struct migrate_options mo = {.lock_timeout_ms = (int)cfg->migrate_lock_timeout_ms,
                                     .retries = (int)cfg->migrate_retries};
        if (migrate_apply(conn, 0, &mo, detail, sizeof(detail)) < 0) {
            log_error("migration failed", json_pack("{s:s}", "detail", detail));
            rc = -1;
        }
    } else if (st == SCHEMA_NEWER) {
        /* a rolling upgrade: the next release migrated; this one runs beside it */
        log_warn("database schema is newer than this ordersync: serving on it",
                 json_pack("{s:s,s:s}", "detail", detail, "hint",
                           "migrations only expand, so a release runs on the next one's schema;"
                           " replace this instance with the newer release"));
    } else if (st != SCHEMA_CURRENT) {
        log_error("database schema is not current",
                  json_pack("{s:s,s:s}", "detail", detail, "hint",
                            "run `ordersync migrate` or set ORDERSYNC_MIGRATE_ON_START=1"));
        rc = -1;
    }
    if (rc == 0 && maintain_setup(conn, cfg->retention, cfg->partition_interval,
                                  &cfg->maintain_every_ms, detail, sizeof(detail)) < 0) {
        log_error("could not prepare the event store",
                  json_pack("{s:s,s:s}", "detail", detail, "hint",
                            "ORDERSYNC_RETENTION and ORDERSYNC_PARTITION_INTERVAL take"
                            " PostgreSQL intervals such as '30 days' or '2 minutes'"));
        rc = -1;
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
        rc = cmd_migrate(&cfg, argc, argv);
    } else if (strcmp(cmd, "replay") == 0 || strcmp(cmd, "skip") == 0) {
        rc = cmd_replay_skip(&cfg, strcmp(cmd, "skip") == 0, argc, argv);
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
