/*
 * http: the connection side of the HTTP/1.1 server (parsing is http_parse.c,
 * response bytes are made by http_response.c).
 *
 * Each connection is a struct http_conn with a state enum changed by the
 * conn_* functions below: ACTIVE (reading and parsing), DRAINING (no more
 * requests will be parsed; answering those queued, then close), LINGER (last
 * response written, our FIN sent, discarding input briefly so the kernel does
 * not answer unread bytes with a RST that destroys the response in flight),
 * CLOSED (uv_close called; the struct lives on while the application still
 * holds requests of it).
 *
 * Requests sit in a per-connection FIFO in arrival order. A response is
 * formatted straight into the output buffer when its request is at the head;
 * one answered early waits in its request's own buffer. Output is flushed once
 * per read callback, so synchronous answers to pipelined requests leave in one
 * write. Request objects come from a per-server free list.
 */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "buf.h"
#include "http_deadline.h"
#include "http_parse.h"
#include "http_response.h"
#include "list.h"
#include "log.h"

/* One read buffer per server: libuv calls alloc and read back to back, and
 * any unparsed remainder is copied out, so connections can share it. */
#define READ_BUF_SIZE (64 * 1024)
/* Requests kept for reuse; beyond that they are freed (a burst must not pin memory). */
#define POOL_MAX 1024
/* A pooled request drops buffers larger than this. */
#define POOL_KEEP_BYTES (64 * 1024)
/* How long a closing connection discards input after our last response. */
#define LINGER_MS 1000

enum conn_state { CONN_ACTIVE, CONN_DRAINING, CONN_LINGER, CONN_CLOSED };

enum req_state { REQ_PARSING, REQ_HANDLER, REQ_ANSWERED };

struct http_conn;

struct http_request {
    struct http_message msg;
    struct http_server *srv;
    struct http_conn *conn; /* counted reference while state == REQ_HANDLER */
    struct list_node node;  /* in its connection's queue, or in the server's pool */
    enum req_state state;
    bool internal;   /* error answer made by the server: no handler involved */
    bool close;      /* its response says Connection: close */
    struct buf resp; /* response held until the requests before it are written */
    uint64_t id;
    uint64_t start_ns;
    void *data;
};

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    struct http_server *srv;
    struct list_node node; /* srv->conns */
    enum conn_state state;
    int handles;   /* open uv handles (tcp, timer) */
    unsigned refs; /* 1 while handles are open + 1 per request the handler holds */
    bool overflow; /* accepted over max_conns, only gets the 503 */
    bool reading;
    bool writing;
    bool in_parse; /* parsing now: responses wait for one flush at the end */
    bool continue_owed;
    struct http_parser parser;
    struct http_request *cur; /* being parsed */
    struct list_node queue;   /* requests not yet written, in request order */
    unsigned n_queued;
    size_t held_bytes; /* sum of resp.len of requests answered ahead of their turn */
    struct buf in;     /* unparsed bytes kept while parsing is paused */
    struct buf out;    /* response bytes not yet handed to libuv */
    struct buf wbuf;   /* bytes of the uv_write in flight */
    /* Deadlines in uv_now() milliseconds, 0 when not armed; one timer serves all. */
    struct http_deadline rx; /* receiving a request: head, body, whole (http_deadline.h) */
    uint64_t write_deadline;
    uint64_t idle_deadline;
    uint64_t linger_deadline;
    uint64_t timer_due;
    char peer[64];
};

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct http_server_config cfg;
    struct http_deadline_limits rx_limits;
    http_handler_fn handler;
    void *data;
    struct list_node conns;
    unsigned n_active;
    unsigned n_overflow;
    size_t pending;
    uint64_t next_id;
    struct list_node pool; /* released requests kept for reuse, most recent first */
    unsigned pool_len;
    char *rbuf;
    int port;
    bool listener_open;
    bool listener_closing;
    bool closing;
    bool busy; /* inside http_server_close: do not free the server yet */
    void (*done)(void *data);
    void *done_data;
    struct http_response_date date;
};

