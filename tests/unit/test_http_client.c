/*
 * Unit tests for lib/http_client: its pure parts (reading Retry-After and
 * response header lines), then whole requests against lib/http's server on
 * 127.0.0.1 in the same libuv loop (nothing mocked: real sockets, real
 * libcurl). Each loop test ends with uv_loop_close() == 0, so every handle
 * was closed; ASan checks the memory.
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
#include <cmocka.h>

#include <curl/curl.h>
#include <uv.h>

#include "http.h"
#include "http_client.h"
#include "log.h"

static void delay_seconds(void **state)
{
    (void)state;
    assert_true(http_client_retry_after("0", 0) == 0);
    assert_true(http_client_retry_after("120", 0) == 120);
    assert_true(http_client_retry_after("86400", 0) == 86400);
    /* far out: a day at most, and never an overflow */
    assert_true(http_client_retry_after("86401", 0) == HTTP_CLIENT_RETRY_AFTER_MAX_S);
    assert_true(http_client_retry_after("99999999999999999999999999999999999999", 0) ==
                HTTP_CLIENT_RETRY_AFTER_MAX_S);
}

static void not_delay_seconds(void **state)
{
    (void)state;
    static const char *const bad[] = {"",    "1e308", "inf", "nan",      "-1",  "+5",
                                      "1.5", "0x10",  "5 s", "infinity", "NaN", "1e3"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_true(http_client_retry_after(bad[i], 0) == -1);
}

static void http_date(void **state)
{
    (void)state;
    time_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */
    assert_true(http_client_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now) == 60);
    assert_true(http_client_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now) == 0);
    assert_true(http_client_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) <=
                HTTP_CLIENT_RETRY_AFTER_MAX_S);
}

static void header_lines(void **state)
{
    (void)state;
    char v[16];
    /* as libcurl hands them over: with CRLF; the name in any case */
    const char *line = "ETag:  \"abc\" \t\r\n";
    assert_true(http_client_header_value(line, strlen(line), "etag", v, sizeof(v)));
    assert_string_equal(v, "\"abc\"");
    line = "Retry-After: 120\r\n";
    assert_true(http_client_header_value(line, strlen(line), "retry-after", v, sizeof(v)));
    assert_string_equal(v, "120");
    line = "Link:\r\n"; /* present and empty */
    assert_true(http_client_header_value(line, strlen(line), "link", v, sizeof(v)));
    assert_string_equal(v, "");
    /* only that header: not a longer name, not a shorter one, not the status line */
    line = "Retry-After-Ms: 5\r\n";
    assert_false(http_client_header_value(line, strlen(line), "retry-after", v, sizeof(v)));
    line = "Retry: 5\r\n";
    assert_false(http_client_header_value(line, strlen(line), "retry-after", v, sizeof(v)));
    line = "HTTP/1.1 200 OK\r\n";
    assert_false(http_client_header_value(line, strlen(line), "http/1.1 200 ok", v, sizeof(v)));
    /* cut to the room there is */
    line = "Link: <https://shop.example/orders?page_info=abcdef>; rel=next\r\n";
    assert_true(http_client_header_value(line, strlen(line), "link", v, sizeof(v)));
    assert_string_equal(v, "<https://shop.e");
    /* the length given counts, not a NUL */
    assert_false(http_client_header_value("etag: x", 4, "etag", v, sizeof(v)));
}

/* ---- whole requests against lib/http on the same loop ---- */

#define MAX_RESULTS 6

struct ctx;

struct got {
    struct ctx *t;
    bool done;
    long status;
    char error[128];
    double retry_after_s;
    char excerpt[HTTP_CLIENT_EXCERPT_MAX + 1];
    char body[2048];
    size_t body_len;
    bool truncated;
    bool aborted;
    long connects;
    char header[HTTP_CLIENT_MAX_CAPTURE][64];
};

struct ctx {
    uv_loop_t loop;
    struct http_server *srv;
    struct http_client *client;
    uv_timer_t closer;
    int port;
    struct got got[MAX_RESULTS];
    int expected, finished;
    struct http_request *held; /* /hold: answered by nobody */
    char seen_body[128];
    char seen_header[64];
};

