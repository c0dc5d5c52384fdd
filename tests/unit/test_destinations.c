/*
 * Unit tests for destinations: loading the `destinations` query's rows
 * (a PGresult built in memory, as libpq would hand it over) into entries
 * whose settings a reload replaces whole, and what a destination that cannot
 * be delivered to looks like. The allocation-failure loop checks that a
 * reload that runs out of memory leaves every entry with one whole set of
 * settings, the old or the new, never a mix.
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

#include <libpq-fe.h>

#include "alloc_fail.h"
#include "destinations.h"
#include "ed25519.h"
#include "test_pgresult.h"

/* The columns of destinations_sql, in a different order from the query's
   (they are read by name), and the values of a typical push destination. */
static const char *const columns[][2] = {
    {"rate_limit_per_s", NULL},
    {"id", "inventory"},
    {"push", "t"},
    {"enabled", "t"},
    {"url", "http://127.0.0.1:9/hooks"},
    {"secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
    {"previous_secret", NULL},
    {"feed_token", NULL},
    {"timeout_ms", "5000"},
    {"max_in_flight", "32"},
    {"schedule", "5,60,600"},
    {"max_attempts", "10"},
    {"window_s", "172800"},
    {"breaker_threshold", "20"},
    {"breaker_pause_s", "30"},
    {"max_retry_after_s", "3600"},
    {"dead_blocks", "f"},
    {"paused_for_s", "0"},
    {"consecutive_failures", "0"},
    {"types", NULL},
    {"headers", "{}"},
    {"signing_key", NULL},
    {"previous_signing_key", NULL},
    {"filter", NULL},
    {"held", "f"},
};
#define N_COLUMNS ((int)(sizeof(columns) / sizeof(columns[0])))

/* A result with no rows and every column (text), or every column but `skip`. */
static PGresult *result(const char *skip)
{
    const char *names[N_COLUMNS];
    int n = 0;
    for (int i = 0; i < N_COLUMNS; i++)
        if (skip == NULL || strcmp(columns[i][0], skip) != 0)
            names[n++] = columns[i][0];
    PGresult *res = test_pgresult(n, names, 0, NULL);
    assert_non_null(res);
    return res;
}

/*
 * Appends a row: the typical values, with "name", "value" pairs overriding
 * them (a NULL value is SQL NULL), terminated by a NULL name.
 */
static void add_row(PGresult *res, ...)
{
    int row = PQntuples(res);
    for (int i = 0; i < N_COLUMNS; i++) {
        int col = PQfnumber(res, columns[i][0]);
        if (col < 0)
            continue;
        const char *v = columns[i][1];
        va_list ap;
        va_start(ap, res);
        for (const char *name = va_arg(ap, const char *); name != NULL;
             name = va_arg(ap, const char *)) {
            const char *value = va_arg(ap, const char *);
            if (strcmp(name, columns[i][0]) == 0)
                v = value;
        }
        va_end(ap);
        assert_int_equal(PQsetvalue(res, row, col, (char *)v, v ? (int)strlen(v) : -1), 1);
    }
}

static struct destinations *load(PGresult *res)
{
    struct destinations *ds = destinations_new();
    assert_non_null(ds);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    return ds;
}

static void loads_a_push_destination(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    add_row(res, "types", "{order.created,order.paid}", "headers",
            "{\"Authorization\": \"Bearer t0k\", \"X-Empty\": \"\"}", "previous_secret",
            "whsec_old", "rate_limit_per_s", "12.5", "dead_blocks", "t", NULL);
    struct destinations *ds = destinations_new();
    assert_false(destinations_loaded(ds));
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_true(destinations_loaded(ds));

    struct dest *d = destinations_find(ds, "inventory");
    assert_non_null(d);
    assert_ptr_equal(destinations_first(ds), d);
    assert_null(d->next);
    assert_true(d->present);
    assert_true(d->set.push);
    assert_true(d->set.enabled);
    assert_string_equal(d->set.url, "http://127.0.0.1:9/hooks");
    assert_string_equal(d->set.secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    assert_string_equal(d->set.prev_secret, "whsec_old");
    assert_null(d->set.feed_token);
    assert_string_equal(d->set.types, "{order.created,order.paid}");
    assert_int_equal(d->set.timeout_ms, 5000);
    assert_int_equal(d->set.max_in_flight, 32);
    assert_true(d->set.dead_blocks);
    assert_true(d->set.rate_limit_per_s == 12.5);
    assert_int_equal(d->set.policy.n_schedule, 3);
    assert_true(d->set.policy.schedule[0] == 5 && d->set.policy.schedule[1] == 60 &&
                d->set.policy.schedule[2] == 600);
    assert_int_equal(d->set.policy.max_attempts, 10);
    assert_true(d->set.policy.window_s == 172800);
    assert_int_equal(d->set.policy.breaker_threshold, 20);
    assert_true(d->set.policy.breaker_pause_s == 30);
    assert_true(d->set.policy.max_retry_after_s == 3600);
    /* the request lines sent as they are; libcurl sends "Name;" as an empty header */
    assert_non_null(d->set.headers);
    assert_string_equal(d->set.headers[0], "Authorization: Bearer t0k");
    assert_string_equal(d->set.headers[1], "X-Empty;");
    assert_null(d->set.headers[2]);
    assert_false(d->set.headers_bad);
    assert_null(destinations_find(ds, "nobody"));
    destinations_free(&ds);
    assert_null(ds);
}

static void an_empty_schedule_retries_every_5_seconds(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    add_row(res, "schedule", "", NULL);
    struct destinations *ds = load(res);
    struct dest *d = destinations_find(ds, "inventory");
    assert_int_equal(d->set.policy.n_schedule, 1);
    assert_true(d->set.policy.schedule[0] == 5);
    destinations_free(&ds);
}

static void a_poll_destination_needs_no_url(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    add_row(res, "id", "warehouse", "push", "f", "url", NULL, "secret", NULL, "feed_token",
            "ft_123", NULL);
    struct destinations *ds = load(res);
    struct dest *d = destinations_find(ds, "warehouse");
    assert_true(d->present);
    assert_false(d->set.push);
    assert_string_equal(d->set.feed_token, "ft_123");
    destinations_free(&ds);
}

static void a_push_destination_it_cannot_deliver_to_is_absent(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    add_row(res, "id", "no-secret", "secret", NULL, NULL);
    add_row(res, "id", "no-url", "url", NULL, NULL);
    /* a header ordersync owns, a CR LF in a value, a name twice (case aside) */
    add_row(res, "id", "own-header", "headers", "{\"Content-Type\": \"text/plain\"}", NULL);
    add_row(res, "id", "crlf", "headers", "{\"X-A\": \"v\\r\\nX-Injected: 1\"}", NULL);
    add_row(res, "id", "twice", "headers", "{\"X-A\": \"1\", \"x-a\": \"2\"}", NULL);
    add_row(res, "id", "signed-name", "headers", "{\"webhook-id\": \"x\"}", NULL);
    struct destinations *ds = load(res);
    for (struct dest *d = destinations_first(ds); d != NULL; d = d->next)
        assert_false(d->present);
    const char *refused[] = {"own-header", "crlf", "twice", "signed-name"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
        struct dest *d = destinations_find(ds, refused[i]);
        assert_true(d->set.headers_bad);
        assert_null(d->set.headers);
    }
    destinations_free(&ds);
}

/* RFC 8032's first test key: as a seed, in Svix's layout, and with a wrong public half */
#define SK "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
#define SK_SVIX                                                                                    \
    "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/"                               \
    "tPJZAc6DuFy89qmIyWvAhpo9wdRGg=="
#define SK_BAD                                                                                     \
    "whsk_nWGxne/"                                                                                 \
    "9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="

static void signing_keys_are_parsed_once_and_bad_ones_refused(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    /* a signing key and no secret: delivered to, v1a only */
    add_row(res, "id", "keyed", "secret", NULL, "signing_key", SK, NULL);
    add_row(res, "id", "svix", "signing_key", SK_SVIX, "previous_signing_key", SK, NULL);
    add_row(res, "id", "mismatch", "secret", NULL, "signing_key", SK_BAD, NULL);
    add_row(res, "id", "bad-prev", "signing_key", SK, "previous_signing_key", "whsk_short=", NULL);
    add_row(res, "id", "neither", "secret", NULL, NULL);
    struct destinations *ds = load(res);
    struct dest *keyed = destinations_find(ds, "keyed"), *svix = destinations_find(ds, "svix");
    assert_true(keyed->present);
    assert_non_null(keyed->set.signer);
    assert_null(keyed->set.prev_signer);
    assert_true(svix->present);
    assert_true(ed25519_signer_same(svix->set.signer, keyed->set.signer));
    assert_true(ed25519_signer_same(svix->set.prev_signer, keyed->set.signer));
    const char *refused[] = {"mismatch", "bad-prev"};
    for (size_t i = 0; i < 2; i++) {
        struct dest *d = destinations_find(ds, refused[i]);
        assert_false(d->present);
        assert_true(d->set.keys_bad);
    }
    assert_false(destinations_find(ds, "neither")->present);

    /* the same key in the other layout is the same settings; a new key is not */
    uint64_t gen = keyed->generation;
    res = result(NULL);
    add_row(res, "id", "keyed", "secret", NULL, "signing_key", SK_SVIX, NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_int_equal(keyed->generation, gen);
    res = result(NULL);
    add_row(res, "id", "keyed", "secret", NULL, "signing_key",
            "whsk_TM0Imyj/ltqdtsNG7BFOD1uKMZ81q6Yk2oz27U+4pvs=", NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_true(keyed->generation > gen);
    assert_false(ed25519_signer_same(keyed->set.signer, svix->set.signer));
    destinations_free(&ds);
}

static void a_reload_replaces_the_settings_and_keeps_the_entry(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    add_row(res, NULL);
    add_row(res, "id", "shipping", NULL);
    struct destinations *ds = load(res);
    struct dest *inv = destinations_find(ds, "inventory"),
                *ship = destinations_find(ds, "shipping");
    uint64_t inv_gen = inv->generation, ship_gen = ship->generation;

    /* inventory: what its window is made of changes; shipping: only what is
       read at each request (headers, rate limit) */
    res = result(NULL);
    add_row(res, "types", "{order.paid}", "max_in_flight", "4", NULL);
    add_row(res, "id", "shipping", "headers", "{\"X-Api-Key\": \"k\"}", "rate_limit_per_s", "3",
            NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_ptr_equal(destinations_find(ds, "inventory"), inv);
    assert_ptr_equal(destinations_find(ds, "shipping"), ship);
    assert_true(inv->generation > inv_gen);
    assert_string_equal(inv->set.types, "{order.paid}");
    assert_int_equal(inv->set.max_in_flight, 4);
    assert_int_equal(ship->generation, ship_gen);
    assert_string_equal(ship->set.headers[0], "X-Api-Key: k");
    assert_true(ship->set.rate_limit_per_s == 3);

    /* the same rows again: nothing changes */
    inv_gen = inv->generation;
    res = result(NULL);
    add_row(res, "types", "{order.paid}", "max_in_flight", "4", NULL);
    add_row(res, "id", "shipping", "headers", "{\"X-Api-Key\": \"k\"}", "rate_limit_per_s", "3",
            NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_int_equal(inv->generation, inv_gen);
    assert_int_equal(ship->generation, ship_gen);

    /* a retry schedule one step longer is a change too */
    res = result(NULL);
    add_row(res, "types", "{order.paid}", "max_in_flight", "4", "schedule", "5,60,600,3600", NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_true(inv->generation > inv_gen);
    /* shipping left the table: its entry stays, absent */
    assert_ptr_equal(destinations_find(ds, "shipping"), ship);
    assert_false(ship->present);
    assert_true(inv->present);
    destinations_free(&ds);
}

/* A new filter is a new window (what it holds was read with the old one);
   an operator's pause is not (it is read where the relay looks at its room). */
static void a_filter_change_is_a_new_window_a_pause_is_not(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    add_row(res, NULL);
    struct destinations *ds = load(res);
    struct dest *d = destinations_find(ds, "inventory");
    assert_null(d->set.filter);
    assert_false(d->set.held);
    uint64_t gen = d->generation;

    res = result(NULL);
    add_row(res, "held", "t", NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_true(d->set.held);
    assert_true(d->present);
    assert_int_equal(d->generation, gen);

    res = result(NULL);
    add_row(res, "held", "t", "filter", "($.\"data\".\"currency\" == \"EUR\")", NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_string_equal(d->set.filter, "($.\"data\".\"currency\" == \"EUR\")");
    assert_true(d->generation > gen);
    gen = d->generation;

    /* removing it is a change too */
    res = result(NULL);
    add_row(res, NULL);
    assert_int_equal(destinations_load(ds, res), 0);
    PQclear(res);
    assert_null(d->set.filter);
    assert_false(d->set.held);
    assert_true(d->generation > gen);
    destinations_free(&ds);
}

static void a_missing_column_changes_nothing(void **state)
{
    (void)state;
    PGresult *res = result(NULL);
    add_row(res, NULL);
    struct destinations *ds = load(res);
    struct dest *d = destinations_find(ds, "inventory");
    res = result("max_in_flight");
    add_row(res, "url", "http://elsewhere/", NULL);
    assert_int_equal(destinations_load(ds, res), -EINVAL);
    PQclear(res);
    assert_true(d->present);
    assert_string_equal(d->set.url, "http://127.0.0.1:9/hooks");
    destinations_free(&ds);
}

/* ---------------------------------------------------------------- allocation failures */

struct reload {
    PGresult *before, *after;
};

/* Is `d` exactly one of the two versions of the settings used below? */
static bool whole(const struct dest *d, bool *is_after)
{
    bool after = d->set.url != NULL && strcmp(d->set.url, "http://127.0.0.1:9/v2") == 0;
    *is_after = after;
    const char *secret = after ? "whsec_v2" : "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const char *types = after ? "{order.paid}" : "{order.created}";
    const char *header = after ? "X-Api-Key: v2" : "X-Api-Key: v1";
    return d->set.secret != NULL && strcmp(d->set.secret, secret) == 0 && d->set.types != NULL &&
           strcmp(d->set.types, types) == 0 && d->set.headers != NULL &&
           strcmp(d->set.headers[0], header) == 0 && d->set.max_in_flight == (after ? 8u : 32u) &&
           d->present;
}

static int reload_run(void *ctx)
{
    struct reload *x = ctx;
    struct destinations *ds = destinations_new();
    if (ds == NULL)
        return -ENOMEM;
    int rc = destinations_load(ds, x->before);
    if (rc == 0) {
        uint64_t gen = destinations_find(ds, "inventory")->generation;
        rc = destinations_load(ds, x->after);
        /* every entry holds one whole version; the new one only if the reload said so */
        unsigned n_after = 0, n = 0;
        for (struct dest *d = destinations_first(ds); d != NULL; d = d->next, n++) {
            bool is_after;
            assert_true(whole(d, &is_after));
            n_after += is_after;
        }
        assert_int_equal(n, 2);
        if (rc == 0)
            assert_int_equal(n_after, 2);
        struct dest *inv = destinations_find(ds, "inventory");
        bool inv_after;
        assert_true(whole(inv, &inv_after));
        assert_true(inv_after ? inv->generation > gen : inv->generation == gen);
    } else {
        /* a first load that failed: what was made of an entry is whole */
        for (struct dest *d = destinations_first(ds); d != NULL; d = d->next) {
            bool is_after;
            assert_true(!d->present || d->set.url == NULL || whole(d, &is_after));
        }
    }
    destinations_free(&ds);
    return rc;
}

static void a_reload_out_of_memory_keeps_whole_settings(void **state)
{
    (void)state;
    struct reload x = {result(NULL), result(NULL)};
    add_row(x.before, "types", "{order.created}", "headers", "{\"X-Api-Key\": \"v1\"}", NULL);
    add_row(x.before, "id", "shipping", "types", "{order.created}", "headers",
            "{\"X-Api-Key\": \"v1\"}", NULL);
    add_row(x.after, "url", "http://127.0.0.1:9/v2", "secret", "whsec_v2", "types", "{order.paid}",
            "headers", "{\"X-Api-Key\": \"v2\"}", "max_in_flight", "8", NULL);
    add_row(x.after, "id", "shipping", "url", "http://127.0.0.1:9/v2", "secret", "whsec_v2",
            "types", "{order.paid}", "headers", "{\"X-Api-Key\": \"v2\"}", "max_in_flight", "8",
            NULL);
    assert_true(alloc_fail_loop("destinations reload", reload_run, &x, false) > 0);
    PQclear(x.before);
    PQclear(x.after);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loads_a_push_destination),
        cmocka_unit_test(an_empty_schedule_retries_every_5_seconds),
        cmocka_unit_test(a_poll_destination_needs_no_url),
        cmocka_unit_test(a_push_destination_it_cannot_deliver_to_is_absent),
        cmocka_unit_test(signing_keys_are_parsed_once_and_bad_ones_refused),
        cmocka_unit_test(a_reload_replaces_the_settings_and_keeps_the_entry),
        cmocka_unit_test(a_filter_change_is_a_new_window_a_pause_is_not),
        cmocka_unit_test(a_missing_column_changes_nothing),
        cmocka_unit_test(a_reload_out_of_memory_keeps_whole_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
