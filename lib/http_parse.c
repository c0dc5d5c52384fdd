/*
 * http_parse: llhttp plus our limits, as a sans-IO state machine.
 *
 * llhttp calls back with spans of the input; we copy them into the message's
 * bounded buffers (so a peer can make us allocate at most max_header +
 * max_body per request) and pause llhttp at two points: when the headers are
 * complete (to decide 100/411/413/417 before any body byte is taken, and to
 * know exactly how many bytes the header block used) and when the message is
 * complete (so pipelined requests come out one at a time and the caller can
 * stop parsing at max_pipelined without copying anything).
 */
#include "http_parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const llhttp_settings_t *parse_settings(void);

void http_message_init(struct http_message *m, size_t max_header, size_t max_body)
{
    memset(m, 0, sizeof(*m));
    buf_init(&m->raw, max_header);
    buf_init(&m->body, max_body);
    m->path = "";
    m->query = "";
    m->method = "";
}

void http_message_reset(struct http_message *m, size_t keep)
{
    /* A pooled message keeps its buffers so steady traffic allocates nothing,
     * but one huge body must not stay pinned in the pool forever. */
    if (m->raw.alloc > keep)
        buf_free(&m->raw);
    if (m->body.alloc > keep)
        buf_free(&m->body);
    buf_reset(&m->raw);
    buf_reset(&m->body);
    m->n_headers = 0;
    m->keep_alive = false;
    m->path = "";
    m->query = "";
    m->method = "";
}

void http_message_free(struct http_message *m)
{
    buf_free(&m->raw);
    buf_free(&m->body);
    free(m->headers);
    free(m->offs);
    m->headers = NULL;
    m->offs = NULL;
    m->headers_alloc = 0;
    m->n_headers = 0;
}

const char *http_message_header(const struct http_message *m, const char *name)
{
    for (size_t i = 0; i < m->n_headers; i++) {
        if (strcasecmp(m->headers[i].name, name) == 0)
            return m->headers[i].value;
    }
    return NULL;
}

void http_parser_init(struct http_parser *p, size_t max_header, size_t max_body)
{
    memset(p, 0, sizeof(*p));
    llhttp_init(&p->llh, HTTP_REQUEST, parse_settings());
    p->llh.data = p;
    p->max_header = max_header;
    p->max_body = max_body;
    p->phase = HTTP_PHASE_IDLE;
}

void http_parser_set_message(struct http_parser *p, struct http_message *m)
{
    p->msg = m;
}

/* Records why parsing stops; the callback then returns HPE_USER. */
static int fail(struct http_parser *p, int status, const char *error, const char *detail)
{
    if (p->status == 0) {
        p->status = status;
        p->error = error;
        p->detail = detail;
    }
    p->phase = HTTP_PHASE_DONE;
    return HPE_USER;
}

static int fail_append(struct http_parser *p, int rc, int toobig_status)
{
    if (rc == -E2BIG && toobig_status == 431)
        return fail(p, 431, "header_too_large", "request header block exceeds the limit");
    if (rc == -E2BIG)
        return fail(p, 413, "body_too_large", "request body exceeds the limit");
    return fail(p, 500, "internal", "out of memory");
}

static struct http_parser *parser_of(llhttp_t *llh)
{
    return llh->data;
}

static int on_message_begin(llhttp_t *llh)
{
    struct http_parser *p = parser_of(llh);
    p->phase = HTTP_PHASE_HEAD;
    p->in_value = false;
    p->trailer_bytes = 0;
    return 0;
}

static int on_url(llhttp_t *llh, const char *at, size_t len)
{
    struct http_parser *p = parser_of(llh);
    int rc = buf_append(&p->msg->raw, at, len);
    return rc < 0 ? fail_append(p, rc, 431) : 0;
}

static int on_url_complete(llhttp_t *llh)
{
    struct http_parser *p = parser_of(llh);
    int rc = buf_append(&p->msg->raw, "", 1);
    return rc < 0 ? fail_append(p, rc, 431) : 0;
}

/* Trailers are parsed but not kept; they still count against max_header. */
static int count_trailer(struct http_parser *p, size_t len)
{
    p->trailer_bytes += len;
    if (p->trailer_bytes > p->max_header)
        return fail(p, 431, "header_too_large", "request trailers exceed the limit");
    return 0;
}

