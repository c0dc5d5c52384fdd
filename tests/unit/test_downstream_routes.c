/*
 * Unit tests for services/downstream/routes and hook: the downstream's HTTP
 * surface served by the real lib/http server on 127.0.0.1, called by the real
 * lib/http_client on the same libuv loop. The roles run without a database:
 * the sink (which verifies, counts and answers) and inventory with its
 * database away (which must answer 503 and ask for a retry).
 *
 * A test is a list of steps run one after the other (each starts when the
 * previous answered, so fault windows and counters are deterministic); the
 * answers are recorded and asserted once the loop has ended.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>

#include "downstream.h"
#include "hook.h"
#include "http_client.h"
#include "log.h"
#include "record.h"
#include "role.h"
#include "routes.h"
#include "verify.h"

#define SECRET    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define MAX_STEPS 24

static const char event_json[] =
    "{\"type\":\"order.created\",\"timestamp\":\"2026-01-02T03:04:05Z\","
    "\"data\":{\"source\":\"shop\",\"external_id\":\"1001\",\"currency\":\"EUR\"}}";

static const char teleported_json[] =
    "{\"type\":\"order.teleported\",\"data\":{\"source\":\"s\",\"external_id\":\"1\"}}";

enum sign { UNSIGNED, SIGNED, SIGNED_WRONG };

struct step {
    const char *method; /* NULL ends the list */
    const char *path;
    const char *body;
    enum sign sign;
    const char *content_type; /* NULL: application/json on a body */
    /* the answer */
    long status;
    char body_got[HTTP_CLIENT_EXCERPT_MAX + 1];
    char allow[64];
    char retry_after[16];
};

struct ctx {
    uv_loop_t loop;
    struct downstream ds;
    struct http_client *client;
    uv_timer_t closer;
    struct step *steps;
    int next;
    char url[128];
    char sig[96], ts[32], msg_id[64], ct[64]; /* the header lines of the step in flight */
    const char *headers[6];
};

/* Steps, written as a person reads them. */
#define GET(p)                                                                                     \
    {                                                                                              \
        .method = "GET", .path = (p)                                                               \
    }
#define POST(p, b, sg)                                                                             \
    {                                                                                              \
        .method = "POST", .path = (p), .body = (b), .sign = (sg)                                   \
    }
#define POST_AS(p, b, sg, ct)                                                                      \
    {                                                                                              \
        .method = "POST", .path = (p), .body = (b), .sign = (sg), .content_type = (ct)             \
    }
#define END                                                                                        \
    {                                                                                              \
        .method = NULL                                                                             \
    }

static const char *const capture[] = {"allow", "retry-after", NULL};

static void run_step(struct ctx *t);

static void on_closer(uv_timer_t *timer)
{
    struct ctx *t = timer->data;
    http_client_free(&t->client);
    hook_abort_all(&t->ds);
    http_server_close(&t->ds.http, NULL, NULL);
    record_close(&t->ds.record);
    uv_close((uv_handle_t *)&t->closer, NULL);
}

static void on_answer(const struct http_client_result *res, void *data)
{
    struct ctx *t = data;
    struct step *s = &t->steps[t->next];
    s->status = res->http_status;
    snprintf(s->body_got, sizeof(s->body_got), "%s", res->excerpt);
    snprintf(s->allow, sizeof(s->allow), "%s", res->header[0]);
    snprintf(s->retry_after, sizeof(s->retry_after), "%s", res->header[1]);
    t->next++;
    if (t->steps[t->next].method != NULL && res->http_status != 0)
        run_step(t);
    else
        uv_timer_start(&t->closer, on_closer, 0, 0); /* not from inside the client's callback */
}

static void run_step(struct ctx *t)
{
    struct step *s = &t->steps[t->next];
    snprintf(t->url, sizeof(t->url), "http://127.0.0.1:%d%s", http_server_port(t->ds.http),
             s->path);
    size_t n = 0;
    const char *body = s->body != NULL ? s->body : "";
    if (s->body != NULL) {
        snprintf(t->ct, sizeof(t->ct), "Content-Type: %s",
                 s->content_type ? s->content_type : "application/json");
        t->headers[n++] = t->ct;
    }
    if (s->sign != UNSIGNED) {
        time_t now = time(NULL);
        snprintf(t->msg_id, sizeof(t->msg_id), "webhook-id: msg_%d", t->next);
        snprintf(t->ts, sizeof(t->ts), "webhook-timestamp: %lld", (long long)now);
        const char *secret =
            s->sign == SIGNED ? SECRET : "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        char sig[VERIFY_STANDARD_SIG_SIZE];
        assert_int_equal(verify_sign_standard(t->msg_id + strlen("webhook-id: "), (int64_t)now,
                                              body, strlen(body), secret, sig, sizeof(sig)),
                         0);
        snprintf(t->sig, sizeof(t->sig), "webhook-signature: %s", sig);
        t->headers[n++] = t->msg_id;
        t->headers[n++] = t->ts;
        t->headers[n++] = t->sig;
    }
    t->headers[n] = NULL;
    bool get = strcmp(s->method, "GET") == 0;
    struct http_client_request req = {
        .url = t->url,
        .get = get,
        .body = get ? NULL : body,
        .body_len = get ? 0 : strlen(body),
        .headers = t->headers,
        .timeout_ms = 5000,
        .capture_headers = capture,
    };
    assert_int_equal(http_client_start(t->client, &req, on_answer, t), 0);
}