/* The server: /ok, /big, /echo (POST), /peer (the client's address and its X-N), /hold
   (never answered). */
static void handler(struct http_request *req, void *data)
{
    struct ctx *t = data;
    const char *path = http_request_path(req);
    if (strcmp(path, "/ok") == 0) {
        const struct http_header h[] = {{"ETag", "\"v1\""}, {"Retry-After", "7"}};
        http_respond(req, 200, "text/plain", "hello", 5, h, 2);
    } else if (strcmp(path, "/big") == 0) {
        char body[1000];
        memset(body, 'x', sizeof(body));
        http_respond(req, 503, "text/plain", body, sizeof(body), NULL, 0);
    } else if (strcmp(path, "/echo") == 0) {
        size_t len;
        const char *body = http_request_body(req, &len);
        snprintf(t->seen_body, sizeof(t->seen_body), "%s %.*s", http_request_method(req), (int)len,
                 body);
        const char *h = http_request_header(req, "x-test");
        snprintf(t->seen_header, sizeof(t->seen_header), "%s", h != NULL ? h : "(none)");
        http_respond_json(req, 201, "{\"ok\":true}");
    } else if (strcmp(path, "/peer") == 0) {
        char body[96];
        const char *n = http_request_header(req, "x-n");
        snprintf(body, sizeof(body), "%s %s %s", http_request_peer(req), http_request_method(req),
                 n != NULL ? n : "-");
        http_respond(req, 200, "text/plain", body, strlen(body), NULL, 0);
    } else {
        t->held = req;
    }
}

static void on_closer(uv_timer_t *timer)
{
    struct ctx *t = timer->data;
    http_client_free(&t->client);
    http_server_close(&t->srv, NULL, NULL);
    uv_close((uv_handle_t *)&t->closer, NULL);
}

static void on_done(const struct http_client_result *res, void *data)
{
    struct got *g = data;
    struct ctx *t = g->t;
    g->done = true;
    g->status = res->http_status;
    snprintf(g->error, sizeof(g->error), "%s", res->error != NULL ? res->error : "");
    g->retry_after_s = res->retry_after_s;
    memcpy(g->excerpt, res->excerpt, sizeof(g->excerpt));
    if (res->body != NULL) {
        g->body_len = res->body_len < sizeof(g->body) - 1 ? res->body_len : sizeof(g->body) - 1;
        memcpy(g->body, res->body, g->body_len);
    }
    g->truncated = res->truncated;
    g->aborted = res->aborted;
    g->connects = res->connects;
    for (int i = 0; i < HTTP_CLIENT_MAX_CAPTURE; i++)
        snprintf(g->header[i], sizeof(g->header[i]), "%s", res->header[i]);
    /* http_client_free must not run inside its own callback: close on the next turn */
    if (++t->finished == t->expected && !uv_is_active((uv_handle_t *)&t->closer))
        uv_timer_start(&t->closer, on_closer, 0, 0);
}

static void setup_loop_idle(struct ctx *t, int expected, uint64_t server_idle_ms)
{
    memset(t, 0, sizeof(*t));
    assert_int_equal(uv_loop_init(&t->loop), 0);
    struct http_server_config cfg = {
        .host = "127.0.0.1", .port = 0, .idle_timeout_ms = server_idle_ms};
    assert_int_equal(http_server_start(&t->loop, &cfg, handler, t, &t->srv), 0);
    t->port = http_server_port(t->srv);
    assert_int_equal(http_client_new(&t->loop, "test/1", 4, &t->client), 0);
    uv_timer_init(&t->loop, &t->closer);
    t->closer.data = t;
    t->expected = expected;
    for (int i = 0; i < MAX_RESULTS; i++)
        t->got[i].t = t;
}

static void setup_loop(struct ctx *t, int expected)
{
    setup_loop_idle(t, expected, 0);
}

