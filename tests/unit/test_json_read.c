/*
 * Unit tests for json_read, against json_loadb(JSON_DECODE_ANY |
 * JSON_REJECT_DUPLICATES) itself. The rule checked on every input: when
 * json_read gives a value, jansson gives the same one (the same text from
 * json_dumps, keys in the same order, integers and reals apart); when
 * jansson refuses a text, json_read is not sure (-EAGAIN) and never
 * answers. Inputs: the fixtures (which it must read itself, not hand on),
 * hand-written edge cases, random documents and tens of thousands of
 * mutations of the fixtures. And every allocation failing in turn gives
 * -ENOMEM, never a value and never "not sure".
 */
#include <errno.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "alloc_fail.h"
#include "json_read.h"

#define FLAGS (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)

static char *read_fixture(const char *name, size_t *len)
{
    char path[512];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%s/%s", FIXTURES_DIR, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static const char *const fixtures[] = {
    "shopify_order_create.json",   "shopify_order_small.json",
    "shopify_refund_create.json",  "standard_order_created.json",
    "standard_thin.json",          "stripe_charge_refunded.json",
    "stripe_checkout_session_completed.json", "woocommerce_order_cancelled.json",
    "woocommerce_order_created.json",
};

/* The rule above for one text; returns json_read's rc. */
static int agrees(const char *text, size_t len)
{
    json_error_t jerr;
    json_t *want = json_loadb(text, len, FLAGS, &jerr);
    int rc = 1;
    json_t *got = json_read(text, len, &rc);

    if (got == NULL) {
        assert_int_equal(rc, -EAGAIN);
    } else {
        char *a, *b;

        assert_int_equal(rc, 0);
        if (want == NULL)
            fail_msg("json_read read what jansson refuses (%s): %.*s", jerr.text, (int)len, text);
        assert_true(json_equal(want, got));
        a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        b = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_non_null(a);
        assert_non_null(b);
        if (strcmp(a, b) != 0)
            fail_msg("jansson: %s\njson_read: %s", a, b);
        free(a);
        free(b);
    }
    json_decref(want);
    json_decref(got);
    return rc;
}

static void the_fixtures_are_read_here(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
        size_t len;
        char *body = read_fixture(fixtures[i], &len);

        if (agrees(body, len) != 0)
            fail_msg("%s was handed on to jansson", fixtures[i]);
        free(body);
    }
}

static void read_here(const char *text)
{
    if (agrees(text, strlen(text)) != 0)
        fail_msg("handed on to jansson: %s", text);
}

static void handed_on(const char *text, size_t len)
{
    if (agrees(text, len) != -EAGAIN)
        fail_msg("read, but should be jansson's: %.*s", (int)len, text);
}

#define HANDED_ON(s) handed_on(s, sizeof(s) - 1)

