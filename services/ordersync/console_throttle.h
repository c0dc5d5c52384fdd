/*
 * console_throttle: how fast one client address may guess the admin token
 * (ORDERSYNC_ADMIN_TOKEN, the console's login password and the bearer token
 * of /api/...). Pure: no I/O, the clock is an argument, so every rule is
 * unit-tested on its own (tests/unit/test_console_throttle.c).
 *
 * Per address: the first CONSOLE_THROTTLE_FREE wrong tokens cost nothing (a
 * person mistypes); each one after that closes the address for a delay that
 * doubles, from 1 s up to CONSOLE_THROTTLE_MAX_DELAY_MS. While closed, a
 * token from that address is not even compared: the caller answers 429 with
 * Retry-After. A right token opens the address again; an address that has
 * not failed for CONSOLE_THROTTLE_FORGET_MS is forgotten.
 *
 * IPv6 addresses count by their /64: one host usually holds a whole /64.
 *
 * Memory is bounded: the table has a fixed number of entries. When every
 * entry is in use, an address without one shares a single "everyone else"
 * entry, so an attacker with more addresses than the table holds still gets
 * CONSOLE_THROTTLE_FREE free guesses in all, not per address (operators
 * without an entry share that budget while such a spray lasts).
 */
#ifndef OS_CONSOLE_THROTTLE_H
#define OS_CONSOLE_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wrong tokens an address may send before it has to wait. */
#define CONSOLE_THROTTLE_FREE 5
/* The first wait, doubled at each further failure... */
#define CONSOLE_THROTTLE_FIRST_DELAY_MS 1000
/* ...up to this (15 minutes). */
#define CONSOLE_THROTTLE_MAX_DELAY_MS (15 * 60 * 1000)
/* An address that has not failed for this long (an hour) starts again from zero. */
#define CONSOLE_THROTTLE_FORGET_MS (60 * 60 * 1000)
/* Addresses remembered at once (then: the shared entry). */
#define CONSOLE_THROTTLE_ENTRIES 1024

struct console_throttle;

/* A new, empty table (a new allocation, console_throttle_free), or NULL. */
struct console_throttle *console_throttle_new(void);
void console_throttle_free(struct console_throttle **t);

/*
 * May `peer` (an address as text, borrowed; anything that is not an IP
 * address counts as one address) try a token at `now_ms`? 0 when it may,
 * else the milliseconds it must wait.
 */
uint64_t console_throttle_wait(const struct console_throttle *t, const char *peer, uint64_t now_ms);

/*
 * Records a wrong token from `peer` at `now_ms`. Returns the wait it imposes
 * from now (0 while within the free failures); *failures (may be NULL) gets
 * the address's failures so far.
 */
uint64_t console_throttle_failed(struct console_throttle *t, const char *peer, uint64_t now_ms,
                                 unsigned *failures);

/* A right token from `peer`: its failures are forgotten (not the shared entry's). */
void console_throttle_succeeded(struct console_throttle *t, const char *peer);

/* Addresses with an entry of their own at `now_ms` (for tests and metrics). */
size_t console_throttle_tracked(const struct console_throttle *t, uint64_t now_ms);

#endif
