/*
 * poller: scheduled GETs of order lists. See poller.h for the flow.
 *
 * Each polled source is a `struct psource` with its own timer (memory freed in
 * the timer's close callback). A run moves through: CLAIMING (poll_claim) ->
 * FETCHING (HTTP) -> STORING (ingest_poll for a page) -> FETCHING the next
 * page ... -> IDLE with the timer armed. Everything is on the loop; no state
 * is kept between runs but the cursor in the database.
 */
#include "poller.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/rand.h>

#include "buf.h"
#include "http_client.h"
#include "inbound.h"
#include "log.h"
#include "metrics.h"

#define PAGE_CAP      ((size_t)32 << 20) /* one page of an orders list */
#define MAX_PAGES     100                /* per run; the cursor carries the rest to the next run */
#define LEASE         "60 seconds" /* a run takes seconds; a crashed run blocks others this long */
#define MAX_BACKOFF_S 3600.0       /* errors and a server's Retry-After wait at most this */
#define MAX_WAIT_S    (30 * 86400.0) /* the longest interval a timer is armed for */

enum run_state { RUN_IDLE, RUN_CLAIMING, RUN_FETCHING, RUN_STORING };

struct psource {
    struct psource *next;
    struct poller *p;
    char *id, *url, *auth;
    const struct source_kind *kind;
    double interval_s;
    bool present;
    uv_timer_t timer;

    enum run_state state;
    unsigned errors_in_row;
    double retry_after_s;
    /* current run */
    char cursor[64], etag[256], last_modified[64], max_updated[64];
    char *page_url;
    int pages, requests, run_new;
    char hdr_auth[512], hdr_inm[300], hdr_ims[100];
    struct buf batch;
    const char *pv[11];
    char pbuf[6][64];
    char err[256];

    struct metric *m_ok, *m_empty, *m_not_modified, *m_limited, *m_error, *m_orders,
        *m_link_refused;
};

struct poller {
    uv_loop_t *loop;
    struct db *db;
    struct http_client *http;
    char *instance;
    struct psource *sources;
    bool loading, freeing;
};

static void schedule(struct psource *s, double secs);
static void fetch(struct psource *s);

static double jitter(double secs)
{
    unsigned short v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = (unsigned short)rand();
    return secs * (1.0 + 0.1 * ((double)v / 65535.0));
}

static void finish_run(struct psource *s, double next_s)
{
    free(s->page_url);
    s->page_url = NULL;
    buf_free(&s->batch);
    s->state = RUN_IDLE;
    if (s->present && !s->p->freeing)
        schedule(s, next_s);
}

/* -------------------------------------------------------------- storing */

static void on_stored(PGresult *res, const char *err, void *data);

/*
 * Stores one page (or, with last, closes the run). `result` is one of ok,
 * not_modified, rate_limited, error; the batch holds the page's elements.
 */
static void store(struct psource *s, bool last, const char *result)
{
    snprintf(s->pbuf[0], sizeof(s->pbuf[0]), "%s", last ? "true" : "false");
    snprintf(s->pbuf[1], sizeof(s->pbuf[1]), "%d", s->requests);
    snprintf(s->pbuf[2], sizeof(s->pbuf[2]), "%s", result);
    snprintf(s->pbuf[3], sizeof(s->pbuf[3]), "%d", s->run_new);
    if (s->batch.data == NULL && buf_append_str(&s->batch, "[]") < 0) {
        finish_run(s, 60);
        return;
    }
    s->pv[0] = s->id;
    s->pv[1] = s->p->instance;
    s->pv[2] = s->batch.data;
    s->pv[3] = s->pbuf[0];
    s->pv[4] = last && s->max_updated[0] ? s->max_updated : NULL;
    s->pv[5] = last && s->etag[0] ? s->etag : NULL;
    s->pv[6] = last && s->last_modified[0] ? s->last_modified : NULL;
    s->pv[7] = s->pbuf[1];
    s->pv[8] = s->pbuf[2];
    s->pv[9] = s->err[0] ? s->err : NULL;
    s->pv[10] = s->pbuf[3];
    s->state = RUN_STORING;
    if (db_query(s->p->db, false,
                 "SELECT n_orders, n_emitted FROM ingest_poll($1, $2, $3::jsonb, $4::boolean, $5,"
                 " $6, $7, $8::integer, $9, $10, $11::integer)",
                 11, s->pv, on_stored, s) < 0)
        finish_run(s, 5); /* the lease expires; the cursor did not move */
    s->requests = 0;
}

