/*
 * console_auth: token check, signed session cookies and CSRF tokens of the
 * operator console (see console_auth.h for the scheme).
 */
#include "console_auth.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

/* Domain separation: the session key and CSRF tokens are HMACs of distinct strings. */
static const char session_label[] = "ordersync console session v1";
static const char csrf_label[] = "csrf.";

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int unhex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool hmac_hex(const unsigned char key[32], const void *msg, size_t len, char out[65])
{
    unsigned char mac[32];
    unsigned int mlen = 0;
    if (HMAC(EVP_sha256(), key, 32, msg, len, mac, &mlen) == NULL || mlen != 32)
        return false;
    hex(mac, 32, out);
    return true;
}

int console_auth_init(struct console_auth *a, const char *token)
{
    memset(a, 0, sizeof(*a));
    if (token == NULL || strlen(token) < CONSOLE_AUTH_MIN_TOKEN)
        return -EINVAL;
    size_t n = strlen(token);
    unsigned int klen = 0;
    if (SHA256((const unsigned char *)token, n, a->token_digest) == NULL ||
        HMAC(EVP_sha256(), token, (int)n, (const unsigned char *)session_label,
             sizeof(session_label) - 1, a->key, &klen) == NULL ||
        klen != 32)
        return -EINVAL;
    return 0;
}

const char *console_auth_token_weak(const char *token)
{
    size_t n = token ? strlen(token) : 0;
    if (n < CONSOLE_AUTH_GOOD_TOKEN)
        return "shorter than 24 characters";
    bool seen[256] = {false};
    unsigned distinct = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)token[i];
        distinct += !seen[c];
        seen[c] = true;
    }
    if (distinct < CONSOLE_AUTH_GOOD_DISTINCT)
        return "fewer than 10 distinct characters";
    return NULL;
}

bool console_auth_token_ok(const struct console_auth *a, const char *given, size_t len)
{
    /* digests have one length: the comparison takes the same time for any input */
    unsigned char d[32];
    if (given == NULL || SHA256((const unsigned char *)given, len, d) == NULL)
        return false;
    return CRYPTO_memcmp(d, a->token_digest, sizeof(d)) == 0;
}

/*
 * Operators write their names as they are written: letters of any script
 * (UTF-8, checked to be well formed), digits, spaces and . _ @ - ' (Zoë
 * Ñúñez, Dan O'Brien). No control character, no other ASCII punctuation: the
 * name is shown in the console and written into logs and operator_actions.
 */
bool console_auth_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CONSOLE_AUTH_MAX_NAME)
        return false;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x80) {
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == ' ' || c == '.' || c == '_' || c == '@' || c == '-' || c == '\'';
            if (!ok)
                return false;
            i++;
            continue;
        }
        /* a well-formed multi-byte sequence, no overlong form, no surrogate, <= U+10FFFF */
        size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                     : c >= 0xe0 && c <= 0xef ? 3
                     : c >= 0xf0 && c <= 0xf4 ? 4
                                              : 0;
        if (len == 0 || i + len > n)
            return false;
        unsigned char c1 = (unsigned char)name[i + 1];
        if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
            (c == 0xf4 && c1 > 0x8f))
            return false;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)name[i + k] & 0xc0) != 0x80)
                return false;
        /* U+0080..U+009F are C1 control characters */
        if (c == 0xc2 && c1 < 0xa0)
            return false;
        i += len;
    }
    /* a name of blanks would record an action by nobody */
    return strspn(name, " ") != n;
}

int console_auth_session_new(const struct console_auth *a, const char *name, time_t now,
                             const unsigned char nonce[16], char out[CONSOLE_AUTH_COOKIE_SIZE])
{
    if (!console_auth_name_ok(name))
        return -EINVAL;
    char nonce_hex[33], name_hex[2 * CONSOLE_AUTH_MAX_NAME + 1], mac[65];
    hex(nonce, 16, nonce_hex);
    hex((const unsigned char *)name, strlen(name), name_hex);
    /* the MAC covers everything before it, so no field can be changed or moved */
    int n = snprintf(out, CONSOLE_AUTH_COOKIE_SIZE, "v1.%lld.%s.%s",
                     (long long)now + CONSOLE_AUTH_SESSION_S, nonce_hex, name_hex);
    if (n < 0 || (size_t)n + 66 > CONSOLE_AUTH_COOKIE_SIZE)
        return -EINVAL;
    if (!hmac_hex(a->key, out, (size_t)n, mac))
        return -EINVAL;
    snprintf(out + n, CONSOLE_AUTH_COOKIE_SIZE - (size_t)n, ".%s", mac);
    return 0;
}

