/*
 * Unit tests for services/ordersync/metrics: counters, gauges and histograms
 * as a Prometheus scrape of GET /metrics reads them (the text exposition
 * format), and the escaping of label values and help text.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "buf.h"
#include "metrics.h"

static int reset(void **state)
{
    (void)state;
    metrics_reset();
    return 0;
}

/* The exposition text now, as a new allocation. */
static char *render(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    assert_int_equal(metrics_render(&b), 0);
    char *text = strdup(b.data != NULL ? b.data : "");
    buf_free(&b);
    assert_non_null(text);
    return text;
}

static void counters_and_gauges(void **state)
{
    (void)state;
    struct metric *ok = metrics_counter("t_requests_total", "Requests", "code=\"2xx\"");
    struct metric *bad = metrics_counter("t_requests_total", "Requests", "code=\"5xx\"");
    assert_non_null(ok);
    assert_ptr_not_equal(ok, bad);
    /* the same series is found again, not made twice */
    assert_ptr_equal(metrics_counter("t_requests_total", "ignored", "code=\"2xx\""), ok);
    metric_add(ok, 2);
    metric_add(ok, 1);
    metric_add(bad, 1);
    struct metric *g = metrics_gauge("t_pending", "Pending work", "");
    metric_set(g, 7);
    metric_add(g, -2);
    assert_true(metric_value(ok) == 3);
    assert_true(metric_value(g) == 5);
    char *text = render();
    assert_string_equal(text, "# HELP t_requests_total Requests\n"
                              "# TYPE t_requests_total counter\n"
                              "t_requests_total{code=\"2xx\"} 3\n"
                              "t_requests_total{code=\"5xx\"} 1\n"
                              "# HELP t_pending Pending work\n"
                              "# TYPE t_pending gauge\n"
                              "t_pending 5\n");
    free(text);
}

static const double bounds[] = {0.1, 1, 10};

static void histograms_are_cumulative_with_sum_and_count(void **state)
{
    (void)state;
    struct metric *h =
        metrics_get(METRIC_HISTOGRAM, "t_seconds", "Durations", "route=\"a\"", bounds, 3);
    assert_non_null(h);
    metric_observe(h, 0.05);           /* <= 0.1 */
    metric_observe(h, 0.1);            /* a bound is inclusive (le) */
    metric_observe(h, 5);              /* <= 10 */
    metric_observe(h, 50);             /* only +Inf */
    assert_true(metric_value(h) == 4); /* a histogram's value is its count */
    char *text = render();
    assert_string_equal(text, "# HELP t_seconds Durations\n"
                              "# TYPE t_seconds histogram\n"
                              "t_seconds_bucket{route=\"a\",le=\"0.1\"} 2\n"
                              "t_seconds_bucket{route=\"a\",le=\"1\"} 2\n"
                              "t_seconds_bucket{route=\"a\",le=\"10\"} 3\n"
                              "t_seconds_bucket{route=\"a\",le=\"+Inf\"} 4\n"
                              "t_seconds_sum{route=\"a\"} 55.149999999999999\n"
                              "t_seconds_count{route=\"a\"} 4\n");
    free(text);
}

static void a_histogram_without_labels(void **state)
{
    (void)state;
    struct metric *h = metrics_get(METRIC_HISTOGRAM, "t_size", "Sizes", "", bounds, 3);
    metric_observe(h, 1);
    char *text = render();
    assert_non_null(strstr(text, "\nt_size_bucket{le=\"1\"} 1\n"));
    assert_non_null(strstr(text, "\nt_size_sum 1\nt_size_count 1\n"));
    free(text);
}

static void a_name_keeps_its_first_type(void **state)
{
    (void)state;
    assert_non_null(metrics_counter("t_x", "X", ""));
    /* a gauge of a counter's name would make the exposition invalid */
    struct metric *clash = metrics_gauge("t_x", "X", "a=\"1\"");
    assert_null(clash);
    metric_add(clash, 1); /* updates of a NULL metric do nothing */
    metric_set(clash, 1);
    metric_observe(clash, 1);
    assert_true(metric_value(clash) == 0);
    /* observing a counter does nothing either */
    struct metric *c = metrics_counter("t_x", "X", "");
    metric_observe(c, 3);
    assert_true(metric_value(c) == 0);
}

