/*
 * faults: the misbehaviour a downstream can be told to show, so demos and
 * tests can watch ordersync's relay retry, back off and recover against a
 * real receiver instead of a mock: random 500s (before or after the event is
 * applied), random 429s with Retry-After, added latency and a window of 503s.
 *
 * The knobs come from flags or environment at start (options.c builds both
 * from fault_knob_defs below) and can be changed at runtime with POST /control.
 * Pure state and arithmetic: the clock is a parameter, no I/O.
 */
#ifndef DS_FAULTS_H
#define DS_FAULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct fault_knobs {
    double fail_rate;             /* answer 500 before applying, with this probability */
    double fail_after_apply_rate; /* apply and commit, then answer 500 anyway */
    double throttle_rate;         /* answer 429 + Retry-After */
    int64_t retry_after_s;        /* the Retry-After of a 429 */
    int64_t latency_ms;           /* every webhook answer is delayed by this */
    int64_t down_after_s;         /* the 503 window opens this long after its origin... */
    int64_t down_for_s;           /* ...and lasts this long; 0 = no window */
};

enum fault_knob_type { KNOB_RATE, KNOB_INT };

/* One knob: its JSON name in /control (flag --name-with-dashes, env DOWNSTREAM_NAME). */
struct fault_knob_def {
    const char *name;
    enum fault_knob_type type;
    const char *def; /* default, as text */
    int64_t max;     /* KNOB_INT only; the minimum is 0 */
    size_t offset;   /* in struct fault_knobs */
    const char *description;
};

extern const struct fault_knob_def fault_knob_defs[];
extern const size_t fault_knob_defs_n;

/*
 * Parses `text` as the value of knob `def` into `knobs`. Returns 0 or -EINVAL
 * (not a number, or out of range).
 */
int fault_knob_parse(const struct fault_knob_def *def, const char *text, struct fault_knobs *knobs)
    __attribute__((warn_unused_result));

enum fault {
    FAULT_NONE = 0,
    FAULT_DOWN,             /* 503 + Retry-After: inside the down window */
    FAULT_THROTTLE,         /* 429 + Retry-After */
    FAULT_FAIL,             /* 500, nothing applied */
    FAULT_FAIL_AFTER_APPLY, /* applied and committed, then 500: the sender must redeliver */
};
#define FAULT_KINDS (FAULT_FAIL_AFTER_APPLY + 1)

/* Static lower-case name for logs and counters ("down", "throttle", ...). */
const char *fault_name(enum fault f);

struct faults {
    struct fault_knobs knobs;
    uint64_t down_origin_ms; /* loop time the down window is counted from */
    uint64_t rng;            /* xorshift64 state, never 0 */
};

/*
 * `knobs` is copied. `seed` 0 picks one from the clock; `now_ms` (uv_now) is
 * the origin of the down window, i.e. the process start.
 */
void faults_init(struct faults *f, const struct fault_knobs *knobs, uint64_t seed, uint64_t now_ms);

/*
 * The fault for a webhook arriving now, FAULT_NONE most of the time. Sets
 * *retry_after_s for FAULT_DOWN (seconds left in the window) and
 * FAULT_THROTTLE (the knob).
 */
enum fault faults_decide(struct faults *f, uint64_t now_ms, unsigned *retry_after_s);

/*
 * Applies a /control request: `changes` (borrowed) is an object of knob names
 * to numbers. All or nothing: on an unknown name or a bad value nothing
 * changes, -EINVAL is returned and `err` says why. Changing down_after_s or
 * down_for_s restarts the window from `now_ms`, so {"down_after_s": 0,
 * "down_for_s": 5} means "down for the next five seconds".
 */
int faults_update(struct faults *f, const json_t *changes, uint64_t now_ms, char *err,
                  size_t errlen) __attribute__((warn_unused_result));

/* The knobs and whether the window is open now; returns a new reference (NULL on ENOMEM). */
json_t *faults_to_json(const struct faults *f, uint64_t now_ms);

#endif
