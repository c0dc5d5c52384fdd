/*
 * relay_complete: writing what was settled (relay_complete in
 * 007_delivery.sql). Once per loop turn (uv_check), everything settled since
 * the last statement goes in one JSON document, one statement at a time: a
 * burst of responses costs one round trip. Per stream, the cursor moves over
 * the settled prefix of its window (delivered events cost nothing more), and
 * the events that leave it undelivered become rows: failed, dead, blocked
 * behind an earlier event of their order, or leased (still in flight: the
 * row's result comes later). Per row job, its result settles its row.
 *
 * When the statement fails, whether it committed is unknown: every stream in
 * it starts over from what the database says (the next acquire), and the
 * rows it settled keep their leases (released at the next reconnect, or when
 * the lease runs out).
 */
#include "relay_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "metrics.h"

/* An event in flight this long at the head of a window gets a leased row, so
   that one slow receiver's request does not hold the cursor back. */
#define LEASE_AFTER_MS      1000
#define LEASE_AFTER_FULL_MS 250

const char relay_sql_complete[] = "SELECT lost FROM relay_complete($1, $2::jsonb)";

int relay_append_str(struct buf *b, const char *s)
{
    if (s == NULL)
        return buf_append_str(b, "null");
    int rc = buf_append_str(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            rc = buf_append(b, esc, 2);
        } else if (*p < 0x20) {
            rc = buf_printf(b, "\\u%04x", *p);
        } else {
            /* excerpts are not UTF-8 */
            char ch = *p < 0x7f ? (char)*p : '?';
            rc = buf_append(b, &ch, 1);
        }
    }
    return rc == 0 ? buf_append_str(b, "\"") : rc;
}

static int append_outcome(struct buf *b, const struct job *j)
{
    int rc = buf_printf(b, ",\"n\":%d,\"t0\":%.6f,\"ms\":%d,\"dl\":%.3f", j->attempt, j->started,
                        j->ms, j->delay_s);
    if (rc == 0 && j->status > 0)
        rc = buf_printf(b, ",\"st\":%d", j->status);
    if (rc == 0)
        rc = buf_append_str(b, ",\"er\":");
    if (rc == 0)
        rc = relay_append_str(b, j->error);
    if (rc == 0)
        rc = buf_append_str(b, ",\"ex\":");
    if (rc == 0)
        rc = relay_append_str(b, j->excerpt);
    return rc;
}

void relay_complete_add(struct relay *r, struct job *j)
{
    if (r->n_results == r->cap_results) {
        unsigned cap = r->cap_results ? r->cap_results * 2 : 64;
        struct job **n = realloc(r->results, cap * sizeof(*n));
        if (n == NULL) {
            log_error("out of memory recording a delivery result; its lease will expire",
                      json_pack("{s:s,s:I}", "destination", j->rd->d->id, "position",
                                (json_int_t)j->position));
            relay_job_free(j);
            return;
        }
        r->results = n;
        r->cap_results = cap;
    }
    r->results[r->n_results++] = j;
}

bool relay_complete_pending(struct relay *r)
{
    if (r->n_results > 0)
        return true;
    struct list_node *n;
    list_foreach(n, &r->streams)
    {
        struct stream *s = list_entry(n, struct stream, node);
        if (relay_window_len(&s->win) > 0) {
            struct wev *e = relay_window_at(&s->win, 0);
            if (e->state != WEV_WAITING && e->state != WEV_IN_FLIGHT)
                return true;
        }
    }
    return false;
}

struct emit_ctx {
    struct relay *r;
    struct buf ok, rows;
    int rc;
};

/* Writes v in decimal at out (room for 20 characters); returns the count. */
static size_t put_int(char *out, int64_t v)
{
    char digits[20];
    size_t n = 0, k = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        out[k++] = '-';
    while (n > 0)
        out[k++] = digits[--n];
    return k;
}

/*
 * ",[position,status,ms]" (no comma first): what buf_printf("%s[%" PRId64
 * ",%d,%d]") wrote, without printf, once per delivered event.
 */
static int append_ok(struct buf *b, int64_t position, int status, int ms)
{
    char text[4 + 3 * 20];
    size_t n = 0;
    if (b->len > 0)
        text[n++] = ',';
    text[n++] = '[';
    n += put_int(text + n, position);
    text[n++] = ',';
    n += put_int(text + n, status);
    text[n++] = ',';
    n += put_int(text + n, ms);
    text[n++] = ']';
    return buf_append(b, text, n);
}

