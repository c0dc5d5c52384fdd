/*
 * console: the data of the operator console (api_console.c serves it over
 * HTTP). It owns one database connection of its own, so that an operator's
 * search never waits behind a reload or a poll on `aux` and never delays
 * them, and runs a fixed set of prepared statements on it. Each statement
 * answers one JSON document (built by PostgreSQL, one column "doc"); this
 * module hands it on without speaking HTTP.
 *
 * Every statement is bounded: it reads through an index and returns a page
 * (see the comments on each in console.c and the measurements in the
 * README).
 */
#ifndef OS_CONSOLE_H
#define OS_CONSOLE_H

#include <stdbool.h>
#include <uv.h>

struct console;

enum console_query {
    CONSOLE_OVERVIEW,        /* () */
    CONSOLE_RECENT,          /* (before order id | NULL, limit) */
    CONSOLE_SEARCH,          /* (text, before order id | NULL, limit) */
    CONSOLE_ORDER,           /* (order id) */
    CONSOLE_INBOUND,         /* (order id, inbound id): one webhook's raw body */
    CONSOLE_EVENT,           /* (order id, position): the envelope sent */
    CONSOLE_DELIVERIES,      /* (state, destination, since, until, before position,
                                before destination, limit); NULL = any */
    CONSOLE_REPLAY,          /* (destinations text[], positions bigint[], actor) */
    CONSOLE_SKIP,            /* (destinations text[], positions bigint[], actor) */
    CONSOLE_REPLAY_MATCHING, /* (destination, since, until, actor): every dead one */
    CONSOLE_SKIP_MATCHING,   /* (destination, since, until, states text[], actor) */
    CONSOLE_SOURCES,         /* () */
    CONSOLE_DESTINATIONS,    /* () */
    CONSOLE_SESSION_START,   /* (nonce, operator, expires Unix s, peer): a login */
    CONSOLE_SESSION_TOUCH,   /* (nonce, idle timeout s): {"alive", "known", "ended"} */
    CONSOLE_SESSION_END,     /* (nonce): a logout */
    CONSOLE_DEST_PAUSE,      /* (destination, pause boolean, actor) */
    CONSOLE_DEST_FILTER,     /* (destination, filter text | NULL, actor) */
    CONSOLE_DEST_REPLAY,     /* (destination, since, until, actor, preview boolean) */
    /* (destination, actor, webhook id, status, body excerpt, error, ms): records a test event */
    CONSOLE_DEST_TEST,
    CONSOLE_QUERY_COUNT
};

enum console_status {
    CONSOLE_OK,
    CONSOLE_NOT_FOUND,   /* the statement found nothing (no such order) */
    CONSOLE_BAD_INPUT,   /* PostgreSQL refused a parameter (SQLSTATE class 22) */
    CONSOLE_UNAVAILABLE, /* no connection, or it broke: try again */
    CONSOLE_FAILED,      /* any other error (logged) */
};

/*
 * Result of console_run: `json` is the document (borrowed for the call) when
 * st is CONSOLE_OK, else NULL; `detail` says what went wrong (borrowed, no
 * secret in it).
 */
typedef void (*console_result_fn)(void *ctx, enum console_status st, const char *json,
                                  const char *detail);

/*
 * Starts the console's connection (never blocks). `conninfo` may be NULL
 * (libpq's PG* variables) and is copied. Returns 0 and *out, or a negative
 * errno.
 */
int console_new(uv_loop_t *loop, const char *conninfo, struct console **out)
    __attribute__((warn_unused_result));
/* Is the connection up (statements prepared)? */
bool console_ready(const struct console *c);
/*
 * Runs query `q` with its parameters (text, NULL for SQL NULL; copied, see
 * the list above for how many). Returns 0 and calls `cb` exactly once later,
 * or -ENOTCONN / -EINVAL / -ENOMEM and never calls it.
 */
int console_run(struct console *c, enum console_query q, const char *const *params,
                console_result_fn cb, void *ctx) __attribute__((warn_unused_result));
/* Fails the queries in flight (their callbacks run with CONSOLE_UNAVAILABLE), closes, frees. */
void console_free(struct console **c);

#endif
