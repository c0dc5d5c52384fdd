/*
 * http_response: the response-writing half of the HTTP server, without
 * sockets (the mirror of http_parse).
 *
 * http.c decides when a response is due and where its bytes go (straight to
 * the output, or held until earlier pipelined requests are answered); this
 * module turns a status, headers and body into those bytes: status line,
 * Date, Content-Length, Connection, the application's headers (checked so
 * they cannot split the response) and the body. It also makes the JSON error
 * bodies the server sends by itself.
 *
 * Internal to lib/: services use http.h (whose http_status_reason() lives
 * here).
 */
#ifndef OS_HTTP_RESPONSE_H
#define OS_HTTP_RESPONSE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "buf.h"
#include "http.h"

/*
 * The Date header text, recomputed at most once a second. One per server
 * (zero-initialized), so servers on different loop threads share nothing.
 */
struct http_response_date {
    time_t sec;
    char text[64];
};

/*
 * Appends a whole response to `b`, or nothing on error (-E2BIG over the
 * buffer's cap, -ENOMEM). All pointers are borrowed; `body` is copied.
 * `close` picks the Connection header; `head_method` leaves the body out but
 * keeps its Content-Length. Invalid application headers are logged and left
 * out rather than failing the response.
 */
int http_response_format(struct buf *b, struct http_response_date *date, int status,
                         const char *content_type, const char *body, size_t body_len,
                         const struct http_header *headers, size_t n_headers, bool close,
                         bool head_method) __attribute__((warn_unused_result));

/* Appends the interim "100 Continue" response; 0, -E2BIG or -ENOMEM. */
int http_response_continue(struct buf *b) __attribute__((warn_unused_result));

/*
 * Returns a new allocation (free()) holding {"error": error, "detail": detail}
 * (NULL arguments become "error" and ""), or NULL when out of memory.
 */
char *http_response_error_json(const char *error, const char *detail);

#endif
