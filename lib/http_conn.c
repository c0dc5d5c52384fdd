/*
 * http_conn: one connection of the HTTP server from accept to free (see
 * http_internal.h for the states): the request pool, the queue of requests
 * in arrival order, reading and parsing with llhttp (http_parse.c), the
 * receive, write, idle and linger deadlines on one timer, and closing.
 * Answers are written by http_write.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http_internal.h"

/* ---- request pool ---- */

struct http_request *http_req_get(struct http_server *srv)
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

void http_req_release(struct http_request *req)
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

void http_conn_log(const struct http_conn *c, enum log_level level, const char *reason,
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

struct http_request *http_conn_head(const struct http_conn *c)
{
    struct list_node *n = list_first(&c->queue);
    return n != NULL ? list_entry(n, struct http_request, node) : NULL;
}

void http_conn_enqueue(struct http_conn *c, struct http_request *req)
{
    list_append(&c->queue, &req->node);
    c->n_queued++;
}

void http_conn_unlink(struct http_conn *c, struct http_request *req)
{
    if (!list_linked(&req->node))
        abort(); /* a request always sits in its connection's queue */
    list_remove(&req->node);
    c->n_queued--;
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
    http_server_maybe_finish(srv);
}

void http_conn_unref(struct http_conn *c)
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
        http_conn_unref(c);
}

/*
 * Closes the socket now. Requests the handler still holds stay queued (and
 * keep the struct alive) so http_respond() can find and free them later;
 * everything else is released here.
 */
void http_conn_close(struct http_conn *c, enum log_level level, const char *reason,
                     const char *detail)
{
    if (c->state == CONN_CLOSED)
        return;
    if (reason != NULL)
        http_conn_log(c, level, reason, detail);
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
            http_conn_unlink(c, req);
            http_req_release(req);
        }
    }
    c->held_bytes = 0;
    if (c->cur != NULL) {
        http_req_release(c->cur);
        c->cur = NULL;
    }
    /* `in` may be under iteration by conn_resume(); it is freed with the struct. */
    buf_reset(&c->out);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
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
    http_conn_enqueue(c, req);
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
        http_conn_close(c, LOG_WARN, "write queue full", "peer is not reading responses");
}

/* Feeds bytes to the parser until used up or parsing must pause; returns bytes used. */
static size_t conn_parse(struct http_conn *c, const char *data, size_t len)
{
    struct http_server *srv = c->srv;
    size_t off = 0;
    while (off < len && conn_may_parse(c)) {
        if (c->cur == NULL) {
            c->cur = http_req_get(srv);
            if (c->cur == NULL) {
                http_conn_close(c, LOG_ERROR, "out of memory", NULL);
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
            http_conn_fail(c, c->parser.status, c->parser.error, c->parser.detail, NULL, 0);
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
        http_conn_flush(c);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct http_conn *c = s->data;
    if (nread == 0 || c->state == CONN_CLOSED)
        return;
    if (c->state == CONN_LINGER) {
        if (nread < 0)
            http_conn_close(c, LOG_DEBUG, "closed after last response", NULL);
        return;
    }
    if (nread < 0) {
        /* EOF with requests in flight means the client gave up on them (as Go's
         * net/http reads it): close now so handlers see peer_gone. */
        bool busy = !list_empty(&c->queue) || c->parser.phase == HTTP_PHASE_HEAD ||
                    c->parser.phase == HTTP_PHASE_BODY;
        if (nread == UV_EOF)
            http_conn_close(c, busy ? LOG_INFO : LOG_DEBUG,
                            busy ? "peer closed with a request in progress" : "peer closed", NULL);
        else
            http_conn_close(c, LOG_INFO, "read failed", uv_strerror((int)nread));
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
            http_conn_close(c, LOG_ERROR, "input buffer full", NULL);
            return;
        }
    }
    http_conn_flush(c);
    http_conn_update(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct http_conn *c = req->data;
    if (status < 0 && c->state != CONN_CLOSED)
        http_conn_close(c, LOG_DEBUG, "shutdown failed", uv_strerror(status));
}

/* Last response is out: send FIN and discard input for a moment (LINGER, http_internal.h). */
static void conn_linger(struct http_conn *c)
{
    c->state = CONN_LINGER;
    c->shutdown_req.data = c;
    int rc = uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown);
    if (rc < 0) {
        http_conn_close(c, LOG_DEBUG, "shutdown failed", uv_strerror(rc));
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
            http_conn_close(c, LOG_WARN, "read failed", uv_strerror(rc));
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
void http_conn_update(struct http_conn *c)
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
        http_conn_close(c, LOG_DEBUG, "closed after last response", NULL);
        return;
    }
    if (c->write_deadline != 0 && now >= c->write_deadline) {
        http_conn_close(c, LOG_WARN, "write timeout", "peer is not reading responses");
        return;
    }
    if (c->idle_deadline != 0 && now >= c->idle_deadline) {
        http_conn_close(c, LOG_DEBUG, "idle timeout", NULL);
        return;
    }
    switch (http_deadline_expired(&c->rx, now)) {
    case HTTP_DEADLINE_NONE:
        break;
    case HTTP_DEADLINE_HEAD:
        http_conn_fail(c, 408, "request_timeout", "request headers not received in time", NULL, 0);
        break;
    case HTTP_DEADLINE_BODY:
        http_conn_fail(c, 408, "request_timeout", "request body stalled", NULL, 0);
        break;
    case HTTP_DEADLINE_REQUEST: {
        char detail[96];
        snprintf(detail, sizeof(detail), "request not received whole within %.3g s",
                 (double)c->srv->cfg.request_timeout_ms / 1000.0);
        http_conn_fail(c, 408, "request_timeout", detail, NULL, 0);
        break;
    }
    }
    http_conn_flush(c);
    http_conn_update(c);
}
