/*
 * destinations: the in-memory copy of the `destinations` table and each
 * one's subscriptions, shared by the relay (push destinations) and the feeds
 * (poll destinations). Operators edit destinations with SQL; a trigger
 * NOTIFYs `ordersync_config` and server.c reloads this copy (and on a timer
 * as a backstop), so no restart is needed.
 *
 * An entry is its id and its settings (`struct dest_settings`, the columns as
 * loaded). A reload parses a row into a new settings record and replaces the
 * entry's whole, or leaves the entry as it was when the row cannot be loaded:
 * nobody ever sees half of one reload and half of the one before.
 *
 * Entries survive reloads: a `struct dest *` stays valid for the registry's
 * life, so the relay can key its own runtime state for a destination (in
 * flight, breaker, rate limit, metrics: relay_internal.h) on it. One that
 * vanished from the table is marked !present.
 *
 * Extra headers (destinations.headers) are secrets: they are kept only as
 * the request lines the relay sends, and never logged. Signing keys
 * (signing_key, previous_signing_key) are kept only as parsed signers
 * (lib/ed25519.h), never as text.
 */
#ifndef OS_DESTINATIONS_H
#define OS_DESTINATIONS_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "relay_policy.h"

struct ed25519_signer;

/* A destination's row as loaded. The strings and `headers` are owned by the record. */
struct dest_settings {
    bool enabled;
    bool push;                  /* mode 'push' (else 'poll': read through a feed) */
    char *url;                  /* push; NULL otherwise */
    char *secret, *prev_secret; /* NULL: no v1 (HMAC) signature */
    /* signing_key / previous_signing_key, parsed once per load: NULL when unset (no v1a) */
    struct ed25519_signer *signer, *prev_signer;
    bool keys_bad;    /* a signing key we refuse (logged): not delivered to */
    char *feed_token; /* poll; NULL otherwise */
    /* the event types it takes as a text[] literal ("{order.created,...}"), NULL: every type */
    char *types;
    long timeout_ms;
    unsigned max_in_flight;
    bool dead_blocks; /* on_dead = 'block' */
    struct relay_policy policy;
    double paused_for_s; /* the breaker pause left (any instance's) */
    int failures;        /* consecutive_failures */
    /* headers: "Name: value" lines (NULL-terminated, one allocation), NULL: none */
    char **headers;
    bool headers_bad;        /* the column holds headers we refuse to send: not delivered to */
    double rate_limit_per_s; /* 0: none */
    /* the jsonpath filter as text (the database evaluates it), NULL: every event */
    char *filter;
    bool held; /* paused by an operator (paused_at): nothing is sent until resumed */
};

struct dest {
    struct dest *next;
    char *id;
    bool present; /* still in the table (and, for push, deliverable: url, a secret or a
                     signing key, headers and keys we accept) */
    struct dest_settings set;
    /* bumped by every reload that changed the settings a relay window is made with
       (all but headers and the rate limit, which are read at each request) */
    uint64_t generation;
};

struct destinations;

/* Returns a new empty registry, or NULL when out of memory. */
struct destinations *destinations_new(void);
/* Frees every entry. Sets *dests to NULL. */
void destinations_free(struct destinations **dests);

/* At most this many extra headers per destination (the table refuses more). */
#define DESTINATIONS_MAX_HEADERS 32

/* SQL whose result destinations_load() takes. */
extern const char destinations_sql[];

/*
 * Updates the registry from the rows of `res` (borrowed; columns found by
 * name). Returns 0, or -EINVAL (a column is missing) / -ENOMEM, leaving what
 * was not updated as it was.
 */
int destinations_load(struct destinations *dests, const PGresult *res)
    __attribute__((warn_unused_result));

bool destinations_loaded(const struct destinations *dests);
/* The entry with this id (present or not), or NULL. Borrowed. */
struct dest *destinations_find(const struct destinations *dests, const char *id);
/* The first entry; iterate with ->next. */
struct dest *destinations_first(const struct destinations *dests);

#endif
