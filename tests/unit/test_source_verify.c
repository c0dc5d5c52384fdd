/*
 * Unit tests for the platforms' own signature schemes, each kind's verify
 * hook (source_shopify.c, source_woocommerce.c, source_stripe.c): each
 * accepts what the platform would send and rejects each way it can go wrong,
 * with the right result code, whether its secrets come pre-keyed (as the
 * store keys them) or not. Signatures are computed here independently
 * with OpenSSL's one-shot HMAC(), so a shared bug in the code cannot hide.
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
#include <openssl/hmac.h>

#include "source_internal.h"
#include "source_kind.h"

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

/*
 * A kind's verify hook, found by name as the store finds it, on one request;
 * twice: with each secret keyed per call, and with the secrets pre-keyed as
 * the store keys them (lib/hmac). Both must give the same verdict and detail.
 */
static enum verify_result verify(const char *kind, const char *const secrets[2],
                                 verify_get_header_fn get, void *ctx, const char *b, size_t len,
                                 time_t at, int tolerance_s, char *detail, size_t size)
{
    const struct source_kind *k = NULL;
    struct hmac_sha256 *keys[2] = {NULL, NULL};
    struct source_request req = {secrets, tolerance_s, get, ctx, b, len, at, NULL};
    char keyed_detail[256] = "";
    enum verify_result r, keyed;

    if (source_kind_parse(kind, &k) < 0)
        fail_msg("no source kind %s", kind);
    r = k->verify(&req, detail, size);
    for (int i = 0; i < 2; i++) {
        if (secrets[i] != NULL && secrets[i][0] != '\0')
            assert_int_equal(hmac_sha256_new(secrets[i], strlen(secrets[i]), &keys[i]), 0);
    }
    req.keys = keys;
    keyed = k->verify(&req, keyed_detail, sizeof(keyed_detail));
    hmac_sha256_free(&keys[0]);
    hmac_sha256_free(&keys[1]);
    assert_int_equal(keyed, r);
    if (detail != NULL && size > 0)
        assert_string_equal(keyed_detail, detail);
    return r;
}

static enum verify_result shopify_verify(const char *const secrets[2], verify_get_header_fn get,
                                         void *ctx, const char *b, size_t len, char *detail,
                                         size_t size)
{
    return verify("shopify", secrets, get, ctx, b, len, now, 0, detail, size);
}

static enum verify_result woo_verify(const char *const secrets[2], verify_get_header_fn get,
                                     void *ctx, const char *b, size_t len, char *detail,
                                     size_t size)
{
    return verify("woocommerce", secrets, get, ctx, b, len, now, 0, detail, size);
}

static enum verify_result stripe_verify(const char *const secrets[2], verify_get_header_fn get,
                                        void *ctx, const char *b, size_t len, time_t at,
                                        int tolerance_s, char *detail, size_t size)
{
    return verify("stripe", secrets, get, ctx, b, len, at, tolerance_s, detail, size);
}

static const char *const one_secret[2] = {"shpss_current", NULL};

/* --- Shopify / WooCommerce ---------------------------------------------- */

static void shopify_valid(void **state)
{
    char sig[64], detail[256];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("shpss_current", 13, body, strlen(body), sig);
    assert_int_equal(
        shopify_verify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_OK);
}

static void shopify_wrong_secret_or_body(void **state)
{
    char sig[64], detail[256];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("other", 5, body, strlen(body), sig);
    assert_int_equal(
        shopify_verify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MISMATCH);
    b64_hmac("shpss_current", 13, body, strlen(body), sig);
    /* One byte less of body: the HMAC is over the exact bytes. */
    assert_int_equal(
        shopify_verify(one_secret, get_header, &h, body, strlen(body) - 1, detail, sizeof(detail)),
        VERIFY_MISMATCH);
    assert_null(strstr(detail, "shpss_current"));
}

static void shopify_missing(void **state)
{
    char detail[256];
    struct headers h = {{NULL}, {NULL}};

    assert_int_equal(
        shopify_verify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MISSING);
    assert_string_equal(detail, "X-Shopify-Hmac-Sha256 header is missing");
}

