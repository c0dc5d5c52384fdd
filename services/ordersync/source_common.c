/*
 * source_common: the pieces several source kinds share (see
 * source_internal.h). Details name headers and numbers only, never secrets
 * or signatures: they end up in logs and in HTTP error bodies.
 */
#include "source_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A Shopify/WooCommerce header is 44 characters; anything far longer is junk. */
#define MAX_B64_HEADER 128

int source_refuse(struct source_refused *why, enum source_refusal r, const char *fmt, ...)
{
    va_list ap;

    why->why = r;
    va_start(ap, fmt);
    vsnprintf(why->detail, sizeof(why->detail), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

enum verify_result source_verdict(enum verify_result r, char *detail, size_t size, const char *fmt,
                                  ...)
{
    va_list ap;

    if (detail == NULL || size == 0)
        return r;
    va_start(ap, fmt);
    vsnprintf(detail, size, fmt, ap);
    va_end(ap);
    return r;
}

bool source_have_secret(const char *const *secrets)
{
    return (secrets[0] != NULL && secrets[0][0] != '\0') ||
           (secrets[1] != NULL && secrets[1][0] != '\0');
}

int source_hmac(const struct source_request *req, int i, const void *const *parts,
                const size_t *lens, size_t n, unsigned char out[VERIFY_SHA256_LEN])
{
    const char *secret = req->secrets[i];

    if (req->keys != NULL && req->keys[i] != NULL)
        return hmac_sha256_parts(req->keys[i], parts, lens, n, out);
    return verify_hmac_sha256(secret, strlen(secret), parts, lens, n, out);
}

enum verify_result source_verify_body_hmac(const struct source_request *req, const char *name,
                                           const char *display, char *detail, size_t size)
{
    const char *value = req->get_header(req->ctx, name);
    unsigned char want[MAX_B64_HEADER];
    unsigned char got[VERIFY_SHA256_LEN];
    const void *parts[1] = {req->body};
    size_t lens[1] = {req->len};
    size_t vlen;
    int n;

    if (value == NULL)
        return source_verdict(VERIFY_MISSING, detail, size, "%s header is missing", display);
    vlen = strlen(value);
    n = vlen > MAX_B64_HEADER ? -EINVAL : verify_base64_decode(value, vlen, want, sizeof(want));
    if (n < 0)
        return source_verdict(VERIFY_MALFORMED, detail, size, "%s header is not valid base64",
                              display);
    if (n != VERIFY_SHA256_LEN)
        return source_verdict(VERIFY_MALFORMED, detail, size,
                              "%s header decodes to %d bytes, an HMAC-SHA256 has 32", display, n);
    if (!source_have_secret(req->secrets))
        return source_verdict(VERIFY_ERROR, detail, size,
                              "no secret is configured for this source");
    for (int i = 0; i < 2; i++) {
        const char *secret = req->secrets[i];

        if (secret == NULL || secret[0] == '\0')
            continue;
        if (source_hmac(req, i, parts, lens, 1, got) < 0)
            return source_verdict(VERIFY_ERROR, detail, size, "HMAC computation failed");
        if (verify_equal(got, want, VERIFY_SHA256_LEN))
            return source_verdict(VERIFY_OK, detail, size, "%s matches", display);
    }
    return source_verdict(VERIFY_MISMATCH, detail, size, "%s does not match the body", display);
}

int source_check_token(const char *value, const char *display, struct source_refused *why)
{
    size_t n = 0;

    for (; value[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)value[n];

        if (ch < 0x21 || ch > 0x7e || n >= SOURCE_MAX_TOKEN_LEN)
            break;
    }
    if (n == 0 || value[n] != '\0')
        return source_refuse(why, SOURCE_INVALID_HEADER,
                             "%s header must be 1 to %d printable ASCII characters", display,
                             SOURCE_MAX_TOKEN_LEN);
    return 0;
}

char *source_body_key(const char *body, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[VERIFY_SHA256_LEN];
    char *key;

    if (verify_sha256(body, len, md) < 0)
        return NULL;
    key = malloc(7 + 2 * VERIFY_SHA256_LEN + 1);
    if (key == NULL)
        return NULL;
    memcpy(key, "sha256:", 7);
    for (size_t i = 0; i < VERIFY_SHA256_LEN; i++) {
        key[7 + 2 * i] = digits[md[i] >> 4];
        key[7 + 2 * i + 1] = digits[md[i] & 15];
    }
    key[7 + 2 * VERIFY_SHA256_LEN] = '\0';
    return key;
}
