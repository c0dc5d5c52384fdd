/*
 * Unit tests for the poller's pure parts: which next page link it follows.
 * The source's credentials go with every page, so only poll_url's own
 * scheme, host and port may be followed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "poller.h"

#define POLL "https://shop.example/admin/api/2024-07/orders.json"

static enum poller_link next(const char *page, const char *link, char **out)
{
    return poller_next_link(POLL, page, link, out);
}

static void no_link_ends_the_run(void **state)
{
    (void)state;
    char *out = (char *)1;
    assert_int_equal(next(POLL, NULL, &out), POLLER_LINK_NONE);
    assert_null(out);
    assert_int_equal(next(POLL, "", &out), POLLER_LINK_NONE);
    assert_int_equal(next(POLL, "<https://shop.example/p?page_info=a>; rel=\"previous\"", &out),
                     POLLER_LINK_NONE);
    assert_null(out);
}

static void same_origin_is_followed(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(next(POLL,
                          "<https://shop.example/admin/api/2024-07/orders.json?page_info=p0>; "
                          "rel=\"previous\", <https://shop.example/admin/api/2024-07/"
                          "orders.json?page_info=p2>; rel=\"next\"",
                          &out),
                     POLLER_LINK_NEXT);
    assert_string_equal(out, "https://shop.example/admin/api/2024-07/orders.json?page_info=p2");
    free(out);
    /* the default port made explicit, and the host in another case, are the same origin */
    assert_int_equal(next(POLL, "<https://SHOP.example:443/next>; rel=next", &out),
                     POLLER_LINK_NEXT);
    free(out);
}

static void relative_reference_resolves_against_the_page(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(
        next(POLL "?updated_at_min=x", "</admin/api/orders.json?page_info=2>; rel=next", &out),
        POLLER_LINK_NEXT);
    assert_string_equal(out, "https://shop.example/admin/api/orders.json?page_info=2");
    free(out);
    assert_int_equal(next("https://shop.example/a/b/list", "<list?page=3>; rel=\"next\"", &out),
                     POLLER_LINK_NEXT);
    assert_string_equal(out, "https://shop.example/a/b/list?page=3");
    free(out);
}

static void another_origin_is_refused(void **state)
{
    (void)state;
    static const char *const hostile[] = {
        "<http://127.0.0.2:8080/steal?page_info=x>; rel=\"next\"",
        "<http://shop.example/admin/api/orders.json?page_info=2>; rel=next", /* scheme */
        "<https://shop.example:8443/admin/api/orders.json>; rel=next",       /* port */
        "<https://shop.example.attacker.test/orders.json>; rel=next",        /* host */
        "<https://attacker.test@evil.test/orders.json>; rel=next",           /* userinfo trick */
        "<//evil.test/orders.json>; rel=next", /* scheme-relative: another host */
    };
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        char *out = (char *)1;
        assert_int_equal(next(POLL, hostile[i], &out), POLLER_LINK_FOREIGN);
        assert_null(out);
    }
}

static void garbage_is_refused(void **state)
{
    (void)state;
    char *out = (char *)1;
    assert_int_equal(next(POLL, "<javascript:alert(1)>; rel=next", &out), POLLER_LINK_BAD);
    assert_null(out);
    assert_int_equal(next(POLL, "<https://shop.example/x; rel=next", &out), POLLER_LINK_BAD);
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_link_ends_the_run),
        cmocka_unit_test(same_origin_is_followed),
        cmocka_unit_test(relative_reference_resolves_against_the_page),
        cmocka_unit_test(another_origin_is_refused),
        cmocka_unit_test(garbage_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
