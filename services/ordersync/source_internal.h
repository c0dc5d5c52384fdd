/*
 * source_internal: what the source_<name>.c files share besides the
 * normalize conversions of normalize_internal.h: the detail and refusal
 * formatters, the body-HMAC scheme two platforms use, the checks on
 * unsigned header tokens and the content-derived dedupe key (defined in
 * source_common.c). Not for use outside the kinds and their tests.
 */
#ifndef OS_SOURCE_INTERNAL_H
#define OS_SOURCE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "source_kind.h"
#include "verify.h"

/* Fills *why (the detail from fmt) and returns -EINVAL. */
int source_refuse(struct source_refused *why, enum source_refusal r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Formats fmt into detail (which may be NULL) and returns r. */
enum verify_result source_verdict(enum verify_result r, char *detail, size_t size, const char *fmt,
                                  ...) __attribute__((format(printf, 4, 5)));

/* Does either secret hold something? */
bool source_have_secret(const char *const *secrets);

/*
 * HMAC-SHA256 keyed with req->secrets[i] (non-empty) over the parts: with
 * its pre-keyed req->keys[i] when there is one. 0 or <0 (OpenSSL failed).
 */
int source_hmac(const struct source_request *req, int i, const void *const *parts,
                const size_t *lens, size_t n, unsigned char out[VERIFY_SHA256_LEN])
    __attribute__((warn_unused_result));

/*
 * The scheme Shopify and WooCommerce share: the header `name` (lower case)
 * holds base64(HMAC-SHA256(secret, body)); `display` names it in details.
 */
enum verify_result source_verify_body_hmac(const struct source_request *req, const char *name,
                                           const char *display, char *detail, size_t size);

/*
 * 0 when `value` is 1 to SOURCE_MAX_TOKEN_LEN printable ASCII characters,
 * else -EINVAL with *why an invalid_header refusal naming `display`.
 */
int source_check_token(const char *value, const char *display, struct source_refused *why);

/*
 * "sha256:<hex>" of the body: the dedupe key of a webhook whose sender names
 * none (a redelivery has the same bytes). A new allocation, or NULL when out
 * of memory.
 */
char *source_body_key(const char *body, size_t len);

/* Stripe's signature header, parsed (source_stripe.c; exported for its tests). */
struct source_stripe_header {
    int64_t t;
    size_t n_v1;
    char v1[VERIFY_MAX_SIGS][65]; /* lower-case hex, NUL-terminated */
};

/*
 * Parses a Stripe-Signature value: t=<unix>,v1=<hex>[,v1=<hex>...]. Returns 0,
 * or -EINVAL (no t, bad t, no v1, bad hex, more than VERIFY_MAX_SIGS).
 */
int source_stripe_parse_header(const char *value, struct source_stripe_header *out)
    __attribute__((warn_unused_result));

#endif
