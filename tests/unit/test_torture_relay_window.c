/*
 * Allocation-failure torture of relay_window (alloc_fail.h): a stream's life
 * (init, push, next, settle, advance, seal, untaint, clear, free) with the 1st,
 * 2nd, ... Nth allocation failing until it completes. The window allocates
 * its ring and its list of tainted orders; a ring it cannot get is an error
 * (-ENOMEM, the stream is not started), a taint list it cannot grow must
 * still keep the order rule, since nothing reports that failure: an event
 * of an order that left the window with a row is never sent before that row
 * committed, even when it was read after the failure. ASan adds: no crash,
 * no leak.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "relay_window.h"

/* More orders than the taint list's first allocation holds (16), so that it grows. */
#define ORDERS 20

static void count(struct wev *e, void *ctx)
{
    (void)e;
    (*(unsigned *)ctx)++;
}

static int stream(void *ctx)
{
    struct relay_window w;
    unsigned emitted = 0, cleared = 0;
    int64_t pos = 0;
    struct wev *e;

    (void)ctx;
    if (relay_window_init(&w, 2 * ORDERS, true) < 0)
        return -ENOMEM;
    /* one event per order, all sent, all failed: each leaves with a retry row */
    for (int64_t o = 1; o <= ORDERS; o++)
        assert_non_null(relay_window_push(&w, ++pos, o, false, NULL));
    while ((e = relay_window_next(&w, 0)) != NULL)
        relay_window_settle(&w, e, WEV_FAILED);
    assert_int_equal(relay_window_advance(&w, 0, 60000, count, &emitted), ORDERS);

    /*
     * Reads that were on their way before those rows committed bring later
     * events of the same orders: none may go until the rows have committed.
     */
    for (int64_t o = 1; o <= ORDERS; o++)
        assert_non_null(relay_window_push(&w, ++pos, o, false, NULL));
    e = relay_window_next(&w, 0);
    if (e != NULL)
        fail_msg("event %lld of order %lld went before the row of its order committed",
                 (long long)e->position, (long long)e->order_id);
    uint64_t first = relay_window_seal(&w); /* the retry rows' statement */
    assert_int_equal(relay_window_advance(&w, 0, 60000, count, &emitted), ORDERS);
    uint64_t second = relay_window_seal(&w); /* the blocked rows' statement */

    /*
     * The first statement committed, the second not yet: a read brings more
     * events of the same orders, whose blocked rows are not committed: none
     * may go, whatever the taint list could or could not remember.
     */
    relay_window_untaint(&w, first);
    for (int64_t o = 1; o <= ORDERS; o++)
        assert_non_null(relay_window_push(&w, ++pos, o, false, NULL));
    e = relay_window_next(&w, 0);
    if (e != NULL)
        fail_msg("event %lld of order %lld went before the second statement committed",
                 (long long)e->position, (long long)e->order_id);
    assert_int_equal(relay_window_advance(&w, 0, 60000, count, &emitted), ORDERS);
    relay_window_untaint(&w, second);
    relay_window_untaint(&w, relay_window_seal(&w));

    /* an order with nothing open goes at once, and is settled and passed */
    assert_non_null(relay_window_push(&w, ++pos, 99, false, NULL));
    e = relay_window_next(&w, 1);
    assert_non_null(e);
    assert_int_equal(e->order_id, 99);
    relay_window_settle(&w, e, WEV_OK);
    assert_int_equal(relay_window_advance(&w, 2, 60000, count, &emitted), 1);

    /* what is left when a stream stops is handed back, and the memory freed */
    assert_non_null(relay_window_push(&w, ++pos, 100, false, NULL));
    assert_non_null(relay_window_push(&w, ++pos, 101, true, NULL));
    relay_window_clear(&w, count, &cleared);
    assert_int_equal(cleared, 2);
    assert_int_equal(relay_window_len(&w), 0);
    relay_window_free(&w);
    return 0;
}

static void a_stream_under_allocation_failures(void **state)
{
    (void)state;
    /* may absorb: a taint list that cannot grow degrades to holding more, never to an error */
    assert_true(alloc_fail_loop("relay_window", stream, NULL, true) >= 2);
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_stream_under_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