/* An entry leaves the window: into "ok" or "rows" of its stream's part of the statement. */
static void emit_entry(struct wev *e, void *data)
{
    struct emit_ctx *x = data;
    struct job *j = e->data;
    e->data = NULL;
    j->in_window = false;
    int rc = x->rc;
    if (e->state == WEV_OK) {
        if (rc == 0)
            rc = append_ok(&x->ok, j->position, j->status, j->ms);
        x->rc = rc;
        relay_job_release(j);
        return;
    }
    const char *kind = e->state == WEV_FAILED   ? "failed"
                       : e->state == WEV_DEAD   ? "dead"
                       : e->state == WEV_LEASED ? "leased"
                                                : "blocked";
    if (rc == 0)
        rc = buf_printf(&x->rows,
                        "%s{\"p\":%" PRId64 ",\"o\":%" PRId64 ",\"c\":", x->rows.len ? "," : "",
                        j->position, j->order_id);
    if (rc == 0)
        rc = relay_append_str(&x->rows, j->created_at);
    if (rc == 0)
        rc = buf_printf(&x->rows, ",\"k\":\"%s\"", kind);
    if (rc == 0 && (e->state == WEV_FAILED || e->state == WEV_DEAD))
        rc = append_outcome(&x->rows, j);
    if (rc == 0 && e->state == WEV_LEASED)
        rc = buf_printf(&x->rows, ",\"lease\":%u", relay_row_lease_s(x->r));
    if (rc == 0)
        rc = buf_append_str(&x->rows, "}");
    x->rc = rc;
    if (e->state == WEV_LEASED)
        j->kind = JOB_ROW; /* still in flight; its answer settles the row */
    else
        relay_job_release(j);
}

/* Every stream of the statement starts over from its cursor before it. */
static void reset_completing(struct relay *r, bool unsure)
{
    struct list_node *n;
    list_foreach(n, &r->streams)
    {
        struct stream *s = list_entry(n, struct stream, node);
        if (s->state != STREAM_COMPLETING)
            continue;
        relay_stream_reset(r, s, s->complete_from);
        if (unsure)
            relay_stream_set_state(s, STREAM_UNSURE);
    }
}

/* The streams' parts of the document; returns 0 or a negative errno. */
static int add_streams(struct relay *r, struct buf *doc, unsigned *n_streams, bool *rows_written)
{
    int rc = 0;
    struct emit_ctx x = {.r = r};
    buf_init(&x.ok, RELAY_PARAM_CAP);
    buf_init(&x.rows, RELAY_PARAM_CAP);
    struct list_node *n;
    list_foreach(n, &r->streams)
    {
        struct stream *s = list_entry(n, struct stream, node);
        if (rc < 0)
            break;
        if (s->state == STREAM_UNSURE ||
            (relay_window_len(&s->win) == 0 && s->read_pos == s->cursor))
            continue;
        buf_reset(&x.ok);
        buf_reset(&x.rows);
        x.rc = 0;
        /* when the window is nearly full, hand slow requests over sooner */
        uint64_t lease_after =
            relay_window_room(&s->win) < s->win.cap / 4 ? LEASE_AFTER_FULL_MS : LEASE_AFTER_MS;
        relay_window_advance(&s->win, relay_now_ms(r), lease_after, emit_entry, &x);
        int64_t to = relay_window_len(&s->win) == 0 ? s->read_pos
                                                    : relay_window_at(&s->win, 0)->position - 1;
        if (x.rc < 0) {
            /* the entries that left the window are in no statement: read them
               again from the cursor, or the next completion would move the
               cursor past them with no row (a failed event never retried) */
            relay_stream_reset(r, s, s->cursor);
            rc = x.rc;
            break;
        }
        if (to <= s->cursor && x.rows.len == 0)
            continue;
        if (to < s->cursor)
            to = s->cursor;
        *rows_written = *rows_written || x.rows.len > 0;
        rc = buf_printf(doc, "%s{\"d\":", *n_streams ? "," : "");
        if (rc == 0)
            rc = relay_append_str(doc, s->rd->d->id);
        if (rc == 0)
            rc = buf_printf(
                doc, ",\"from\":%" PRId64 ",\"to\":%" PRId64 ",\"ok\":[%s],\"rows\":[%s]}",
                s->cursor, to, x.ok.data ? x.ok.data : "", x.rows.data ? x.rows.data : "");
        if (rc < 0) {
            relay_stream_reset(r, s, s->cursor); /* as above */
            break;
        }
        relay_stream_set_state(s, STREAM_COMPLETING);
        /* the taints of the rows just emitted are lifted with this statement only */
        s->complete_batch = relay_window_seal(&s->win);
        s->complete_from = s->cursor;
        s->cursor = to;
        (*n_streams)++;
    }
    buf_free(&x.ok);
    buf_free(&x.rows);
    return rc;
}

