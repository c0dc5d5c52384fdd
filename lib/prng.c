/*
 * prng: xoshiro256** (Blackman and Vigna, public domain), one state per
 * thread. See prng.h.
 */
#include "prng.h"

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include <openssl/rand.h>

static _Thread_local uint64_t state[4];
static _Thread_local bool seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* splitmix64: spreads a weak seed over the whole state */
static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void seed(void)
{
    if (RAND_bytes((unsigned char *)state, sizeof(state)) != 1 ||
        (state[0] | state[1] | state[2] | state[3]) == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)(uintptr_t)&ts ^ (uint64_t)pthread_self();
        for (int i = 0; i < 4; i++)
            state[i] = splitmix(&x);
    }
    seeded = true;
}

uint64_t prng_u64(void)
{
    if (!seeded)
        seed();
    uint64_t result = rotl(state[1] * 5, 7) * 9;
    uint64_t t = state[1] << 17;
    state[2] ^= state[0];
    state[3] ^= state[1];
    state[1] ^= state[2];
    state[0] ^= state[3];
    state[2] ^= t;
    state[3] = rotl(state[3], 45);
    return result;
}
