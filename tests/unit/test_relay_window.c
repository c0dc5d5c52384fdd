/*
 * Unit tests for relay_window: ordering per (order, destination) while many
 * events are in flight, and how the cursor passes events that are not
 * delivered yet.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "relay_window.h"

/* What window_advance emitted: "<position><state letter> ..." */
struct out {
    char text[512];
};

static void emit(struct wev *e, void *ctx)
{
    struct out *o = ctx;
    static const char letters[] = {'W', 'I', 'o', 'f', 'd', 'b', 'l'};
    size_t n = strlen(o->text);
    snprintf(o->text + n, sizeof(o->text) - n, "%s%lld%c", n ? " " : "", (long long)e->position,
             letters[e->state]);
}

static struct relay_window window(unsigned cap, bool dead_blocks)
{
    struct relay_window w;
    assert_int_equal(relay_window_init(&w, cap, dead_blocks), 0);
    return w;
}

static void independent_orders_all_go_at_once(void **state)
{
    struct relay_window w = window(8, true);
    for (int i = 1; i <= 4; i++)
        assert_non_null(relay_window_push(&w, i, 100 + i, false, NULL));
    for (int i = 1; i <= 4; i++) {
        struct wev *e = relay_window_next(&w, 0);
        assert_non_null(e);
        assert_int_equal(e->position, i);
    }
    assert_null(relay_window_next(&w, 0));
    relay_window_free(&w);
}

static void one_order_goes_one_event_at_a_time(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 1, 7, false, NULL);
    relay_window_push(&w, 2, 8, false, NULL);
    relay_window_push(&w, 3, 7, false, NULL);
    struct wev *a = relay_window_next(&w, 0);
    struct wev *b = relay_window_next(&w, 0);
    assert_int_equal(a->position, 1);
    assert_int_equal(b->position, 2);
    /* 3 is of order 7, whose event 1 is still in flight */
    assert_null(relay_window_next(&w, 0));
    relay_window_settle(&w, a, WEV_OK);
    struct wev *c = relay_window_next(&w, 0);
    assert_non_null(c);
    assert_int_equal(c->position, 3);
    relay_window_free(&w);
}

static void a_failure_blocks_the_rest_of_its_order_only(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 1, 7, false, NULL);
    relay_window_push(&w, 2, 8, false, NULL);
    relay_window_push(&w, 3, 7, false, NULL);
    relay_window_push(&w, 4, 8, false, NULL);
    struct wev *a = relay_window_next(&w, 0);
    struct wev *b = relay_window_next(&w, 0);
    relay_window_settle(&w, a, WEV_FAILED);
    relay_window_settle(&w, b, WEV_OK);
    struct wev *d = relay_window_next(&w, 0);
    assert_int_equal(d->position, 4); /* 3 was found blocked on the way */
    assert_int_equal(relay_window_find(&w, 3)->state, WEV_BLOCKED);
    relay_window_settle(&w, d, WEV_OK);
    struct out o = {""};
    assert_int_equal(relay_window_advance(&w, 0, 1000, emit, &o), 4);
    assert_string_equal(o.text, "1f 2o 3b 4o");
    relay_window_free(&w);
}

static void the_cursor_stops_at_a_young_request_in_flight(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 1, 1, false, NULL);
    relay_window_push(&w, 2, 2, false, NULL);
    struct wev *a = relay_window_next(&w, 100);
    struct wev *b = relay_window_next(&w, 100);
    relay_window_settle(&w, b, WEV_OK);
    struct out o = {""};
    assert_int_equal(relay_window_advance(&w, 500, 1000, emit, &o), 0);
    /* after lease_after_ms the request is handed over to a leased row */
    assert_int_equal(relay_window_advance(&w, 1100, 1000, emit, &o), 2);
    assert_string_equal(o.text, "1l 2o");
    (void)a;
    relay_window_free(&w);
}

static void a_leased_event_blocks_its_successors(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 1, 7, false, NULL);
    relay_window_push(&w, 2, 7, false, NULL);
    relay_window_next(&w, 0);
    struct out o = {""};
    assert_int_equal(relay_window_advance(&w, 5000, 1000, emit, &o), 2);
    assert_string_equal(o.text, "1l 2b");
    relay_window_free(&w);
}

static void held_by_the_database_means_blocked(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 5, 7, true, NULL);
    relay_window_push(&w, 6, 8, false, NULL);
    struct wev *e = relay_window_next(&w, 0);
    assert_int_equal(e->position, 6);
    relay_window_settle(&w, e, WEV_OK);
    struct out o = {""};
    relay_window_advance(&w, 0, 1000, emit, &o);
    assert_string_equal(o.text, "5b 6o");
    relay_window_free(&w);
}

