/*
 * Unit tests for relay_sign: the webhook-signature line a delivery carries,
 * checked against the Standard Webhooks spec's own test vector, during a
 * secret rotation (both signatures, either verifies), and with a secret
 * that is not a whsec_ key (nothing is sent); a destination's signer, keyed
 * once, signs message after message right and follows a change of secret;
 * with signing keys (v1a, Ed25519): alone, beside a secret in one line,
 * during a key rotation.
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
#include "relay_internal.h"

/* The spec's test vector (standard-webhooks/libraries) */
static const char spec_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
static const char spec_id[] = "msg_p5jXN8AQM9LWM0D4loKWxJek";
static const char spec_payload[] = "{\"test\": 2432232314}";
static const char spec_sig[] = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
static const int64_t spec_ts = 1614265330;
static const char other_secret[] = "whsec_c2Vjb25kIHNlY3JldCBvZiAyNCBieXRlcw==";

static const char *header_of(void *ctx, const char *name)
{
    const char *const *h = ctx; /* id, timestamp, signature */
    if (strcmp(name, "webhook-id") == 0)
        return h[0];
    if (strcmp(name, "webhook-timestamp") == 0)
        return h[1];
    if (strcmp(name, "webhook-signature") == 0)
        return h[2];
    return NULL;
}

/* Does a receiver that knows only `secret` accept the line? */
static bool verifies(const char *line, const char *secret)
{
    const char *prefix = "webhook-signature: ";
    assert_memory_equal(line, prefix, strlen(prefix));
    const char *h[3] = {spec_id, "1614265330", line + strlen(prefix)};
    const char *const secrets[2] = {secret, NULL};
    return verify_standard(secrets, header_of, h, spec_payload, strlen(spec_payload), spec_ts, 0,
                           NULL, 0) == VERIFY_OK;
}

static void one_secret_signs_as_the_spec_says(void **state)
{
    (void)state;
    struct dest_settings set = {.secret = (char *)spec_secret};
    struct relay_signer sg = {0};
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&sg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    assert_string_equal(line + strlen("webhook-signature: "), spec_sig);
    assert_true(verifies(line, spec_secret));
    assert_false(verifies(line, other_secret));
    relay_signer_clear(&sg);
}

static void a_rotation_signs_with_both_secrets(void **state)
{
    (void)state;
    struct dest_settings set = {.secret = (char *)other_secret, .prev_secret = (char *)spec_secret};
    struct relay_signer sg = {0};
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&sg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    /* the new secret's first, the previous one's after a space */
    const char *space = strchr(line + strlen("webhook-signature: "), ' ');
    assert_non_null(space);
    assert_string_equal(space + 1, spec_sig);
    assert_true(verifies(line, other_secret));
    assert_true(verifies(line, spec_secret));
    relay_signer_clear(&sg);
}