static void conn_update(struct http_conn *c);
static void conn_flush(struct http_conn *c);
static void conn_close(struct http_conn *c, enum log_level level, const char *reason,
                       const char *detail);

void http_server_config_defaults(struct http_server_config *cfg)
{
    if (cfg->max_header == 0)
        cfg->max_header = 16 * 1024;
    if (cfg->max_body == 0)
        cfg->max_body = 1024 * 1024;
    if (cfg->max_conns == 0)
        cfg->max_conns = 1024;
    if (cfg->max_pipelined == 0)
        cfg->max_pipelined = 32;
    if (cfg->header_timeout_ms == 0)
        cfg->header_timeout_ms = 10000;
    if (cfg->request_timeout_ms == 0)
        cfg->request_timeout_ms = 30000;
    if (cfg->idle_timeout_ms == 0)
        cfg->idle_timeout_ms = 60000;
    if (cfg->write_timeout_ms == 0)
        cfg->write_timeout_ms = 30000;
    if (cfg->max_write_queue == 0)
        cfg->max_write_queue = 4 * 1024 * 1024;
}

/* ---- request pool ---- */

/* Returns a new or recycled request, or NULL when out of memory. */
static struct http_request *req_get(struct http_server *srv)
{
    struct http_request *req;
    struct list_node *n = list_first(&srv->pool);
    if (n != NULL) {
        list_remove(n);
        srv->pool_len--;
        req = list_entry(n, struct http_request, node);
    } else {
        req = calloc(1, sizeof(*req));
        if (req == NULL)
            return NULL;
        list_init(&req->node);
        http_message_init(&req->msg, srv->cfg.max_header, srv->cfg.max_body);
        buf_init(&req->resp, srv->cfg.max_write_queue);
    }
    req->srv = srv;
    req->conn = NULL;
    req->state = REQ_PARSING;
    req->internal = false;
    req->close = false;
    req->id = 0;
    req->start_ns = 0;
    req->data = NULL;
    return req;
}

/* `req` must be on no queue. */
static void req_release(struct http_request *req)
{
    struct http_server *srv = req->srv;
    if (srv->pool_len >= POOL_MAX || srv->closing) {
        http_message_free(&req->msg);
        buf_free(&req->resp);
        free(req);
        return;
    }
    http_message_reset(&req->msg, POOL_KEEP_BYTES);
    if (req->resp.alloc > POOL_KEEP_BYTES)
        buf_free(&req->resp);
    buf_reset(&req->resp);
    list_prepend(&srv->pool, &req->node);
    srv->pool_len++;
}

/* ---- connection bookkeeping ---- */

static void conn_log(const struct http_conn *c, enum log_level level, const char *reason,
                     const char *detail)
{
    if (!log_enabled(level))
        return;
    log_json(level, "closing connection",
             json_pack("{s:s,s:s,s:s?}", "peer", c->peer, "reason", reason, "detail", detail));
}

static size_t conn_queued_bytes(const struct http_conn *c)
{
    return c->out.len + c->wbuf.len + c->held_bytes;
}

static bool conn_may_parse(const struct http_conn *c)
{
    const struct http_server_config *cfg = &c->srv->cfg;
    return c->state == CONN_ACTIVE && c->n_queued < cfg->max_pipelined &&
           conn_queued_bytes(c) < cfg->max_write_queue;
}

/* The oldest request not yet written, or NULL. */
static struct http_request *conn_head(const struct http_conn *c)
{
    struct list_node *n = list_first(&c->queue);
    return n != NULL ? list_entry(n, struct http_request, node) : NULL;
}

static void conn_enqueue(struct http_conn *c, struct http_request *req)
{
    list_append(&c->queue, &req->node);
    c->n_queued++;
}

static void conn_unlink(struct http_conn *c, struct http_request *req)
{
    if (!list_linked(&req->node))
        abort(); /* a request always sits in its connection's queue */
    list_remove(&req->node);
    c->n_queued--;
}

