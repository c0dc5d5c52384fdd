/*
 * alloc_fail: allocation-failure injection for unit tests, in the spirit of
 * curl's torture tests. A test binary linked with alloc_fail (see
 * os_torture_test() in tests/unit/CMakeLists.txt) has every malloc, calloc,
 * realloc, strdup, strndup and asprintf of the project's own code routed
 * through here (the linker's --wrap), and jansson's, OpenSSL's and libcurl's
 * allocators too (json_set_alloc_funcs, CRYPTO_set_mem_functions,
 * curl_global_init_mem, set up by alloc_fail_init). libc's own internal
 * allocations are not counted.
 *
 * The loop: run the code path with the 1st allocation failing, then the 2nd,
 * and so on, until a run completes without reaching the armed allocation.
 * Every run must return an error (never crash, never leak: ASan checks that)
 * or, once no allocation failed, succeed.
 */
#ifndef OS_ALLOC_FAIL_H
#define OS_ALLOC_FAIL_H

#include <stdbool.h>

/* Routes jansson, OpenSSL and libcurl through the counting allocator. Call first in main(). */
void alloc_fail_init(void);

/* Arms the n-th allocation from now to fail (1-based); 0 disarms. Resets the count. */
void alloc_fail_at(unsigned long n);

/* Allocations made since the last alloc_fail_at(). */
unsigned long alloc_fail_count(void);

/* Did the armed allocation fail since the last alloc_fail_at()? */
bool alloc_fail_triggered(void);

/*
 * Runs `run(ctx)` with the 1st, 2nd, ... allocation failing until a run no
 * longer reaches the armed allocation, then once more with none failing.
 * `run` returns 0 on success or a negative errno. Every run in which an
 * allocation failed must return an error, except where `may_absorb` is true
 * (the code path degrades instead, e.g. a log line dropped). Returns the
 * number of failing runs, or -1 (after printing why) when a run that had an
 * allocation fail claimed success without may_absorb, or the clean run failed.
 */
long alloc_fail_loop(const char *name, int (*run)(void *ctx), void *ctx, bool may_absorb);

#endif