/*
 * Serves role `name` (no database; `record_path` may be NULL) and runs the
 * steps; returns when all answered and every handle is closed.
 */
static void serve(const char *name, struct step *steps, const char *record_path)
{
    struct ctx *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    assert_int_equal(uv_loop_init(&t->loop), 0);
    struct downstream *ds = &t->ds;
    ds->loop = &t->loop;
    list_init(&ds->hooks);
    ds->role = role_find(name);
    assert_non_null(ds->role);
    ds->secrets[0] = SECRET;
    struct fault_knobs knobs = {.retry_after_s = 1};
    faults_init(&ds->faults, &knobs, 42, uv_now(&t->loop));
    if (record_path != NULL)
        assert_int_equal(record_open(&t->loop, record_path, &ds->record), 0);
    struct http_server_config cfg = {.host = "127.0.0.1", .port = 0};
    assert_int_equal(http_server_start(&t->loop, &cfg, routes_handle, ds, &ds->http), 0);
    assert_int_equal(http_client_new(&t->loop, "test/1", 4, &t->client), 0);
    uv_timer_init(&t->loop, &t->closer);
    t->closer.data = t;
    t->steps = steps;
    run_step(t);
    assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&t->loop), 0);
    free(t);
}

static json_t *json_of(const struct step *s)
{
    json_error_t jerr;
    json_t *j = json_loads(s->body_got, 0, &jerr);
    assert_non_null(j);
    return j;
}

static const char *str_of(const json_t *j, const char *key)
{
    const char *v = json_string_value(json_object_get(j, key));
    assert_non_null(v);
    return v;
}

static void health_state_and_control(void **state)
{
    (void)state;
    struct step steps[MAX_STEPS] = {
        GET("/healthz"),
        GET("/readyz"),
        GET("/state"),
        POST("/state", "{}", UNSIGNED),
        GET("/control"),
        POST("/control", "{\"fail_rate\": 2}", UNSIGNED),
        POST("/control", "{not json", UNSIGNED),
        POST("/control", "{\"latency\": 1}", UNSIGNED),
        POST("/control", "{\"throttle_rate\": 0.5, \"retry_after_s\": 9}", UNSIGNED),
        GET("/hooks/inventory"),
        END,
    };
    serve("sink", steps, NULL);
    assert_int_equal(steps[0].status, 200);
    assert_string_equal(steps[0].body_got, "{\"status\":\"ok\"}");
    assert_int_equal(steps[1].status, 200);
    assert_string_equal(steps[1].body_got, "{\"status\":\"ready\"}");

    assert_int_equal(steps[2].status, 200);
    json_t *st = json_of(&steps[2]);
    assert_string_equal(str_of(st, "role"), "sink");
    assert_int_equal(json_integer_value(json_object_get(st, "received")), 0);
    assert_true(json_is_object(json_object_get(st, "injected")));
    json_decref(st);

    assert_int_equal(steps[3].status, 405);
    assert_string_equal(steps[3].allow, "GET");

    assert_int_equal(steps[4].status, 200);
    json_t *knobs = json_of(&steps[4]);
    assert_true(json_real_value(json_object_get(knobs, "fail_rate")) == 0);
    assert_int_equal(json_integer_value(json_object_get(knobs, "retry_after_s")), 1);
    assert_true(json_is_false(json_object_get(knobs, "down_now")));
    json_decref(knobs);

    assert_int_equal(steps[5].status, 400);
    json_t *e = json_of(&steps[5]);
    assert_string_equal(str_of(e, "error"), "invalid_knob");
    assert_string_equal(str_of(e, "detail"), "fail_rate must be a number from 0 to 1");
    json_decref(e);
    assert_int_equal(steps[6].status, 400);
    e = json_of(&steps[6]);
    assert_string_equal(str_of(e, "error"), "malformed_json");
    json_decref(e);
    assert_int_equal(steps[7].status, 400);
    e = json_of(&steps[7]);
    assert_string_equal(str_of(e, "detail"), "unknown knob \"latency\"");
    json_decref(e);

    /* a valid change answers the knobs as they now are */
    assert_int_equal(steps[8].status, 200);
    knobs = json_of(&steps[8]);
    assert_true(json_real_value(json_object_get(knobs, "throttle_rate")) == 0.5);
    assert_int_equal(json_integer_value(json_object_get(knobs, "retry_after_s")), 9);
    json_decref(knobs);

    /* any other path is a webhook path: POST only */
    assert_int_equal(steps[9].status, 405);
    assert_string_equal(steps[9].allow, "POST");
}

