/*
 * downstream: the state one downstream process shares between its modules
 * on the loop. Owned and wired by main.c; routes.c and hook.c borrow it.
 */
#ifndef DS_DOWNSTREAM_H
#define DS_DOWNSTREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "db.h"
#include "faults.h"
#include "http.h"
#include "list.h"
#include "role.h"

struct record;

/*
 * What arrived and what became of it, since start (in memory: the database
 * holds the effects, these count the traffic; they restart at zero).
 */
struct ds_counters {
    uint64_t received;              /* webhook POSTs, whatever their fate */
    uint64_t valid;                 /* signature verified */
    uint64_t invalid;               /* 401: missing, malformed, wrong or stale signature */
    uint64_t malformed;             /* 400/415: signed, but not an event we understand */
    uint64_t applied;               /* committed (sink: counted) */
    uint64_t duplicates;            /* webhook-id seen before: 200, no effect */
    uint64_t unavailable;           /* 503: database not connected or failed */
    uint64_t injected[FAULT_KINDS]; /* answered by a fault, indexed by enum fault */
};

struct downstream {
    uv_loop_t *loop;
    const struct role *role;
    const char *secrets[2]; /* borrowed from the options; [1] may be NULL */
    struct faults faults;
    struct db *db; /* NULL for the sink */
    struct http_server *http;
    struct ds_counters counters;
    struct list_node hooks; /* struct hook: webhooks being delayed or applied (hook_abort_all) */
    struct record *record;  /* sink: what it accepted, when asked (--record) */
    bool stopping;
};

#endif
