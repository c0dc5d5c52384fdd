/*
 * config: the settings table. Adding a setting = one field in struct config
 * and one row below; --help, the README table (scripts/check-readme) and
 * validation follow from the row.
 */
#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http.h"

enum setting_type { T_STRING, T_INT, T_BOOL, T_LISTEN };

struct setting {
    const char *name;
    enum setting_type type;
    const char *def; /* NULL: unset */
    int64_t min, max;
    size_t offset;
    const char *description;
};

#define F(field) offsetof(struct config, field)

static const struct setting settings[] = {
    {"DATABASE_URL", T_STRING, NULL, 0, 0, F(database_url),
     "libpq connection string or URL; when unset, libpq's PG* variables apply"},
    {"ORDERSYNC_LISTEN", T_LISTEN, "0.0.0.0:8080", 0, 0, F(listen),
     "address:port of the HTTP server (port 0 picks a free one)"},
    {"ORDERSYNC_ADMIN_LISTEN", T_LISTEN, NULL, 0, 0, F(admin_listen),
     "address:port of the admin listener: /healthz, /readyz and /metrics outside "
     "ORDERSYNC_MAX_CONNECTIONS, and the operator console (unset: off)"},
    {"ORDERSYNC_ADMIN_TOKEN", T_STRING, NULL, 0, 0, F(admin_token),
     "turns on the operator console at /console on the admin listener: its bearer token and"
     " login password, at least 16 characters (unset: the console is off)"},
    {"ORDERSYNC_MIGRATE_ON_START", T_BOOL, "0", 0, 1, F(migrate_on_start),
     "apply pending migrations at start instead of refusing to run"},
    {"ORDERSYNC_LOG_LEVEL", T_STRING, "info", 0, 0, F(log_level), "debug, info, warn or error"},
    {"ORDERSYNC_MAX_BODY", T_INT, "1048576", 1024, 67108864, F(max_body),
     "largest accepted request body in bytes (413 above)"},
    {"ORDERSYNC_MAX_HEADER", T_INT, "16384", 1024, 1048576, F(max_header),
     "largest request line + headers in bytes (431 above)"},
    {"ORDERSYNC_MAX_CONNECTIONS", T_INT, "1024", 1, 100000, F(max_connections),
     "open client connections; more are answered 503 and closed"},
    {"ORDERSYNC_HEADER_TIMEOUT_MS", T_INT, "10000", 10, 600000, F(header_timeout_ms),
     "time a client has to send complete request headers, and the longest pause inside a body "
     "(408 after)"},
    {"ORDERSYNC_REQUEST_TIMEOUT_S", T_INT, "30", 1, 3600, F(request_timeout_s),
     "a whole request, headers and body, must arrive within this (408 after)"},
    {"ORDERSYNC_IDLE_TIMEOUT_MS", T_INT, "60000", 10, 3600000, F(idle_timeout_ms),
     "idle keep-alive connections are closed after this"},
    {"ORDERSYNC_BATCH_MAX", T_INT, "256", 1, 10000, F(batch_max),
     "most webhooks committed in one transaction (group commit)"},
    {"ORDERSYNC_INGEST_QUEUE_MAX", T_INT, "2048", 16, 1000000, F(ingest_queue_max),
     "webhooks waiting for their commit at most; more are answered 503 + Retry-After at once"},
    {"ORDERSYNC_INGEST_CONNECTIONS", T_INT, "2", 1, 16, F(ingest_connections),
     "database connections committing batches in parallel"},
    {"ORDERSYNC_RETRY_AFTER_S", T_INT, "5", 1, 3600, F(retry_after_s),
     "Retry-After sent with 503 when Postgres is unavailable"},
    {"ORDERSYNC_RELOAD_INTERVAL_S", T_INT, "30", 1, 86400, F(reload_interval_s),
     "sources/destinations are reloaded on change (NOTIFY) and at least this often"},
    {"ORDERSYNC_SHUTDOWN_TIMEOUT_S", T_INT, "10", 1, 600, F(shutdown_timeout_s),
     "on SIGTERM/SIGINT, time given to in-flight work before exiting"},
    {"ORDERSYNC_DB_CONNECT_TIMEOUT_S", T_INT, "5", 1, 600, F(db_connect_timeout_s),
     "start-up connections (migrate, schema check, replay) give up after this"},
    {"ORDERSYNC_RELAY", T_BOOL, "1", 0, 1, F(relay_enabled),
     "deliver events to destinations from this process (0: ingest only)"},
    {"ORDERSYNC_LEASE_S", T_INT, "60", 5, 3600, F(lease_s),
     "a destination's stream, or a claimed delivery, passes to another instance this long after"
     " its process died"},
    {"ORDERSYNC_CLAIM_BATCH", T_INT, "256", 1, 10000, F(claim_batch),
     "most events read from a stream, or deliveries claimed, in one query"},
    {"ORDERSYNC_SWEEP_INTERVAL_S", T_INT, "30", 1, 3600, F(sweep_interval_s),
     "how often expired leases and due retries are looked for without a wake-up"},
    {"ORDERSYNC_RETENTION", T_STRING, "30 days", 0, 0, F(retention),
     "events, webhooks received and delivery records are kept this long (a PostgreSQL interval),"
     " then dropped a partition at a time; nothing undelivered is dropped; dedupe keys are kept"
     " at least 7 days"},
    {"ORDERSYNC_PARTITION_INTERVAL", T_STRING, "1 day", 0, 0, F(partition_interval),
     "time span of one partition of the event store (a PostgreSQL interval, at least 1 minute)"},
    {"ORDERSYNC_INSTANCE", T_STRING, NULL, 0, 0, F(instance),
     "name of this process in leases and logs; hostname:pid when unset"},
};

