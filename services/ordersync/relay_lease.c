/*
 * relay_lease: taking and renewing the leases of streams (relay_acquire in
 * 007_delivery.sql shares the push destinations' streams out between the
 * live instances). Sent at start, after every reconnect and reload, and at a
 * quarter of the lease; the answer is the streams this instance holds now,
 * each with the database's cursor:
 *
 *   - a stream new to it starts at that cursor;
 *   - a stream it held goes on, renewed; if its cursor moved without it (it
 *     lost the stream for a while) or a statement about it failed, it is
 *     read again from the database's cursor; if its destination's settings
 *     changed, it gets a new window;
 *   - a stream no longer in the answer is let go.
 */
#include "relay_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* A stream is sent to for at most this share of a lease after the acquire
   that renewed it was sent (relay_stream_leased); the rest absorbs the loop's
   cached clock and the database's and this host's clocks running apart. */
#define LEASE_TRUST_PERMILLE 900

/* the shares changed: the others take or let go now (relay_streams_changed) */
const char relay_sql_streams_changed[] = "SELECT pg_notify('" RELAY_STREAMS_CHANNEL "', $1)";

const char relay_sql_acquire[] = "SELECT destination_id, stream_position FROM relay_acquire($1,"
                                 " make_interval(secs => $2::float8), $3::text[])";

enum { AC_DEST, AC_POS, N_AC };
static const char *const acquire_cols[N_AC] = {"destination_id", "stream_position"};

/* Is d's stream in the answer? */
static bool acquired(const PGresult *res, const int *c, const struct dest *d)
{
    for (int row = 0; row < PQntuples(res); row++)
        if (strcmp(PQgetvalue(res, row, c[AC_DEST]), d->id) == 0)
            return true;
    return false;
}

/* One stream of the answer, at the database's cursor `pos`. */
static void take(struct relay *r, struct dest *d, int64_t pos, uint64_t until)
{
    struct relay_dest *rd = relay_dest_get(r, d);
    if (rd == NULL || rd->stream == NULL) {
        if (rd == NULL || relay_stream_new(r, rd, pos, until) < 0)
            log_error("out of memory taking a stream", json_pack("{s:s}", "destination", d->id));
        return;
    }
    struct stream *s = rd->stream;
    s->lease_until_ms = until;
    if (s->state != STREAM_COMPLETING && r->complete == RELAY_CONV_IDLE &&
        (pos != s->cursor || s->state == STREAM_UNSURE)) {
        /* moved by someone else (we lost it for a while): start from the database */
        log_warn("stream moved meanwhile: reading it again",
                 json_pack("{s:s,s:I,s:I}", "destination", d->id, "ours", (json_int_t)s->cursor,
                           "database", (json_int_t)pos));
        relay_stream_reset(r, s, pos);
    }
    if (relay_stream_apply_settings(r, s) < 0)
        log_error("out of memory making a window for new settings; the stream is read again later",
                  json_pack("{s:s}", "destination", d->id));
}

static void on_told(PGresult *res, const char *err, void *data)
{
    (void)res;
    (void)data;
    if (err != NULL) /* they take or let go at their next round instead */
        log_warn("could not tell the other instances that the streams changed",
                 json_pack("{s:s}", "detail", err));
}

static void on_acquired(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    bool again = relay_conv_back(&r->acquire);
    int c[N_AC];
    if (err != NULL || res == NULL || db_columns(res, "acquire", acquire_cols, c, N_AC) < 0) {
        if (res != NULL)
            log_warn("could not take streams", json_pack("{s:s}", "detail", err ? err : "?"));
        return;
    }
    /* joined: the others let go of their share for it now, not at their next round */
    bool tell = !r->acquired;
    r->acquired = true;
    /* streams still ours stay; new ones start at the database's cursor */
    uint64_t until = r->acquire_sent_ms + (uint64_t)r->cfg.lease_s * LEASE_TRUST_PERMILLE;
    for (int row = 0; row < PQntuples(res); row++) {
        struct dest *d = destinations_find(r->dests, PQgetvalue(res, row, c[AC_DEST]));
        if (d != NULL)
            take(r, d, strtoll(PQgetvalue(res, row, c[AC_POS]), NULL, 10), until);
    }
    /* streams not returned are no longer ours */
    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &r->streams)
    {
        struct stream *s = list_entry(n, struct stream, node);
        if (!acquired(res, c, s->rd->d)) {
            log_info("stream let go", json_pack("{s:s}", "destination", s->rd->d->id));
            relay_stream_drop(r, s);
            tell = true; /* free for another instance now */
        }
    }
    const char *v[1] = {r->instance};
    if (tell && db_query(r->db, true, "streams_changed", 1, v, on_told, r) < 0)
        log_warn("could not tell the other instances that the streams changed", NULL);
    if (again)
        relay_acquire(r);
    relay_wake(r);
    relay_claim(r); /* a stream just taken may have rows due */
}

void relay_acquire(struct relay *r)
{
    if (!relay_running(r) || !db_is_ready(r->db) || !destinations_loaded(r->dests))
        return;
    if (!relay_conv_want(&r->acquire))
        return; /* acquired again once the one in flight is back */
    struct buf *ids = &r->acquire_ids;
    buf_reset(ids);
    int rc = buf_append_str(ids, "{");
    unsigned n = 0;
    for (struct dest *d = destinations_first(r->dests); d != NULL && rc == 0; d = d->next) {
        if (!d->present || !d->set.push || !d->set.enabled)
            continue;
        struct relay_dest *rd = relay_dest_find(r, d);
        if (rd != NULL && relay_dest_gone(rd))
            continue;
        rc = buf_append_str(ids, n++ ? "," : "");
        if (rc == 0)
            rc = relay_append_str(ids, d->id);
    }
    if (rc == 0)
        rc = buf_append_str(ids, "}");
    if (rc < 0)
        return;
    char lease[32];
    snprintf(lease, sizeof(lease), "%u", r->cfg.lease_s);
    const char *v[3] = {r->instance, lease, ids->data};
    r->acquire_sent_ms = relay_now_ms(r);
    if (db_query(r->db, true, "acquire", 3, v, on_acquired, r) == 0)
        relay_conv_sent(&r->acquire);
}

void relay_on_acquire_timer(uv_timer_t *t)
{
    relay_acquire(t->data);
}
