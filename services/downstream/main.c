/*
 * downstream: the receiving systems ordersync is demoed and tested with, one
 * binary with a role:
 *
 *   downstream --role inventory|invoicing|shipping|sink [options]
 *
 *   inventory  reserves each order's lines by SKU; releases them on cancel
 *   invoicing  one invoice per paid order; credit notes on refund and cancel
 *   shipping   one shipment per paid order; shipped on fulfil, cancelled on cancel
 *   sink       no database: verifies, counts, answers 200 (benchmarks)
 *
 * It receives Standard Webhooks deliveries (POST any path), verifies them with
 * DOWNSTREAM_SECRET, applies each event and records its webhook-id in one
 * transaction in its own schema (named after the role, created at start) and
 * answers 200 only after COMMIT; a redelivery is answered 200 and changes
 * nothing. GET /state shows the result for a consistency checker.
 *
 * Settings, as flags or environment (`downstream --help` prints them all):
 *   --role / DOWNSTREAM_ROLE            required
 *   --listen / DOWNSTREAM_LISTEN        default 127.0.0.1:8091
 *   --database-url / DATABASE_URL       Postgres of the role's schema (not for sink)
 *   DOWNSTREAM_SECRET                   whsec_... (required; environment only)
 *   DOWNSTREAM_PREVIOUS_SECRET          also accepted during a rotation
 * Misbehaviour, for demos and fault tests (also at runtime: POST /control):
 *   --fail-rate / DOWNSTREAM_FAIL_RATE                 0..1: 500, nothing applied
 *   --fail-after-apply-rate / DOWNSTREAM_FAIL_AFTER_APPLY_RATE  0..1: applied, then 500
 *   --throttle-rate / DOWNSTREAM_THROTTLE_RATE         0..1: 429 + Retry-After
 *   --retry-after-s / DOWNSTREAM_RETRY_AFTER_S         Retry-After of a 429 (default 1)
 *   --latency-ms / DOWNSTREAM_LATENCY_MS               delay every answer (a timer)
 *   --down-after-s / DOWNSTREAM_DOWN_AFTER_S           503 window: opens N s after start
 *   --down-for-s / DOWNSTREAM_DOWN_FOR_S               ... and lasts this long (0: never)
 *   --seed / DOWNSTREAM_SEED                           reproducible fault sequence
 *
 * Start-up (options, schema) may block; after the loop starts nothing does.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "downstream.h"
#include "log.h"
#include "record.h"
#include "options.h"
#include "role.h"
#include "routes.h"
#include "hook.h"
#include "verify.h"

/* In-flight webhooks get this long after SIGTERM; then they are answered 503. */
#define SHUTDOWN_TIMEOUT_MS 5000
/* /state of a long benchmark can be large; lib/http's default queue cap is 4 MiB. */
#define MAX_WRITE_QUEUE ((size_t)256 << 20)

struct service {
    struct downstream ds;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t stop_timer;
    uint64_t stop_started_ms;
    int exit_code;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: downstream --role inventory|invoicing|shipping|sink [options]\n"
            "       downstream --help | --version\n"
            "\n"
            "A downstream system for ordersync's demos and tests: receives Standard Webhooks\n"
            "deliveries (POST any path), verifies them, applies each event once (deduplicated\n"
            "by webhook-id) in its own Postgres schema named after the role, and answers 200\n"
            "after COMMIT. GET /state shows the result, GET/POST /control the fault knobs,\n"
            "GET /healthz the process, GET /readyz the database connection.\n"
            "\n"
            "  inventory  reserves each order's lines by SKU; releases them on cancel\n"
            "  invoicing  one invoice per paid order; credit notes on refund and cancel\n"
            "  shipping   one shipment per paid order; shipped on fulfil, cancelled on cancel\n"
            "  sink       no database: verifies, counts, answers 200\n"
            "\n"
            "settings (flag or environment variable; a flag wins):\n");
    options_print(out);
}

/* Start-up: creates or updates the role's schema, blocking. */
static int install_schema(const struct options *o, const struct role *role)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    char app[64];
    snprintf(app, sizeof(app), "downstream-%s-startup", role->name);
    const char *vals[] = {o->database_url ? o->database_url : "", "10", app, NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        char detail[512];
        snprintf(detail, sizeof(detail), "%s", conn ? PQerrorMessage(conn) : "out of memory");
        size_t n = strlen(detail);
        while (n > 0 && (detail[n - 1] == '\n' || detail[n - 1] == ' '))
            detail[--n] = '\0';
        log_error("could not connect to the database",
                  json_pack("{s:s,s:s}", "detail", detail, "hint",
                            "set DATABASE_URL (or PG* variables) to a reachable PostgreSQL"));
        PQfinish(conn);
        return -1;
    }
    char err[512];
    int rc = role_install(role, conn, err, sizeof(err));
    PQfinish(conn);
    if (rc < 0) {
        log_error("could not create the schema",
                  json_pack("{s:s,s:s}", "schema", role->name, "detail", err));
        return -1;
    }
    log_info("schema is current", json_pack("{s:s}", "schema", role->name));
    return 0;
}

/* A secret that does not decode would turn every delivery into a 500: refuse to start. */
static int check_secret(const char *name, const char *secret)
{
    char sig[VERIFY_STANDARD_SIG_SIZE];
    if (secret == NULL ||
        verify_sign_standard("msg_check", 0, "", 0, secret, sig, sizeof(sig)) == 0)
        return 0;
    log_error("invalid secret",
              json_pack("{s:s,s:s}", "setting", name, "hint",
                        "use the destination's whsec_<base64> secret from ordersync"));
    return -1;
}

