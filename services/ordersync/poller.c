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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/rand.h>

#include "buf.h"
#include "http_client.h"
#include "log.h"
#include "metrics.h"
#include "poll_page.h"
#include "source_kind.h"

#define LEASE      "60 seconds"   /* a run takes seconds; a crashed run blocks others this long */
#define MAX_WAIT_S (30 * 86400.0) /* the longest interval a timer is armed for */

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
    struct poll_page page; /* the page being stored */
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
    bool load_again; /* a change came while loading: that query may predate it */
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
    poll_page_clear(&s->page);
    s->state = RUN_IDLE;
    if (s->present && !s->p->freeing)
        schedule(s, next_s);
}

/* -------------------------------------------------------------- storing */

static void on_stored(PGresult *res, const char *err, void *data);

/* Stores s->page (with last, closing the run); `result` is what poll_state counts. */
static void store(struct psource *s, bool last, const char *result)
{
    snprintf(s->pbuf[0], sizeof(s->pbuf[0]), "%s", last ? "true" : "false");
    snprintf(s->pbuf[1], sizeof(s->pbuf[1]), "%d", s->requests);
    snprintf(s->pbuf[2], sizeof(s->pbuf[2]), "%s", result);
    snprintf(s->pbuf[3], sizeof(s->pbuf[3]), "%d", s->run_new);
    s->pv[0] = s->id;
    s->pv[1] = s->p->instance;
    s->pv[2] = s->page.batch;
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
                 11, s->pv, on_stored, s) < 0) {
        finish_run(s, 5); /* the lease expires; the cursor did not move */
        return;
    }
    s->requests = 0;
}

static void on_stored(PGresult *res, const char *err, void *data)
{
    static const char *const cols[] = {"n_orders", "n_emitted"};
    struct psource *s = data;
    int c[2];
    if (err != NULL || res == NULL || db_columns(res, "ingest_poll", cols, c, 2) < 0) {
        log_warn("poll results not stored; the run is retried from the same cursor",
                 json_pack("{s:s,s:s}", "source", s->id, "detail", err ? err : "connection lost"));
        finish_run(s, 5);
        return;
    }
    if (PQntuples(res) > 0) {
        s->run_new += atoi(PQgetvalue(res, 0, c[1]));
        metric_add(s->m_orders, atof(PQgetvalue(res, 0, c[0])));
    }
    poll_page_clear(&s->page);
    if (s->page_url != NULL) {
        fetch(s); /* next page */
        return;
    }
    finish_run(s, s->retry_after_s > s->interval_s ? s->retry_after_s : s->interval_s);
}

/* -------------------------------------------------------------- fetching */

/* Response headers a poll reads: validators for the next run, the next page, the wait */
enum { H_ETAG, H_LAST_MODIFIED, H_LINK, H_RETRY_AFTER };
static const char *const capture_headers[] = {"etag", "last-modified", "link", "retry-after", NULL};

/* Counts and logs what poll_page decided, and moves the run on. */
static void apply(struct psource *s)
{
    struct poll_page *pg = &s->page;

    s->errors_in_row = pg->errors_in_row;
    s->retry_after_s = pg->wait_s;
    snprintf(s->max_updated, sizeof(s->max_updated), "%s", pg->max_updated);
    if (pg->etag != NULL)
        snprintf(s->etag, sizeof(s->etag), "%s", pg->etag);
    if (pg->last_modified != NULL)
        snprintf(s->last_modified, sizeof(s->last_modified), "%s", pg->last_modified);
    snprintf(s->err, sizeof(s->err), "%s", pg->error);
    free(s->page_url);
    s->page_url = pg->next_url;
    pg->next_url = NULL;

    if (pg->skipped > 0)
        log_warn("polled orders skipped",
                 json_pack("{s:s,s:I,s:s}", "source", s->id, "skipped", (json_int_t)pg->skipped,
                           "detail", pg->skipped_detail));
    if (pg->result == POLL_NOT_MODIFIED) {
        metric_add(s->m_not_modified, 1);
    } else if (pg->result == POLL_RATE_LIMITED) {
        metric_add(s->m_limited, 1);
        log_info("poll rate-limited",
                 json_pack("{s:s,s:f}", "source", s->id, "retry_after_s", pg->wait_s));
    } else if (pg->result == POLL_OK || pg->link_refused) {
        metric_add(pg->listed > 0 ? s->m_ok : s->m_empty, 1);
    } else {
        metric_add(s->m_error, 1);
        log_warn("poll failed", json_pack("{s:s,s:s,s:f}", "source", s->id, "detail", pg->error,
                                          "retry_in_s", pg->wait_s));
    }
    if (pg->link_refused) {
        metric_add(s->m_link_refused, 1);
        log_warn("poll stopped at a next page link",
                 json_pack("{s:s,s:s}", "source", s->id, "detail", pg->error));
    }
    store(s, pg->last, poll_result_name(pg->result));
}

