/*
 * migrate: schema migrations. Start-up code: blocking libpq is fine here.
 *
 * Rolling upgrades: a migration runs beside instances that keep ingesting.
 * Every statement waits for its locks at most `lock_timeout_ms`: while a DDL
 * statement waits for a lock, every writer that comes after it queues behind
 * it, so an unbounded wait behind one long transaction (an operator's query,
 * a slow batch) would hold ingest for as long. A migration that times out is
 * rolled back whole and tried again after a pause that grows (ingest runs
 * meanwhile), up to `retries` times.
 */
#include "migrate.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"

/* pg_advisory_lock key: "ordersyn" read as a big-endian int64 */
#define MIGRATE_LOCK_KEY "8030591472429660526"

static const char create_table_sql[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                       " version integer PRIMARY KEY,"
                                       " name text NOT NULL,"
                                       " checksum text NOT NULL,"
                                       " applied_at timestamptz NOT NULL DEFAULT now())";

static int version_of(const char *name)
{
    return atoi(name);
}

int migrate_latest_version(void)
{
    return n_migrations ? version_of(migrations[n_migrations - 1].name) : 0;
}

static void checksum(const struct migration *m, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(m->sql, m->len, md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < n && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}

static const struct migration *find(int version)
{
    for (size_t i = 0; i < n_migrations; i++)
        if (version_of(migrations[i].name) == version)
            return &migrations[i];
    return NULL;
}

/* Compares applied rows with the embedded files; counts pending ones. */
static enum schema_status compare(PGconn *conn, char *detail, size_t dl, int *pending)
{
    *pending = (int)n_migrations;
    PGresult *exists =
        PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL AS has_table");
    static const char *const cols[] = {"has_table"};
    int col;
    if (PQresultStatus(exists) != PGRES_TUPLES_OK || PQntuples(exists) != 1 ||
        db_columns(exists, "schema_migrations exists", cols, &col, 1) < 0) {
        snprintf(detail, dl, "could not read the schema: %s", PQerrorMessage(conn));
        PQclear(exists);
        return SCHEMA_ERROR;
    }
    bool has_table = strcmp(PQgetvalue(exists, 0, col), "t") == 0;
    PQclear(exists);
    if (!has_table) {
        snprintf(detail, dl, "the database has no schema yet: %zu migrations pending",
                 n_migrations);
        return n_migrations ? SCHEMA_PENDING : SCHEMA_CURRENT;
    }
    PGresult *res =
        PQexec(conn, "SELECT version, name, checksum FROM schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(detail, dl, "could not read schema_migrations: %s", PQerrorMessage(conn));
        PQclear(res);
        return SCHEMA_ERROR;
    }
    enum { C_VERSION, C_NAME, C_SUM, N_COLS };
    static const char *const names[N_COLS] = {"version", "name", "checksum"};
    int c[N_COLS];
    if (db_columns(res, "schema_migrations", names, c, N_COLS) < 0) {
        snprintf(detail, dl, "schema_migrations lacks a column (version, name, checksum)");
        PQclear(res);
        return SCHEMA_ERROR;
    }
    int c_version = c[C_VERSION], c_name = c[C_NAME], c_sum = c[C_SUM];
    enum schema_status st = SCHEMA_CURRENT;
    char newer[128] = "";
    for (int r = 0; r < PQntuples(res); r++) {
        int v = atoi(PQgetvalue(res, r, c_version));
        const struct migration *m = find(v);
        if (m == NULL && v > migrate_latest_version()) {
            /* a later release's, applied ahead of its binary (a rolling
               upgrade): the first one names them all in the detail */
            if (newer[0] == '\0')
                snprintf(newer, sizeof(newer), "%s", PQgetvalue(res, r, c_name));
            continue;
        }
        if (m == NULL) {
            snprintf(detail, dl,
                     "the database has migration %s, which this ordersync does not know: "
                     "run a newer ordersync",
                     PQgetvalue(res, r, c_name));
            st = SCHEMA_CHANGED;
            break;
        }
        char sum[65];
        checksum(m, sum);
        if (strcmp(sum, PQgetvalue(res, r, c_sum)) != 0) {
            snprintf(detail, dl,
                     "migration %s was changed after it was applied (checksum %.12s..., "
                     "recorded %.12s...): restore the file and add a new migration instead",
                     m->name, sum, PQgetvalue(res, r, c_sum));
            st = SCHEMA_CHANGED;
            break;
        }
        (*pending)--;
    }
    PQclear(res);
    if (st == SCHEMA_CURRENT && newer[0] != '\0' && *pending == 0) {
        snprintf(detail, dl,
                 "the database has migration %s and maybe more, which this ordersync does not "
                 "know: a newer release's (schema newer than version %d)",
                 newer, migrate_latest_version());
        st = SCHEMA_NEWER;
    } else if (st == SCHEMA_CURRENT && newer[0] != '\0') {
        snprintf(detail, dl,
                 "the database has migration %s, which this ordersync does not know, but not "
                 "all of this ordersync's: run a newer ordersync",
                 newer);
        st = SCHEMA_CHANGED;
    } else if (st == SCHEMA_CURRENT && *pending > 0) {
        snprintf(detail, dl, "%d migration(s) pending: run `ordersync migrate`", *pending);
        st = SCHEMA_PENDING;
    } else if (st == SCHEMA_CURRENT) {
        snprintf(detail, dl, "schema current at version %d", migrate_latest_version());
    }
    return st;
}

enum schema_status migrate_check(PGconn *conn, char *detail, size_t dl)
{
    int pending;
    return compare(conn, detail, dl, &pending);
}

bool migrate_compatible(int db_version)
{
    return db_version >= migrate_latest_version();
}

/*
 * Runs `sql`; on failure writes "<what>: <error>" to detail and, when
 * `sqlstate` is not NULL, the error's SQLSTATE (5 characters + NUL).
 */
static bool exec_ok(PGconn *conn, const char *sql, char *detail, size_t dl, const char *what,
                    char sqlstate[6])
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        snprintf(detail, dl, "%s: %s", what, PQerrorMessage(conn));
        const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (sqlstate != NULL)
            snprintf(sqlstate, 6, "%s", code != NULL ? code : "");
    }
    PQclear(res);
    return ok;
}

