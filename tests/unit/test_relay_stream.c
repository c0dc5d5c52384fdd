/*
 * Unit tests for relay_stream: a held stream and its window when the
 * destination's settings change (relay_stream_apply_settings), with no loop
 * running and no database: a relay's in-memory core, one destination, one
 * stream with events in its window.
 *
 * Two bugs found by reading the relay are pinned here:
 *  - a window rebuilt for new settings was freed before its replacement was
 *    allocated; when that failed the stream lived on with no ring, and the
 *    next event read into it was written through a NULL pointer;
 *  - settings that changed while the stream's completion was in flight were
 *    marked applied without being applied, so the window kept the old ones.
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
#include "relay_internal.h"

struct fixture {
    uv_loop_t loop;
    struct relay r;
    struct dest d;
    struct relay_dest *rd;
};

/* A relay holding inventory's stream at position 100, with events 101..103
 * read. */
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
    assert_non_null(s);
    assert_int_equal(s->win.cap, 8); /* twice max_in_flight */
    for (int64_t p = 101; p <= 103; p++)
        assert_non_null(relay_window_push(&s->win, p, 7000 + p, false, NULL));
    s->read_pos = 103;
}

static void teardown(struct fixture *f)
{
    relay_core_free(&f->r);
    assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* The operator raised max_in_flight and set on_dead = 'block'. */
static void change_settings(struct fixture *f)
{
    f->d.set.max_in_flight = 8;
    f->d.set.dead_blocks = true;
    f->d.generation++;
}

/* A stream whose window follows the new settings, read again from its cursor.
 */
static void assert_rebuilt(struct fixture *f)
{
    struct stream *s = f->rd->stream;
    assert_non_null(s);
    assert_int_equal(s->dest_gen, f->d.generation);
    assert_int_equal(s->win.cap, 16);
    assert_true(s->win.dead_blocks);
    assert_int_equal(relay_window_len(&s->win), 0);
    assert_int_equal(s->read_pos, 100);
    assert_non_null(relay_window_push(&s->win, 101, 7101, false, NULL));
}

static void unchanged_settings_keep_the_window(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    struct stream *s = f.rd->stream;
    uint64_t gen = s->gen;
    assert_int_equal(relay_stream_apply_settings(&f.r, s), 0);
    assert_ptr_equal(f.rd->stream, s);
    assert_int_equal(s->gen, gen);
    assert_int_equal(relay_window_len(&s->win), 3);
    assert_int_equal(s->read_pos, 103);
    teardown(&f);
}

static void changed_settings_make_a_new_window(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    uint64_t gen = f.rd->stream->gen;
    change_settings(&f);
    assert_int_equal(relay_stream_apply_settings(&f.r, f.rd->stream), 0);
    assert_rebuilt(&f);
    /* jobs of the old window answer to a generation that is gone */
    assert_true(f.rd->stream->gen != gen);
    teardown(&f);
}

/*
 * Out of memory making the new window: the stream is dropped (it is taken
 * again from the database's cursor at a later acquire), never left without
 * a window. Every allocation of the call fails in turn.
 */
static void no_memory_for_the_new_window_drops_the_stream(void **state)
{
    (void)state;
    unsigned failing = 0;
    for (unsigned long n = 1;; n++) {
        struct fixture f;
        setup(&f);
        change_settings(&f);
        alloc_fail_at(n);
        int rc = relay_stream_apply_settings(&f.r, f.rd->stream);
        bool hit = alloc_fail_triggered();
        alloc_fail_at(0);
        if (hit) {
            failing++;
            assert_int_equal(rc, -ENOMEM);
            assert_null(f.rd->stream);
            assert_true(list_empty(&f.r.streams));
            /* and it can be taken again, with the new settings */
            assert_int_equal(relay_stream_new(&f.r, f.rd, 100, UINT64_MAX), 0);
            assert_rebuilt(&f);
        } else {
            assert_int_equal(rc, 0);
            assert_rebuilt(&f);
        }
        teardown(&f);
        if (!hit)
            break;
    }
    assert_true(failing > 0);
}

/*
 * The window's leavers are being written when the settings change: the new
 * window waits for the completion, and the next look applies it.
 */
static void settings_changed_during_a_completion_apply_after_it(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f);
    struct stream *s = f.rd->stream;
    relay_stream_set_state(s, STREAM_COMPLETING);
    change_settings(&f);
    assert_int_equal(relay_stream_apply_settings(&f.r, s), 0);
    assert_ptr_equal(f.rd->stream, s);
    assert_int_equal(s->win.cap, 8);
    assert_int_equal(relay_window_len(&s->win), 3);
    /* the completion is back */
    relay_stream_set_state(s, STREAM_IDLE);
    assert_int_equal(relay_stream_apply_settings(&f.r, s), 0);
    assert_rebuilt(&f);
    teardown(&f);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unchanged_settings_keep_the_window),
        cmocka_unit_test(changed_settings_make_a_new_window),
        cmocka_unit_test(no_memory_for_the_new_window_drops_the_stream),
        cmocka_unit_test(settings_changed_during_a_completion_apply_after_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