static void edge_cases(void **state)
{
    (void)state;
    read_here("[]");
    read_here("{}");
    read_here(" \t\r\n[ 1 , -2 ,0, -0, 3.25 ,-0.0, 1e3, 2E-2, 1.5e+2 ]\n");
    read_here("\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"");
    read_here("\"\\u00e9\\u20AC\\u0041\\u007f\\u0080\\u07ff\\u0800\\uffff\"");
    read_here("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
    read_here("9223372036854775807");
    read_here("-9223372036854775808");
    read_here("1e-400"); /* underflows to 0: jansson takes it */
    read_here("true");
    read_here("false");
    read_here("null");
    read_here("{\"a\":{\"b\":[true,false,null,{}]},\"c\":\"\"}");
    read_here("{\"z\":1,\"a\":2,\"m\":3}");
    read_here("[\"k\",\"\\u00e9\\\"\"]");
    read_here("{\"\\u00e9\":1,\"\\n\":2}");

    HANDED_ON("");
    HANDED_ON("   ");
    HANDED_ON("01");
    HANDED_ON("-01");
    HANDED_ON("1.");
    HANDED_ON(".5");
    HANDED_ON("-");
    HANDED_ON("+1");
    HANDED_ON("1e");
    HANDED_ON("1e+");
    HANDED_ON("1.e5");
    HANDED_ON("[1,]");
    HANDED_ON("[,1]");
    HANDED_ON("[1 2]");
    HANDED_ON("{\"a\":1,}");
    HANDED_ON("{\"a\" 1}");
    HANDED_ON("{\"a\":}");
    HANDED_ON("{a:1}");
    HANDED_ON("{\"a\":1,\"a\":2}");
    HANDED_ON("{\"a\":1,\"\\u0061\":2}");
    HANDED_ON("truex");
    HANDED_ON("True");
    HANDED_ON("nul");
    HANDED_ON("tru");
    HANDED_ON("\"\\u0000\"");
    HANDED_ON("\"\\ud800\"");
    HANDED_ON("\"\\udc00\"");
    HANDED_ON("\"\\ud83d\\ude00\""); /* valid, a surrogate pair: jansson's to decode */
    HANDED_ON("\"\\u12\"");
    HANDED_ON("\"\\x\"");
    HANDED_ON("\"a\x01\"");
    HANDED_ON("\"a\tb\"");
    HANDED_ON("\"\xc3\"");
    HANDED_ON("\"\xc0\xaf\"");
    HANDED_ON("\"\xed\xa0\x80\"");
    HANDED_ON("\"\xf4\x90\x80\x80\"");
    HANDED_ON("\"abc");
    HANDED_ON("\"abc\\");
    HANDED_ON("\"abc\\\"");
    HANDED_ON("9223372036854775808");
    HANDED_ON("-9223372036854775809");
    HANDED_ON("99999999999999999999999");
    HANDED_ON("1e400");
    HANDED_ON("-1e400");
    HANDED_ON("0.00000000000000000000000000000000000000000000000000000000000000001");
    HANDED_ON("[1]x");
    HANDED_ON("[1] 2");
    HANDED_ON("1-2");
    HANDED_ON("[1-2]");
    HANDED_ON("\xef\xbb\xbf{}");
    HANDED_ON("[\"a\"\0]");
    HANDED_ON("\0");
    HANDED_ON("{}\0");
    HANDED_ON("[");
    HANDED_ON("{");
    HANDED_ON("]");
}

static void nesting_beyond_the_limit_is_handed_on(void **state)
{
    char text[2 * (JSON_READ_MAX_DEPTH + 1) + 1];

    (void)state;
    for (int depth = JSON_READ_MAX_DEPTH; depth <= JSON_READ_MAX_DEPTH + 1; depth++) {
        for (int i = 0; i < depth; i++) {
            text[i] = '[';
            text[2 * depth - 1 - i] = ']';
        }
        text[2 * depth] = '\0';
        assert_int_equal(agrees(text, (size_t)(2 * depth)),
                         depth <= JSON_READ_MAX_DEPTH ? 0 : -EAGAIN);
    }
}

/* ------------------------------------------------------------ mutations */

static uint64_t rng = 0x2545F4914F6CDD1DULL;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void mutations_of_the_fixtures(void **state)
{
    static const char interesting[] = "\"\\{}[],:0123456789-+.eEtfnu \t\n\x01\x7f\x80\xc3\xa9\xff";
    long read = 0, handed = 0;

    (void)state;
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        size_t len;
        char *body = read_fixture(fixtures[f], &len);
        char *m = malloc(len + 16);

        assert_non_null(m);
        for (int i = 0; i < 4000; i++) {
            size_t n = len, at;

            memcpy(m, body, len);
            for (int k = 1 + (int)rnd(3); k > 0; k--) {
                at = rnd((unsigned)n);
                switch (rnd(3)) {
                case 0: /* replace */
                    m[at] = interesting[rnd(sizeof(interesting) - 1)];
                    break;
                case 1: /* delete */
                    memmove(m + at, m + at + 1, n - at - 1);
                    n--;
                    break;
                default: /* insert */
                    memmove(m + at + 1, m + at, n - at);
                    m[at] = interesting[rnd(sizeof(interesting) - 1)];
                    n++;
                    break;
                }
            }
            if (agrees(m, n) == 0)
                read++;
            else
                handed++;
        }
        free(m);
        free(body);
    }
    /* both ways were taken many times */
    assert_true(read > 1000);
    assert_true(handed > 1000);
}

/* ------------------------------------------------- allocation failures */

struct run {
    const char *text;
    size_t len;
    json_t *want; /* compared without allocating (the key order is checked above) */
};

static int read_run(void *ctx)
{
    struct run *r = ctx;
    int rc = 1;
    json_t *got = json_read(r->text, r->len, &rc);
    bool same;

    if (got == NULL) {
        assert_int_equal(rc, -ENOMEM);
        return rc;
    }
    same = json_equal(got, r->want);
    json_decref(got);
    assert_true(same);
    return 0;
}

static void every_allocation_failing_is_out_of_memory(void **state)
{
    (void)state;
    for (size_t f = 0; f < sizeof(fixtures) / sizeof(fixtures[0]); f++) {
        struct run r;
        json_error_t jerr;
        char *body = read_fixture(fixtures[f], &r.len);
        json_t *want = json_loadb(body, r.len, FLAGS, &jerr);

        assert_non_null(want);
        r.text = body;
        r.want = want;
        assert_true(alloc_fail_loop(fixtures[f], read_run, &r, false) > 0);
        json_decref(want);
        free(body);
    }
    /* a string with escapes longer than the reader's own buffers takes an allocation too */
    {
        char text[1300];
        struct run r;
        size_t n = 0;

        text[n++] = '[';
        text[n++] = '"';
        for (int i = 0; i < 300; i++) {
            memcpy(text + n, "ab\\n", 4);
            n += 4;
        }
        text[n++] = '"';
        text[n++] = ']';
        r.text = text;
        r.len = n;
        json_t *want = json_loadb(text, n, FLAGS, NULL);
        assert_non_null(want);
        r.want = want;
        assert_true(alloc_fail_loop("escaped string", read_run, &r, false) > 0);
        json_decref(want);
    }
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(the_fixtures_are_read_here),
        cmocka_unit_test(edge_cases),
        cmocka_unit_test(nesting_beyond_the_limit_is_handed_on),
        cmocka_unit_test(mutations_of_the_fixtures),
        cmocka_unit_test(every_allocation_failing_is_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
