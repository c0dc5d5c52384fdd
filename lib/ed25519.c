/*
 * ed25519: see ed25519.h. OpenSSL does the curve arithmetic (EVP_PKEY_ED25519);
 * this file parses and prints the Standard Webhooks key texts and builds the
 * signed content.
 */
#include "ed25519.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "verify.h"

#define SEED_LEN 32
#define PUB_LEN  32
#define SIG_LEN  64

struct ed25519_signer {
    EVP_PKEY *pkey;
    unsigned char pub[PUB_LEN];
};

void ed25519_signer_free(struct ed25519_signer **ps)
{
    struct ed25519_signer *s = *ps;
    if (s == NULL)
        return;
    *ps = NULL;
    EVP_PKEY_free(s->pkey);
    free(s);
}

int ed25519_signer_new(const char *text, struct ed25519_signer **out, const char **why)
{
    *out = NULL;
    *why = NULL;
    /* seed (32) or seed||public (64); room for a little more to tell "too long" apart */
    unsigned char raw[SEED_LEN + PUB_LEN + 6];
    int rc = -EINVAL;
    if (strncmp(text, "whsk_", 5) != 0) {
        *why = "a signing key starts with whsk_";
        return -EINVAL;
    }
    int n = verify_base64_decode(text + 5, strlen(text + 5), raw, sizeof(raw));
    if (n != SEED_LEN && n != SEED_LEN + PUB_LEN) {
        *why = n < 0 && n != -ENOSPC
                   ? "a signing key is whsk_ and padded base64"
                   : "a signing key is whsk_ and base64 of a 32-byte seed (or of the seed and"
                     " its 32-byte public key)";
        goto done;
    }
    struct ed25519_signer *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = -ENOMEM;
        goto done;
    }
    size_t plen = PUB_LEN;
    s->pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw, SEED_LEN);
    if (s->pkey == NULL || EVP_PKEY_get_raw_public_key(s->pkey, s->pub, &plen) != 1 ||
        plen != PUB_LEN) {
        /* any 32 bytes are a seed: OpenSSL fails here only for want of memory */
        ed25519_signer_free(&s);
        rc = -ENOMEM;
        goto done;
    }
    if (n == SEED_LEN + PUB_LEN && CRYPTO_memcmp(raw + SEED_LEN, s->pub, PUB_LEN) != 0) {
        *why = "the signing key's second half is not the public key of its first half (a"
               " 64-byte key is the seed followed by its own public key)";
        ed25519_signer_free(&s);
        goto done;
    }
    *out = s;
    rc = 0;
done:
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

bool ed25519_signer_same(const struct ed25519_signer *a, const struct ed25519_signer *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    /* one public key per seed: equal public keys, equal keys */
    return memcmp(a->pub, b->pub, PUB_LEN) == 0;
}

/* base64 of n bytes after a prefix; the caller sized out */
static int print_b64(const char *prefix, const unsigned char *bytes, size_t n, char *out,
                     size_t out_size)
{
    size_t pl = strlen(prefix);
    if (out_size < pl + (n + 2) / 3 * 4 + 1)
        return -ENOSPC;
    memcpy(out, prefix, pl);
    EVP_EncodeBlock((unsigned char *)out + pl, bytes, (int)n);
    return 0;
}

int ed25519_sign_standard(const struct ed25519_signer *s, const char *msg_id, int64_t timestamp,
                          const char *body, size_t len, char *out, size_t out_size)
{
    if (out_size < ED25519_SIG_SIZE)
        return -ENOSPC;
    /* Ed25519 hashes the message twice: the content must be in one piece */
    char head[160];
    int hl = snprintf(head, sizeof(head), "%s.%" PRId64 ".", msg_id, timestamp);
    if (hl < 0 || (size_t)hl >= sizeof(head))
        return -ENOSPC;
    unsigned char *msg = malloc((size_t)hl + len + 1);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -ENOMEM;
    if (msg == NULL || ctx == NULL)
        goto done;
    memcpy(msg, head, (size_t)hl);
    if (len > 0)
        memcpy(msg + hl, body, len);
    unsigned char sig[SIG_LEN];
    size_t sl = sizeof(sig);
    rc = -EIO;
    if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, s->pkey) != 1 ||
        EVP_DigestSign(ctx, sig, &sl, msg, (size_t)hl + len) != 1 || sl != SIG_LEN)
        goto done;
    rc = print_b64("v1a,", sig, SIG_LEN, out, out_size);
done:
    EVP_MD_CTX_free(ctx);
    free(msg);
    return rc;
}

int ed25519_public_text(const struct ed25519_signer *s, char *out, size_t out_size)
{
    return print_b64("whpk_", s->pub, PUB_LEN, out, out_size);
}

int ed25519_keygen(char *sk, size_t sk_size, char *pk, size_t pk_size)
{
    unsigned char seed[SEED_LEN];
    if (RAND_bytes(seed, sizeof(seed)) != 1)
        return -EIO;
    int rc = print_b64("whsk_", seed, SEED_LEN, sk, sk_size);
    OPENSSL_cleanse(seed, sizeof(seed));
    if (rc < 0)
        return rc;
    struct ed25519_signer *s;
    const char *why;
    rc = ed25519_signer_new(sk, &s, &why);
    if (rc < 0) {
        OPENSSL_cleanse(sk, sk_size);
        return rc == -ENOMEM ? -ENOMEM : -EIO;
    }
    rc = ed25519_public_text(s, pk, pk_size);
    ed25519_signer_free(&s);
    return rc;
}
