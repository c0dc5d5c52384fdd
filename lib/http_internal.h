/*
 * http_internal: what the parts of the HTTP server share. Not for use
 * outside lib/http*.c: the public interface is http.h.
 *
 *   http.c        the server: listener, accepting (and refusing over
 *                 max_conns), shutdown, the request accessors
 *   http_conn.c   a connection's life: the request pool and queue, reading
 *                 and parsing, deadlines and the timer, linger and close
 *   http_write.c  answers: formatting in request order, holding early ones,
 *                 flushing to the socket, http_respond()
 *
 * Each connection is a struct http_conn with a state enum: ACTIVE (reading
 * and parsing), DRAINING (no more requests will be parsed; answering those
 * queued, then close), LINGER (last response written, our FIN sent,
 * discarding input briefly so the kernel does not answer unread bytes with a
 * RST that destroys the response in flight), CLOSED (uv_close called; the
 * struct lives on while the application still holds requests of it).
 *
 * Lifetime: a connection embeds uv handles, so it is freed only when both
 * close callbacks ran and no request the handler holds refers to it
 * (`refs`); the server is freed when its listener is closed and its last
 * connection is gone (http_server_maybe_finish).
 */
#ifndef OS_HTTP_INTERNAL_H
#define OS_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "buf.h"
#include "http.h"
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

/* ---- http_conn.c ---- */

/* A new or recycled request, or NULL when out of memory. */
struct http_request *http_req_get(struct http_server *srv);
/* Back to the pool (or freed); `req` must be on no queue. */
void http_req_release(struct http_request *req);

/* The oldest request of `c` not yet written, or NULL. */
struct http_request *http_conn_head(const struct http_conn *c);
/* Appends `req` to the connection's queue (in request order). */
void http_conn_enqueue(struct http_conn *c, struct http_request *req);
/* Takes `req` off the connection's queue; aborts when it is not on it. */
void http_conn_unlink(struct http_conn *c, struct http_request *req);

/* Logs why a connection closes (at `level`; detail may be NULL). */
void http_conn_log(const struct http_conn *c, enum log_level level, const char *reason,
                   const char *detail);
/*
 * Closes the socket now (`reason` NULL: nothing logged). Requests the handler
 * still holds stay queued and keep the struct alive, so http_respond() can
 * find and free them later; everything else is released here.
 */
void http_conn_close(struct http_conn *c, enum log_level level, const char *reason,
                     const char *detail);
/* Drops one reference; the last one frees the connection. */
void http_conn_unref(struct http_conn *c);
/* Re-derives reading, closing and the timer from the state; after every event. */
void http_conn_update(struct http_conn *c);

/* ---- http_write.c ---- */

/* Hands the output to the kernel: uv_try_write first, uv_write for the rest. */
void http_conn_flush(struct http_conn *c);
/* Answers with an error after the responses already owed, then closes. */
void http_conn_fail(struct http_conn *c, int status, const char *error, const char *detail,
                    const struct http_header *headers, size_t n_headers);

/* ---- http.c ---- */

/* Frees the server once it is closing and its listener and connections are gone. */
void http_server_maybe_finish(struct http_server *srv);

#endif
