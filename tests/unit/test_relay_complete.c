/*
 * Unit tests for relay_complete's statement document (relay_complete_build),
 * with no loop running and no database: a relay's in-memory core, one
 * destination, one stream whose window holds a delivered event, a failed one
 * and one not yet sent.
 *
 * Pinned here: when building a stream's part of the statement ran out of
 * memory after its settled events had left the window, the stream kept its
 * read position with those events gone; the next completion moved its cursor
 * past them with no row, so a failed event was never retried. A failed build
 * must leave every stream it touched to be read again from its cursor.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "log.h"
#include "relay_internal.h"

struct fixture {
    uv_loop_t loop;
    struct relay r;
    struct dest d;
    struct relay_dest *rd;
};

static struct job *window_job(struct fixture *f, int64_t position)
{
    struct job *j = calloc(1, sizeof(*j));
    assert_non_null(j);
    list_init(&j->http);
    j->r = &f->r;
    j->rd = f->rd;
    j->in_window = true;
    j->position = position;
    j->order_id = 7000 + position; /* one order each: nothing holds another back */
    j->attempt = 1;
    strcpy(j->created_at, "2026-12-07 05:00:00+00");
    return j;
}

/* Stream at 100; 101 delivered, 102 failed (a retry row), 103 not sent. */
static void setup(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    struct relay_config cfg = {.claim_batch = 4, .lease_s = 60, .instance = "test"};
    relay_core_init(&f->r, &cfg);
    f->r.loop = &f->loop;
    f->d = (struct dest){.id = (char *)"inventory",
                         .present = true,
                         .set = {.push = true, .enabled = true, .max_in_flight = 4},
                         .generation = 1};
    f->rd = relay_dest_get(&f->r, &f->d);
    assert_non_null(f->rd);
    assert_int_equal(relay_stream_new(&f->r, f->rd, 100, UINT64_MAX), 0);
    struct stream *s = f->rd->stream;
    for (int64_t p = 101; p <= 103; p++)
        assert_non_null(relay_window_push(&s->win, p, 7000 + p, false, window_job(f, p)));
    s->read_pos = 103;
    struct wev *e = relay_window_next(&s->win, 0);
    assert_int_equal(e->position, 101);
    relay_job_set_outcome(e->data, JOB_OK, 200, 3, 0, NULL, NULL);
    relay_window_settle(&s->win, e, WEV_OK);
    e = relay_window_next(&s->win, 0);
    assert_int_equal(e->position, 102);
    relay_job_set_outcome(e->data, JOB_RETRY, 503, 4, 1.0, "HTTP 503", "busy");
    relay_window_settle(&s->win, e, WEV_FAILED);
}

static void free_job(struct wev *e, void *ctx)
{
    (void)ctx;
    relay_job_free(e->data);
    e->data = NULL;
}

static void teardown(struct fixture *f)
{
    if (f->rd->stream != NULL)
        relay_window_clear(&f->rd->stream->win, free_job, NULL);
    relay_core_free(&f->r);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void settled_events_go_into_the_statement(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    unsigned n_streams = 0, n_results = 0;
    assert_int_equal(relay_complete_build(&f.r, &n_streams, &n_results), 0);
    assert_int_equal(n_streams, 1);
    assert_int_equal(n_results, 0);
    struct stream *s = f.rd->stream;
    assert_int_equal(s->state, STREAM_COMPLETING);
    assert_int_equal(s->complete_from, 100);
    assert_int_equal(s->cursor, 102); /* 103 is still in the window */
    const char *doc = f.r.doc.data;
    assert_non_null(strstr(doc, "\"from\":100,\"to\":102,\"ok\":[[101,200,3]]"));
    assert_non_null(strstr(doc, "{\"p\":102,\"o\":7102,"));
    assert_non_null(strstr(doc, "\"k\":\"failed\""));
    teardown(&f);
}

/* Delivered events are listed as [position,status,ms], comma-separated, in order. */
static void delivered_events_are_listed_in_order(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    struct stream *s = f.rd->stream;
    struct wev *e = relay_window_next(&s->win, 0);
    assert_int_equal(e->position, 103);
    relay_job_set_outcome(e->data, JOB_OK, 204, 1234567, 0, NULL, NULL);
    relay_window_settle(&s->win, e, WEV_OK);
    unsigned n_streams = 0, n_results = 0;
    assert_int_equal(relay_complete_build(&f.r, &n_streams, &n_results), 0);
    assert_non_null(strstr(f.r.doc.data, "\"ok\":[[101,200,3],[103,204,1234567]]"));
    teardown(&f);
}

/*
 * Every allocation of the build fails in turn. Each time, the stream must be
 * untouched or read again from its cursor (nothing lost: the window's settled
 * events come back with the read) or, once nothing failed, be completing with
 * both.
 */
static void out_of_memory_reads_the_stream_again(void **state)
{
    (void)state;
    log_set_level(LOG_ERROR);
    unsigned failing = 0;
    for (unsigned long n = 1;; n++) {
        struct fixture f;
        setup(&f);
        unsigned n_streams = 0, n_results = 0;
        alloc_fail_at(n);
        int rc = relay_complete_build(&f.r, &n_streams, &n_results);
        bool hit = alloc_fail_triggered();
        alloc_fail_at(0);
        struct stream *s = f.rd->stream;
        assert_non_null(s);
        if (hit && rc < 0) {
            failing++;
            assert_int_equal(s->state, STREAM_IDLE);
            assert_int_equal(s->cursor, 100);
            /* untouched, or emptied to be read again: every event past the
               cursor that was read is still in the window */
            assert_int_equal(relay_window_len(&s->win), s->read_pos - s->cursor);
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(s->state, STREAM_COMPLETING);
            assert_int_equal(s->complete_from, 100);
            /* 102's retry row is in the statement; 103 too when the taint
               list could not grow (every order then counts as held back, so
               103 leaves as a blocked row) */
            assert_non_null(strstr(f.r.doc.data, "{\"p\":102,\"o\":7102,"));
            assert_int_equal(s->cursor, s->read_pos - (int64_t)relay_window_len(&s->win));
            assert_true(s->cursor >= 102);
        }
        teardown(&f);
        if (!hit)
            break;
    }
    assert_true(failing > 0);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(settled_events_go_into_the_statement),
        cmocka_unit_test(delivered_events_are_listed_in_order),
        cmocka_unit_test(out_of_memory_reads_the_stream_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
