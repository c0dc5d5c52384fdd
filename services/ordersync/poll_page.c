/*
 * poll_page: see poll_page.h. The rules, in the order they apply:
 * 304 ends the run as not modified; 429 and 503 end it rate-limited and wait
 * for Retry-After (finite, at most POLL_MAX_BACKOFF_S); a transport error, an
 * HTTP error, a body past the cap or one that is not an orders list ends it
 * as an error and backs off exponentially; otherwise the page's orders are
 * stored and a next link on poll_url's origin is followed, one elsewhere
 * refused (the page is kept, the run stops: see poll_page_next_link).
 */
#include "poll_page.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "buf.h"
#include "http_client.h"
#include "json_guard.h"

const char *poll_result_name(enum poll_result r)
{
    static const char *const names[] = {
        [POLL_OK] = "ok",
        [POLL_NOT_MODIFIED] = "not_modified",
        [POLL_RATE_LIMITED] = "rate_limited",
        [POLL_ERROR] = "error",
    };

    return names[r];
}

void poll_page_clear(struct poll_page *page)
{
    free(page->batch);
    free(page->next_url);
    memset(page, 0, sizeof(*page));
}

/* ------------------------------------------------------------ next link */

/*
 * The target of the rel="next" link in a Link header (RFC 8288, as Shopify
 * paginates: `<url>; rel="previous", <url>; rel="next"`): 1 with *out a new
 * allocation, 0 when there is none, -ENOMEM.
 */
static int link_next_target(const char *value, char **out)
{
    const char *p = value;

    *out = NULL;
    while ((p = strchr(p, '<')) != NULL) {
        const char *close = strchr(p, '>');
        if (close == NULL)
            return 0;
        const char *next_link = strchr(close, '<');
        const char *rel = strstr(close, "rel=");
        if (rel != NULL && (next_link == NULL || rel < next_link) &&
            (strncmp(rel, "rel=\"next\"", 10) == 0 || strncmp(rel, "rel=next", 8) == 0)) {
            *out = strndup(p + 1, (size_t)(close - p - 1));
            return *out != NULL ? 1 : -ENOMEM;
        }
        p = close;
    }
    return 0;
}

/* Do a and b have the same scheme, host and port (a default port made explicit)? 1, 0 or -ENOMEM */
static int same_origin(CURLU *a, CURLU *b)
{
    static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
    int same = 1;

    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && same == 1; i++) {
        unsigned flags = parts[i] == CURLUPART_PORT ? CURLU_DEFAULT_PORT : 0;
        char *x = NULL, *y = NULL;
        CURLUcode cx = curl_url_get(a, parts[i], &x, flags);
        CURLUcode cy = curl_url_get(b, parts[i], &y, flags);

        if (cx == CURLUE_OUT_OF_MEMORY || cy == CURLUE_OUT_OF_MEMORY)
            same = -ENOMEM;
        else if (cx != CURLUE_OK || cy != CURLUE_OK || strcasecmp(x, y) != 0)
            same = 0;
        curl_free(x);
        curl_free(y);
    }
    return same;
}

