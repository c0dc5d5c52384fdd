/*
 * Unit tests for lib/http over real sockets on 127.0.0.1: the test thread runs
 * the libuv loop with the server; a plain blocking client runs in a second
 * thread and only records what it saw (cmocka asserts stay on the test thread,
 * checked after the loop ends). Each test ends with uv_loop_close() == 0, so
 * every handle and request was released; ASan checks the rest.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <uv.h>

#include "http.h"
#include "log.h"

enum mode {
    MODE_ECHO,  /* answer at once with "METHOD path query body" */
    MODE_DEFER, /* answer after the number of ms in the path (/d/300) */
    MODE_HOLD,  /* keep the request; the test answers (or not) after the client */
    MODE_BIG,   /* answer with a 32 KiB body */
};

struct ctx {
    uv_loop_t loop;
    struct http_server *srv;
    struct http_server_config cfg;
    int port;
    enum mode mode;
    uv_async_t client_done;
    uv_timer_t late;
    pthread_t thread;
    void (*client)(struct ctx *);
    /* Written by the client thread, read after pthread_join. */
    char got[8][16384];
    size_t got_len[8];
    int leftover_fd;
    long elapsed_ms;
    int n_responses;
    /* Loop thread only. */
    unsigned n_requests;
    size_t max_pending;
    uint64_t last_id;
    struct http_request *held[8];
    unsigned n_held;
    bool respond_late; /* MODE_HOLD: answer held requests after the client is done */
    bool gone_seen;
    bool closed;
    char header_seen[64];
};

