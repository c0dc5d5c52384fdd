/*
 * ed25519: Standard Webhooks' asymmetric scheme, "v1a" (Ed25519, RFC 8032),
 * on OpenSSL. A signing key is written "whsk_" + base64 of the 32-byte seed;
 * Svix's layout, base64 of the seed followed by its 32-byte public key, is
 * accepted too, once the public half is checked to belong to the seed (a key
 * pasted from two places would sign with one key and publish another). A
 * public key is "whpk_" + base64 of its 32 bytes.
 *
 * A signer holds the parsed key (an EVP_PKEY) so that the key is decoded and
 * checked once per settings load, not at every delivery. Signing is the
 * one-shot EVP_DigestSign over "<webhook-id>.<webhook-timestamp>.<body>",
 * the same content as v1's HMAC.
 *
 * The private key never leaves a signer: nothing here prints it. Tests:
 * tests/unit/test_ed25519.c.
 */
#ifndef OS_ED25519_H
#define OS_ED25519_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "v1a," + base64 of a 64-byte signature (88 characters) + NUL */
#define ED25519_SIG_SIZE 96
/* "whsk_" / "whpk_" + base64 of 32 bytes (44 characters) + NUL */
#define ED25519_KEY_TEXT_SIZE 56

struct ed25519_signer;

/*
 * Parses a signing key (text borrowed) into a new signer (*out, a new
 * allocation). Returns 0; -EINVAL with *why set to a static sentence when
 * the text is not a key we accept; -ENOMEM.
 */
int ed25519_signer_new(const char *text, struct ed25519_signer **out, const char **why)
    __attribute__((warn_unused_result));
/* Frees a signer (NULL is fine) and sets *s to NULL. */
void ed25519_signer_free(struct ed25519_signer **s);

/* Do the two (either may be NULL) hold the same key? */
bool ed25519_signer_same(const struct ed25519_signer *a, const struct ed25519_signer *b);

/*
 * Writes "v1a,<base64 signature>" over "<msg_id>.<timestamp>.<body>" into
 * out (out_size >= ED25519_SIG_SIZE). Returns 0, -ENOSPC, -ENOMEM or -EIO
 * (OpenSSL refused, which a parsed key should never make it do).
 */
int ed25519_sign_standard(const struct ed25519_signer *s, const char *msg_id, int64_t timestamp,
                          const char *body, size_t len, char *out, size_t out_size)
    __attribute__((warn_unused_result));

/* Writes "whpk_<base64>" of the signer's public key (out_size >= ED25519_KEY_TEXT_SIZE). */
int ed25519_public_text(const struct ed25519_signer *s, char *out, size_t out_size)
    __attribute__((warn_unused_result));

/*
 * A new key from the operating system's random source: its "whsk_" text
 * into sk and its "whpk_" text into pk (each >= ED25519_KEY_TEXT_SIZE).
 * Returns 0, -EIO (no randomness) or -ENOSPC.
 */
int ed25519_keygen(char *sk, size_t sk_size, char *pk, size_t pk_size)
    __attribute__((warn_unused_result));

#endif
