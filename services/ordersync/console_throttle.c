/*
 * console_throttle: failed admin-token guesses per client address, in a
 * table of fixed size (see console_throttle.h for the rules). A linear scan
 * of 1024 entries costs about a microsecond, and only requests that carry a
 * token pay it, so there is no hash for an attacker to aim collisions at.
 */
#include "console_throttle.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    unsigned char key[16]; /* the address (IPv4 mapped into IPv6, IPv6 cut to /64) */
    bool used;
    unsigned failures;
    uint64_t last_failure_ms;
    uint64_t blocked_until_ms;
};

struct console_throttle {
    struct entry e[CONSOLE_THROTTLE_ENTRIES];
    struct entry shared; /* every address that found no room of its own */
};

/* The key of an address as text; what does not parse counts as its own text. */
static void key_of(const char *peer, unsigned char key[16])
{
    memset(key, 0, 16);
    struct in_addr a4;
    struct in6_addr a6;
    if (peer != NULL && inet_pton(AF_INET, peer, &a4) == 1) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &a4, 4);
    } else if (peer != NULL && inet_pton(AF_INET6, peer, &a6) == 1) {
        memcpy(key, &a6, 16);
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        /* a host holds a /64; an IPv4 address in IPv6 clothes stays whole */
        if (memcmp(key, mapped, sizeof(mapped)) != 0)
            memset(key + 8, 0, 8);
    } else {
        /* not an address ("unknown"): 0xfe never starts an address we would
           hold (fe80::/10 is link-local, and is cut to /64 like the others) */
        key[0] = 0xfe;
        key[1] = 0xff;
        size_t n = peer != NULL ? strnlen(peer, 14) : 0;
        if (n > 0)
            memcpy(key + 2, peer, n);
    }
}

static bool live(const struct entry *e, uint64_t now)
{
    if (!e->used)
        return false;
    if (now < e->blocked_until_ms)
        return true;
    return now < e->last_failure_ms || now - e->last_failure_ms < CONSOLE_THROTTLE_FORGET_MS;
}

static uint64_t delay_for(unsigned failures)
{
    if (failures <= CONSOLE_THROTTLE_FREE)
        return 0;
    unsigned doublings = failures - CONSOLE_THROTTLE_FREE - 1;
    if (doublings >= 20)
        return CONSOLE_THROTTLE_MAX_DELAY_MS;
    uint64_t d = (uint64_t)CONSOLE_THROTTLE_FIRST_DELAY_MS << doublings;
    return d < CONSOLE_THROTTLE_MAX_DELAY_MS ? d : CONSOLE_THROTTLE_MAX_DELAY_MS;
}

/* The live entry of `key`, or NULL; *room (may be NULL) gets a slot a new one could take. */
static struct entry *find(const struct console_throttle *t, const unsigned char key[16],
                          uint64_t now, struct entry **room)
{
    struct entry *found = NULL, *free_slot = NULL;
    for (size_t i = 0; i < CONSOLE_THROTTLE_ENTRIES && found == NULL; i++) {
        struct entry *e = (struct entry *)&t->e[i];
        if (!live(e, now)) {
            if (free_slot == NULL)
                free_slot = e;
        } else if (memcmp(e->key, key, 16) == 0) {
            found = e;
        }
    }
    if (room != NULL)
        *room = free_slot;
    return found;
}

struct console_throttle *console_throttle_new(void)
{
    return calloc(1, sizeof(struct console_throttle));
}

void console_throttle_free(struct console_throttle **t)
{
    free(*t);
    *t = NULL;
}

static uint64_t remaining(const struct entry *e, uint64_t now)
{
    return live(e, now) && e->blocked_until_ms > now ? e->blocked_until_ms - now : 0;
}

uint64_t console_throttle_wait(const struct console_throttle *t, const char *peer, uint64_t now_ms)
{
    unsigned char key[16];
    key_of(peer, key);
    struct entry *room;
    const struct entry *e = find(t, key, now_ms, &room);
    if (e != NULL)
        return remaining(e, now_ms);
    /* no entry of its own: free if it could have one, else it shares */
    return room != NULL ? 0 : remaining(&t->shared, now_ms);
}

uint64_t console_throttle_failed(struct console_throttle *t, const char *peer, uint64_t now_ms,
                                 unsigned *failures)
{
    unsigned char key[16];
    key_of(peer, key);
    struct entry *room;
    struct entry *e = find(t, key, now_ms, &room);
    if (e == NULL) {
        e = room != NULL ? room : &t->shared;
        if (!live(e, now_ms)) {
            memset(e, 0, sizeof(*e));
            e->used = true;
        }
        if (e != &t->shared)
            memcpy(e->key, key, 16);
    }
    if (e->failures < UINT32_MAX)
        e->failures++;
    e->last_failure_ms = now_ms;
    uint64_t d = delay_for(e->failures);
    if (d > 0)
        e->blocked_until_ms = now_ms + d;
    if (failures != NULL)
        *failures = e->failures;
    return d;
}

void console_throttle_succeeded(struct console_throttle *t, const char *peer)
{
    unsigned char key[16];
    key_of(peer, key);
    for (size_t i = 0; i < CONSOLE_THROTTLE_ENTRIES; i++) {
        if (t->e[i].used && memcmp(t->e[i].key, key, 16) == 0)
            memset(&t->e[i], 0, sizeof(t->e[i]));
    }
}

size_t console_throttle_tracked(const struct console_throttle *t, uint64_t now_ms)
{
    size_t n = 0;
    for (size_t i = 0; i < CONSOLE_THROTTLE_ENTRIES; i++)
        n += live(&t->e[i], now_ms);
    return n;
}
