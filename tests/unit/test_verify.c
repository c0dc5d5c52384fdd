/*
 * Unit tests for verify: every signing scheme (see verify.h) accepts what the
 * platform would send and rejects each way it can go wrong, with the right
 * result code. Signatures are computed here independently with OpenSSL's
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

static void b64_hmac(const char *key, size_t keylen, const char *msg, size_t len, char *out)
{
    unsigned char mac[32];
    unsigned int n = 0;

    HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, len, mac, &n);
    EVP_EncodeBlock((unsigned char *)out, mac, (int)n);
}

static void hex_hmac(const char *key, const char *msg, char *out)
{
    unsigned char mac[32];
    unsigned int n = 0;

    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, strlen(msg), mac, &n);
    for (unsigned int i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", mac[i]);
}

static const char *const one_secret[2] = {"shpss_current", NULL};

/* --- Shopify / WooCommerce ---------------------------------------------- */

static void shopify_valid(void **state)
{
    char sig[64], detail[256];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("shpss_current", 13, body, strlen(body), sig);
    assert_int_equal(
        verify_shopify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_OK);
}

static void shopify_wrong_secret_or_body(void **state)
{
    char sig[64], detail[256];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("other", 5, body, strlen(body), sig);
    assert_int_equal(
        verify_shopify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MISMATCH);
    b64_hmac("shpss_current", 13, body, strlen(body), sig);
    /* One byte less of body: the HMAC is over the exact bytes. */
    assert_int_equal(
        verify_shopify(one_secret, get_header, &h, body, strlen(body) - 1, detail, sizeof(detail)),
        VERIFY_MISMATCH);
    assert_null(strstr(detail, "shpss_current"));
}

static void shopify_missing(void **state)
{
    char detail[256];
    struct headers h = {{NULL}, {NULL}};

    assert_int_equal(
        verify_shopify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MISSING);
    assert_string_equal(detail, "X-Shopify-Hmac-Sha256 header is missing");
}

static void shopify_malformed(void **state)
{
    char detail[256];
    struct headers h = {{"x-shopify-hmac-sha256"}, {"not base64!"}};

    assert_int_equal(
        verify_shopify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MALFORMED);
    /* Valid base64, wrong length for an HMAC-SHA256. */
    h.values[0] = "YWJj";
    assert_int_equal(
        verify_shopify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MALFORMED);
}

static void shopify_rotation_previous_secret(void **state)
{
    const char *const rotating[2] = {"shpss_new", "shpss_current"};
    const char *const only_new[2] = {"shpss_new", NULL};
    char sig[64];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("shpss_current", 13, body, strlen(body), sig);
    assert_int_equal(verify_shopify(rotating, get_header, &h, body, strlen(body), NULL, 0),
                     VERIFY_OK);
    assert_int_equal(verify_shopify(only_new, get_header, &h, body, strlen(body), NULL, 0),
                     VERIFY_MISMATCH);
}

static void no_secret_is_our_error(void **state)
{
    const char *const none[2] = {NULL, NULL};
    char sig[64];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("x", 1, body, strlen(body), sig);
    assert_int_equal(verify_shopify(none, get_header, &h, body, strlen(body), NULL, 0),
                     VERIFY_ERROR);
}

