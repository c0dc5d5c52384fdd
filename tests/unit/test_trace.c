/* Unit tests for lib/trace: which traceparent values are taken, which ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "trace.h"

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"

static void valid_values_give_their_trace_id(void **state)
{
    char id[TRACE_ID_HEX + 1];
    assert_true(trace_parse_parent("00-" TID "-00f067aa0ba902b7-01", id));
    assert_string_equal(id, TID);
    assert_true(trace_parse_parent("  00-" TID "-00f067aa0ba902b7-00 ", id));
    /* a later version may add fields after the flags */
    assert_true(trace_parse_parent("01-" TID "-00f067aa0ba902b7-01-extra", id));
    assert_string_equal(id, TID);
}

static void invalid_values_are_ignored(void **state)
{
    const char *bad[] = {
        NULL,
        "",
        "00-" TID "-00f067aa0ba902b7",                             /* no flags */
        "00-" TID "-00f067aa0ba902b7-01-extra",                    /* v00 is exact */
        "ff-" TID "-00f067aa0ba902b7-01",                          /* forbidden version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-" TID "-0000000000000000-01",                          /* zero parent id */
        "00-" TID "-00f067aa0ba902b7-0g",                          /* bad flags */
        "00_" TID "-00f067aa0ba902b7-01",
        "0-" TID "-00f067aa0ba902b7-01",
        "00-" TID "x-00f067aa0ba902b7-01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        char id[TRACE_ID_HEX + 1] = "x";
        assert_false(trace_parse_parent(bad[i], id));
        assert_string_equal(id, "");
    }
}

static void new_ids_and_parents(void **state)
{
    char a[TRACE_ID_HEX + 1], b[TRACE_ID_HEX + 1], p[TRACE_PARENT_LEN + 1], id[TRACE_ID_HEX + 1];
    assert_true(trace_new_id(a));
    assert_true(trace_new_id(b));
    assert_int_equal(strlen(a), TRACE_ID_HEX);
    assert_string_not_equal(a, b);
    assert_true(trace_new_parent(a, p));
    assert_int_equal(strlen(p), TRACE_PARENT_LEN);
    /* what we send is what we would accept, with the same trace id */
    assert_true(trace_parse_parent(p, id));
    assert_string_equal(id, a);
    assert_false(trace_new_parent("short", p));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(valid_values_give_their_trace_id),
        cmocka_unit_test(invalid_values_are_ignored),
        cmocka_unit_test(new_ids_and_parents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
