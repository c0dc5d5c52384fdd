/*
 * Unit tests for services/ordersync/store: loading the `sources` table from a
 * query result built in memory (columns found by name, in any order), the
 * lookup ingest does per webhook, the secrets' pre-keyed HMAC keys (kept
 * while a secret is unchanged, keyed afresh when it changes), and reloads
 * that fail without losing the sources already loaded.
 */
#include <errno.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

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

/* The MAC of "m" under `key`, by OpenSSL's one-shot HMAC (not lib/hmac). */
static void one_shot_mac(const char *key, unsigned char out[HMAC_SHA256_LEN])
{
    unsigned int n = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)"m", 1, out, &n);
    assert_int_equal(n, HMAC_SHA256_LEN);
}

/* Does the key compute the MAC `want`? (A pre-keyed MAC allocates nothing.) */
static bool key_works(struct hmac_sha256 *key, const unsigned char want[HMAC_SHA256_LEN])
{
    const void *parts[1] = {"m"};
    size_t lens[1] = {1};
    unsigned char got[HMAC_SHA256_LEN];
    return key != NULL && hmac_sha256_parts(key, parts, lens, 1, got) == 0 &&
           memcmp(got, want, HMAC_SHA256_LEN) == 0;
}

struct load_case {
    const PGresult *res; /* built outside the loop (libpq allocates its own) */
    unsigned char mac_old[HMAC_SHA256_LEN], mac_s1[HMAC_SHA256_LEN], mac_s2[HMAC_SHA256_LEN];
};

/* A load of two sources: all of it, keys included, or an error. */
static int load_two(void *ctx)
{
    const struct load_case *c = ctx;
    struct store *st = store_new();
    if (st == NULL)
        return -ENOMEM;
    int rc = store_load(st, c->res);
    const struct source *a = store_find_source(st, "a"), *b = store_find_source(st, "b");
    /* loaded, yet lost a source or a key: no allocation failure may do that */
    if (rc == 0 && (a == NULL || b == NULL || !key_works(a->keys[0], c->mac_s1) ||
                    !key_works(a->keys[1], c->mac_old) || !key_works(b->keys[0], c->mac_s2) ||
                    b->keys[1] != NULL))
        rc = -EIO;
    store_free(&st);
    return rc;
}

/* The keys a reload keeps, rekeys and drops, by source and secret. */
static void keys_follow_the_secrets(void **state)
{
    (void)state;
    unsigned char mac_s1[HMAC_SHA256_LEN], mac_s2[HMAC_SHA256_LEN], mac_s3[HMAC_SHA256_LEN];
    one_shot_mac("s1", mac_s1);
    one_shot_mac("s2", mac_s2);
    one_shot_mac("s3", mac_s3);
    static const char *const first[] = {
        "t", "t", "300", NULL, "s1", "shopify",     "a",      /* */
        "t", "t", "300", NULL, "s2", "woocommerce", "b",      /* */
        "f", "t", "60",  NULL, NULL, "shopify",     "c-poll", /* no secret: no key */
        "t", "t", "300", NULL, "",   "shopify",     "d-empty",
    };
    PGresult *res = test_pgresult(N_COLS, cols, 4, first);
    struct store *st = store_new();
    assert_int_equal(store_load(st, res), 0);
    PQclear(res);
    const struct source *a = store_find_source(st, "a"), *b = store_find_source(st, "b");
    assert_true(key_works(a->keys[0], mac_s1));
    assert_null(a->keys[1]);
    assert_true(key_works(b->keys[0], mac_s2));
    assert_null(store_find_source(st, "c-poll")->keys[0]);
    assert_null(store_find_source(st, "d-empty")->keys[0]);
    struct hmac_sha256 *a_key = a->keys[0], *b_key = b->keys[0];

    /* a rotates (s3 new, s1 previous); b is unchanged */
    static const char *const rotated[] = {
        "t", "t", "300", "s1", "s3", "shopify",     "a", /* */
        "t", "t", "300", NULL, "s2", "woocommerce", "b",
    };
    res = test_pgresult(N_COLS, cols, 2, rotated);
    assert_int_equal(store_load(st, res), 0);
    PQclear(res);
    a = store_find_source(st, "a");
    b = store_find_source(st, "b");
    assert_true(key_works(a->keys[0], mac_s3));
    assert_ptr_equal(a->keys[1], a_key); /* the old current secret's key, kept as the previous */
    assert_true(key_works(a->keys[1], mac_s1));
    assert_ptr_equal(b->keys[0], b_key); /* unchanged: not keyed again */

    /* the rotation ends; b changes its secret */
    static const char *const done[] = {
        "t", "t", "300", NULL, "s3", "shopify",     "a", /* */
        "t", "t", "300", NULL, "s1", "woocommerce", "b",
    };
    res = test_pgresult(N_COLS, cols, 2, done);
    assert_int_equal(store_load(st, res), 0);
    PQclear(res);
    a = store_find_source(st, "a");
    b = store_find_source(st, "b");
    assert_true(key_works(a->keys[0], mac_s3));
    assert_null(a->keys[1]);
    assert_true(key_works(b->keys[0], mac_s1));
    assert_false(key_works(b->keys[0], mac_s2));
    store_free(&st);
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
    struct load_case c = {.res = res};
    one_shot_mac("whsec_old", c.mac_old);
    one_shot_mac("s1", c.mac_s1);
    one_shot_mac("s2", c.mac_s2);
    /*
     * Absorbed: OpenSSL does without some allocations of its own (a cache
     * of algorithm names) and keys anyway; load_two then checks that the
     * load is whole and every key computes the right MAC.
     */
    assert_true(alloc_fail_loop("store", load_two, &c, true) > 0);
    PQclear(res);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(loads_every_field_by_name, quiet),
        cmocka_unit_test_setup(a_row_of_unknown_kind_is_skipped, quiet),
        cmocka_unit_test_setup(a_failed_reload_keeps_what_was_loaded, quiet),
        cmocka_unit_test_setup(keys_follow_the_secrets, quiet),
        cmocka_unit_test_setup(allocation_failures, quiet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