static int start_header(struct http_parser *p)
{
    struct http_message *m = p->msg;
    if (m->n_headers == m->headers_alloc) {
        size_t n = m->headers_alloc ? m->headers_alloc * 2 : 16;
        struct http_header *h = realloc(m->headers, n * sizeof(*h));
        if (h == NULL)
            return fail_append(p, -ENOMEM, 431);
        m->headers = h;
        size_t *o = realloc(m->offs, 2 * n * sizeof(*o));
        if (o == NULL)
            return fail_append(p, -ENOMEM, 431);
        m->offs = o;
        m->headers_alloc = n;
    }
    m->offs[2 * m->n_headers] = m->raw.len;
    m->offs[2 * m->n_headers + 1] = 0;
    m->n_headers++;
    return 0;
}

static int on_header_field(llhttp_t *llh, const char *at, size_t len)
{
    struct http_parser *p = parser_of(llh);
    if (p->phase == HTTP_PHASE_BODY)
        return count_trailer(p, len);
    struct http_message *m = p->msg;
    /* llhttp may deliver one name in several spans (split across reads); a
     * new header starts only after the previous one's value. */
    if (m->n_headers == 0 || p->in_value) {
        int rc = start_header(p);
        if (rc != 0)
            return rc;
        p->in_value = false;
    }
    size_t start = m->raw.len;
    int rc = buf_append(&m->raw, at, len);
    if (rc < 0)
        return fail_append(p, rc, 431);
    for (size_t i = start; i < m->raw.len; i++)
        m->raw.data[i] = (char)tolower((unsigned char)m->raw.data[i]);
    return 0;
}

static int on_header_field_complete(llhttp_t *llh)
{
    struct http_parser *p = parser_of(llh);
    if (p->phase == HTTP_PHASE_BODY)
        return 0;
    int rc = buf_append(&p->msg->raw, "", 1);
    if (rc < 0)
        return fail_append(p, rc, 431);
    p->msg->offs[2 * (p->msg->n_headers - 1) + 1] = p->msg->raw.len;
    p->in_value = true;
    return 0;
}

static int on_header_value(llhttp_t *llh, const char *at, size_t len)
{
    struct http_parser *p = parser_of(llh);
    if (p->phase == HTTP_PHASE_BODY)
        return count_trailer(p, len);
    int rc = buf_append(&p->msg->raw, at, len);
    return rc < 0 ? fail_append(p, rc, 431) : 0;
}

static int on_header_value_complete(llhttp_t *llh)
{
    struct http_parser *p = parser_of(llh);
    if (p->phase == HTTP_PHASE_BODY)
        return 0;
    int rc = buf_append(&p->msg->raw, "", 1);
    return rc < 0 ? fail_append(p, rc, 431) : 0;
}

/* raw no longer moves once the header block is complete: point into it. */
static void fix_pointers(struct http_message *m)
{
    char *url = m->raw.data;
    char *q = strchr(url, '?');
    if (q != NULL) {
        *q = '\0';
        m->query = q + 1;
    }
    m->path = url;
    for (size_t i = 0; i < m->n_headers; i++) {
        m->headers[i].name = m->raw.data + m->offs[2 * i];
        m->headers[i].value = m->raw.data + m->offs[2 * i + 1];
    }
}

static int on_headers_complete(llhttp_t *llh)
{
    struct http_parser *p = parser_of(llh);
    struct http_message *m = p->msg;
    if (m->raw.len == 0)
        return fail(p, 400, "bad_request", "missing request target");
    fix_pointers(m);
    m->method = llhttp_method_name((llhttp_method_t)llh->method);

    bool chunked = (llh->flags & F_CHUNKED) != 0;
    bool has_length = (llh->flags & F_CONTENT_LENGTH) != 0;
    /* A non-chunked Transfer-Encoding is left to llhttp, which rejects it
     * with 400 as RFC 9112 6.3 requires; it is not a missing length. */
    bool other_te = (llh->flags & F_TRANSFER_ENCODING) != 0 && !chunked;
    if ((llh->method == HTTP_POST || llh->method == HTTP_PUT || llh->method == HTTP_PATCH) &&
        !chunked && !has_length && !other_te)
        return fail(p, 411, "length_required",
                    "POST, PUT and PATCH need Content-Length or chunked");
    if (!chunked && has_length && llh->content_length > p->max_body)
        return fail(p, 413, "body_too_large", "declared Content-Length exceeds the limit");

    const char *expect = http_message_header(m, "expect");
    if (expect != NULL) {
        if (strcasecmp(expect, "100-continue") != 0)
            return fail(p, 417, "expectation_failed", "only 100-continue is supported");
        /* HTTP/1.0 clients do not understand 1xx (RFC 9110 10.1.1). */
        bool has_body = chunked || llh->content_length > 0;
        if (has_body && (llh->http_major > 1 || (llh->http_major == 1 && llh->http_minor >= 1)))
            p->want_100 = true;
    }
    p->phase = HTTP_PHASE_BODY;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *llh, const char *at, size_t len)
{
    struct http_parser *p = parser_of(llh);
    int rc = buf_append(&p->msg->body, at, len);
    return rc < 0 ? fail_append(p, rc, 413) : 0;
}

