/*
 * http_response: formats HTTP/1.1 responses into bounded buffers (see
 * http_response.h). http.c owns the connection and calls in here once per
 * response, so everything about the bytes on the wire (which headers a status
 * may carry, the Date format, refusing header injection) sits in one place
 * with no libuv in it.
 */
#include "http_response.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "log.h"

const char *http_status_reason(int status)
{
    /* Every status RFC 9110 defines (15.2-15.6), and those of RFC 6585 and
     * RFC 8470 a server may send: a client that shows the reason phrase to a
     * person (curl -v, a proxy's log) must never read "Unknown" for a status
     * this server sends. */
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {100, "Continue"},
        {101, "Switching Protocols"},
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {203, "Non-Authoritative Information"},
        {204, "No Content"},
        {205, "Reset Content"},
        {206, "Partial Content"},
        {300, "Multiple Choices"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {305, "Use Proxy"},
        {307, "Temporary Redirect"},
        {308, "Permanent Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {402, "Payment Required"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {406, "Not Acceptable"},
        {407, "Proxy Authentication Required"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {410, "Gone"},
        {411, "Length Required"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {414, "URI Too Long"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {417, "Expectation Failed"},
        {421, "Misdirected Request"},
        {422, "Unprocessable Content"},
        {425, "Too Early"},
        {426, "Upgrade Required"},
        {428, "Precondition Required"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        if (reasons[i].status == status)
            return reasons[i].reason;
    }
    /* a status of no RFC (the downstream's fault knobs can ask for one): the
     * phrase of its class, which is what a client falls back to anyway */
    switch (status / 100) {
    case 1:
        return "Informational";
    case 2:
        return "Success";
    case 3:
        return "Redirection";
    case 4:
        return "Client Error";
    default:
        return "Server Error";
    }
}

static const char *response_date(struct http_response_date *date)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != date->sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        /* Spelled out rather than strftime("%a"): IMF-fixdate is English
         * whatever locale the process runs in. */
        snprintf(date->text, sizeof(date->text), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        date->sec = now;
    }
    return date->text;
}

static int append_uint(struct buf *b, unsigned long long v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return buf_append(b, tmp + i, sizeof(tmp) - i);
}

/* Application headers go on the wire verbatim: refuse what would split them. */
static bool header_ok(const struct http_header *h)
{
    if (h->name == NULL || h->value == NULL || h->name[0] == '\0')
        return false;
    for (const char *s = h->name; *s != '\0'; s++) {
        if (*s <= ' ' || *s == ':' || *s == 127)
            return false;
    }
    return strpbrk(h->value, "\r\n") == NULL;
}

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        rc = (expr);                                                                               \
        if (rc < 0)                                                                                \
            goto fail;                                                                             \
    } while (0)

int http_response_format(struct buf *b, struct http_response_date *date, int status,
                         const char *content_type, const char *body, size_t body_len,
                         const struct http_header *headers, size_t n_headers, bool close,
                         bool head_method)
{
    size_t mark = b->len;
    int rc;
    /* RFC 9110 6.4.1: 1xx, 204 and 304 never carry content; 204 and 1xx must
     * not even announce a length. */
    bool no_content = status < 200 || status == 204 || status == 304;
    TRY(buf_append(b, "HTTP/1.1 ", 9));
    TRY(append_uint(b, (unsigned)status));
    TRY(buf_append(b, " ", 1));
    TRY(buf_append_str(b, http_status_reason(status)));
    TRY(buf_append(b, "\r\nDate: ", 8));
    TRY(buf_append_str(b, response_date(date)));
    if (!no_content) {
        TRY(buf_append(b, "\r\nContent-Length: ", 18));
        TRY(append_uint(b, body_len));
    }
    TRY(buf_append_str(b, close ? "\r\nConnection: close" : "\r\nConnection: keep-alive"));
    if (content_type != NULL && !no_content) {
        TRY(buf_append(b, "\r\nContent-Type: ", 16));
        TRY(buf_append_str(b, content_type));
    }
    for (size_t i = 0; i < n_headers; i++) {
        if (!header_ok(&headers[i])) {
            log_warn("dropping invalid response header",
                     json_pack("{s:s?}", "name", headers[i].name));
            continue;
        }
        TRY(buf_append(b, "\r\n", 2));
        TRY(buf_append_str(b, headers[i].name));
        TRY(buf_append(b, ": ", 2));
        TRY(buf_append_str(b, headers[i].value));
    }
    TRY(buf_append(b, "\r\n\r\n", 4));
    /* HEAD gets the length the body would have had, not the body. */
    if (!no_content && !head_method && body_len > 0)
        TRY(buf_append(b, body, body_len));
    return 0;
fail:
    b->len = mark;
    if (b->data != NULL)
        b->data[mark] = '\0';
    return rc;
}

int http_response_continue(struct buf *b)
{
    return buf_append_str(b, "HTTP/1.1 100 Continue\r\n\r\n");
}

char *http_response_error_json(const char *error, const char *detail)
{
    json_t *obj =
        json_pack("{s:s,s:s}", "error", error ? error : "error", "detail", detail ? detail : "");
    if (obj == NULL)
        return NULL;
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return text;
}
