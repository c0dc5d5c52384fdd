/*
 * Unit tests for relay_sign: the webhook-signature line a delivery carries,
 * checked against the Standard Webhooks spec's own test vector, during a
 * secret rotation (both signatures, either verifies), and with a secret
 * that is not a whsec_ key (nothing is sent).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

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
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&set, spec_id, spec_ts, spec_payload, strlen(spec_payload),
                                     line, sizeof(line)),
                     0);
    assert_string_equal(line + strlen("webhook-signature: "), spec_sig);
    assert_true(verifies(line, spec_secret));
    assert_false(verifies(line, other_secret));
}

static void a_rotation_signs_with_both_secrets(void **state)
{
    (void)state;
    struct dest_settings set = {.secret = (char *)other_secret, .prev_secret = (char *)spec_secret};
    char line[RELAY_SIGN_LINE_SIZE];
    assert_int_equal(relay_sign_line(&set, spec_id, spec_ts, spec_payload, strlen(spec_payload),
                                     line, sizeof(line)),
                     0);
    /* the new secret's first, the previous one's after a space */
    const char *space = strchr(line + strlen("webhook-signature: "), ' ');
    assert_non_null(space);
    assert_string_equal(space + 1, spec_sig);
    assert_true(verifies(line, other_secret));
    assert_true(verifies(line, spec_secret));
}

static void a_secret_that_is_not_a_key_signs_nothing(void **state)
{
    (void)state;
    char line[RELAY_SIGN_LINE_SIZE];
    struct dest_settings bad = {.secret = (char *)"whsec_!!notbase64"};
    assert_int_equal(relay_sign_line(&bad, spec_id, spec_ts, spec_payload, strlen(spec_payload),
                                     line, sizeof(line)),
                     -EINVAL);
    struct dest_settings bad_prev = {.secret = (char *)spec_secret,
                                     .prev_secret = (char *)"whsec_!!notbase64"};
    assert_int_equal(relay_sign_line(&bad_prev, spec_id, spec_ts, spec_payload,
                                     strlen(spec_payload), line, sizeof(line)),
                     -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_secret_signs_as_the_spec_says),
        cmocka_unit_test(a_rotation_signs_with_both_secrets),
        cmocka_unit_test(a_secret_that_is_not_a_key_signs_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
