/* Unit tests for lib/buf: the cap is the contract every HTTP limit relies on. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

static void append_within_cap(void **state)
{
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_append(&b, "abcd", 4), 0);
    assert_int_equal(buf_append(&b, "efgh", 4), 0);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "abcdefgh");
    buf_free(&b);
}

static void append_past_cap_refused_unchanged(void **state)
{
    struct buf b;
    buf_init(&b, 8);
    assert_int_equal(buf_append(&b, "abcdef", 6), 0);
    assert_int_equal(buf_append(&b, "xyz", 3), -E2BIG);
    assert_int_equal(b.len, 6);
    assert_string_equal(b.data, "abcdef");
    assert_true(b.alloc <= 9);
    buf_free(&b);
}

static void printf_and_consume(void **state)
{
    struct buf b;
    buf_init(&b, 64);
    assert_int_equal(buf_printf(&b, "%s-%d", "n", 42), 0);
    assert_string_equal(b.data, "n-42");
    buf_consume(&b, 2);
    assert_string_equal(b.data, "42");
    assert_int_equal(buf_printf(&b, "%0100d", 1), -E2BIG);
    assert_string_equal(b.data, "42");
    size_t len;
    char *p = buf_steal(&b, &len);
    assert_int_equal(len, 2);
    assert_null(b.data);
    free(p);
}

static void reserve_then_advance(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 16);
    assert_int_equal(buf_append_str(&b, "ab"), 0);
    assert_int_equal(buf_reserve(&b, 15), -E2BIG);
    assert_int_equal(b.len, 2);
    assert_int_equal(buf_reserve(&b, 14), 0);
    assert_true(b.alloc >= 17);
    char *at = b.data + b.len;
    memcpy(at, "cdef", 4);
    buf_advance(&b, 4);
    assert_string_equal(b.data, "abcdef");
    assert_int_equal(b.len, 6);
    /* room already there: no reallocation */
    char *before = b.data;
    assert_int_equal(buf_reserve(&b, 10), 0);
    assert_ptr_equal(b.data, before);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_within_cap),
        cmocka_unit_test(append_past_cap_refused_unchanged),
        cmocka_unit_test(printf_and_consume),
        cmocka_unit_test(reserve_then_advance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
