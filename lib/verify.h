/*
 * verify: webhook signature checks on the raw request body, before any
 * parsing. One function per signing scheme; the caller (inbound)
 * picks the scheme from the source's kind. Pure: no I/O, the clock is a
 * parameter and headers come through a callback, so the HTTP server, unit tests
 * and fuzz targets all drive the same code.
 *
 * Also the signing half of Standard Webhooks, which the relay uses for
 * outbound deliveries (and the helper services use to verify them: this is why
 * it lives in lib/), and the header parsers on their own for fuzzing.
 */
#ifndef ORDERSYNC_VERIFY_H
#define ORDERSYNC_VERIFY_H

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
 * Every verify_* function: `secrets` holds the current secret and, during a
 * rotation, the previous one (secrets[1] may be NULL); either one verifies.
 * All arguments are borrowed. `detail` receives a human explanation of the
 * result (never a secret or a signature); it may be NULL.
 */

/* Shopify: x-shopify-hmac-sha256 = base64(HMAC-SHA256(secret, body)). */
enum verify_result verify_shopify(const char *const secrets[2], verify_get_header_fn get_header,
                                  void *ctx, const char *body, size_t len, char *detail,
                                  size_t detail_size);

/* WooCommerce: x-wc-webhook-signature = base64(HMAC-SHA256(secret, body)). */
enum verify_result verify_woocommerce(const char *const secrets[2], verify_get_header_fn get_header,
                                      void *ctx, const char *body, size_t len, char *detail,
                                      size_t detail_size);

/*
 * Stripe: stripe-signature: t=<unix>,v1=<hex>[,v1=<hex>...]; the HMAC key is
 * the whole secret string ("whsec_..." included), the message "t.body".
 * tolerance_s <= 0 means VERIFY_DEFAULT_TOLERANCE_S.
 */
enum verify_result verify_stripe(const char *const secrets[2], verify_get_header_fn get_header,
                                 void *ctx, const char *body, size_t len, time_t now,
                                 int tolerance_s, char *detail, size_t detail_size);

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

/* Size of a SHA-256 digest. */
#define VERIFY_SHA256_LEN 32

/*
 * SHA-256 of `data` into out (for dedupe keys derived from a signed body).
 * Returns 0, or -ENOMEM when OpenSSL could not provide the digest.
 */
int verify_sha256(const void *data, size_t len, unsigned char out[VERIFY_SHA256_LEN])
    __attribute__((warn_unused_result));

/* Parsed stripe-signature header. */
struct verify_stripe_header {
    int64_t t;
    size_t n_v1;
    char v1[VERIFY_MAX_SIGS][65]; /* lower-case hex, NUL-terminated */
};

/* Parses a stripe-signature value. Returns 0 or -EINVAL (no t, bad t, no v1, bad hex). */
int verify_parse_stripe_header(const char *value, struct verify_stripe_header *out);

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
