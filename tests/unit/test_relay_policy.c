/* Unit tests for relay_policy: each rule of the delivery contract, one by one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "relay_policy.h"

static struct relay_policy policy(void)
{
    struct relay_policy p = {.schedule = {5, 300, 1800},
                             .n_schedule = 3,
                             .max_attempts = 5,
                             .window_s = 3 * 86400,
                             .max_retry_after_s = 3600,
                             .breaker_threshold = 3,
                             .breaker_pause_s = 30};
    return p;
}

static void any_2xx_is_delivered(void **state)
{
    struct relay_policy p = policy();
    for (long st = 200; st < 300; st += 37) {
        struct relay_decision d = relay_policy_decide(&p, 1, st, -1, 0, 1.0);
        assert_int_equal(d.verdict, RELAY_DELIVERED);
        assert_false(d.failure);
    }
}

static void server_errors_and_no_answer_retry_on_the_schedule(void **state)
{
    struct relay_policy p = policy();
    long retryable[] = {0, 408, 425, 429, 500, 502, 503, 504};
    for (size_t i = 0; i < sizeof(retryable) / sizeof(*retryable); i++) {
        struct relay_decision d = relay_policy_decide(&p, 1, retryable[i], -1, 0, 1.0);
        assert_int_equal(d.verdict, RELAY_RETRY);
        assert_true(d.retryable);
        assert_true(d.failure);
        assert_false(d.client_error);
        assert_true(d.delay_s == 5.0);
    }
    /* attempt n uses schedule[n-1]; past the end the last step repeats */
    assert_true(relay_policy_decide(&p, 2, 500, -1, 0, 1.0).delay_s == 300.0);
    assert_true(relay_policy_decide(&p, 3, 500, -1, 0, 1.0).delay_s == 1800.0);
    assert_true(relay_policy_decide(&p, 4, 500, -1, 0, 1.0).delay_s == 1800.0);
}

static void jitter_only_ever_delays(void **state)
{
    struct relay_policy p = policy();
    assert_true(relay_policy_decide(&p, 1, 503, -1, 0, 1.2).delay_s == 6.0);
    assert_true(relay_policy_decide(&p, 1, 503, -1, 0, 0.5).delay_s == 5.0);
}

static void retry_after_is_honoured_up_to_the_bound(void **state)
{
    struct relay_policy p = policy();
    assert_true(relay_policy_decide(&p, 1, 429, 120, 0, 1.0).delay_s == 120.0);
    /* never earlier than the schedule */
    assert_true(relay_policy_decide(&p, 2, 503, 10, 0, 1.0).delay_s == 300.0);
    /* capped by max_retry_after */
    assert_true(relay_policy_decide(&p, 1, 503, 86400, 0, 1.0).delay_s == 3600.0);
    /* a client error's Retry-After is not a reason to wait */
    assert_true(relay_policy_decide(&p, 1, 400, 120, 0, 1.0).delay_s == 5.0);
}

static void other_4xx_retry_but_are_counted(void **state)
{
    struct relay_policy p = policy();
    struct relay_decision d = relay_policy_decide(&p, 1, 400, -1, 0, 1.0);
    assert_int_equal(d.verdict, RELAY_RETRY);
    assert_true(d.client_error);
    assert_false(d.retryable);
    assert_false(d.gone);
}

static void gone_disables(void **state)
{
    struct relay_policy p = policy();
    struct relay_decision d = relay_policy_decide(&p, 1, 410, -1, 0, 1.0);
    assert_true(d.gone);
    assert_false(d.client_error);
    assert_int_equal(d.verdict, RELAY_RETRY);
}

static void dead_after_max_attempts_or_past_the_window(void **state)
{
    struct relay_policy p = policy();
    assert_int_equal(relay_policy_decide(&p, 4, 500, -1, 0, 1.0).verdict, RELAY_RETRY);
    assert_int_equal(relay_policy_decide(&p, 5, 500, -1, 0, 1.0).verdict, RELAY_DEAD);
    /* 3 days minus 1 s old: the next try (5 s) would be past the window */
    assert_int_equal(relay_policy_decide(&p, 1, 500, -1, 3 * 86400 - 1, 1.0).verdict, RELAY_DEAD);
    p.max_attempts = 1;
    assert_int_equal(relay_policy_decide(&p, 1, 500, -1, 0, 1.0).verdict, RELAY_DEAD);
}

