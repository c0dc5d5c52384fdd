/*
 * http: a small HTTP/1.1 server on libuv + llhttp, shared by ordersync and the
 * helper services. It owns sockets, parsing, limits and timeouts; the
 * application sees whole requests and answers them, possibly much later (after
 * a database commit), through http_respond().
 *
 * Flow per connection: read -> llhttp -> struct http_request queued -> handler
 * called -> ... -> http_respond() -> responses written strictly in request
 * order (pipelining) -> keep-alive or close.
 *
 * The server answers by itself, with a JSON body {"error": ..., "detail": ...}:
 * 400 malformed request, 408 headers not complete within header_timeout, a
 * body pausing longer than that, or the whole request not received within
 * request_timeout (a body drip-fed a byte at a time cannot keep a connection),
 * 411 POST/PUT/PATCH without a length, 413 body over max_body,
 * 431 header block over max_header, 503 (then close) over max_connections,
 * 100 Continue for `Expect: 100-continue` when the declared length fits.
 */
#ifndef OS_HTTP_H
#define OS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct http_server;
struct http_request;

struct http_header {
    const char *name; /* lower-case for request headers */
    const char *value;
};

struct http_server_config {
    const char *host;            /* e.g. "0.0.0.0", "127.0.0.1", "::" */
    int port;                    /* 0 picks a free port (see http_server_port) */
    size_t max_header;           /* bytes of request line + headers; default 16 KiB */
    size_t max_body;             /* bytes; default 1 MiB */
    unsigned max_conns;          /* default 1024 */
    unsigned max_pipelined;      /* requests parsed but unanswered per connection; default 32 */
    uint64_t header_timeout_ms;  /* headers from the first byte; pauses in a body; default 10000 */
    uint64_t request_timeout_ms; /* the whole request, head and body; default 30000 */
    uint64_t idle_timeout_ms;    /* keep-alive idle; default 60000 */
    uint64_t write_timeout_ms;   /* peer not reading our responses; default 30000 */
    size_t max_write_queue;      /* bytes queued unsent before we stop reading; default 4 MiB */
};

/* Fills defaults for every zero field. */
void http_server_config_defaults(struct http_server_config *cfg);

/*
 * Called once per complete request, on the loop thread. The request is owned by
 * the server; the handler (now or later) must call http_respond() exactly once.
 * The request stays valid until then, even if the peer disconnects meanwhile.
 */
typedef void (*http_handler_fn)(struct http_request *req, void *data);

/*
 * Binds and listens. Returns 0 and *out, or a negative libuv error (and never
 * calls the handler). `cfg` is copied; `data` is borrowed.
 */
int http_server_start(uv_loop_t *loop, const struct http_server_config *cfg,
                      http_handler_fn handler, void *data, struct http_server **out)
    __attribute__((warn_unused_result));
/* The bound port (useful with port 0). */
int http_server_port(const struct http_server *srv);
/* Stops accepting new connections; requests in flight can still be answered. */
void http_server_stop_accepting(struct http_server *srv);
/* Number of requests handed to the handler and not yet answered. */
size_t http_server_pending(const struct http_server *srv);
/*
 * Closes every connection and frees the server once libuv has closed all its
 * handles; `done` (may be NULL) runs after that. Unanswered requests are freed
 * silently after this: the application must not touch them again.
 */
void http_server_close(struct http_server **srv, void (*done)(void *data), void *data);

/* Request accessors; all strings borrowed, valid until http_respond(). */
const char *http_request_method(const struct http_request *req); /* "GET", "POST", ... */
const char *http_request_path(const struct http_request *req);   /* as sent, without the query */
const char *http_request_query(const struct http_request *req);  /* after '?', or "" */
/* First header with this name (case-insensitive), or NULL. */
const char *http_request_header(const struct http_request *req, const char *name);
size_t http_request_header_count(const struct http_request *req);
const struct http_header *http_request_header_at(const struct http_request *req, size_t i);
const char *http_request_body(const struct http_request *req, size_t *len); /* NUL-terminated */
/* Server-wide increasing id for logs; X-Request-Id from the client is not trusted for this. */
uint64_t http_request_id(const struct http_request *req);
/* The peer's address as text ("127.0.0.1"). */
const char *http_request_peer(const struct http_request *req);
/* Monotonic time (uv_hrtime, ns) at which the request was complete. */
uint64_t http_request_start_ns(const struct http_request *req);
/* Application slot, e.g. for the batch a request waits in. */
void http_request_set_data(struct http_request *req, void *data);
void *http_request_get_data(const struct http_request *req);
/* True once the peer went away; responding is still required (it just frees). */
bool http_request_peer_gone(const struct http_request *req);

/*
 * Answers and releases the request. `body` is copied. `headers` (may be NULL)
 * adds headers such as Retry-After or Allow; Content-Length, Date, Connection
 * and Content-Type (when content_type != NULL) are written by the server.
 * Returns nothing: a write failure closes the connection and is logged.
 */
void http_respond(struct http_request *req, int status, const char *content_type, const char *body,
                  size_t body_len, const struct http_header *headers, size_t n_headers);
/* Convenience: JSON body {"error": error, "detail": detail}. */
void http_respond_error(struct http_request *req, int status, const char *error, const char *detail,
                        const struct http_header *headers, size_t n_headers);
/* Convenience: application/json body from a NUL-terminated string. */
void http_respond_json(struct http_request *req, int status, const char *json);

/* Reason phrase for a status code ("Not Found"). */
const char *http_status_reason(int status);

#endif
