/* Unit tests for console_auth: the token, session cookies, CSRF and origin rules one by one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "console_auth.h"

static const char token[] = "correct horse battery staple";
static const unsigned char nonce[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
#define NOW ((time_t)1800000000)

static struct console_auth auth(const char *t)
{
    struct console_auth a;
    assert_int_equal(console_auth_init(&a, t), 0);
    return a;
}

static void short_tokens_are_refused(void **state)
{
    struct console_auth a;
    assert_int_equal(console_auth_init(&a, "fifteen chars!!"), -EINVAL);
    assert_int_equal(console_auth_init(&a, NULL), -EINVAL);
    assert_int_equal(console_auth_init(&a, "sixteen chars!!!"), 0);
}

static void the_token_and_only_it_opens(void **state)
{
    struct console_auth a = auth(token);
    assert_true(console_auth_token_ok(&a, token, strlen(token)));
    assert_false(console_auth_token_ok(&a, token, strlen(token) - 1));
    assert_false(console_auth_token_ok(&a, "correct horse battery staplf", strlen(token)));
    assert_false(console_auth_token_ok(&a, "", 0));
    assert_false(console_auth_token_ok(&a, NULL, 0));
}

static void a_session_round_trips_and_never_holds_the_token(void **state)
{
    struct console_auth a = auth(token);
    char v[CONSOLE_AUTH_COOKIE_SIZE];
    assert_int_equal(console_auth_session_new(&a, "Ada L.", NOW, nonce, v), 0);
    assert_null(strstr(v, token));
    struct console_session s;
    assert_true(console_auth_session_check(&a, v, strlen(v), NOW + 60, &s));
    assert_string_equal(s.name, "Ada L.");
    assert_int_equal(s.expires, NOW + CONSOLE_AUTH_SESSION_S);
    assert_int_equal(strlen(s.csrf), 64);
}

static void sessions_expire(void **state)
{
    struct console_auth a = auth(token);
    char v[CONSOLE_AUTH_COOKIE_SIZE];
    assert_int_equal(console_auth_session_new(&a, "ada", NOW, nonce, v), 0);
    struct console_session s;
    assert_true(console_auth_session_check(&a, v, strlen(v), NOW + CONSOLE_AUTH_SESSION_S - 1, &s));
    assert_false(console_auth_session_check(&a, v, strlen(v), NOW + CONSOLE_AUTH_SESSION_S, &s));
}

static void a_changed_byte_or_another_token_breaks_the_session(void **state)
{
    struct console_auth a = auth(token), b = auth("another token of enough length");
    char v[CONSOLE_AUTH_COOKIE_SIZE];
    assert_int_equal(console_auth_session_new(&a, "ada", NOW, nonce, v), 0);
    struct console_session s;
    assert_false(console_auth_session_check(&b, v, strlen(v), NOW, &s));
    size_t n = strlen(v);
    for (size_t i = 0; i < n; i++) {
        char w[CONSOLE_AUTH_COOKIE_SIZE];
        memcpy(w, v, n + 1);
        w[i] = w[i] == '1' ? '2' : '1';
        assert_false(console_auth_session_check(&a, w, n, NOW, &s));
    }
    /* a later expiry cannot be written in: the MAC covers it */
    char w[CONSOLE_AUTH_COOKIE_SIZE];
    memcpy(w, v, n + 1);
    w[3] = '9';
    assert_false(console_auth_session_check(&a, w, n, NOW, &s));
    assert_false(console_auth_session_check(&a, "", 0, NOW, &s));
    assert_false(console_auth_session_check(&a, v, n - 1, NOW, &s));
}

static void names_are_plain(void **state)
{
    assert_true(console_auth_name_ok("ada"));
    assert_true(console_auth_name_ok("ada.lovelace@example.com"));
    assert_false(console_auth_name_ok(""));
    assert_false(console_auth_name_ok("   "));
    assert_false(console_auth_name_ok("<img src=x>"));
    assert_false(console_auth_name_ok("a\"b"));
    /* names as people write them (issue: "Zoë Ñúñez" and "Dan O'Brien" were refused) */
    assert_true(console_auth_name_ok("Zo\xc3\xab \xc3\x91\xc3\xba\xc3\xb1"
                                     "ez"));
    assert_true(console_auth_name_ok("Dan O'Brien"));
    assert_false(console_auth_name_ok("bad\xc3"));          /* truncated UTF-8 */
    assert_false(console_auth_name_ok("over\xc0\xaflong")); /* overlong '/' */
    assert_false(console_auth_name_ok("c1\xc2\x85"));       /* U+0085, a control */
    assert_false(console_auth_name_ok("tab\there"));
    char long_name[CONSOLE_AUTH_MAX_NAME + 2];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_false(console_auth_name_ok(long_name));
    long_name[CONSOLE_AUTH_MAX_NAME] = '\0';
    assert_true(console_auth_name_ok(long_name));
    struct console_auth a = auth(token);
    char v[CONSOLE_AUTH_COOKIE_SIZE];
    assert_int_equal(console_auth_session_new(&a, long_name, NOW, nonce, v), 0);
    assert_int_equal(console_auth_session_new(&a, "<b>", NOW, nonce, v), -EINVAL);
}

