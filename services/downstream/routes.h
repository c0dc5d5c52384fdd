/*
 * routes: the downstream's HTTP surface on top of lib/http.
 *   POST <any other path>  a Standard Webhooks delivery (hook.h), e.g. /hooks/inventory
 *   GET  /state            the role's state and the counters, as JSON
 *   GET  /control          the fault knobs now
 *   POST /control          change fault knobs: {"fail_rate": 0.3, "latency_ms": 200}
 *   GET  /healthz          200 while the process runs (faults do not apply)
 *   GET  /readyz           200 once the database is connected (503 before/while not)
 */
#ifndef DS_ROUTES_H
#define DS_ROUTES_H

#include "http.h"

/* The http_handler_fn of the server; `data` is the struct downstream. */
void routes_handle(struct http_request *req, void *data);

#endif
