/*
 * http_parse: the request-parsing half of the HTTP server, without sockets.
 *
 * http.c feeds it whatever bytes arrive and acts on the events it returns
 * (send 100 Continue, dispatch a request, answer an error and close). Keeping
 * it free of libuv lets the fuzzer (tests/fuzz/fuzz_http.c) drive exactly the
 * code that parses peer input. It wraps llhttp and adds the limits llhttp does
 * not know: max_header (431), max_body (413), length required (411), Expect.
 *
 * Internal to lib/: services use http.h.
 */
#ifndef OS_HTTP_PARSE_H
#define OS_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "buf.h"
#include "http.h"

/*
 * One parsed request. All strings point into `raw` (or are static) and stay
 * valid until the message is reset. A message is reused from request to
 * request so its allocations are kept (see http_message_reset).
 */
struct http_message {
    const char *method; /* static string from llhttp */
    const char *path;   /* NUL-terminated, in raw */
    const char *query;  /* after '?', in raw, or "" */
    struct http_header *headers;
    size_t n_headers;
    struct buf raw;  /* url, then header names and values, each NUL-terminated; cap max_header */
    struct buf body; /* cap max_body */
    bool keep_alive;
    /* Parser-private: header offsets into raw while raw may still move. */
    size_t *offs; /* 2 per header: name, value */
    size_t headers_alloc;
};

/* Initializes an empty message whose buffers are capped at the given limits. */
void http_message_init(struct http_message *m, size_t max_header, size_t max_body);
/* Empties the message for reuse; allocations larger than `keep` bytes are freed. */
void http_message_reset(struct http_message *m, size_t keep);
/* Frees every allocation; the message is empty afterwards. */
void http_message_free(struct http_message *m);
/* First header with this name (case-insensitive), or NULL; borrowed. */
const char *http_message_header(const struct http_message *m, const char *name);

enum http_parse_event {
    HTTP_PARSE_MORE,     /* every byte was used; feed more when it arrives */
    HTTP_PARSE_CONTINUE, /* headers asked for 100 Continue and fit: send it, then feed the rest */
    HTTP_PARSE_REQUEST,  /* the message is complete; set a new one before feeding the rest */
    HTTP_PARSE_ERROR,    /* answer p->status (p->error, p->detail) then close; sticky */
};

enum http_parse_phase {
    HTTP_PHASE_IDLE, /* between requests, no byte of the next one seen */
    HTTP_PHASE_HEAD, /* request line and headers */
    HTTP_PHASE_BODY, /* headers complete, body (and chunked trailers) */
    HTTP_PHASE_DONE, /* no further request may follow (error, upgrade, not keep-alive) */
};

struct http_parser {
    llhttp_t llh;
    struct http_message *msg; /* borrowed; where the current request goes */
    size_t max_header;
    size_t max_body;
    size_t head_bytes;    /* bytes of the current header block, including framing */
    size_t trailer_bytes; /* chunked trailers count against max_header too */
    enum http_parse_phase phase;
    bool in_value;      /* last header span was a value (next field starts a header) */
    bool want_100;      /* set by on_headers_complete, consumed by feed */
    bool complete;      /* set by on_message_complete, consumed by feed */
    int status;         /* when HTTP_PARSE_ERROR: 400, 411, 413, 417, 431, 500 */
    const char *error;  /* static short code for the JSON body, e.g. "header_too_large" */
    const char *detail; /* static human-readable detail */
};

/* Prepares a parser for a new connection. No allocation. */
void http_parser_init(struct http_parser *p, size_t max_header, size_t max_body);
/* Sets where the next request is parsed into: an empty message (borrowed). */
void http_parser_set_message(struct http_parser *p, struct http_message *m);
/*
 * Parses up to `len` bytes and stops at the first event; *used says how many
 * bytes were consumed (the caller feeds the rest after handling the event).
 * A message must be set. Never allocates beyond the message's caps.
 */
enum http_parse_event http_parser_feed(struct http_parser *p, const char *data, size_t len,
                                       size_t *used);

#endif