static void on_stored(PGresult *res, const char *err, void *data)
{
    struct psource *s = data;
    if (err != NULL || res == NULL) {
        log_warn("poll results not stored; the run is retried from the same cursor",
                 json_pack("{s:s,s:s}", "source", s->id, "detail", err ? err : "connection lost"));
        finish_run(s, 5);
        return;
    }
    int emitted = PQntuples(res) ? atoi(PQgetvalue(res, 0, 1)) : 0;
    s->run_new += emitted;
    metric_add(s->m_orders, PQntuples(res) ? atof(PQgetvalue(res, 0, 0)) : 0);
    buf_reset(&s->batch);
    if (s->page_url != NULL) {
        fetch(s); /* next page */
        return;
    }
    finish_run(s, s->retry_after_s > s->interval_s ? s->retry_after_s : s->interval_s);
}

/* -------------------------------------------------------------- fetching */

static int append_order(struct psource *s, json_t *order)
{
    json_t *canon = NULL;
    char err[SOURCE_DETAIL_SIZE];
    int rc = s->kind->poll_order(s->id, order, time(NULL), &canon, err, sizeof(err));
    if (rc < 0) {
        log_warn("polled order skipped",
                 json_pack("{s:s,s:s}", "source", s->id, "detail", rc == -ENOMEM ? "oom" : err));
        return rc == -ENOMEM ? rc : 0;
    }
    const char *ext = json_string_value(json_object_get(canon, "external_id"));
    const char *upd = json_string_value(json_object_get(canon, "updated_at"));
    if (ext == NULL || upd == NULL) {
        json_decref(canon);
        return 0;
    }
    /* RFC 3339 UTC strings of one shape compare in time order */
    if (strcmp(upd, s->max_updated) > 0)
        snprintf(s->max_updated, sizeof(s->max_updated), "%s", upd);
    char key[256];
    snprintf(key, sizeof(key), "poll:%s:%s", ext, upd);
    json_t *el = json_pack("{s:s,s:s,s:s,s:s,s:o,s:O}", "s", s->id, "k", key, "t", "poll", "e",
                           "order.sync", "o", canon, "p", order);
    if (el == NULL)
        return -ENOMEM;
    char *text = json_dumps(el, JSON_COMPACT);
    json_decref(el);
    if (text == NULL)
        return -ENOMEM;
    rc = buf_append_str(&s->batch, s->batch.len > 1 ? "," : "");
    if (rc == 0)
        rc = buf_append_str(&s->batch, text);
    free(text);
    return rc;
}

/* Response headers a poll keeps: validators for the next run and the next page */
enum { H_ETAG, H_LAST_MODIFIED, H_LINK };
static const char *const capture_headers[] = {"etag", "last-modified", "link", NULL};

/*
 * The target of the rel="next" link in a Link header (RFC 8288, as Shopify
 * paginates: `<url>; rel="previous", <url>; rel="next"`): a new allocation,
 * or NULL when there is none (or out of memory).
 */
static char *link_next_target(const char *value)
{
    const char *p = value;
    while (p != NULL && (p = strchr(p, '<')) != NULL) {
        const char *close = strchr(p, '>');
        if (close == NULL)
            return NULL;
        const char *next_link = strchr(close, '<');
        const char *rel = strstr(close, "rel=");
        if (rel != NULL && (next_link == NULL || rel < next_link) &&
            (strncmp(rel, "rel=\"next\"", 10) == 0 || strncmp(rel, "rel=next", 8) == 0))
            return strndup(p + 1, (size_t)(close - p - 1));
        p = close;
    }
    return NULL;
}