static void server_maybe_finish(struct http_server *srv)
{
    if (!srv->closing || srv->busy || !list_empty(&srv->conns) || srv->listener_open)
        return;
    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &srv->pool)
    {
        struct http_request *req = list_entry(n, struct http_request, node);
        http_message_free(&req->msg);
        buf_free(&req->resp);
        free(req);
    }
    free(srv->rbuf);
    void (*done)(void *) = srv->done;
    void *done_data = srv->done_data;
    free(srv);
    if (done != NULL)
        done(done_data);
}

/* Frees the connection; only once its handles are closed and no request refers to it. */
static void conn_free(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    list_remove(&c->node);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->wbuf);
    free(c);
    server_maybe_finish(srv);
}

static void conn_unref(struct http_conn *c)
{
    if (c->refs == 0)
        abort();
    if (--c->refs == 0)
        conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct http_conn *c = h->data;
    if (--c->handles == 0)
        conn_unref(c);
}

/*
 * Closes the socket now. Requests the handler still holds stay queued (and
 * keep the struct alive) so http_respond() can find and free them later;
 * everything else is released here.
 */
static void conn_close(struct http_conn *c, enum log_level level, const char *reason,
                       const char *detail)
{
    if (c->state == CONN_CLOSED)
        return;
    if (reason != NULL)
        conn_log(c, level, reason, detail);
    if (c->overflow)
        c->srv->n_overflow--;
    else
        c->srv->n_active--;
    c->state = CONN_CLOSED;
    c->reading = false;

    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &c->queue)
    {
        struct http_request *req = list_entry(n, struct http_request, node);
        if (req->state != REQ_HANDLER) {
            conn_unlink(c, req);
            req_release(req);
        }
    }
    c->held_bytes = 0;
    if (c->cur != NULL) {
        req_release(c->cur);
        c->cur = NULL;
    }
    /* `in` may be under iteration by conn_resume(); it is freed with the struct. */
    buf_reset(&c->out);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
}

/* Moves answered responses at the head of the queue to the output, in order. */
static void conn_advance(struct http_conn *c)
{
    struct http_request *req;
    for (req = conn_head(c); req != NULL && req->state == REQ_ANSWERED; req = conn_head(c)) {
        if (req->resp.len > 0) {
            int rc = buf_append(&c->out, req->resp.data, req->resp.len);
            if (rc < 0) {
                conn_close(c, LOG_WARN, "write queue full", "peer is not reading responses");
                return;
            }
            c->held_bytes -= req->resp.len;
        }
        conn_unlink(c, req);
        if (req->close && c->state == CONN_ACTIVE)
            c->state = CONN_DRAINING;
        req_release(req);
    }
    /* 100 Continue belongs after every earlier response (RFC 9110 15.2). */
    if (list_empty(&c->queue) && c->continue_owed && c->state == CONN_ACTIVE) {
        c->continue_owed = false;
        if (http_response_continue(&c->out) < 0)
            conn_close(c, LOG_WARN, "write queue full", "peer is not reading responses");
    }
}

/*
 * Stores the response of `req` (already in the queue): straight into the
 * output when it is next in line, else into its own buffer until it is.
 */
static int conn_answer(struct http_conn *c, struct http_request *req, int status,
                       const char *content_type, const char *body, size_t body_len,
                       const struct http_header *headers, size_t n_headers)
{
    bool head_method = !req->internal && strcmp(req->msg.method, "HEAD") == 0;
    req->close = req->internal || !req->msg.keep_alive || c->srv->closing;
    struct buf *b = req == conn_head(c) ? &c->out : &req->resp;
    int rc = http_response_format(b, &c->srv->date, status, content_type, body, body_len, headers,
                                  n_headers, req->close, head_method);
    if (rc < 0)
        return rc;
    if (b == &req->resp)
        c->held_bytes += req->resp.len;
    req->state = REQ_ANSWERED;
    conn_advance(c);
    return 0;
}

