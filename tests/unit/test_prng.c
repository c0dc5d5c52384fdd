/*
 * Unit tests for prng: draws do not repeat, every bit varies, and each
 * thread has its own seeded generator (two threads do not draw the same
 * sequence).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "prng.h"

#define DRAWS 4096

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void draws_differ_and_every_bit_varies(void **state)
{
    (void)state;
    static uint64_t v[DRAWS];
    unsigned ones[64] = {0};
    for (int i = 0; i < DRAWS; i++) {
        v[i] = prng_u64();
        for (int b = 0; b < 64; b++)
            ones[b] += (v[i] >> b) & 1;
    }
    qsort(v, DRAWS, sizeof(v[0]), cmp_u64);
    for (int i = 1; i < DRAWS; i++)
        assert_true(v[i] != v[i - 1]);
    /* each bit is set about half the time (4096 draws: 2048 +- 6 sigma = 192) */
    for (int b = 0; b < 64; b++) {
        assert_true(ones[b] > DRAWS / 2 - 192);
        assert_true(ones[b] < DRAWS / 2 + 192);
    }
}

static void *draw_some(void *arg)
{
    uint64_t *out = arg;
    for (int i = 0; i < 8; i++)
        out[i] = prng_u64();
    return NULL;
}

static void threads_draw_their_own_sequences(void **state)
{
    (void)state;
    uint64_t a[8], b[8];
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, draw_some, a), 0);
    assert_int_equal(pthread_create(&tb, NULL, draw_some, b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_memory_not_equal(a, b, sizeof(a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(draws_differ_and_every_bit_varies),
        cmocka_unit_test(threads_draw_their_own_sequences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
