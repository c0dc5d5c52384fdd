/*
 * Unit tests for json_text: its text is json_dumps(JSON_COMPACT |
 * JSON_ENCODE_ANY)'s, byte for byte, on the fixtures, on the canonical
 * orders normalize makes of them, on every byte a string can hold, on
 * reals and integers at their edges and on random documents; it fails where
 * json_dumps fails (a string that is not UTF-8). And ingest_element, which
 * writes a webhook's ingest_batch() element with it, against the json_pack
 * it replaced, also with every allocation failing in turn.
 */
#include <errno.h>
#include <stdbool.h>
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "ingest.h"
#include "json_text.h"
#include "source_kind.h"
#include "test_fixture.h"

/* json_dumps(json) and json_text_append(json) agree: the same text, or both fail. */
static void same_as_jansson(const json_t *json)
{
    char *want = json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY);
    struct buf b;
    int rc;

    buf_init(&b, (size_t)1 << 30);
    rc = json_text_append(&b, json);
    if (want == NULL) {
        assert_int_equal(rc, -EINVAL);
    } else if (rc == 0) {
        if (strcmp(want, b.data) != 0)
            fail_msg("json_dumps: %s\njson_text: %s", want, b.data);
    }
    if (want != NULL && rc != 0)
        fail_msg("json_dumps: %s\njson_text: %d", want, rc);
    free(want);
    buf_free(&b);
}

static const struct {
    const char *kind, *fixture, *topic;
} fixtures[] = {
    {"shopify", "shopify_order_create.json", "orders/create"},
    {"shopify", "shopify_order_small.json", "orders/create"},
    {"shopify", "shopify_refund_create.json", "refunds/create"},
    {"standard", "standard_order_created.json", "order.created"},
    {"standard", "standard_thin.json", "order.created"},
    {"stripe", "stripe_charge_refunded.json", "charge.refunded"},
    {"stripe", "stripe_checkout_session_completed.json", "checkout.session.completed"},
    {"woocommerce", "woocommerce_order_cancelled.json", "order.updated"},
    {"woocommerce", "woocommerce_order_created.json", "order.created"},
};

static void fixtures_and_their_orders(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
        const struct source_kind *k = NULL;
        json_error_t jerr;
        size_t len;
        char *body = read_fixture(fixtures[i].fixture, &len);
        json_t *payload = json_loadb(body, len, 0, &jerr);
        json_t *order = NULL;
        char err[256] = "";

        assert_non_null(payload);
        same_as_jansson(payload);
        assert_int_equal(source_kind_parse(fixtures[i].kind, &k), 0);
        /* a fixture whose topic differs only yields no order: the payload was still compared */
        if (k->normalize("src", fixtures[i].topic, payload, 1767323047, &order, err, sizeof(err)) ==
            0) {
            same_as_jansson(order);
            json_decref(order);
        }
        json_decref(payload);
        free(body);
    }
}

static void every_byte_of_a_string(void **state)
{
    (void)state;
    /* each ASCII byte alone, in a key and in a value, and within text */
    for (int c = 0; c < 0x80; c++) {
        char s[8] = {'a', (char)c, 'b'};
        json_t *v = json_stringn_nocheck(s + 1, 1);
        json_t *w = json_stringn_nocheck(s, 3);
        json_t *o = json_object();

        assert_int_equal(json_object_setn_new_nocheck(o, s, 3, json_incref(v)), 0);
        same_as_jansson(v);
        same_as_jansson(w);
        same_as_jansson(o);
        json_decref(v);
        json_decref(w);
        json_decref(o);
    }
    /* UTF-8 at every length, and invalid sequences (json_dumps refuses those) */
    static const char *const texts[] = {"caf\xc3\xa9",
                                        "\xe2\x82\xac 12",
                                        "\xf0\x9f\x98\x80!",
                                        "\xef\xbf\xbf",
                                        "\xf4\x8f\xbf\xbf",
                                        "\xc2\x80",
                                        "\xe0\xa0\x80",
                                        "\xf0\x90\x80\x80",
                                        "\xc0\xaf",
                                        "\xc1\xbf",
                                        "\x80",
                                        "\xbf",
                                        "\xc3",
                                        "\xe2\x82",
                                        "\xf0\x9f\x98",
                                        "\xe0\x80\xaf",
                                        "\xed\xa0\x80",
                                        "\xed\xbf\xbf",
                                        "\xf0\x80\x80\xaf",
                                        "\xf4\x90\x80\x80",
                                        "\xf5\x80\x80\x80",
                                        "\xff",
                                        "\xc3\x28",
                                        "\xe2\x28\xa1",
                                        "ok\xc3\xa9\"\\\n\x01",
                                        "\xc3\xa9\xc3",
                                        "/slash/",
                                        "\x7f"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        json_t *v = json_stringn_nocheck(texts[i], strlen(texts[i]));
        json_t *o = json_object();

        assert_int_equal(json_object_setn_new_nocheck(o, texts[i], strlen(texts[i]), json_null()),
                         0);
        same_as_jansson(v);
        /*
         * A key that is not UTF-8 (only json_object_set*_nocheck makes one)
         * is where the two differ: json_dumps ignores the failure and goes
         * on with text that is not JSON; json_text refuses.
         */
        json_t *checked = json_stringn(texts[i], strlen(texts[i])); /* NULL: not UTF-8 */
        if (checked != NULL) {
            same_as_jansson(o);
        } else {
            struct buf b;
            buf_init(&b, 1024);
            assert_int_equal(json_text_append(&b, o), -EINVAL);
            buf_free(&b);
        }
        json_decref(checked);
        json_decref(v);
        json_decref(o);
    }
    /* a NUL inside a string */
    json_t *nul = json_stringn("a\0b", 3);
    same_as_jansson(nul);
    json_decref(nul);
}