static void breaker_pauses_after_the_streak_then_probes_once(void **state)
{
    struct relay_policy p = policy();
    struct relay_breaker b = {0};
    unsigned cap = 0;
    assert_true(relay_breaker_allows(&b, 0, 64, &cap));
    assert_int_equal(cap, 64);
    assert_int_equal(relay_breaker_record(&b, &p, false, 1000), RELAY_BREAKER_SAME);
    assert_int_equal(relay_breaker_record(&b, &p, false, 1000), RELAY_BREAKER_SAME);
    assert_int_equal(relay_breaker_record(&b, &p, false, 1000), RELAY_BREAKER_PAUSED);
    assert_int_equal(b.paused_until, 31000);
    /* more failures of requests already in flight do not extend the pause */
    assert_int_equal(relay_breaker_record(&b, &p, false, 2000), RELAY_BREAKER_SAME);
    assert_false(relay_breaker_allows(&b, 30999, 64, &cap));
    /* the pause is over: one probe at a time */
    assert_true(relay_breaker_allows(&b, 31000, 64, &cap));
    assert_int_equal(cap, 1);
    assert_true(b.probing);
    /* a failed probe pauses again at once */
    assert_int_equal(relay_breaker_record(&b, &p, false, 31500), RELAY_BREAKER_PAUSED);
    assert_false(relay_breaker_allows(&b, 32000, 64, &cap));
    assert_true(relay_breaker_allows(&b, 61500, 64, &cap));
    /* a successful probe resumes */
    assert_int_equal(relay_breaker_record(&b, &p, true, 61600), RELAY_BREAKER_RESUMED);
    assert_true(relay_breaker_allows(&b, 61600, 64, &cap));
    assert_int_equal(cap, 64);
    assert_int_equal(b.failures, 0);
    /* success on a healthy destination changes nothing */
    assert_int_equal(relay_breaker_record(&b, &p, true, 61700), RELAY_BREAKER_SAME);
}

static void breaker_forgets_a_short_streak_without_persisting(void **state)
{
    struct relay_policy p = policy();
    struct relay_breaker b = {0};
    unsigned cap = 0;
    /* a receiver failing now and then: nothing to persist, nothing to log */
    assert_int_equal(relay_breaker_record(&b, &p, false, 1000), RELAY_BREAKER_SAME);
    assert_int_equal(relay_breaker_record(&b, &p, false, 1000), RELAY_BREAKER_SAME);
    assert_int_equal(relay_breaker_record(&b, &p, true, 1100), RELAY_BREAKER_SAME);
    assert_int_equal(b.failures, 0);
    assert_true(relay_breaker_allows(&b, 1100, 64, &cap));
    assert_int_equal(cap, 64);
    /* the streak starts again from zero */
    assert_int_equal(relay_breaker_record(&b, &p, false, 1200), RELAY_BREAKER_SAME);
    assert_int_equal(relay_breaker_record(&b, &p, false, 1200), RELAY_BREAKER_SAME);
    assert_int_equal(relay_breaker_record(&b, &p, false, 1200), RELAY_BREAKER_PAUSED);
}

static void breaker_follows_other_instances(void **state)
{
    struct relay_breaker b = {0};
    unsigned cap;
    relay_breaker_sync(&b, 10, 20, 1000);
    assert_false(relay_breaker_allows(&b, 5000, 64, &cap));
    assert_int_equal(b.failures, 20);
    relay_breaker_sync(&b, 0, 0, 6000);
    assert_true(relay_breaker_allows(&b, 6000, 64, &cap));
    assert_int_equal(cap, 64);
    /* an operator cleared the pause but not the count: the next success persists the reset */
    struct relay_policy p = policy();
    relay_breaker_sync(&b, 10, 20, 7000);
    relay_breaker_sync(&b, 0, 20, 8000);
    assert_true(relay_breaker_allows(&b, 8000, 64, &cap));
    assert_int_equal(relay_breaker_record(&b, &p, true, 8100), RELAY_BREAKER_RESUMED);
    assert_int_equal(b.failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(any_2xx_is_delivered),
        cmocka_unit_test(server_errors_and_no_answer_retry_on_the_schedule),
        cmocka_unit_test(jitter_only_ever_delays),
        cmocka_unit_test(retry_after_is_honoured_up_to_the_bound),
        cmocka_unit_test(other_4xx_retry_but_are_counted),
        cmocka_unit_test(gone_disables),
        cmocka_unit_test(dead_after_max_attempts_or_past_the_window),
        cmocka_unit_test(breaker_pauses_after_the_streak_then_probes_once),
        cmocka_unit_test(breaker_forgets_a_short_streak_without_persisting),
        cmocka_unit_test(breaker_follows_other_instances),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
