/*
 * ordersync: entry point. Sub-commands:
 *   ordersync [serve]   run the service (ingest, relay, feeds, pollers) on one libuv loop
 *   ordersync migrate   apply pending schema migrations and exit
 *   ordersync replay    deliver dead (or, with --all, delivered) events again
 *   ordersync skip      give up on dead events so that the ones after them go on
 *   ordersync settings  print the settings table (--markdown for the README)
 *   ordersync destination ACTION ID   pause, resume, test, replay or filter one
 *                       destination (cli_destination.c)
 * Start-up (config, schema check, migrations) may block; after the loop
 * starts nothing does.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

#include "cli_destination.h"
#include "signing_keys.h"
#include "config.h"
#include "conninfo.h"
#include "log.h"
#include "maintain.h"
#include "migrate.h"
#include "pooler.h"
#include "server.h"

/*
 * Command-line mistakes are told the way git and psql tell them: one line on
 * stderr naming the command and what was wrong, and a non-zero exit (2 for
 * a bad command line, 1 for a refusal by the database).
 */
static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fprintf(stderr, "ordersync%s%s: ", cmd ? " " : "", cmd ? cmd : "");
    fprintf(stderr, fmt, arg);
    fputs(" (see ordersync --help)\n", stderr);
    return 2;
}

static void replay_skip_usage(FILE *out, bool skip)
{
    if (skip)
        fprintf(out, "usage: ordersync skip [--destination ID] [--order ID] [--since TIME]\n"
                     "                      [--until TIME] [--blocked] [--pending]\n"
                     "\n"
                     "Gives up on dead events (with --blocked and --pending: also the ones\n"
                     "waiting behind them or for a retry), so that the later events of their\n"
                     "orders go on. Skipped events show as \"skipped\" in event_deliveries.\n"
                     "The same as SELECT delivery_skip(...); recorded in operator_actions.\n");
    else
        fprintf(out, "usage: ordersync replay [--destination ID] [--order ID] [--since TIME]\n"
                     "                        [--until TIME] [--all]\n"
                     "\n"
                     "Delivers dead events again (with --all: delivered and skipped ones too),\n"
                     "with their webhook-id unchanged. The same as SELECT delivery_replay(...);\n"
                     "recorded in operator_actions.\n");
    fprintf(out, "\nTIME is anything PostgreSQL reads as a timestamptz (2026-01-02, "
                 "'2026-01-02 10:00+02').\n");
}

static void usage(FILE *out)
{
    fprintf(out, "usage: ordersync [serve | settings [--markdown] | --help | --version]\n"
                 "       ordersync migrate [--to VERSION]\n"
                 "       ordersync replay [--destination ID] [--order ID] [--since TIME]\n"
                 "                        [--until TIME] [--all]\n"
                 "       ordersync skip [--destination ID] [--order ID] [--since TIME]\n"
                 "                      [--until TIME] [--blocked] [--pending]\n"
                 "       ordersync keygen\n"
                 "       ordersync destination-key ID\n"
                 "       ordersync destination pause|resume|test ID\n"
                 "       ordersync destination replay ID --since TIME --until TIME [--preview]\n"
                 "       ordersync destination filter ID JSONPATH|--none\n"
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
/* The operator's login name: $USER, else the account the process runs as. */
static const char *login_name(void)
{
    const char *user = getenv("USER");
    if (user != NULL && user[0] != '\0')
        return user;
    struct passwd *pw = getpwuid(geteuid());
    if (pw != NULL && pw->pw_name != NULL && pw->pw_name[0] != '\0')
        return pw->pw_name;
    return "unknown";
}

/* Reads a --since/--until value as PostgreSQL would; false with a one-line message. */
static bool time_ok(PGconn *conn, const char *cmd, const char *opt, const char *v)
{
    if (v == NULL)
        return true;
    const char *params[1] = {v};
    PGresult *res = PQexecParams(conn, "SELECT $1::timestamptz", 1, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr,
                "ordersync %s: %s \"%s\" is not a time (e.g. 2026-01-02 or '2026-01-02 "
                "10:00+02')\n",
                cmd, opt, v);
    PQclear(res);
    return ok;
}

static int cmd_replay_skip(const struct config *cfg, bool skip, int argc, char **argv)
{
    const char *cmd = skip ? "skip" : "replay";
    const char *dest = NULL, *order = NULL, *since = NULL, *until = NULL;
    bool flag = false, blocked = false;
    for (int i = 2; i < argc; i++) {
        const char **slot = NULL;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            replay_skip_usage(stdout, skip);
            return 0;
        } else if (strcmp(argv[i], "--destination") == 0)
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
            fprintf(stderr, "ordersync %s: unknown option %s (see ordersync %s --help)\n", cmd,
                    argv[i], cmd);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ordersync %s: %s needs a value\n", cmd, argv[i]);
            return 2;
        }
        *slot = argv[++i];
    }
    if (order != NULL) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(order, &end, 10);
        if (order[0] == '\0' || *end != '\0' || errno != 0 || v < 1) {
            fprintf(stderr, "ordersync %s: --order \"%s\" is not an order id (a number)\n", cmd,
                    order);
            return 2;
        }
    }
    PGconn *conn = connect_blocking(cfg);
    if (conn == NULL)
        return 1;
    if (!time_ok(conn, cmd, "--since", since) || !time_ok(conn, cmd, "--until", until)) {
        PQfinish(conn);
        return 2;
    }
    char actor[300];
    snprintf(actor, sizeof(actor), "cli:%s", login_name());
    const char *params[6] = {dest, order, since, until, NULL, actor};
    PGresult *res;
    if (skip) {
        static const char *const sets[2][2] = {{"{dead}", "{dead,pending}"},
                                               {"{dead,blocked}", "{dead,blocked,pending}"}};
        params[4] = sets[blocked][flag];
        res = PQexecParams(conn,
                           "SELECT delivery_skip($1, $2::bigint, $3::timestamptz,"
                           " $4::timestamptz, $5::text[], $6) AS n",
                           6, NULL, params, NULL, NULL, 0);
    } else {
        params[4] = flag ? "false" : "true";
        res = PQexecParams(conn,
                           "SELECT delivery_replay($1, $2::bigint, $3::timestamptz,"
                           " $4::timestamptz, $5::boolean, $6) AS n",
                           6, NULL, params, NULL, NULL, 0);
    }
    int rc = 0;
    int col = PQfnumber(res, "n");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || col < 0 || PQntuples(res) != 1) {
        /* the database's own sentence: 'no destination "nosuch"', ... */
        const char *why = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        fprintf(stderr, "ordersync %s: %s\n", cmd, why ? why : PQerrorMessage(conn));
        rc = 1;
    } else {
        printf("%s delivery(ies) %s\n", PQgetvalue(res, 0, col),
               skip ? "skipped" : "scheduled again");
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}