static bool is_applied(PGconn *conn, int version, bool *applied, char *detail, size_t dl)
{
    char v[16];
    snprintf(v, sizeof(v), "%d", version);
    const char *params[1] = {v};
    PGresult *res = PQexecParams(conn, "SELECT 1 FROM schema_migrations WHERE version = $1", 1,
                                 NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(detail, dl, "reading schema_migrations: %s", PQerrorMessage(conn));
        PQclear(res);
        return false;
    }
    *applied = PQntuples(res) > 0;
    PQclear(res);
    return true;
}

/*
 * One attempt at one migration, in one transaction with its row in
 * schema_migrations. Returns 0, -EAGAIN when it waited too long for a lock
 * (or lost a deadlock: the other side was a writer, which must win), or -1.
 */
static int apply_one(PGconn *conn, const struct migration *m, char *detail, size_t dl)
{
    char sum[65];
    checksum(m, sum);
    char v[16];
    snprintf(v, sizeof(v), "%d", version_of(m->name));
    char sqlstate[6] = "";
    if (!exec_ok(conn, "BEGIN", detail, dl, m->name, NULL))
        return -1;
    if (!exec_ok(conn, m->sql, detail, dl, m->name, sqlstate))
        goto fail;
    const char *params[3] = {v, m->name, sum};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO schema_migrations (version, name, checksum)"
                                 " VALUES ($1, $2, $3)",
                                 3, NULL, params, NULL, NULL, 0);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(detail, dl, "recording %s: %s", m->name, PQerrorMessage(conn));
    PQclear(res);
    if (!ok)
        goto fail;
    if (!exec_ok(conn, "COMMIT", detail, dl, m->name, sqlstate))
        goto fail;
    log_info("migration applied", json_pack("{s:s}", "migration", m->name));
    return 0;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    /* 55P03 lock_not_available (lock_timeout), 40P01 deadlock_detected */
    if (strcmp(sqlstate, "55P03") == 0 || strcmp(sqlstate, "40P01") == 0)
        return -EAGAIN;
    return -1;
}

/* The pause before attempt n + 1 (n >= 1): 0.5 s doubling to 8 s, with jitter. */
static void pause_before_retry(int n)
{
    long ms = 500L << (n - 1 < 4 ? n - 1 : 4);
    ms = ms / 2 + rand() % (ms / 2 + 1);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* apply_one() until it is not -EAGAIN or the retries are used up. */
static int apply_retrying(PGconn *conn, const struct migration *m,
                          const struct migrate_options *opt, char *detail, size_t dl)
{
    for (int attempt = 1;; attempt++) {
        int rc = apply_one(conn, m, detail, dl);
        if (rc != -EAGAIN)
            return rc;
        if (attempt > opt->retries) {
            snprintf(detail + strlen(detail), dl - strlen(detail),
                     " (gave up after %d attempts, each waiting at most %d ms for a lock)", attempt,
                     opt->lock_timeout_ms);
            return -1;
        }
        log_warn("migration waited too long for a lock; rolled back, trying again",
                 json_pack("{s:s,s:i,s:i,s:s}", "migration", m->name, "attempt", attempt,
                           "lock_timeout_ms", opt->lock_timeout_ms, "detail", detail));
        pause_before_retry(attempt);
    }
}

int migrate_apply(PGconn *conn, int upto, const struct migrate_options *options, char *detail,
                  size_t dl)
{
    struct migrate_options opt = {.lock_timeout_ms = MIGRATE_LOCK_TIMEOUT_MS,
                                  .retries = MIGRATE_RETRIES};
    if (options != NULL)
        opt = *options;
    srand((unsigned)time(NULL) ^ (unsigned)getpid()); /* instances retrying together spread out */
    int at = 0;
    int applied = 0;
    /* quiet the NOTICEs of CREATE ... IF NOT EXISTS */
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    if (!exec_ok(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", detail, dl,
                 "taking the migration lock", NULL))
        return -1;
    char set[64];
    snprintf(set, sizeof(set), "SET lock_timeout = %d", opt.lock_timeout_ms);
    if (!exec_ok(conn, set, detail, dl, "setting lock_timeout", NULL))
        goto fail;
    if (!exec_ok(conn, create_table_sql, detail, dl, "creating schema_migrations", NULL))
        goto fail;
    int pending;
    enum schema_status st = compare(conn, detail, dl, &pending);
    if (st == SCHEMA_CHANGED || st == SCHEMA_NEWER || st == SCHEMA_ERROR)
        goto fail;
    for (size_t i = 0; i < n_migrations; i++) {
        int version = version_of(migrations[i].name);
        if (upto > 0 && version > upto)
            break;
        at = version;
        bool done;
        if (!is_applied(conn, version, &done, detail, dl))
            goto fail;
        if (done)
            continue;
        if (apply_retrying(conn, &migrations[i], &opt, detail, dl) < 0)
            goto fail;
        applied++;
    }
    snprintf(detail, dl, "%d migration(s) applied; schema at version %d", applied, at);
    PQclear(PQexec(conn, "RESET lock_timeout"));
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return applied;
fail:
    PQclear(PQexec(conn, "RESET lock_timeout"));
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return -1;
}
