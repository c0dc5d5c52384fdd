/*
 * Unit tests for json_arena: blocks are reused window after window; a value
 * that outlives its window stays intact and holds its block aside until it
 * is freed; values made outside a window, and pieces too large for a block,
 * go to the allocator before it; a document larger than a block spans
 * several. Under AddressSanitizer a freed piece is poisoned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "json_arena.h"
#include "test_fixture.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

static json_t *load(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &err);

    assert_non_null(j);
    return j;
}

static struct json_arena_stats stats(void)
{
    struct json_arena_stats s;

    json_arena_stats(&s);
    return s;
}

static void test_blocks_are_reused_window_after_window(void **state)
{
    (void)state;
    size_t fixture_len;
    char *fixture = read_fixture("shopify_order_create.json", &fixture_len);
    json_t *outside = load(fixture);

    for (int i = 0; i < 200; i++) {
        json_arena_begin();
        json_t *doc = load(fixture);
        assert_true(json_equal(doc, outside));
        assert_true(stats().live > 100); /* the fixture's values came from the arena */
        json_decref(doc);
        json_arena_end();
        struct json_arena_stats s = stats();
        assert_int_equal(s.live, 0);
        assert_int_equal(s.set_aside, 0);
        assert_in_range(s.blocks, 1, 2);
    }
    json_decref(outside);
    free(fixture);
}

static void test_a_value_that_outlives_its_window_holds_its_block(void **state)
{
    (void)state;
    size_t fixture_len;
    char *fixture = read_fixture("shopify_order_create.json", &fixture_len);
    json_t *want = load(fixture);

    json_arena_begin();
    json_t *kept = load(fixture);
    json_arena_end();
    assert_true(stats().set_aside >= 1); /* one block, or more under the sanitizer's red zones */
    size_t live = stats().live;
    assert_true(live > 100);

    /* other windows come and go; the kept value's block is not reused under it */
    for (int i = 0; i < 20; i++) {
        json_arena_begin();
        json_t *doc = load(fixture);
        json_object_set_new(doc, "note", json_string("another webhook"));
        json_decref(doc);
        json_arena_end();
    }
    assert_int_equal(stats().live, live);
    assert_true(json_equal(kept, want));

    /* it can be changed outside a window (those pieces are the heap's) */
    json_object_set_new(kept, "after", json_string("the window"));
    assert_string_equal(json_string_value(json_object_get(kept, "after")), "the window");

    json_decref(kept);
    struct json_arena_stats s = stats();
    assert_int_equal(s.live, 0);
    assert_int_equal(s.set_aside, 0);
    assert_in_range(s.blocks, 1, 2);
    json_decref(want);
    free(fixture);
}

static void test_values_from_outside_are_freed_inside_and_large_pieces_use_the_heap(void **state)
{
    (void)state;
    json_t *outside = load("{\"a\": [1, 2, 3], \"b\": \"made before the window\"}");
    size_t big_len = 100 * 1024;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    memset(big, 'x', big_len);
    big[big_len] = '\0';

    json_arena_begin();
    json_decref(outside); /* the heap's pieces, freed by the heap */
    json_t *s = json_string(big);
    assert_non_null(s);
    assert_int_equal(json_string_length(s), big_len);
    size_t live = stats().live;
    json_decref(s);
    assert_true(stats().live < live); /* the json_t was the arena's, its text the heap's */
    json_arena_end();
    assert_int_equal(stats().live, 0);
    free(big);
}

static void test_a_document_larger_than_a_block_spans_several(void **state)
{
    (void)state;
    json_t *want = json_array();

    for (int i = 0; i < 20000; i++)
        json_array_append_new(want, json_pack("{s:i,s:s}", "n", i, "sku", "SOCK-GRY-M"));
    char *text = json_dumps(want, JSON_COMPACT);
    assert_non_null(text);

    json_arena_begin();
    json_t *doc = load(text);
    assert_true(stats().blocks > 3);
    json_arena_end();
    assert_true(json_equal(doc, want));
    json_decref(doc);

    struct json_arena_stats s = stats();
    assert_int_equal(s.live, 0);
    assert_int_equal(s.set_aside, 0);
    assert_in_range(s.blocks, 1, 2); /* the rest went back to the heap */
    free(text);
    json_decref(want);
}

#ifdef TEST_ASAN
static void test_a_freed_piece_is_poisoned(void **state)
{
    (void)state;
    json_arena_begin();
    json_t *s = json_string("poisoned once freed");
    const char *text = json_string_value(s);
    assert_false(__asan_address_is_poisoned(text));
    json_decref(s);
    assert_true(__asan_address_is_poisoned(text));
    json_arena_end();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_are_reused_window_after_window),
        cmocka_unit_test(test_a_value_that_outlives_its_window_holds_its_block),
        cmocka_unit_test(test_values_from_outside_are_freed_inside_and_large_pieces_use_the_heap),
        cmocka_unit_test(test_a_document_larger_than_a_block_spans_several),
#ifdef TEST_ASAN
        cmocka_unit_test(test_a_freed_piece_is_poisoned),
#endif
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
