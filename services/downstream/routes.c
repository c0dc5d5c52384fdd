/*
 * routes: dispatch by path, and the small endpoints (state, control, health).
 * Only webhook deliveries see injected faults: a test must be able to read
 * /state and reset /control while the receiver is "down".
 */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "downstream.h"
#include "hook.h"
#include "log.h"

static void reply_json(struct http_request *req, int status, json_t *body)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    if (text == NULL)
        http_respond_error(req, 500, "internal_error", "out of memory", NULL, 0);
    else
        http_respond_json(req, status, text);
    free(text);
}

static void reply_method_not_allowed(struct http_request *req, const char *allow)
{
    struct http_header h = {"Allow", allow};
    http_respond_error(req, 405, "method_not_allowed", "see Allow", &h, 1);
}

/* The counters as a new object (NULL on ENOMEM). */
static json_t *counters_json(const struct ds_counters *c)
{
    json_t *injected = json_object();
    for (int f = FAULT_NONE + 1; injected != NULL && f < FAULT_KINDS; f++)
        json_object_set_new(injected, fault_name((enum fault)f),
                            json_integer((json_int_t)c->injected[f]));
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o?}", "received", (json_int_t)c->received,
                     "valid", (json_int_t)c->valid, "invalid", (json_int_t)c->invalid, "malformed",
                     (json_int_t)c->malformed, "applied", (json_int_t)c->applied, "duplicates",
                     (json_int_t)c->duplicates, "unavailable", (json_int_t)c->unavailable,
                     "injected", injected);
}

/* Role state (a new reference, may be NULL for the sink) + role + counters. */
static void reply_state(struct downstream *ds, struct http_request *req, json_t *state)
{
    json_t *body = state != NULL ? state : json_object();
    json_t *counters = counters_json(&ds->counters);
    if (body == NULL || counters == NULL || json_object_update(body, counters) < 0 ||
        json_object_set_new(body, "role", json_string(ds->role->name)) < 0) {
        json_decref(body);
        json_decref(counters);
        http_respond_error(req, 500, "internal_error", "out of memory", NULL, 0);
        return;
    }
    json_decref(counters);
    reply_json(req, 200, body);
    json_decref(body);
}

static void on_state(PGresult *res, const char *err, void *data)
{
    struct http_request *req = data;
    struct downstream *ds = http_request_get_data(req);
    if (res == NULL || err != NULL) {
        struct http_header h = {"Retry-After", "1"};
        http_respond_error(req, 503, "database_unavailable", err ? err : "connection lost", &h, 1);
        return;
    }
    static const char *const cols[] = {ROLE_COL_STATE};
    int col;
    json_error_t jerr;
    json_t *state = PQntuples(res) == 1 && db_columns(res, "state", cols, &col, 1) == 0
                        ? json_loads(PQgetvalue(res, 0, col), 0, &jerr)
                        : NULL;
    if (state == NULL) {
        http_respond_error(req, 500, "internal_error", "state() returned no JSON object", NULL, 0);
        return;
    }
    reply_state(ds, req, state);
}

static void handle_state(struct downstream *ds, struct http_request *req)
{
    if (!role_has_db(ds->role)) {
        reply_state(ds, req, NULL);
        return;
    }
    http_request_set_data(req, ds);
    if (ds->db == NULL || db_query(ds->db, true, ROLE_STMT_STATE, 0, NULL, on_state, req) < 0) {
        struct http_header h = {"Retry-After", "1"};
        http_respond_error(req, 503, "database_unavailable",
                           "the database is not connected; retry later", &h, 1);
    }
}

static void handle_control(struct downstream *ds, struct http_request *req)
{
    uint64_t now = uv_now(ds->loop);
    if (strcmp(http_request_method(req), "POST") == 0) {
        size_t len;
        const char *body = http_request_body(req, &len);
        json_error_t jerr;
        json_t *changes = json_loadb(body, len, 0, &jerr);
        char err[160];
        if (changes == NULL) {
            http_respond_error(req, 400, "malformed_json", jerr.text, NULL, 0);
            return;
        }
        int rc = faults_update(&ds->faults, changes, now, err, sizeof(err));
        json_decref(changes);
        if (rc < 0) {
            http_respond_error(req, 400, "invalid_knob", err, NULL, 0);
            return;
        }
        json_t *knobs = faults_to_json(&ds->faults, now);
        char *text = knobs ? json_dumps(knobs, JSON_COMPACT) : NULL;
        log_info("faults changed", json_pack("{s:s}", "knobs", text ? text : "?"));
        free(text);
        reply_json(req, 200, knobs);
        json_decref(knobs);
        return;
    }
    json_t *knobs = faults_to_json(&ds->faults, now);
    reply_json(req, 200, knobs);
    json_decref(knobs);
}

/* Ready = able to apply: the database is connected (the sink always is). */
static void handle_readyz(struct downstream *ds, struct http_request *req)
{
    if (!role_has_db(ds->role) || (ds->db != NULL && db_is_ready(ds->db))) {
        http_respond_json(req, 200, "{\"status\":\"ready\"}");
        return;
    }
    struct http_header h = {"Retry-After", "1"};
    http_respond_error(req, 503, "database_unavailable",
                       ds->db != NULL ? db_last_error(ds->db) : "closed", &h, 1);
}

void routes_handle(struct http_request *req, void *data)
{
    struct downstream *ds = data;
    const char *path = http_request_path(req);
    const char *method = http_request_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (strcmp(path, "/control") == 0) {
        if (get || post)
            handle_control(ds, req);
        else
            reply_method_not_allowed(req, "GET, POST");
        return;
    }
    bool state = strcmp(path, "/state") == 0, health = strcmp(path, "/healthz") == 0,
         ready = strcmp(path, "/readyz") == 0;
    if (state || health || ready) {
        if (!get)
            reply_method_not_allowed(req, "GET");
        else if (state)
            handle_state(ds, req);
        else if (health)
            http_respond_json(req, 200, "{\"status\":\"ok\"}");
        else
            handle_readyz(ds, req);
        return;
    }
    if (!post) {
        reply_method_not_allowed(req, "POST");
        return;
    }
    hook_start(ds, req);
}
