/*
 * cli_destination: see cli_destination.h. Each action is one call of the
 * function the console's statement calls (016_filters_actions.sql), so
 * the command line, the API and SQL refuse the same things with the same
 * sentences.
 */
#include "cli_destination.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "destinations.h"
#include "http_client.h"
#include "relay_test_event.h"

void cli_destination_usage(FILE *out)
{
    fprintf(out, "usage: ordersync destination pause ID\n"
                 "       ordersync destination resume ID\n"
                 "       ordersync destination test ID\n"
                 "       ordersync destination replay ID --since TIME --until TIME [--preview]\n"
                 "       ordersync destination filter ID JSONPATH | --none\n"
                 "\n"
                 "pause    sends nothing to the destination until resumed; its backlog and\n"
                 "         cursor stay, and it goes on in order (it survives restarts)\n"
                 "test     sends it a signed `ping` test event and prints its answer\n"
                 "replay   delivers again every dead or blocked event of it whose event\n"
                 "         time is in [--since, --until)\n"
                 "filter   sets its content filter, a jsonpath predicate over the envelope\n"
                 "         {\"type\", \"timestamp\", \"data\"} ('$.data.currency == \"EUR\"'),\n"
                 "         or removes it (--none)\n"
                 "\n"
                 "Each is recorded in operator_actions. TIME is anything PostgreSQL reads as\n"
                 "a timestamptz (2026-01-02, '2026-01-02 10:00+02').\n");
}

static int bad(const char *fmt, const char *arg)
{
    fputs("ordersync destination: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (see ordersync destination --help)\n", stderr);
    return 2;
}

int cli_destination_check(int argc, char **argv)
{
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cli_destination_usage(stdout);
            return 0;
        }
    if (argc < 4)
        return bad("%s", argc < 3 ? "an action and a destination are needed"
                                  : "a destination id is needed");
    const char *a = argv[2];
    if (strcmp(a, "pause") == 0 || strcmp(a, "resume") == 0 || strcmp(a, "test") == 0)
        return argc == 4 ? -1 : bad("unexpected %s", argv[4]);
    if (strcmp(a, "filter") == 0)
        return argc == 5 ? -1 : bad("%s", "filter takes one JSONPATH, or --none");
    if (strcmp(a, "replay") == 0) {
        bool since = false, until = false;
        for (int i = 4; i < argc; i++) {
            if (strcmp(argv[i], "--preview") == 0)
                continue;
            if ((strcmp(argv[i], "--since") != 0 && strcmp(argv[i], "--until") != 0))
                return bad("unknown option %s", argv[i]);
            if (i + 1 >= argc)
                return bad("%s needs a value", argv[i]);
            since = since || strcmp(argv[i], "--since") == 0;
            until = until || strcmp(argv[i], "--until") == 0;
            i++;
        }
        return since && until ? -1 : bad("%s", "replay needs --since and --until");
    }
    return bad("'%s' is not an action: pause, resume, test, replay or filter", a);
}

/* Runs sql; prints column `col` of its one row through fmt, or the database's sentence. */
static int exec_print(PGconn *conn, const char *sql, int n, const char *const *params,
                      const char *col, const char *fmt)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    int c = PQfnumber(res, col), rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || c < 0 || PQntuples(res) != 1) {
        const char *why = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        fprintf(stderr, "ordersync destination: %s\n", why ? why : PQerrorMessage(conn));
        rc = 1;
    } else {
        printf(fmt, PQgetisnull(res, 0, c) ? "(none)" : PQgetvalue(res, 0, c));
    }
    PQclear(res);
    return rc;
}

struct cli_test {
    bool done;
    long status;
    int ms;
    char webhook_id[64];
    char body[HTTP_CLIENT_EXCERPT_MAX + 1];
    char error[256];
};

static void on_test(const struct relay_test_event_result *res, void *data)
{
    struct cli_test *t = data;
    t->done = true;
    t->status = res->http_status;
    t->ms = res->ms;
    snprintf(t->webhook_id, sizeof(t->webhook_id), "%s", res->webhook_id);
    snprintf(t->body, sizeof(t->body), "%s", res->body ? res->body : "");
    snprintf(t->error, sizeof(t->error), "%s", res->error ? res->error : "");
}

