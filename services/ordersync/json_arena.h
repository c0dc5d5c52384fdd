/*
 * json_arena: jansson's allocations for one webhook from a reused block.
 *
 * Handling a webhook builds and frees a few hundred small jansson values (the
 * parsed body, the canonical order), all within one synchronous call of the
 * loop. Between json_arena_begin() and json_arena_end() jansson allocates by
 * bumping a pointer in a block that the next webhook reuses, and freeing a
 * piece only counts it; outside, jansson allocates as it always did.
 *
 * Nothing depends on values being freed inside the window: a block is reused
 * only once every piece in it was freed. A value that outlives the window
 * (kept by reference) keeps its block alive, aside, until its last piece is
 * freed; it is never reused under a live value. Allocations larger than a
 * quarter of a block, and any a block cannot be found for, come from the
 * allocator that was installed before (libc's, or json_guard's counting one,
 * in either order of installation).
 *
 * For the loop's thread only (ordersync runs jansson nowhere else). Under
 * AddressSanitizer every piece is unpoisoned on allocation and poisoned again
 * when freed or when its block is reused, with a red zone between pieces, so
 * the sanitizer still sees overflows and uses after free.
 */
#ifndef OS_JSON_ARENA_H
#define OS_JSON_ARENA_H

#include <stddef.h>

/* Starts a window: jansson allocates from the arena until json_arena_end(). Windows do not nest. */
void json_arena_begin(void);

/* Ends the window: blocks whose pieces were all freed are kept for the next one. */
void json_arena_end(void);

/* What the arena holds now (for tests): blocks in all, and pieces not yet freed. */
struct json_arena_stats {
    size_t blocks;
    size_t live;
    size_t set_aside; /* blocks held by pieces that outlived their window */
};
void json_arena_stats(struct json_arena_stats *out);

#endif