static void numbers_at_their_edges(void **state)
{
    static const double reals[] = {0.0,      -0.0,
                                   1.0,      -1.0,
                                   0.1,      0.5,
                                   1e300,    -1e300,
                                   1e-300,   5e-324,
                                   1e21,     1e22,
                                   1e16,     1e17,
                                   1.5e22,   123456789.125,
                                   3.14159,  2.5e-5,
                                   1e-5,     1e-4,
                                   100.0,    1e15,
                                   DBL_MAX,  DBL_MIN,
                                   -DBL_MAX, 9007199254740993.0};
    static const json_int_t ints[] = {0, 1, -1, 9, 10, -10, INT64_MAX, INT64_MIN, 4294967296LL};
    uint64_t x = 88172645463325252ULL;

    (void)state;
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        json_t *v = json_real(reals[i]);
        same_as_jansson(v);
        json_decref(v);
    }
    /* random bit patterns, the finite ones */
    for (int i = 0; i < 20000; i++) {
        double d;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(&d, &x, sizeof(d));
        if (!isfinite(d))
            continue;
        json_t *v = json_real(d);
        same_as_jansson(v);
        json_decref(v);
    }
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        json_t *v = json_integer(ints[i]);
        same_as_jansson(v);
        json_decref(v);
    }
}

static void containers_keep_insertion_order(void **state)
{
    json_t *o = json_loads("{\"z\":[],\"a\":{},\"m\":[[],{},[1,[2,{}]]],\"b\":null,\"t\":true,"
                           "\"f\":false}",
                           0, NULL);

    (void)state;
    assert_non_null(o);
    same_as_jansson(o);
    /* a key deleted and set again goes last, in both */
    assert_int_equal(json_object_del(o, "z"), 0);
    assert_int_equal(json_object_set_new(o, "z", json_string("again")), 0);
    same_as_jansson(o);
    json_decref(o);
}

static void too_deep_is_refused(void **state)
{
    json_t *root = json_array(), *cur = root;
    struct buf b;

    (void)state;
    for (int i = 0; i < JSON_TEXT_MAX_DEPTH; i++) {
        json_t *next = json_array();
        assert_int_equal(json_array_append_new(cur, next), 0);
        cur = next;
    }
    buf_init(&b, (size_t)1 << 30);
    assert_int_equal(json_text_append(&b, root), -ELOOP);
    buf_free(&b);
    assert_int_equal(json_text_append(&b, NULL), -EINVAL);
    buf_free(&b);
    json_decref(root);
}

/* ---------------------------------------------------------- random documents */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void random_text(char *s, size_t *len)
{
    static const char *const pieces[] = {"a",
                                         "Z",
                                         "0",
                                         " ",
                                         "\"",
                                         "\\",
                                         "/",
                                         "\n",
                                         "\t",
                                         "\x01",
                                         "\x1f",
                                         "\x7f",
                                         "\xc3\xa9",
                                         "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80",
                                         "{",
                                         "}",
                                         ":"};
    size_t n = rnd(12), k = 0;

    for (size_t i = 0; i < n; i++) {
        const char *p = pieces[rnd(sizeof(pieces) / sizeof(pieces[0]))];
        memcpy(s + k, p, strlen(p));
        k += strlen(p);
    }
    *len = k;
}

static json_t *random_value(int depth)
{
    char s[64];
    size_t len;
    unsigned what = depth > 4 ? rnd(6) : rnd(8);

    switch (what) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(rnd(2));
    case 2:
        return json_integer((json_int_t)rng - (json_int_t)rnd(1000));
    case 3:
        return json_real((double)(int)rnd(100000) / (double)(1 + rnd(1000)));
    case 4:
    case 5:
        random_text(s, &len);
        return json_stringn(s, len);
    case 6: {
        json_t *a = json_array();
        for (unsigned i = rnd(5); i > 0; i--)
            json_array_append_new(a, random_value(depth + 1));
        return a;
    }
    default: {
        json_t *o = json_object();
        for (unsigned i = rnd(6); i > 0; i--) {
            random_text(s, &len);
            json_object_setn_new(o, s, len, random_value(depth + 1));
        }
        return o;
    }
    }
}

