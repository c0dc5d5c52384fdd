/*
 * alloc_fail: see alloc_fail.h. The __wrap_ functions replace the project's
 * calls to the C library's allocators at link time (-Wl,--wrap=malloc ...);
 * __real_ reaches the real ones (ASan's, under the sanitizer build).
 */
#include "alloc_fail.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_asprintf(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static unsigned long armed, count;
static bool triggered;

/* Is this allocation the one that fails? Counted either way. */
static bool fail_now(void)
{
    count++;
    if (armed != 0 && count == armed) {
        triggered = true;
        return true;
    }
    return false;
}

void *__wrap_malloc(size_t size)
{
    return fail_now() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    return fail_now() ? NULL : __real_realloc(p, size);
}

char *__wrap_strdup(const char *s)
{
    return fail_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    return fail_now() ? NULL : __real_strndup(s, n);
}

int __wrap_asprintf(char **out, const char *fmt, ...)
{
    if (fail_now())
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(out, fmt, ap);
    va_end(ap);
    return n;
}

static void *json_alloc(size_t size)
{
    return __wrap_malloc(size);
}

static void *crypto_malloc(size_t size, const char *file, int line)
{
    (void)file;
    (void)line;
    return __wrap_malloc(size);
}

static void *crypto_realloc(void *p, size_t size, const char *file, int line)
{
    (void)file;
    (void)line;
    return __wrap_realloc(p, size);
}

static void crypto_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    free(p);
}

static void curl_free_fn(void *p)
{
    free(p);
}

void alloc_fail_init(void)
{
    json_set_alloc_funcs(json_alloc, free);
    /* only possible before OpenSSL's first allocation: hence first in main() */
    if (CRYPTO_set_mem_functions(crypto_malloc, crypto_realloc, crypto_free) != 1)
        fprintf(stderr, "alloc_fail: OpenSSL's allocations are not counted\n");
    /* likewise before any other libcurl call (its URL parser is used by the poller) */
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, __wrap_malloc, curl_free_fn, __wrap_realloc,
                             __wrap_strdup, __wrap_calloc) != CURLE_OK)
        fprintf(stderr, "alloc_fail: libcurl's allocations are not counted\n");
}

void alloc_fail_at(unsigned long n)
{
    armed = n;
    count = 0;
    triggered = false;
}

unsigned long alloc_fail_count(void)
{
    return count;
}

bool alloc_fail_triggered(void)
{
    return triggered;
}

long alloc_fail_loop(const char *name, int (*run)(void *ctx), void *ctx, bool may_absorb)
{
    long failing = 0;
    for (unsigned long n = 1;; n++) {
        alloc_fail_at(n);
        int rc = run(ctx);
        bool hit = alloc_fail_triggered();
        alloc_fail_at(0);
        if (!hit) {
            if (rc != 0) {
                fprintf(stderr, "%s: failed (%d) with no allocation failing\n", name, rc);
                return -1;
            }
            return failing;
        }
        if (rc == 0 && !may_absorb) {
            fprintf(stderr, "%s: allocation %lu failed but the call returned success\n", name, n);
            return -1;
        }
        failing++;
    }
}
