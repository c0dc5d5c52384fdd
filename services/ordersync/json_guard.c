/*
 * json_guard: see json_guard.h. The wrapper keeps jansson's free function,
 * so memory allocated before it was installed is freed as it always was;
 * and it calls the allocator that was installed before it (libc's, or a
 * test's), so it can be installed at any time. A failure in another thread
 * during a parse refuses that parse too: a retry, never a wrong answer.
 */
#include "json_guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static json_malloc_t next_malloc;
static atomic_ulong failures;

static void *counting_malloc(size_t size)
{
    void *p = next_malloc(size);

    if (p == NULL)
        atomic_fetch_add(&failures, 1);
    return p;
}

static void install(void)
{
    json_free_t next_free;

    json_get_alloc_funcs(&next_malloc, &next_free);
    json_set_alloc_funcs(counting_malloc, next_free);
}

static void installed(void)
{
    (void)pthread_once(&install_once, install);
}

json_t *json_guard_loadb(const char *buf, size_t len, size_t flags, json_error_t *err, int *rc)
{
    unsigned long before;
    json_t *j;

    installed();
    before = atomic_load(&failures);
    j = json_loadb(buf, len, flags, err);
    if (atomic_load(&failures) != before) {
        json_decref(j);
        *rc = -ENOMEM;
        return NULL;
    }
    *rc = j != NULL ? 0 : -EBADMSG;
    return j;
}

char *json_guard_dumps(const json_t *json, size_t flags)
{
    unsigned long before;
    char *text;

    installed();
    before = atomic_load(&failures);
    text = json_dumps(json, flags);
    if (atomic_load(&failures) != before) {
        free(text);
        return NULL;
    }
    return text;
}
