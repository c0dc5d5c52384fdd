/*
 * trace: see trace.h. The rules are the specification's: lower-case hex,
 * fixed lengths for version 00, all-zero ids invalid, version ff invalid, a
 * later version may append fields after the flags.
 */
#include "trace.h"

#include <stdint.h>
#include <string.h>

#include "prng.h"

static bool lower_hex(const char *s, size_t n, bool *all_zero)
{
    *all_zero = true;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        if (c != '0')
            *all_zero = false;
    }
    return true;
}

bool trace_parse_parent(const char *v, char out[TRACE_ID_HEX + 1])
{
    out[0] = '\0';
    if (v == NULL)
        return false;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t len = strlen(v);
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    /* version "-" trace-id "-" parent-id "-" flags */
    if (len < TRACE_PARENT_LEN)
        return false;
    bool zero;
    if (!lower_hex(v, 2, &zero) || strncmp(v, "ff", 2) == 0 || v[2] != '-' ||
        v[3 + TRACE_ID_HEX] != '-' || v[4 + TRACE_ID_HEX + TRACE_SPAN_HEX] != '-')
        return false;
    if (!lower_hex(v + 3, TRACE_ID_HEX, &zero) || zero)
        return false;
    if (!lower_hex(v + 4 + TRACE_ID_HEX, TRACE_SPAN_HEX, &zero) || zero)
        return false;
    if (!lower_hex(v + 5 + TRACE_ID_HEX + TRACE_SPAN_HEX, 2, &zero))
        return false;
    bool v00 = strncmp(v, "00", 2) == 0;
    if (len > TRACE_PARENT_LEN && (v00 || v[TRACE_PARENT_LEN] != '-'))
        return false;
    memcpy(out, v + 3, TRACE_ID_HEX);
    out[TRACE_ID_HEX] = '\0';
    return true;
}

static bool random_hex(char *out, size_t n_bytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char b[16];
    bool zero = true;
    if (n_bytes > sizeof(b))
        return false;
    /* ids, not secrets: a seeded PRNG (lib/prng), not a DRBG call per id */
    while (zero) {
        for (size_t i = 0; i < n_bytes; i += 8) {
            uint64_t r = prng_u64();
            memcpy(b + i, &r, n_bytes - i < 8 ? n_bytes - i : 8);
        }
        for (size_t i = 0; i < n_bytes; i++)
            zero = zero && b[i] == 0;
    }
    for (size_t i = 0; i < n_bytes; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n_bytes] = '\0';
    return true;
}

bool trace_new_id(char out[TRACE_ID_HEX + 1])
{
    return random_hex(out, TRACE_ID_HEX / 2);
}

bool trace_new_parent(const char *trace_id, char out[TRACE_PARENT_LEN + 1])
{
    char span[TRACE_SPAN_HEX + 1];
    if (strlen(trace_id) != TRACE_ID_HEX || !random_hex(span, TRACE_SPAN_HEX / 2))
        return false;
    memcpy(out, "00-", 3);
    memcpy(out + 3, trace_id, TRACE_ID_HEX);
    out[3 + TRACE_ID_HEX] = '-';
    memcpy(out + 4 + TRACE_ID_HEX, span, TRACE_SPAN_HEX);
    memcpy(out + 4 + TRACE_ID_HEX + TRACE_SPAN_HEX, "-01", 4);
    return true;
}