/* ordersync destination ACTION ID ...: arguments checked (cli_destination_check) */
static int cmd_destination(const struct config *cfg, int argc, char **argv)
{
    PGconn *conn = connect_blocking(cfg);
    if (conn == NULL)
        return 1;
    char actor[300];
    snprintf(actor, sizeof(actor), "cli:%s", login_name());
    int rc = cli_destination_run(conn, actor, argc, argv);
    PQfinish(conn);
    return rc;
}

/* The version the database's schema is at: 0 when none was applied, -1 on error. */
static int schema_version(PGconn *conn)
{
    PGresult *res = PQexec(conn, "SELECT coalesce(max(version), 0) AS v FROM schema_migrations");
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    int v = 0;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        v = atoi(PQgetvalue(res, 0, PQfnumber(res, "v")));
    else if (st == NULL || strcmp(st, "42P01") != 0)
        v = -1; /* 42P01: no schema_migrations yet, a new database */
    PQclear(res);
    return v;
}

/* ordersync migrate [--to VERSION] */
static int cmd_migrate(const struct config *cfg, int argc, char **argv)
{
    int upto = 0;
    if (argc == 3 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0)) {
        printf("usage: ordersync migrate [--to VERSION]\n\nApplies the pending migrations (up to "
               "VERSION), then exits. Migrations never go back.\n");
        return 0;
    }
    if (argc == 4 && strcmp(argv[2], "--to") == 0) {
        char *end = NULL;
        long v = strtol(argv[3], &end, 10);
        if (argv[3][0] == '\0' || *end != '\0' || v < 1 || v > migrate_latest_version()) {
            fprintf(stderr, "ordersync migrate: --to \"%s\" is not a migration version (1 to %d)\n",
                    argv[3], migrate_latest_version());
            return 2;
        }
        upto = (int)v;
    } else if (argc != 2) {
        fprintf(stderr,
                "ordersync migrate: unknown option %s (usage: ordersync migrate [--to "
                "VERSION])\n",
                argv[2]);
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
    int at = upto > 0 ? schema_version(conn) : 0;
    if (at > upto && upto > 0) {
        fprintf(stderr,
                "ordersync migrate: the schema is at version %d, past %d: migrations never go "
                "back\n",
                at, upto);
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
        if (argc > 3 || (argc == 3 && strcmp(argv[2], "--markdown") != 0))
            return usage_error("settings", "unknown option %s", argv[argc - 1]);
        config_print(stdout, argc == 3);
        return 0;
    }
    if (strcmp(cmd, "keygen") == 0) {
        /* needs no database and no settings: a key can be made anywhere */
        if (argc > 2)
            return usage_error("keygen", "unknown option %s", argv[2]);
        return signing_keys_keygen(stdout);
    }
    bool known = strcmp(cmd, "serve") == 0 || strcmp(cmd, "migrate") == 0 ||
                 strcmp(cmd, "replay") == 0 || strcmp(cmd, "skip") == 0 ||
                 strcmp(cmd, "destination-key") == 0 || strcmp(cmd, "destination") == 0;
    if (!known)
        return usage_error(NULL, "'%s' is not an ordersync command", cmd);
    if (strcmp(cmd, "serve") == 0 && argc > 2)
        return usage_error("serve", "unknown option %s", argv[2]);
    if (strcmp(cmd, "destination-key") == 0 && (argc != 3 || argv[2][0] == '-'))
        return usage_error("destination-key", "%s", "usage: ordersync destination-key ID");
    if (strcmp(cmd, "destination") == 0) {
        int code = cli_destination_check(argc, argv);
        if (code >= 0)
            return code;
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
    } else if (strcmp(cmd, "destination-key") == 0) {
        PGconn *conn = connect_blocking(&cfg);
        rc = conn == NULL ? 1 : signing_keys_destination(conn, argv[2], stdout);
        PQfinish(conn);
    } else if (strcmp(cmd, "destination") == 0) {
        rc = cmd_destination(&cfg, argc, argv);
    } else {
        rc = check_schema(&cfg) < 0 ? 1 : server_run(&cfg);
    }
    config_free(&cfg);
    curl_global_cleanup();
    return rc;
}
