/*
 * libFuzzer target for the poller's handling of one response
 * (services/ordersync/poll_page.c): what a polled server, or a man in the
 * middle of an http:// poll URL, controls: the status, the Link,
 * Retry-After, ETag and Last-Modified headers, and the body.
 *
 * Input: byte 0 picks the status, byte 1 the source kind, the page of the
 * run, the errors before it and whether the body was cut at the cap; then
 * four lines (Link, Retry-After, ETag, Last-Modified) and the body.
 *
 * Checks the contract too: the batch is always a JSON array of ingest
 * elements; a run goes on only with a next page on poll_url's origin; the
 * wait is finite and at most the longest backoff; the cursor never goes
 * back; and nothing leaks.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "poll_page.h"
#include "source_kind.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define POLL_URL "https://shop.example/admin/api/2024-07/orders.json"

/* The next line of the input as a new string (the rest when there is no newline). */
static char *line(const uint8_t **p, size_t *left)
{
    const uint8_t *nl = memchr(*p, '\n', *left);
    size_t n = nl != NULL ? (size_t)(nl - *p) : *left;
    char *s = malloc(n + 1);

    if (s == NULL)
        abort();
    memcpy(s, *p, n);
    s[n] = '\0';
    *p += nl != NULL ? n + 1 : n;
    *left -= nl != NULL ? n + 1 : n;
    return s;
}

/* Is url on POLL_URL's scheme, host and port? */
static int on_origin(const char *url)
{
    static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
    CURLU *a = curl_url(), *b = curl_url();
    int same = a != NULL && b != NULL && curl_url_set(a, CURLUPART_URL, POLL_URL, 0) == CURLUE_OK &&
               curl_url_set(b, CURLUPART_URL, url, 0) == CURLUE_OK;

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && same; i++) {
        char *x = NULL, *y = NULL;

        same = curl_url_get(a, parts[i], &x, CURLU_DEFAULT_PORT) == CURLUE_OK &&
               curl_url_get(b, parts[i], &y, CURLU_DEFAULT_PORT) == CURLUE_OK &&
               strcasecmp(x, y) == 0;
        curl_free(x);
        curl_free(y);
    }
    curl_url_cleanup(a);
    curl_url_cleanup(b);
    return same;
}

static void check_batch(const char *batch)
{
    json_t *b = json_loads(batch, 0, NULL), *el;
    size_t i;

    if (!json_is_array(b))
        abort();
    json_array_foreach(b, i, el)
    {
        if (!json_is_string(json_object_get(el, "s")) ||
            !json_is_string(json_object_get(el, "k")) ||
            !json_is_object(json_object_get(el, "o")) || !json_is_object(json_object_get(el, "p")))
            abort();
    }
    json_decref(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {200, 200, 200, 200, 201, 204, 304, 429,
                                    503, 500, 404, 401, 0,   302, 299, 300};
    static const char *const kinds[] = {"shopify", "woocommerce", "standard"};
    static const char *const cursors[] = {"", "2026-01-02T00:00:00Z"};
    struct poll_run run = {.source_id = "fuzz", .poll_url = POLL_URL, .now = 1767323047};
    struct poll_response res = {0};
    struct poll_page page;
    char *link, *retry_after, *etag, *last_modified;
    const uint8_t *p = data + 2;
    size_t left;
    int rc;

    if (size < 2)
        return 0;
    left = size - 2;
    if (source_kind_parse(kinds[(data[1] & 3) % 3], &run.kind) < 0)
        abort();
    run.page = (data[1] >> 2) & 1 ? 2 : 1;
    run.page_url = run.page == 1 ? POLL_URL : POLL_URL "?page_info=2";
    if ((data[1] >> 3) & 1)
        run.page = POLL_MAX_PAGES;
    run.errors_in_row = (data[1] >> 4) & 7;
    run.interval_s = run.errors_in_row == 7 ? 0.5 : 60;
    run.max_updated = cursors[data[1] >> 7];
    res.status = statuses[data[0] % 16];
    res.truncated = data[0] >= 0xf0;
    res.error = res.status == 0 && (data[0] & 16) ? "Connection refused" : NULL;
    link = line(&p, &left);
    retry_after = line(&p, &left);
    etag = line(&p, &left);
    last_modified = line(&p, &left);
    res.link = link;
    res.retry_after = retry_after;
    res.etag = etag;
    res.last_modified = last_modified;
    res.body = (const char *)p;
    res.body_len = left;

    rc = poll_page_read(&run, &res, &page);
    if (rc != 0)
        abort(); /* nothing here runs out of memory */
    check_batch(page.batch);
    if (page.last != (page.next_url == NULL))
        abort();
    if (page.next_url != NULL && (page.result != POLL_OK || !on_origin(page.next_url)))
        abort();
    if (page.link_refused && page.result != POLL_ERROR)
        abort();
    if (!isfinite(page.wait_s) || page.wait_s < 0 || page.wait_s > POLL_MAX_BACKOFF_S)
        abort();
    if (strcmp(page.max_updated, run.max_updated) < 0)
        abort();
    if (page.result == POLL_ERROR && page.error[0] == '\0')
        abort();
    poll_page_clear(&page);
    free(link);
    free(retry_after);
    free(etag);
    free(last_modified);
    return 0;
}