static void shopify_malformed(void **state)
{
    char detail[256];
    struct headers h = {{"x-shopify-hmac-sha256"}, {"not base64!"}};

    assert_int_equal(
        shopify_verify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MALFORMED);
    /* Valid base64, wrong length for an HMAC-SHA256. */
    h.values[0] = "YWJj";
    assert_int_equal(
        shopify_verify(one_secret, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MALFORMED);
}

static void shopify_rotation_previous_secret(void **state)
{
    const char *const rotating[2] = {"shpss_new", "shpss_current"};
    const char *const only_new[2] = {"shpss_new", NULL};
    char sig[64];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("shpss_current", 13, body, strlen(body), sig);
    assert_int_equal(shopify_verify(rotating, get_header, &h, body, strlen(body), NULL, 0),
                     VERIFY_OK);
    assert_int_equal(shopify_verify(only_new, get_header, &h, body, strlen(body), NULL, 0),
                     VERIFY_MISMATCH);
}

static void no_secret_is_our_error(void **state)
{
    const char *const none[2] = {NULL, NULL};
    char sig[64];
    struct headers h = {{"x-shopify-hmac-sha256"}, {sig}};

    b64_hmac("x", 1, body, strlen(body), sig);
    assert_int_equal(shopify_verify(none, get_header, &h, body, strlen(body), NULL, 0),
                     VERIFY_ERROR);
}

static void woocommerce_valid_wrong_missing_malformed(void **state)
{
    const char *const secrets[2] = {"wc_secret", NULL};
    char sig[64], detail[256];
    struct headers h = {{"x-wc-webhook-signature"}, {sig}};

    b64_hmac("wc_secret", 9, body, strlen(body), sig);
    assert_int_equal(
        woo_verify(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)), VERIFY_OK);
    b64_hmac("wc_other", 8, body, strlen(body), sig);
    assert_int_equal(
        woo_verify(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MISMATCH);
    h.values[0] = "%%%";
    assert_int_equal(
        woo_verify(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)),
        VERIFY_MALFORMED);
    h.names[0] = "x-shopify-hmac-sha256";
    assert_int_equal(
        woo_verify(secrets, get_header, &h, body, strlen(body), detail, sizeof(detail)),
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
        stripe_verify(secrets, get_header, &h, body, strlen(body), now, 0, detail, sizeof(detail)),
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
    assert_int_equal(stripe_verify(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
                     VERIFY_OK);
}

static void stripe_wrong(void **state)
{
    const char *const secrets[2] = {stripe_secret, NULL};
    char value[256];
    struct headers h = {{"stripe-signature"}, {value}};

    /* The key is the whole "whsec_..." string; signing with the part after the prefix fails. */
    stripe_header(stripe_secret + 6, (long long)now, value, sizeof(value));
    assert_int_equal(stripe_verify(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
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
        stripe_verify(secrets, get_header, &h, body, strlen(body), now, 0, detail, sizeof(detail)),
        VERIFY_MISSING);
    assert_string_equal(detail, "Stripe-Signature header is missing");
    h.names[0] = "stripe-signature";
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h.values[0] = bad[i];
        assert_int_equal(
            stripe_verify(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
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
        stripe_verify(secrets, get_header, &h, body, strlen(body), now, 0, detail, sizeof(detail)),
        VERIFY_STALE);
    assert_string_equal(detail,
                        "Stripe-Signature timestamp is 412 s away from now (tolerance 300 s)");
    /* A wider configured tolerance accepts it. */
    assert_int_equal(stripe_verify(secrets, get_header, &h, body, strlen(body), now, 600, NULL, 0),
                     VERIFY_OK);
}

static void stripe_rotation(void **state)
{
    const char *const secrets[2] = {"whsec_new", stripe_secret};
    char value[256];
    struct headers h = {{"stripe-signature"}, {value}};

    stripe_header(stripe_secret, (long long)now, value, sizeof(value));
    assert_int_equal(stripe_verify(secrets, get_header, &h, body, strlen(body), now, 0, NULL, 0),
                     VERIFY_OK);
}

static void stripe_header_parser(void **state)
{
    struct source_stripe_header sh;

    assert_int_equal(source_stripe_parse_header(
                         "t=5,v1="
                         "00000000000000000000000000000000000000000000000000000000000000ff,x=y",
                         &sh),
                     0);
    assert_int_equal(sh.t, 5);
    assert_int_equal(sh.n_v1, 1);
    assert_int_equal(source_stripe_parse_header("t=5,t=6,v1=00", &sh), -EINVAL);
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
        cmocka_unit_test(stripe_header_parser),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
