/*
 * Unit tests for lib/db without a PostgreSQL server: finding columns by name
 * in a result built in memory, and the life of a connection whose server
 * cannot be reached (refused queries, the reported error, a clean close).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <uv.h>

#include "db.h"
#include "log.h"
#include "test_pgresult.h"

/* ---- stderr capture: db logs what it refuses ---- */

static int saved_stderr = -1;
static FILE *captured;

static void capture_start(void)
{
    fflush(stderr);
    captured = tmpfile();
    assert_non_null(captured);
    saved_stderr = dup(2);
    dup2(fileno(captured), 2);
}

/* Restores stderr; returns what was written meanwhile (a new allocation). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    long n = ftell(captured);
    char *text = calloc(1, (size_t)n + 1);
    assert_non_null(text);
    rewind(captured);
    assert_int_equal(fread(text, 1, (size_t)n, captured), (size_t)n);
    fclose(captured);
    return text;
}

static const char *const cols[] = {"id", "kind", "secret", "enabled"};

static void columns_are_found_by_name_in_any_order(void **state)
{
    (void)state;
    /* the SELECT lists them in another order than the reader asks for them */
    static const char *const result_cols[] = {"enabled", "secret", "id", "kind"};
    static const char *const values[] = {"t", NULL, "shop", "shopify"};
    PGresult *res = test_pgresult(4, result_cols, 1, values);
    assert_non_null(res);
    int idx[4];
    assert_int_equal(db_columns(res, "sources", cols, idx, 4), 0);
    assert_string_equal(PQgetvalue(res, 0, idx[0]), "shop");
    assert_string_equal(PQgetvalue(res, 0, idx[1]), "shopify");
    assert_true(PQgetisnull(res, 0, idx[2]));
    assert_string_equal(PQgetvalue(res, 0, idx[3]), "t");
    PQclear(res);
}

static void a_missing_column_is_refused_and_logged(void **state)
{
    (void)state;
    static const char *const result_cols[] = {"id", "kind", "enabled"};
    static const char *const values[] = {"shop", "shopify", "t"};
    PGresult *res = test_pgresult(3, result_cols, 1, values);
    assert_non_null(res);
    int idx[4];
    capture_start();
    int rc = db_columns(res, "sources", cols, idx, 4);
    char *log = capture_end();
    assert_int_equal(rc, -EINVAL);
    assert_non_null(strstr(log, "\"msg\":\"a query result lacks a column\""));
    assert_non_null(strstr(log, "\"query\":\"sources\""));
    assert_non_null(strstr(log, "\"column\":\"secret\""));
    free(log);
    PQclear(res);
}

static void an_empty_result_still_has_its_columns(void **state)
{
    (void)state;
    PGresult *res = test_pgresult(4, cols, 0, NULL);
    assert_non_null(res);
    int idx[4];
    assert_int_equal(db_columns(res, "sources", cols, idx, 4), 0);
    assert_int_equal(idx[2], 2);
    assert_int_equal(PQntuples(res), 0);
    PQclear(res);
}

/* ---- a connection that cannot be made ---- */

struct down_ctx {
    uv_loop_t *loop;
    int downs;
    char err[256];
};

static void on_down(struct db *db, const char *err, void *data)
{
    (void)db;
    struct down_ctx *ctx = data;
    if (ctx->downs++ == 0)
        snprintf(ctx->err, sizeof(ctx->err), "%s", err);
    uv_stop(ctx->loop);
}

static void on_never(PGresult *res, const char *err, void *data)
{
    (void)res;
    (void)err;
    (void)data;
    fail_msg("a refused query must not call back");
}

static void unreachable_server_refuses_queries_and_closes_cleanly(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    /* nothing listens on port 1: the connection is refused at once */
    static const struct db_callbacks cbs = {.on_down = on_down};
    struct down_ctx ctx = {.loop = &loop};
    struct db *db = NULL;
    log_set_level(LOG_ERROR); /* the reconnect warnings are expected */
    assert_int_equal(db_open(&loop, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2",
                             "test", NULL, 0, &cbs, &ctx, &db),
                     0);
    assert_non_null(db);
    assert_false(db_is_ready(db));
    /* not ready: refused now, and the callback never runs */
    assert_int_equal(db_query(db, false, "SELECT 1", 0, NULL, on_never, NULL), -ENOTCONN);
    assert_int_equal(db_queue_length(db), 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* until on_down stops it */
    assert_true(ctx.downs >= 1);
    assert_non_null(strstr(ctx.err, "127.0.0.1"));
    assert_true(strlen(db_last_error(db)) > 0);
    assert_false(db_is_ready(db));
    assert_int_equal(db_query(db, true, "stmt", 0, NULL, on_never, NULL), -ENOTCONN);
    db_close(&db);
    assert_null(db);
    db_close(&db); /* NULL: nothing */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed */
    log_set_level(LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(columns_are_found_by_name_in_any_order),
        cmocka_unit_test(a_missing_column_is_refused_and_logged),
        cmocka_unit_test(an_empty_result_still_has_its_columns),
        cmocka_unit_test(unreachable_server_refuses_queries_and_closes_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
