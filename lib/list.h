/*
 * list: an intrusive, circular, doubly linked list (libuv's uv__queue, the
 * Linux kernel's list_head). An object that can be on a list embeds a
 * `struct list_node`; the list itself is a `struct list_node` head whose
 * neighbours are itself when empty. Insertion and removal are O(1) and
 * allocate nothing, so they cannot fail: every "unlink by hand" is one call.
 *
 * A node that is on no list points at itself after list_init() or
 * list_remove(), so list_linked() tells whether it is on one, and removing it
 * twice is harmless.
 */
#ifndef OS_LIST_H
#define OS_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_node {
    struct list_node *next, *prev;
};

/* The object that embeds `node` as its member `field`. */
#define list_entry(node, type, field) ((type *)((char *)(node)-offsetof(type, field)))

/* Every node of `head`, in order; `n` is the node. Do not remove `n` in the body. */
#define list_foreach(n, head) for ((n) = (head)->next; (n) != (head); (n) = (n)->next)

/* The same, where the body may remove `n` (`tmp` holds the next one). */
#define list_foreach_safe(n, tmp, head)                                                            \
    for ((n) = (head)->next, (tmp) = (n)->next; (n) != (head); (n) = (tmp), (tmp) = (n)->next)

/* An empty list, or a node on no list. */
static inline void list_init(struct list_node *n)
{
    n->next = n;
    n->prev = n;
}

static inline bool list_empty(const struct list_node *head)
{
    return head->next == head;
}

/* Is the node on a list (after list_init, and false again after list_remove)? */
static inline bool list_linked(const struct list_node *n)
{
    return n->next != n;
}

/* The first node, or NULL when the list is empty. */
static inline struct list_node *list_first(const struct list_node *head)
{
    return head->next == head ? NULL : head->next;
}

/* Adds n at the end of head (n must be on no list). */
static inline void list_append(struct list_node *head, struct list_node *n)
{
    n->next = head;
    n->prev = head->prev;
    head->prev->next = n;
    head->prev = n;
}

/* Adds n at the front of head (n must be on no list). */
static inline void list_prepend(struct list_node *head, struct list_node *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}

/* Takes n off its list; n is then on no list (a no-op when it already was). */
static inline void list_remove(struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}

#endif
