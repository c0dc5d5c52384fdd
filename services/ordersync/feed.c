/*
 * feed: pull feeds with long-polling. See feed.h for the contract.
 *
 * A reader is a `struct reader`: its destination, cursor and limit, its
 * caller's callbacks, and (while waiting) a timer for its deadline. Queries
 * run one at a time on the feed's own connection; a wake-up re-queries every
 * waiting reader once, which costs one query per reader only when events
 * were committed.
 */
#include "feed.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "db.h"
#include "feed_token.h"
#include "list.h"
#include "log.h"
#include "metrics.h"

#define RESPONSE_CAP ((size_t)64 << 20)

static const struct db_stmt stmts[] = {
    /* the acknowledgement and the read see one snapshot; a cursor beyond the
       horizon (the last committed position) acknowledges nothing (feed_read
       in migration 011) */
    {"feed_read", "SELECT horizon, acked, event_position AS position, event_id, payload"
                  " FROM feed_read($1, $2::bigint, $3::text[], $4::integer)"},
};

struct reader {
    struct list_node wait; /* feed.waiting while it waits for events */
    struct feed *f;
    feed_done_fn done;
    feed_gone_fn gone;
    void *ctx;
    char dest[64];
    char after[24];
    char limit[8];
    unsigned n_limit;
    uint64_t deadline; /* loop ms; 0: don't wait */
    uv_timer_t timer;
    bool querying, timer_open, finished;
};

struct feed {
    uv_loop_t *loop;
    struct db *db;
    const struct destinations *dests;
    struct list_node waiting; /* struct reader */
    unsigned n_waiting;
    bool freeing;
    struct metric *m_events, *m_waiting;
};

static void query(struct reader *r);

static void reader_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Answers the reader (once) and lets it go; its memory goes with its timer handle. */
static void reader_finish(struct reader *r, enum feed_status st, const char *body, size_t n,
                          const char *detail)
{
    struct feed *f = r->f;
    if (list_linked(&r->wait)) {
        list_remove(&r->wait);
        f->n_waiting--;
        metric_set(f->m_waiting, f->n_waiting);
    }
    r->finished = true;
    r->done(r->ctx, st, body, n, detail);
    if (r->timer_open) {
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, reader_closed);
    } else {
        free(r);
    }
}

enum { FC_HORIZON, FC_ACKED, FC_POS, FC_ID, FC_PAYLOAD, N_FC };
static const char *const feed_cols[N_FC] = {"horizon", "acked", "position", "event_id", "payload"};

static void reply_events(struct reader *r, PGresult *res, const int *c)
{
    struct buf out;
    buf_init(&out, RESPONSE_CAP);
    int n = 0;
    const char *last = NULL;
    int rc = buf_append_str(&out, "{\"events\":[");
    for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
        if (PQgetisnull(res, i, c[FC_POS]))
            continue;
        const char *payload = PQgetvalue(res, i, c[FC_PAYLOAD]);
        /* the stored envelope is an object: splice the webhook-id in as "id" */
        rc = buf_printf(&out, "%s{\"id\":\"msg_%s\",%s", n ? "," : "", PQgetvalue(res, i, c[FC_ID]),
                        payload[0] == '{' ? payload + 1 : "}");
        last = PQgetvalue(res, i, c[FC_POS]);
        n++;
    }
    /* a short page ends at the horizon: what lies between was not for this feed */
    const char *next = (unsigned)n == r->n_limit && last != NULL ? last : NULL;
    char tail[24];
    if (next == NULL) {
        int64_t h = PQntuples(res) ? strtoll(PQgetvalue(res, 0, c[FC_HORIZON]), NULL, 10) : 0;
        int64_t a = strtoll(r->after, NULL, 10);
        snprintf(tail, sizeof(tail), "%" PRId64, h > a ? h : a);
        next = tail;
    }
    if (rc == 0)
        rc = buf_printf(&out, "],\"next\":\"%s\"}", next);
    metric_add(r->f->m_events, n);
    if (rc < 0)
        reader_finish(r, FEED_UNAVAILABLE, NULL, 0, "the feed response is too large");
    else
        reader_finish(r, FEED_OK, out.data, (size_t)n, NULL);
    buf_free(&out);
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
    int c[N_FC];
    if (err != NULL || res == NULL || db_columns(res, "feed_read", feed_cols, c, N_FC) < 0) {
        reader_finish(r, FEED_UNAVAILABLE, NULL, 0, "the feed could not be read");
        return;
    }
    int64_t horizon = PQntuples(res) ? strtoll(PQgetvalue(res, 0, c[FC_HORIZON]), NULL, 10) : 0;
    if (strtoll(r->after, NULL, 10) > horizon) {
        reader_finish(r, FEED_BAD_CURSOR, NULL, 0,
                      "after is beyond the end of the feed; use a \"next\" it returned");
        return;
    }
    bool any = PQntuples(res) > 0 && !PQgetisnull(res, 0, c[FC_POS]);
    bool expired = r->deadline == 0 || uv_now(f->loop) >= r->deadline;
    if (any || expired || f->freeing || (r->gone != NULL && r->gone(r->ctx))) {
        reply_events(r, res, c);
        return;
    }
    if (!list_linked(&r->wait)) {
        list_prepend(&f->waiting, &r->wait);
        f->n_waiting++;
        metric_set(f->m_waiting, f->n_waiting);
        uv_timer_start(&r->timer, on_timeout, r->deadline - uv_now(f->loop), 0);
    }
}