static void on_fetched(const struct http_client_result *res, void *data)
{
    struct psource *s = data;
    if (res->aborted || s->p->freeing) {
        finish_run(s, 0);
        return;
    }
    s->requests++;
    struct poll_run run = {.kind = s->kind,
                           .source_id = s->id,
                           .poll_url = s->url,
                           .page_url = s->page_url,
                           .page = s->pages,
                           .interval_s = s->interval_s,
                           .errors_in_row = s->errors_in_row,
                           .max_updated = s->max_updated,
                           .now = time(NULL)};
    struct poll_response response = {.status = res->http_status,
                                     .error = res->error,
                                     .etag = res->header[H_ETAG],
                                     .last_modified = res->header[H_LAST_MODIFIED],
                                     .link = res->header[H_LINK],
                                     .retry_after = res->header[H_RETRY_AFTER],
                                     .body = res->body,
                                     .body_len = res->body_len,
                                     .truncated = res->truncated};
    if (poll_page_read(&run, &response, &s->page) < 0) {
        log_warn("poll page not read: out of memory; the run is retried from the same cursor",
                 json_pack("{s:s}", "source", s->id));
        finish_run(s, 5);
        return;
    }
    apply(s);
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
                                      .capture = POLL_PAGE_CAP,
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
    static const char *const cols[] = {"poll_cursor", "poll_etag", "poll_last_modified"};
    struct psource *s = data;
    int c[3];
    if (err != NULL || res == NULL || PQntuples(res) == 0 ||
        db_columns(res, "poll_claim", cols, c, 3) < 0) {
        /* another instance holds the lease, or the database is away */
        finish_run(s, s->interval_s);
        return;
    }
    snprintf(s->cursor, sizeof(s->cursor), "%s", PQgetvalue(res, 0, c[0]));
    snprintf(s->etag, sizeof(s->etag), "%s", PQgetvalue(res, 0, c[1]));
    snprintf(s->last_modified, sizeof(s->last_modified), "%s", PQgetvalue(res, 0, c[2]));
    snprintf(s->max_updated, sizeof(s->max_updated), "%s", s->cursor);
    s->pages = s->requests = s->run_new = 0;
    s->err[0] = '\0';
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
                 "SELECT coalesce(poll_cursor, '') AS poll_cursor, coalesce(poll_etag, '') AS"
                 " poll_etag, coalesce(poll_last_modified, '') AS poll_last_modified"
                 " FROM poll_claim($1, $2, $3::interval)",
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
    poll_page_clear(&s->page);
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

/* The columns of the sources query, in poller_reload(). */
enum { C_ID, C_KIND, C_URL, C_INTERVAL, C_AUTH, N_COLS };
static const char *const source_cols[N_COLS] = {"id", "kind", "poll_url", "interval_s",
                                                "poll_auth_header"};

static void load_sources(struct poller *p, PGresult *res)
{
    int c[N_COLS];
    if (db_columns(res, "poll_sources", source_cols, c, N_COLS) < 0)
        return;
    for (struct psource *s = p->sources; s != NULL; s = s->next)
        s->present = false;
    for (int r = 0; r < PQntuples(res); r++) {
        const char *id = PQgetvalue(res, r, c[C_ID]);
        const char *kind_name = PQgetvalue(res, r, c[C_KIND]);
        const struct source_kind *kind;
        if (source_kind_parse(kind_name, &kind) < 0 || kind->poll_order == NULL) {
            log_warn("source cannot be polled",
                     json_pack("{s:s,s:s}", "source", id, "kind", kind_name));
            continue;
        }
        struct psource *s = find(p, id);
        bool fresh = s == NULL;
        if (fresh) {
            s = calloc(1, sizeof(*s));
            if (s == NULL || (s->id = strdup(id)) == NULL ||
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
        if (set(&s->url, res, r, c[C_URL]) < 0 || set(&s->auth, res, r, c[C_AUTH]) < 0)
            continue;
        s->interval_s = atof(PQgetvalue(res, r, c[C_INTERVAL]));
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

static void on_sources(PGresult *res, const char *err, void *data)
{
    struct poller *p = data;
    p->loading = false;
    if (p->freeing)
        return;
    if (err == NULL && res != NULL)
        load_sources(p, res);
    if (p->load_again)
        poller_reload(p);
}

void poller_reload(struct poller *p)
{
    if (p == NULL)
        return;
    p->load_again = p->loading;
    if (p->loading || !db_is_ready(p->db))
        return;
    if (db_query(p->db, false,
                 "SELECT id, kind, poll_url, extract(epoch FROM CASE WHEN mode = 'poll'"
                 " THEN poll_interval ELSE reconcile_interval END)::float8 AS interval_s,"
                 " poll_auth_header FROM sources WHERE enabled AND poll_url IS NOT NULL"
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
