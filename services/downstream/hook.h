/*
 * hook: one webhook delivery, from arrival to answer.
 *
 *   arrival: count, decide the fault (faults.h)
 *     -> HOOK_DELAYING     a uv_timer for the configured latency (skipped at 0)
 *     -> injected fault?   answer 503 / 429 / 500 and stop
 *     -> verify            Standard Webhooks signature on the raw body (401)
 *     -> validate          JSON event with type and data.source/external_id (400)
 *     -> HOOK_APPLYING     <role>.apply(webhook-id, body): one transaction
 *     -> answer            200 {"outcome": "applied"|"duplicate"} after COMMIT;
 *                          503 + Retry-After when the database is away
 * The sink stops after validate and answers 200.
 */
#ifndef DS_HOOK_H
#define DS_HOOK_H

#include "downstream.h"
#include "http.h"

/* Takes over `req` (a POST to a webhook path): it is answered now or later. */
void hook_start(struct downstream *ds, struct http_request *req);

/*
 * Shutdown: answers 503 to every webhook still waiting for its latency timer
 * and releases it (the timer's memory is freed by its close callback, so run
 * the loop afterwards). Call after db_close(), which answers the ones in
 * HOOK_APPLYING through their query callbacks, and before http_server_close().
 */
void hook_abort_all(struct downstream *ds);

#endif
