/*
 * app: the state one ordersync process shares between its modules on the
 * loop. Owned and wired by server.c; the other modules borrow it.
 */
#ifndef OS_APP_H
#define OS_APP_H

#include <stdbool.h>
#include <uv.h>

#include "admin_host.h"
#include "config.h"
#include "console.h"
#include "console_auth.h"
#include "console_throttle.h"
#include "db.h"
#include "destinations.h"
#include "feed.h"
#include "http.h"
#include "http_client.h"
#include "ingest.h"
#include "relay.h"
#include "store.h"

struct app {
    uv_loop_t *loop;
    const struct config *cfg;
    struct http_server *http;
    struct http_server *admin_http;               /* NULL unless ORDERSYNC_ADMIN_LISTEN is set */
    struct db *db_ingest[INGEST_MAX_CONNECTIONS]; /* group commits, one batch in flight each */
    unsigned n_ingest;
    struct db *db_aux;          /* LISTEN, config reloads, schema checks */
    struct store *store;        /* sources */
    struct destinations *dests; /* destinations, for the relay and the feeds */
    struct ingest *ingest;
    struct feed *feed;
    /* server.c's own pointer to the relay (it owns the relay): *relay is NULL
       when the relay is off, and again once it is freed */
    struct relay *const *relay;
    struct console *console;                   /* the console's connection; NULL when it is off */
    struct console_auth console_auth;          /* keys from ORDERSYNC_ADMIN_TOKEN */
    struct console_throttle *console_throttle; /* wrong admin tokens per client address */
    struct admin_hosts admin_hosts;            /* Host headers the admin listener answers */
    struct http_client *test_http;             /* operators' test events; made at the first one */
    bool console_enabled;                      /* ORDERSYNC_ADMIN_TOKEN is set */
    bool schema_current;                       /* checked at every (re)connection of db_aux */
    bool stopping;
};

#endif
