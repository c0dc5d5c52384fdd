/* Unit tests for lib/list.h: the intrusive list every module unlinks with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "list.h"

struct item {
    int v;
    struct list_node node;
};

static int values(struct list_node *head, int *out, int max)
{
    int n = 0;
    struct list_node *p;
    list_foreach(p, head)
    {
        if (n < max)
            out[n] = list_entry(p, struct item, node)->v;
        n++;
    }
    return n;
}

static void append_prepend_keep_order(void **state)
{
    (void)state;
    struct list_node head;
    list_init(&head);
    assert_true(list_empty(&head));
    assert_null(list_first(&head));
    struct item a = {.v = 1}, b = {.v = 2}, c = {.v = 3};
    list_append(&head, &b.node);
    list_append(&head, &c.node);
    list_prepend(&head, &a.node);
    int got[4];
    assert_int_equal(values(&head, got, 4), 3);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 2);
    assert_int_equal(got[2], 3);
    assert_ptr_equal(list_first(&head), &a.node);
}

static void remove_is_idempotent_and_unlinks(void **state)
{
    (void)state;
    struct list_node head;
    list_init(&head);
    struct item a = {.v = 1}, b = {.v = 2};
    list_init(&a.node);
    assert_false(list_linked(&a.node));
    list_append(&head, &a.node);
    list_append(&head, &b.node);
    assert_true(list_linked(&a.node));
    list_remove(&a.node);
    assert_false(list_linked(&a.node));
    list_remove(&a.node); /* twice: harmless */
    int got[2];
    assert_int_equal(values(&head, got, 2), 1);
    assert_int_equal(got[0], 2);
    list_remove(&b.node);
    assert_true(list_empty(&head));
}

static void foreach_safe_allows_removal(void **state)
{
    (void)state;
    struct list_node head, *p, *tmp;
    list_init(&head);
    struct item it[5];
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        list_append(&head, &it[i].node);
    }
    list_foreach_safe(p, tmp, &head)
    {
        if (list_entry(p, struct item, node)->v % 2 == 0)
            list_remove(p);
    }
    int got[5];
    assert_int_equal(values(&head, got, 5), 2);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(append_prepend_keep_order),
        cmocka_unit_test(remove_is_idempotent_and_unlinks),
        cmocka_unit_test(foreach_safe_allows_removal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
