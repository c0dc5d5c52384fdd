/*
 * json_guard: parsing and serializing that cannot be silently wrong for want
 * of memory. jansson does not always stop when an allocation fails: its
 * reader drops the character it was collecting and goes on, so a signed body
 * read under memory pressure can come out as other JSON (an order id one
 * digit short) or as a syntax error that would make its sender give up; and
 * its writer can leave bytes out of the text (a key of an object lost). The
 * guard counts jansson's failed allocations (its allocator, wrapped once,
 * on first use) and refuses a parse or a text during which one failed.
 */
#ifndef OS_JSON_GUARD_H
#define OS_JSON_GUARD_H

#include <stddef.h>

#include <jansson.h>

/*
 * json_loadb(), but NULL with -ENOMEM in *rc when an allocation failed while
 * it ran; otherwise its result, with *rc 0 (parsed) or -EBADMSG (*err says
 * why). Returns a new reference.
 */
json_t *json_guard_loadb(const char *buf, size_t len, size_t flags, json_error_t *err, int *rc);

/* json_dumps(), but NULL when an allocation failed while it ran. Returns a new allocation. */
char *json_guard_dumps(const json_t *json, size_t flags);

#endif
