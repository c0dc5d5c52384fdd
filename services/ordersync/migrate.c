/*
 * migrate: schema migrations. Start-up code: blocking libpq is fine here.
 */
#include "migrate.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    PGresult *exists = PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (PQresultStatus(exists) != PGRES_TUPLES_OK) {
        snprintf(detail, dl, "could not read the schema: %s", PQerrorMessage(conn));
        PQclear(exists);
        return SCHEMA_ERROR;
    }
    bool has_table = strcmp(PQgetvalue(exists, 0, 0), "t") == 0;
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
    enum schema_status st = SCHEMA_CURRENT;
    for (int r = 0; r < PQntuples(res); r++) {
        int v = atoi(PQgetvalue(res, r, 0));
        const struct migration *m = find(v);
        if (m == NULL) {
            snprintf(detail, dl,
                     "the database has migration %s, which this ordersync does not know: "
                     "run a newer ordersync",
                     PQgetvalue(res, r, 1));
            st = SCHEMA_NEWER;
            break;
        }
        char sum[65];
        checksum(m, sum);
        if (strcmp(sum, PQgetvalue(res, r, 2)) != 0) {
            snprintf(detail, dl,
                     "migration %s was changed after it was applied (checksum %.12s..., "
                     "recorded %.12s...): restore the file and add a new migration instead",
                     m->name, sum, PQgetvalue(res, r, 2));
            st = SCHEMA_CHANGED;
            break;
        }
        (*pending)--;
    }
    PQclear(res);
    if (st == SCHEMA_CURRENT && *pending > 0) {
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

static bool exec_ok(PGconn *conn, const char *sql, char *detail, size_t dl, const char *what)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(detail, dl, "%s: %s", what, PQerrorMessage(conn));
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

static int apply_one(PGconn *conn, const struct migration *m, char *detail, size_t dl)
{
    char sum[65];
    checksum(m, sum);
    char v[16];
    snprintf(v, sizeof(v), "%d", version_of(m->name));
    if (!exec_ok(conn, "BEGIN", detail, dl, m->name))
        return -1;
    if (!exec_ok(conn, m->sql, detail, dl, m->name))
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
    if (!exec_ok(conn, "COMMIT", detail, dl, m->name))
        goto fail;
    log_info("migration applied", json_pack("{s:s}", "migration", m->name));
    return 0;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    return -1;
}

int migrate_apply(PGconn *conn, int upto, char *detail, size_t dl)
{
    int at = 0;
    int applied = 0;
    /* quiet the NOTICEs of CREATE ... IF NOT EXISTS */
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    if (!exec_ok(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", detail, dl,
                 "taking the migration lock"))
        return -1;
    if (!exec_ok(conn, create_table_sql, detail, dl, "creating schema_migrations"))
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
        if (apply_one(conn, &migrations[i], detail, dl) < 0)
            goto fail;
        applied++;
    }
    snprintf(detail, dl, "%d migration(s) applied; schema at version %d", applied, at);
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return applied;
fail:
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
    return -1;
}
