/*
 * Unit tests for verify: the primitives, and the Standard Webhooks scheme
 * accepts what a sender would send and rejects each way it can go wrong,
 * with the right result code (the platforms' own schemes are tested in
 * test_source_verify.c). Signatures are computed here independently with OpenSSL's
 * one-shot HMAC(), so a shared bug in verify.c cannot hide.
 */
#include <dlfcn.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "verify.h"

struct headers {
    const char *names[4];
    const char *values[4];
};

static const char *get_header(void *ctx, const char *name)
{
    struct headers *h = ctx;

    for (int i = 0; i < 4; i++) {
        if (h->names[i] != NULL && strcmp(h->names[i], name) == 0)
            return h->values[i];
    }
    return NULL;
}

static const char body[] = "{\"id\":5678901234567890123,\"total_price\":\"86.46\"}";
static const time_t now = 1767323047;

/* --- Standard Webhooks ---------------------------------------------------- */

/* The Standard Webhooks spec's own test vector (standard-webhooks/libraries). */
static const char spec_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
static const char spec_id[] = "msg_p5jXN8AQM9LWM0D4loKWxJek";
static const char spec_payload[] = "{\"test\": 2432232314}";
static const char spec_sig[] = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
static const time_t spec_ts = 1614265330;

static void standard_sign_matches_spec_vector(void **state)
{
    char out[VERIFY_STANDARD_SIG_SIZE];

    assert_int_equal(verify_sign_standard(spec_id, spec_ts, spec_payload, strlen(spec_payload),
                                          spec_secret, out, sizeof(out)),
                     0);
    assert_string_equal(out, spec_sig);
    /* Without the whsec_ prefix the rest is the key all the same. */
    assert_int_equal(verify_sign_standard(spec_id, spec_ts, spec_payload, strlen(spec_payload),
                                          spec_secret + 6, out, sizeof(out)),
                     0);
    assert_string_equal(out, spec_sig);
    assert_int_equal(verify_sign_standard(spec_id, spec_ts, spec_payload, strlen(spec_payload),
                                          "whsec_!!notbase64", out, sizeof(out)),
                     -EINVAL);
    assert_int_equal(verify_sign_standard(spec_id, spec_ts, spec_payload, strlen(spec_payload),
                                          spec_secret, out, 10),
                     -ENOSPC);
}

static void standard_valid_spec_vector(void **state)
{
    const char *const secrets[2] = {spec_secret, NULL};
    struct headers h = {{"webhook-id", "webhook-timestamp", "webhook-signature"},
                        {spec_id, "1614265330", spec_sig}};

    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts + 5, 0, NULL, 0),
                     VERIFY_OK);
}

static void standard_several_signatures(void **state)
{
    const char *const secrets[2] = {spec_secret, NULL};
    char list[256];
    struct headers h = {{"webhook-id", "webhook-timestamp", "webhook-signature"},
                        {spec_id, "1614265330", list}};

    /* Unknown versions are skipped; any v1 may match. */
    snprintf(list, sizeof(list), "v1a,AAAA v1,%s %s",
             "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", spec_sig);
    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, NULL, 0),
                     VERIFY_OK);
}

static void standard_wrong(void **state)
{
    const char *const secrets[2] = {"whsec_dGhpcyBpcyBhbm90aGVyIGtleSEh", NULL};
    char detail[256];
    struct headers h = {{"webhook-id", "webhook-timestamp", "webhook-signature"},
                        {spec_id, "1614265330", spec_sig}};

    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, detail, sizeof(detail)),
                     VERIFY_MISMATCH);
    /* The id is signed too. */
    h.values[0] = "msg_other";
    assert_int_equal(verify_standard((const char *const[2]){spec_secret, NULL}, get_header, &h,
                                     spec_payload, strlen(spec_payload), spec_ts, 0, NULL, 0),
                     VERIFY_MISMATCH);
}

static void standard_missing(void **state)
{
    const char *const secrets[2] = {spec_secret, NULL};
    char detail[256];
    struct headers h = {{"webhook-id", "webhook-timestamp"}, {spec_id, "1614265330"}};

    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, detail, sizeof(detail)),
                     VERIFY_MISSING);
    assert_string_equal(detail, "webhook-signature header is missing");
}