static void webhooks_are_verified_validated_and_counted(void **state)
{
    (void)state;
    char path[] = "/tmp/test_downstream_routes_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    struct step steps[MAX_STEPS] = {
        POST("/hooks/sink", event_json, SIGNED),
        POST("/hooks/sink", event_json, UNSIGNED),
        POST("/hooks/sink", event_json, SIGNED_WRONG),
        POST_AS("/hooks/sink", event_json, SIGNED, "text/plain"),
        POST("/hooks/sink", "{\"type\":\"order.created\",\"data\":{}}", SIGNED),
        POST("/hooks/sink", teleported_json, SIGNED),
        POST("/hooks/sink", "[1,2", SIGNED),
        /* a window of 503s, then state and health still answer inside it */
        POST("/control", "{\"down_after_s\": 0, \"down_for_s\": 30}", UNSIGNED),
        POST("/hooks/sink", event_json, SIGNED),
        GET("/healthz"),
        POST("/control", "{\"down_for_s\": 0, \"fail_after_apply_rate\": 1}", UNSIGNED),
        POST("/hooks/sink", event_json, SIGNED),
        GET("/state"),
        END,
    };
    serve("sink", steps, path);

    assert_int_equal(steps[0].status, 200);
    assert_string_equal(steps[0].body_got, "{\"outcome\":\"applied\"}");
    assert_int_equal(steps[1].status, 401);
    json_t *e = json_of(&steps[1]);
    assert_string_equal(str_of(e, "error"), "invalid_signature");
    assert_string_equal(str_of(e, "detail"), "webhook-id header is missing");
    json_decref(e);
    assert_int_equal(steps[2].status, 401);
    assert_int_equal(steps[3].status, 415);
    assert_int_equal(steps[4].status, 400);
    e = json_of(&steps[4]);
    assert_string_equal(str_of(e, "error"), "malformed_event");
    assert_string_equal(str_of(e, "detail"),
                        "data.source and data.external_id must be non-empty strings");
    json_decref(e);
    assert_int_equal(steps[5].status, 400);
    e = json_of(&steps[5]);
    assert_string_equal(str_of(e, "detail"), "unknown event type");
    json_decref(e);
    assert_int_equal(steps[6].status, 400);
    e = json_of(&steps[6]);
    assert_string_equal(str_of(e, "detail"), "the body is not valid JSON");
    json_decref(e);

    assert_int_equal(steps[7].status, 200);
    assert_int_equal(steps[8].status, 503);
    e = json_of(&steps[8]);
    assert_string_equal(str_of(e, "error"), "down");
    json_decref(e);
    int ra = atoi(steps[8].retry_after);
    assert_true(ra >= 29 && ra <= 30); /* the seconds left in the window */
    assert_int_equal(steps[9].status, 200);

    /* applied, then 500: the sender must redeliver */
    assert_int_equal(steps[10].status, 200);
    assert_int_equal(steps[11].status, 500);
    e = json_of(&steps[11]);
    assert_string_equal(str_of(e, "error"), "injected_failure");
    json_decref(e);

    json_t *st = json_of(&steps[12]);
    assert_int_equal(json_integer_value(json_object_get(st, "received")), 9);
    assert_int_equal(json_integer_value(json_object_get(st, "valid")), 6);
    assert_int_equal(json_integer_value(json_object_get(st, "invalid")), 2);
    assert_int_equal(json_integer_value(json_object_get(st, "malformed")), 4);
    assert_int_equal(json_integer_value(json_object_get(st, "applied")), 2);
    json_t *inj = json_object_get(st, "injected");
    assert_int_equal(json_integer_value(json_object_get(inj, "down")), 1);
    assert_int_equal(json_integer_value(json_object_get(inj, "fail_after_apply")), 1);
    json_decref(st);

    /* --record: one line per accepted event, in order */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[256];
    int n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        char id[32], type[32], what[64];
        long long us;
        assert_int_equal(sscanf(line, "%31[^\t]\t%31[^\t]\t%63[^\t]\t%lld", id, type, what, &us),
                         4);
        assert_string_equal(type, "order.created");
        assert_string_equal(what, "shop:1001");
        assert_true(us > 1700000000LL * 1000000);
        assert_string_equal(id, n == 0 ? "msg_0" : "msg_11");
        n++;
    }
    fclose(f);
    unlink(path);
    assert_int_equal(n, 2);
}

static void a_role_whose_database_is_away_asks_for_a_retry(void **state)
{
    (void)state;
    struct step steps[MAX_STEPS] = {
        GET("/readyz"),  GET("/state"), POST("/hooks/inventory", event_json, SIGNED),
        GET("/healthz"), END,
    };
    serve("inventory", steps, NULL); /* ds->db stays NULL: never connected */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(steps[i].status, 503);
        assert_string_equal(steps[i].retry_after, "1");
        json_t *e = json_of(&steps[i]);
        assert_string_equal(str_of(e, "error"), "database_unavailable");
        json_decref(e);
    }
    assert_int_equal(steps[3].status, 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_state_and_control),
        cmocka_unit_test(webhooks_are_verified_validated_and_counted),
        cmocka_unit_test(a_role_whose_database_is_away_asks_for_a_retry),
    };
    setenv("no_proxy", "*", 1); /* a proxy from the environment would stand in between */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    log_set_level(LOG_ERROR);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
