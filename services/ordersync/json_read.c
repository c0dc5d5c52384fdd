/*
 * json_read: see json_read.h. A recursive descent over the bytes. Every
 * value is made with jansson's public constructors, in document order, as
 * jansson's own parser makes them (json_object_setn_new_nocheck for each
 * member, json_array_append_new for each element), so the result is the
 * same tree. The grammar is RFC 8259's as jansson reads it: whitespace is
 * space, tab, CR and LF; a number has no leading zeros or '+'; an integer
 * is a number without '.' or exponent and must fit json_int_t; literals end
 * where letters end.
 */
#include "json_read.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_utf8.h"

struct reader {
    const unsigned char *p, *end;
    int depth;
    int rc; /* why the value is NULL: -EAGAIN or -ENOMEM */
};

/* In a string: 0 copied as is; 1 '"'; 2 '\\'; 3 a control character; 4 a byte >= 0x80. */
static const unsigned char str_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};

static void *unsure(struct reader *r)
{
    r->rc = -EAGAIN;
    return NULL;
}

static void *no_memory(struct reader *r)
{
    r->rc = -ENOMEM;
    return NULL;
}

static void skip_ws(struct reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

/* Where a number or a literal may end: what can follow a value, or the end. */
static bool at_delimiter(const struct reader *r)
{
    if (r->p == r->end)
        return true;
    switch (*r->p) {
    case ' ':
    case '\n':
    case '\r':
    case '\t':
    case ',':
    case ']':
    case '}':
        return true;
    default:
        return false;
    }
}

static int hex4(const unsigned char *p, uint32_t *out)
{
    uint32_t v = 0;

    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];

        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

/*
 * The string whose opening quote r->p is past. Without escapes (the common
 * case) *s points into the input; with them, into *scratch (a buffer of
 * the caller's with room for *len, or a new allocation the caller frees).
 * Returns 0, or -EAGAIN / -ENOMEM.
 */
static int read_string(struct reader *r, const char **s, size_t *len, char *scratch_small,
                       size_t scratch_size, char **scratch_heap)
{
    const unsigned char *start = r->p, *p = r->p, *end = r->end;
    char *out;
    size_t n = 0;

    for (;;) {
        while (p < end && str_class[*p] == 0)
            p++;
        if (p == end)
            return -EAGAIN;
        if (str_class[*p] == 4) {
            size_t k = json_utf8_seq(p, (size_t)(end - p));
            if (k == 0)
                return -EAGAIN;
            p += k;
            continue;
        }
        break;
    }
    if (*p == '"') {
        *s = (const char *)start;
        *len = (size_t)(p - start);
        r->p = p + 1;
        return 0;
    }
    if (*p != '\\')
        return -EAGAIN; /* a control character */
    /* escapes: decoded text is never longer than the input up to the closing quote */
    {
        const unsigned char *q = p;
        while (q < end && *q != '"') {
            if (*q == '\\')
                q++;
            q++;
        }
        if (q >= end)
            return -EAGAIN;
        if ((size_t)(q - start) <= scratch_size) {
            out = scratch_small;
        } else {
            out = malloc((size_t)(q - start));
            if (out == NULL)
                return -ENOMEM;
            *scratch_heap = out;
        }
    }
    memcpy(out, start, (size_t)(p - start));
    n = (size_t)(p - start);
    while (*p != '"') {
        if (str_class[*p] == 0) {
            out[n++] = (char)*p++;
        } else if (str_class[*p] == 4) {
            size_t k = json_utf8_seq(p, (size_t)(end - p));
            if (k == 0)
                return -EAGAIN;
            memcpy(out + n, p, k);
            n += k;
            p += k;
        } else if (str_class[*p] == 3) {
            return -EAGAIN;
        } else {
            /* a backslash; the scan above saw the byte after it */
            unsigned char c = p[1];
            uint32_t u;

            p += 2;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                out[n++] = (char)c;
                break;
            case 'b':
                out[n++] = '\b';
                break;
            case 'f':
                out[n++] = '\f';
                break;
            case 'n':
                out[n++] = '\n';
                break;
            case 'r':
                out[n++] = '\r';
                break;
            case 't':
                out[n++] = '\t';
                break;
            case 'u':
                /* "\uXXXX" is 6 bytes and becomes at most 3: surrogates and NUL are jansson's */
                if (end - p < 4 || hex4(p, &u) < 0 || u == 0 || (u >= 0xD800 && u <= 0xDFFF))
                    return -EAGAIN;
                p += 4;
                if (u < 0x80) {
                    out[n++] = (char)u;
                } else if (u < 0x800) {
                    out[n++] = (char)(0xC0 | (u >> 6));
                    out[n++] = (char)(0x80 | (u & 0x3F));
                } else {
                    out[n++] = (char)(0xE0 | (u >> 12));
                    out[n++] = (char)(0x80 | ((u >> 6) & 0x3F));
                    out[n++] = (char)(0x80 | (u & 0x3F));
                }
                break;
            default:
                return -EAGAIN;
            }
        }
    }
    *s = out;
    *len = n;
    r->p = p + 1;
    return 0;
}