bool console_auth_session_check(const struct console_auth *a, const char *value, size_t len,
                                time_t now, struct console_session *out)
{
    if (value == NULL || len < 3 + 66 || len >= CONSOLE_AUTH_COOKIE_SIZE ||
        memcmp(value, "v1.", 3) != 0)
        return false;
    size_t signed_len = len - 65;
    if (value[signed_len] != '.')
        return false;
    char mac[65];
    if (!hmac_hex(a->key, value, signed_len, mac) ||
        CRYPTO_memcmp(mac, value + signed_len + 1, 64) != 0)
        return false;
    /* signed by us: the fields are ours, but still read them with care */
    char buf[CONSOLE_AUTH_COOKIE_SIZE];
    memcpy(buf, value, signed_len);
    buf[signed_len] = '\0';
    char *exp = buf + 3;
    char *nonce = strchr(exp, '.');
    char *name = nonce ? strchr(nonce + 1, '.') : NULL;
    if (name == NULL)
        return false;
    *nonce++ = '\0';
    *name++ = '\0';
    char *end;
    long long expires = strtoll(exp, &end, 10);
    size_t name_hex_len = strlen(name);
    if (*end != '\0' || expires <= (long long)now || strlen(nonce) != 32 || name_hex_len % 2 ||
        name_hex_len / 2 > CONSOLE_AUTH_MAX_NAME)
        return false;
    for (size_t i = 0; i < name_hex_len / 2; i++) {
        int hi = unhex_digit(name[2 * i]), lo = unhex_digit(name[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out->name[i] = (char)(hi * 16 + lo);
    }
    out->name[name_hex_len / 2] = '\0';
    memcpy(out->id, nonce, 33);
    if (!console_auth_name_ok(out->name))
        return false;
    char msg[sizeof(csrf_label) + 32];
    snprintf(msg, sizeof(msg), "%s%s", csrf_label, nonce);
    if (!hmac_hex(a->key, msg, strlen(msg), out->csrf))
        return false;
    out->expires = (time_t)expires;
    return true;
}

bool console_auth_csrf_ok(const struct console_session *s, const char *given)
{
    if (given == NULL || strlen(given) != CONSOLE_AUTH_CSRF_SIZE - 1)
        return false;
    return CRYPTO_memcmp(given, s->csrf, CONSOLE_AUTH_CSRF_SIZE - 1) == 0;
}

const char *console_auth_cookie(const char *header, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = header; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *semi = strchr(p, ';');
        size_t plen = semi ? (size_t)(semi - p) : strlen(p);
        if (plen > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            *len = plen - nl - 1;
            while (*len > 0 && (p[nl + *len] == ' ' || p[nl + *len] == '\t'))
                (*len)--;
            return p + nl + 1;
        }
        p = semi ? semi + 1 : NULL;
    }
    return NULL;
}

bool console_auth_same_origin(const char *origin, const char *fetch_site, const char *host)
{
    if (fetch_site != NULL && strcmp(fetch_site, "same-origin") != 0 &&
        strcmp(fetch_site, "none") != 0)
        return false;
    if (origin == NULL)
        return true;
    /* "null" (a sandboxed frame, a redirect across origins) is never ours */
    if (host == NULL || *host == '\0')
        return false;
    const char *rest;
    if (strncasecmp(origin, "http://", 7) == 0)
        rest = origin + 7;
    else if (strncasecmp(origin, "https://", 8) == 0)
        rest = origin + 8;
    else
        return false;
    return strcasecmp(rest, host) == 0;
}