static void start(struct ctx *t, int i, const struct http_client_request *req)
{
    assert_int_equal(http_client_start(t->client, req, on_done, &t->got[i]), 0);
    assert_false(t->got[i].done); /* never called back from inside start */
}

static void run_to_end(struct ctx *t)
{
    assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
    assert_null(t->client);
    assert_int_equal(uv_loop_close(&t->loop), 0);
}

static void a_response_with_captured_headers(void **state)
{
    (void)state;
    struct ctx t;
    setup_loop(&t, 1);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", t.port);
    /* Retry-After is captured too: its value must still reach retry_after_s */
    static const char *const want[] = {"etag", "retry-after", "link", NULL};
    struct http_client_request req = {
        .url = url, .get = true, .timeout_ms = 5000, .capture = 64, .capture_headers = want};
    start(&t, 0, &req);
    assert_int_equal(http_client_in_flight(t.client), 1);
    run_to_end(&t);
    struct got *g = &t.got[0];
    assert_true(g->done);
    assert_int_equal(g->status, 200);
    assert_string_equal(g->error, "");
    assert_string_equal(g->body, "hello");
    assert_int_equal(g->body_len, 5);
    assert_string_equal(g->excerpt, "hello");
    assert_false(g->truncated);
    assert_false(g->aborted);
    assert_string_equal(g->header[0], "\"v1\"");
    assert_string_equal(g->header[1], "7");
    assert_string_equal(g->header[2], ""); /* absent */
    assert_true(g->retry_after_s == 7);
}

static void a_post_and_a_long_error_body(void **state)
{
    (void)state;
    struct ctx t;
    setup_loop(&t, 2);
    char echo[64], big[64];
    snprintf(echo, sizeof(echo), "http://127.0.0.1:%d/echo", t.port);
    snprintf(big, sizeof(big), "http://127.0.0.1:%d/big", t.port);
    static const char *const headers[] = {"X-Test: yes", "Content-Type: application/json", NULL};
    struct http_client_request post = {
        .url = echo, .body = "{\"a\":1}", .body_len = 7, .headers = headers, .timeout_ms = 5000};
    struct http_client_request get = {.url = big, .get = true, .timeout_ms = 5000, .capture = 100};
    start(&t, 0, &post);
    start(&t, 1, &get);
    assert_int_equal(http_client_in_flight(t.client), 2);
    run_to_end(&t);
    assert_int_equal(t.got[0].status, 201);
    assert_string_equal(t.seen_body, "POST {\"a\":1}");
    assert_string_equal(t.seen_header, "yes");
    assert_string_equal(t.got[0].excerpt, "{\"ok\":true}");
    assert_int_equal(t.got[0].body_len, 0); /* capture 0: the excerpt only */
    /* 1000 bytes: the excerpt keeps the start, the capture stops at its cap */
    assert_int_equal(t.got[1].status, 503);
    assert_int_equal(strlen(t.got[1].excerpt), HTTP_CLIENT_EXCERPT_MAX);
    assert_true(t.got[1].truncated);
    assert_true(t.got[1].body_len <= 100);
    assert_true(t.got[1].retry_after_s < 0); /* none sent */
}

static void a_refused_connection_is_a_transport_error(void **state)
{
    (void)state;
    struct ctx t;
    setup_loop(&t, 1);
    struct http_client_request req = {
        .url = "http://127.0.0.1:1/", .get = true, .timeout_ms = 5000};
    start(&t, 0, &req);
    run_to_end(&t);
    assert_int_equal(t.got[0].status, 0);
    assert_true(strlen(t.got[0].error) > 0);
    assert_false(t.got[0].aborted);
}

static void on_free_timer(uv_timer_t *timer)
{
    struct ctx *t = timer->data;
    /* the request is held by the server: freeing the client aborts it */
    assert_non_null(t->held);
    http_client_free(&t->client);
    http_server_close(&t->srv, NULL, NULL); /* frees the held request silently */
    uv_close((uv_handle_t *)timer, NULL);
}

