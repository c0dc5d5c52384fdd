/*
 * Unit tests for the table of source kinds (source_kind.c): lookup by the
 * name stored in sources.kind goes through it, and every kind in it is
 * complete, so that a platform added as one file and one table line cannot
 * leave inbound or the poller with a hook missing or a rule that names an
 * event the relay does not know.
 */
#include <ctype.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "source_kind.h"

static void lookup_by_name(void **state)
{
    const struct source_kind *k = NULL;

    (void)state;
    assert_int_equal(source_kind_parse("woocommerce", &k), 0);
    assert_string_equal(k->name, "woocommerce");
    assert_int_equal(source_kind_parse("standard", &k), 0);
    assert_string_equal(k->name, "standard");
    /* sources.kind is compared exactly: a near miss is no kind, and leaves *out alone */
    assert_int_equal(source_kind_parse("Shopify", &k), -EINVAL);
    assert_int_equal(source_kind_parse("", &k), -EINVAL);
    assert_int_equal(source_kind_parse(NULL, &k), -EINVAL);
    assert_string_equal(k->name, "standard");
}

static bool is_event_type(const char *s)
{
    static const char *const events[] = {"order.created",   "order.updated",  "order.paid",
                                         "order.cancelled", "order.refunded", "order.fulfilled"};

    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        if (s != NULL && strcmp(s, events[i]) == 0)
            return true;
    }
    return false;
}

/* The canonical fields a rule may claim a state of (see normalize_internal.h). */
static bool is_state_field(const char *s)
{
    return strcmp(s, "status") == 0 || strcmp(s, "financial_status") == 0 ||
           strcmp(s, "fulfillment_status") == 0;
}

static void every_kind_is_complete(void **state)
{
    (void)state;
    for (size_t i = 0; source_kinds[i] != NULL; i++) {
        const struct source_kind *k = source_kinds[i], *found = NULL;
        size_t n_rules = 0;

        /* a name sources.kind can hold, found by lookup as itself, once in the table */
        assert_non_null(k->name);
        assert_true(k->name[0] != '\0');
        for (const char *c = k->name; *c != '\0'; c++)
            assert_true(islower((unsigned char)*c));
        assert_int_equal(source_kind_parse(k->name, &found), 0);
        assert_ptr_equal(found, k);

        /* the hooks inbound calls on every request */
        assert_non_null(k->verify);
        assert_non_null(k->topic);
        assert_non_null(k->dedupe_key);
        assert_non_null(k->normalize);
        assert_non_null(k->topics);

        /* topic rules: unique topics, known events, claims on state fields only */
        for (const struct source_topic *r = k->topics; r->topic != NULL; r++, n_rules++) {
            assert_true(r->topic[0] != '\0');
            assert_true(is_event_type(r->event_type));
            assert_true((r->field == NULL) == (r->value == NULL));
            if (r->field != NULL)
                assert_true(is_state_field(r->field));
            for (const struct source_topic *q = k->topics; q != r; q++)
                assert_string_not_equal(q->topic, r->topic);
        }
        assert_true(n_rules > 0);
    }
}

/* The poller polls exactly the kinds that have a poll hook: Stripe has no orders list. */
static void pollable_kinds(void **state)
{
    const struct source_kind *k = NULL;

    (void)state;
    assert_int_equal(source_kind_parse("stripe", &k), 0);
    assert_null(k->poll_order);
    assert_int_equal(source_kind_parse("shopify", &k), 0);
    assert_non_null(k->poll_order);
    assert_int_equal(source_kind_parse("woocommerce", &k), 0);
    assert_non_null(k->poll_order);
    assert_int_equal(source_kind_parse("standard", &k), 0);
    assert_non_null(k->poll_order);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lookup_by_name),
        cmocka_unit_test(every_kind_is_complete),
        cmocka_unit_test(pollable_kinds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
