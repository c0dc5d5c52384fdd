/*
 * Unit tests for the poller's pure part, poll_page: what one response to a
 * poll means, rule by rule (status, Retry-After, validators, the body, the
 * next page), and which next page link it follows: the source's credentials
 * go with every page, so only poll_url's own scheme, host and port may be.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "poll_page.h"
#include "source_kind.h"
#include "test_fixture.h"

#define POLL "https://shop.example/admin/api/2024-07/orders.json"

static enum poll_link next(const char *page, const char *link, char **out)
{
    return poll_page_next_link(POLL, page, link, out);
}

static void no_link_ends_the_run(void **state)
{
    (void)state;
    char *out = (char *)1;
    assert_int_equal(next(POLL, NULL, &out), POLL_LINK_NONE);
    assert_null(out);
    assert_int_equal(next(POLL, "", &out), POLL_LINK_NONE);
    assert_int_equal(next(POLL, "<https://shop.example/p?page_info=a>; rel=\"previous\"", &out),
                     POLL_LINK_NONE);
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
                     POLL_LINK_NEXT);
    assert_string_equal(out, "https://shop.example/admin/api/2024-07/orders.json?page_info=p2");
    free(out);
    /* the default port made explicit, and the host in another case, are the same origin */
    assert_int_equal(next(POLL, "<https://SHOP.example:443/next>; rel=next", &out), POLL_LINK_NEXT);
    free(out);
}

static void relative_reference_resolves_against_the_page(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(
        next(POLL "?updated_at_min=x", "</admin/api/orders.json?page_info=2>; rel=next", &out),
        POLL_LINK_NEXT);
    assert_string_equal(out, "https://shop.example/admin/api/orders.json?page_info=2");
    free(out);
    assert_int_equal(next("https://shop.example/a/b/list", "<list?page=3>; rel=\"next\"", &out),
                     POLL_LINK_NEXT);
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
        assert_int_equal(next(POLL, hostile[i], &out), POLL_LINK_FOREIGN);
        assert_null(out);
    }
}

static void garbage_is_refused(void **state)
{
    (void)state;
    char *out = (char *)1;
    assert_int_equal(next(POLL, "<javascript:alert(1)>; rel=next", &out), POLL_LINK_BAD);
    assert_null(out);
    assert_int_equal(next(POLL, "<https://shop.example/x; rel=next", &out), POLL_LINK_BAD);
    assert_null(out);
}

/* ------------------------------------------------------------ one page */

static const time_t now = 1767323047; /* Fri, 02 Jan 2026 03:04:07 GMT */

static struct poll_run run_of(const char *kind, int page)
{
    struct poll_run run = {.source_id = "legacy",
                           .poll_url = POLL,
                           .page_url = POLL,
                           .page = page,
                           .interval_s = 30,
                           .max_updated = "",
                           .now = now};

    assert_int_equal(source_kind_parse(kind, &run.kind), 0);
    return run;
}

static struct poll_response response(long status, const char *body)
{
    struct poll_response res = {.status = status, .body = body, .body_len = strlen(body)};
    return res;
}

static json_t *batch_of(const struct poll_page *page)
{
    json_error_t jerr;
    json_t *b = json_loads(page->batch, 0, &jerr);

    if (!json_is_array(b))
        fail_msg("batch is not a JSON array: %s", page->batch);
    return b;
}

static void not_modified_ends_the_run(void **state)
{
    (void)state;
    struct poll_run run = run_of("shopify", 1);
    struct poll_response res = response(304, "");
    struct poll_page page;

    run.errors_in_row = 3;
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(poll_result_name(page.result), "not_modified");
    assert_true(page.last);
    assert_string_equal(page.batch, "[]");
    assert_null(page.next_url);
    assert_int_equal(page.errors_in_row, 0);
    assert_true(page.wait_s == 0);
    poll_page_clear(&page);
}

