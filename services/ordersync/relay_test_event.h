/*
 * relay_test_event: an operator's test event to one destination (the
 * console's "Send test event", POST /api/destinations/ID/test, `ordersync
 * destination test ID`). A `ping` envelope, signed and sent exactly as a
 * delivery is (relay_sign.c, the destination's extra headers), but not an
 * event of any order: it is not in `events`, no stream or row tracks it,
 * it is never retried, and it goes even to a paused destination (that is
 * what it is for: checking the receiver before resuming). The receiver's
 * answer goes back to the caller, which records it (operator_actions).
 */
#ifndef OS_RELAY_TEST_EVENT_H
#define OS_RELAY_TEST_EVENT_H

#include <stddef.h>

#include "destinations.h"
#include "http_client.h"

/* What the receiver answered; everything borrowed for the callback. */
struct relay_test_event_result {
    const char *destination;
    const char *webhook_id;
    long http_status;  /* 0: no answer (see error) */
    const char *error; /* NULL when it answered; else what went wrong */
    const char *body;  /* the first bytes of its body (at most HTTP_CLIENT_EXCERPT_MAX) */
    int ms;            /* how long it took */
    bool aborted;      /* cut short by a shutdown */
};

typedef void (*relay_test_event_fn)(const struct relay_test_event_result *res, void *data);

/*
 * Sends a test event to push destination `d` (borrowed until the call
 * returns: what the request needs is copied) on client `c`, for `actor`
 * (named in the body). Returns 0 and calls `cb` exactly once later, or
 * -EINVAL (not a push destination with a URL and secret), -ENOMEM, or
 * another negative errno, and never calls it.
 */
int relay_test_event_send(struct http_client *c, const struct dest *d, const char *actor,
                          relay_test_event_fn cb, void *data) __attribute__((warn_unused_result));

#endif
