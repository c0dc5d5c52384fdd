/* Unit tests for console_throttle: free failures, growing waits, forgetting, and a bounded table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "console_throttle.h"

#define T0 ((uint64_t)1000000)

static struct console_throttle *fresh(void)
{
    struct console_throttle *t = console_throttle_new();
    assert_non_null(t);
    return t;
}

static void a_few_mistakes_cost_nothing(void **state)
{
    struct console_throttle *t = fresh();
    for (unsigned i = 1; i <= CONSOLE_THROTTLE_FREE; i++) {
        assert_int_equal(console_throttle_wait(t, "192.0.2.1", T0), 0);
        unsigned n = 0;
        assert_int_equal(console_throttle_failed(t, "192.0.2.1", T0, &n), 0);
        assert_int_equal(n, i);
    }
    assert_int_equal(console_throttle_wait(t, "192.0.2.1", T0), 0);
    console_throttle_free(&t);
    assert_null(t);
}

static void then_the_wait_doubles_up_to_its_cap(void **state)
{
    struct console_throttle *t = fresh();
    uint64_t now = T0;
    for (unsigned i = 0; i < CONSOLE_THROTTLE_FREE; i++)
        console_throttle_failed(t, "192.0.2.1", now, NULL);
    uint64_t expect = CONSOLE_THROTTLE_FIRST_DELAY_MS, last = 0;
    for (int i = 0; i < 40; i++) {
        assert_int_equal(console_throttle_wait(t, "192.0.2.1", now), 0);
        uint64_t d = console_throttle_failed(t, "192.0.2.1", now, NULL);
        assert_int_equal(d, expect < CONSOLE_THROTTLE_MAX_DELAY_MS ? expect
                                                                   : CONSOLE_THROTTLE_MAX_DELAY_MS);
        assert_true(d >= last);
        last = d;
        /* closed for exactly that long: one millisecond before, still waiting */
        assert_int_equal(console_throttle_wait(t, "192.0.2.1", now), d);
        assert_int_equal(console_throttle_wait(t, "192.0.2.1", now + d - 1), 1);
        now += d;
        expect *= 2;
    }
    assert_int_equal(last, CONSOLE_THROTTLE_MAX_DELAY_MS);
    console_throttle_free(&t);
}

static void other_addresses_are_not_held_back(void **state)
{
    struct console_throttle *t = fresh();
    for (unsigned i = 0; i <= CONSOLE_THROTTLE_FREE; i++)
        console_throttle_failed(t, "192.0.2.1", T0, NULL);
    assert_true(console_throttle_wait(t, "192.0.2.1", T0) > 0);
    assert_int_equal(console_throttle_wait(t, "192.0.2.2", T0), 0);
    assert_int_equal(console_throttle_wait(t, "2001:db8::1", T0), 0);
    console_throttle_free(&t);
}

static void an_ipv6_host_counts_by_its_64(void **state)
{
    struct console_throttle *t = fresh();
    char a[64];
    for (unsigned i = 0; i <= CONSOLE_THROTTLE_FREE; i++) {
        /* a new address of the same /64 for every guess */
        snprintf(a, sizeof(a), "2001:db8:1:2::%x", i + 1);
        console_throttle_failed(t, a, T0, NULL);
    }
    assert_true(console_throttle_wait(t, "2001:db8:1:2:ffff::1", T0) > 0);
    assert_int_equal(console_throttle_wait(t, "2001:db8:1:3::1", T0), 0);
    /* IPv4 in IPv6 clothes is its IPv4 address, whole */
    for (unsigned i = 0; i <= CONSOLE_THROTTLE_FREE; i++)
        console_throttle_failed(t, "::ffff:192.0.2.7", T0, NULL);
    assert_true(console_throttle_wait(t, "192.0.2.7", T0) > 0);
    assert_int_equal(console_throttle_wait(t, "192.0.2.8", T0), 0);
    console_throttle_free(&t);
}

static void the_right_token_forgives_and_time_forgets(void **state)
{
    struct console_throttle *t = fresh();
    for (unsigned i = 0; i < CONSOLE_THROTTLE_FREE; i++)
        console_throttle_failed(t, "192.0.2.1", T0, NULL);
    console_throttle_succeeded(t, "192.0.2.1");
    unsigned n = 0;
    assert_int_equal(console_throttle_failed(t, "192.0.2.1", T0, &n), 0);
    assert_int_equal(n, 1);
    /* an hour without a failure, and it starts from zero */
    for (unsigned i = 0; i < 10; i++)
        console_throttle_failed(t, "192.0.2.1", T0, NULL);
    uint64_t later = T0 + CONSOLE_THROTTLE_FORGET_MS + CONSOLE_THROTTLE_MAX_DELAY_MS;
    assert_int_equal(console_throttle_wait(t, "192.0.2.1", later), 0);
    assert_int_equal(console_throttle_failed(t, "192.0.2.1", later, &n), 0);
    assert_int_equal(n, 1);
    console_throttle_free(&t);
}

static void many_addresses_share_one_budget_once_the_table_is_full(void **state)
{
    struct console_throttle *t = fresh();
    char a[32];
    /* one failure each from more addresses than the table holds */
    for (unsigned i = 0; i < CONSOLE_THROTTLE_ENTRIES; i++) {
        snprintf(a, sizeof(a), "10.%u.%u.1", i / 256, i % 256);
        assert_int_equal(console_throttle_failed(t, a, T0, NULL), 0);
    }
    assert_int_equal(console_throttle_tracked(t, T0), CONSOLE_THROTTLE_ENTRIES);
    /* the rest of the spray: each address is new, but they draw on one entry */
    uint64_t d = 0;
    for (unsigned i = 0; i <= CONSOLE_THROTTLE_FREE; i++) {
        snprintf(a, sizeof(a), "172.16.%u.%u", i / 256, i % 256);
        assert_int_equal(console_throttle_wait(t, a, T0), 0);
        d = console_throttle_failed(t, a, T0, NULL);
    }
    assert_int_equal(d, CONSOLE_THROTTLE_FIRST_DELAY_MS);
    assert_true(console_throttle_wait(t, "172.16.200.200", T0) > 0);
    /* the table did not grow, and the addresses it holds keep their own count */
    assert_int_equal(console_throttle_tracked(t, T0), CONSOLE_THROTTLE_ENTRIES);
    assert_int_equal(console_throttle_wait(t, "10.0.0.1", T0), 0);
    /* once entries are forgotten, new addresses get one of their own again */
    uint64_t later = T0 + CONSOLE_THROTTLE_FORGET_MS;
    assert_int_equal(console_throttle_tracked(t, later), 0);
    assert_int_equal(console_throttle_wait(t, "172.16.200.200", later), 0);
    console_throttle_free(&t);
}

static void what_is_not_an_address_still_counts(void **state)
{
    struct console_throttle *t = fresh();
    for (unsigned i = 0; i <= CONSOLE_THROTTLE_FREE; i++)
        console_throttle_failed(t, "unknown", T0, NULL);
    assert_true(console_throttle_wait(t, "unknown", T0) > 0);
    assert_int_equal(console_throttle_wait(t, NULL, T0), 0);
    console_throttle_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_few_mistakes_cost_nothing),
        cmocka_unit_test(then_the_wait_doubles_up_to_its_cap),
        cmocka_unit_test(other_addresses_are_not_held_back),
        cmocka_unit_test(an_ipv6_host_counts_by_its_64),
        cmocka_unit_test(the_right_token_forgives_and_time_forgets),
        cmocka_unit_test(many_addresses_share_one_budget_once_the_table_is_full),
        cmocka_unit_test(what_is_not_an_address_still_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
