/* Unit tests for relay_rate: the token bucket of a destination's rate limit, rule by rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "relay_rate.h"

static struct relay_rate limited(double per_s, uint64_t now)
{
    struct relay_rate b = {0};
    relay_rate_set(&b, per_s, now);
    return b;
}

static void no_limit_never_holds_back(void **state)
{
    struct relay_rate b = {0};
    relay_rate_set(&b, 0, 1000);
    assert_int_equal(relay_rate_room(&b, 1000), UINT32_MAX);
    relay_rate_take(&b, 1000, 1000000);
    assert_int_equal(relay_rate_room(&b, 1000), UINT32_MAX);
    assert_int_equal(relay_rate_wait_ms(&b, 1000), 0);
}

static void the_burst_is_a_tenth_of_a_second_and_at_least_one(void **state)
{
    assert_true(relay_rate_burst(20) == 2.0);
    assert_true(relay_rate_burst(1000) == 100.0);
    assert_true(relay_rate_burst(5) == 1.0);
    assert_true(relay_rate_burst(0.5) == 1.0);
}

static void a_new_limit_starts_empty(void **state)
{
    struct relay_rate b = limited(20, 5000);
    assert_int_equal(relay_rate_room(&b, 5000), 0);
    assert_int_equal(relay_rate_wait_ms(&b, 5000), 50);
    assert_int_equal(relay_rate_room(&b, 5049), 0);
    assert_int_equal(relay_rate_room(&b, 5050), 1);
}

static void tokens_accrue_up_to_the_burst(void **state)
{
    struct relay_rate b = limited(20, 0);
    /* an idle hour earns a burst, not 72,000 requests */
    assert_int_equal(relay_rate_room(&b, 3600 * 1000), 2);
    relay_rate_take(&b, 3600 * 1000, 2);
    assert_int_equal(relay_rate_room(&b, 3600 * 1000), 0);
    assert_int_equal(relay_rate_wait_ms(&b, 3600 * 1000), 50);
}

/* The property the limit is for: in any window of t seconds at most burst + per_s * t start. */
static void requests_in_any_window_stay_within_burst_plus_rate(void **state)
{
    const double per_s = 20;
    struct relay_rate b = limited(per_s, 0);
    /* a sender that always has work: it starts what the bucket allows every ms */
    static uint64_t starts[4000];
    unsigned n = 0;
    for (uint64_t t = 0; t < 60 * 1000 && n < 4000; t++) {
        uint32_t room = relay_rate_room(&b, t);
        for (uint32_t i = 0; i < room && n < 4000; i++)
            starts[n++] = t;
        relay_rate_take(&b, t, room);
    }
    assert_true(n >= 60 * per_s - 1); /* the limit is reached, not just respected */
    for (unsigned i = 0; i < n; i++) {
        unsigned in_window = 0;
        for (unsigned j = i; j < n && starts[j] < starts[i] + 1000; j++)
            in_window++;
        assert_true(in_window <= per_s + relay_rate_burst(per_s));
    }
}

static void waiting_for_the_timer_gets_exactly_one_token(void **state)
{
    struct relay_rate b = limited(3, 0); /* 333.3 ms a token */
    uint64_t t = 0;
    for (int i = 0; i < 30; i++) {
        uint64_t w = relay_rate_wait_ms(&b, t);
        assert_true(w > 0);
        assert_int_equal(relay_rate_room(&b, t + w - 1), 0); /* the timer is not early */
        t += w;
        assert_int_equal(relay_rate_room(&b, t), 1);
        relay_rate_take(&b, t, 1);
    }
    /* 30 requests took 10 s, give or take the rounding of each wait to a ms */
    assert_true(t >= 10000 && t <= 10030);
}

static void lent_tokens_are_not_spent_twice(void **state)
{
    struct relay_rate b = limited(20, 0);
    assert_int_equal(relay_rate_room(&b, 1000), 2);
    relay_rate_lend(&b, 1000, 2);
    assert_int_equal(relay_rate_room(&b, 1000), 0);
    /* while the claim is out, time earns nothing beyond the burst */
    assert_int_equal(relay_rate_room(&b, 5000), 0);
    /* it found one row: one token comes back, and the row's request takes it */
    relay_rate_repay(&b, 2);
    assert_int_equal(relay_rate_room(&b, 5000), 2);
    relay_rate_take(&b, 5000, 1);
    assert_int_equal(relay_rate_room(&b, 5000), 1);
}