static enum poll_link judge(const char *poll_url, const char *page_url, const char *link,
                            char **out)
{
    enum poll_link verdict = POLL_LINK_BAD;
    CURLU *origin = NULL, *next = NULL;
    char *target = NULL, *url = NULL;
    CURLUcode uc;
    int rc;

    *out = NULL;
    if (link == NULL || link[0] == '\0')
        return POLL_LINK_NONE;
    rc = link_next_target(link, &target);
    if (rc < 0)
        return POLL_LINK_NOMEM;
    if (rc == 0)
        return strstr(link, "next") != NULL ? POLL_LINK_BAD : POLL_LINK_NONE;
    origin = curl_url();
    next = curl_url();
    if (origin == NULL || next == NULL) {
        verdict = POLL_LINK_NOMEM;
        goto done;
    }
    /* a relative reference resolves against the page it came with */
    uc = curl_url_set(origin, CURLUPART_URL, poll_url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_set(next, CURLUPART_URL, page_url, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_set(next, CURLUPART_URL, target, 0);
    if (uc != CURLUE_OK) {
        verdict = uc == CURLUE_OUT_OF_MEMORY ? POLL_LINK_NOMEM : POLL_LINK_BAD;
        goto done;
    }
    rc = same_origin(origin, next);
    if (rc <= 0) {
        verdict = rc < 0 ? POLL_LINK_NOMEM : POLL_LINK_FOREIGN;
        goto done;
    }
    uc = curl_url_get(next, CURLUPART_URL, &url, 0);
    if (uc != CURLUE_OK) {
        verdict = uc == CURLUE_OUT_OF_MEMORY ? POLL_LINK_NOMEM : POLL_LINK_BAD;
        goto done;
    }
    *out = strdup(url);
    verdict = *out != NULL ? POLL_LINK_NEXT : POLL_LINK_NOMEM;
done:
    curl_free(url);
    curl_url_cleanup(origin);
    curl_url_cleanup(next);
    free(target);
    return verdict;
}

enum poll_link poll_page_next_link(const char *poll_url, const char *page_url, const char *link,
                                   char **out)
{
    enum poll_link verdict = judge(poll_url, page_url, link, out);

    /*
     * libcurl's URL parser does not always say that it ran out of memory: a
     * failed allocation while it resolves a reference can read as a bad
     * URL. A refusal stops the run and is counted, so it is confirmed by a
     * second judgement (the same input gives the same verdict) first.
     */
    if (verdict == POLL_LINK_BAD || verdict == POLL_LINK_FOREIGN)
        verdict = judge(poll_url, page_url, link, out);
    return verdict;
}

/* --------------------------------------------------------------- orders */

/* A listed order that cannot be read is skipped: the first one's reason is kept. */
static void skip(struct poll_page *page, const char *detail)
{
    if (page->skipped++ == 0)
        snprintf(page->skipped_detail, sizeof(page->skipped_detail), "%s", detail);
}

/*
 * Appends one listed order to the batch as an ingest_batch element: keyed by
 * the order and its updated_at, so a poll that lists it again is a
 * duplicate, and typed "order.sync" so that SQL derives the event from the
 * stored order. 0, -E2BIG (the batch is full) or -ENOMEM.
 */
static int append_order(const struct poll_run *run, json_t *order, struct buf *batch,
                        struct poll_page *page)
{
    char err[SOURCE_DETAIL_SIZE] = "";
    char key[256];
    json_t *canon = NULL, *el;
    const char *ext, *upd;
    char *text;
    int rc;

    rc = run->kind->poll_order(run->source_id, order, run->now, &canon, err, sizeof(err));
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0) {
        skip(page, err);
        return 0;
    }
    ext = json_string_value(json_object_get(canon, "external_id"));
    upd = json_string_value(json_object_get(canon, "updated_at"));
    if (ext == NULL || upd == NULL) {
        json_decref(canon);
        skip(page, "the order has no external_id or updated_at");
        return 0;
    }
    /* RFC 3339 UTC strings of one shape compare in time order */
    if (strcmp(upd, page->max_updated) > 0)
        snprintf(page->max_updated, sizeof(page->max_updated), "%s", upd);
    snprintf(key, sizeof(key), "poll:%s:%s", ext, upd);
    el = json_pack("{s:s,s:s,s:s,s:s,s:o,s:O}", "s", run->source_id, "k", key, "t", "poll", "e",
                   "order.sync", "o", canon, "p", order);
    if (el == NULL)
        return -ENOMEM;
    text = json_guard_dumps(el, JSON_COMPACT);
    json_decref(el);
    if (text == NULL)
        return -ENOMEM;
    rc = buf_append_str(batch, batch->len > 1 ? "," : "");
    if (rc == 0)
        rc = buf_append_str(batch, text);
    free(text);
    return rc;
}

/* The page's orders into page->batch; 0, -E2BIG or -ENOMEM. */
static int read_orders(const struct poll_run *run, json_t *list, struct poll_page *page)
{
    struct buf batch;
    json_t *order;
    size_t i;
    int rc;

    buf_init(&batch, run->batch_cap != 0 ? run->batch_cap : POLL_BATCH_CAP);
    rc = buf_append_str(&batch, "[");
    json_array_foreach(list, i, order)
    {
        if (rc == 0 && json_is_object(order))
            rc = append_order(run, order, &batch, page);
    }
    if (rc == 0)
        rc = buf_append_str(&batch, "]");
    if (rc < 0) {
        buf_free(&batch);
        return rc;
    }
    page->batch = buf_steal(&batch, NULL);
    return 0;
}

/* ------------------------------------------------------------- the page */

/* The run ends here with `result`, and nothing of this page is stored. */
static int end_run(struct poll_page *page, enum poll_result result)
{
    free(page->batch);
    page->batch = strdup("[]");
    page->result = result;
    page->last = true;
    return page->batch != NULL ? 0 : -ENOMEM;
}

/* An error ends the run: wait the interval doubled per error in a row, at most the longest backoff.
 */
static int failed(const struct poll_run *run, struct poll_page *page)
{
    double backoff;

    page->errors_in_row = run->errors_in_row + 1;
    backoff = run->interval_s * pow(2.0, (double)(page->errors_in_row - 1));
    page->wait_s = backoff < POLL_MAX_BACKOFF_S ? backoff : POLL_MAX_BACKOFF_S;
    return end_run(page, POLL_ERROR);
}

static bool present(const char *header)
{
    return header != NULL && header[0] != '\0';
}

/* The orders of a 2xx body: {"orders": [...]} (Shopify) or a bare array; else error is set. */
static json_t *parse_list(const struct poll_response *res, json_t **doc, struct poll_page *page)
{
    json_error_t jerr;
    json_t *list;
    int rc;

    *doc = json_guard_loadb(res->body != NULL ? res->body : "", res->body_len, 0, &jerr, &rc);
    if (rc == -ENOMEM)
        return NULL;
    if (rc < 0) {
        snprintf(page->error, sizeof(page->error), "malformed JSON at line %d: %s", jerr.line,
                 jerr.text);
        return NULL;
    }
    list = json_is_array(*doc) ? *doc : json_object_get(*doc, "orders");
    if (!json_is_array(list)) {
        snprintf(page->error, sizeof(page->error), "expected {\"orders\": [...]} or a JSON array");
        return NULL;
    }
    return list;
}

int poll_page_read(const struct poll_run *run, const struct poll_response *res,
                   struct poll_page *out)
{
    long st = res->status;
    enum poll_link link;
    json_t *doc = NULL, *list;
    char *next_url = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    out->errors_in_row = run->errors_in_row;
    snprintf(out->max_updated, sizeof(out->max_updated), "%s",
             run->max_updated != NULL ? run->max_updated : "");

    if (st == 304) {
        out->errors_in_row = 0;
        rc = end_run(out, POLL_NOT_MODIFIED);
        goto done;
    }
    if (st == 429 || st == 503) {
        /* a server's wish, within reason: a number of seconds or a date, never past the longest
         * backoff */
        double secs =
            present(res->retry_after) ? http_client_retry_after(res->retry_after, run->now) : -1;

        out->wait_s = secs > 0 ? secs : run->interval_s;
        if (!(out->wait_s <= POLL_MAX_BACKOFF_S))
            out->wait_s = POLL_MAX_BACKOFF_S;
        snprintf(out->error, sizeof(out->error), "HTTP %ld (retry after %.0f s)", st, out->wait_s);
        rc = end_run(out, POLL_RATE_LIMITED);
        goto done;
    }
    if (st < 200 || st >= 300 || res->truncated) {
        if (st == 0)
            snprintf(out->error, sizeof(out->error), "%s",
                     res->error != NULL ? res->error : "transport error");
        else if (res->truncated)
            snprintf(out->error, sizeof(out->error), "page larger than %zu MiB",
                     POLL_PAGE_CAP >> 20);
        else
            snprintf(out->error, sizeof(out->error), "HTTP %ld", st);
        rc = failed(run, out);
        goto done;
    }
    list = parse_list(res, &doc, out);
    if (list == NULL) {
        rc = out->error[0] != '\0' ? failed(run, out) : -ENOMEM;
        goto done;
    }

    out->errors_in_row = 0;
    if (run->page == 1) {
        /* validators of the first page: what the next run's conditional GET sends */
        out->etag = res->etag != NULL ? res->etag : "";
        out->last_modified = res->last_modified != NULL ? res->last_modified : "";
    }
    out->listed = json_array_size(list);
    rc = read_orders(run, list, out);
    if (rc == -E2BIG) {
        /* none of the page is stored, so the cursor must not pass its orders */
        snprintf(out->max_updated, sizeof(out->max_updated), "%s",
                 run->max_updated != NULL ? run->max_updated : "");
        snprintf(out->error, sizeof(out->error), "page too large to store");
        rc = end_run(out, POLL_ERROR);
        goto done;
    }
    if (rc < 0)
        goto done;

    out->result = POLL_OK;
    link = poll_page_next_link(run->poll_url, run->page_url, res->link, &next_url);
    if (link == POLL_LINK_NOMEM) {
        rc = -ENOMEM;
        goto done;
    }
    if (link == POLL_LINK_FOREIGN || link == POLL_LINK_BAD) {
        /* this page came from the configured origin and is kept; the run stops
           here, and the next one starts from the cursor this page moved */
        out->link_refused = true;
        out->result = POLL_ERROR;
        out->last = true;
        snprintf(out->error, sizeof(out->error), "%s",
                 link == POLL_LINK_FOREIGN
                     ? "next page link refused: not the scheme, host and port of poll_url"
                     : "next page link refused: not a URL");
    } else if (link == POLL_LINK_NEXT && run->page < POLL_MAX_PAGES) {
        out->next_url = next_url;
        next_url = NULL;
    } else {
        out->last = true;
    }
done:
    free(next_url);
    json_decref(doc);
    if (rc < 0)
        poll_page_clear(out);
    return rc;
}