static double rate_limited_wait(long status, const char *retry_after, int page_no)
{
    struct poll_run run = run_of("shopify", page_no);
    struct poll_response res = response(status, "{\"errors\":\"Exceeded 2 calls per second\"}");
    struct poll_page page;
    double wait;

    run.errors_in_row = 2;
    res.retry_after = retry_after;
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(poll_result_name(page.result), "rate_limited");
    assert_true(page.last);
    /* what ingest_poll stores must be JSON even when earlier pages were stored: "[]" */
    assert_string_equal(page.batch, "[]");
    assert_int_equal(page.errors_in_row, 2); /* a server's pacing is not an error */
    wait = page.wait_s;
    poll_page_clear(&page);
    return wait;
}

static void retry_after_is_honoured_within_reason(void **state)
{
    (void)state;
    struct poll_run run = run_of("shopify", 1);
    struct poll_response res = response(429, "");
    struct poll_page page;

    assert_true(rate_limited_wait(429, "120", 1) == 120);
    assert_true(rate_limited_wait(503, "7", 2) == 7);
    /* an HTTP-date: the time until then */
    assert_true(rate_limited_wait(429, "Fri, 02 Jan 2026 03:06:07 GMT", 1) == 120);
    /* absent, a date past, or not a number of seconds (RFC 9110: 1*DIGIT): the interval */
    assert_true(rate_limited_wait(429, NULL, 1) == 30);
    assert_true(rate_limited_wait(429, "", 1) == 30);
    assert_true(rate_limited_wait(429, "Thu, 01 Jan 2026 00:00:00 GMT", 1) == 30);
    assert_true(rate_limited_wait(429, "1e308", 1) == 30);
    assert_true(rate_limited_wait(429, "-5", 1) == 30);
    assert_true(rate_limited_wait(429, "inf", 1) == 30);
    /* never past the longest backoff, however far */
    assert_true(rate_limited_wait(429, "99999999999999999999999999", 1) == POLL_MAX_BACKOFF_S);
    assert_true(rate_limited_wait(503, "Fri, 31 Dec 9999 23:59:59 GMT", 1) == POLL_MAX_BACKOFF_S);

    res.retry_after = "120";
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(page.error, "HTTP 429 (retry after 120 s)");
    poll_page_clear(&page);
}

