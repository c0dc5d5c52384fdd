/*
 * relay_window: the events of one destination's stream that the relay has
 * read past the stream's cursor and not yet settled, in position order, and
 * the rules that keep delivery in order per (order, destination):
 *
 *  - an event goes out only when every earlier event of its order is
 *    delivered: it waits while one is in flight, and is BLOCKED (it gets a
 *    `deliveries` row and waits there) when one failed, is blocked, is in
 *    flight under a lease, or when the database said an earlier one of its
 *    order has an open row (`held`);
 *  - the cursor advances over the settled prefix (window_advance): delivered
 *    events cost nothing more; the others become rows. An event in flight
 *    for too long at the head is handed over to a row under a lease
 *    (LEASED), so one slow request never holds the stream back.
 *
 * Between writing rows for events that leave the window and that write
 * having committed, reads already on their way could not see those rows:
 * their orders are "tainted" until window_untaint(), and events of a tainted
 * order count as held. Rows leave in batches, one completion statement each
 * (window_seal), and a taint is lifted only with its own batch: a batch
 * still being written keeps its orders tainted when an earlier one's are
 * lifted.
 *
 * Pure: no I/O, no clock (times are arguments). Entries carry a `data`
 * pointer owned by the caller. Tests: tests/unit/test_relay_window.c.
 */
#ifndef OS_RELAY_WINDOW_H
#define OS_RELAY_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

enum wev_state {
    WEV_WAITING,   /* read, not sent */
    WEV_IN_FLIGHT, /* sent, no answer yet */
    WEV_OK,        /* delivered */
    WEV_FAILED,    /* the attempt failed: a retry row */
    WEV_DEAD,      /* failed for good: a dead row */
    WEV_BLOCKED,   /* waits behind an earlier event of its order: a blocked row */
    WEV_LEASED,    /* still in flight when the cursor passed it: a leased row */
};

struct wev {
    int64_t position;
    int64_t order_id;
    enum wev_state state;
    bool held;           /* an earlier event of its order has an open row */
    uint64_t started_ms; /* WEV_IN_FLIGHT: when it was sent */
    void *data;          /* the caller's */
};

/* An order with rows in a batch that may not be committed yet. */
struct wtaint {
    int64_t order_id;
    uint64_t batch; /* the latest batch with rows of this order */
};

struct relay_window {
    struct wev *ring;
    unsigned cap, head, len;
    bool dead_blocks; /* on_dead = 'block': a dead event holds back its order */
    struct wtaint *taint;
    unsigned n_taint, cap_taint;
    /* the taint list could not grow for a row of this batch (0: not since the
       last lift): until it is lifted, every order counts as tainted */
    uint64_t taint_all;
    uint64_t batch; /* the batch that rows leaving now belong to (from 1) */
};

/* Returns 0 or -ENOMEM. `cap` events at most. */
int relay_window_init(struct relay_window *w, unsigned cap, bool dead_blocks)
    __attribute__((warn_unused_result));
/* Frees the window's own memory (not the entries' data). */
void relay_window_free(struct relay_window *w);

static inline unsigned relay_window_len(const struct relay_window *w)
{
    return w->len;
}
static inline unsigned relay_window_room(const struct relay_window *w)
{
    return w->cap - w->len;
}
/* The i-th entry from the head (i < len). */
struct wev *relay_window_at(struct relay_window *w, unsigned i);
/* The entry at `position`, or NULL. */
struct wev *relay_window_find(struct relay_window *w, int64_t position);

/*
 * Appends an event read from the stream (positions only increase). `held`:
 * the database said an earlier event of its order has an open row. Returns
 * the entry, or NULL when the window is full.
 */
struct wev *relay_window_push(struct relay_window *w, int64_t position, int64_t order_id, bool held,
                              void *data);

/*
 * The next event that may be sent now (marked IN_FLIGHT, started now_ms), or
 * NULL. Waiting events found to be blocked are marked BLOCKED on the way.
 */
struct wev *relay_window_next(struct relay_window *w, uint64_t now_ms);

/*
 * Would relay_window_next() return an event now? Changes nothing (the relay
 * asks when it may not send, to tell "nothing to send" from "held back").
 */
bool relay_window_has_ready(struct relay_window *w);

/* The answer for an IN_FLIGHT entry: WEV_OK, WEV_FAILED or WEV_DEAD. */
void relay_window_settle(struct relay_window *w, struct wev *e, enum wev_state outcome);

/*
 * Removes the settled prefix, calling emit(entry, ctx) for each in order
 * (OK, FAILED, DEAD, BLOCKED or LEASED) before it goes. An IN_FLIGHT entry
 * older than lease_after_ms becomes LEASED and goes too. Every entry that
 * leaves with a row taints its order (see above). Returns how many left.
 */
unsigned relay_window_advance(struct relay_window *w, uint64_t now_ms, uint64_t lease_after_ms,
                              void (*emit)(struct wev *e, void *ctx), void *ctx);

/*
 * Closes the batch of the rows that left since the last call (they go into
 * one completion statement) and starts the next one. Returns the batch
 * closed, for relay_window_untaint() (never 0).
 */
uint64_t relay_window_seal(struct relay_window *w);

/*
 * The rows of every batch up to `batch` are committed, and no read that could
 * have missed them is still out: waiting events of the orders those batches
 * tainted are held from now on (their database answer may predate the rows),
 * and those taints are lifted. Orders with rows in a later batch stay tainted.
 */
void relay_window_untaint(struct relay_window *w, uint64_t batch);

/* Calls fn for each entry (head first) and empties the window and the taint. */
void relay_window_clear(struct relay_window *w, void (*fn)(struct wev *e, void *ctx), void *ctx);

#endif
