/*
 * relay_rate: a destination's rate limit (destinations.rate_limit_per_s) as
 * a token bucket. Pure, like relay_policy: no clock (times are arguments, in
 * ms of one monotonic clock), no I/O. Tests: tests/unit/test_relay_rate.c.
 *
 * Tokens accrue at `per_s` up to a small burst; each request takes one. A
 * claim of retry rows is a query away from knowing how many rows it gets, so
 * the relay lends it tokens for as many rows as it asks for and the claim
 * repays what it did not use. Lent tokens count toward the burst: what the
 * bucket holds plus what it lent never exceeds it. So, whatever the mix of
 * requests and claims, the requests started in any t seconds are at most
 * burst + per_s * t.
 *
 * One bucket per destination in the one instance that sends to it. The limit
 * holds for the destination as a whole, with any number of instances,
 * because:
 *  - only the instance holding a destination's stream lease sends to it: the
 *    events of the stream and the claims of its retry rows (relay_acquire,
 *    007_delivery.sql), so there is one bucket at a time;
 *  - a new owner starts with an empty bucket (relay_rate_empty): the old
 *    owner may have spent a full burst just before it let go, and the new
 *    one's first request waits a token's time;
 *  - an owner stops sending once the lease it last renewed may have run out
 *    by its own clock (relay_stream_leased), before another instance can
 *    take the stream, even when it cannot reach the database to learn it
 *    lost it;
 *  - an instance that stops cleanly stops sending before it hands its
 *    streams back (relay_leave).
 * What remains is the request already in flight when a stream changes hands:
 * it was counted by the old owner when it started.
 */
#ifndef OS_RELAY_RATE_H
#define OS_RELAY_RATE_H

#include <stdint.h>

/*
 * The burst is a tenth of a second's worth of requests, and at least one
 * (a limit under 10/s must still let one request through): at 20/s, two.
 */
#define RELAY_RATE_BURST_S 0.1

struct relay_rate {
    double per_s;  /* 0: no limit */
    double burst;  /* most tokens held and lent together */
    double tokens; /* held now (as of at_ms) */
    double lent;   /* to claims not answered yet */
    uint64_t at_ms;
};

/* The burst of a limit of per_s requests a second. */
double relay_rate_burst(double per_s);

/*
 * Applies the destination's setting (per_s <= 0: no limit). A bucket that
 * had no limit starts empty; a changed limit keeps the tokens earned so far,
 * within its new burst. Unchanged: nothing happens.
 */
void relay_rate_set(struct relay_rate *b, double per_s, uint64_t now_ms);

/* A new owner of the destination's stream: no tokens yet (lent ones stay lent). */
void relay_rate_empty(struct relay_rate *b, uint64_t now_ms);

/* Whole tokens available now: how many requests may start (UINT32_MAX without a limit). */
uint32_t relay_rate_room(struct relay_rate *b, uint64_t now_ms);

/*
 * Takes n tokens for n requests started now. Taking more than relay_rate_room
 * leaves a debt, paid off by time before the next request.
 */
void relay_rate_take(struct relay_rate *b, uint64_t now_ms, uint32_t n);

/* Lends n tokens (at most relay_rate_room) to a claim on its way. */
void relay_rate_lend(struct relay_rate *b, uint64_t now_ms, uint32_t n);

/* The claim came back: n lent tokens return (at most as many as are lent). */
void relay_rate_repay(struct relay_rate *b, uint32_t n);

/*
 * How long until a whole token is there (0: now). While tokens are lent the
 * bucket may not reach one by time alone; the answer is then when it would,
 * and the caller looks again.
 */
uint64_t relay_rate_wait_ms(const struct relay_rate *b, uint64_t now_ms);

#endif
