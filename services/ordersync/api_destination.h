/*
 * api_destination: an operator's actions on one destination, over the
 * console's JSON API (bearer token or session; api_console.c checks the
 * caller, the origin and the CSRF token before handing over):
 *
 *   POST /api/destinations/ID/pause    hold it: nothing is sent, its cursor and rows stay
 *   POST /api/destinations/ID/resume   go on, in order
 *   POST /api/destinations/ID/test     send it a `ping` test event, answer what it answered
 *   POST /api/destinations/ID/replay   {"since", "until", "preview"}: every dead or blocked
 *                                      event of it whose event time is in [since, until)
 *   POST /api/destinations/ID/filter   {"filter": jsonpath | null}
 *
 * Each is recorded in operator_actions with its actor (README: Console).
 */
#ifndef OS_API_DESTINATION_H
#define OS_API_DESTINATION_H

#include "app.h"
#include "http.h"

/*
 * Handles POST /api/destinations/<rest>, rest = "ID/ACTION" (borrowed).
 * `operator` is the session's operator name, NULL for a bearer token (the
 * body's "actor" then names who acts).
 */
void api_destination_post(struct app *app, struct http_request *req, const char *rest,
                          const char *operator);

#endif