static void woocommerce_valid_wrong_missing_malformed(void **state)
{
    const char *const secrets[2] = {"wc_secret", NULL};
    char sig[64], detail[256];
    struct headers h = {{"x-wc-webhook-signature"}, {sig}};

    b64_hmac("wc_secret", 9, body, strlen(body), sig);
    assert_int_equal(
        verify_woocommerce(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_OK);
    b64_hmac("wc_other", 8, body, strlen(body), sig);
    assert_int_equal(
        verify_woocommerce(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MISMATCH);
    h.values[0] = "%%%";
    assert_int_equal(
        verify_woocommerce(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MALFORMED);
    h.names[0] = "x-shopify-hmac-sha256";
    assert_int_equal(
        verify_woocommerce(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MISSING);
    assert_string_equal(detail, "X-WC-Webhook-Signature header is missing");
}

/* --- Stripe --------------------------------------------------------------- */

static const char stripe_secret[] = "whsec_test_5ecret";

static void stripe_header(const char *secret, long long t, char *out, size_t size)
{
    char msg[512], hex[65];

    snprintf(msg, sizeof(msg), "%lld.%s", t, body);
    hex_hmac(secret, msg, hex);
    snprintf(out, size, "t=%lld,v1=%s", t, hex);
}

static void stripe_valid(void **state)
{
    const char *const secrets[2] = {stripe_secret, NULL};
    char value[256], detail[256];
    struct headers h = {{"stripe-signature"}, {value}};

    stripe_header(stripe_secret, (long long)now - 10, value, sizeof(value));
    assert_int_equal(
        verify_stripe(secrets, get_header, &h, body, strlen(body), now, 0, detail, sizeof(detail)),
        VERIFY_OK);
}

static void stripe_several_signatures_and_v0(void **state)
{
    const char *const secrets[2] = {stripe_secret, NULL};
    char good[256], bad[256], value[600];
    struct headers h = {{"stripe-signature"}, {value}};

    stripe_header(stripe_secret, (long long)now, good, sizeof(good));
    stripe_header("whsec_other", (long long)now, bad, sizeof(bad));
    /* Stripe lists one v1 per active secret; any match passes, v0 is ignored. */
    snprintf(value, sizeof(value),
             "%s,%s,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39", bad,
             strchr(good, ',') + 1);
    assert_int_equal(verify_stripe(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
                     VERIFY_OK);
}

static void stripe_wrong(void **state)
{
    const char *const secrets[2] = {stripe_secret, NULL};
    char value[256];
    struct headers h = {{"stripe-signature"}, {value}};

    /* The key is the whole "whsec_..." string; signing with the part after the prefix fails. */
    stripe_header(stripe_secret + 6, (long long)now, value, sizeof(value));
    assert_int_equal(verify_stripe(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
                     VERIFY_MISMATCH);
}

static void stripe_missing_and_malformed(void **state)
{
    const char *const secrets[2] = {stripe_secret, NULL};
    char detail[256];
    struct headers h = {{NULL}, {NULL}};
    static const char *const bad[] = {
        "",
        "v1="
        "0000000000000000000000000000000000000000000000000000000000000000",
        "t=12x,v1=0000000000000000000000000000000000000000000000000000000000000000",
        "t=1767323047",
        "t=1767323047,v1=zz",
        "t=1767323047,v1=ABCDEF0000000000000000000000000000000000000000000000000000000000",
    };

    assert_int_equal(
        verify_stripe(secrets, get_header, &h, body, strlen(body), now, 0, detail, sizeof(detail)),
        VERIFY_MISSING);
    assert_string_equal(detail, "Stripe-Signature header is missing");
    h.names[0] = "stripe-signature";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h.values[0] = bad[i];
        assert_int_equal(
            verify_stripe(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
            VERIFY_MALFORMED);
    }
}

static void stripe_stale(void **state)
{
    const char *const secrets[2] = {stripe_secret, NULL};
    char value[256], detail[256];
    struct headers h = {{"stripe-signature"}, {value}};

    stripe_header(stripe_secret, (long long)now - 412, value, sizeof(value));
    assert_int_equal(
        verify_stripe(secrets, get_header, &h, body, strlen(body), now, 0, detail, sizeof(detail)),
        VERIFY_STALE);
    assert_string_equal(detail,
                        "Stripe-Signature timestamp is 412 s away from now (tolerance 300 s)");
    /* A wider configured tolerance accepts it. */
    assert_int_equal(verify_stripe(secrets, get_header, &h, body, strlen(body), now, 600, NULL, 0),
                     VERIFY_OK);
}

static void stripe_rotation(void **state)
{
    const char *const secrets[2] = {"whsec_new", stripe_secret};
    char value[256];
    struct headers h = {{"stripe-signature"}, {value}};

    stripe_header(stripe_secret, (long long)now, value, sizeof(value));
    assert_int_equal(verify_stripe(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
                     VERIFY_OK);
}

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
    struct verify_stripe_header sh;
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
    assert_int_equal(verify_parse_stripe_header(
                         "t=5,v1="
                         "00000000000000000000000000000000000000000000000000000000000000ff,x=y",
                         &sh),
                     0);
    assert_int_equal(sh.t, 5);
    assert_int_equal(sh.n_v1, 1);
    assert_int_equal(verify_parse_stripe_header("t=5,t=6,v1=00", &sh), -EINVAL);
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
    char sig[64], detail[256];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};
    unsigned char md[VERIFY_SHA256_LEN], want[32];
    unsigned int n = 0;

    b64_hmac("shpss_current", 13, body, strlen(body), sig);
    EVP_Digest(body, strlen(body), want, &n, EVP_sha256(), NULL);
    /* Warm up: the first call may fetch. */
    assert_int_equal(
        verify_shopify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_OK);
    assert_int_equal(verify_sha256(body, strlen(body), md), 0);
    mac_fetches = md_fetches = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(
            verify_shopify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
            VERIFY_OK);
        assert_int_equal(verify_sha256(body, strlen(body), md), 0);
        assert_memory_equal(md, want, sizeof(md));
    }
    assert_int_equal(mac_fetches, 0);
    assert_int_equal(md_fetches, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shopify_valid),
        cmocka_unit_test(shopify_wrong_secret_or_body),
        cmocka_unit_test(shopify_missing),
        cmocka_unit_test(shopify_malformed),
        cmocka_unit_test(shopify_rotation_previous_secret),
        cmocka_unit_test(no_secret_is_our_error),
        cmocka_unit_test(woocommerce_valid_wrong_missing_malformed),
        cmocka_unit_test(stripe_valid),
        cmocka_unit_test(stripe_several_signatures_and_v0),
        cmocka_unit_test(stripe_wrong),
        cmocka_unit_test(stripe_missing_and_malformed),
        cmocka_unit_test(stripe_stale),
        cmocka_unit_test(stripe_rotation),
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
