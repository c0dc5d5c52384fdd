/*
 * verify: the signing primitives (HMAC-SHA256, SHA-256, constant-time
 * compare, base64, timestamps) and the Standard Webhooks scheme on top of
 * them. The scheme's rules are the published specification's; each branch
 * that looks odd names the rule it follows.
 *
 * Every comparison of a signature is constant-time (CRYPTO_memcmp), and every
 * detail string names headers and numbers only, never secrets or signatures,
 * because details end up in logs and HTTP error bodies.
 */
#include "verify.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define HMAC_LEN VERIFY_SHA256_LEN
/* Decoded Standard Webhooks keys are 24..64 bytes in practice; leave room. */
#define MAX_KEY_LEN 256
/* A v1 signature is 44 base64 characters; anything far longer is junk. */
#define MAX_B64_SIG 128

const char *verify_result_name(enum verify_result r)
{
    switch (r) {
    case VERIFY_OK:
        return "ok";
    case VERIFY_MISSING:
        return "missing";
    case VERIFY_MALFORMED:
        return "malformed";
    case VERIFY_MISMATCH:
        return "mismatch";
    case VERIFY_STALE:
        return "stale";
    case VERIFY_ERROR:
        return "error";
    }
    return "unknown";
}

static enum verify_result say(enum verify_result r, char *detail, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static enum verify_result say(enum verify_result r, char *detail, size_t size, const char *fmt, ...)
{
    va_list ap;

    if (detail == NULL || size == 0)
        return r;
    va_start(ap, fmt);
    vsnprintf(detail, size, fmt, ap);
    va_end(ap);
    return r;
}

/*
 * OpenSSL 3 finds an algorithm by name in its provider store ("fetching": a
 * lock and a hash lookup, more with a property query) whenever it is asked
 * for one by name, which EVP_MAC_fetch does and EVP_MAC_init does again for
 * its "digest" parameter. Done per request that is pure overhead, so the
 * HMAC-SHA256 context is built once, digest included, and every computation
 * starts from a copy of it: EVP_MAC_CTX_dup keeps the digest already fetched.
 * SHA-256 for content-derived keys is fetched once for the same reason
 * (EVP_sha256() is a legacy handle that EVP_DigestInit fetches anew each time).
 *
 * The first use builds them under a mutex, from any thread; afterwards they
 * are only read, and `ready` tells so without the lock. A first use that
 * fails (out of memory) leaves nothing built, and the next use tries again:
 * a transient failure must not leave the process unable to verify anything
 * until it restarts. They are freed at exit so that leak checkers see a
 * clean process.
 */
static pthread_mutex_t crypto_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool crypto_ready;
static EVP_MAC_CTX *hmac_sha256_template;
static EVP_MD *sha256_md;

static void crypto_free(void)
{
    EVP_MAC_CTX_free(hmac_sha256_template);
    hmac_sha256_template = NULL;
    EVP_MD_free(sha256_md);
    sha256_md = NULL;
}

/* Builds both, or neither; called with crypto_lock held. */
static bool crypto_build(void)
{
    static bool at_exit;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    OSSL_PARAM params[2];

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (mac != NULL)
        hmac_sha256_template = EVP_MAC_CTX_new(mac);
    /* the context holds its own reference to the MAC */
    EVP_MAC_free(mac);
    if (hmac_sha256_template != NULL && EVP_MAC_CTX_set_params(hmac_sha256_template, params) != 1) {
        EVP_MAC_CTX_free(hmac_sha256_template);
        hmac_sha256_template = NULL;
    }
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (hmac_sha256_template == NULL || sha256_md == NULL) {
        crypto_free();
        return false;
    }
    /* Without the handler they stay allocated until exit anyway: nothing to undo. */
    if (!at_exit)
        at_exit = atexit(crypto_free) == 0;
    return true;
}

/* Are the template and the digest there (built now if not)? */
static bool crypto_init(void)
{
    bool ok;

    if (atomic_load_explicit(&crypto_ready, memory_order_acquire))
        return true;
    if (pthread_mutex_lock(&crypto_lock) != 0)
        return false;
    ok = atomic_load_explicit(&crypto_ready, memory_order_relaxed) || crypto_build();
    if (ok)
        atomic_store_explicit(&crypto_ready, true, memory_order_release);
    pthread_mutex_unlock(&crypto_lock);
    return ok;
}

int verify_hmac_sha256(const void *key, size_t keylen, const void *const *parts, const size_t *lens,
                       size_t n, unsigned char out[VERIFY_SHA256_LEN])
{
    EVP_MAC_CTX *ctx = NULL;
    size_t outlen = 0;
    int rc = -ENOMEM;

    if (!crypto_init())
        goto fail;
    ctx = EVP_MAC_CTX_dup(hmac_sha256_template);
    if (ctx == NULL)
        goto fail;
    /* OpenSSL refuses a NULL key even when keylen is 0; an empty secret is never usable anyway. */
    if (keylen == 0 || EVP_MAC_init(ctx, key, keylen, NULL) != 1)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > 0 && EVP_MAC_update(ctx, parts[i], lens[i]) != 1)
            goto fail;
    }
    if (EVP_MAC_final(ctx, out, &outlen, HMAC_LEN) != 1 || outlen != HMAC_LEN)
        goto fail;
    rc = 0;