static json_t *read_number(struct reader *r)
{
    const unsigned char *start = r->p, *p = r->p, *end = r->end;
    bool neg = false, real = false;
    char text[64];
    size_t n;

    if (*p == '-') {
        neg = true;
        p++;
    }
    if (p == end || *p < '0' || *p > '9')
        return unsure(r);
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return unsure(r); /* a leading zero */
    } else {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && *p == '.') {
        real = true;
        p++;
        if (p == end || *p < '0' || *p > '9')
            return unsure(r);
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || *p < '0' || *p > '9')
            return unsure(r);
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    r->p = p;
    if (!at_delimiter(r))
        return unsure(r);
    if (!real) {
        /* json_int_t is int64: strtoll's range, without strtoll's copy */
        uint64_t v = 0, limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        json_t *j;

        for (const unsigned char *d = start + neg; d < p; d++) {
            unsigned digit = *d - '0';
            if (v > (limit - digit) / 10)
                return unsure(r); /* out of range: jansson says so */
            v = v * 10 + digit;
        }
        j = json_integer(neg ? (json_int_t)(0 - v) : (json_int_t)v);
        return j != NULL ? j : no_memory(r);
    }
    n = (size_t)(p - start);
    if (n >= sizeof(text))
        return unsure(r);
    {
        /* jansson reads a real with strtod in the current locale, "." made its decimal point */
        const char *point = localeconv()->decimal_point;
        double d;
        char *stop;
        json_t *j;

        if (point == NULL || point[0] != '.' || point[1] != '\0')
            return unsure(r);
        memcpy(text, start, n);
        text[n] = '\0';
        errno = 0;
        d = strtod(text, &stop);
        if (stop != text + n || ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE))
            return unsure(r); /* overflow: jansson refuses it */
        j = json_real(d);
        return j != NULL ? j : no_memory(r);
    }
}

static json_t *read_value(struct reader *r);

static json_t *read_array(struct reader *r)
{
    json_t *a = json_array();

    if (a == NULL)
        return no_memory(r);
    r->p++; /* '[' */
    skip_ws(r);
    if (r->p < r->end && *r->p == ']') {
        r->p++;
        return a;
    }
    for (;;) {
        json_t *v = read_value(r);

        if (v == NULL || json_array_append_new(a, v) < 0) {
            if (v != NULL)
                r->rc = -ENOMEM;
            json_decref(a);
            return NULL;
        }
        skip_ws(r);
        if (r->p == r->end)
            break;
        if (*r->p == ',') {
            r->p++;
            continue;
        }
        if (*r->p == ']') {
            r->p++;
            return a;
        }
        break;
    }
    json_decref(a);
    return unsure(r);
}

static json_t *read_object(struct reader *r)
{
    json_t *o = json_object();

    if (o == NULL)
        return no_memory(r);
    r->p++; /* '{' */
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return o;
    }
    for (;;) {
        char small[128];
        char *heap = NULL;
        const char *key;
        size_t klen, size;
        json_t *v;
        int rc;

        if (r->p == r->end || *r->p != '"')
            break;
        r->p++;
        rc = read_string(r, &key, &klen, small, sizeof(small), &heap);
        if (rc < 0) {
            free(heap);
            json_decref(o);
            r->rc = rc;
            return NULL;
        }
        skip_ws(r);
        if (r->p == r->end || *r->p != ':') {
            free(heap);
            break;
        }
        r->p++;
        v = read_value(r);
        if (v == NULL) {
            free(heap);
            json_decref(o);
            return NULL;
        }
        /* a duplicate replaces a value and leaves the size: jansson refuses those (words why) */
        size = json_object_size(o);
        rc = json_object_setn_new_nocheck(o, key, klen, v);
        free(heap);
        if (rc < 0) {
            json_decref(o);
            return no_memory(r);
        }
        if (json_object_size(o) == size)
            break;
        skip_ws(r);
        if (r->p == r->end)
            break;
        if (*r->p == ',') {
            r->p++;
            skip_ws(r);
            continue;
        }
        if (*r->p == '}') {
            r->p++;
            return o;
        }
        break;
    }
    json_decref(o);
    return unsure(r);
}

static json_t *literal(struct reader *r, const char *word, size_t n, json_t *value)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return unsure(r);
    r->p += n;
    /* jansson reads letters up to the first non-letter: "truex" is not true */
    if (r->p < r->end && ((*r->p >= 'a' && *r->p <= 'z') || (*r->p >= 'A' && *r->p <= 'Z')))
        return unsure(r);
    return value;
}

static json_t *read_value(struct reader *r)
{
    json_t *v;

    skip_ws(r);
    if (r->p == r->end)
        return unsure(r);
    switch (*r->p) {
    case '{':
    case '[':
        if (r->depth >= JSON_READ_MAX_DEPTH)
            return unsure(r);
        r->depth++;
        v = *r->p == '{' ? read_object(r) : read_array(r);
        r->depth--;
        return v;
    case '"': {
        char small[256];
        char *heap = NULL;
        const char *s;
        size_t len;
        int rc;

        r->p++;
        rc = read_string(r, &s, &len, small, sizeof(small), &heap);
        if (rc < 0) {
            free(heap);
            r->rc = rc;
            return NULL;
        }
        v = json_stringn_nocheck(s, len);
        free(heap);
        return v != NULL ? v : no_memory(r);
    }
    case 't':
        return literal(r, "true", 4, json_true());
    case 'f':
        return literal(r, "false", 5, json_false());
    case 'n':
        return literal(r, "null", 4, json_null());
    default:
        return read_number(r);
    }
}

json_t *json_read(const char *buf, size_t len, int *rc)
{
    struct reader r = {(const unsigned char *)buf, (const unsigned char *)buf + len, 0, 0};
    json_t *v = read_value(&r);

    if (v != NULL) {
        skip_ws(&r);
        if (r.p != r.end) {
            json_decref(v);
            v = unsure(&r);
        }
    }
    *rc = v != NULL ? 0 : r.rc;
    return v;
}
