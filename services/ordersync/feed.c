/*
 * feed: pull feeds with long-polling. See feed.h for the contract.
 *
 * A reader is a `struct reader`: its request, destination, cursor and limit,
 * and (while waiting) a timer for its deadline. Queries run one at a time on
 * the feed's own connection; a wake-up re-queries every waiting reader once,
 * which costs one query per reader only when events were committed.
 */
#include "feed.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "api.h"
#include "buf.h"
#include "db.h"
#include "log.h"
#include "metrics.h"

#define MAX_WAIT_S    60
#define MAX_LIMIT     1000
#define DEFAULT_LIMIT 100
#define RESPONSE_CAP  ((size_t)64 << 20)

static const struct db_stmt stmts[] = {
    {"feed_read",
     /* the ack and the read see the same snapshot: rows after the cursor are untouched */
     "WITH ack AS (UPDATE outbox SET state = 'delivered', delivered_at = now(), last_status = 200,"
     "  last_error = NULL WHERE destination_id = $1 AND state = 'pending' AND id <= $2::bigint"
     "  RETURNING 1)"
     " SELECT id, replace(event_id::text, '-', ''), payload::text,"
     "  (SELECT count(*) FROM ack)"
     " FROM outbox WHERE destination_id = $1 AND state = 'pending' AND id > $2::bigint"
     " ORDER BY id LIMIT $3::integer"},
    {"feed_dests", "SELECT id, feed_token, enabled FROM destinations WHERE mode = 'poll'"},
};

struct fdest {
    char *id;
    char *token;
    bool enabled;
};

struct reader {
    struct reader *next, *prev; /* waiting list */
    struct feed *f;
    struct http_request *req;
    char dest[64];
    char cursor[24];
    char limit[8];
    const char *pv[3];
    uint64_t deadline; /* loop ms; 0: don't wait */
    uv_timer_t timer;
    bool waiting, querying, timer_open, done;
};

struct feed {
    uv_loop_t *loop;
    struct db *db;
    struct fdest *dests;
    unsigned n_dests;
    bool loaded, loading;
    struct reader *waiting;
    unsigned n_waiting;
    bool freeing;
    struct metric *m_events, *m_waiting, *m_acked;
};

static void query(struct reader *r);

static void reader_closed(uv_handle_t *h)
{
    free(h->data);
}

/* The reader is finished once answered; its memory goes with its timer handle. */
static void reader_finish(struct reader *r)
{
    struct feed *f = r->f;
    if (r->waiting) {
        if (r->prev != NULL)
            r->prev->next = r->next;
        else
            f->waiting = r->next;
        if (r->next != NULL)
            r->next->prev = r->prev;
        r->waiting = false;
        f->n_waiting--;
        metric_set(f->m_waiting, f->n_waiting);
    }
    r->done = true;
    if (r->timer_open) {
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, reader_closed);
    } else {
        free(r);
    }
}

static void reply_events(struct reader *r, PGresult *res)
{
    struct buf out;
    buf_init(&out, RESPONSE_CAP);
    int n = PQntuples(res);
    const char *next = n > 0 ? PQgetvalue(res, n - 1, 0) : r->cursor;
    int rc = buf_append_str(&out, "{\"events\":[");
    for (int i = 0; i < n && rc == 0; i++) {
        const char *payload = PQgetvalue(res, i, 2);
        /* the stored envelope is an object: splice the webhook-id in as "id" */
        rc = buf_printf(&out, "%s{\"id\":\"msg_%s\",%s", i ? "," : "", PQgetvalue(res, i, 1),
                        payload[0] == '{' ? payload + 1 : "}");
    }
    if (rc == 0)
        rc = buf_printf(&out, "],\"next\":\"%s\"}", next);
    if (rc < 0)
        api_reply_error(r->req, 500, "internal_error", "feed response too large", NULL, NULL, 0);
    else
        api_reply(r->req, 200, out.data, n ? "events" : "empty", NULL);
    metric_add(r->f->m_events, n);
    buf_free(&out);
    reader_finish(r);
}

static void on_timeout(uv_timer_t *t)
{
    struct reader *r = t->data;
    if (r->querying)
        return; /* the query in flight answers */
    r->deadline = 0;
    query(r);
}

