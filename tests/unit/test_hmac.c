/*
 * Unit tests for hmac: the pre-keyed HMAC-SHA256 gives RFC 4231's results,
 * the same for a message cut into parts as whole, and the same on every
 * reuse of one keyed object.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "hmac.h"

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* RFC 4231, test case 2: key "Jefe" */
static void rfc4231_case_2(void **state)
{
    (void)state;
    struct hmac_sha256 *h = NULL;
    assert_int_equal(hmac_sha256_new("Jefe", 4, &h), 0);
    const char *msg = "what do ya want for nothing?";
    const void *whole[1] = {msg};
    size_t whole_len[1] = {strlen(msg)};
    /* the same message cut in three, an empty part among them */
    const void *cut[4] = {msg, "", msg + 7, msg + 20};
    size_t cut_len[4] = {7, 0, 13, strlen(msg) - 20};
    unsigned char mac[HMAC_SHA256_LEN];
    char text[2 * HMAC_SHA256_LEN + 1];
    for (int i = 0; i < 3; i++) { /* reuse gives the same answer */
        assert_int_equal(hmac_sha256_parts(h, whole, whole_len, 1, mac), 0);
        hex(mac, sizeof(mac), text);
        assert_string_equal(text,
                            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_int_equal(hmac_sha256_parts(h, cut, cut_len, 4, mac), 0);
        hex(mac, sizeof(mac), text);
        assert_string_equal(text,
                            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
    hmac_sha256_free(&h);
    assert_null(h);
    hmac_sha256_free(&h); /* a second free is harmless */
}

/* RFC 4231, test case 6: a key longer than the block (131 bytes of 0xaa) */
static void rfc4231_case_6_long_key(void **state)
{
    (void)state;
    unsigned char key[131];
    memset(key, 0xaa, sizeof(key));
    struct hmac_sha256 *h = NULL;
    assert_int_equal(hmac_sha256_new(key, sizeof(key), &h), 0);
    const char *msg = "Test Using Larger Than Block-Size Key - Hash Key First";
    const void *parts[1] = {msg};
    size_t lens[1] = {strlen(msg)};
    unsigned char mac[HMAC_SHA256_LEN];
    char text[2 * HMAC_SHA256_LEN + 1];
    assert_int_equal(hmac_sha256_parts(h, parts, lens, 1, mac), 0);
    hex(mac, sizeof(mac), text);
    assert_string_equal(text, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    hmac_sha256_free(&h);
}

static void an_empty_key_is_refused(void **state)
{
    (void)state;
    struct hmac_sha256 *h = (struct hmac_sha256 *)&h; /* set to NULL on failure */
    assert_int_equal(hmac_sha256_new("", 0, &h), -EINVAL);
    assert_null(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4231_case_2),
        cmocka_unit_test(rfc4231_case_6_long_key),
        cmocka_unit_test(an_empty_key_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
