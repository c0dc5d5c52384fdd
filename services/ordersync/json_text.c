/*
 * json_text: see json_text.h. A byte of a string that needs no escape is
 * found by a table lookup, and a multi-byte UTF-8 sequence is checked as
 * jansson checks it (shortest form, no surrogates, at most U+10FFFF) and
 * copied as is.
 */
#include "json_text.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "json_utf8.h"

/* 0: copied as is; 1: escaped; 2: the first byte of a multi-byte sequence (or invalid) */
static const unsigned char byte_class[256] = {
    /* 0x00-0x1f: control characters */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x20-0x7f: " and \ */
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x80-0xff */
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};

/*
 * One pass: room for the worst case (every byte a \u00XX escape) is made
 * first and the bytes are written in place, UTF-8 checked on the way. The
 * room is only reserved: the caller's text keeps what was written (and
 * ingest_element hands back an exact-size copy).
 */
int json_text_append_string(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    char *start, *o;
    int rc;

    if (len > (SIZE_MAX - 2) / 6)
        return -E2BIG;
    rc = buf_reserve(out, 6 * len + 2);
    if (rc < 0)
        return rc;
    start = o = out->data + out->len;
    *o++ = '"';
    while (p < end) {
        unsigned char c = *p;

        if (byte_class[c] == 0) {
            *o++ = (char)c;
            p++;
            continue;
        }
        if (byte_class[c] == 2) {
            size_t n = json_utf8_seq(p, (size_t)(end - p));

            if (n == 0)
                return -EINVAL; /* nothing counted yet: the buffer's length is unchanged */
            memcpy(o, p, n);
            o += n;
            p += n;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
            break;
        }
        p++;
    }
    *o++ = '"';
    buf_advance(out, (size_t)(o - start));
    return 0;
}

/* "%" JSON_INTEGER_FORMAT without printf */
static int append_integer(struct buf *out, json_int_t v)
{
    char text[24];
    char *p = text + sizeof(text);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    return buf_append(out, p, (size_t)(text + sizeof(text) - p));
}

/* jansson's jsonp_dtostr at its default precision (17), for the C locale's "." */
static int append_real(struct buf *out, double v)
{
    char text[64];
    char *e;
    int n;

    if (!isfinite(v))
        return -EINVAL;
    n = snprintf(text, sizeof(text), "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof(text) - 3)
        return -EINVAL;
    /* a real without '.' or 'e' would read back as an integer */
    if (strchr(text, '.') == NULL && strchr(text, 'e') == NULL) {
        memcpy(text + n, ".0", 3);
        n += 2;
    }
    /* no '+' and no leading zeros in the exponent */
    e = strchr(text, 'e');
    if (e != NULL) {
        char *start = e + 1, *digits = e + 2;

        if (*start == '-')
            start++;
        while (*digits == '0')
            digits++;
        if (digits != start) {
            memmove(start, digits, (size_t)(text + n - digits) + 1);
            n -= (int)(digits - start);
        }
    }
    return buf_append(out, text, (size_t)n);
}

static int append_value(struct buf *out, const json_t *json, int depth)
{
    int rc;

    if (json == NULL)
        return -EINVAL;
    switch (json_typeof(json)) {
    case JSON_NULL:
        return buf_append(out, "null", 4);
    case JSON_TRUE:
        return buf_append(out, "true", 4);
    case JSON_FALSE:
        return buf_append(out, "false", 5);
    case JSON_INTEGER:
        return append_integer(out, json_integer_value(json));
    case JSON_REAL:
        return append_real(out, json_real_value(json));
    case JSON_STRING:
        return json_text_append_string(out, json_string_value(json), json_string_length(json));
    case JSON_ARRAY: {
        size_t size = json_array_size(json);

        if (depth >= JSON_TEXT_MAX_DEPTH)
            return -ELOOP;
        rc = buf_append(out, "[", 1);
        for (size_t i = 0; rc == 0 && i < size; i++) {
            if (i > 0)
                rc = buf_append(out, ",", 1);
            if (rc == 0)
                rc = append_value(out, json_array_get(json, i), depth + 1);
        }
        return rc == 0 ? buf_append(out, "]", 1) : rc;
    }
    case JSON_OBJECT: {
        bool first = true;

        if (depth >= JSON_TEXT_MAX_DEPTH)
            return -ELOOP;
        rc = buf_append(out, "{", 1);
        /* the iterator walks the keys in insertion order, as json_dumps does */
        for (void *it = json_object_iter((json_t *)json); rc == 0 && it != NULL;
             it = json_object_iter_next((json_t *)json, it)) {
            if (!first)
                rc = buf_append(out, ",", 1);
            first = false;
            if (rc == 0)
                rc = json_text_append_string(out, json_object_iter_key(it),
                                             json_object_iter_key_len(it));
            if (rc == 0)
                rc = buf_append(out, ":", 1);
            if (rc == 0)
                rc = append_value(out, json_object_iter_value(it), depth + 1);
        }
        return rc == 0 ? buf_append(out, "}", 1) : rc;
    }
    }
    return -EINVAL;
}

int json_text_append(struct buf *out, const json_t *json)
{
    return append_value(out, json, 0);
}