/* ---- blocking client (runs in its own thread) ---- */

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int cl_connect(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void cl_send(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

/* Number of complete responses (interim 1xx included) at the start of s. */
static int count_responses(const char *s, size_t len)
{
    int n = 0;
    const char *p = s, *end = s + len;
    for (;;) {
        const char *hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (hdr_end == NULL)
            return n;
        size_t body = 0;
        const char *cl = memmem(p, (size_t)(hdr_end - p), "Content-Length: ", 16);
        if (cl != NULL)
            body = strtoul(cl + 16, NULL, 10);
        if ((size_t)(end - (hdr_end + 4)) < body)
            return n;
        p = hdr_end + 4 + body;
        n++;
    }
}

/* Reads into slot until `want` responses are complete, EOF (want < 0) or a timeout. */
static void cl_recv(struct ctx *t, int slot, int fd, int want)
{
    for (;;) {
        if (want >= 0 && count_responses(t->got[slot], t->got_len[slot]) >= want)
            return;
        size_t room = sizeof(t->got[slot]) - 1 - t->got_len[slot];
        if (room == 0)
            return;
        ssize_t n = recv(fd, t->got[slot] + t->got_len[slot], room, 0);
        if (n <= 0)
            return;
        t->got_len[slot] += (size_t)n;
        t->got[slot][t->got_len[slot]] = '\0';
    }
}

/* True when the server closed: recv gives EOF (or a reset), not a timeout. */
static bool cl_closed(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void *client_main(void *arg)
{
    struct ctx *t = arg;
    t->client(t);
    uv_async_send(&t->client_done);
    return NULL;
}

/* ---- server side (loop thread) ---- */

struct deferred {
    uv_timer_t timer;
    struct http_request *req;
};

static void on_deferred_closed(uv_handle_t *h)
{
    free(h->data);
}

static void echo(struct http_request *req)
{
    char out[512];
    size_t blen;
    const char *body = http_request_body(req, &blen);
    int n = snprintf(out, sizeof(out), "%s %s %s %.*s", http_request_method(req),
                     http_request_path(req), http_request_query(req), (int)blen, body);
    const struct http_header extra = {"X-Request-Id", "abc"};
    http_respond(req, 200, "text/plain", out, (size_t)n, &extra, 1);
}

static void on_deferred(uv_timer_t *tm)
{
    struct deferred *d = tm->data;
    echo(d->req);
    uv_close((uv_handle_t *)&d->timer, on_deferred_closed);
}

static void handler(struct http_request *req, void *data)
{
    struct ctx *t = data;
    t->n_requests++;
    assert_true(http_request_id(req) > t->last_id);
    t->last_id = http_request_id(req);
    assert_true(http_request_start_ns(req) > 0);
    assert_string_equal(http_request_peer(req), "127.0.0.1");
    assert_false(http_request_peer_gone(req));
    if (http_server_pending(t->srv) > t->max_pending)
        t->max_pending = http_server_pending(t->srv);
    const char *x = http_request_header(req, "X-Custom");
    if (x != NULL) {
        snprintf(t->header_seen, sizeof(t->header_seen), "%s", x);
        /* Stored names are lower-case whatever the client sent. */
        bool found = false;
        for (size_t i = 0; i < http_request_header_count(req); i++)
            found |= strcmp(http_request_header_at(req, i)->name, "x-custom") == 0;
        assert_true(found);
    }
    switch (t->mode) {
    case MODE_ECHO:
        echo(req);
        break;
    case MODE_DEFER: {
        struct deferred *d = calloc(1, sizeof(*d));
        assert_non_null(d);
        d->req = req;
        d->timer.data = d;
        uv_timer_init(&t->loop, &d->timer);
        const char *p = http_request_path(req);
        uint64_t ms = strncmp(p, "/d/", 3) == 0 ? strtoull(p + 3, NULL, 10) : 0;
        uv_timer_start(&d->timer, on_deferred, ms, 0);
        break;
    }
    case MODE_HOLD:
        assert_true(t->n_held < 8);
        t->held[t->n_held++] = req;
        break;
    case MODE_BIG: {
        static char big[32 * 1024];
        memset(big, 'b', sizeof(big));
        http_respond(req, 200, "text/plain", big, sizeof(big), NULL, 0);
        break;
    }
    }
}

static void on_server_closed(void *data)
{
    struct ctx *t = data;
    t->closed = true;
}

static void finish(struct ctx *t)
{
    http_server_close(&t->srv, on_server_closed, t);
}

static void on_late(uv_timer_t *tm)
{
    struct ctx *t = tm->data;
    for (unsigned i = 0; i < t->n_held; i++) {
        t->gone_seen = http_request_peer_gone(t->held[i]);
        http_respond_json(t->held[i], 200, "{\"late\":true}");
    }
    t->n_held = 0;
    assert_int_equal(http_server_pending(t->srv), 0);
    uv_close((uv_handle_t *)&t->late, NULL);
    finish(t);
}

static void on_client_done(uv_async_t *a)
{
    struct ctx *t = a->data;
    pthread_join(t->thread, NULL);
    uv_close((uv_handle_t *)&t->client_done, NULL);
    if (t->respond_late) {
        /* Give the server a moment to see the EOF before answering. */
        uv_timer_init(&t->loop, &t->late);
        t->late.data = t;
        uv_timer_start(&t->late, on_late, 100, 0);
        return;
    }
    finish(t);
}

static struct ctx *ctx_new(enum mode mode)
{
    struct ctx *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->mode = mode;
    t->cfg.host = "127.0.0.1";
    t->cfg.port = 0;
    return t;
}

static void run(struct ctx *t, void (*client)(struct ctx *))
{
    assert_int_equal(uv_loop_init(&t->loop), 0);
    assert_int_equal(http_server_start(&t->loop, &t->cfg, handler, t, &t->srv), 0);
    t->port = http_server_port(t->srv);
    assert_true(t->port > 0);
    t->client = client;
    t->client_done.data = t;
    assert_int_equal(uv_async_init(&t->loop, &t->client_done, on_client_done), 0);
    assert_int_equal(pthread_create(&t->thread, NULL, client_main, t), 0);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    assert_true(t->closed);
    assert_int_equal(uv_loop_close(&t->loop), 0);
}

static int contains(const struct ctx *t, int slot, const char *s)
{
    return strstr(t->got[slot], s) != NULL;
}

/* ---- tests ---- */

static void client_simple_get(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    cl_send(fd, "GET /orders/1?x=1&y=2 HTTP/1.1\r\nHost: a\r\nX-CUSTOM: hello\r\n\r\n");
    cl_recv(t, 0, fd, 1);
    close(fd);
}

static void simple_get(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    run(t, client_simple_get);
    const char *r = t->got[0];
    assert_true(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_true(contains(t, 0, "\r\nDate: "));
    assert_true(contains(t, 0, " GMT\r\n"));
    assert_true(contains(t, 0, "\r\nConnection: keep-alive\r\n"));
    assert_true(contains(t, 0, "\r\nContent-Type: text/plain\r\n"));
    assert_true(contains(t, 0, "\r\nX-Request-Id: abc\r\n"));
    const char *body = "GET /orders/1 x=1&y=2 ";
    char cl[64];
    snprintf(cl, sizeof(cl), "\r\nContent-Length: %zu\r\n", strlen(body));
    assert_true(contains(t, 0, cl));
    assert_true(strstr(r, "\r\n\r\n") != NULL);
    assert_string_equal(strstr(r, "\r\n\r\n") + 4, body);
    assert_string_equal(t->header_seen, "hello");
    free(t);
}

static void client_keep_alive(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    for (int i = 0; i < 3; i++) {
        char req[128];
        snprintf(req, sizeof(req), "GET /k%d HTTP/1.1\r\nHost: a\r\n\r\n", i);
        cl_send(fd, req);
        cl_recv(t, 0, fd, i + 1);
    }
    cl_send(fd, "GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    cl_recv(t, 0, fd, 4);
    t->n_responses = cl_closed(fd);
    close(fd);
    /* HTTP/1.0 without keep-alive: one answer, then close. */
    fd = cl_connect(t->port, 0);
    cl_send(fd, "GET /old HTTP/1.0\r\n\r\nGET /ignored HTTP/1.0\r\n\r\n");
    cl_recv(t, 1, fd, -1);
    close(fd);
    /* HTTP/1.0 asking for keep-alive keeps the connection. */
    fd = cl_connect(t->port, 0);
    cl_send(fd, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cl_recv(t, 2, fd, 1);
    cl_send(fd, "GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cl_recv(t, 2, fd, 2);
    close(fd);
}

static void keep_alive(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    run(t, client_keep_alive);
    assert_int_equal(count_responses(t->got[0], t->got_len[0]), 4);
    assert_true(contains(t, 0, "GET /k0"));
    assert_true(contains(t, 0, "GET /k2"));
    assert_true(contains(t, 0, "Connection: close\r\n"));
    assert_true(t->n_responses); /* closed after Connection: close */
    assert_int_equal(count_responses(t->got[1], t->got_len[1]), 1);
    assert_true(contains(t, 1, "Connection: close\r\n"));
    assert_false(contains(t, 1, "ignored"));
    assert_int_equal(count_responses(t->got[2], t->got_len[2]), 2);
    assert_true(contains(t, 2, "Connection: keep-alive\r\n"));
    assert_int_equal(t->n_requests, 7);
    free(t);
}

static void client_pipelined(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    /* Answered by the handler in reverse order of arrival. */
    cl_send(fd, "GET /d/300 HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /d/200 HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /d/100 HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /d/0 HTTP/1.1\r\nHost: a\r\n\r\n"
                "GET /d/50 HTTP/1.1\r\nHost: a\r\n\r\n");
    cl_recv(t, 0, fd, 5);
    close(fd);
}

static void pipelined_out_of_order(void **state)
{
    struct ctx *t = ctx_new(MODE_DEFER);
    t->cfg.max_pipelined = 3;
    run(t, client_pipelined);
    assert_int_equal(count_responses(t->got[0], t->got_len[0]), 5);
    const char *a = strstr(t->got[0], "GET /d/300");
    const char *b = strstr(t->got[0], "GET /d/200");
    const char *c = strstr(t->got[0], "GET /d/100");
    const char *d = strstr(t->got[0], "GET /d/0 ");
    const char *e = strstr(t->got[0], "GET /d/50");
    assert_true(a && b && c && d && e);
    assert_true(a < b && b < c && c < d && d < e);
    /* Parsing paused at max_pipelined unanswered requests. */
    assert_int_equal(t->max_pending, 3);
    assert_int_equal(t->n_requests, 5);
    free(t);
}

static void client_chunked(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    cl_send(fd, "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n");
    usleep(50 * 1000); /* the body arrives in two reads */
    cl_send(fd, "6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    cl_recv(t, 0, fd, 1);
    /* A Content-Length body on the same connection afterwards. */
    cl_send(fd, "PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
    cl_recv(t, 0, fd, 2);
    close(fd);
}

static void chunked_body(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    run(t, client_chunked);
    assert_int_equal(count_responses(t->got[0], t->got_len[0]), 2);
    assert_true(contains(t, 0, "POST /c  hello world"));
    assert_true(contains(t, 0, "PUT /p  abc"));
    free(t);
}

static void client_expect(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    cl_send(fd, "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    cl_recv(t, 0, fd, 1); /* the 100 comes before any body byte is sent */
    cl_send(fd, "hello");
    cl_recv(t, 0, fd, 2);
    close(fd);
    fd = cl_connect(t->port, 0);
    cl_send(fd, "POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                "Content-Length: 5000\r\n\r\n");
    cl_recv(t, 1, fd, -1);
    close(fd);
}

static void expect_continue(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    t->cfg.max_body = 1000;
    run(t, client_expect);
    assert_true(strncmp(t->got[0], "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 42) == 0);
    assert_true(contains(t, 0, "POST /e  hello"));
    assert_true(strncmp(t->got[1], "HTTP/1.1 413 ", 13) == 0);
    assert_false(contains(t, 1, "100 Continue"));
    assert_true(contains(t, 1, "Connection: close"));
    assert_int_equal(t->n_requests, 1);
    free(t);
}

/* Each error case: one request on its own connection, answer read until close. */
static const char *const error_requests[] = {
    "POST /x HTTP/1.1\r\nHost: a\r\n\r\n",                              /* 411 */
    "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n",      /* 413 */
    "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" /* 413 */
    "64\r\n0123456789012345678901234567890123456789012345678901234567890123456789"
    "012345678901234567890123456789\r\n"
    "64\r\n0123456789012345678901234567890123456789012345678901234567890123456789"
    "012345678901234567890123456789\r\n0\r\n\r\n",
    NULL,                   /* 431, built below */
    "GARBAGE \x01\r\n\r\n", /* 400 */
    "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", /* 400 */
};
static const char *const error_status[] = {
    "411 Length Required",   "413 Content Too Large",
    "413 Content Too Large", "431 Request Header Fields Too Large",
    "400 Bad Request",       "400 Bad Request"};
#define N_ERRORS 6

static void client_errors(struct ctx *t)
{
    static char long_header[4096];
    snprintf(long_header, sizeof(long_header),
             "GET / HTTP/1.1\r\nHost: a\r\nX-Long: %03000d\r\n\r\n", 7);
    for (int i = 0; i < N_ERRORS; i++) {
        int fd = cl_connect(t->port, 0);
        cl_send(fd, error_requests[i] != NULL ? error_requests[i] : long_header);
        /* Read until the server closes: the error must be followed by EOF. */
        char tmp[16384];
        size_t len = 0;
        for (;;) {
            ssize_t n = recv(fd, tmp + len, sizeof(tmp) - 1 - len, 0);
            if (n <= 0) {
                if (n == 0)
                    t->n_responses++; /* orderly close seen */
                break;
            }
            len += (size_t)n;
        }
        tmp[len] = '\0';
        memcpy(t->got[i], tmp, len + 1);
        t->got_len[i] = len;
        close(fd);
    }
}

static void error_answers(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    t->cfg.max_body = 150;
    t->cfg.max_header = 1024;
    run(t, client_errors);
    for (int i = 0; i < N_ERRORS; i++) {
        char want[64];
        snprintf(want, sizeof(want), "HTTP/1.1 %s\r\n", error_status[i]);
        assert_true(contains(t, i, want));
    }
    assert_int_equal(t->n_responses, N_ERRORS);
    assert_true(contains(t, 0, "Content-Type: application/json\r\n"));
    assert_true(contains(t, 0, "{\"error\":\"length_required\",\"detail\":"));
    assert_true(contains(t, 3, "\"error\":\"header_too_large\""));
    assert_int_equal(t->n_requests, 0);
    free(t);
}

static void client_slow_headers(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    long start = now_ms();
    cl_send(fd, "GET / HTTP/1.1\r\nHost: a\r\n");
    cl_recv(t, 0, fd, -1);
    t->elapsed_ms = now_ms() - start;
    close(fd);
}

static void header_timeout(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    t->cfg.header_timeout_ms = 200;
    run(t, client_slow_headers);
    assert_true(strncmp(t->got[0], "HTTP/1.1 408 Request Timeout\r\n", 30) == 0);
    assert_true(contains(t, 0, "\"error\":\"request_timeout\""));
    assert_true(t->elapsed_ms >= 150 && t->elapsed_ms < 3000);
    free(t);
}

/*
 * Sends `head`, then `drip` one byte at a time 100 ms apart, reading as it
 * goes (a response read late could be lost to the reset our next byte causes
 * once the server closed), until the server answered or the drip ran out.
 */
static void drip(struct ctx *t, const char *head, const char *drip)
{
    int fd = cl_connect(t->port, 0);
    long start = now_ms();
    cl_send(fd, head);
    for (const char *p = drip; *p != '\0'; p++) {
        ssize_t n = recv(fd, t->got[0] + t->got_len[0], sizeof(t->got[0]) - 1 - t->got_len[0],
                         MSG_DONTWAIT);
        if (n > 0) {
            t->got_len[0] += (size_t)n;
            t->got[0][t->got_len[0]] = '\0';
        }
        if (n == 0 || count_responses(t->got[0], t->got_len[0]) > 0)
            break;
        if (send(fd, p, 1, MSG_NOSIGNAL) != 1)
            break;
        usleep(100 * 1000);
    }
    cl_recv(t, 0, fd, 1);
    t->elapsed_ms = now_ms() - start;
    close(fd);
}

static void client_drip_body(struct ctx *t)
{
    static char body[41];
    memset(body, 'x', sizeof(body) - 1);
    drip(t, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n", body);
}

/* A byte every 100 ms never stalls the body for header_timeout: only the whole-request clock ends
 * it. */
static void request_timeout_despite_drip(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    t->cfg.header_timeout_ms = 1000;
    t->cfg.request_timeout_ms = 1500;
    run(t, client_drip_body);
    assert_true(strncmp(t->got[0], "HTTP/1.1 408 Request Timeout\r\n", 30) == 0);
    assert_true(contains(t, 0, "request not received whole within 1.5 s"));
    assert_true(contains(t, 0, "\r\nConnection: close\r\n"));
    assert_int_equal(t->n_requests, 0);
    free(t);
}

static void client_idle(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    cl_send(fd, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    cl_recv(t, 0, fd, 1);
    long start = now_ms();
    t->n_responses = cl_closed(fd);
    t->elapsed_ms = now_ms() - start;
    close(fd);
}

static void idle_close(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    t->cfg.idle_timeout_ms = 200;
    run(t, client_idle);
    assert_int_equal(count_responses(t->got[0], t->got_len[0]), 1);
    assert_true(t->n_responses);
    assert_true(t->elapsed_ms >= 150 && t->elapsed_ms < 3000);
    free(t);
}

static void client_max_conns(struct ctx *t)
{
    int a = cl_connect(t->port, 0);
    cl_send(a, "GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    cl_recv(t, 0, a, 1); /* a is surely accepted now */
    int b = cl_connect(t->port, 0);
    cl_send(b, "GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
    cl_recv(t, 1, b, -1);
    close(b);
    close(a);
}

static void max_conns(void **state)
{
    struct ctx *t = ctx_new(MODE_ECHO);
    t->cfg.max_conns = 1;
    run(t, client_max_conns);
    assert_true(contains(t, 0, "GET /first"));
    assert_true(strncmp(t->got[1], "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    assert_true(contains(t, 1, "\r\nRetry-After: 1\r\n"));
    assert_true(contains(t, 1, "\r\nConnection: close\r\n"));
    assert_true(contains(t, 1, "{\"error\":\"overloaded\""));
    assert_int_equal(t->n_requests, 1);
    free(t);
}

static void client_disconnect(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    cl_send(fd, "POST /held HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
    usleep(100 * 1000); /* let the server dispatch it */
    close(fd);
}

static void peer_gone_then_late_respond(void **state)
{
    struct ctx *t = ctx_new(MODE_HOLD);
    t->respond_late = true;
    run(t, client_disconnect);
    assert_int_equal(t->n_requests, 1);
    assert_true(t->gone_seen);
    free(t);
}

static void client_hold_and_wait(struct ctx *t)
{
    int fd = cl_connect(t->port, 0);
    cl_send(fd, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    usleep(100 * 1000);
    close(fd);
    fd = cl_connect(t->port, 0);
    cl_send(fd, "GET /c HTTP/1.1\r\nHost: a\r\n\r\n");
    usleep(100 * 1000);
    /* Left open: http_server_close must close it and free the held requests. */
    t->leftover_fd = fd;
}

static void server_close_frees_unanswered(void **state)
{
    struct ctx *t = ctx_new(MODE_HOLD);
    run(t, client_hold_and_wait);
    close(t->leftover_fd);
    assert_int_equal(t->n_requests, 3);
    free(t);
}

static void client_slow_reader(struct ctx *t)
{
    int fd = cl_connect(t->port, 4096);
    char req[64 * 30];
    req[0] = '\0';
    for (int i = 0; i < 30; i++)
        strcat(req, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n");
    for (int round = 0; round < 40; round++)
        cl_send(fd, req);
    usleep(1200 * 1000); /* read nothing: the server must give up on us */
    long start = now_ms();
    size_t total = 0;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        total += (size_t)n;
    }
    t->elapsed_ms = now_ms() - start;
    t->n_responses = (int)(total / (32 * 1024));
    close(fd);
}

static void slow_reader_bounded(void **state)
{
    struct ctx *t = ctx_new(MODE_BIG);
    t->cfg.max_write_queue = 64 * 1024;
    t->cfg.write_timeout_ms = 300;
    run(t, client_slow_reader);
    /* It stopped parsing once the queue was full, and dropped the peer. */
    print_message("requests %u responses %d elapsed %ld\n", t->n_requests, t->n_responses,
                  t->elapsed_ms);
    assert_true(t->n_requests < 1200);
    assert_true(t->n_responses < 1200);
    assert_true(t->elapsed_ms < 4000);
    free(t);
}

int main(void)
{
    log_set_level(getenv("TEST_LOG")
                      ? LOG_DEBUG
                      : LOG_ERROR); /* expected warnings would clutter the test output */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(simple_get),
        cmocka_unit_test(keep_alive),
        cmocka_unit_test(pipelined_out_of_order),
        cmocka_unit_test(chunked_body),
        cmocka_unit_test(expect_continue),
        cmocka_unit_test(error_answers),
        cmocka_unit_test(header_timeout),
        cmocka_unit_test(request_timeout_despite_drip),
        cmocka_unit_test(idle_close),
        cmocka_unit_test(max_conns),
        cmocka_unit_test(peer_gone_then_late_respond),
        cmocka_unit_test(server_close_frees_unanswered),
        cmocka_unit_test(slow_reader_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
