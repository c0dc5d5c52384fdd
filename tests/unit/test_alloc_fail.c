/*
 * The allocation-failure harness itself: every allocator it claims to route
 * (libc's through --wrap, jansson's, OpenSSL's) is counted and can fail, and
 * the loop finds a code path that claims success after a failed allocation.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "alloc_fail.h"
#include "buf.h"

static void counts_and_fails_libc(void **state)
{
    (void)state;
    alloc_fail_at(2);
    char *a = strdup("a");
    char *b = strdup("b");
    assert_non_null(a);
    assert_null(b);
    assert_true(alloc_fail_triggered());
    assert_int_equal(alloc_fail_count(), 2);
    alloc_fail_at(0);
    free(a);
}

static void counts_jansson_and_openssl(void **state)
{
    (void)state;
    alloc_fail_at(0);
    json_t *j = json_pack("{s:s}", "k", "v");
    assert_true(alloc_fail_count() > 0);
    json_decref(j);
    alloc_fail_at(0);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_true(alloc_fail_count() > 0);
    EVP_MD_CTX_free(ctx);
    alloc_fail_at(1);
    assert_null(json_pack("{s:s}", "k", "v"));
    alloc_fail_at(0);
}

/* A well-behaved path: a buf grown in steps, every failure reported. */
static int build(void *ctx)
{
    (void)ctx;
    struct buf b;
    buf_init(&b, 1 << 20);
    int rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++)
        rc = buf_printf(&b, "%d,", i);
    buf_free(&b);
    return rc;
}

/* A careless one: ignores a failed allocation and claims success. */
static int careless(void *ctx)
{
    (void)ctx;
    char *s = strdup("x");
    free(s);
    return 0;
}

static void loop_passes_and_catches(void **state)
{
    (void)state;
    assert_true(alloc_fail_loop("buf", build, NULL, false) > 0);
    assert_int_equal(alloc_fail_loop("careless", careless, NULL, false), -1);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(counts_and_fails_libc),
        cmocka_unit_test(counts_jansson_and_openssl),
        cmocka_unit_test(loop_passes_and_catches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