static void on_complete(PGresult *res, const char *err, void *data);

int relay_complete_build(struct relay *r, unsigned *n_streams_out, unsigned *n_results_out)
{
    struct buf *doc = &r->doc;
    buf_reset(doc);
    unsigned n_streams = 0;
    bool rows_written = false;
    int rc = buf_append_str(doc, "{\"streams\":[");
    if (rc == 0)
        rc = add_streams(r, doc, &n_streams, &rows_written);
    if (rc == 0)
        rc = buf_append_str(doc, "],\"results\":[");
    for (unsigned i = 0; i < r->n_results && rc == 0; i++) {
        struct job *j = r->results[i];
        static const char *const names[] = {"", "ok", "retry", "dead", "released"};
        rc = buf_printf(doc, "%s{\"d\":", i ? "," : "");
        if (rc == 0)
            rc = relay_append_str(doc, j->rd->d->id);
        if (rc == 0)
            rc = buf_printf(doc, ",\"p\":%" PRId64 ",\"r\":\"%s\"", j->position, names[j->result]);
        if (rc == 0)
            rc = append_outcome(doc, j);
        if (rc == 0)
            rc = buf_append_str(doc, "}");
    }
    if (rc == 0)
        rc = buf_append_str(doc, "]}");
    unsigned n_results = r->n_results;
    for (unsigned i = 0; i < r->n_results; i++)
        relay_job_free(r->results[i]);
    r->n_results = 0;
    if (rc < 0) {
        log_error("could not build delivery results; streams are read again",
                  json_pack("{s:i}", "errno", -rc));
        reset_completing(r, false);
        return rc;
    }
    r->complete_had_rows = n_results > 0 || rows_written;
    *n_streams_out = n_streams;
    *n_results_out = n_results;
    return 0;
}

void relay_complete_flush(struct relay *r)
{
    if (r->complete != RELAY_CONV_IDLE || !db_is_ready(r->db))
        return;
    unsigned n_streams, n_results;
    if (relay_complete_build(r, &n_streams, &n_results) < 0 || (n_streams == 0 && n_results == 0))
        return;
    struct buf *doc = &r->doc;
    const char *v[2] = {r->instance, doc->data};
    if (db_query(r->db, true, "complete", 2, v, on_complete, r) < 0) {
        reset_completing(r, false);
        return;
    }
    relay_conv_sent(&r->complete);
}

static void on_complete(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    relay_conv_back(&r->complete);
    if (err != NULL || res == NULL) {
        metric_add(r->m_db_errors, 1);
        log_warn("could not record delivery results; they are redone",
                 json_pack("{s:s}", "detail", err ? err : "connection lost"));
        reset_completing(r, true);
        relay_acquire(r);
        relay_check_stopped(r);
        return;
    }
    /* streams another instance took meanwhile: what was written for them did not count */
    static const char *const cols[] = {"lost"};
    int c;
    if (PQntuples(res) > 0 && db_columns(res, "complete", cols, &c, 1) == 0) {
        for (int row = 0; row < PQntuples(res); row++) {
            struct relay_dest *rd = relay_dest_find_id(r, PQgetvalue(res, row, c));
            if (rd != NULL && rd->stream != NULL) {
                log_warn("stream taken over by another instance",
                         json_pack("{s:s}", "destination", rd->d->id));
                relay_stream_drop(r, rd->stream);
            }
        }
    }
    struct list_node *n;
    list_foreach(n, &r->streams)
    {
        struct stream *s = list_entry(n, struct stream, node);
        if (s->state != STREAM_COMPLETING)
            continue;
        relay_stream_set_state(s, STREAM_IDLE);
        /* a read out now may have run before this commit, on the other
           connection: its answers count as held until it is back */
        if (r->read != RELAY_CONV_IDLE)
            s->untaint_after_read = s->complete_batch;
        else
            relay_window_untaint(&s->win, s->complete_batch);
    }
    if (!relay_running(r)) {
        relay_check_stopped(r);
        return;
    }
    relay_wake(r);
    /* new rows (failures, blocked, promotions) may be due: claim them */
    if (r->complete_had_rows)
        relay_claim(r);
}

void relay_on_check(uv_check_t *h)
{
    relay_complete_flush(h->data);
}
