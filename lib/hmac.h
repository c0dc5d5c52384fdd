/*
 * hmac: HMAC-SHA256 under one key, keyed once and computed many times.
 *
 * Keying an HMAC costs two SHA-256 blocks plus OpenSSL 3's parameter
 * handling; a relay signs every delivery with the same destination secret,
 * so the keyed state is kept and each message starts from a copy of it.
 * Not thread-safe: one object is used from one thread (an event loop).
 */
#ifndef OS_HMAC_H
#define OS_HMAC_H

#include <stddef.h>

#define HMAC_SHA256_LEN 32

struct hmac_sha256;

/*
 * A new object keyed with `key` (keylen > 0 bytes, copied into OpenSSL's
 * state, not kept). Returns 0, -EINVAL (empty key) or -ENOMEM.
 */
int hmac_sha256_new(const void *key, size_t keylen, struct hmac_sha256 **out)
    __attribute__((warn_unused_result));
/*
 * The MAC of the concatenation of parts[0..n) (lens[i] bytes each; borrowed)
 * into out. Returns 0 or -ENOMEM (OpenSSL failed).
 */
int hmac_sha256_parts(struct hmac_sha256 *h, const void *const *parts, const size_t *lens, size_t n,
                      unsigned char out[HMAC_SHA256_LEN]) __attribute__((warn_unused_result));
/* Frees it (the key material is cleansed by OpenSSL). Sets *h to NULL. */
void hmac_sha256_free(struct hmac_sha256 **h);

#endif
