/* Unit tests for the reason phrases of lib/http_response: every status the services send. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "http.h"

static void a_redirect_after_a_form_is_see_other(void **state)
{
    assert_string_equal(http_status_reason(303), "See Other");
}

/* Every status ordersync and the downstream service answer with (grep the sources). */
static void every_status_sent_has_its_rfc_phrase(void **state)
{
    static const struct {
        int status;
        const char *reason;
    } sent[] = {
        {100, "Continue"},
        {200, "OK"},
        {303, "See Other"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {410, "Gone"},
        {411, "Length Required"},
        {413, "Content Too Large"},
        {415, "Unsupported Media Type"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {503, "Service Unavailable"},
    };
    for (size_t i = 0; i < sizeof(sent) / sizeof(sent[0]); i++)
        assert_string_equal(http_status_reason(sent[i].status), sent[i].reason);
}

static void no_status_is_unknown(void **state)
{
    for (int st = 100; st < 600; st++) {
        const char *r = http_status_reason(st);
        assert_non_null(r);
        assert_true(strlen(r) > 0);
        assert_string_not_equal(r, "Unknown");
    }
    /* a status of no RFC gets its class's phrase */
    assert_string_equal(http_status_reason(299), "Success");
    assert_string_equal(http_status_reason(499), "Client Error");
    assert_string_equal(http_status_reason(599), "Server Error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_redirect_after_a_form_is_see_other),
        cmocka_unit_test(every_status_sent_has_its_rfc_phrase),
        cmocka_unit_test(no_status_is_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
