/*
 * pooler: is there a transaction-mode connection pooler between ordersync
 * and PostgreSQL? See pooler.h. Start-up code: blocking libpq.
 */
#include "pooler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 4

/* The server process that ran one statement; -1 with `detail` set on an error. */
static long backend_pid(PGconn *conn, const char *sql, char *detail, size_t dl)
{
    PGresult *res = PQexec(conn, sql);
    long pid = -1;
    int c = PQfnumber(res, "pid");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && c >= 0)
        pid = atol(PQgetvalue(res, 0, c));
    else
        snprintf(detail, dl, "%s", PQresultErrorMessage(res));
    PQclear(res);
    return pid;
}

/* Runs a statement that returns no rows; false with `detail` set on an error. */
static bool command(PGconn *conn, const char *sql, char *detail, size_t dl)
{
    PGresult *res = PQexec(conn, sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(detail, dl, "%s", PQresultErrorMessage(res));
    PQclear(res);
    return ok;
}

int pooler_detect(PGconn *a, PGconn *b, bool *per_transaction, char *detail, size_t dl)
{
    static const char pid_sql[] = "SELECT pg_backend_pid() AS pid";
    *per_transaction = false;
    detail[0] = '\0';
    for (int round = 0; round < ROUNDS; round++) {
        long pa = backend_pid(a, pid_sql, detail, dl);
        if (pa < 0)
            return -1;
        /* b takes a server connection and holds it for its transaction */
        if (!command(b, "BEGIN", detail, dl)) {
            /* statement pooling refuses transaction blocks */
            *per_transaction = true;
            return 0;
        }
        long pb = backend_pid(b, pid_sql, detail, dl);
        long pa2 = pb < 0 ? -1 : backend_pid(a, pid_sql, detail, dl);
        char end[256];
        if (!command(b, "COMMIT", end, sizeof(end)) && pb >= 0 && pa2 >= 0)
            snprintf(detail, dl, "%s", end);
        if (pb < 0 || pa2 < 0)
            return -1;
        if (pb == pa) {
            snprintf(detail, dl,
                     "a statement of one connection ran in server process %ld, which another"
                     " connection had just used",
                     pb);
            *per_transaction = true;
            return 0;
        }
        if (pa2 != pa) {
            snprintf(detail, dl,
                     "two statements of one connection ran in server processes %ld and %ld", pa,
                     pa2);
            *per_transaction = true;
            return 0;
        }
    }
    return 0;
}
