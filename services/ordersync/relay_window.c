/*
 * relay_window: a ring of events in position order. Windows are small (a
 * few hundred events: twice a destination's max_in_flight), so the
 * per-order rules scan the ring instead of keeping an index.
 */
#include "relay_window.h"

#include <errno.h>
#include <stdlib.h>

int relay_window_init(struct relay_window *w, unsigned cap, bool dead_blocks)
{
    *w = (struct relay_window){.cap = cap ? cap : 1, .dead_blocks = dead_blocks, .batch = 1};
    w->ring = calloc(w->cap, sizeof(*w->ring));
    return w->ring ? 0 : -ENOMEM;
}

void relay_window_free(struct relay_window *w)
{
    free(w->ring);
    free(w->taint);
    *w = (struct relay_window){0};
}

struct wev *relay_window_at(struct relay_window *w, unsigned i)
{
    return &w->ring[(w->head + i) % w->cap];
}

struct wev *relay_window_find(struct relay_window *w, int64_t position)
{
    /* positions increase from the head: binary search */
    unsigned lo = 0, hi = w->len;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        struct wev *e = relay_window_at(w, mid);
        if (e->position == position)
            return e;
        if (e->position < position)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

struct wev *relay_window_push(struct relay_window *w, int64_t position, int64_t order_id, bool held,
                              void *data)
{
    if (w->len == w->cap)
        return NULL;
    struct wev *e = &w->ring[(w->head + w->len) % w->cap];
    *e = (struct wev){.position = position, .order_id = order_id, .held = held, .data = data};
    w->len++;
    return e;
}

static struct wtaint *find_taint(const struct relay_window *w, int64_t order_id)
{
    for (unsigned i = 0; i < w->n_taint; i++)
        if (w->taint[i].order_id == order_id)
            return &w->taint[i];
    return NULL;
}

static bool tainted(const struct relay_window *w, int64_t order_id)
{
    return w->taint_all != 0 || find_taint(w, order_id) != NULL;
}

static void taint(struct relay_window *w, int64_t order_id)
{
    struct wtaint *found = find_taint(w, order_id);
    if (found != NULL) {
        /* rows in this batch too: lifted with this batch, not an earlier one */
        found->batch = w->batch;
        return;
    }
    if (w->taint_all == w->batch)
        return; /* every order is tainted until this batch is lifted anyway */
    if (w->n_taint == w->cap_taint) {
        unsigned cap = w->cap_taint ? w->cap_taint * 2 : 16;
        struct wtaint *t = realloc(w->taint, cap * sizeof(*t));
        if (t == NULL) {
            /* cannot remember it: count every order as tainted until this
               batch's rows committed, which is always safe (events get rows
               and go through the retry path). Holding only the waiting events
               would not do: reads already on their way bring more of this
               order. */
            w->taint_all = w->batch;
            return;
        }
        w->taint = t;
        w->cap_taint = cap;
    }
    w->taint[w->n_taint++] = (struct wtaint){.order_id = order_id, .batch = w->batch};
}

/* Does an entry in this state hold back later events of its order? */
static bool holds(const struct relay_window *w, enum wev_state s)
{
    return s == WEV_FAILED || s == WEV_BLOCKED || s == WEV_LEASED ||
           (s == WEV_DEAD && w->dead_blocks);
}

enum verdict { GO, WAIT, BLOCK };

/* May the waiting entry i go now? */
static enum verdict verdict(struct relay_window *w, unsigned i)
{
    struct wev *e = relay_window_at(w, i);
    if (e->held || tainted(w, e->order_id))
        return BLOCK;
    bool wait = false;
    for (unsigned j = i; j-- > 0;) {
        struct wev *p = relay_window_at(w, j);
        if (p->order_id != e->order_id)
            continue;
        if (holds(w, p->state))
            return BLOCK;
        if (p->state == WEV_WAITING || p->state == WEV_IN_FLIGHT)
            wait = true;
    }
    return wait ? WAIT : GO;
}

struct wev *relay_window_next(struct relay_window *w, uint64_t now_ms)
{
    for (unsigned i = 0; i < w->len; i++) {
        struct wev *e = relay_window_at(w, i);
        if (e->state != WEV_WAITING)
            continue;
        switch (verdict(w, i)) {
        case BLOCK:
            e->state = WEV_BLOCKED;
            break;
        case GO:
            e->state = WEV_IN_FLIGHT;
            e->started_ms = now_ms;
            return e;
        case WAIT:
            break;
        }
    }
    return NULL;
}

bool relay_window_has_ready(struct relay_window *w)
{
    for (unsigned i = 0; i < w->len; i++)
        if (relay_window_at(w, i)->state == WEV_WAITING && verdict(w, i) == GO)
            return true;
    return false;
}

void relay_window_settle(struct relay_window *w, struct wev *e, enum wev_state outcome)
{
    (void)w;
    if (e->state == WEV_IN_FLIGHT)
        e->state = outcome;
}

/* The head leaves with a row: later waiting events of its order are held. */
static void leaves_with_row(struct relay_window *w, struct wev *e)
{
    if (!holds(w, e->state))
        return;
    taint(w, e->order_id);
    for (unsigned i = 1; i < w->len; i++) {
        struct wev *n = relay_window_at(w, i);
        if (n->order_id == e->order_id && n->state == WEV_WAITING)
            n->held = true;
    }
}

unsigned relay_window_advance(struct relay_window *w, uint64_t now_ms, uint64_t lease_after_ms,
                              void (*emit)(struct wev *e, void *ctx), void *ctx)
{
    unsigned gone = 0;
    while (w->len > 0) {
        struct wev *e = relay_window_at(w, 0);
        switch (e->state) {
        case WEV_OK:
        case WEV_FAILED:
        case WEV_DEAD:
        case WEV_BLOCKED:
        case WEV_LEASED:
            break;
        case WEV_IN_FLIGHT:
            if (now_ms - e->started_ms < lease_after_ms)
                return gone;
            e->state = WEV_LEASED;
            break;
        case WEV_WAITING:
            /* nothing is before it in the window: only its own hold counts */
            if (verdict(w, 0) != BLOCK)
                return gone;
            e->state = WEV_BLOCKED;
            break;
        }
        leaves_with_row(w, e);
        emit(e, ctx);
        w->head = (w->head + 1) % w->cap;
        w->len--;
        gone++;
    }
    return gone;
}

uint64_t relay_window_seal(struct relay_window *w)
{
    return w->batch++;
}

/* Is the order tainted by a batch up to `batch` only (lifted with it)? */
static bool lifted_with(const struct relay_window *w, int64_t order_id, uint64_t batch)
{
    if (w->taint_all != 0 && w->taint_all <= batch)
        return true;
    const struct wtaint *t = find_taint(w, order_id);
    return t != NULL && t->batch <= batch;
}

void relay_window_untaint(struct relay_window *w, uint64_t batch)
{
    if (w->n_taint == 0 && w->taint_all == 0)
        return;
    for (unsigned i = 0; i < w->len; i++) {
        struct wev *e = relay_window_at(w, i);
        if (e->state == WEV_WAITING && lifted_with(w, e->order_id, batch))
            e->held = true;
    }
    /* only the batches known to be committed: a later one may still be in flight */
    unsigned kept = 0;
    for (unsigned i = 0; i < w->n_taint; i++)
        if (w->taint[i].batch > batch)
            w->taint[kept++] = w->taint[i];
    w->n_taint = kept;
    if (w->taint_all <= batch)
        w->taint_all = 0;
}

void relay_window_clear(struct relay_window *w, void (*fn)(struct wev *e, void *ctx), void *ctx)
{
    while (w->len > 0) {
        struct wev *e = relay_window_at(w, 0);
        w->head = (w->head + 1) % w->cap;
        w->len--;
        if (fn != NULL)
            fn(e, ctx);
    }
    w->head = 0;
    w->n_taint = 0;
    w->taint_all = 0;
}
