/*
 * config: every process-level setting of ordersync, read from the environment
 * at start-up. One table (config.c, read by lib/settings.h) holds name, type,
 * default, bounds and description; `ordersync --help` and the README's
 * settings list come from it.
 * Sources and destinations are not here: they live in Postgres (see store.h).
 */
#ifndef OS_CONFIG_H
#define OS_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "settings.h"

struct config {
    char *database_url;         /* NULL: libpq's PG* variables decide */
    char *session_database_url; /* NULL: database_url serves every connection */
    struct settings_addr listen;
    struct settings_addr admin_listen; /* /healthz, /readyz, /metrics outside the connection cap */
    char *admin_token;                 /* opens the console (NULL: the console is off) */
    char *admin_hosts;                 /* Host names the admin listener answers, besides its own */
    bool console_secure;               /* Secure + __Host- cookies whatever the request says */
    int64_t console_idle_timeout_s;    /* a session unused this long ends */
    bool migrate_on_start;
    int64_t migrate_lock_timeout_ms;
    int64_t migrate_retries;
    char *log_level;
    int64_t max_body;
    int64_t max_header;
    int64_t max_connections;
    int64_t header_timeout_ms;
    int64_t request_timeout_s;
    int64_t idle_timeout_ms;
    int64_t batch_max;
    int64_t ingest_queue_max;
    int64_t ingest_connections;
    int64_t retry_after_s;
    int64_t reload_interval_s;
    int64_t shutdown_timeout_s;
    int64_t db_connect_timeout_s;
    bool relay_enabled;
    int64_t lease_s;
    int64_t claim_batch;
    int64_t sweep_interval_s;
    char *alert_destination; /* NULL: no operational alerts */
    int64_t alert_interval_s;
    char *retention;
    char *partition_interval;
    char *instance;
    /* not settings: worked out at start-up */
    uint64_t maintain_every_ms;
};

/*
 * Fills `cfg` from defaults and the environment (getenv). On a bad value
 * returns -EINVAL (-ENOMEM when out of memory) and writes the reason to `err`;
 * `cfg` then holds nothing to free. The strings in cfg are new allocations:
 * release with config_free().
 */
int config_load(struct config *cfg, char *err, size_t errlen) __attribute__((warn_unused_result));
void config_free(struct config *cfg);
/* Writes the settings table: as plain text for --help, or as a Markdown table. */
void config_print(FILE *out, bool markdown);

#endif