/* Do a and b have the same scheme, host and port (a default port made explicit)? */
static bool same_origin(CURLU *a, CURLU *b)
{
    static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
    bool same = true;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]) && same; i++) {
        char *x = NULL, *y = NULL;
        unsigned flags = parts[i] == CURLUPART_PORT ? CURLU_DEFAULT_PORT : 0;
        same = curl_url_get(a, parts[i], &x, flags) == CURLUE_OK &&
               curl_url_get(b, parts[i], &y, flags) == CURLUE_OK && strcasecmp(x, y) == 0;
        curl_free(x);
        curl_free(y);
    }
    return same;
}

enum poller_link poller_next_link(const char *poll_url, const char *page_url, const char *link,
                                  char **out)
{
    *out = NULL;
    if (link == NULL || link[0] == '\0')
        return POLLER_LINK_NONE;
    char *target = link_next_target(link);
    if (target == NULL)
        return strstr(link, "next") != NULL ? POLLER_LINK_BAD : POLLER_LINK_NONE;
    enum poller_link verdict = POLLER_LINK_BAD;
    CURLU *origin = curl_url(), *next = curl_url();
    char *url = NULL;
    /* a relative reference resolves against the page it came with */
    if (origin == NULL || next == NULL ||
        curl_url_set(origin, CURLUPART_URL, poll_url, 0) != CURLUE_OK ||
        curl_url_set(next, CURLUPART_URL, page_url, 0) != CURLUE_OK ||
        curl_url_set(next, CURLUPART_URL, target, 0) != CURLUE_OK)
        goto done;
    if (!same_origin(origin, next)) {
        verdict = POLLER_LINK_FOREIGN;
        goto done;
    }
    if (curl_url_get(next, CURLUPART_URL, &url, 0) != CURLUE_OK)
        goto done;
    *out = strdup(url);
    verdict = *out != NULL ? POLLER_LINK_NEXT : POLLER_LINK_BAD;
done:
    curl_free(url);
    curl_url_cleanup(origin);
    curl_url_cleanup(next);
    free(target);
    return verdict;
}

