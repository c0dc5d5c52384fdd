/*
 * Unit tests for lib/ed25519: key texts (RFC 8032's first test key, as a
 * 32-byte seed and in Svix's 64-byte layout), malformed keys refused with a
 * reason, and v1a signatures that OpenSSL's verifier accepts for the signed
 * content and refuses for anything else. (The integration test checks them
 * with the openssl command line and Node, code that is not ours.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "ed25519.h"
#include "verify.h"

/* RFC 8032 section 7.1, TEST 1 */
static const char rfc_sk[] = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
static const char rfc_pk[] = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char rfc_svix[] = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/"
                               "tPJZAc6DuFy89qmIyWvAhpo9wdRGg==";

static struct ed25519_signer *parse_ok(const char *text)
{
    struct ed25519_signer *s = NULL;
    const char *why = "unset";
    assert_int_equal(ed25519_signer_new(text, &s, &why), 0);
    assert_non_null(s);
    return s;
}

static void public_text_is(const struct ed25519_signer *s, const char *want)
{
    char pk[ED25519_KEY_TEXT_SIZE];
    assert_int_equal(ed25519_public_text(s, pk, sizeof(pk)), 0);
    assert_string_equal(pk, want);
}

static void seed_gives_the_rfc_public_key(void **state)
{
    (void)state;
    struct ed25519_signer *s = parse_ok(rfc_sk);
    public_text_is(s, rfc_pk);
    ed25519_signer_free(&s);
    assert_null(s);
    ed25519_signer_free(&s); /* NULL is fine */
}

static void svix_layout_is_the_same_key(void **state)
{
    (void)state;
    struct ed25519_signer *a = parse_ok(rfc_sk), *b = parse_ok(rfc_svix);
    public_text_is(b, rfc_pk);
    assert_true(ed25519_signer_same(a, b));
    assert_true(ed25519_signer_same(NULL, NULL));
    assert_false(ed25519_signer_same(a, NULL));
    ed25519_signer_free(&a);
    ed25519_signer_free(&b);
}

static void refused(const char *text, const char *reason_part)
{
    struct ed25519_signer *s = (struct ed25519_signer *)1;
    const char *why = NULL;
    assert_int_equal(ed25519_signer_new(text, &s, &why), -EINVAL);
    assert_null(s);
    assert_non_null(why);
    if (strstr(why, reason_part) == NULL)
        fail_msg("for %s: \"%s\" does not say \"%s\"", text, why, reason_part);
}

static void malformed_keys_are_refused_with_a_reason(void **state)
{
    (void)state;
    refused("", "starts with whsk_");
    refused("whsec_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=", "starts with whsk_");
    refused("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=", "starts with whsk_");
    refused("whsk_", "base64");
    refused("whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A", "base64");    /* unpadded */
    refused("whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=\n", "base64"); /* trailing LF */
    refused("whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A*", "base64");
    refused("whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyu", "32-byte seed"); /* 31 bytes */
    refused("whsk_c2hvcnQ=", "32-byte seed");
    /* 48 bytes: neither layout */
    refused("whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6",
            "32-byte seed");
    /* 96 bytes: too long for either */
    refused(
        "whsk_"
        "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2DXWpgBgrEKt9VL/tPJZAc6DuFy89qmIyWvAhpo9wdRGp1h"
        "sZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g",
        "32-byte seed");
    /* Svix's layout whose second half is not the seed's public key */
    refused("whsk_nWGxne/"
            "9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
            "not the public key");
}

/* OpenSSL's own verifier, from the public key's text */
static bool verifies(const char *pk_text, const char *content, const char *sig_text)
{
    unsigned char pub[40], sig[70];
    assert_memory_equal(pk_text, "whpk_", 5);
    assert_memory_equal(sig_text, "v1a,", 4);
    assert_int_equal(verify_base64_decode(pk_text + 5, strlen(pk_text + 5), pub, sizeof(pub)), 32);
    assert_int_equal(verify_base64_decode(sig_text + 4, strlen(sig_text + 4), sig, sizeof(sig)),
                     64);
    EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    assert_non_null(k);
    assert_non_null(ctx);
    assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k), 1);
    int ok = EVP_DigestVerify(ctx, sig, 64, (const unsigned char *)content, strlen(content));
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(k);
    return ok == 1;
}

static void signs_id_timestamp_body(void **state)
{
    (void)state;
    struct ed25519_signer *s = parse_ok(rfc_sk);
    const char body[] = "{\"type\": \"order.created\"}";
    char sig[ED25519_SIG_SIZE];
    assert_int_equal(
        ed25519_sign_standard(s, "msg_abc", 1614265330, body, strlen(body), sig, sizeof(sig)), 0);
    assert_int_equal(strlen(sig), 4 + 88);
    assert_true(verifies(rfc_pk, "msg_abc.1614265330.{\"type\": \"order.created\"}", sig));
    assert_false(verifies(rfc_pk, "msg_abc.1614265331.{\"type\": \"order.created\"}", sig));
    assert_false(verifies(rfc_pk, "msg_abd.1614265330.{\"type\": \"order.created\"}", sig));
    /* deterministic (RFC 8032): the same content, the same signature */
    char again[ED25519_SIG_SIZE];
    assert_int_equal(
        ed25519_sign_standard(s, "msg_abc", 1614265330, body, strlen(body), again, sizeof(again)),
        0);
    assert_string_equal(sig, again);
    /* an empty body signs too */
    assert_int_equal(ed25519_sign_standard(s, "msg_abc", 1, "", 0, sig, sizeof(sig)), 0);
    assert_true(verifies(rfc_pk, "msg_abc.1.", sig));
    assert_int_equal(ed25519_sign_standard(s, "msg_abc", 1, "", 0, sig, ED25519_SIG_SIZE - 1),
                     -ENOSPC);
    ed25519_signer_free(&s);
}

static void keygen_makes_a_key_that_parses_to_its_public_key(void **state)
{
    (void)state;
    char sk[ED25519_KEY_TEXT_SIZE], pk[ED25519_KEY_TEXT_SIZE], sk2[ED25519_KEY_TEXT_SIZE],
        pk2[ED25519_KEY_TEXT_SIZE];
    assert_int_equal(ed25519_keygen(sk, sizeof(sk), pk, sizeof(pk)), 0);
    assert_int_equal(ed25519_keygen(sk2, sizeof(sk2), pk2, sizeof(pk2)), 0);
    assert_int_equal(strlen(sk), 5 + 44);
    assert_int_equal(strlen(pk), 5 + 44);
    assert_string_not_equal(sk, sk2);
    struct ed25519_signer *s = parse_ok(sk);
    public_text_is(s, pk);
    char sig[ED25519_SIG_SIZE];
    assert_int_equal(ed25519_sign_standard(s, "msg_1", 2, "x", 1, sig, sizeof(sig)), 0);
    assert_true(verifies(pk, "msg_1.2.x", sig));
    assert_false(verifies(pk2, "msg_1.2.x", sig));
    ed25519_signer_free(&s);
    assert_int_equal(ed25519_keygen(sk, 10, pk, sizeof(pk)), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(seed_gives_the_rfc_public_key),
        cmocka_unit_test(svix_layout_is_the_same_key),
        cmocka_unit_test(malformed_keys_are_refused_with_a_reason),
        cmocka_unit_test(signs_id_timestamp_body),
        cmocka_unit_test(keygen_makes_a_key_that_parses_to_its_public_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