static void on_read(PGresult *res, const char *err, void *data)
{
    struct reader *r = data;
    struct feed *f = r->f;
    r->querying = false;
    if (err != NULL || res == NULL) {
        struct http_header h = {"Retry-After", "1"};
        api_reply_error(r->req, 503, "database_unavailable", "the feed could not be read", NULL, &h,
                        1);
        reader_finish(r);
        return;
    }
    metric_add(f->m_acked, atof(PQntuples(res) ? PQgetvalue(res, 0, 3) : "0"));
    bool expired = r->deadline == 0 || uv_now(f->loop) >= r->deadline;
    if (PQntuples(res) > 0 || expired || f->freeing || http_request_peer_gone(r->req)) {
        reply_events(r, res);
        return;
    }
    if (!r->waiting) {
        r->waiting = true;
        r->prev = NULL;
        r->next = f->waiting;
        if (f->waiting != NULL)
            f->waiting->prev = r;
        f->waiting = r;
        f->n_waiting++;
        metric_set(f->m_waiting, f->n_waiting);
        uv_timer_start(&r->timer, on_timeout, r->deadline - uv_now(f->loop), 0);
    }
}

static void query(struct reader *r)
{
    if (r->querying || r->done)
        return;
    r->pv[0] = r->dest;
    r->pv[1] = r->cursor;
    r->pv[2] = r->limit;
    if (db_query(r->f->db, true, "feed_read", 3, r->pv, on_read, r) < 0) {
        struct http_header h = {"Retry-After", "1"};
        api_reply_error(r->req, 503, "database_unavailable", "the database is not connected", NULL,
                        &h, 1);
        reader_finish(r);
        return;
    }
    r->querying = true;
}

void feed_wake(struct feed *f)
{
    if (f == NULL)
        return;
    for (struct reader *r = f->waiting; r != NULL; r = r->next)
        query(r);
}

static const struct fdest *find_dest(const struct feed *f, const char *id)
{
    for (unsigned i = 0; i < f->n_dests; i++)
        if (strcmp(f->dests[i].id, id) == 0)
            return &f->dests[i];
    return NULL;
}

static bool parse_uint(const char *s, size_t len, unsigned long long max, unsigned long long *out)
{
    if (len == 0 || len > 19)
        return false;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long long)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* Finds name=value in a query string; returns the value's length or -1. */
static int query_param(const char *q, const char *name, const char **val)
{
    size_t nl = strlen(name);
    for (const char *p = q; p != NULL && *p != '\0';) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            *val = p + nl + 1;
            return (int)(len - nl - 1);
        }
        p = amp ? amp + 1 : NULL;
    }
    return -1;
}

void feed_handle(struct feed *f, struct http_request *req, const char *dest_id)
{
    if (!f->loaded) {
        struct http_header h = {"Retry-After", "1"};
        api_reply_error(req, 503, "starting", "destinations are not loaded yet", NULL, &h, 1);
        return;
    }
    const struct fdest *d = find_dest(f, dest_id);
    if (d == NULL || !d->enabled) {
        api_reply_error(req, 404, "unknown_feed",
                        "no enabled destination with mode 'poll' has this id", NULL, NULL, 0);
        return;
    }
    const char *auth = http_request_header(req, "authorization");
    static const char bearer[] = "Bearer ";
    if (auth == NULL || strncasecmp(auth, bearer, sizeof(bearer) - 1) != 0) {
        struct http_header h = {"WWW-Authenticate", "Bearer realm=\"ordersync\""};
        api_reply_error(req, 401, "unauthorized",
                        "an Authorization: Bearer <token> header is required", NULL, &h, 1);
        return;
    }
    const char *tok = auth + sizeof(bearer) - 1;
    size_t tl = strlen(tok);
    if (d->token == NULL || tl != strlen(d->token) || CRYPTO_memcmp(tok, d->token, tl) != 0) {
        api_reply_error(req, 403, "forbidden", "this token does not grant access to this feed",
                        NULL, NULL, 0);
        return;
    }
    const char *q = http_request_query(req);
    const char *v;
    int vl;
    unsigned long long after = 0, limit = DEFAULT_LIMIT, wait = 0;
    if ((vl = query_param(q, "after", &v)) >= 0 &&
        !parse_uint(v, (size_t)vl, 9223372036854775807ULL, &after)) {
        api_reply_error(req, 400, "bad_cursor", "after must be a cursor returned as \"next\"", NULL,
                        NULL, 0);
        return;
    }
    if ((vl = query_param(q, "limit", &v)) >= 0 &&
        (!parse_uint(v, (size_t)vl, MAX_LIMIT, &limit) || limit == 0)) {
        api_reply_error(req, 400, "bad_limit", "limit must be an integer from 1 to 1000", NULL,
                        NULL, 0);
        return;
    }
    if ((vl = query_param(q, "wait", &v)) >= 0 && !parse_uint(v, (size_t)vl, MAX_WAIT_S, &wait)) {
        api_reply_error(req, 400, "bad_wait", "wait must be an integer from 0 to 60 (seconds)",
                        NULL, NULL, 0);
        return;
    }
    struct reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        api_reply_error(req, 503, "overloaded", "out of memory", NULL, NULL, 0);
        return;
    }
    r->f = f;
    r->req = req;
    snprintf(r->dest, sizeof(r->dest), "%s", d->id);
    snprintf(r->cursor, sizeof(r->cursor), "%llu", after);
    snprintf(r->limit, sizeof(r->limit), "%llu", limit);
    r->deadline = wait ? uv_now(f->loop) + wait * 1000 : 0;
    if (uv_timer_init(f->loop, &r->timer) == 0) {
        r->timer.data = r;
        r->timer_open = true;
    } else {
        r->deadline = 0;
    }
    query(r);
}

