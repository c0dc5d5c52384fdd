/*
 * relay_read: reading events into the streams' windows (stream_read in
 * 007_delivery.sql). One read is in flight at a time, for every stream that
 * wants events: one round trip per wake-up whatever the number of
 * destinations. It runs on a connection of its own, so a long completion
 * never holds up the events a commit just made; the price is that a read
 * and a completion are no longer ordered, which the taint rule covers (see
 * relay_window.h): a completion's taints are lifted only once no read that
 * could have missed its rows is out (stream.untaint_after_read), and only
 * that completion's: the next one may be on its way meanwhile.
 *
 * A destination's content filter (destinations.filter) is applied in the
 * read (stream_read_filtered in 016_filters_actions.sql): every event a
 * stream's read looked at comes back, and one its filter left out comes with
 * matched = false and its position only, never its payload. It is counted
 * (ordersync_events_filtered_total) and the stream's read position moves past
 * it as past events of types it does not take; the completion that follows
 * moves its cursor there. A row's `ord` says whose it is: each stream's rows
 * come in position order, and those of several filtered streams interleave
 * (the function reads and parses each of their events once). A destination
 * its operator paused is not read (one row with no event): the pause is read
 * in the read's snapshot, before the relay hears of it.
 */
#include "relay_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

const char relay_sql_stream_read[] =
    "SELECT destination_id, horizon, event_position, event_id, order_id,"
    " created_at, payload, age_s, held, trace_id, ord, matched"
    " FROM stream_read_filtered($1::text[], $2::bigint[], $3::text[], $4::integer[],"
    " $5::boolean[])";

enum {
    RC_DEST,
    RC_HORIZON,
    RC_POS,
    RC_ID,
    RC_ORDER,
    RC_CREATED,
    RC_PAYLOAD,
    RC_AGE,
    RC_HELD,
    RC_TRACE,
    RC_ORD,
    RC_MATCHED,
    N_RC
};
static const char *const read_cols[N_RC] = {
    "destination_id", "horizon", "event_position", "event_id", "order_id", "created_at",
    "payload",        "age_s",   "held",           "trace_id", "ord",      "matched"};

/* One stream's part of a read: the generation it was asked for, and how many events;
 * then, while its rows are taken, where they stand. */
struct read_part {
    struct relay_dest *rd;
    uint64_t gen;
    unsigned limit;
    struct stream *s; /* NULL: reset or dropped meanwhile, its rows are not taken */
    unsigned rows;    /* every event of its types the read looked at */
    bool whole;       /* every event so far was kept or left out by the filter */
    int64_t last;     /* the last of them */
    uint64_t filtered;
};

struct read_ctx {
    struct relay *r;
    unsigned n;
    struct read_part part[];
};

static void on_read(PGresult *res, const char *err, void *data);

/* Does s want events, and how many may it take? */
static unsigned read_room(struct relay *r, struct stream *s)
{
    if (s->state == STREAM_UNSURE || !relay_dest_usable(r, s->rd))
        return 0; /* paused or disabled: the window waits too */
    double per_s = s->rd->d->set.rate_limit_per_s;
    if (per_s > 0 && relay_window_len(&s->win) >= per_s + relay_rate_burst(per_s))
        return 0; /* a second's worth waits for the rate limit: completions read again */
    unsigned limit = relay_window_room(&s->win);
    if (limit > r->cfg.claim_batch)
        limit = r->cfg.claim_batch;
    /* a few free places are not worth a query: results free more soon */
    if (limit < relay_window_len(&s->win) / 4 && limit < 16)
        return 0;
    return limit;
}

void relay_read(struct relay *r)
{
    if (!relay_running(r) || !db_is_ready(r->db_read))
        return;
    if (!relay_conv_want(&r->read))
        return; /* read again once the one in flight is back */
    unsigned n = 0;
    struct list_node *node;
    list_foreach(node, &r->streams)
    {
        if (read_room(r, list_entry(node, struct stream, node)) > 0)
            n++;
    }
    if (n == 0)
        return;
    struct read_ctx *ctx = malloc(sizeof(*ctx) + n * sizeof(ctx->part[0]));
    if (ctx == NULL)
        return;
    ctx->r = r;
    ctx->n = 0;
    struct buf *p = r->read_params, *ids = &p[0], *afters = &p[1], *types = &p[2], *lims = &p[3],
               *dbs = &p[4];
    for (int i = 0; i < 5; i++)
        buf_reset(&p[i]);
    int rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++)
        rc = buf_append_str(&p[i], "{");
    list_foreach(node, &r->streams)
    {
        struct stream *s = list_entry(node, struct stream, node);
        if (rc < 0 || ctx->n == n)
            break;
        unsigned limit = read_room(r, s);
        if (limit == 0)
            continue;
        const struct dest *d = s->rd->d;
        const char *sep = ctx->n ? "," : "";
        rc = buf_append_str(ids, sep);
        if (rc == 0)
            rc = relay_append_str(ids, d->id);
        if (rc == 0)
            rc = buf_printf(afters, "%s%" PRId64, sep, s->read_pos);
        if (rc == 0)
            rc = buf_append_str(types, sep);
        /* an array literal of array literals: the inner one quoted as an element */
        if (rc == 0)
            rc = d->set.types ? relay_append_str(types, d->set.types)
                              : buf_append_str(types, "NULL");
        if (rc == 0)
            rc = buf_printf(lims, "%s%u", sep, limit);
        if (rc == 0)
            rc = buf_printf(dbs, "%s%s", sep, d->set.dead_blocks ? "t" : "f");
        ctx->part[ctx->n++] = (struct read_part){.rd = s->rd, .gen = s->gen, .limit = limit};
    }
    for (int i = 0; i < 5 && rc == 0; i++)
        rc = buf_append_str(&p[i], "}");
    const char *v[5] = {ids->data, afters->data, types->data, lims->data, dbs->data};
    if (rc < 0 || db_query(r->db_read, true, "stream_read", 5, v, on_read, ctx) < 0) {
        free(ctx);
        return;
    }
    relay_conv_sent(&r->read);
    metric_add(r->m_reads, 1);
}