fail:
    EVP_MAC_CTX_free(ctx);
    return rc;
}

int verify_sha256(const void *data, size_t len, unsigned char out[VERIFY_SHA256_LEN])
{
    unsigned int n = 0;

    if (!crypto_init())
        return -ENOMEM;
    if (EVP_Digest(data, len, out, &n, sha256_md, NULL) != 1 || n != VERIFY_SHA256_LEN)
        return -ENOMEM;
    return 0;
}

bool verify_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

static bool is_b64_char(unsigned char c)
{
    return isalnum(c) || c == '+' || c == '/';
}

int verify_base64_decode(const char *s, size_t len, unsigned char *out, size_t out_size)
{
    size_t pad = 0;
    int n;

    /*
     * EVP_DecodeBlock trims whitespace and counts padding as output bytes, so
     * its result length is only right for canonical padded input: check that
     * shape here and subtract the padding ourselves.
     */
    if (len == 0 || len % 4 != 0 || len > INT32_MAX)
        return -EINVAL;
    if (s[len - 1] == '=')
        pad = s[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++) {
        if (!is_b64_char((unsigned char)s[i]))
            return -EINVAL;
    }
    if (len / 4 * 3 > out_size)
        return -ENOSPC;
    n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
    if (n < 0)
        return -EINVAL;
    return n - (int)pad;
}