static void label_values_are_escaped(void **state)
{
    (void)state;
    char out[64];
    metrics_escape(out, sizeof(out), "plain-id_1");
    assert_string_equal(out, "plain-id_1");
    metrics_escape(out, sizeof(out), "a\"b\\c\nd");
    assert_string_equal(out, "a\\\"b\\\\c\\nd");
    /* cut to fit, never in the middle of an escape */
    metrics_escape(out, 4, "ab\"c");
    assert_string_equal(out, "ab");
    metrics_escape(out, 5, "ab\"c");
    assert_string_equal(out, "ab\\\"");
    metrics_escape(out, 1, "abc");
    assert_string_equal(out, "");

    char labels[128];
    metrics_escape(out, sizeof(out), "we\"ird");
    snprintf(labels, sizeof(labels), "destination=\"%s\"", out);
    metric_set(metrics_gauge("t_lag", "Lag", labels), 1);
    char *text = render();
    assert_non_null(strstr(text, "\nt_lag{destination=\"we\\\"ird\"} 1\n"));
    free(text);
}

static void help_text_is_escaped(void **state)
{
    (void)state;
    metrics_counter("t_h", "Paths like C:\\x\nand \"quotes\"", "");
    char *text = render();
    assert_non_null(
        strstr(text, "# HELP t_h Paths like C:\\\\x\\nand \"quotes\"\n# TYPE t_h counter\n"));
    free(text);
}

static void a_full_buffer_is_an_error(void **state)
{
    (void)state;
    metric_add(metrics_counter("t_many", "Many", ""), 1);
    struct buf b;
    buf_init(&b, 16);
    assert_int_equal(metrics_render(&b), -E2BIG);
    buf_free(&b);
}

static void reset_forgets_everything(void **state)
{
    (void)state;
    metric_add(metrics_counter("t_gone", "Gone", ""), 1);
    metrics_reset();
    char *text = render();
    assert_string_equal(text, "");
    free(text);
    assert_true(metric_value(metrics_counter("t_gone", "Gone", "")) == 0);
}

/* A registry of each kind, rendered: NULL series and render errors are the failures. */
static int fill_and_render(void *ctx)
{
    (void)ctx;
    struct metric *c = metrics_counter("t_c_total", "C", "a=\"1\"");
    struct metric *g = metrics_gauge("t_g", "G", "");
    struct metric *h = metrics_get(METRIC_HISTOGRAM, "t_h", "H", "r=\"x\"", bounds, 3);
    int rc = c != NULL && g != NULL && h != NULL ? 0 : -ENOMEM;
    metric_add(c, 1);
    metric_set(g, 2);
    metric_observe(h, 0.5);
    struct buf b;
    buf_init(&b, 1 << 20);
    if (rc == 0)
        rc = metrics_render(&b);
    buf_free(&b);
    metrics_reset();
    return rc;
}

static void allocation_failures(void **state)
{
    (void)state;
    assert_true(alloc_fail_loop("metrics", fill_and_render, NULL, false) > 0);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(counters_and_gauges, reset),
        cmocka_unit_test_teardown(histograms_are_cumulative_with_sum_and_count, reset),
        cmocka_unit_test_teardown(a_histogram_without_labels, reset),
        cmocka_unit_test_teardown(a_name_keeps_its_first_type, reset),
        cmocka_unit_test_teardown(label_values_are_escaped, reset),
        cmocka_unit_test_teardown(help_text_is_escaped, reset),
        cmocka_unit_test_teardown(a_full_buffer_is_an_error, reset),
        cmocka_unit_test_teardown(reset_forgets_everything, reset),
        cmocka_unit_test_teardown(allocation_failures, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
