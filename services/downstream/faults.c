/*
 * faults: knob table, parsing and the per-request decision. The decision is
 * drawn from a private xorshift64 generator rather than rand(), so a seed
 * (DOWNSTREAM_SEED) makes a test run's sequence of failures reproducible
 * whatever else in the process uses the C library's generator.
 */
#include "faults.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#define K(field) offsetof(struct fault_knobs, field)

const struct fault_knob_def fault_knob_defs[] = {
    {"fail_rate", KNOB_RATE, "0", 0, K(fail_rate),
     "probability (0..1) of answering a webhook 500 without applying it"},
    {"fail_after_apply_rate", KNOB_RATE, "0", 0, K(fail_after_apply_rate),
     "probability (0..1) of applying and committing, then answering 500 (tests dedupe)"},
    {"throttle_rate", KNOB_RATE, "0", 0, K(throttle_rate),
     "probability (0..1) of answering 429 with Retry-After"},
    {"retry_after_s", KNOB_INT, "1", 3600, K(retry_after_s), "Retry-After of a 429, in seconds"},
    {"latency_ms", KNOB_INT, "0", 600000, K(latency_ms),
     "delay added to every webhook answer (a timer: the loop keeps serving)"},
    {"down_after_s", KNOB_INT, "0", 86400, K(down_after_s),
     "the 503 window opens this many seconds after start (after a /control change)"},
    {"down_for_s", KNOB_INT, "0", 86400, K(down_for_s),
     "length of the 503 window in seconds; 0: never down"},
};
const size_t fault_knob_defs_n = sizeof(fault_knob_defs) / sizeof(fault_knob_defs[0]);

static const char *const fault_names[] = {"none", "down", "throttle", "fail", "fail_after_apply"};

const char *fault_name(enum fault f)
{
    if ((size_t)f >= sizeof(fault_names) / sizeof(fault_names[0]))
        abort();
    return fault_names[f];
}

/* Checks and stores one value; `knobs` is untouched on -EINVAL. */
static int set_knob(const struct fault_knob_def *def, double v, struct fault_knobs *knobs)
{
    char *field = (char *)knobs + def->offset;
    if (!isfinite(v))
        return -EINVAL;
    if (def->type == KNOB_RATE) {
        if (v < 0.0 || v > 1.0)
            return -EINVAL;
        *(double *)field = v;
        return 0;
    }
    if (v < 0.0 || v > (double)def->max || v != floor(v))
        return -EINVAL;
    *(int64_t *)field = (int64_t)v;
    return 0;
}

int fault_knob_parse(const struct fault_knob_def *def, const char *text, struct fault_knobs *knobs)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0')
        return -EINVAL;
    return set_knob(def, v, knobs);
}

static uint64_t next_random(struct faults *f)
{
    uint64_t x = f->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f->rng = x;
    return x;
}

/* Uniform in [0, 1): a rate of 1 always hits, 0 never does. */
static double uniform(struct faults *f)
{
    return (double)(next_random(f) >> 11) * 0x1.0p-53;
}

/*
 * splitmix64: spreads a seed over all 64 bits. xorshift64 started from a
 * small seed (1, 2, 42) gives draws near 0 first, so every seeded receiver
 * failed its first webhooks whatever the fail_rate.
 */
static uint64_t mix_seed(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void faults_init(struct faults *f, const struct fault_knobs *knobs, uint64_t seed, uint64_t now_ms)
{
    memset(f, 0, sizeof(*f));
    f->knobs = *knobs;
    f->down_origin_ms = now_ms;
    if (seed == 0)
        seed = uv_hrtime() ^ ((uint64_t)getpid() << 32);
    seed = mix_seed(seed);
    f->rng = seed != 0 ? seed : 0x9e3779b97f4a7c15ull; /* xorshift never leaves 0 */
}

/* The window as [start, end) in loop milliseconds; false when there is none. */
static bool down_window(const struct faults *f, uint64_t *start, uint64_t *end)
{
    if (f->knobs.down_for_s <= 0)
        return false;
    *start = f->down_origin_ms + (uint64_t)f->knobs.down_after_s * 1000;
    *end = *start + (uint64_t)f->knobs.down_for_s * 1000;
    return true;
}

enum fault faults_decide(struct faults *f, uint64_t now_ms, unsigned *retry_after_s)
{
    uint64_t start, end;
    if (down_window(f, &start, &end) && now_ms >= start && now_ms < end) {
        *retry_after_s = (unsigned)((end - now_ms + 999) / 1000);
        return FAULT_DOWN;
    }
    if (f->knobs.throttle_rate > 0 && uniform(f) < f->knobs.throttle_rate) {
        *retry_after_s = (unsigned)f->knobs.retry_after_s;
        return FAULT_THROTTLE;
    }
    if (f->knobs.fail_rate > 0 && uniform(f) < f->knobs.fail_rate)
        return FAULT_FAIL;
    if (f->knobs.fail_after_apply_rate > 0 && uniform(f) < f->knobs.fail_after_apply_rate)
        return FAULT_FAIL_AFTER_APPLY;
    return FAULT_NONE;
}

static const struct fault_knob_def *find_knob(const char *name)
{
    for (size_t i = 0; i < fault_knob_defs_n; i++)
        if (strcmp(fault_knob_defs[i].name, name) == 0)
            return &fault_knob_defs[i];
    return NULL;
}

int faults_update(struct faults *f, const json_t *changes, uint64_t now_ms, char *err,
                  size_t errlen)
{
    if (!json_is_object(changes)) {
        snprintf(err, errlen, "the body must be a JSON object of knob names to numbers");
        return -EINVAL;
    }
    /* work on a copy so a bad value in the middle changes nothing */
    struct fault_knobs next = f->knobs;
    bool window_changed = false;
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)changes, name, value)
    {
        const struct fault_knob_def *def = find_knob(name);
        if (def == NULL) {
            snprintf(err, errlen, "unknown knob \"%.64s\"", name);
            return -EINVAL;
        }
        if (!json_is_number(value) || set_knob(def, json_number_value(value), &next) < 0) {
            if (def->type == KNOB_RATE)
                snprintf(err, errlen, "%s must be a number from 0 to 1", name);
            else
                snprintf(err, errlen, "%s must be an integer from 0 to %lld", name,
                         (long long)def->max);
            return -EINVAL;
        }
        if (def->offset == offsetof(struct fault_knobs, down_after_s) ||
            def->offset == offsetof(struct fault_knobs, down_for_s))
            window_changed = true;
    }
    f->knobs = next;
    if (window_changed)
        f->down_origin_ms = now_ms;
    return 0;
}

json_t *faults_to_json(const struct faults *f, uint64_t now_ms)
{
    json_t *out = json_object();
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < fault_knob_defs_n; i++) {
        const struct fault_knob_def *def = &fault_knob_defs[i];
        const char *field = (const char *)&f->knobs + def->offset;
        json_t *v = def->type == KNOB_RATE ? json_real(*(const double *)field)
                                           : json_integer((json_int_t) * (const int64_t *)field);
        if (json_object_set_new(out, def->name, v) < 0)
            goto fail;
    }
    uint64_t start, end;
    bool down = down_window(f, &start, &end) && now_ms >= start && now_ms < end;
    if (json_object_set_new(out, "down_now", json_boolean(down)) < 0)
        goto fail;
    return out;
fail:
    json_decref(out);
    return NULL;
}