static void query(struct reader *r)
{
    if (r->querying || r->finished)
        return;
    const struct dest *d = destinations_find(r->f->dests, r->dest);
    const char *v[4] = {r->dest, r->after, d ? d->set.types : NULL, r->limit};
    if (db_query(r->f->db, true, "feed_read", 4, v, on_read, r) < 0) {
        reader_finish(r, FEED_UNAVAILABLE, NULL, 0, "the database is not connected");
        return;
    }
    r->querying = true;
}

void feed_wake(struct feed *f)
{
    if (f == NULL)
        return;
    /* a reader that cannot query is answered at once and leaves the list (and maybe memory) */
    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &f->waiting)
    {
        query(list_entry(n, struct reader, wait));
    }
}

void feed_read(struct feed *f, const struct feed_request *rq, feed_done_fn done, feed_gone_fn gone,
               void *ctx)
{
    if (!destinations_loaded(f->dests)) {
        done(ctx, FEED_UNAVAILABLE, NULL, 0, "destinations are not loaded yet");
        return;
    }
    const struct dest *d = destinations_find(f->dests, rq->dest_id);
    if (d == NULL || !d->present || d->set.push || !d->set.enabled) {
        done(ctx, FEED_UNKNOWN, NULL, 0, "no enabled destination with mode 'poll' has this id");
        return;
    }
    if (rq->bearer == NULL) {
        done(ctx, FEED_UNAUTHORIZED, NULL, 0,
             "an Authorization: Bearer <token> header is required");
        return;
    }
    /* the row holds the token's SHA-256: digests compared in constant time */
    if (!feed_token_matches(d->set.feed_token, rq->bearer, strlen(rq->bearer))) {
        done(ctx, FEED_FORBIDDEN, NULL, 0, "this token does not grant access to this feed");
        return;
    }
    struct reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        done(ctx, FEED_UNAVAILABLE, NULL, 0, "out of memory");
        return;
    }
    list_init(&r->wait);
    r->f = f;
    r->done = done;
    r->gone = gone;
    r->ctx = ctx;
    snprintf(r->dest, sizeof(r->dest), "%s", d->id);
    snprintf(r->after, sizeof(r->after), "%" PRId64, rq->after);
    r->n_limit = rq->limit;
    snprintf(r->limit, sizeof(r->limit), "%u", rq->limit);
    unsigned wait = rq->wait_s > FEED_MAX_WAIT_S ? FEED_MAX_WAIT_S : rq->wait_s;
    r->deadline = wait ? uv_now(f->loop) + (uint64_t)wait * 1000 : 0;
    if (uv_timer_init(f->loop, &r->timer) == 0) {
        r->timer.data = r;
        r->timer_open = true;
    } else {
        r->deadline = 0;
    }
    query(r);
}

bool feed_ready(const struct feed *f)
{
    if (f == NULL || !destinations_loaded(f->dests))
        return false;
    for (const struct dest *d = destinations_first(f->dests); d != NULL; d = d->next)
        if (d->present && !d->set.push && d->set.enabled)
            return db_is_ready(f->db);
    return true; /* no feed to read: its connection is not needed */
}

static void on_ready(struct db *db, void *data)
{
    feed_wake(data);
}

static const struct db_callbacks feed_cbs = {.on_ready = on_ready};

int feed_new(uv_loop_t *loop, const char *conninfo, const struct destinations *dests,
             struct feed **out)
{
    struct feed *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return -ENOMEM;
    f->loop = loop;
    f->dests = dests;
    list_init(&f->waiting);
    f->m_events = metrics_counter("ordersync_feed_events_total", "Events served by pull feeds", "");
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
    /* readers with a query in flight are answered (unavailable) by db_close's failure callbacks */
    db_close(&f->db);
    struct list_node *n;
    while ((n = list_first(&f->waiting)) != NULL) {
        struct reader *r = list_entry(n, struct reader, wait);
        char body[64];
        snprintf(body, sizeof(body), "{\"events\":[],\"next\":\"%s\"}", r->after);
        reader_finish(r, FEED_OK, body, 0, NULL);
    }
    free(f);
}