static void on_fetched(const struct http_client_result *res, void *data)
{
    struct psource *s = data;
    struct poller *p = s->p;
    if (res->aborted || p->freeing) {
        finish_run(s, 0);
        return;
    }
    s->requests++;
    long st = res->http_status;
    s->err[0] = '\0';
    s->retry_after_s = 0;
    if (st == 304) {
        metric_add(s->m_not_modified, 1);
        s->errors_in_row = 0;
        free(s->page_url);
        s->page_url = NULL;
        store(s, true, "not_modified");
        return;
    }
    if (st == 429 || st == 503) {
        metric_add(s->m_limited, 1);
        /* a server's wish, within reason: never past the longest backoff */
        s->retry_after_s = res->retry_after_s > 0 ? res->retry_after_s : s->interval_s;
        if (!(s->retry_after_s <= MAX_BACKOFF_S))
            s->retry_after_s = MAX_BACKOFF_S;
        snprintf(s->err, sizeof(s->err), "HTTP %ld (retry after %.0f s)", st, s->retry_after_s);
        log_info("poll rate-limited",
                 json_pack("{s:s,s:f}", "source", s->id, "retry_after_s", s->retry_after_s));
        free(s->page_url);
        s->page_url = NULL;
        buf_reset(&s->batch);
        store(s, true, "rate_limited");
        return;
    }
    json_t *doc = NULL;
    if (st >= 200 && st < 300 && !res->truncated) {
        json_error_t jerr;
        doc = json_loadb(res->body, res->body_len, 0, &jerr);
        if (doc == NULL)
            snprintf(s->err, sizeof(s->err), "malformed JSON at line %d: %s", jerr.line, jerr.text);
    } else if (st == 0) {
        snprintf(s->err, sizeof(s->err), "%s", res->error ? res->error : "transport error");
    } else {
        snprintf(s->err, sizeof(s->err), res->truncated ? "page larger than 32 MiB" : "HTTP %ld",
                 st);
    }
    json_t *list = json_is_array(doc) ? doc : json_object_get(doc, "orders");
    if (doc != NULL && !json_is_array(list))
        snprintf(s->err, sizeof(s->err), "expected {\"orders\": [...]} or a JSON array");
    if (s->err[0] != '\0') {
        json_decref(doc);
        metric_add(s->m_error, 1);
        s->errors_in_row++;
        /* exponential backoff from the interval, capped */
        double backoff = s->interval_s * pow(2.0, (double)(s->errors_in_row - 1));
        s->retry_after_s = backoff < MAX_BACKOFF_S ? backoff : MAX_BACKOFF_S;
        log_warn("poll failed", json_pack("{s:s,s:s,s:f}", "source", s->id, "detail", s->err,
                                          "retry_in_s", s->retry_after_s));
        free(s->page_url);
        s->page_url = NULL;
        buf_reset(&s->batch);
        store(s, true, "error");
        return;
    }
    s->errors_in_row = 0;
    if (s->pages == 1) {
        /* validators of the first page: what the next run's conditional GET sends */
        snprintf(s->etag, sizeof(s->etag), "%s", res->header[H_ETAG]);
        snprintf(s->last_modified, sizeof(s->last_modified), "%s", res->header[H_LAST_MODIFIED]);
    }
    buf_reset(&s->batch);
    int rc = buf_append_str(&s->batch, "[");
    size_t i;
    json_t *order;
    json_array_foreach(list, i, order)
    {
        if (rc == 0 && json_is_object(order))
            rc = append_order(s, order);
    }
    if (rc == 0)
        rc = buf_append_str(&s->batch, "]");
    json_decref(doc);
    if (rc < 0) {
        snprintf(s->err, sizeof(s->err), "page too large to store");
        buf_reset(&s->batch);
        store(s, true, "error");
        return;
    }
    metric_add(json_array_size(list) ? s->m_ok : s->m_empty, 1);
    char *next_url = NULL;
    enum poller_link link = poller_next_link(s->url, s->page_url, res->header[H_LINK], &next_url);
    free(s->page_url);
    s->page_url = NULL;
    if (link == POLLER_LINK_FOREIGN || link == POLLER_LINK_BAD) {
        /* this page came from the configured origin and is kept; the run stops
           here, and the next one starts from the cursor this page moved */
        metric_add(s->m_link_refused, 1);
        snprintf(s->err, sizeof(s->err), "%s",
                 link == POLLER_LINK_FOREIGN
                     ? "next page link refused: not the scheme, host and port of poll_url"
                     : "next page link refused: not a URL");
        log_warn("poll stopped at a next page link",
                 json_pack("{s:s,s:s}", "source", s->id, "detail", s->err));
        store(s, true, "error");
        return;
    }
    if (link == POLLER_LINK_NEXT && s->pages < MAX_PAGES) {
        s->page_url = next_url;
        store(s, false, "ok");
        return;
    }
    free(next_url);
    store(s, true, "ok");
}

static void fetch(struct psource *s)
{
    const char *headers[5];
    int h = 0;
    headers[h++] = "Accept: application/json";
    if (s->auth != NULL) {
        snprintf(s->hdr_auth, sizeof(s->hdr_auth), "%s", s->auth);
        headers[h++] = s->hdr_auth;
    }
    if (s->pages == 0) {
        /* conditional only for the first page: later pages have their own URLs */
        if (s->etag[0]) {
            snprintf(s->hdr_inm, sizeof(s->hdr_inm), "If-None-Match: %s", s->etag);
            headers[h++] = s->hdr_inm;
        }
        if (s->last_modified[0]) {
            snprintf(s->hdr_ims, sizeof(s->hdr_ims), "If-Modified-Since: %s", s->last_modified);
            headers[h++] = s->hdr_ims;
        }
    }
    headers[h] = NULL;
    s->pages++;
    struct http_client_request req = {.url = s->page_url,
                                      .get = true,
                                      .capture = PAGE_CAP,
                                      .capture_headers = capture_headers,
                                      .headers = headers,
                                      .timeout_ms = 30000};
    s->state = RUN_FETCHING;
    if (http_client_start(s->p->http, &req, on_fetched, s) < 0)
        finish_run(s, 5);
}

