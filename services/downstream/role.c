/*
 * role: the role table and schema installation.
 *
 * The SQL lives in <role>.sql beside this file, readable and runnable in psql,
 * and is compiled into the binary (embed_sql.cmake generates role_sql.c):
 * tests, demos and containers start the binary from wherever it was built or
 * copied, so reading files at run time would only add a way to fail. The
 * scripts are idempotent (IF NOT EXISTS, OR REPLACE) and run at every start,
 * which also upgrades the functions of an existing schema.
 */
#include "role.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Defined in the generated role_sql.c, NUL-terminated. */
extern const char role_sql_inventory[];
extern const char role_sql_invoicing[];
extern const char role_sql_shipping[];

/*
 * state() comes back as text: it is relayed as is, with the counters added by
 * the caller. Each result column is named (ROLE_COL_*): it is read by name.
 */
static const struct db_stmt inventory_stmts[] = {
    {ROLE_STMT_APPLY, "SELECT inventory.apply($1, $2::jsonb) AS outcome"},
    {ROLE_STMT_STATE, "SELECT inventory.state()::text AS state"},
};
static const struct db_stmt invoicing_stmts[] = {
    {ROLE_STMT_APPLY, "SELECT invoicing.apply($1, $2::jsonb) AS outcome"},
    {ROLE_STMT_STATE, "SELECT invoicing.state()::text AS state"},
};
static const struct db_stmt shipping_stmts[] = {
    {ROLE_STMT_APPLY, "SELECT shipping.apply($1, $2::jsonb) AS outcome"},
    {ROLE_STMT_STATE, "SELECT shipping.state()::text AS state"},
};

static const struct role roles[] = {
    {"inventory", role_sql_inventory, inventory_stmts, 2},
    {"invoicing", role_sql_invoicing, invoicing_stmts, 2},
    {"shipping", role_sql_shipping, shipping_stmts, 2},
    {"sink", NULL, NULL, 0},
};

const struct role *role_find(const char *name)
{
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++)
        if (strcmp(roles[i].name, name) == 0)
            return &roles[i];
    return NULL;
}

/* Runs one step (nparams < 0: a script, through PQexec); on failure copies the server's message
 * (without its newline). */
static int exec_step(PGconn *conn, const char *sql, int nparams, const char *const *params,
                     const char *what, char *err, size_t errlen)
{
    PGresult *res = nparams < 0 ? PQexec(conn, sql)
                                : PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "%s: %s", what,
                 res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        size_t n = strlen(err);
        while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
            err[--n] = '\0';
        rc = -EIO;
    }
    PQclear(res);
    return rc;
}

int role_install(const struct role *r, PGconn *conn, char *err, size_t errlen)
{
    if (!role_has_db(r))
        return 0;
    char lock_key[64];
    snprintf(lock_key, sizeof(lock_key), "downstream.%s", r->name);
    const char *params[] = {lock_key};
    char what[64];
    snprintf(what, sizeof(what), "%s.sql", r->name);
    if (exec_step(conn, "BEGIN", 0, NULL, "begin", err, errlen) < 0)
        return -EIO;
    /* CREATE SCHEMA IF NOT EXISTS and CREATE OR REPLACE FUNCTION are not safe
     * against a concurrent twin (unique violation, "tuple concurrently updated") */
    if (exec_step(conn, "SELECT pg_advisory_xact_lock(hashtext($1))", 1, params, "lock", err,
                  errlen) < 0)
        goto fail;
    /* PQexec: only the simple protocol runs a multi-statement script */
    if (exec_step(conn, r->sql, -1, NULL, what, err, errlen) < 0)
        goto fail;
    if (exec_step(conn, "COMMIT", 0, NULL, "commit", err, errlen) < 0)
        return -EIO;
    return 0;
fail:
    PQclear(PQexec(conn, "ROLLBACK"));
    return -EIO;
}
