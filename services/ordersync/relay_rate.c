/*
 * relay_rate: the token bucket, see relay_rate.h. Tokens are brought up to
 * date lazily, whenever the bucket is asked or used.
 */
#include "relay_rate.h"

#include <math.h>

/* Tokens accrue in steps of per_s * ms / 1000, which binary fractions do not
   hold exactly: 0.98 + 0.02 may fall a hair short of 1. Whole tokens are
   counted with this much slack (a billionth of a request is no excess). */
#define WHOLE_EPS 1e-9

double relay_rate_burst(double per_s)
{
    double b = per_s * RELAY_RATE_BURST_S;
    return b < 1.0 ? 1.0 : b;
}

/* Tokens earned since at_ms, up to the burst less what is lent. */
static void refill(struct relay_rate *b, uint64_t now_ms)
{
    if (now_ms <= b->at_ms)
        return;
    double top = b->burst - b->lent;
    if (b->tokens < top) {
        b->tokens += b->per_s * (double)(now_ms - b->at_ms) / 1000.0;
        if (b->tokens > top)
            b->tokens = top;
    }
    b->at_ms = now_ms;
}

void relay_rate_set(struct relay_rate *b, double per_s, uint64_t now_ms)
{
    if (per_s <= 0) {
        b->per_s = 0;
        return;
    }
    if (per_s == b->per_s)
        return;
    if (b->per_s <= 0) {
        /* from no limit: nothing was counted, so nothing is owed either way */
        b->tokens = 0;
        b->at_ms = now_ms;
    } else {
        refill(b, now_ms); /* what was earned at the old rate */
    }
    b->per_s = per_s;
    b->burst = relay_rate_burst(per_s);
    if (b->tokens > b->burst - b->lent)
        b->tokens = b->burst - b->lent;
}

void relay_rate_empty(struct relay_rate *b, uint64_t now_ms)
{
    if (b->tokens > 0)
        b->tokens = 0;
    b->at_ms = now_ms;
}

uint32_t relay_rate_room(struct relay_rate *b, uint64_t now_ms)
{
    if (b->per_s <= 0)
        return UINT32_MAX;
    refill(b, now_ms);
    if (b->tokens + WHOLE_EPS < 1.0)
        return 0;
    double n = floor(b->tokens + WHOLE_EPS);
    return n >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

void relay_rate_take(struct relay_rate *b, uint64_t now_ms, uint32_t n)
{
    if (b->per_s <= 0)
        return;
    refill(b, now_ms);
    b->tokens -= n;
}

void relay_rate_lend(struct relay_rate *b, uint64_t now_ms, uint32_t n)
{
    if (b->per_s <= 0)
        return;
    refill(b, now_ms);
    b->tokens -= n;
    b->lent += n;
}

void relay_rate_repay(struct relay_rate *b, uint32_t n)
{
    /* held + lent does not change: the burst still bounds them */
    double back = (double)n < b->lent ? (double)n : b->lent;
    b->lent -= back;
    b->tokens += back;
}

uint64_t relay_rate_wait_ms(const struct relay_rate *b, uint64_t now_ms)
{
    if (b->per_s <= 0)
        return 0;
    struct relay_rate now = *b;
    refill(&now, now_ms);
    if (now.tokens + WHOLE_EPS >= 1.0)
        return 0;
    double ms = ceil((1.0 - now.tokens) * 1000.0 / now.per_s);
    return ms < 1.0 ? 1 : (uint64_t)ms;
}
