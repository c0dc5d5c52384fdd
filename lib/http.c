/*
 * http: the HTTP/1.1 server's public face (see http.h): the listener,
 * accepting connections (and refusing them over max_conns), shutdown, and the
 * request accessors. A connection's life is http_conn.c; answers are
 * http_write.c; what they share is http_internal.h.
 */
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "http_internal.h"

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

void http_server_maybe_finish(struct http_server *srv)
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
        http_conn_close(c, LOG_WARN, "accept failed", uv_strerror(rc));
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
            http_conn_close(c, LOG_WARN, "too many connections", "dropped without answer");
            return;
        }
        const struct http_header retry = {"Retry-After", "1"};
        http_conn_fail(c, 503, "overloaded", "too many connections", &retry, 1);
        http_conn_flush(c);
        http_conn_update(c);
        return;
    }
    http_deadline_accepted(&c->rx, &srv->rx_limits, uv_now(srv->loop));
    http_conn_update(c);
}

/* ---- server ---- */

static void on_listener_closed(uv_handle_t *h)
{
    struct http_server *srv = h->data;
    srv->listener_open = false;
    http_server_maybe_finish(srv);
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
        http_conn_close(c, LOG_DEBUG, "server closing", NULL);
        /* Requests the application still holds are freed silently. */
        unsigned held = 0;
        struct list_node *rn, *rtmp;
        list_foreach_safe(rn, rtmp, &c->queue)
        {
            struct http_request *req = list_entry(rn, struct http_request, node);
            http_conn_unlink(c, req);
            srv->pending--;
            http_req_release(req);
            held++;
        }
        while (held-- > 0)
            http_conn_unref(c); /* the last one may free c */
    }
    srv->busy = false;
    http_server_maybe_finish(srv);
}

/* ---- requests ---- */

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