static void close_all(struct service *s)
{
    struct downstream *ds = &s->ds;
    uv_timer_stop(&s->stop_timer);
    uv_close((uv_handle_t *)&s->stop_timer, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    /* order: db_close answers the applying hooks, then the delayed ones, then
     * the server frees what remains (nothing owed by then) */
    db_close(&ds->db);
    hook_abort_all(ds);
    http_server_close(&ds->http, NULL, NULL);
    record_close(&ds->record);
}

static void on_stop_tick(uv_timer_t *t)
{
    struct service *s = t->data;
    size_t pending = http_server_pending(s->ds.http);
    if (pending > 0 && uv_now(&s->loop) - s->stop_started_ms < SHUTDOWN_TIMEOUT_MS)
        return;
    if (pending > 0)
        log_warn("shutdown timeout: answering in-flight webhooks 503",
                 json_pack("{s:i}", "pending", (int)pending));
    close_all(s);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct service *s = h->data;
    if (s->ds.stopping) {
        log_warn("second signal: exiting now", NULL);
        s->exit_code = 1;
        uv_timer_stop(&s->stop_timer);
        close_all(s);
        return;
    }
    log_info("shutting down", json_pack("{s:s}", "signal", strsignal(signum)));
    s->ds.stopping = true;
    http_server_stop_accepting(s->ds.http);
    s->stop_started_ms = uv_now(&s->loop);
    uv_timer_start(&s->stop_timer, on_stop_tick, 0, 20);
}

static const struct db_callbacks db_cbs = {0};

static int run(const struct options *o, const struct role *role)
{
    struct service *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return 1;
    struct downstream *ds = &s->ds;
    if (uv_loop_init(&s->loop) < 0) {
        free(s);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    ds->loop = &s->loop;
    list_init(&ds->hooks);
    ds->role = role;
    ds->secrets[0] = o->secret;
    ds->secrets[1] = o->previous_secret;
    faults_init(&ds->faults, &o->knobs, (uint64_t)o->seed, uv_now(ds->loop));

    int rc;
    if (role_has_db(role)) {
        rc = db_open(ds->loop, o->database_url, role->name, role->stmts, role->n_stmts, &db_cbs, ds,
                     &ds->db);
        if (rc < 0) {
            log_error("could not open the database", json_pack("{s:s}", "detail", strerror(-rc)));
            goto fail;
        }
    }
    struct http_server_config hcfg = {
        .host = o->listen.host,
        .port = o->listen.port,
        .max_write_queue = MAX_WRITE_QUEUE,
    };
    http_server_config_defaults(&hcfg);
    if (o->record != NULL && (rc = record_open(ds->loop, o->record, &ds->record)) < 0) {
        log_error("could not open the record file",
                  json_pack("{s:s,s:s}", "path", o->record, "detail", uv_strerror(rc)));
        goto fail;
    }
    rc = http_server_start(ds->loop, &hcfg, routes_handle, ds, &ds->http);
    if (rc < 0) {
        log_error("could not listen", json_pack("{s:s,s:i,s:s}", "host", o->listen.host, "port",
                                                o->listen.port, "detail", uv_strerror(rc)));
        goto fail;
    }
    log_info("listening", json_pack("{s:s,s:i,s:s,s:s}", "host", o->listen.host, "port",
                                    http_server_port(ds->http), "role", role->name, "version",
                                    ORDERSYNC_VERSION));

    uv_timer_init(ds->loop, &s->stop_timer);
    s->stop_timer.data = s;
    uv_signal_init(ds->loop, &s->sigterm);
    uv_signal_init(ds->loop, &s->sigint);
    s->sigterm.data = s->sigint.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);

    uv_run(ds->loop, UV_RUN_DEFAULT);
    int code = s->exit_code;
    uv_loop_close(ds->loop);
    free(s);
    log_info("stopped", json_pack("{s:i}", "exit_code", code));
    return code;

fail:
    http_server_close(&ds->http, NULL, NULL);
    db_close(&ds->db);
    record_close(&ds->record);
    uv_run(ds->loop, UV_RUN_DEFAULT);
    uv_loop_close(ds->loop);
    free(s);
    return 1;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("downstream (ordersync) %s\n", ORDERSYNC_VERSION);
            return 0;
        }
    }
    setvbuf(stderr, NULL, _IONBF, 0);
    log_set_service("downstream");
    struct options o;
    char err[256];
    if (options_load(&o, argc, argv, err, sizeof(err)) < 0) {
        log_error("invalid configuration", json_pack("{s:s}", "detail", err));
        options_free(&o);
        return 2;
    }
    enum log_level level;
    if (log_parse_level(o.log_level, &level) == 0)
        log_set_level(level);
    const struct role *role = role_find(o.role);
    int rc = 2;
    if (role == NULL) {
        log_error("invalid configuration", json_pack("{s:s,s:s}", "detail", "unknown role", "hint",
                                                     "use inventory, invoicing, shipping or sink"));
        goto out;
    }
    if (check_secret("DOWNSTREAM_SECRET", o.secret) < 0 ||
        check_secret("DOWNSTREAM_PREVIOUS_SECRET", o.previous_secret) < 0)
        goto out;
    rc = 1;
    if (role_has_db(role) && install_schema(&o, role) < 0)
        goto out;
    rc = run(&o, role);
out:
    options_free(&o);
    return rc;
}