/* Answers with an error after the responses already owed, then closes. */
static void conn_fail(struct http_conn *c, int status, const char *error, const char *detail,
                      const struct http_header *headers, size_t n_headers)
{
    if (c->state != CONN_ACTIVE)
        return;
    conn_log(c, LOG_WARN, error, detail);
    c->state = CONN_DRAINING;
    http_deadline_clear(&c->rx);
    c->continue_owed = false;
    if (c->cur != NULL) {
        req_release(c->cur);
        c->cur = NULL;
    }
    struct http_request *req = req_get(c->srv);
    char *json = http_response_error_json(error, detail);
    if (req == NULL || json == NULL) {
        free(json);
        if (req != NULL)
            req_release(req);
        conn_close(c, LOG_ERROR, "out of memory", NULL);
        return;
    }
    req->internal = true;
    req->conn = c;
    conn_enqueue(c, req);
    int rc =
        conn_answer(c, req, status, "application/json", json, strlen(json), headers, n_headers);
    free(json);
    if (rc < 0)
        conn_close(c, LOG_WARN, "write queue full", "no room for the error response");
}

static void on_write(uv_write_t *wr, int status)
{
    struct http_conn *c = wr->data;
    c->writing = false;
    if (c->wbuf.alloc > POOL_KEEP_BYTES)
        buf_free(&c->wbuf); /* one big response must not stay pinned to an idle peer */
    buf_reset(&c->wbuf);
    if (c->state == CONN_CLOSED)
        return;
    if (status < 0) {
        conn_close(c, LOG_INFO, "write failed", uv_strerror(status));
        return;
    }
    c->write_deadline = 0;
    conn_flush(c);
    conn_update(c);
}

/* Hands the output to the kernel: uv_try_write first, uv_write for the rest. */
static void conn_flush(struct http_conn *c)
{
    if (c->writing || c->out.len == 0 || c->state == CONN_CLOSED)
        return;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        conn_close(c, LOG_INFO, "write failed", uv_strerror(n));
        return;
    }
    if ((size_t)n == c->out.len) {
        buf_reset(&c->out);
        return;
    }
    /* The in-flight bytes must not move while libuv owns them: swap buffers
     * so new responses go to an empty `out`. */
    struct buf tmp = c->wbuf;
    c->wbuf = c->out;
    c->out = tmp;
    b = uv_buf_init(c->wbuf.data + n, (unsigned)(c->wbuf.len - (size_t)n));
    c->write_req.data = c;
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        conn_close(c, LOG_INFO, "write failed", uv_strerror(rc));
        return;
    }
    c->writing = true;
    c->write_deadline = uv_now(c->srv->loop) + c->srv->cfg.write_timeout_ms;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct http_conn *c = h->data;
    *b = uv_buf_init(c->srv->rbuf, READ_BUF_SIZE);
}

static void conn_dispatch(struct http_conn *c)
{
    struct http_server *srv = c->srv;
    struct http_request *req = c->cur;
    c->cur = NULL;
    req->conn = c;
    req->id = ++srv->next_id;
    req->start_ns = uv_hrtime();
    req->state = REQ_HANDLER;
    conn_enqueue(c, req);
    c->refs++;
    srv->pending++;
    c->continue_owed = false;
    /* received whole: from here the time is the application's, not the peer's */
    http_deadline_clear(&c->rx);
    if (!req->msg.keep_alive)
        c->state = CONN_DRAINING;
    srv->handler(req, srv->data);
}

static void conn_send_continue(struct http_conn *c)
{
    if (!list_empty(&c->queue)) {
        c->continue_owed = true;
        return;
    }
    if (http_response_continue(&c->out) < 0)
        conn_close(c, LOG_WARN, "write queue full", "peer is not reading responses");
}

