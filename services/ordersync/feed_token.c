/*
 * feed_token: constant-time check of a feed's bearer token against its
 * stored SHA-256 (see feed_token.h).
 */
#include "feed_token.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

static int unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The digest a stored value stands for: its own when it is one, else the hash of it. */
static bool stored_digest(const char *stored, unsigned char out[SHA256_DIGEST_LENGTH])
{
    size_t n = strlen(stored);
    if (n == FEED_TOKEN_STORED_LEN && strncmp(stored, FEED_TOKEN_PREFIX, 7) == 0) {
        bool ok = true;
        for (size_t i = 0; i < SHA256_DIGEST_LENGTH; i++) {
            int hi = unhex(stored[7 + 2 * i]), lo = unhex(stored[8 + 2 * i]);
            ok = ok && hi >= 0 && lo >= 0;
            out[i] = (unsigned char)((hi & 15) << 4 | (lo & 15));
        }
        if (ok)
            return true;
    }
    return SHA256((const unsigned char *)stored, n, out) != NULL;
}

bool feed_token_matches(const char *stored, const char *given, size_t len)
{
    if (stored == NULL || given == NULL)
        return false;
    unsigned char want[SHA256_DIGEST_LENGTH], got[SHA256_DIGEST_LENGTH];
    if (!stored_digest(stored, want) || SHA256((const unsigned char *)given, len, got) == NULL)
        return false;
    /* digests have one length: nothing here depends on what was sent */
    return CRYPTO_memcmp(want, got, sizeof(want)) == 0;
}
