/*
 * verify: the generic pieces of webhook signatures, for every service of the
 * project: HMAC-SHA256 and SHA-256 (OpenSSL, fetched once), a constant-time
 * compare, base64 and timestamp parsing, the age check of a signed timestamp,
 * and the Standard Webhooks scheme whole (ordersync's `standard` sources,
 * the relay's outbound signatures, the downstream services' checks). The
 * platforms' own schemes (Shopify, WooCommerce, Stripe) are ordersync's
 * alone and live with the rest of what it knows about each platform, in its
 * source kinds. Pure: no I/O, the clock is a parameter and headers come
 * through a callback, so the HTTP server, unit tests and fuzz targets all
 * drive the same code.
 */
#ifndef ORDERSYNC_VERIFY_H
#define ORDERSYNC_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum verify_result {
    VERIFY_OK = 0,
    VERIFY_MISSING,   /* a required header is absent */
    VERIFY_MALFORMED, /* header unparsable, bad base64/hex, bad timestamp */
    VERIFY_MISMATCH,  /* well-formed, but no signature matched any secret */
    VERIFY_STALE,     /* signature matched, timestamp outside the tolerance */
    VERIFY_ERROR,     /* our side: no usable secret configured, or out of memory */
};

/* Returns a static, lower-case name ("ok", "missing", ...). */
const char *verify_result_name(enum verify_result r);

/*
 * Header lookup, independent of the HTTP server: returns the value of the
 * header whose lower-cased name is `name`, or NULL when absent (borrowed, must
 * stay valid for the duration of the verify call).
 */
typedef const char *(*verify_get_header_fn)(void *ctx, const char *name);

/* Default tolerance of signed timestamps (Stripe and Standard Webhooks). */
#define VERIFY_DEFAULT_TOLERANCE_S 300
/* Signatures considered per header; a header listing more is malformed. */
#define VERIFY_MAX_SIGS 8
/* Size of a buffer that holds "v1,<base64 of 32 bytes>" and its NUL. */
#define VERIFY_STANDARD_SIG_SIZE 48

/*
 * A verifier's `secrets` holds the current secret and, during a rotation,
 * the previous one (secrets[1] may be NULL); either one verifies. All
 * arguments are borrowed. `detail` receives a human explanation of the
 * result (never a secret or a signature); it may be NULL.
 */

/*
 * Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature
 * ("v1,<base64>" space-separated); content "id.timestamp.body"; key is the
 * base64 decoding of the secret after "whsec_" (of the whole secret without
 * that prefix). tolerance_s <= 0 means VERIFY_DEFAULT_TOLERANCE_S.
 */
enum verify_result verify_standard(const char *const secrets[2], verify_get_header_fn get_header,
                                   void *ctx, const char *body, size_t len, time_t now,
                                   int tolerance_s, char *detail, size_t detail_size);

/*
 * Signs an outbound Standard Webhooks message: writes "v1,<base64>" into out
 * (out_size >= VERIFY_STANDARD_SIG_SIZE). Returns 0, -EINVAL if the secret does
 * not decode, -ENOSPC if out is too small, -ENOMEM.
 */
int verify_sign_standard(const char *msg_id, int64_t timestamp, const char *body, size_t len,
                         const char *secret, char *out, size_t out_size)
    __attribute__((warn_unused_result));

/* Size of a SHA-256 digest, and so of an HMAC-SHA256. */
#define VERIFY_SHA256_LEN 32

/*
 * HMAC-SHA256 with `key` over the concatenation of the n `parts` (so a
 * signed message "t.body" needs no copy of the body). Returns 0, or -ENOMEM
 * when OpenSSL could not compute it (an empty key is refused the same way:
 * it is never a usable secret).
 */
int verify_hmac_sha256(const void *key, size_t keylen, const void *const *parts, const size_t *lens,
                       size_t n, unsigned char out[VERIFY_SHA256_LEN])
    __attribute__((warn_unused_result));

/*
 * Are the n bytes at a and b equal? In time independent of where they differ
 * (CRYPTO_memcmp), so a signature cannot be guessed byte by byte.
 */
bool verify_equal(const void *a, const void *b, size_t n) __attribute__((warn_unused_result));

/*
 * The age check of a signed timestamp `t` (Unix seconds), after its signature
 * matched: VERIFY_OK within tolerance_s of now either way (<= 0 means
 * VERIFY_DEFAULT_TOLERANCE_S), else VERIFY_STALE with detail naming `display`
 * and the distance.
 */
enum verify_result verify_age(int64_t t, time_t now, int tolerance_s, const char *display,
                              char *detail, size_t detail_size);

/*
 * SHA-256 of `data` into out (for dedupe keys derived from a signed body).
 * Returns 0, or -ENOMEM when OpenSSL could not provide the digest.
 */
int verify_sha256(const void *data, size_t len, unsigned char out[VERIFY_SHA256_LEN])
    __attribute__((warn_unused_result));

/* Parsed webhook-signature header: the v1 entries, decoded. */
struct verify_standard_sigs {
    size_t n;
    unsigned char sig[VERIFY_MAX_SIGS][32];
};

/*
 * Parses a webhook-signature value. Entries of other versions (v1a, ...) are
 * skipped. Returns 0, or -EINVAL when no v1 entry is present or one is not
 * the base64 of 32 bytes.
 */
int verify_parse_standard_signatures(const char *value, struct verify_standard_sigs *out);

/* Parses a Unix timestamp in decimal digits. Returns 0 or -EINVAL. */
int verify_parse_timestamp(const char *s, int64_t *out);

/*
 * Decodes padded standard base64 (RFC 4648 §4) of exactly len characters into
 * out. Returns the decoded length, -EINVAL on a bad encoding, -ENOSPC.
 */
int verify_base64_decode(const char *s, size_t len, unsigned char *out, size_t out_size);

#endif
