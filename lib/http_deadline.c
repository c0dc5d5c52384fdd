/*
 * http_deadline: see http_deadline.h. No I/O and no clock of its own: the
 * caller says what happened and when.
 */
#include "http_deadline.h"

#include <stddef.h>

void http_deadline_accepted(struct http_deadline *d, const struct http_deadline_limits *l,
                            uint64_t now)
{
    d->head = now + l->header_ms;
    d->body = 0;
    d->request = now + l->request_ms;
}

void http_deadline_request_begins(struct http_deadline *d, const struct http_deadline_limits *l,
                                  uint64_t now)
{
    /* As before the total deadline existed: the head clock counts from the first byte. */
    d->head = now + l->header_ms;
    d->body = 0;
    if (d->request == 0)
        d->request = now + l->request_ms;
}

void http_deadline_after_read(struct http_deadline *d, const struct http_deadline_limits *l,
                              enum http_parse_phase phase, uint64_t now)
{
    switch (phase) {
    case HTTP_PHASE_HEAD:
        return;
    case HTTP_PHASE_BODY:
        d->head = 0;
        d->body = now + l->header_ms;
        return;
    case HTTP_PHASE_IDLE:
    case HTTP_PHASE_DONE:
        /* nothing of a request under way (any byte, even an empty line, starts the head) */
        http_deadline_clear(d);
        return;
    }
}

void http_deadline_clear(struct http_deadline *d)
{
    d->head = 0;
    d->body = 0;
    d->request = 0;
}

uint64_t http_deadline_next(const struct http_deadline *d)
{
    const uint64_t all[] = {d->head, d->body, d->request};
    uint64_t due = 0;

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i] != 0 && (due == 0 || all[i] < due))
            due = all[i];
    }
    return due;
}

enum http_deadline_expiry http_deadline_expired(const struct http_deadline *d, uint64_t now)
{
    uint64_t due = http_deadline_next(d);

    if (due == 0 || now < due)
        return HTTP_DEADLINE_NONE;
    /* the earliest one is what the peer failed first */
    if (due == d->head)
        return HTTP_DEADLINE_HEAD;
    if (due == d->body)
        return HTTP_DEADLINE_BODY;
    return HTTP_DEADLINE_REQUEST;
}