static int run_test(PGconn *conn, const char *actor, const char *id)
{
    int rc = 1;
    struct destinations *ds = destinations_new();
    PGresult *res = PQexec(conn, destinations_sql);
    uv_loop_t loop;
    bool loop_ok = uv_loop_init(&loop) == 0;
    struct http_client *http = NULL;
    struct cli_test t = {0};
    if (ds == NULL || !loop_ok || PQresultStatus(res) != PGRES_TUPLES_OK ||
        destinations_load(ds, res) < 0) {
        const char *why = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        fprintf(stderr, "ordersync destination: could not read the destinations: %s\n",
                why ? why : "out of memory");
        goto fail;
    }
    const struct dest *d = destinations_find(ds, id);
    if (d == NULL || !d->present || !d->set.push) {
        fprintf(stderr, "ordersync destination: no push destination \"%s\" that can be sent to\n",
                id);
        goto fail;
    }
    if (http_client_new(&loop, "ordersync", 1, &http) < 0 ||
        relay_test_event_send(http, d, actor, on_test, &t) < 0) {
        fprintf(stderr, "ordersync destination: could not send the test event\n");
        goto fail;
    }
    while (!t.done && uv_run(&loop, UV_RUN_ONCE) != 0)
        ;
    char status[16], ms[16];
    snprintf(status, sizeof(status), "%ld", t.status);
    snprintf(ms, sizeof(ms), "%d", t.ms);
    const char *p[] = {
        id, actor, t.webhook_id, t.status ? status : NULL, t.body, t.error[0] ? t.error : NULL, ms};
    PGresult *rec = PQexecParams(conn,
                                 "SELECT destination_test_record($1, $2, $3, $4::integer, $5, $6,"
                                 " $7::integer) AS id",
                                 7, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(rec) != PGRES_TUPLES_OK)
        fprintf(stderr, "ordersync destination: the answer was not recorded: %s",
                PQerrorMessage(conn));
    PQclear(rec);
    if (t.status != 0)
        printf("%s answered HTTP %ld in %d ms (webhook-id %s): %s\n", id, t.status, t.ms,
               t.webhook_id, t.body);
    else
        printf("%s did not answer (%s) after %d ms (webhook-id %s)\n", id, t.error, t.ms,
               t.webhook_id);
    rc = t.status >= 200 && t.status <= 299 ? 0 : 1;
fail:
    http_client_free(&http);
    if (loop_ok) {
        uv_run(&loop, UV_RUN_DEFAULT); /* the client's handles close */
        uv_loop_close(&loop);
    }
    PQclear(res);
    destinations_free(&ds);
    return rc;
}

int cli_destination_run(PGconn *conn, const char *actor, int argc, char **argv)
{
    const char *a = argv[2], *id = argv[3];
    if (strcmp(a, "pause") == 0 || strcmp(a, "resume") == 0) {
        bool pause = a[0] == 'p';
        const char *p[] = {id, pause ? "true" : "false", actor};
        return exec_print(conn,
                          "SELECT CASE WHEN destination_pause($1, $2::boolean, $3)"
                          " THEN 'done' ELSE 'already so' END AS r",
                          3, p, "r", pause ? "paused: %s\n" : "resumed: %s\n");
    }
    if (strcmp(a, "filter") == 0) {
        const char *f = strcmp(argv[4], "--none") == 0 ? NULL : argv[4];
        const char *p[] = {id, f, actor};
        return exec_print(conn, "SELECT destination_set_filter($1, $2, $3) AS f", 3, p, "f",
                          "filter: %s\n");
    }
    if (strcmp(a, "replay") == 0) {
        const char *since = NULL, *until = NULL, *preview = "false";
        for (int i = 4; i < argc; i++) {
            if (strcmp(argv[i], "--preview") == 0)
                preview = "true";
            else if (strcmp(argv[i], "--since") == 0)
                since = argv[++i];
            else
                until = argv[++i];
        }
        const char *p[] = {id, since, until, actor, preview};
        return exec_print(conn,
                          "SELECT destination_replay_range($1, $2::timestamptz, $3::timestamptz,"
                          " $4, $5::boolean) AS n",
                          5, p, "n",
                          preview[0] == 't' ? "%s event(s) would be replayed\n"
                                            : "%s event(s) scheduled again\n");
    }
    return run_test(conn, actor, id);
}