/* One row of a stream's in a read's result, in position order among its own. */
static void take_event(struct relay *r, struct read_part *part, PGresult *res, const int *c,
                       int row)
{
    struct stream *s = part->s;
    if (PQgetisnull(res, row, c[RC_POS])) {
        /* paused by its operator when the read began: nothing read, its position stays */
        part->whole = false;
        return;
    }
    part->rows++;
    if (strcmp(PQgetvalue(res, row, c[RC_DEST]), s->rd->d->id) != 0)
        part->whole = false; /* not its row (never so): go no further than the last one kept */
    if (!part->whole)
        return; /* read again from the last one kept */
    if (PQgetvalue(res, row, c[RC_MATCHED])[0] != 't') {
        /* left out by the destination's filter: never sent, passed over */
        part->filtered++;
        part->last = strtoll(PQgetvalue(res, row, c[RC_POS]), NULL, 10);
        return;
    }
    const struct job_cols jc = {.pos = c[RC_POS],
                                .id = c[RC_ID],
                                .order = c[RC_ORDER],
                                .payload = c[RC_PAYLOAD],
                                .age = c[RC_AGE],
                                .trace = c[RC_TRACE]};
    struct job *j = relay_job_new(r, s->rd, res, row, &jc);
    if (j == NULL) {
        part->whole = false; /* out of memory: read again from the last one kept */
        return;
    }
    j->kind = JOB_STREAM;
    snprintf(j->created_at, sizeof(j->created_at), "%s", PQgetvalue(res, row, c[RC_CREATED]));
    j->stream_gen = s->gen;
    bool held = PQgetvalue(res, row, c[RC_HELD])[0] == 't';
    if (relay_window_push(&s->win, j->position, j->order_id, held, j) == NULL) {
        relay_job_free(j);
        part->whole = false;
        return;
    }
    j->in_window = true;
    part->last = j->position;
}

/* Once a stream's rows are taken: moves its read position. Returns: may there be more? */
static bool took_events(struct read_part *part, int64_t horizon)
{
    struct stream *s = part->s;
    /* counted once passed over: any after a break are read again, and counted then */
    if (part->filtered > 0)
        metric_add(s->rd->m_filtered, part->filtered);
    int64_t last = part->last;
    /* a short page: every event up to the horizon was read or is not for it */
    if (part->whole && part->rows < part->limit && horizon > last)
        last = horizon;
    if (last > s->read_pos)
        s->read_pos = last;
    return part->whole && part->rows == part->limit; /* a full page: there may be more */
}

static void on_read(PGresult *res, const char *err, void *data)
{
    struct read_ctx *ctx = data;
    struct relay *r = ctx->r;
    bool again = relay_conv_back(&r->read);
    int c[N_RC];
    bool ok = err == NULL && res != NULL && PQntuples(res) > 0 &&
              db_columns(res, "stream_read_filtered", read_cols, c, N_RC) == 0;
    if (!ok && err != NULL && res != NULL) {
        metric_add(r->m_db_errors, 1);
        log_warn("stream read failed", json_pack("{s:s}", "detail", err));
    }
    int64_t horizon = ok ? strtoll(PQgetvalue(res, 0, c[RC_HORIZON]), NULL, 10) : 0;
    for (unsigned i = 0; i < ctx->n; i++) {
        struct read_part *part = &ctx->part[i];
        struct stream *s = part->rd->stream;
        /* reset or dropped meanwhile: read again from the database's cursor */
        part->s = ok && s != NULL && s->gen == part->gen ? s : NULL;
        part->rows = 0;
        part->whole = true;
        part->last = s != NULL ? s->read_pos : 0;
        part->filtered = 0;
    }
    /* each stream's rows in position order; several filtered ones' interleave (by `ord`) */
    for (int row = 1, n = ok ? PQntuples(res) : 0; row < n; row++) {
        long ord = strtol(PQgetvalue(res, row, c[RC_ORD]), NULL, 10);
        if (ord < 1 || (unsigned long)ord > ctx->n)
            continue;
        struct read_part *part = &ctx->part[ord - 1];
        if (part->s != NULL)
            take_event(r, part, res, c, row);
    }
    for (unsigned i = 0; i < ctx->n; i++) {
        if (ctx->part[i].s != NULL && took_events(&ctx->part[i], horizon))
            again = true;
    }
    free(ctx);
    /* a completion that came back while this read was out can lift its taint now */
    struct list_node *node;
    list_foreach(node, &r->streams)
    {
        struct stream *s = list_entry(node, struct stream, node);
        if (s->untaint_after_read != 0) {
            relay_window_untaint(&s->win, s->untaint_after_read);
            s->untaint_after_read = 0;
        }
        relay_dispatch(r, s);
    }
    if (again && relay_running(r))
        relay_read(r);
}