/* Feeds bytes to the parser until used up or parsing must pause; returns bytes used. */
static size_t conn_parse(struct http_conn *c, const char *data, size_t len)
{
    struct http_server *srv = c->srv;
    size_t off = 0;
    while (off < len && conn_may_parse(c)) {
        if (c->cur == NULL) {
            c->cur = req_get(srv);
            if (c->cur == NULL) {
                conn_close(c, LOG_ERROR, "out of memory", NULL);
                return len;
            }
            http_parser_set_message(&c->parser, &c->cur->msg);
        }
        if (c->parser.phase == HTTP_PHASE_IDLE) {
            /* First byte of a request: its headers and the whole of it are due. */
            c->idle_deadline = 0;
            http_deadline_request_begins(&c->rx, &srv->rx_limits, uv_now(srv->loop));
        }
        size_t used = 0;
        enum http_parse_event ev = http_parser_feed(&c->parser, data + off, len - off, &used);
        off += used;
        switch (ev) {
        case HTTP_PARSE_MORE:
            break;
        case HTTP_PARSE_CONTINUE:
            conn_send_continue(c);
            break;
        case HTTP_PARSE_REQUEST:
            conn_dispatch(c);
            break;
        case HTTP_PARSE_ERROR:
            conn_fail(c, c->parser.status, c->parser.error, c->parser.detail, NULL, 0);
            return len;
        }
    }
    if (c->state == CONN_ACTIVE)
        http_deadline_after_read(&c->rx, &srv->rx_limits, c->parser.phase, uv_now(srv->loop));
    return off;
}