static void standard_malformed(void **state)
{
    const char *const secrets[2] = {spec_secret, NULL};
    struct headers h = {{"webhook-id", "webhook-timestamp", "webhook-signature"},
                        {spec_id, "16142653x0", spec_sig}};

    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, NULL, 0),
                     VERIFY_MALFORMED);
    h.values[1] = "1614265330";
    h.values[2] = "v1,###";
    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, NULL, 0),
                     VERIFY_MALFORMED);
    h.values[2] = "v2,AAAA";
    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, NULL, 0),
                     VERIFY_MALFORMED);
}

static void standard_stale_both_ways(void **state)
{
    const char *const secrets[2] = {spec_secret, NULL};
    char detail[256];
    struct headers h = {{"webhook-id", "webhook-timestamp", "webhook-signature"},
                        {spec_id, "1614265330", spec_sig}};

    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts + 412, 0, detail, sizeof(detail)),
                     VERIFY_STALE);
    assert_string_equal(detail, "webhook-timestamp is 412 s away from now (tolerance 300 s)");
    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts - 301, 0, NULL, 0),
                     VERIFY_STALE);
    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts - 300, 0, NULL, 0),
                     VERIFY_OK);
}

static void standard_rotation_skips_bad_secret(void **state)
{
    const char *const secrets[2] = {"whsec_not*base64", spec_secret};
    const char *const both_bad[2] = {"whsec_not*base64", NULL};
    struct headers h = {{"webhook-id", "webhook-timestamp", "webhook-signature"},
                        {spec_id, "1614265330", spec_sig}};

    assert_int_equal(verify_standard(secrets, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, NULL, 0),
                     VERIFY_OK);
    assert_int_equal(verify_standard(both_bad, get_header, &h, spec_payload, strlen(spec_payload),
                                     spec_ts, 0, NULL, 0),
                     VERIFY_ERROR);
}

/* --- parsers -------------------------------------------------------------- */

static void parsers(void **state)
{
    struct verify_standard_sigs ss;
    unsigned char out[8];
    int64_t t;

    assert_int_equal(verify_parse_timestamp("1614265330", &t), 0);
    assert_int_equal(t, 1614265330);
    assert_int_equal(verify_parse_timestamp("", &t), -EINVAL);
    assert_int_equal(verify_parse_timestamp("-5", &t), -EINVAL);
    assert_int_equal(verify_parse_timestamp("1234567890123456", &t), -EINVAL);
    assert_int_equal(verify_base64_decode("YWJj", 4, out, sizeof(out)), 3);
    assert_int_equal(verify_base64_decode("YWI=", 4, out, sizeof(out)), 2);
    assert_int_equal(verify_base64_decode("YQ==", 4, out, sizeof(out)), 1);
    assert_int_equal(verify_base64_decode(" YWJ", 4, out, sizeof(out)), -EINVAL);
    assert_int_equal(verify_base64_decode("YW=j", 4, out, sizeof(out)), -EINVAL);
    assert_int_equal(verify_base64_decode("YWJjYWJjYWJj", 12, out, sizeof(out)), -ENOSPC);
    assert_int_equal(verify_parse_standard_signatures("  v1,AAAA", &ss), -EINVAL);
    assert_int_equal(
        verify_parse_standard_signatures("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=  ", &ss),
        0);
    assert_int_equal(ss.n, 1);
    assert_string_equal(verify_result_name(VERIFY_STALE), "stale");
}

/* --- algorithm lookups -------------------------------------------------- */

/*
 * OpenSSL's fetch functions, interposed: this executable's definitions win
 * over libcrypto's exported ones, also for the calls libcrypto makes to itself
 * (its HMAC fetches the digest by name on every init that names one), so the
 * counters see every lookup by name that a verification causes.
 */
static unsigned mac_fetches, md_fetches;

EVP_MAC *EVP_MAC_fetch(OSSL_LIB_CTX *libctx, const char *algorithm, const char *properties)
{
    EVP_MAC *(*real)(OSSL_LIB_CTX *, const char *, const char *);

    *(void **)&real = dlsym(RTLD_NEXT, "EVP_MAC_fetch");
    mac_fetches++;
    return real(libctx, algorithm, properties);
}