/* -------------------------------------------------------------- claiming */

static void on_claimed(PGresult *res, const char *err, void *data)
{
    struct psource *s = data;
    if (err != NULL || res == NULL || PQntuples(res) == 0) {
        /* another instance holds the lease, or the database is away */
        finish_run(s, s->interval_s);
        return;
    }
    snprintf(s->cursor, sizeof(s->cursor), "%s", PQgetvalue(res, 0, 0));
    snprintf(s->etag, sizeof(s->etag), "%s", PQgetvalue(res, 0, 1));
    snprintf(s->last_modified, sizeof(s->last_modified), "%s", PQgetvalue(res, 0, 2));
    snprintf(s->max_updated, sizeof(s->max_updated), "%s", s->cursor);
    s->pages = s->requests = s->run_new = 0;
    s->err[0] = '\0';
    buf_init(&s->batch, PAGE_CAP * 2);
    struct buf url;
    buf_init(&url, 8192);
    int rc = buf_append_str(&url, s->url);
    if (rc == 0 && s->cursor[0] != '\0') {
        char *esc = curl_easy_escape(NULL, s->cursor, 0);
        rc = esc ? buf_printf(&url, "%supdated_at_min=%s", strchr(s->url, '?') ? "&" : "?", esc)
                 : -ENOMEM;
        curl_free(esc);
    }
    if (rc < 0) {
        buf_free(&url);
        finish_run(s, s->interval_s);
        return;
    }
    s->page_url = buf_steal(&url, NULL);
    fetch(s);
}

static void on_timer(uv_timer_t *t)
{
    struct psource *s = t->data;
    if (s->state != RUN_IDLE || !s->present)
        return;
    if (!db_is_ready(s->p->db)) {
        schedule(s, 1);
        return;
    }
    s->pv[0] = s->id;
    s->pv[1] = s->p->instance;
    s->pv[2] = LEASE;
    s->state = RUN_CLAIMING;
    if (db_query(s->p->db, false,
                 "SELECT coalesce(poll_cursor, ''), coalesce(poll_etag, ''),"
                 " coalesce(poll_last_modified, '') FROM poll_claim($1, $2, $3::interval)",
                 3, s->pv, on_claimed, s) < 0) {
        s->state = RUN_IDLE;
        schedule(s, 1);
    }
}

static void schedule(struct psource *s, double secs)
{
    /* whatever the caller computed, a finite wait the timer can hold */
    if (!(secs >= 0))
        secs = 0;
    if (secs > MAX_WAIT_S)
        secs = MAX_WAIT_S;
    uv_timer_start(&s->timer, on_timer, (uint64_t)(jitter(secs) * 1000), 0);
}

/* -------------------------------------------------------------- sources */

static void source_closed(uv_handle_t *h)
{
    struct psource *s = h->data;
    free(s->id);
    free(s->url);
    free(s->auth);
    free(s->page_url);
    buf_free(&s->batch);
    free(s);
}