/* Parses input kept while paused, once answers made room for it. */
static void conn_resume(struct http_conn *c)
{
    /* Flushing can make room again (the kernel took it all): loop until the
     * input is used up or something really blocks, else nothing would wake us. */
    while (!c->in_parse && c->in.len > 0 && conn_may_parse(c)) {
        c->in_parse = true;
        size_t used = conn_parse(c, c->in.data, c->in.len);
        c->in_parse = false;
        buf_consume(&c->in, used);
        conn_flush(c);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = s->data;
    if (nread == 0 || c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_LINGER) {
        if (nread < 0)
            conn_close(c, LOG_DEBUG, "closed after last response", NULL);
        return;
    }
    if (nread < 0) {
        /* EOF with requests in flight means the client gave up on them (as Go's
         * net/http reads it): close now so handlers see peer_gone. */
        bool busy = !list_empty(&c->queue) || c->parser.phase == HTTP_PHASE_HEAD ||
                    c->parser.phase == HTTP_PHASE_BODY;
        if (nread == UV_EOF)
            conn_close(c, busy ? LOG_INFO : LOG_DEBUG,
                       busy ? "peer closed with a request in progress" : "peer closed", NULL);
        else
            conn_close(c, LOG_INFO, "read failed", uv_strerror((int)nread));
        return;
    }
    c->in_parse = true;
    size_t used = conn_parse(c, b->base, (size_t)nread);
    c->in_parse = false;
    if (used < (size_t)nread && c->state == CONN_ACTIVE) {
        /* Paused (pipeline or write queue full): keep the rest; reading stops
         * until it is parsed, so this holds at most one read. */
        int rc = buf_append(&c->in, b->base + used, (size_t)nread - used);
        if (rc < 0) {
            conn_close(c, LOG_ERROR, "input buffer full", NULL);
            return;
        }
    }
    conn_flush(c);
    conn_update(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct http_conn *c = req->data;
    if (status < 0 && c->state != CONN_CLOSED)
        conn_close(c, LOG_DEBUG, "shutdown failed", uv_strerror(status));
}

/* Last response is out: send FIN and discard input for a moment (see top). */
static void conn_linger(struct http_conn *c)
{
    c->state = CONN_LINGER;
    c->shutdown_req.data = c;
    int rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rc < 0) {
        conn_close(c, LOG_DEBUG, "shutdown failed", uv_strerror(rc));
        return;
    }
    c->linger_deadline = uv_now(c->srv->loop) + LINGER_MS;
}

static void conn_update_reading(struct http_conn *c)
{
    bool want = c->state == CONN_LINGER || (conn_may_parse(c) && c->in.len == 0);
    if (want && !c->reading) {
        int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        if (rc < 0) {
            conn_close(c, LOG_WARN, "read failed", uv_strerror(rc));
            return;
        }
        c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void on_timer(uv_timer_t *t);

static void conn_update_timer(struct http_conn *c)
{
    uint64_t now = uv_now(c->srv->loop);
    bool idle = c->state == CONN_ACTIVE && list_empty(&c->queue) &&
                http_deadline_next(&c->rx) == 0 && c->parser.phase == HTTP_PHASE_IDLE &&
                !c->writing && c->out.len == 0 && c->in.len == 0;
    if (!idle)
        c->idle_deadline = 0;
    else if (c->idle_deadline == 0)
        c->idle_deadline = now + c->srv->cfg.idle_timeout_ms;
    uint64_t due = 0;
    const uint64_t all[] = {http_deadline_next(&c->rx), c->write_deadline, c->idle_deadline,
                            c->linger_deadline};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (all[i] != 0 && (due == 0 || all[i] < due))
            due = all[i];
    }
    if (due == c->timer_due)
        return;
    c->timer_due = due;
    if (due == 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

/* Re-derives reading, closing and the timer from the state; after every event. */
static void conn_update(struct http_conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    conn_resume(c);
    if (c->state == CONN_DRAINING && list_empty(&c->queue) && !c->writing && c->out.len == 0)
        conn_linger(c);
    if (c->state == CONN_CLOSED)
        return;
    conn_update_reading(c);
    if (c->state == CONN_CLOSED)
        return;
    conn_update_timer(c);
}

static void on_timer(uv_timer_t *t)
{
    struct http_conn *c = t->data;
    uint64_t now = uv_now(c->srv->loop);
    c->timer_due = 0;
    if (c->linger_deadline != 0 && now >= c->linger_deadline) {
        conn_close(c, LOG_DEBUG, "closed after last response", NULL);
        return;
    }
    if (c->write_deadline != 0 && now >= c->write_deadline) {
        conn_close(c, LOG_WARN, "write timeout", "peer is not reading responses");
        return;
    }
    if (c->idle_deadline != 0 && now >= c->idle_deadline) {
        conn_close(c, LOG_DEBUG, "idle timeout", NULL);
        return;
    }
    switch (http_deadline_expired(&c->rx, now)) {
    case HTTP_DEADLINE_NONE:
        break;
    case HTTP_DEADLINE_HEAD:
        conn_fail(c, 408, "request_timeout", "request headers not received in time", NULL, 0);
        break;
    case HTTP_DEADLINE_BODY:
        conn_fail(c, 408, "request_timeout", "request body stalled", NULL, 0);
        break;
    case HTTP_DEADLINE_REQUEST: {
        char detail[96];
        snprintf(detail, sizeof(detail), "request not received whole within %.3g s",
                 (double)c->srv->cfg.request_timeout_ms / 1000.0);
        conn_fail(c, 408, "request_timeout", detail, NULL, 0);
        break;
    }
    }
    conn_flush(c);
    conn_update(c);
}

/* ---- accepting ---- */

static void conn_peer_name(struct http_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    snprintf(c->peer, sizeof(c->peer), "unknown");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
    else if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof(c->peer));
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct http_server *srv = listener->data;
    if (status < 0) {
        log_warn("accept failed", json_pack("{s:s}", "detail", uv_strerror(status)));
        return;
    }
    struct http_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        log_error("accept failed", json_pack("{s:s}", "detail", "out of memory"));
        return;
    }
    c->srv = srv;
    c->tcp.data = c;
    c->timer.data = c;
    size_t qcap = 2 * srv->cfg.max_write_queue;
    buf_init(&c->in, READ_BUF_SIZE);
    buf_init(&c->out, qcap);
    buf_init(&c->wbuf, qcap);
    http_parser_init(&c->parser, srv->cfg.max_header, srv->cfg.max_body);
    int rc = uv_tcp_init(srv->loop, &c->tcp);
    if (rc < 0) {
        free(c);
        log_error("accept failed", json_pack("{s:s}", "detail", uv_strerror(rc)));
        return;
    }
    uv_timer_init(srv->loop, &c->timer); /* cannot fail */
    c->handles = 2;
    c->refs = 1;
    list_init(&c->queue);
    list_prepend(&srv->conns, &c->node);
    c->state = CONN_ACTIVE;
    srv->n_active++;

    rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        snprintf(c->peer, sizeof(c->peer), "unknown");
        conn_close(c, LOG_WARN, "accept failed", uv_strerror(rc));
        return;
    }
    /* Responses are whole when written; Nagle would only delay them. */
    uv_tcp_nodelay(&c->tcp, 1);
    conn_peer_name(c);

    if (srv->n_active > srv->cfg.max_conns) {
        srv->n_active--;
        c->overflow = true;
        srv->n_overflow++;
        /* Refusing politely costs a connection each; past twice the limit
         * even that stops and new peers are just dropped. */
        if (srv->n_overflow > srv->cfg.max_conns) {
            conn_close(c, LOG_WARN, "too many connections", "dropped without answer");
            return;
        }
        const struct http_header retry = {"Retry-After", "1"};
        conn_fail(c, 503, "overloaded", "too many connections", &retry, 1);
        conn_flush(c);
        conn_update(c);
        return;
    }
    http_deadline_accepted(&c->rx, &srv->rx_limits, uv_now(srv->loop));
    conn_update(c);
}

/* ---- server ---- */

static void on_listener_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->listener_open = false;
    server_maybe_finish(srv);
}