static void errors_back_off_exponentially(void **state)
{
    (void)state;
    static const struct {
        long status;
        const char *transport;
        bool truncated;
        const char *body;
        const char *error;
    } cases[] = {
        {500, NULL, false, "oops", "HTTP 500"},
        {401, NULL, false, "{\"errors\":\"[API] Invalid API key\"}", "HTTP 401"},
        {0, "Connection refused", false, "", "Connection refused"},
        {0, NULL, false, "", "transport error"},
        {200, NULL, true, "{\"orders\": [", "page larger than 32 MiB"},
        {200, NULL, false, "{\"orders\": [", "malformed JSON at line 1: "},
        {200, NULL, false, "{\"products\": []}", "expected {\"orders\": [...]} or a JSON array"},
        {200, NULL, false, "{\"orders\": {}}", "expected {\"orders\": [...]} or a JSON array"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct poll_run run = run_of("shopify", 1);
        struct poll_response res = response(cases[i].status, cases[i].body);
        struct poll_page page;

        res.error = cases[i].transport;
        res.truncated = cases[i].truncated;
        run.errors_in_row = 2;
        assert_int_equal(poll_page_read(&run, &res, &page), 0);
        assert_string_equal(poll_result_name(page.result), "error");
        assert_true(page.last);
        assert_false(page.link_refused);
        assert_string_equal(page.batch, "[]");
        assert_true(strncmp(page.error, cases[i].error, strlen(cases[i].error)) == 0);
        /* the third error in a row: the interval doubled twice */
        assert_int_equal(page.errors_in_row, 3);
        assert_true(page.wait_s == 120);
        poll_page_clear(&page);
    }
    {
        struct poll_run run = run_of("shopify", 1);
        struct poll_response res = response(502, "");
        struct poll_page page;

        run.errors_in_row = 20;
        assert_int_equal(poll_page_read(&run, &res, &page), 0);
        assert_true(page.wait_s == POLL_MAX_BACKOFF_S);
        poll_page_clear(&page);
    }
}

static void orders_are_stored_and_the_next_page_followed(void **state)
{
    (void)state;
    size_t order_len;
    char *order = read_fixture("shopify_order_create.json", &order_len), *body;
    struct poll_run run = run_of("shopify", 1);
    struct poll_response res;
    struct poll_page page;
    json_t *batch, *el;

    /* a non-object in the list is passed over; an order that cannot be read is skipped */
    assert_true(asprintf(&body, "{\"orders\": [%s, 7, {\"id\": 1}]}", order) > 0);
    res = response(200, body);
    res.etag = "\"v1\"";
    res.last_modified = "Fri, 02 Jan 2026 03:04:07 GMT";
    res.link = "<https://shop.example/admin/api/2024-07/orders.json?page_info=2>; rel=\"next\"";
    run.errors_in_row = 4;
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(poll_result_name(page.result), "ok");
    assert_false(page.last);
    assert_string_equal(page.next_url,
                        "https://shop.example/admin/api/2024-07/orders.json?page_info=2");
    assert_int_equal(page.errors_in_row, 0);
    assert_true(page.wait_s == 0);
    assert_int_equal(page.listed, 3);
    assert_int_equal(page.skipped, 1);
    assert_non_null(strstr(page.skipped_detail, "field '"));
    assert_string_equal(page.etag, "\"v1\"");
    assert_string_equal(page.last_modified, "Fri, 02 Jan 2026 03:04:07 GMT");
    /* the cursor: the order's updated_at in UTC */
    assert_string_equal(page.max_updated, "2026-01-02T03:04:07Z");
    assert_string_equal(page.error, "");

    batch = batch_of(&page);
    assert_int_equal(json_array_size(batch), 1);
    el = json_array_get(batch, 0);
    assert_string_equal(json_string_value(json_object_get(el, "s")), "legacy");
    assert_string_equal(json_string_value(json_object_get(el, "k")),
                        "poll:5678901234567890123:2026-01-02T03:04:07Z");
    assert_string_equal(json_string_value(json_object_get(el, "e")), "order.sync");
    assert_string_equal(json_string_value(json_object_get(json_object_get(el, "o"), "external_id")),
                        "5678901234567890123");
    assert_true(json_integer_value(json_object_get(json_object_get(el, "p"), "id")) ==
                5678901234567890123LL);
    json_decref(batch);
    poll_page_clear(&page);

    /* a later page: its validators are not the run's; an older order leaves the cursor */
    run = run_of("shopify", 2);
    run.max_updated = "2026-02-01T00:00:00Z";
    res.link = NULL;
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_true(page.last);
    assert_null(page.next_url);
    assert_null(page.etag);
    assert_null(page.last_modified);
    assert_string_equal(page.max_updated, "2026-02-01T00:00:00Z");
    poll_page_clear(&page);

    /* the run stops after POLL_MAX_PAGES pages; the cursor carries the rest */
    run = run_of("shopify", POLL_MAX_PAGES);
    res.link = "<https://shop.example/admin/api/2024-07/orders.json?page_info=2>; rel=next";
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(poll_result_name(page.result), "ok");
    assert_true(page.last);
    assert_null(page.next_url);
    poll_page_clear(&page);
    free(body);
    free(order);
}

static void a_bare_array_of_other_kinds(void **state)
{
    (void)state;
    size_t order_len;
    char *order = read_fixture("woocommerce_order_created.json", &order_len), *body;
    struct poll_run run = run_of("woocommerce", 1);
    struct poll_response res;
    struct poll_page page;
    json_t *batch;

    assert_true(asprintf(&body, "[%s]", order) > 0);
    res = response(200, body);
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    batch = batch_of(&page);
    assert_string_equal(json_string_value(json_object_get(json_array_get(batch, 0), "k")),
                        "poll:727:2026-01-02T03:04:09Z");
    json_decref(batch);
    poll_page_clear(&page);

    /* Standard Webhooks senders list the data of their order events: thin orders too */
    run = run_of("standard", 1);
    res = response(200, "[{\"id\": 250, \"updated_at\": \"2026-01-02T03:04:05Z\"}]");
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    batch = batch_of(&page);
    assert_string_equal(json_string_value(json_object_get(json_array_get(batch, 0), "k")),
                        "poll:250:2026-01-02T03:04:05Z");
    json_decref(batch);
    poll_page_clear(&page);

    /* an empty list is an empty page, not an error */
    res = response(200, "{\"orders\": []}");
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(poll_result_name(page.result), "ok");
    assert_int_equal(page.listed, 0);
    assert_string_equal(page.batch, "[]");
    poll_page_clear(&page);
    free(body);
    free(order);
}

static void a_foreign_link_keeps_the_page_and_stops(void **state)
{
    (void)state;
    size_t order_len;
    char *order = read_fixture("shopify_order_create.json", &order_len), *body;
    struct poll_run run = run_of("shopify", 1);
    struct poll_response res;
    struct poll_page page;
    json_t *batch;

    assert_true(asprintf(&body, "{\"orders\": [%s]}", order) > 0);
    res = response(200, body);
    res.link = "<http://127.0.0.2:8080/steal?page_info=x>; rel=\"next\"";
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(poll_result_name(page.result), "error");
    assert_true(page.link_refused);
    assert_true(page.last);
    assert_null(page.next_url);
    assert_string_equal(page.error,
                        "next page link refused: not the scheme, host and port of poll_url");
    /* the page came from the configured origin: its orders are stored, the cursor moves */
    batch = batch_of(&page);
    assert_int_equal(json_array_size(batch), 1);
    json_decref(batch);
    assert_string_equal(page.max_updated, "2026-01-02T03:04:07Z");
    assert_int_equal(page.errors_in_row, 0);
    poll_page_clear(&page);

    res.link = "<javascript:alert(1)>; rel=next";
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_true(page.link_refused);
    assert_string_equal(page.error, "next page link refused: not a URL");
    poll_page_clear(&page);
    free(body);
    free(order);
}

static void a_page_too_large_to_store_moves_nothing(void **state)
{
    (void)state;
    size_t order_len;
    char *order = read_fixture("shopify_order_create.json", &order_len), *body;
    struct poll_run run = run_of("shopify", 2);
    struct poll_response res;
    struct poll_page page;

    size_t one;

    /* a batch with one order: its size */
    assert_true(asprintf(&body, "{\"orders\": [%s]}", order) > 0);
    res = response(200, body);
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    one = strlen(page.batch);
    poll_page_clear(&page);
    free(body);

    /* room for one and a half: the first order fits, the second does not, neither is stored */
    assert_true(asprintf(&body, "{\"orders\": [%s, %s]}", order, order) > 0);
    res = response(200, body);
    res.link = "<https://shop.example/admin/api/2024-07/orders.json?page_info=3>; rel=next";
    run.max_updated = "2026-01-01T00:00:00Z";
    run.batch_cap = one + one / 2;
    assert_int_equal(poll_page_read(&run, &res, &page), 0);
    assert_string_equal(poll_result_name(page.result), "error");
    assert_string_equal(page.error, "page too large to store");
    assert_true(page.last);
    assert_null(page.next_url);
    assert_string_equal(page.batch, "[]");
    /* the cursor stays where the stored pages left it: these orders come again next run */
    assert_string_equal(page.max_updated, "2026-01-01T00:00:00Z");
    poll_page_clear(&page);
    free(body);
    free(order);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_link_ends_the_run),
        cmocka_unit_test(same_origin_is_followed),
        cmocka_unit_test(relative_reference_resolves_against_the_page),
        cmocka_unit_test(another_origin_is_refused),
        cmocka_unit_test(garbage_is_refused),
        cmocka_unit_test(not_modified_ends_the_run),
        cmocka_unit_test(retry_after_is_honoured_within_reason),
        cmocka_unit_test(errors_back_off_exponentially),
        cmocka_unit_test(orders_are_stored_and_the_next_page_followed),
        cmocka_unit_test(a_bare_array_of_other_kinds),
        cmocka_unit_test(a_foreign_link_keeps_the_page_and_stops),
        cmocka_unit_test(a_page_too_large_to_store_moves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
