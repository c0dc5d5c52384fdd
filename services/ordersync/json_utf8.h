/*
 * json_utf8: the UTF-8 check jansson applies to every string it reads or
 * writes, for json_text: a sequence in its shortest form,
 * not a surrogate (U+D800..U+DFFF), at most U+10FFFF.
 */
#ifndef OS_JSON_UTF8_H
#define OS_JSON_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * The length (2 to 4) of the valid multi-byte sequence at p (avail bytes
 * available, p[0] >= 0x80), or 0 when it is not one.
 */
static inline size_t json_utf8_seq(const unsigned char *p, size_t avail)
{
    uint32_t v;
    size_t n;

    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        n = 2;
        v = p[0] & 0x1Fu;
    } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        n = 3;
        v = p[0] & 0x0Fu;
    } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        n = 4;
        v = p[0] & 0x07u;
    } else {
        return 0; /* a continuation byte, 0xC0/0xC1 (overlong ASCII) or above 0xF4 */
    }
    if (n > avail)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
        v = (v << 6) | (p[i] & 0x3Fu);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (n == 3 && v < 0x800) ||
        (n == 4 && v < 0x10000))
        return 0;
    return n;
}

#endif