static void freeing_the_client_aborts_what_is_in_flight(void **state)
{
    (void)state;
    struct ctx t;
    setup_loop(&t, 99); /* on_done must not schedule the closer */
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hold", t.port);
    struct http_client_request req = {.url = url, .get = true, .timeout_ms = 5000};
    start(&t, 0, &req);
    uv_close((uv_handle_t *)&t.closer, NULL);
    uv_timer_t later;
    uv_timer_init(&t.loop, &later);
    later.data = &t;
    uv_timer_start(&later, on_free_timer, 200, 0);
    run_to_end(&t);
    assert_true(t.got[0].done);
    assert_true(t.got[0].aborted);
    assert_int_equal(t.got[0].status, 0);
}

/*
 * Requests one after the other on a kept-alive connection: the first three
 * share it (the poll and the handle are kept; method and headers change
 * between them), then the server closes it while idle, and the next request
 * goes out on a new connection instead of failing or hanging.
 */
struct chain {
    struct ctx *t;
    char url[64];
    int next;
    uv_timer_t timer;
};

static void chain_send(uv_timer_t *timer);

static void on_chain_done(const struct http_client_result *res, void *data)
{
    struct got *g = data;
    struct chain *c = (struct chain *)g->t->held;
    on_done(res, data);
    if (c->next < 4) /* after the 3rd, wait past the server's idle timeout */
        uv_timer_start(&c->timer, chain_send, c->next == 3 ? 400 : 0, 0);
    else
        uv_close((uv_handle_t *)&c->timer, NULL);
}

static void chain_send(uv_timer_t *timer)
{
    struct chain *c = timer->data;
    int i = c->next++;
    char n[16];
    snprintf(n, sizeof(n), "X-N: %d", i);
    const char *headers[] = {n, NULL};
    struct http_client_request req = {.url = c->url,
                                      .get = i == 1,
                                      .body = "{}",
                                      .body_len = 2,
                                      .headers = headers,
                                      .timeout_ms = 5000};
    assert_int_equal(http_client_start(c->t->client, &req, on_chain_done, &c->t->got[i]), 0);
}

static void a_kept_connection_is_reused_and_replaced_when_the_server_closed_it(void **state)
{
    (void)state;
    struct ctx t;
    setup_loop_idle(&t, 4, 150);
    struct chain c = {.t = &t};
    snprintf(c.url, sizeof(c.url), "http://127.0.0.1:%d/peer", t.port);
    t.held = (struct http_request *)&c; /* no /hold here: the slot carries the chain */
    uv_timer_init(&t.loop, &c.timer);
    c.timer.data = &c;
    uv_timer_start(&c.timer, chain_send, 0, 0);
    run_to_end(&t);
    char peer[64], method[4][8], n[4][8];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(t.got[i].status, 200);
        assert_int_equal(sscanf(t.got[i].excerpt, "%63s %7s %7s", peer, method[i], n[i]), 3);
        char want[8];
        snprintf(want, sizeof(want), "%d", i);
        assert_string_equal(n[i], want); /* each request's own header, not a stale one */
    }
    assert_string_equal(method[0], "POST");
    assert_string_equal(method[1], "GET");
    assert_string_equal(method[2], "POST");
    assert_int_equal(t.got[0].connects, 1);
    assert_int_equal(t.got[1].connects, 0); /* the same connection */
    assert_int_equal(t.got[2].connects, 0);
    assert_int_equal(t.got[3].connects, 1); /* a new one after the idle close */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(delay_seconds),
        cmocka_unit_test(not_delay_seconds),
        cmocka_unit_test(http_date),
        cmocka_unit_test(header_lines),
        cmocka_unit_test(a_response_with_captured_headers),
        cmocka_unit_test(a_post_and_a_long_error_body),
        cmocka_unit_test(a_refused_connection_is_a_transport_error),
        cmocka_unit_test(freeing_the_client_aborts_what_is_in_flight),
        cmocka_unit_test(a_kept_connection_is_reused_and_replaced_when_the_server_closed_it),
    };
    /* a proxy from the environment would stand between client and server */
    setenv("no_proxy", "*", 1);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    log_set_level(LOG_ERROR);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