static void random_documents(void **state)
{
    (void)state;
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_value(0);
        assert_non_null(v);
        same_as_jansson(v);
        json_decref(v);
    }
}

/* -------------------------------------------------------- ingest_element */

/* What ingest.c built before: json_pack, then json_dumps compact. */
static char *element_by_jansson(const char *source_id, const struct inbound_event *ev)
{
    json_t *o = json_pack("{s:s,s:s,s:s,s:s?,s:O?,s:s?}", "s", source_id, "k", ev->dedupe_key, "t",
                          ev->topic, "e", ev->event_type, "o", ev->order, "x", ev->order_ref);
    char *text;

    assert_non_null(o);
    if (ev->trace_id[0] != '\0')
        assert_int_equal(json_object_set_new(o, "tr", json_string(ev->trace_id)), 0);
    text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

static void an_element_as_json_pack_wrote_it(void **state)
{
    size_t len;
    char *body = read_fixture("shopify_order_create.json", &len);
    json_error_t jerr;
    json_t *payload = json_loadb(body, len, 0, &jerr);
    const struct source_kind *k = NULL;
    json_t *order = NULL;
    char err[256];

    (void)state;
    assert_int_equal(source_kind_parse("shopify", &k), 0);
    assert_int_equal(
        k->normalize("shop \"1\"", "orders/create", payload, 1767323047, &order, err, sizeof(err)),
        0);
    for (int variant = 0; variant < 8; variant++) {
        struct inbound_event ev;
        char *want, *got;

        memset(&ev, 0, sizeof(ev));
        ev.dedupe_key = (char *)"b1c2-\\key";
        ev.topic = (char *)"orders/create";
        ev.event_type = variant & 1 ? NULL : "order.created";
        ev.order = variant & 2 ? NULL : order;
        ev.order_ref = variant & 4 ? (char *)"4501" : NULL;
        if (variant & 1)
            snprintf(ev.trace_id, sizeof(ev.trace_id), "%s", "4bf92f3577b34da6a3ce929d0e0e4736");
        want = element_by_jansson("shop \"1\"", &ev);
        got = ingest_element("shop \"1\"", &ev);
        assert_non_null(got);
        assert_string_equal(got, want);
        free(want);
        free(got);
    }
    json_decref(order);
    json_decref(payload);
    free(body);
}

struct element_run {
    struct inbound_event ev;
    const char *want;
};

static int element_run(void *ctx)
{
    struct element_run *r = ctx;
    char *got = ingest_element("shopify", &r->ev);
    bool same;

    if (got == NULL)
        return -ENOMEM;
    same = strcmp(got, r->want) == 0;
    free(got);
    assert_true(same); /* never a text with something missing */
    return 0;
}

static void an_element_under_allocation_failures(void **state)
{
    size_t len;
    char *body = read_fixture("shopify_order_create.json", &len);
    json_error_t jerr;
    json_t *payload = json_loadb(body, len, 0, &jerr);
    const struct source_kind *k = NULL;
    struct element_run r;
    char *want;

    (void)state;
    memset(&r, 0, sizeof(r));
    assert_int_equal(source_kind_parse("shopify", &k), 0);
    assert_int_equal(k->normalize("shopify", "orders/create", payload, 1767323047, &r.ev.order,
                                  r.ev.ignored_detail, sizeof(r.ev.ignored_detail)),
                     0);
    r.ev.dedupe_key = (char *)"b1c2";
    r.ev.topic = (char *)"orders/create";
    r.ev.event_type = "order.created";
    want = element_by_jansson("shopify", &r.ev);
    r.want = want;
    /* absorbed: the final shrink to the exact size may fail, and the text is kept as it is */
    assert_true(alloc_fail_loop("ingest_element", element_run, &r, true) > 0);
    free(want);
    json_decref(r.ev.order);
    json_decref(payload);
    free(body);
}

static void an_element_with_a_string_not_utf8_is_refused(void **state)
{
    struct inbound_event ev;

    (void)state;
    memset(&ev, 0, sizeof(ev));
    ev.dedupe_key = (char *)"k";
    ev.topic = (char *)"bad \xc3";
    assert_null(ingest_element("shopify", &ev));
    ev.topic = (char *)"good";
    assert_null(ingest_element(NULL, &ev));
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixtures_and_their_orders),
        cmocka_unit_test(every_byte_of_a_string),
        cmocka_unit_test(numbers_at_their_edges),
        cmocka_unit_test(containers_keep_insertion_order),
        cmocka_unit_test(too_deep_is_refused),
        cmocka_unit_test(random_documents),
        cmocka_unit_test(an_element_as_json_pack_wrote_it),
        cmocka_unit_test(an_element_under_allocation_failures),
        cmocka_unit_test(an_element_with_a_string_not_utf8_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