static void a_secret_that_is_not_a_key_signs_nothing(void **state)
{
    (void)state;
    char line[RELAY_SIGN_LINE_SIZE];
    struct relay_signer sg = {0};
    struct dest_settings bad = {.secret = (char *)"whsec_!!notbase64"};
    assert_int_equal(relay_sign_line(&sg, &bad, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     -EINVAL);
    struct dest_settings bad_prev = {.secret = (char *)spec_secret,
                                     .prev_secret = (char *)"whsec_!!notbase64"};
    assert_int_equal(relay_sign_line(&sg, &bad_prev, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     -EINVAL);
    assert_null(sg.key);
    relay_signer_clear(&sg);
}

/* What the one-off signature of lib/verify gives for this message and secret. */
static void expected_line(const char *secret, const char *id, int64_t ts, const char *body,
                          char *out, size_t size)
{
    char sig[VERIFY_STANDARD_SIG_SIZE];
    assert_int_equal(verify_sign_standard(id, ts, body, strlen(body), secret, sig, sizeof(sig)), 0);
    snprintf(out, size, "webhook-signature: %s", sig);
}

static void a_kept_signer_signs_each_message_and_follows_a_new_secret(void **state)
{
    (void)state;
    struct relay_signer sg = {0};
    char line[RELAY_SIGN_LINE_SIZE], want[RELAY_SIGN_LINE_SIZE], id[40], body[200];
    /* secrets as a reload hands them over: new strings each time, equal or not */
    char secret[64];
    strcpy(secret, spec_secret);
    struct dest_settings set = {.secret = secret};
    for (int i = 0; i < 50; i++) {
        if (i == 25) /* the row's secret changed (same buffer, as a reload could reuse) */
            strcpy(secret, other_secret);
        snprintf(id, sizeof(id), "msg_%d", i);
        snprintf(body, sizeof(body), "{\"n\": %d, \"pad\": \"%.*s\"}", i, i * 3,
                 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz"
                 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz");
        assert_int_equal(
            relay_sign_line(&sg, &set, id, spec_ts + i, body, strlen(body), line, sizeof(line)), 0);
        expected_line(i < 25 ? spec_secret : other_secret, id, spec_ts + i, body, want,
                      sizeof(want));
        assert_string_equal(line, want);
    }
    /* a rotation starts: both, then it ends: the new one alone */
    set.prev_secret = (char *)spec_secret;
    assert_int_equal(relay_sign_line(&sg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    assert_true(verifies(line, spec_secret));
    assert_true(verifies(line, other_secret));
    set.prev_secret = NULL;
    assert_int_equal(relay_sign_line(&sg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    assert_false(verifies(line, spec_secret));
    assert_true(verifies(line, other_secret));
    relay_signer_clear(&sg);
    assert_null(sg.key);
    assert_null(sg.secret);
}

/* The v1a tests' signer for the secrets (none, or spec_secret), cleared at the end. */
static struct relay_signer tsg;

/* RFC 8032's first test key, and another one */
static const char key_a[] = "whsk_nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";
static const char pub_a[] = "whpk_11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
static const char key_b[] = "whsk_TM0Imyj/ltqdtsNG7BFOD1uKMZ81q6Yk2oz27U+4pvs=";

static struct ed25519_signer *signer(const char *text)
{
    struct ed25519_signer *s;
    const char *why;
    assert_int_equal(ed25519_signer_new(text, &s, &why), 0);
    return s;
}

/* How many entries of the line the public key verifies (OpenSSL's verifier) */
static int v1a_verified(const char *line, const struct ed25519_signer *key)
{
    char pk[ED25519_KEY_TEXT_SIZE];
    unsigned char pub[33], sig[66];
    assert_int_equal(ed25519_public_text(key, pk, sizeof(pk)), 0);
    assert_int_equal(verify_base64_decode(pk + 5, strlen(pk + 5), pub, sizeof(pub)), 32);
    char content[256];
    snprintf(content, sizeof(content), "%s.%lld.%s", spec_id, (long long)spec_ts, spec_payload);
    int ok = 0;
    for (const char *p = strstr(line, "v1a,"); p != NULL; p = strstr(p + 1, "v1a,")) {
        size_t n = strcspn(p + 4, " ");
        assert_int_equal(verify_base64_decode(p + 4, n, sig, sizeof(sig)), 64);
        EVP_PKEY *k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k), 1);
        if (EVP_DigestVerify(ctx, sig, 64, (const unsigned char *)content, strlen(content)) == 1)
            ok++;
        EVP_MD_CTX_free(ctx);
        EVP_PKEY_free(k);
    }
    return ok;
}

static int count(const char *line, const char *what)
{
    int n = 0;
    for (const char *p = strstr(line, what); p != NULL; p = strstr(p + 1, what))
        n++;
    return n;
}

static void a_signing_key_alone_signs_v1a(void **state)
{
    (void)state;
    struct dest_settings set = {.signer = signer(key_a)};
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&tsg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    assert_memory_equal(line, "webhook-signature: v1a,", 23);
    assert_int_equal(count(line, " "), 1);
    assert_int_equal(v1a_verified(line, set.signer), 1);
    char pk[ED25519_KEY_TEXT_SIZE];
    assert_int_equal(ed25519_public_text(set.signer, pk, sizeof(pk)), 0);
    assert_string_equal(pk, pub_a);
    ed25519_signer_free(&set.signer);
}

static void a_secret_and_a_key_sign_in_one_line(void **state)
{
    (void)state;
    struct dest_settings set = {.secret = (char *)spec_secret, .signer = signer(key_a)};
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&tsg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    /* v1 first (what receivers verify today), then v1a, space-separated */
    char want[128];
    snprintf(want, sizeof(want), "webhook-signature: %s v1a,", spec_sig);
    assert_memory_equal(line, want, strlen(want));
    assert_true(verifies(line, spec_secret)); /* a v1 receiver skips the v1a entry */
    assert_int_equal(v1a_verified(line, set.signer), 1);
    ed25519_signer_free(&set.signer);
}

static void a_key_rotation_signs_with_both_keys(void **state)
{
    (void)state;
    struct dest_settings set = {.signer = signer(key_b), .prev_signer = signer(key_a)};
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&tsg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    assert_int_equal(count(line, "v1a,"), 2);
    assert_int_equal(v1a_verified(line, set.signer), 1);
    assert_int_equal(v1a_verified(line, set.prev_signer), 1);
    /* everything at once: two secrets and two keys still fit the line */
    set.secret = (char *)other_secret;
    set.prev_secret = (char *)spec_secret;
    assert_int_equal(relay_sign_line(&tsg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     0);
    assert_int_equal(count(line, " v1,"), 2);
    assert_int_equal(count(line, " v1a,"), 2);
    assert_true(verifies(line, spec_secret));
    assert_true(verifies(line, other_secret));
    assert_int_equal(relay_sign_line(&tsg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, 100),
                     -ENOSPC);
    ed25519_signer_free(&set.signer);
    ed25519_signer_free(&set.prev_signer);
}

static void neither_a_secret_nor_a_key_signs_nothing(void **state)
{
    (void)state;
    struct dest_settings set = {0};
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&tsg, &set, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_secret_signs_as_the_spec_says),
        cmocka_unit_test(a_rotation_signs_with_both_secrets),
        cmocka_unit_test(a_secret_that_is_not_a_key_signs_nothing),
        cmocka_unit_test(a_kept_signer_signs_each_message_and_follows_a_new_secret),
        cmocka_unit_test(a_signing_key_alone_signs_v1a),
        cmocka_unit_test(a_secret_and_a_key_sign_in_one_line),
        cmocka_unit_test(a_key_rotation_signs_with_both_keys),
        cmocka_unit_test(neither_a_secret_nor_a_key_signs_nothing),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    relay_signer_clear(&tsg);
    return failed;
}