static void csrf_tokens_are_per_session(void **state)
{
    struct console_auth a = auth(token);
    unsigned char other[16] = {9};
    char v1[CONSOLE_AUTH_COOKIE_SIZE], v2[CONSOLE_AUTH_COOKIE_SIZE];
    assert_int_equal(console_auth_session_new(&a, "ada", NOW, nonce, v1), 0);
    assert_int_equal(console_auth_session_new(&a, "ada", NOW, other, v2), 0);
    struct console_session s1, s2;
    assert_true(console_auth_session_check(&a, v1, strlen(v1), NOW, &s1));
    assert_true(console_auth_session_check(&a, v2, strlen(v2), NOW, &s2));
    assert_true(console_auth_csrf_ok(&s1, s1.csrf));
    assert_false(console_auth_csrf_ok(&s1, s2.csrf));
    assert_false(console_auth_csrf_ok(&s1, NULL));
    assert_false(console_auth_csrf_ok(&s1, ""));
}

static void cookies_are_found_by_name(void **state)
{
    size_t len = 0;
    const char *v =
        console_auth_cookie("a=1; ordersync_console=v1.x.y; b=2", "ordersync_console", &len);
    assert_non_null(v);
    assert_int_equal(len, 6);
    assert_memory_equal(v, "v1.x.y", 6);
    assert_null(console_auth_cookie("xordersync_console=1", "ordersync_console", &len));
    assert_null(console_auth_cookie(NULL, "ordersync_console", &len));
    v = console_auth_cookie("ordersync_console=abc", "ordersync_console", &len);
    assert_int_equal(len, 3);
}

static void only_our_own_origin_may_post(void **state)
{
    assert_true(console_auth_same_origin(NULL, NULL, "127.0.0.1:9090"));
    assert_true(console_auth_same_origin("http://127.0.0.1:9090", "same-origin", "127.0.0.1:9090"));
    assert_true(console_auth_same_origin("https://ops.example:443", NULL, "ops.example:443"));
    assert_false(console_auth_same_origin("http://evil.example", NULL, "127.0.0.1:9090"));
    assert_false(console_auth_same_origin("http://127.0.0.1:9091", NULL, "127.0.0.1:9090"));
    assert_false(console_auth_same_origin("null", NULL, "127.0.0.1:9090"));
    assert_false(console_auth_same_origin(NULL, "cross-site", "127.0.0.1:9090"));
    assert_false(console_auth_same_origin(NULL, "same-site", "127.0.0.1:9090"));
    assert_false(console_auth_same_origin("http://127.0.0.1:9090", NULL, NULL));
}

static void weak_tokens_are_named(void **state)
{
    /* accepted at start (16 characters or more), but warned about */
    assert_non_null(console_auth_token_weak("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    assert_non_null(console_auth_token_weak("abababababababababababababababab"));
    assert_non_null(console_auth_token_weak("0123456789abcdef"));
    assert_non_null(console_auth_token_weak(NULL));
    assert_string_equal(console_auth_token_weak("0123456789abcdefghijklm"),
                        "shorter than 24 characters");
    assert_string_equal(console_auth_token_weak("123412341234123412341234"),
                        "fewer than 10 distinct characters");
    /* what scripts/demo makes (24 characters of base64) and a long passphrase pass */
    assert_null(console_auth_token_weak("q9Zr-1xT_kP3mV7sWb2Lc8Yd"));
    assert_null(console_auth_token_weak("correct horse battery staple"));
}

/* The session's id (its row in console_sessions) is the nonce, in hex. */
static void a_session_is_named_by_its_nonce(void **state)
{
    struct console_auth a = auth(token);
    char v[CONSOLE_AUTH_COOKIE_SIZE];
    assert_int_equal(console_auth_session_new(&a, "ada", NOW, nonce, v), 0);
    struct console_session s;
    assert_true(console_auth_session_check(&a, v, strlen(v), NOW, &s));
    assert_string_equal(s.id, "0102030405060708090a0b0c0d0e0f10");
}

static void the_secure_cookie_is_found_by_its_own_name(void **state)
{
    size_t len = 0;
    const char *h = "ordersync_console=plain; __Host-ordersync_console=hosted";
    const char *v = console_auth_cookie(h, CONSOLE_AUTH_COOKIE_SECURE, &len);
    assert_non_null(v);
    assert_int_equal(len, 6);
    assert_memory_equal(v, "hosted", 6);
    v = console_auth_cookie(h, CONSOLE_AUTH_COOKIE, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "plain", 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(short_tokens_are_refused),
        cmocka_unit_test(the_token_and_only_it_opens),
        cmocka_unit_test(a_session_round_trips_and_never_holds_the_token),
        cmocka_unit_test(sessions_expire),
        cmocka_unit_test(a_changed_byte_or_another_token_breaks_the_session),
        cmocka_unit_test(names_are_plain),
        cmocka_unit_test(csrf_tokens_are_per_session),
        cmocka_unit_test(cookies_are_found_by_name),
        cmocka_unit_test(only_our_own_origin_may_post),
        cmocka_unit_test(weak_tokens_are_named),
        cmocka_unit_test(a_session_is_named_by_its_nonce),
        cmocka_unit_test(the_secure_cookie_is_found_by_its_own_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
