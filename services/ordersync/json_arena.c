/*
 * json_arena: see json_arena.h.
 *
 * A piece is a 16-byte header holding its size, then the piece, rounded up
 * to 16 bytes (and, under AddressSanitizer, a poisoned red zone). A block
 * counts its live pieces; free() finds a piece's block by address among the
 * blocks of the window and those set aside (rarely more than one), and a
 * pointer in no block is the previous allocator's.
 */
#include "json_arena.h"

#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif

#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define RED_ZONE       32
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define RED_ZONE       0
#endif

/* Room for a 5 KB body's values and its canonical order; most windows use a fraction. */
#define BLOCK_DATA (64 * 1024)
#define PIECE_MAX  (BLOCK_DATA / 4)
#define HEADER     16
#define SPARE_MAX  2

struct block {
    struct block *next;
    char *cur;
    size_t live;
    bool aside;
    alignas(16) char data[BLOCK_DATA];
};

static json_malloc_t next_malloc;
static json_free_t next_free;
static bool installed;
static bool open_window;
static struct block *window; /* blocks of the open window, the one in use first */
static struct block *aside;  /* blocks of ended windows that still hold live pieces */
static struct block *spare;
static size_t n_spare;

static struct block *take_block(void)
{
    struct block *b = spare;

    if (b != NULL) {
        spare = b->next;
        n_spare--;
    } else {
        b = malloc(sizeof(*b));
        if (b == NULL)
            return NULL;
        POISON(b->data, sizeof(b->data));
    }
    b->cur = b->data;
    b->live = 0;
    b->aside = false;
    b->next = window;
    window = b;
    return b;
}

static void retire(struct block *b)
{
    if (n_spare < SPARE_MAX) {
        POISON(b->data, sizeof(b->data));
        b->next = spare;
        spare = b;
        n_spare++;
    } else {
        free(b);
    }
}

static void *arena_malloc(size_t size)
{
    if (open_window && size <= PIECE_MAX) {
        size_t need = HEADER + ((size + 15) & ~(size_t)15) + RED_ZONE;
        struct block *b = window;

        if (b == NULL || (size_t)(b->data + sizeof(b->data) - b->cur) < need)
            b = take_block();
        if (b != NULL) {
            char *p = b->cur;

            b->cur += need;
            b->live++;
            UNPOISON(p, HEADER + size);
            *(size_t *)p = size;
            return p + HEADER;
        }
    }
    return next_malloc(size);
}

static struct block *owner(const char *p, struct block ***link)
{
    struct block **lists[] = {&window, &aside};

    for (size_t i = 0; i < 2; i++)
        for (struct block **l = lists[i]; *l != NULL; l = &(*l)->next)
            if (p >= (*l)->data && p < (*l)->data + sizeof((*l)->data)) {
                *link = l;
                return *l;
            }
    return NULL;
}

static void arena_free(void *ptr)
{
    struct block **link;
    struct block *b = ptr != NULL ? owner(ptr, &link) : NULL;

    if (b == NULL) {
        next_free(ptr);
        return;
    }
    char *p = (char *)ptr - HEADER;
    POISON(p, HEADER + *(size_t *)p);
    if (--b->live == 0 && b->aside) {
        *link = b->next;
        retire(b);
    }
}

#ifdef ARENA_ASAN
/*
 * A jansson value that is never freed holds its block aside for good, where
 * the leak checker would see it as reachable. Forgetting the blocks set aside
 * when the process exits (before the checker runs: atexit handlers run in
 * reverse order, and the checker's was registered first) reports them.
 */
static void forget_aside(void)
{
    aside = NULL;
}
#endif

void json_arena_begin(void)
{
    if (!installed) {
        json_get_alloc_funcs(&next_malloc, &next_free);
        json_set_alloc_funcs(arena_malloc, arena_free);
        installed = true;
#ifdef ARENA_ASAN
        (void)atexit(forget_aside);
#endif
    }
    open_window = true;
}

void json_arena_end(void)
{
    open_window = false;
    while (window != NULL) {
        struct block *b = window;

        window = b->next;
        if (b->live == 0) {
            retire(b);
        } else {
            b->aside = true;
            b->next = aside;
            aside = b;
        }
    }
}

void json_arena_stats(struct json_arena_stats *out)
{
    *out = (struct json_arena_stats){.blocks = n_spare};
    const struct block *lists[] = {window, aside};
    for (size_t i = 0; i < 2; i++)
        for (const struct block *b = lists[i]; b != NULL; b = b->next) {
            out->blocks++;
            out->live += b->live;
            out->set_aside += b->aside;
        }
}
