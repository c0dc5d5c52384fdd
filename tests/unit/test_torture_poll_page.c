/*
 * Allocation-failure torture of the poller's reading of one response
 * (poll_page.c, alloc_fail.h): pages of each pollable kind, with a next
 * link to follow or to refuse, with the 1st, 2nd, ... Nth allocation
 * failing (ours, jansson's and libcurl's URL parser's) until the read
 * completes. Every run either fails with -ENOMEM and nothing held (the run
 * then stops without moving its cursor) or decides exactly what the clean
 * run decides: never a page stored with an order missing or altered, never
 * a link judged otherwise. ASan adds: no crash, no leak.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "poll_page.h"
#include "source_kind.h"
#include "test_fixture.h"

#define POLL "https://shop.example/admin/api/2024-07/orders.json"

struct page_case {
    const char *name;
    struct poll_run run;
    struct poll_response res;
    struct poll_page want; /* the clean run's */
};

static bool same_str(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int read_page(void *ctx)
{
    struct page_case *c = ctx;
    struct poll_page page;
    int rc = poll_page_read(&c->run, &c->res, &page);

    if (rc < 0) {
        if (rc != -ENOMEM || !alloc_fail_triggered())
            fail_msg("%s: %d", c->name, rc);
        if (page.batch != NULL || page.next_url != NULL)
            fail_msg("%s: a failed read left memory behind", c->name);
        return rc;
    }
    if (page.result != c->want.result || page.last != c->want.last ||
        page.link_refused != c->want.link_refused || page.skipped != c->want.skipped ||
        !same_str(page.batch, c->want.batch) || !same_str(page.next_url, c->want.next_url) ||
        strcmp(page.max_updated, c->want.max_updated) != 0 ||
        strcmp(page.error, c->want.error) != 0)
        fail_msg("%s: the decision differs from the clean run's (%s, error '%s', next %s, "
                 "skipped %zu, cursor %s, batch of %zu bytes for %zu)",
                 c->name, poll_result_name(page.result), page.error,
                 page.next_url ? page.next_url : "none", page.skipped, page.max_updated,
                 strlen(page.batch), strlen(c->want.batch));
    poll_page_clear(&page);
    return 0;
}

static void torture(struct page_case *c, const char *kind)
{
    c->run.source_id = "legacy";
    c->run.poll_url = POLL;
    c->run.page_url = POLL;
    c->run.page = 1;
    c->run.interval_s = 60;
    c->run.max_updated = "";
    c->run.now = 1767323047;
    assert_int_equal(source_kind_parse(kind, &c->run.kind), 0);
    assert_int_equal(poll_page_read(&c->run, &c->res, &c->want), 0);
    /* may absorb: jansson and libcurl can do without some allocations, with the same result */
    assert_true(alloc_fail_loop(c->name, read_page, c, true) > 0);
    poll_page_clear(&c->want);
}

static void pages_of_every_pollable_kind(void **state)
{
    size_t shopify_len, small_len, woo_len;
    char *shopify = read_fixture("shopify_order_create.json", &shopify_len);
    char *small = read_fixture("shopify_order_small.json", &small_len);
    char *woo = read_fixture("woocommerce_order_created.json", &woo_len);
    char *body;

    (void)state;
    assert_true(asprintf(&body, "{\"orders\": [%s, %s, {\"id\": 1}]}", shopify, small) > 0);
    {
        struct page_case c = {.name = "shopify, next page"};
        c.res = (struct poll_response){.status = 200, .body = body, .body_len = strlen(body)};
        c.res.etag = "\"v1\"";
        c.res.link = "<" POLL "?page_info=p0>; rel=\"previous\", <" POLL "?page_info=p2>; "
                     "rel=\"next\"";
        torture(&c, "shopify");
        c.name = "shopify, relative next page";
        c.res.link = "</admin/api/2024-07/orders.json?page_info=p2>; rel=next";
        torture(&c, "shopify");
        c.name = "shopify, foreign next page";
        c.res.link = "<http://127.0.0.2:8080/steal?page_info=x>; rel=\"next\"";
        torture(&c, "shopify");
    }
    free(body);
    assert_true(asprintf(&body, "[%s]", woo) > 0);
    {
        struct page_case c = {.name = "woocommerce"};
        c.res = (struct poll_response){.status = 200, .body = body, .body_len = strlen(body)};
        torture(&c, "woocommerce");
    }
    free(body);
    {
        static const char thin[] = "[{\"id\": 250, \"updated_at\": \"2026-01-02T03:04:05Z\"}]";
        struct page_case c = {.name = "standard"};
        c.res = (struct poll_response){.status = 200, .body = thin, .body_len = strlen(thin)};
        torture(&c, "standard");
        c.name = "rate limited";
        c.res = (struct poll_response){.status = 429, .retry_after = "120", .body = ""};
        torture(&c, "standard");
    }
    free(woo);
    free(small);
    free(shopify);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pages_of_every_pollable_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