static void a_waiting_head_that_may_go_stops_the_cursor(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 1, 7, false, NULL);
    struct out o = {""};
    assert_int_equal(relay_window_advance(&w, 0, 1000, emit, &o), 0);
    assert_int_equal(relay_window_len(&w), 1);
    relay_window_free(&w);
}

static void rows_written_taint_reads_already_on_their_way(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 1, 7, false, NULL);
    struct wev *a = relay_window_next(&w, 0);
    relay_window_settle(&w, a, WEV_FAILED);
    struct out o = {""};
    relay_window_advance(&w, 0, 1000, emit, &o);
    assert_string_equal(o.text, "1f");
    /* a read that left before the row was written says order 7 is free */
    relay_window_push(&w, 2, 7, false, NULL);
    relay_window_push(&w, 3, 9, false, NULL);
    struct wev *n = relay_window_next(&w, 0);
    assert_int_equal(n->position, 3);
    assert_int_equal(relay_window_find(&w, 2)->state, WEV_BLOCKED);
    relay_window_free(&w);
}

static void untaint_holds_what_was_read_before(void **state)
{
    struct relay_window w = window(8, true);
    relay_window_push(&w, 1, 7, false, NULL);
    relay_window_push(&w, 2, 9, false, NULL);
    struct wev *a = relay_window_next(&w, 0);
    relay_window_settle(&w, a, WEV_FAILED);
    struct out o = {""};
    relay_window_advance(&w, 0, 1000, emit, &o); /* 1 leaves; 2 may go: it stays */
    uint64_t batch = relay_window_seal(&w);
    relay_window_push(&w, 3, 7, false, NULL); /* read before the row committed */
    relay_window_untaint(&w, batch);
    assert_true(relay_window_find(&w, 3)->held);
    assert_false(relay_window_find(&w, 2)->held);
    relay_window_free(&w);
}

/*
 * The relay lifts a completion's taints once the read that was out when it
 * committed is back; by then the next completion may be on its way with rows
 * of other orders. Those orders stay tainted: a read that ran before that
 * second commit says they are free, and an event of theirs let go then
 * would overtake the failed one before it (an order.cancelled reaching a
 * destination before its order.created).
 */
static void untaint_lifts_only_the_batches_committed(void **state)
{
    struct relay_window w = window(16, true);
    struct out o = {""};
    relay_window_push(&w, 1, 7, false, NULL);
    struct wev *a = relay_window_next(&w, 0);
    relay_window_settle(&w, a, WEV_FAILED);
    relay_window_advance(&w, 0, 1000, emit, &o);
    uint64_t first = relay_window_seal(&w); /* statement 1: the row of 1 (order 7) */
    relay_window_push(&w, 2, 8, false, NULL);
    struct wev *b = relay_window_next(&w, 0);
    relay_window_settle(&w, b, WEV_FAILED);
    relay_window_advance(&w, 0, 1000, emit, &o);
    uint64_t second = relay_window_seal(&w); /* statement 2: the row of 2 (order 8) */
    assert_true(second > first);
    assert_string_equal(o.text, "1f 2f");

    /* statement 1 committed and the read that was out then is back */
    relay_window_untaint(&w, first);
    /* a read that ran after statement 1 committed, before statement 2 did: it
       sees the row of 1 but not the row of 2 */
    relay_window_push(&w, 3, 8, false, NULL);
    relay_window_push(&w, 4, 7, true, NULL);
    relay_window_push(&w, 5, 9, false, NULL);
    struct wev *n = relay_window_next(&w, 0);
    assert_int_equal(n->position, 5);
    assert_null(relay_window_next(&w, 0));
    assert_int_equal(relay_window_find(&w, 3)->state, WEV_BLOCKED); /* order 8: still tainted */
    assert_int_equal(relay_window_find(&w, 4)->state, WEV_BLOCKED);

    /* statement 2 committed too */
    relay_window_push(&w, 6, 8, false, NULL);
    relay_window_untaint(&w, second);
    assert_true(relay_window_find(&w, 6)->held);
    relay_window_free(&w);
}