static struct psource *find(struct poller *p, const char *id)
{
    for (struct psource *s = p->sources; s != NULL; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

static void metrics_for(struct psource *s)
{
    char l[160];
    const char *n = "ordersync_polls_total", *h = "Poll runs and pages by source and result";
    snprintf(l, sizeof(l), "source=\"%s\",result=\"ok\"", s->id);
    s->m_ok = metrics_counter(n, h, l);
    snprintf(l, sizeof(l), "source=\"%s\",result=\"empty\"", s->id);
    s->m_empty = metrics_counter(n, h, l);
    snprintf(l, sizeof(l), "source=\"%s\",result=\"not_modified\"", s->id);
    s->m_not_modified = metrics_counter(n, h, l);
    snprintf(l, sizeof(l), "source=\"%s\",result=\"rate_limited\"", s->id);
    s->m_limited = metrics_counter(n, h, l);
    snprintf(l, sizeof(l), "source=\"%s\",result=\"error\"", s->id);
    s->m_error = metrics_counter(n, h, l);
    snprintf(l, sizeof(l), "source=\"%s\"", s->id);
    s->m_orders =
        metrics_counter("ordersync_poll_orders_total", "Orders listed by polled sources", l);
    s->m_link_refused = metrics_counter("ordersync_poll_links_refused_total",
                                        "Next page links refused: another origin than poll_url", l);
}

static int set(char **field, const PGresult *res, int r, int c)
{
    char *v = PQgetisnull(res, r, c) ? NULL : strdup(PQgetvalue(res, r, c));
    if (!PQgetisnull(res, r, c) && v == NULL)
        return -ENOMEM;
    free(*field);
    *field = v;
    return 0;
}

static void on_sources(PGresult *res, const char *err, void *data)
{
    struct poller *p = data;
    p->loading = false;
    if (err != NULL || res == NULL || p->freeing)
        return;
    for (struct psource *s = p->sources; s != NULL; s = s->next)
        s->present = false;
    for (int r = 0; r < PQntuples(res); r++) {
        const struct source_kind *kind;
        if (source_kind_parse(PQgetvalue(res, r, 1), &kind) < 0 || kind->poll_order == NULL) {
            log_warn("source cannot be polled",
                     json_pack("{s:s,s:s}", "source", PQgetvalue(res, r, 0), "kind",
                               PQgetvalue(res, r, 1)));
            continue;
        }
        struct psource *s = find(p, PQgetvalue(res, r, 0));
        bool fresh = s == NULL;
        if (fresh) {
            s = calloc(1, sizeof(*s));
            if (s == NULL || (s->id = strdup(PQgetvalue(res, r, 0))) == NULL ||
                uv_timer_init(p->loop, &s->timer) < 0) {
                if (s != NULL)
                    free(s->id);
                free(s);
                continue;
            }
            s->p = p;
            s->timer.data = s;
            metrics_for(s);
            s->next = p->sources;
            p->sources = s;
        }
        s->kind = kind;
        if (set(&s->url, res, r, 2) < 0 || set(&s->auth, res, r, 4) < 0)
            continue;
        s->interval_s = atof(PQgetvalue(res, r, 3));
        if (s->interval_s < 1)
            s->interval_s = 60;
        s->present = s->url != NULL;
        if (fresh && s->present)
            schedule(s, s->interval_s < 2 ? s->interval_s : 2); /* first run soon after start */
    }
    for (struct psource *s = p->sources; s != NULL; s = s->next)
        if (!s->present)
            uv_timer_stop(&s->timer);
}

void poller_reload(struct poller *p)
{
    if (p == NULL || p->loading || !db_is_ready(p->db))
        return;
    if (db_query(p->db, false,
                 "SELECT id, kind, poll_url, extract(epoch FROM CASE WHEN mode = 'poll'"
                 " THEN poll_interval ELSE reconcile_interval END)::float8, poll_auth_header"
                 " FROM sources WHERE enabled AND poll_url IS NOT NULL"
                 " AND (mode = 'poll' OR reconcile_interval IS NOT NULL)",
                 0, NULL, on_sources, p) == 0)
        p->loading = true;
}

int poller_new(uv_loop_t *loop, struct db *db, const char *instance, struct poller **out)
{
    struct poller *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    p->loop = loop;
    p->db = db;
    p->instance = strdup(instance);
    char ua[64];
    snprintf(ua, sizeof(ua), "ordersync/%s", ORDERSYNC_VERSION);
    int rc = p->instance ? http_client_new(loop, ua, 64, &p->http) : -ENOMEM;
    if (rc < 0) {
        free(p->instance);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void poller_free(struct poller **pp)
{
    struct poller *p = *pp;
    if (p == NULL)
        return;
    *pp = NULL;
    p->freeing = true;
    http_client_free(&p->http); /* aborted fetches finish their runs */
    while (p->sources != NULL) {
        struct psource *s = p->sources;
        p->sources = s->next;
        uv_timer_stop(&s->timer);
        uv_close((uv_handle_t *)&s->timer, source_closed);
    }
    free(p->instance);
    free(p);
}
