/*
 * relay_policy: the rules, see relay_policy.h. The outbound wire contract:
 * 2xx delivered; 408, 425, 429, 5xx, timeouts and connection errors retried
 * (Retry-After honoured up to a bound); other 4xx retried on the same
 * schedule but counted (a receiver bug should not lose data silently); 410
 * disables the destination; after max attempts or past the retry window the
 * event is dead.
 */
#include "relay_policy.h"

struct relay_decision relay_policy_decide(const struct relay_policy *p, int attempt,
                                          long http_status, double retry_after_s, double age_s,
                                          double jitter)
{
    struct relay_decision d = {.verdict = RELAY_DELIVERED};
    long st = http_status;
    if (st >= 200 && st < 300)
        return d;
    d.failure = true;
    d.retryable = st == 0 || st == 408 || st == 425 || st == 429 || st >= 500;
    d.gone = st == 410;
    d.client_error = !d.retryable && !d.gone;

    unsigned n = p->n_schedule > 0 ? p->n_schedule : 1;
    unsigned k = attempt >= 1 && (unsigned)(attempt - 1) < n ? (unsigned)(attempt - 1) : n - 1;
    double base = p->n_schedule > 0 ? p->schedule[k] : 5.0;
    if (jitter < 1.0)
        jitter = 1.0;
    d.delay_s = base * jitter;
    if (d.retryable && retry_after_s >= 0) {
        double hint = retry_after_s < p->max_retry_after_s ? retry_after_s : p->max_retry_after_s;
        if (hint > d.delay_s)
            d.delay_s = hint;
    }
    if (attempt >= p->max_attempts || age_s + d.delay_s > p->window_s) {
        d.verdict = RELAY_DEAD;
        d.delay_s = 0;
    } else {
        d.verdict = RELAY_RETRY;
    }
    return d;
}

bool relay_breaker_allows(struct relay_breaker *b, uint64_t now_ms, unsigned max_in_flight,
                          unsigned *cap)
{
    if (b->paused_until != 0) {
        if (b->paused_until > now_ms)
            return false;
        b->paused_until = 0;
        b->probing = true;
    }
    *cap = b->probing ? 1 : max_in_flight;
    return true;
}

enum relay_breaker_change relay_breaker_record(struct relay_breaker *b,
                                               const struct relay_policy *p, bool success,
                                               uint64_t now_ms)
{
    if (success) {
        /* only the end of a pause is news: a success after a failure or two (a
           receiver failing now and then) resets the streak and nothing else */
        bool was = b->probing || b->paused_until != 0 || b->failures >= p->breaker_threshold;
        b->failures = 0;
        b->probing = false;
        b->paused_until = 0;
        return was ? RELAY_BREAKER_RESUMED : RELAY_BREAKER_SAME;
    }
    b->failures++;
    /* a failed probe pauses again at once; otherwise the streak must reach the threshold */
    if (b->probing || (b->failures >= p->breaker_threshold && b->paused_until == 0)) {
        b->probing = false;
        b->paused_until = now_ms + (uint64_t)(p->breaker_pause_s * 1000.0);
        return RELAY_BREAKER_PAUSED;
    }
    return RELAY_BREAKER_SAME;
}

void relay_breaker_sync(struct relay_breaker *b, double paused_for_s, int failures, uint64_t now_ms)
{
    if (paused_for_s > 0) {
        b->paused_until = now_ms + (uint64_t)(paused_for_s * 1000.0);
        b->probing = false;
        if (failures > b->failures)
            b->failures = failures;
    } else if (b->paused_until != 0 && !b->probing) {
        /* resumed elsewhere (an operator cleared paused_until) */
        b->paused_until = 0;
        b->failures = failures;
    }
}
