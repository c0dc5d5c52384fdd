/*
 * metrics: counters, gauges and histograms rendered in the Prometheus text
 * format for GET /metrics. A series is found or created by (name, labels)
 * once; callers keep the returned pointer so the hot path is one addition.
 * Single-threaded by design: everything runs on the loop thread.
 */
#ifndef OS_METRICS_H
#define OS_METRICS_H

#include <stddef.h>

#include "buf.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric;

/*
 * Finds or creates the series `name{labels}`. `labels` is the text between the
 * braces ('route="webhooks",code="2xx"') or "" for none; `help` is used on
 * first creation. For histograms, `bounds` (ascending upper bounds, n of them,
 * borrowed and static) applies. Returns a pointer owned by the registry, valid
 * until metrics_reset(), or NULL when out of memory (updates then do nothing).
 */
struct metric *metrics_get(enum metric_type type, const char *name, const char *help,
                           const char *labels, const double *bounds, size_t n_bounds);
struct metric *metrics_counter(const char *name, const char *help, const char *labels);
struct metric *metrics_gauge(const char *name, const char *help, const char *labels);

void metric_add(struct metric *m, double v);     /* counter or gauge; NULL ignored */
void metric_set(struct metric *m, double v);     /* gauge */
void metric_observe(struct metric *m, double v); /* histogram */
double metric_value(const struct metric *m);     /* counter/gauge value, histogram count */

/* Standard bucket sets (seconds, and batch sizes). */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_n;
extern const double metrics_size_buckets[];
extern const size_t metrics_size_buckets_n;

/*
 * Writes `value` into `out` escaped for a label value of the text format
 * (backslash, double quote and newline as \\, \" and \n), cut to fit `size`
 * (at least 1) without splitting an escape. Callers build labels with it:
 * snprintf(labels, n, "destination=\"%s\"", escaped). Pure.
 */
void metrics_escape(char *out, size_t size, const char *value);

/* Appends the exposition text; returns 0 or the buf error. */
int metrics_render(struct buf *out) __attribute__((warn_unused_result));
/* Frees every series (end of process, tests). */
void metrics_reset(void);

#endif