static void on_dests(PGresult *res, const char *err, void *data)
{
    struct feed *f = data;
    f->loading = false;
    if (err != NULL || res == NULL)
        return;
    int n = PQntuples(res);
    struct fdest *d = calloc((size_t)n + 1, sizeof(*d));
    if (d == NULL)
        return;
    int k = 0;
    for (; k < n; k++) {
        d[k].id = strdup(PQgetvalue(res, k, 0));
        d[k].token = PQgetisnull(res, k, 1) ? NULL : strdup(PQgetvalue(res, k, 1));
        d[k].enabled = PQgetvalue(res, k, 2)[0] == 't';
        if (d[k].id == NULL || (!PQgetisnull(res, k, 1) && d[k].token == NULL))
            break;
    }
    if (k < n) {
        for (int i = 0; i <= k; i++) {
            free(d[i].id);
            free(d[i].token);
        }
        free(d);
        return;
    }
    for (unsigned i = 0; i < f->n_dests; i++) {
        free(f->dests[i].id);
        free(f->dests[i].token);
    }
    free(f->dests);
    f->dests = d;
    f->n_dests = (unsigned)n;
    f->loaded = true;
}

void feed_reload(struct feed *f)
{
    if (f == NULL || f->loading || !db_is_ready(f->db))
        return;
    if (db_query(f->db, true, "feed_dests", 0, NULL, on_dests, f) == 0)
        f->loading = true;
}

static void on_ready(struct db *db, void *data)
{
    struct feed *f = data;
    f->loading = false;
    feed_reload(f);
    feed_wake(f);
}

static const struct db_callbacks feed_cbs = {.on_ready = on_ready};

int feed_new(uv_loop_t *loop, const char *conninfo, struct feed **out)
{
    struct feed *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    f->loop = loop;
    f->m_events = metrics_counter("ordersync_feed_events_total", "Events served by pull feeds", "");
    f->m_acked = metrics_counter("ordersync_feed_acked_total",
                                 "Feed events acknowledged by a consumer's cursor", "");
    f->m_waiting = metrics_gauge("ordersync_feed_waiting", "Long-polling feed readers", "");
    int rc = db_open(loop, conninfo, "feed", stmts, (int)(sizeof(stmts) / sizeof(stmts[0])),
                     &feed_cbs, f, &f->db);
    if (rc < 0) {
        free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void feed_free(struct feed **pf)
{
    struct feed *f = *pf;
    if (f == NULL)
        return;
    *pf = NULL;
    f->freeing = true;
    /* readers with a query in flight are answered (503) by db_close's failure callbacks */
    db_close(&f->db);
    while (f->waiting != NULL) {
        struct reader *r = f->waiting;
        api_reply(r->req, 200, "{\"events\":[],\"next\":\"\"}", "shutdown", NULL);
        reader_finish(r);
    }
    for (unsigned i = 0; i < f->n_dests; i++) {
        free(f->dests[i].id);
        free(f->dests[i].token);
    }
    free(f->dests);
    free(f);
}
