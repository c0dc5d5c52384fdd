/*
 * relay_sign: the webhook-signature header of one delivery (Standard
 * Webhooks, DESIGN.md's outbound contract), every signature space-separated
 * in one line, so that a receiver that knows any of the keys verifies:
 *   "v1,<base64 HMAC-SHA256>" with the destination's secret and, during a
 *   rotation, its previous one;
 *   "v1a,<base64 Ed25519>" with its signing key and, during a rotation, its
 *   previous one (lib/ed25519.h; the keys were parsed when loaded).
 * Both schemes sign "<webhook-id>.<webhook-timestamp>.<body>". A receiver
 * moving from v1 to v1a checks either while both are set.
 *
 * Each destination keeps a signer: its secrets keyed once (lib/hmac), and
 * keyed again only when a reload changed them. Keying per delivery (decoding
 * the secret, OpenSSL fetching the algorithm and hashing the key) cost
 * several times the MAC of a 1 KB body.
 * No I/O. Tests: tests/unit/test_relay_sign.c.
 */
#include "relay_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "ed25519.h"

#define SIGN_KEY_MAX 256

/* Keys `secret` ("whsec_<base64>" or bare base64) into *out. 0, -EINVAL or -ENOMEM. */
static int key_secret(const char *secret, struct hmac_sha256 **out)
{
    unsigned char key[SIGN_KEY_MAX];
    if (strncmp(secret, "whsec_", 6) == 0)
        secret += 6;
    int n = verify_base64_decode(secret, strlen(secret), key, sizeof(key));
    if (n <= 0)
        return -EINVAL;
    int rc = hmac_sha256_new(key, (size_t)n, out);
    OPENSSL_cleanse(key, sizeof(key));
    return rc;
}

static bool same(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

void relay_signer_clear(struct relay_signer *sg)
{
    hmac_sha256_free(&sg->key);
    hmac_sha256_free(&sg->prev_key);
    if (sg->secret != NULL)
        OPENSSL_cleanse(sg->secret, strlen(sg->secret));
    if (sg->prev_secret != NULL)
        OPENSSL_cleanse(sg->prev_secret, strlen(sg->prev_secret));
    free(sg->secret);
    free(sg->prev_secret);
    sg->secret = sg->prev_secret = NULL;
}

/* Keys sg for set's secrets (either may be NULL) unless it already is. */
static int signer_update(struct relay_signer *sg, const struct dest_settings *set)
{
    if ((sg->key != NULL || sg->prev_key != NULL ||
         (set->secret == NULL && set->prev_secret == NULL)) &&
        same(sg->secret, set->secret) && same(sg->prev_secret, set->prev_secret))
        return 0;
    relay_signer_clear(sg);
    int rc = 0;
    if (set->secret != NULL)
        rc = key_secret(set->secret, &sg->key);
    if (rc == 0 && set->prev_secret != NULL)
        rc = key_secret(set->prev_secret, &sg->prev_key);
    if (rc == 0 && set->secret != NULL && (sg->secret = strdup(set->secret)) == NULL)
        rc = -ENOMEM;
    if (rc == 0 && set->prev_secret != NULL && (sg->prev_secret = strdup(set->prev_secret)) == NULL)
        rc = -ENOMEM;
    if (rc < 0)
        relay_signer_clear(sg);
    return rc;
}

/* Appends " v1,<base64>" at *at. */
static int sign_one(struct hmac_sha256 *h, const void *const *parts, const size_t *lens, char **at)
{
    unsigned char mac[HMAC_SHA256_LEN];
    int rc = hmac_sha256_parts(h, parts, lens, 5, mac);
    if (rc < 0)
        return rc;
    memcpy(*at, " v1,", 4);
    *at += 4 + EVP_EncodeBlock((unsigned char *)*at + 4, mac, HMAC_SHA256_LEN);
    return 0;
}

int relay_sign_line(struct relay_signer *sg, const struct dest_settings *set, const char *msg_id,
                    int64_t timestamp, const char *body, size_t len, char *out, size_t out_size)
{
    static const char name[] = "webhook-signature:";
    if (set->secret == NULL && set->signer == NULL)
        return -EINVAL; /* the loader counts such a destination as absent */
    if (out_size < RELAY_SIGN_LINE_SIZE)
        return -ENOSPC;
    int rc = signer_update(sg, set);
    if (rc < 0)
        return rc;
    char ts[24];
    int tn = snprintf(ts, sizeof(ts), "%lld", (long long)timestamp);
    const void *parts[5] = {msg_id, ".", ts, ".", body};
    size_t lens[5] = {strlen(msg_id), 1, (size_t)tn, 1, len};
    char *at = out;
    memcpy(at, name, sizeof(name) - 1);
    at += sizeof(name) - 1;
    struct hmac_sha256 *macs[2] = {sg->key, sg->prev_key};
    for (int i = 0; i < 2 && rc == 0; i++)
        if (macs[i] != NULL)
            rc = sign_one(macs[i], parts, lens, &at);
    const struct ed25519_signer *keys[2] = {set->signer, set->prev_signer};
    for (int i = 0; i < 2 && rc == 0; i++) {
        if (keys[i] == NULL)
            continue;
        *at++ = ' ';
        size_t room = out_size - (size_t)(at - out);
        rc = ed25519_sign_standard(keys[i], msg_id, timestamp, body, len, at, room);
        if (rc < 0)
            rc = rc == -ENOMEM ? -ENOMEM : -EINVAL; /* -ENOSPC cannot happen: sized above */
        else
            at += strlen(at);
    }
    if (rc < 0)
        return rc;
    *at = '\0';
    return 0;
}
