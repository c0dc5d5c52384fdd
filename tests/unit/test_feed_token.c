/* Unit tests for feed_token: a bearer token against the SHA-256 stored for it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "feed_token.h"

static const char token[] = "feed-token-0123456789abcdef";
/* 'sha256:' || encode(sha256(convert_to(token, 'UTF8')), 'hex'): what migration 014 stores */
static const char stored[] =
    "sha256:b18eb97364bfd3619e0cb1e9e265bb4975a489ce0440a32b8c9a368374cd2858";

static void the_token_opens_its_digest(void **state)
{
    assert_true(feed_token_matches(stored, token, strlen(token)));
    assert_false(feed_token_matches(stored, "feed-token-0123456789abcdeF", strlen(token)));
    char digest[FEED_TOKEN_STORED_LEN + 1];
    assert_int_equal(strlen(FEED_TOKEN_PREFIX), 7);
    /* "abc" -> ba7816bf... (FIPS 180-2) */
    strcpy(digest, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(feed_token_matches(digest, "abc", 3));
    assert_false(feed_token_matches(digest, "abd", 3));
    assert_false(feed_token_matches(digest, "abc", 2));
    assert_false(feed_token_matches(digest, "abcd", 4));
    assert_false(feed_token_matches(digest, "", 0));
    /* the digest itself is no token */
    assert_false(feed_token_matches(digest, digest, strlen(digest)));
}

static void nothing_opens_a_feed_without_a_token(void **state)
{
    assert_false(feed_token_matches(NULL, token, strlen(token)));
    assert_false(feed_token_matches(
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", NULL, 0));
}

static void a_plain_stored_token_still_compares_by_digest(void **state)
{
    /* a row written with the trigger disabled: still works, still constant time */
    assert_true(feed_token_matches(token, token, strlen(token)));
    assert_false(feed_token_matches(token, "feed-token-0123456789abcdeg", strlen(token)));
    assert_false(feed_token_matches(token, "feed", 4));
    /* uppercase hex is not the form the trigger writes: taken as a plain token */
    const char upper[] = "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
    assert_false(feed_token_matches(upper, "abc", 3));
    assert_true(feed_token_matches(upper, upper, strlen(upper)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_token_opens_its_digest),
        cmocka_unit_test(nothing_opens_a_feed_without_a_token),
        cmocka_unit_test(a_plain_stored_token_still_compares_by_digest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
