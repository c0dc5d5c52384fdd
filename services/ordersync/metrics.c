/*
 * metrics: a registry of series kept in families (one HELP/TYPE block per
 * name, as the exposition format wants). Lookups are linear: they happen when
 * a series is first used, never per request.
 */
#include "metrics.h"

#include <stdlib.h>
#include <string.h>

struct metric {
    struct metric *next; /* next series of the same family */
    char *labels;
    double value; /* counter/gauge; histogram sum */
    unsigned long long count;
    unsigned long long *buckets; /* histogram: per-bucket (non-cumulative) counts */
    struct family *family;
};

struct family {
    struct family *next;
    char *name;
    char *help;
    enum metric_type type;
    const double *bounds;
    size_t n_bounds;
    struct metric *series, *last;
};

static struct family *families, *families_last;

const double metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t metrics_latency_buckets_n = sizeof(metrics_latency_buckets) / sizeof(double);
const double metrics_size_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
const size_t metrics_size_buckets_n = sizeof(metrics_size_buckets) / sizeof(double);

static struct family *family_get(enum metric_type type, const char *name, const char *help,
                                 const double *bounds, size_t n)
{
    for (struct family *f = families; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f->type == type ? f : NULL;
    struct family *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help);
    if (f->name == NULL || f->help == NULL) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    f->type = type;
    f->bounds = bounds;
    f->n_bounds = n;
    if (families_last != NULL)
        families_last->next = f;
    else
        families = f;
    families_last = f;
    return f;
}

struct metric *metrics_get(enum metric_type type, const char *name, const char *help,
                           const char *labels, const double *bounds, size_t n_bounds)
{
    struct family *f = family_get(type, name, help, bounds, n_bounds);
    if (f == NULL)
        return NULL;
    for (struct metric *m = f->series; m != NULL; m = m->next)
        if (strcmp(m->labels, labels) == 0)
            return m;
    struct metric *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->labels = strdup(labels);
    if (type == METRIC_HISTOGRAM)
        m->buckets = calloc(f->n_bounds, sizeof(*m->buckets));
    if (m->labels == NULL || (type == METRIC_HISTOGRAM && m->buckets == NULL)) {
        free(m->labels);
        free(m->buckets);
        free(m);
        return NULL;
    }
    m->family = f;
    if (f->last != NULL)
        f->last->next = m;
    else
        f->series = m;
    f->last = m;
    return m;
}

struct metric *metrics_counter(const char *name, const char *help, const char *labels)
{
    return metrics_get(METRIC_COUNTER, name, help, labels, NULL, 0);
}

struct metric *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return metrics_get(METRIC_GAUGE, name, help, labels, NULL, 0);
}

void metric_add(struct metric *m, double v)
{
    if (m != NULL)
        m->value += v;
}

void metric_set(struct metric *m, double v)
{
    if (m != NULL)
        m->value = v;
}

void metric_observe(struct metric *m, double v)
{
    if (m == NULL || m->buckets == NULL)
        return;
    m->value += v;
    m->count++;
    const struct family *f = m->family;
    for (size_t i = 0; i < f->n_bounds; i++) {
        if (v <= f->bounds[i]) {
            m->buckets[i]++;
            break;
        }
    }
}

double metric_value(const struct metric *m)
{
    if (m == NULL)
        return 0;
    return m->buckets != NULL ? (double)m->count : m->value;
}

void metrics_escape(char *out, size_t size, const char *value)
{
    size_t n = 0;
    for (const char *p = value; *p != '\0'; p++) {
        char esc = *p == '\\' ? '\\' : *p == '"' ? '"' : *p == '\n' ? 'n' : '\0';
        size_t need = esc != '\0' ? 2 : 1;
        if (n + need >= size)
            break;
        if (esc != '\0') {
            out[n++] = '\\';
            out[n++] = esc;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
}

/* HELP text escapes backslash and newline (the text format's rule; quotes stay). */
static int render_help(struct buf *out, const char *help)
{
    int rc = 0;
    const char *p = help;
    while (rc == 0 && *p != '\0') {
        size_t run = strcspn(p, "\\\n");
        rc = buf_append(out, p, run);
        p += run;
        if (rc == 0 && *p != '\0') {
            rc = buf_append(out, *p == '\\' ? "\\\\" : "\\n", 2);
            p++;
        }
    }
    return rc;
}

static const char *type_name(enum metric_type t)
{
    return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

int metrics_render(struct buf *out)
{
    int rc = 0;
    for (struct family *f = families; f != NULL && rc == 0; f = f->next) {
        rc = buf_printf(out, "# HELP %s ", f->name);
        if (rc == 0)
            rc = render_help(out, f->help);
        if (rc == 0)
            rc = buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type));
        for (struct metric *m = f->series; m != NULL && rc == 0; m = m->next) {
            const char *sep = m->labels[0] ? "," : "";
            if (f->type != METRIC_HISTOGRAM) {
                rc = m->labels[0] ? buf_printf(out, "%s{%s} %.17g\n", f->name, m->labels, m->value)
                                  : buf_printf(out, "%s %.17g\n", f->name, m->value);
                continue;
            }
            unsigned long long cum = 0;
            for (size_t i = 0; i < f->n_bounds && rc == 0; i++) {
                cum += m->buckets[i];
                rc = buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", f->name, m->labels, sep,
                                f->bounds[i], cum);
            }
            if (rc == 0)
                rc = buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, m->labels, sep,
                                m->count);
            if (rc == 0)
                rc = m->labels[0]
                         ? buf_printf(out, "%s_sum{%s} %.17g\n%s_count{%s} %llu\n", f->name,
                                      m->labels, m->value, f->name, m->labels, m->count)
                         : buf_printf(out, "%s_sum %.17g\n%s_count %llu\n", f->name, m->value,
                                      f->name, m->count);
        }
    }
    return rc;
}

void metrics_reset(void)
{
    struct family *f = families;
    while (f != NULL) {
        struct family *fn = f->next;
        struct metric *m = f->series;
        while (m != NULL) {
            struct metric *mn = m->next;
            free(m->labels);
            free(m->buckets);
            free(m);
            m = mn;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = fn;
    }
    families = families_last = NULL;
}