int http_server_start(uv_loop_t *loop, const struct http_server_config *cfg,
                      http_handler_fn handler, void *data, struct http_server **out)
{
    struct sockaddr_storage addr;
    int rc;
    struct http_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return UV_ENOMEM;
    srv->loop = loop;
    list_init(&srv->conns);
    list_init(&srv->pool);
    srv->cfg = *cfg;
    http_server_config_defaults(&srv->cfg);
    srv->rx_limits.header_ms = srv->cfg.header_timeout_ms;
    srv->rx_limits.request_ms = srv->cfg.request_timeout_ms;
    srv->handler = handler;
    srv->data = data;
    const char *host = srv->cfg.host != NULL ? srv->cfg.host : "0.0.0.0";
    srv->cfg.host = NULL; /* borrowed from the caller, not kept */
    rc = uv_ip4_addr(host, srv->cfg.port, (struct sockaddr_in *)&addr);
    if (rc < 0)
        rc = uv_ip6_addr(host, srv->cfg.port, (struct sockaddr_in6 *)&addr);
    if (rc < 0)
        goto fail_free;
    srv->rbuf = malloc(READ_BUF_SIZE);
    if (srv->rbuf == NULL) {
        rc = UV_ENOMEM;
        goto fail_free;
    }
    rc = uv_tcp_init(loop, &srv->listener);
    if (rc < 0)
        goto fail_free;
    srv->listener.data = srv;
    srv->listener_open = true;
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
    if (rc < 0)
        goto fail_close;
    rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc < 0)
        goto fail_close;
    struct sockaddr_storage bound;
    int len = sizeof(bound);
    rc = uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &len);
    if (rc < 0)
        goto fail_close;
    srv->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    *out = srv;
    return 0;

fail_close:
    /* The handle is initialized: libuv must close it before its memory goes;
     * the server is freed from the close callback on the next loop turn. */
    srv->closing = true;
    srv->listener_closing = true;
    uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    return rc;
