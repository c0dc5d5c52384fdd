/* Unit tests for lib/http_client's pure parts: reading Retry-After. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <cmocka.h>

#include "http_client.h"

static void delay_seconds(void **state)
{
    (void)state;
    assert_true(http_client_retry_after("0", 0) == 0);
    assert_true(http_client_retry_after("120", 0) == 120);
    assert_true(http_client_retry_after("86400", 0) == 86400);
    /* far out: a day at most, and never an overflow */
    assert_true(http_client_retry_after("86401", 0) == HTTP_CLIENT_RETRY_AFTER_MAX_S);
    assert_true(http_client_retry_after("99999999999999999999999999999999999999", 0) ==
                HTTP_CLIENT_RETRY_AFTER_MAX_S);
}

static void not_delay_seconds(void **state)
{
    (void)state;
    static const char *const bad[] = {"",    "1e308", "inf", "nan",      "-1",  "+5",
                                      "1.5", "0x10",  "5 s", "infinity", "NaN", "1e3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_true(http_client_retry_after(bad[i], 0) == -1);
}

static void http_date(void **state)
{
    (void)state;
    time_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_true(http_client_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now) == 60);
    assert_true(http_client_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now) == 0);
    assert_true(http_client_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) <=
                HTTP_CLIENT_RETRY_AFTER_MAX_S);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delay_seconds),
        cmocka_unit_test(not_delay_seconds),
        cmocka_unit_test(http_date),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
