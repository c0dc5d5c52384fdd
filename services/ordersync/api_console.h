/*
 * api_console: the operator console over HTTP, on the admin listener only
 * (api.c's admin_tables). Part of the api layer: it turns console.c's
 * documents into answers and console_auth.c's rules into 401/403s.
 *
 *   GET  /console                 the page (index.html, app.js, app.css: embedded
 *                                 in the binary, no CDN); /console/login otherwise
 *   GET  /console/login           the login form; POST checks it, sets the cookie
 *   POST /console/logout          ends the browser's session
 *   GET  /api/...                 the JSON API the page uses (README: Console)
 *   POST /api/deliveries/replay   replay chosen dead events, or every matching one
 *   POST /api/deliveries/skip     skip chosen dead/blocked events, or every matching one
 *   POST /api/destinations/ID/... an operator's action on a destination (api_destination.c)
 */
#ifndef OS_API_CONSOLE_H
#define OS_API_CONSOLE_H

#include "app.h"
#include "http.h"

/* Handles every method on /console and /console/... */
void api_console_page(struct app *app, struct http_request *req);
/* Handles every method on /api/... */
void api_console_api(struct app *app, struct http_request *req);

/* For the other console routes (api_destination.c): runs query q (params copied) and answers
   req with its document, or with the error it met. */
void api_console_run(struct app *app, struct http_request *req, enum console_query q,
                     const char *const *params);

#endif