fail_free:
    free(srv->rbuf);
    free(srv);
    return rc;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_stop_accepting(struct http_server *srv)
{
    if (srv->listener_open && !srv->listener_closing) {
        srv->listener_closing = true;
        uv_close((uv_handle_t *)&srv->listener, on_listener_closed);
    }
}

size_t http_server_pending(const struct http_server *srv)
{
    return srv->pending;
}

void http_server_close(struct http_server **srvp, void (*done)(void *data), void *data)
{
    struct http_server *srv = *srvp;
    if (srv == NULL)
        return;
    *srvp = NULL;
    srv->closing = true;
    srv->busy = true;
    srv->done = done;
    srv->done_data = data;
    http_server_stop_accepting(srv);
    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &srv->conns)
    {
        struct http_conn *c = list_entry(n, struct http_conn, node);
        conn_close(c, LOG_DEBUG, "server closing", NULL);
        /* Requests the application still holds are freed silently. */
        unsigned held = 0;
        struct list_node *rn, *rtmp;
        list_foreach_safe(rn, rtmp, &c->queue)
        {
            struct http_request *req = list_entry(rn, struct http_request, node);
            conn_unlink(c, req);
            srv->pending--;
            req_release(req);
            held++;
        }
        while (held-- > 0)
            conn_unref(c); /* the last one may free c */
    }
    srv->busy = false;
    server_maybe_finish(srv);
}

/* ---- requests ---- */

void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t body_len, const struct http_header *headers, size_t n_headers)
{
    if (req->state != REQ_HANDLER || req->internal)
        abort(); /* answered twice: the request may already be reused */
    struct http_conn *c = req->conn;
    c->srv->pending--;
    if (c->state == CONN_CLOSED) {
        conn_unlink(c, req);
        req_release(req);
        conn_unref(c);
        return;
    }
    int rc = conn_answer(c, req, status, content_type, body, body_len, headers, n_headers);
    if (rc < 0) {
        /* The request stays queued and unanswered: closing releases it. */
        req->state = REQ_ANSWERED;
        conn_close(c, LOG_WARN, "response too large",
                   rc == -E2BIG ? "over max_write_queue" : "out of memory");
    } else if (!c->in_parse) {
        conn_flush(c);
        conn_update(c);
    }
    conn_unref(c);
}

void http_respond_error(struct http_request *req, int status, const char *error, const char *detail,
                        const struct http_header *headers, size_t n_headers)
{
    char *json = http_response_error_json(error, detail);
    if (json == NULL) {
        http_respond(req, 500, NULL, NULL, 0, headers, n_headers);
        return;
    }
    http_respond(req, status, "application/json", json, strlen(json), headers, n_headers);
    free(json);
}

void http_respond_json(struct http_request *req, int status, const char *json)
{
    http_respond(req, status, "application/json", json, strlen(json), NULL, 0);
}

const char *http_request_method(const struct http_request *req)
{
    return req->msg.method;
}

const char *http_request_path(const struct http_request *req)
{
    return req->msg.path;
}

const char *http_request_query(const struct http_request *req)
{
    return req->msg.query;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    return http_message_header(&req->msg, name);
}

size_t http_request_header_count(const struct http_request *req)
{
    return req->msg.n_headers;
}

const struct http_header *http_request_header_at(const struct http_request *req, size_t i)
{
    return i < req->msg.n_headers ? &req->msg.headers[i] : NULL;
}

const char *http_request_body(const struct http_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->msg.body.len;
    return req->msg.body.data != NULL ? req->msg.body.data : "";
}

uint64_t http_request_id(const struct http_request *req)
{
    return req->id;
}

const char *http_request_peer(const struct http_request *req)
{
    return req->conn->peer;
}

uint64_t http_request_start_ns(const struct http_request *req)
{
    return req->start_ns;
}

void http_request_set_data(struct http_request *req, void *data)
{
    req->data = data;
}

void *http_request_get_data(const struct http_request *req)
{
    return req->data;
}

bool http_request_peer_gone(const struct http_request *req)
{
    return req->conn->state == CONN_CLOSED;
}
