/*
 * prng: fast non-cryptographic random numbers (xoshiro256**), for what must
 * be unpredictable enough to not collide but is no secret: trace and span
 * ids, retry jitter. Drawing each from OpenSSL's DRBG cost more than the
 * rest of the id's work (a lock, a DRBG generate, a reseed check). Each
 * thread's generator is seeded once from RAND_bytes (from the clock and the
 * thread if that fails, so it never stops working). Never for keys, nonces
 * or tokens: those stay with RAND_bytes.
 */
#ifndef OS_PRNG_H
#define OS_PRNG_H

#include <stdint.h>

/* 64 random bits. */
uint64_t prng_u64(void);

#endif
