/*
 * relay_stream: the streams this process holds (struct stream,
 * relay_internal.h). A stream is a destination's cursor over the events
 * (007_delivery.sql) plus, in memory, the window of events read past it and
 * not yet settled (relay_window.h). relay_lease.c makes and lets go of
 * streams as the leases say; relay_read.c fills their windows; relay_send.c
 * empties them; relay_complete.c writes their cursors.
 *
 * Whenever what the database holds for a stream is uncertain (a statement
 * failed, someone else moved its cursor), the stream is reset: its window is
 * dropped and it is read again from the cursor. Jobs still in flight from
 * before carry the old generation, and their results are ignored (their
 * events are delivered again: at least once).
 */
#include "relay_internal.h"

#include <errno.h>
#include <stdlib.h>

#include "log.h"

static const char *const state_names[] = {"idle", "completing", "unsure"};

static bool may_become(enum stream_state from, enum stream_state to)
{
    switch (to) {
    case STREAM_IDLE:
        return true; /* a reset, or its statement is back */
    case STREAM_COMPLETING:
        return from == STREAM_IDLE;
    case STREAM_UNSURE:
        return from == STREAM_IDLE;
    }
    return false;
}

void relay_stream_set_state(struct stream *s, enum stream_state to)
{
    if (!may_become(s->state, to)) {
        log_error("impossible stream state change",
                  json_pack("{s:s,s:s,s:s}", "destination", s->rd->d->id, "from",
                            state_names[s->state], "to", state_names[to]));
        abort();
    }
    s->state = to;
}

/* Twice what may be in flight (what waits behind it gets read meanwhile), at least a read's worth.
 */
static unsigned window_cap(const struct relay *r, const struct dest *d)
{
    unsigned cap = 2 * (d->set.max_in_flight ? d->set.max_in_flight : 64);
    return cap < r->cfg.claim_batch ? r->cfg.claim_batch : cap;
}

static void drop_job_in_window(struct wev *e, void *ctx)
{
    (void)ctx;
    struct job *j = e->data;
    if (j == NULL)
        return;
    j->in_window = false;
    relay_job_release(j); /* one in flight lives on until its answer, which is then ignored */
}

int relay_stream_new(struct relay *r, struct relay_dest *rd, int64_t position,
                     uint64_t lease_until_ms)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    if (relay_window_init(&s->win, window_cap(r, rd->d), rd->d->set.dead_blocks) < 0) {
        free(s);
        return -ENOMEM;
    }
    s->rd = rd;
    s->dest_gen = rd->d->generation;
    s->gen = ++r->next_gen;
    s->cursor = s->read_pos = position;
    s->lease_until_ms = lease_until_ms;
    s->state = STREAM_IDLE;
    list_prepend(&r->streams, &s->node);
    rd->stream = s;
    relay_dest_took_stream(rd);
    log_info("delivering a stream",
             json_pack("{s:s,s:I}", "destination", rd->d->id, "position", (json_int_t)position));
    return 0;
}

void relay_stream_reset(struct relay *r, struct stream *s, int64_t position)
{
    relay_window_clear(&s->win, drop_job_in_window, NULL);
    s->gen = ++r->next_gen;
    s->cursor = s->read_pos = position;
    s->untaint_after_read = 0; /* the window's taints went with it */
    relay_stream_set_state(s, STREAM_IDLE);
}

void relay_stream_drop(struct relay *r, struct stream *s)
{
    (void)r;
    list_remove(&s->node);
    if (s->rd->stream == s)
        s->rd->stream = NULL;
    relay_window_clear(&s->win, drop_job_in_window, NULL);
    relay_window_free(&s->win);
    free(s);
}

void relay_stream_drop_all(struct relay *r)
{
    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &r->streams)
    {
        relay_stream_drop(r, list_entry(n, struct stream, node));
    }
}

int relay_stream_apply_settings(struct relay *r, struct stream *s)
{
    struct dest *d = s->rd->d;
    /* unchanged; or not now: its window's leavers are being written, and
       dest_gen stays behind so that the next look (an acquire) applies them */
    if (s->dest_gen == d->generation || s->state == STREAM_COMPLETING)
        return 0;
    /* settings changed (types, on_dead, max_in_flight): a new window, made
       aside and swapped in only when it exists: a stream never lives on
       without a window (the next event read would go through NULL) */
    struct relay_window win;
    if (relay_window_init(&win, window_cap(r, d), d->set.dead_blocks) < 0) {
        relay_stream_drop(r, s);
        return -ENOMEM;
    }
    relay_stream_reset(r, s, s->cursor);
    relay_window_free(&s->win);
    s->win = win;
    s->dest_gen = d->generation;
    return 0;
}

/*
 * relay_acquire renewed the lease for lease_s from when the database ran it,
 * which is after the acquire was sent. Past that, another instance may have
 * taken the stream without this one knowing (it cannot reach the database,
 * say): two senders would break the one-sender rule, and double the
 * destination's rate limit. So sending stops there until a renewal comes back.
 */
bool relay_stream_leased(struct relay *r, const struct stream *s)
{
    return relay_now_ms(r) < s->lease_until_ms;
}