static int on_message_complete(llhttp_t *llh)
{
    struct http_parser *p = parser_of(llh);
    p->msg->keep_alive = llhttp_should_keep_alive(llh) != 0;
    /* After Upgrade/CONNECT the bytes that follow are another protocol, which
     * we do not speak: answer this request and close. */
    bool more = p->msg->keep_alive && !llh->upgrade;
    if (!more)
        p->msg->keep_alive = false;
    p->phase = more ? HTTP_PHASE_IDLE : HTTP_PHASE_DONE;
    p->head_bytes = 0;
    p->complete = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t *parse_settings(void)
{
    static llhttp_settings_t s;
    static bool ready;
    if (!ready) {
        llhttp_settings_init(&s);
        s.on_message_begin = on_message_begin;
        s.on_url = on_url;
        s.on_url_complete = on_url_complete;
        s.on_header_field = on_header_field;
        s.on_header_field_complete = on_header_field_complete;
        s.on_header_value = on_header_value;
        s.on_header_value_complete = on_header_value_complete;
        s.on_headers_complete = on_headers_complete;
        s.on_body = on_body;
        s.on_message_complete = on_message_complete;
        ready = true;
    }
    return &s;
}

static enum http_parse_event parse_error(struct http_parser *p, llhttp_errno_t err)
{
    if (p->status == 0) {
        p->status = 400;
        p->error = "bad_request";
        /* llhttp's reasons are static strings describing the syntax error. */
        const char *reason = llhttp_get_error_reason(&p->llh);
        p->detail = reason != NULL ? reason : llhttp_errno_name(err);
    }
    p->phase = HTTP_PHASE_DONE;
    return HTTP_PARSE_ERROR;
}

enum http_parse_event http_parser_feed(struct http_parser *p, const char *data, size_t len,
                                       size_t *used)
{
    size_t off = 0;
    *used = 0;
    if (p->status != 0) {
        *used = len;
        return HTTP_PARSE_ERROR;
    }
    for (;;) {
        if (p->phase == HTTP_PHASE_DONE) {
            /* Whatever follows the last request is ignored, not parsed. */
            *used = len;
            return HTTP_PARSE_MORE;
        }
        bool head = p->phase == HTTP_PHASE_IDLE || p->phase == HTTP_PHASE_HEAD;
        size_t n = len - off;
        if (head) {
            if (n == 0)
                break;
            /* Hand llhttp at most one byte past the limit: the header block
             * is measured on the wire, including whitespace and CRLFs that
             * never reach a span callback. */
            size_t room = p->max_header - p->head_bytes + 1;
            if (n > room)
                n = room;
            p->phase = HTTP_PHASE_HEAD;
        }
        bool was_body = p->phase == HTTP_PHASE_BODY;
        llhttp_errno_t err = llhttp_execute(&p->llh, data + off, n);
        size_t consumed = n;
        if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
            consumed = (size_t)(llhttp_get_error_pos(&p->llh) - (data + off));
            if (err == HPE_PAUSED)
                llhttp_resume(&p->llh);
        } else if (err != HPE_OK) {
            *used = len;
            return parse_error(p, err);
        }
        off += consumed;
        if (head) {
            p->head_bytes += consumed;
            if (p->head_bytes > p->max_header) {
                *used = len;
                fail(p, 431, "header_too_large", "request header block exceeds the limit");
                return HTTP_PARSE_ERROR;
            }
        }
        if (p->complete) {
            p->complete = false;
            p->want_100 = false;
            *used = off;
            return HTTP_PARSE_REQUEST;
        }
        if (p->want_100) {
            p->want_100 = false;
            *used = off;
            return HTTP_PARSE_CONTINUE;
        }
        /* Paused right after the headers: run again even with no bytes left,
         * because a bodiless request completes without consuming any. */
        bool just_headers = !was_body && p->phase == HTTP_PHASE_BODY;
        if (off == len && !just_headers)
            break;
    }
    *used = off;
    return HTTP_PARSE_MORE;
}