/* An order with rows in two batches stays tainted until the later one is committed. */
static void an_order_in_two_batches_is_lifted_with_the_later(void **state)
{
    struct relay_window w = window(16, true);
    struct out o = {""};
    relay_window_push(&w, 1, 7, false, NULL);
    relay_window_settle(&w, relay_window_next(&w, 0), WEV_FAILED);
    relay_window_advance(&w, 0, 1000, emit, &o);
    uint64_t first = relay_window_seal(&w);
    relay_window_push(&w, 2, 7, true, NULL); /* the database saw the row of 1 */
    relay_window_advance(&w, 0, 1000, emit, &o);
    uint64_t second = relay_window_seal(&w);
    assert_string_equal(o.text, "1f 2b");
    relay_window_untaint(&w, first);
    relay_window_push(&w, 3, 7, false, NULL); /* read before statement 2 committed */
    assert_null(relay_window_next(&w, 0));
    assert_int_equal(relay_window_find(&w, 3)->state, WEV_BLOCKED);
    relay_window_untaint(&w, second);
    relay_window_free(&w);
}

static void a_dead_event_blocks_only_when_the_destination_says_so(void **state)
{
    for (int blocks = 0; blocks <= 1; blocks++) {
        struct relay_window w = window(8, blocks);
        relay_window_push(&w, 1, 7, false, NULL);
        relay_window_push(&w, 2, 7, false, NULL);
        struct wev *a = relay_window_next(&w, 0);
        relay_window_settle(&w, a, WEV_DEAD);
        struct wev *b = relay_window_next(&w, 0);
        if (blocks) {
            assert_null(b);
            assert_int_equal(relay_window_find(&w, 2)->state, WEV_BLOCKED);
        } else {
            assert_non_null(b);
            assert_int_equal(b->position, 2);
        }
        relay_window_free(&w);
    }
}

static void full_window_refuses_and_find_works_across_the_ring(void **state)
{
    struct relay_window w = window(3, true);
    struct out o = {""};
    for (int i = 1; i <= 9; i++) {
        if (relay_window_room(&w) == 0) {
            assert_null(relay_window_push(&w, 100, 1, false, NULL));
            struct wev *e;
            while ((e = relay_window_next(&w, 0)) != NULL)
                relay_window_settle(&w, e, WEV_OK);
            relay_window_advance(&w, 0, 1000, emit, &o);
        }
        assert_non_null(relay_window_push(&w, i * 10, i, false, NULL));
    }
    assert_non_null(relay_window_find(&w, 90));
    assert_null(relay_window_find(&w, 85));
    assert_int_equal(relay_window_at(&w, 0)->position, 70);
    relay_window_clear(&w, NULL, NULL);
    assert_int_equal(relay_window_len(&w), 0);
    relay_window_free(&w);
}

static void has_ready_tells_what_next_would_do_without_doing_it(void **state)
{
    struct relay_window w = window(8, true);
    assert_false(relay_window_has_ready(&w));
    relay_window_push(&w, 1, 10, false, NULL);
    relay_window_push(&w, 2, 10, false, NULL); /* waits behind 1 */
    relay_window_push(&w, 3, 11, true, NULL);  /* held: would be blocked */
    assert_true(relay_window_has_ready(&w));
    assert_int_equal(relay_window_at(&w, 0)->state, WEV_WAITING);
    assert_int_equal(relay_window_at(&w, 2)->state, WEV_WAITING); /* not marked on the way */
    struct wev *e = relay_window_next(&w, 0);
    assert_int_equal(e->position, 1);
    /* 2 waits for 1 in flight, 3 is held: nothing is ready */
    assert_false(relay_window_has_ready(&w));
    assert_null(relay_window_next(&w, 0));
    relay_window_settle(&w, e, WEV_OK);
    assert_true(relay_window_has_ready(&w));
    assert_int_equal(relay_window_next(&w, 0)->position, 2);
    relay_window_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(independent_orders_all_go_at_once),
        cmocka_unit_test(one_order_goes_one_event_at_a_time),
        cmocka_unit_test(a_failure_blocks_the_rest_of_its_order_only),
        cmocka_unit_test(the_cursor_stops_at_a_young_request_in_flight),
        cmocka_unit_test(a_leased_event_blocks_its_successors),
        cmocka_unit_test(held_by_the_database_means_blocked),
        cmocka_unit_test(a_waiting_head_that_may_go_stops_the_cursor),
        cmocka_unit_test(rows_written_taint_reads_already_on_their_way),
        cmocka_unit_test(untaint_holds_what_was_read_before),
        cmocka_unit_test(untaint_lifts_only_the_batches_committed),
        cmocka_unit_test(an_order_in_two_batches_is_lifted_with_the_later),
        cmocka_unit_test(a_dead_event_blocks_only_when_the_destination_says_so),
        cmocka_unit_test(full_window_refuses_and_find_works_across_the_ring),
        cmocka_unit_test(has_ready_tells_what_next_would_do_without_doing_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
