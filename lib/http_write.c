/*
 * http_write: the answers of the HTTP server. A response is formatted
 * (http_response.c) straight into the connection's output buffer when its
 * request is the oldest unanswered one; one answered early waits in its
 * request's own buffer until those before it are written, so pipelined
 * requests are answered in order. Output is flushed once per read callback,
 * so synchronous answers to pipelined requests leave in one write.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

/* Moves answered responses at the head of the queue to the output, in order. */
static void conn_advance(struct http_conn *c)
{
    struct http_request *req;
    for (req = http_conn_head(c); req != NULL && req->state == REQ_ANSWERED;
         req = http_conn_head(c)) {
        if (req->resp.len > 0) {
            int rc = buf_append(&c->out, req->resp.data, req->resp.len);
            if (rc < 0) {
                http_conn_close(c, LOG_WARN, "write queue full", "peer is not reading responses");
                return;
            }
            c->held_bytes -= req->resp.len;
        }
        http_conn_unlink(c, req);
        if (req->close && c->state == CONN_ACTIVE)
            c->state = CONN_DRAINING;
        http_req_release(req);
    }
    /* 100 Continue belongs after every earlier response (RFC 9110 15.2). */
    if (list_empty(&c->queue) && c->continue_owed && c->state == CONN_ACTIVE) {
        c->continue_owed = false;
        if (http_response_continue(&c->out) < 0)
            http_conn_close(c, LOG_WARN, "write queue full", "peer is not reading responses");
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
    struct buf *b = req == http_conn_head(c) ? &c->out : &req->resp;
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
void http_conn_fail(struct http_conn *c, int status, const char *error, const char *detail,
                    const struct http_header *headers, size_t n_headers)
{
    if (c->state != CONN_ACTIVE)
        return;
    http_conn_log(c, LOG_WARN, error, detail);
    c->state = CONN_DRAINING;
    http_deadline_clear(&c->rx);
    c->continue_owed = false;
    if (c->cur != NULL) {
        http_req_release(c->cur);
        c->cur = NULL;
    }
    struct http_request *req = http_req_get(c->srv);
    char *json = http_response_error_json(error, detail);
    if (req == NULL || json == NULL) {
        free(json);
        if (req != NULL)
            http_req_release(req);
        http_conn_close(c, LOG_ERROR, "out of memory", NULL);
        return;
    }
    req->internal = true;
    req->conn = c;
    http_conn_enqueue(c, req);
    int rc =
        conn_answer(c, req, status, "application/json", json, strlen(json), headers, n_headers);
    free(json);
    if (rc < 0)
        http_conn_close(c, LOG_WARN, "write queue full", "no room for the error response");
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
        http_conn_close(c, LOG_INFO, "write failed", uv_strerror(status));
        return;
    }
    c->write_deadline = 0;
    http_conn_flush(c);
    http_conn_update(c);
}

/* Hands the output to the kernel: uv_try_write first, uv_write for the rest. */
void http_conn_flush(struct http_conn *c)
{
    if (c->writing || c->out.len == 0 || c->state == CONN_CLOSED)
        return;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == UV_EAGAIN || n == UV_ENOSYS)
        n = 0;
    if (n < 0) {
        http_conn_close(c, LOG_INFO, "write failed", uv_strerror(n));
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
        http_conn_close(c, LOG_INFO, "write failed", uv_strerror(rc));
        return;
    }
    c->writing = true;
    c->write_deadline = uv_now(c->srv->loop) + c->srv->cfg.write_timeout_ms;
}

/* ---- the application's answers (http.h) ---- */

void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t body_len, const struct http_header *headers, size_t n_headers)
{
    if (req->state != REQ_HANDLER || req->internal)
        abort(); /* answered twice: the request may already be reused */
    struct http_conn *c = req->conn;
    c->srv->pending--;
    if (c->state == CONN_CLOSED) {
        http_conn_unlink(c, req);
        http_req_release(req);
        http_conn_unref(c);
        return;
    }
    int rc = conn_answer(c, req, status, content_type, body, body_len, headers, n_headers);
    if (rc < 0) {
        /* The request stays queued and unanswered: closing releases it. */
        req->state = REQ_ANSWERED;
        http_conn_close(c, LOG_WARN, "response too large",
                        rc == -E2BIG ? "over max_write_queue" : "out of memory");
    } else if (!c->in_parse) {
        http_conn_flush(c);
        http_conn_update(c);
    }
    http_conn_unref(c);
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