static void lending_and_repaying_keeps_the_window_bound(void **state)
{
    /* claims lend the whole room, come back 7 ms later having used half, and
       the stream takes whatever is left each ms: still burst + rate a second */
    const double per_s = 50;
    struct relay_rate b = limited(per_s, 0);
    static uint64_t starts[8000];
    unsigned n = 0;
    uint32_t out = 0;
    uint64_t back_at = 0;
    for (uint64_t t = 0; t < 30 * 1000 && n < 8000; t++) {
        if (out > 0 && t == back_at) {
            relay_rate_repay(&b, out);
            uint32_t used = out / 2 + out % 2;
            for (uint32_t i = 0; i < used; i++)
                starts[n++] = t;
            relay_rate_take(&b, t, used);
            out = 0;
        }
        uint32_t room = relay_rate_room(&b, t);
        if (out == 0 && room > 0 && t % 3 == 0) {
            relay_rate_lend(&b, t, room);
            out = room;
            back_at = t + 7;
            continue;
        }
        for (uint32_t i = 0; i < room && n < 8000; i++)
            starts[n++] = t;
        relay_rate_take(&b, t, room);
    }
    for (unsigned i = 0; i < n; i++) {
        unsigned in_window = 0;
        for (unsigned j = i; j < n && starts[j] < starts[i] + 1000; j++)
            in_window++;
        assert_true(in_window <= per_s + relay_rate_burst(per_s));
    }
}

static void repaying_more_than_was_lent_adds_nothing(void **state)
{
    struct relay_rate b = limited(10, 0);
    assert_int_equal(relay_rate_room(&b, 1000), 1);
    relay_rate_lend(&b, 1000, 1);
    relay_rate_repay(&b, 5);
    assert_int_equal(relay_rate_room(&b, 1000), 1);
    relay_rate_repay(&b, 5);
    assert_int_equal(relay_rate_room(&b, 1000), 1);
}

static void a_new_owner_starts_empty(void **state)
{
    struct relay_rate b = limited(20, 0);
    assert_int_equal(relay_rate_room(&b, 10000), 2);
    relay_rate_empty(&b, 10000);
    assert_int_equal(relay_rate_room(&b, 10000), 0);
    assert_int_equal(relay_rate_wait_ms(&b, 10000), 50);
    /* a debt is not forgiven by a hand-over */
    relay_rate_take(&b, 10050, 3);
    relay_rate_empty(&b, 10050);
    assert_int_equal(relay_rate_wait_ms(&b, 10050), 150);
    assert_int_equal(relay_rate_room(&b, 10199), 0);
    assert_int_equal(relay_rate_room(&b, 10200), 1);
}

static void a_debt_is_paid_by_time(void **state)
{
    struct relay_rate b = limited(10, 0);
    relay_rate_take(&b, 0, 3);
    assert_int_equal(relay_rate_room(&b, 0), 0);
    assert_int_equal(relay_rate_wait_ms(&b, 0), 400);
    assert_int_equal(relay_rate_room(&b, 399), 0);
    assert_int_equal(relay_rate_room(&b, 400), 1);
}

static void a_changed_limit_keeps_what_was_earned_within_its_burst(void **state)
{
    struct relay_rate b = limited(100, 0);
    assert_int_equal(relay_rate_room(&b, 10000), 10);
    relay_rate_set(&b, 20, 10000);
    assert_int_equal(relay_rate_room(&b, 10000), 2);
    /* the same limit again changes nothing */
    relay_rate_take(&b, 10000, 1);
    relay_rate_set(&b, 20, 10000);
    assert_int_equal(relay_rate_room(&b, 10000), 1);
    /* a higher one accrues faster from now on */
    relay_rate_set(&b, 1000, 10000);
    assert_int_equal(relay_rate_room(&b, 10010), 11);
}

static void removing_and_setting_a_limit_again_starts_empty(void **state)
{
    struct relay_rate b = limited(20, 0);
    assert_int_equal(relay_rate_room(&b, 10000), 2);
    relay_rate_set(&b, 0, 10000);
    assert_int_equal(relay_rate_room(&b, 10000), UINT32_MAX);
    relay_rate_set(&b, 20, 20000);
    assert_int_equal(relay_rate_room(&b, 20000), 0);
}

static void a_slow_limit_waits_its_whole_period(void **state)
{
    struct relay_rate b = limited(0.5, 0);
    assert_int_equal(relay_rate_wait_ms(&b, 0), 2000);
    assert_int_equal(relay_rate_room(&b, 2000), 1);
    relay_rate_take(&b, 2000, 1);
    /* burst of one: an idle minute still allows a single request */
    assert_int_equal(relay_rate_room(&b, 62000), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_limit_never_holds_back),
        cmocka_unit_test(the_burst_is_a_tenth_of_a_second_and_at_least_one),
        cmocka_unit_test(a_new_limit_starts_empty),
        cmocka_unit_test(tokens_accrue_up_to_the_burst),
        cmocka_unit_test(requests_in_any_window_stay_within_burst_plus_rate),
        cmocka_unit_test(waiting_for_the_timer_gets_exactly_one_token),
        cmocka_unit_test(lent_tokens_are_not_spent_twice),
        cmocka_unit_test(lending_and_repaying_keeps_the_window_bound),
        cmocka_unit_test(repaying_more_than_was_lent_adds_nothing),
        cmocka_unit_test(a_new_owner_starts_empty),
        cmocka_unit_test(a_debt_is_paid_by_time),
        cmocka_unit_test(a_changed_limit_keeps_what_was_earned_within_its_burst),
        cmocka_unit_test(removing_and_setting_a_limit_again_starts_empty),
        cmocka_unit_test(a_slow_limit_waits_its_whole_period),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
