/*
 * test_fixture: a file of tests/fixtures read whole, for the unit tests
 * (cmocka: a file that cannot be read fails the test). Header-only.
 */
#ifndef OS_TEST_FIXTURE_H
#define OS_TEST_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>

/* FIXTURES_DIR/name, NUL-terminated; *len its size. Returns a new allocation (free it). */
static inline char *read_fixture(const char *name, size_t *len)
{
    char path[512];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%s/%s", FIXTURES_DIR, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

#endif