EVP_MD *EVP_MD_fetch(OSSL_LIB_CTX *libctx, const char *algorithm, const char *properties)
{
    EVP_MD *(*real)(OSSL_LIB_CTX *, const char *, const char *);

    *(void **)&real = dlsym(RTLD_NEXT, "EVP_MD_fetch");
    md_fetches++;
    return real(libctx, algorithm, properties);
}

static void algorithms_are_fetched_once(void **state)
{
    const void *parts[1] = {body};
    size_t lens[1] = {strlen(body)};
    unsigned char md[VERIFY_SHA256_LEN], mac[VERIFY_SHA256_LEN], want_md[32], want_mac[32];
    unsigned int n = 0;

    HMAC(EVP_sha256(), "shpss_current", 13, (const unsigned char *)body, strlen(body), want_mac,
         &n);
    EVP_Digest(body, strlen(body), want_md, &n, EVP_sha256(), NULL);
    /* Warm up: the first call may fetch. */
    assert_int_equal(verify_hmac_sha256("shpss_current", 13, parts, lens, 1, mac), 0);
    assert_int_equal(verify_sha256(body, strlen(body), md), 0);
    mac_fetches = md_fetches = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(verify_hmac_sha256("shpss_current", 13, parts, lens, 1, mac), 0);
        assert_memory_equal(mac, want_mac, sizeof(mac));
        assert_int_equal(verify_sha256(body, strlen(body), md), 0);
        assert_memory_equal(md, want_md, sizeof(md));
    }
    assert_int_equal(mac_fetches, 0);
    assert_int_equal(md_fetches, 0);
}

/* --- primitives ----------------------------------------------------------- */

static void hmac_over_parts_is_over_their_concatenation(void **state)
{
    static const char msg[] = "1767323047.{\"id\":1}";
    const void *parts[3] = {"1767323047", ".", "{\"id\":1}"};
    size_t lens[3] = {10, 1, 8};
    unsigned char mac[VERIFY_SHA256_LEN], want[32];
    unsigned int n = 0;

    HMAC(EVP_sha256(), "k", 1, (const unsigned char *)msg, strlen(msg), want, &n);
    assert_int_equal(verify_hmac_sha256("k", 1, parts, lens, 3, mac), 0);
    assert_memory_equal(mac, want, sizeof(mac));
    /* an empty key is never a usable secret */
    assert_int_equal(verify_hmac_sha256("", 0, parts, lens, 3, mac), -ENOMEM);
}

static void equal_and_age(void **state)
{
    char detail[128];

    assert_true(verify_equal("abcdef", "abcdef", 6));
    assert_false(verify_equal("abcdef", "abcdeg", 6));
    assert_true(verify_equal("abcdef", "abcdeg", 5));
    assert_int_equal(verify_age(now - 300, now, 0, "t", detail, sizeof(detail)), VERIFY_OK);
    assert_int_equal(verify_age(now + 300, now, 0, "t", detail, sizeof(detail)), VERIFY_OK);
    assert_int_equal(verify_age(now + 301, now, 0, "t", detail, sizeof(detail)), VERIFY_STALE);
    assert_string_equal(detail, "t is 301 s away from now (tolerance 300 s)");
    assert_int_equal(verify_age(now - 500, now, 600, "t", NULL, 0), VERIFY_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(standard_sign_matches_spec_vector),
        cmocka_unit_test(standard_valid_spec_vector),
        cmocka_unit_test(standard_several_signatures),
        cmocka_unit_test(standard_wrong),
        cmocka_unit_test(standard_missing),
        cmocka_unit_test(standard_malformed),
        cmocka_unit_test(standard_stale_both_ways),
        cmocka_unit_test(standard_rotation_skips_bad_secret),
        cmocka_unit_test(parsers),
        cmocka_unit_test(algorithms_are_fetched_once),
        cmocka_unit_test(hmac_over_parts_is_over_their_concatenation),
        cmocka_unit_test(equal_and_age),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
