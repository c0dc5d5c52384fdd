/*
 * api: ordersync's HTTP routes on top of lib/http:
 *   POST /webhooks/{source}   verify, normalize, queue for group commit (ingest.h)
 *   GET  /healthz             the process is alive
 *   GET  /feeds/{destination} pull feed for destinations that poll (feed.h)
 *   GET  /readyz              Postgres connected and schema current
 *   GET  /metrics             Prometheus text format
 * The last three are also served by the admin listener, which has its own
 * connection cap so that probes get through a flood of the public port, and
 * so is the operator console (/console, /api/...: api_console.h), which the
 * public port never serves.
 * Every answer goes through api_reply*, which logs one JSON line per request
 * and counts it by route and status class.
 */
#ifndef OS_API_H
#define OS_API_H

#include "app.h"
#include "http.h"

/* The http_handler_fn of the public server; `data` is the struct app. */
void api_handle(struct http_request *req, void *data);
/*
 * The http_handler_fn of the admin server (ORDERSYNC_ADMIN_LISTEN): only
 * /healthz, /readyz and /metrics, and the operator console.
 * `data` is the struct app.
 */
void api_admin_handle(struct http_request *req, void *data);

/* Answers with a JSON body (borrowed, copied). `outcome` and `source` go to the log (may be NULL).
 */
void api_reply(struct http_request *req, int status, const char *json, const char *outcome,
               const char *source);
/*
 * Answers with any body (copied) and headers (borrowed), logged and counted
 * like every answer.
 */
void api_respond(struct http_request *req, int status, const char *content_type, const char *body,
                 size_t len, const struct http_header *headers, size_t n_headers);
/* Answers {"error": error, "detail": detail}. */
void api_reply_error(struct http_request *req, int status, const char *error, const char *detail,
                     const char *source, const struct http_header *headers, size_t n_headers);

#endif
