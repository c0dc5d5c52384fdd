/*
 * hmac: pre-keyed HMAC-SHA256. See hmac.h.
 *
 * `keyed` is the context right after keying and is never updated; `work` is
 * where messages are computed. EVP_MAC_init with a NULL key reinitialises an
 * HMAC context from its saved inner state (a copy of one SHA-256 state), so
 * a message costs no allocation, no key schedule and no algorithm fetch. The
 * reinitialisation is done from `work`'s own saved state; `keyed` is kept to
 * rebuild `work` should OpenSSL ever fail midway through a message.
 */
#include "hmac.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

struct hmac_sha256 {
    EVP_MAC_CTX *keyed;
    EVP_MAC_CTX *work;
    bool work_ok; /* work is ready for a message */
};

int hmac_sha256_new(const void *key, size_t keylen, struct hmac_sha256 **out)
{
    struct hmac_sha256 *h = NULL;
    EVP_MAC *mac = NULL;
    OSSL_PARAM params[2];
    int rc = -ENOMEM;

    *out = NULL;
    if (keylen == 0)
        return -EINVAL;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        goto fail;
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL)
        goto fail;
    h->keyed = EVP_MAC_CTX_new(mac);
    if (h->keyed == NULL)
        goto fail;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(h->keyed, key, keylen, params) != 1)
        goto fail;
    h->work = EVP_MAC_CTX_dup(h->keyed);
    if (h->work == NULL)
        goto fail;
    h->work_ok = true;
    EVP_MAC_free(mac);
    *out = h;
    return 0;
fail:
    EVP_MAC_free(mac);
    hmac_sha256_free(&h);
    return rc;
}

int hmac_sha256_parts(struct hmac_sha256 *h, const void *const *parts, const size_t *lens, size_t n,
                      unsigned char out[HMAC_SHA256_LEN])
{
    size_t outlen = 0;

    if (!h->work_ok) {
        EVP_MAC_CTX_free(h->work);
        h->work = EVP_MAC_CTX_dup(h->keyed);
        if (h->work == NULL)
            return -ENOMEM;
    }
    /* from here until the end succeeds, a failure leaves work half-used */
    h->work_ok = false;
    if (EVP_MAC_init(h->work, NULL, 0, NULL) != 1)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > 0 && EVP_MAC_update(h->work, parts[i], lens[i]) != 1)
            return -ENOMEM;
    }
    if (EVP_MAC_final(h->work, out, &outlen, HMAC_SHA256_LEN) != 1 || outlen != HMAC_SHA256_LEN)
        return -ENOMEM;
    h->work_ok = true;
    return 0;
}

void hmac_sha256_free(struct hmac_sha256 **ph)
{
    struct hmac_sha256 *h = *ph;
    if (h == NULL)
        return;
    *ph = NULL;
    EVP_MAC_CTX_free(h->work);
    EVP_MAC_CTX_free(h->keyed);
    free(h);
}
