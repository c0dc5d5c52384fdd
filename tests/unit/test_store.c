/*
 * Unit tests for services/ordersync/store: loading the `sources` table from a
 * query result built in memory (columns found by name, in any order), the
 * lookup ingest does per webhook, and reloads that fail without losing the
 * sources already loaded.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "log.h"
#include "store.h"
#include "test_pgresult.h"

/* As store_sources_sql names them, but in another order. */
static const char *const cols[] = {"push",   "enabled", "tolerance_s", "previous_secret",
                                   "secret", "kind",    "id"};
#define N_COLS 7

static int quiet(void **state)
{
    (void)state;
    log_set_level(LOG_ERROR); /* skipped rows log a warning by design */
    return 0;
}

static void loads_every_field_by_name(void **state)
{
    (void)state;
    static const char *const rows[] = {
        /* push enabled tolerance previous secret kind id (sorted by id, as the SQL does) */
        "t", "t", "300", NULL,        "shpss_a",   "shopify",     "a-shop",
        "f", "f", "0",   "whsec_old", "whsec_new", "standard",    "b-feed",
        "f", "t", "60",  NULL,        NULL,        "woocommerce", "c-poll",
    };
    PGresult *res = test_pgresult(N_COLS, cols, 3, rows);
    assert_non_null(res);
    struct store *st = store_new();
    assert_non_null(st);
    assert_false(store_loaded(st));
    assert_int_equal(store_load(st, res), 0);
    PQclear(res);
    assert_true(store_loaded(st));
    assert_int_equal(store_source_count(st), 3);

    const struct source *a = store_find_source(st, "a-shop");
    assert_non_null(a);
    assert_string_equal(a->id, "a-shop");
    assert_string_equal(a->kind->name, "shopify");
    assert_string_equal(a->secret, "shpss_a");
    assert_null(a->previous_secret);
    assert_int_equal(a->tolerance_s, 300);
    assert_true(a->enabled);
    assert_true(a->push);

    const struct source *b = store_find_source(st, "b-feed");
    assert_non_null(b);
    assert_string_equal(b->kind->name, "standard");
    assert_string_equal(b->previous_secret, "whsec_old");
    assert_false(b->enabled);
    assert_false(b->push);

    const struct source *c = store_find_source(st, "c-poll");
    assert_non_null(c);
    assert_null(c->secret); /* a pure poll source has none */
    assert_int_equal(c->tolerance_s, 60);

    assert_null(store_find_source(st, "nope"));
    assert_null(store_find_source(st, ""));
    store_free(&st);
    assert_null(st);
    store_free(&st); /* NULL: nothing */
}

static void a_row_of_unknown_kind_is_skipped(void **state)
{
    (void)state;
    static const char *const rows[] = {
        "t", "t", "300", NULL, "s1", "magento", "a", "t", "t", "300", NULL, "s2", "stripe", "b",
    };
    PGresult *res = test_pgresult(N_COLS, cols, 2, rows);
    struct store *st = store_new();
    assert_int_equal(store_load(st, res), 0);
    PQclear(res);
    assert_int_equal(store_source_count(st), 1);
    assert_null(store_find_source(st, "a"));
    assert_non_null(store_find_source(st, "b"));
    store_free(&st);
}

static void a_failed_reload_keeps_what_was_loaded(void **state)
{
    (void)state;
    static const char *const rows[] = {"t", "t", "300", NULL, "s1", "shopify", "shop"};
    PGresult *res = test_pgresult(N_COLS, cols, 1, rows);
    struct store *st = store_new();
    assert_int_equal(store_load(st, res), 0);
    PQclear(res);

    /* a SELECT that lost a column: refused, the old set stays */
    static const char *const short_cols[] = {"id", "kind", "secret"};
    static const char *const short_rows[] = {"other", "shopify", "s"};
    res = test_pgresult(3, short_cols, 1, short_rows);
    assert_int_equal(store_load(st, res), -EINVAL);
    PQclear(res);
    assert_non_null(store_find_source(st, "shop"));
    assert_null(store_find_source(st, "other"));

    /* an empty table empties the set */
    res = test_pgresult(N_COLS, cols, 0, NULL);
    assert_int_equal(store_load(st, res), 0);
    PQclear(res);
    assert_int_equal(store_source_count(st), 0);
    assert_null(store_find_source(st, "shop"));
    store_free(&st);
}

/* A load of two sources; the result is built outside the loop (libpq allocates its own). */
static int load_two(void *ctx)
{
    const PGresult *res = ctx;
    struct store *st = store_new();
    if (st == NULL)
        return -ENOMEM;
    int rc = store_load(st, res);
    if (rc == 0 && store_find_source(st, "b") == NULL)
        rc = -EIO; /* loaded, yet lost a source: no allocation failure may do that */
    store_free(&st);
    return rc;
}

static void allocation_failures(void **state)
{
    (void)state;
    static const char *const rows[] = {
        "t", "t", "300", "whsec_old", "s1", "shopify", "a",
        "t", "t", "300", NULL,        "s2", "stripe",  "b",
    };
    PGresult *res = test_pgresult(N_COLS, cols, 2, rows);
    assert_non_null(res);
    assert_true(alloc_fail_loop("store", load_two, res, false) > 0);
    PQclear(res);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(loads_every_field_by_name, quiet),
        cmocka_unit_test_setup(a_row_of_unknown_kind_is_skipped, quiet),
        cmocka_unit_test_setup(a_failed_reload_keeps_what_was_loaded, quiet),
        cmocka_unit_test_setup(allocation_failures, quiet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
