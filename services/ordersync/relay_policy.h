/*
 * relay_policy: what the result of one delivery attempt means, and the
 * circuit breaker of a destination. Pure functions of (settings, state,
 * input): no I/O, no clock (times are arguments), no randomness (the jitter
 * is an argument). The relay applies the decisions; the tests check the
 * rules one by one (tests/unit/test_relay_policy.c).
 *
 * What happens to a dead event's successors (on_dead) is the database's
 * business (007_delivery.sql); the window (relay_window.h) keeps the order.
 */
#ifndef OS_RELAY_POLICY_H
#define OS_RELAY_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#define RELAY_POLICY_MAX_SCHEDULE 32

/* A destination's delivery settings (columns of `destinations`). */
struct relay_policy {
    double schedule[RELAY_POLICY_MAX_SCHEDULE]; /* retry_schedule, seconds */
    unsigned n_schedule;                        /* >= 1 */
    int max_attempts;
    double window_s;          /* retry_window: no retry later than this after the event */
    double max_retry_after_s; /* Retry-After is honoured up to this */
    int breaker_threshold;    /* consecutive failures that pause the destination */
    double breaker_pause_s;
};

enum relay_verdict { RELAY_DELIVERED, RELAY_RETRY, RELAY_DEAD };

struct relay_decision {
    enum relay_verdict verdict;
    double delay_s;    /* RELAY_RETRY: try again after this */
    bool failure;      /* counts toward the breaker */
    bool retryable;    /* 408, 425, 429, 5xx, no response: the receiver's trouble */
    bool client_error; /* another 4xx: retried on the schedule all the same, and counted */
    bool gone;         /* 410: the receiver is gone; disable the destination */
};

/*
 * Decides on attempt number `attempt` (1 = first) of an event `age_s` old,
 * answered `http_status` (0: no response) with `retry_after_s` (< 0: none).
 * `jitter` in [1, 1.2] stretches the schedule so retries of many events
 * spread out; it never makes a retry earlier than the schedule.
 */
struct relay_decision relay_policy_decide(const struct relay_policy *p, int attempt,
                                          long http_status, double retry_after_s, double age_s,
                                          double jitter);

/* A destination's breaker. Zeroed = closed (deliveries flow). */
struct relay_breaker {
    int failures;          /* consecutive */
    uint64_t paused_until; /* ms on the caller's clock; 0: not paused */
    bool probing;          /* the pause is over: one delivery decides */
};

/*
 * May deliveries start now, and how many in flight at most (`max_in_flight`,
 * or 1 while probing)? Ends a pause whose time has come (starts probing).
 */
bool relay_breaker_allows(struct relay_breaker *b, uint64_t now_ms, unsigned max_in_flight,
                          unsigned *cap);

enum relay_breaker_change {
    RELAY_BREAKER_SAME,
    RELAY_BREAKER_PAUSED,  /* persist paused_until and failures */
    RELAY_BREAKER_RESUMED, /* the end of a pause; persist: no pause, no failures */
};

/* Records one attempt's outcome. Returns what changed and must be persisted. */
enum relay_breaker_change relay_breaker_record(struct relay_breaker *b,
                                               const struct relay_policy *p, bool success,
                                               uint64_t now_ms);

/*
 * Another instance (or an operator) paused or resumed the destination:
 * `paused_for_s` > 0 is the pause left, 0 none.
 */
void relay_breaker_sync(struct relay_breaker *b, double paused_for_s, int failures,
                        uint64_t now_ms);

#endif