int verify_parse_timestamp(const char *s, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    /* 15 digits reach the year 31 million: plenty, and no overflow to check. */
    for (i = 0; s[i] != '\0'; i++) {
        if (!isdigit((unsigned char)s[i]) || i >= 15)
            return -EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    if (i == 0)
        return -EINVAL;
    *out = v;
    return 0;
}

/* Decodes "whsec_<base64>" (or bare base64) into a key. Returns its length or <0. */
static int standard_key(const char *secret, unsigned char *key, size_t size)
{
    if (strncmp(secret, "whsec_", 6) == 0)
        secret += 6;
    return verify_base64_decode(secret, strlen(secret), key, size);
}

static int64_t tolerance_or_default(int tolerance_s)
{
    return tolerance_s > 0 ? tolerance_s : VERIFY_DEFAULT_TOLERANCE_S;
}

enum verify_result verify_age(int64_t t, time_t now, int tolerance_s, const char *display,
                              char *detail, size_t detail_size)
{
    int64_t tol = tolerance_or_default(tolerance_s);
    int64_t age = (int64_t)now - t;

    if (age > tol || age < -tol)
        return say(VERIFY_STALE, detail, detail_size,
                   "%s is %lld s away from now (tolerance %lld s)", display,
                   (long long)(age < 0 ? -age : age), (long long)tol);
    return VERIFY_OK;
}

int verify_parse_standard_signatures(const char *value, struct verify_standard_sigs *out)
{
    const char *p = value;

    memset(out, 0, sizeof(*out));
    while (*p != '\0') {
        size_t n;

        if (*p == ' ') {
            p++;
            continue;
        }
        n = strcspn(p, " ");
        if (n > 3 && strncmp(p, "v1,", 3) == 0) {
            unsigned char buf[3 * (MAX_B64_SIG / 4)];
            int got = n - 3 > MAX_B64_SIG ? -EINVAL
                                          : verify_base64_decode(p + 3, n - 3, buf, sizeof(buf));

            if (got != HMAC_LEN || out->n == VERIFY_MAX_SIGS)
                return -EINVAL;
            memcpy(out->sig[out->n++], buf, HMAC_LEN);
        }
        /* Other versions (v1a = asymmetric, ...) are not ours to check: skip them. */
        p += n;
    }
    return out->n > 0 ? 0 : -EINVAL;
}

static int standard_mac(const unsigned char *key, size_t keylen, const char *id, const char *ts,
                        const char *body, size_t len, unsigned char out[HMAC_LEN])
{
    const void *parts[5] = {id, ".", ts, ".", body};
    size_t lens[5] = {strlen(id), 1, strlen(ts), 1, len};

    return verify_hmac_sha256(key, keylen, parts, lens, 5, out);
}

enum verify_result verify_standard(const char *const secrets[2], verify_get_header_fn get_header,
                                   void *ctx, const char *body, size_t len, time_t now,
                                   int tolerance_s, char *detail, size_t detail_size)
{
    const char *id = get_header(ctx, "webhook-id");
    const char *ts = get_header(ctx, "webhook-timestamp");
    const char *sig = get_header(ctx, "webhook-signature");
    struct verify_standard_sigs sigs;
    unsigned char key[MAX_KEY_LEN];
    unsigned char mac[HMAC_LEN];
    bool matched = false, usable = false;
    int64_t t;

    if (id == NULL)
        return say(VERIFY_MISSING, detail, detail_size, "webhook-id header is missing");
    if (ts == NULL)
        return say(VERIFY_MISSING, detail, detail_size, "webhook-timestamp header is missing");
    if (sig == NULL)
        return say(VERIFY_MISSING, detail, detail_size, "webhook-signature header is missing");
    if (id[0] == '\0')
        return say(VERIFY_MALFORMED, detail, detail_size, "webhook-id header is empty");
    if (verify_parse_timestamp(ts, &t) < 0)
        return say(VERIFY_MALFORMED, detail, detail_size,
                   "webhook-timestamp header must be a Unix time in seconds");
    if (verify_parse_standard_signatures(sig, &sigs) < 0)
        return say(VERIFY_MALFORMED, detail, detail_size,
                   "webhook-signature header must list v1,<base64 of 32 bytes> entries");
    for (int i = 0; i < 2 && !matched; i++) {
        int keylen;

        if (secrets[i] == NULL || secrets[i][0] == '\0')
            continue;
        keylen = standard_key(secrets[i], key, sizeof(key));
        /* A secret that does not decode is a configuration error: try the other one. */
        if (keylen <= 0)
            continue;
        usable = true;
        if (standard_mac(key, (size_t)keylen, id, ts, body, len, mac) < 0) {
            OPENSSL_cleanse(key, sizeof(key));
            return say(VERIFY_ERROR, detail, detail_size, "HMAC computation failed");
        }
        for (size_t j = 0; j < sigs.n; j++) {
            if (CRYPTO_memcmp(mac, sigs.sig[j], HMAC_LEN) == 0)
                matched = true;
        }
    }
    OPENSSL_cleanse(key, sizeof(key));
    if (!usable)
        return say(VERIFY_ERROR, detail, detail_size,
                   "no usable secret is configured for this source (expected whsec_<base64>)");
    if (!matched)
        return say(VERIFY_MISMATCH, detail, detail_size,
                   "no v1 signature in webhook-signature matches the message");
    if (verify_age(t, now, tolerance_s, "webhook-timestamp", detail, detail_size) != VERIFY_OK)
        return VERIFY_STALE;
    return say(VERIFY_OK, detail, detail_size, "webhook-signature matches");
}

int verify_sign_standard(const char *msg_id, int64_t timestamp, const char *body, size_t len,
                         const char *secret, char *out, size_t out_size)
{
    unsigned char key[MAX_KEY_LEN];
    unsigned char mac[HMAC_LEN];
    char ts[24];
    int keylen, rc;

    if (out_size < VERIFY_STANDARD_SIG_SIZE)
        return -ENOSPC;
    keylen = standard_key(secret, key, sizeof(key));
    if (keylen <= 0)
        return -EINVAL;
    snprintf(ts, sizeof(ts), "%lld", (long long)timestamp);
    rc = standard_mac(key, (size_t)keylen, msg_id, ts, body, len, mac);
    OPENSSL_cleanse(key, sizeof(key));
    if (rc < 0)
        return rc;
    memcpy(out, "v1,", 3);
    EVP_EncodeBlock((unsigned char *)out + 3, mac, HMAC_LEN);
    return 0;
}