#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

static int parse_bool(const char *v, bool *out)
{
    if (strcmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
        strcasecmp(v, "on") == 0) {
        *out = true;
        return 0;
    }
    if (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0 ||
        strcasecmp(v, "off") == 0) {
        *out = false;
        return 0;
    }
    return -EINVAL;
}

static int parse_listen(const char *v, struct config_addr *addr)
{
    char *host;
    int port;
    int rc = http_parse_listen(v, &host, &port);
    if (rc < 0)
        return rc;
    free(addr->host);
    addr->host = host;
    addr->port = port;
    return 0;
}

static int apply(struct config *cfg, const struct setting *s, const char *v, char *err,
                 size_t errlen)
{
    char *field = (char *)cfg + s->offset;
    switch (s->type) {
    case T_STRING: {
        char *copy = strdup(v);
        if (copy == NULL)
            return -ENOMEM;
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case T_BOOL:
        if (parse_bool(v, (bool *)field) < 0) {
            snprintf(err, errlen, "%s: \"%s\" is not a boolean (use 0 or 1)", s->name, v);
            return -EINVAL;
        }
        return 0;
    case T_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || n < s->min || n > s->max) {
            snprintf(err, errlen, "%s: \"%s\" is not an integer in [%lld, %lld]", s->name, v,
                     (long long)s->min, (long long)s->max);
            return -EINVAL;
        }
        *(int64_t *)field = n;
        return 0;
    }
    case T_LISTEN:
        if (parse_listen(v, (struct config_addr *)field) < 0) {
            snprintf(err, errlen, "%s: \"%s\" is not host:port", s->name, v);
            return -EINVAL;
        }
        return 0;
    }
    abort();
}

int config_load(struct config *cfg, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        const char *v = getenv(s->name);
        if (v != NULL && *v == '\0')
            v = NULL;
        if (s->def != NULL) {
            int rc = apply(cfg, s, s->def, err, errlen);
            if (rc < 0)
                goto fail;
        }
        if (v != NULL) {
            int rc = apply(cfg, s, v, err, errlen);
            if (rc < 0)
                goto fail;
        }
    }
    if (cfg->instance == NULL) {
        char host[256] = "ordersync";
        gethostname(host, sizeof(host) - 1);
        host[sizeof(host) - 1] = '\0';
        char name[300];
        snprintf(name, sizeof(name), "%s:%ld", host, (long)getpid());
        cfg->instance = strdup(name);
        if (cfg->instance == NULL)
            goto fail;
    }
    return 0;
fail:
    config_free(cfg);
    return -EINVAL;
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        char *field = (char *)cfg + s->offset;
        if (s->type == T_STRING) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (s->type == T_LISTEN) {
            free(((struct config_addr *)field)->host);
            ((struct config_addr *)field)->host = NULL;
        }
    }
}

void config_print(FILE *out, bool markdown)
{
    if (markdown) {
        fprintf(out, "| setting | default | range | meaning |\n|---|---|---|---|\n");
    }
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *s = &settings[i];
        char range[64] = "";
        if (s->type == T_INT)
            snprintf(range, sizeof(range), "%lld..%lld", (long long)s->min, (long long)s->max);
        else if (s->type == T_BOOL)
            snprintf(range, sizeof(range), "0 or 1");
        if (markdown)
            fprintf(out, "| `%s` | %s%s%s | %s | %s |\n", s->name, s->def ? "`" : "",
                    s->def ? s->def : "(unset)", s->def ? "`" : "", range, s->description);
        else
            fprintf(out, "  %-32s %s (default: %s%s%s)\n", s->name, s->description,
                    s->def ? s->def : "unset", range[0] ? ", " : "", range);
    }
}
