/*
 * Allocation-failure torture of everything ordersync does with a webhook
 * (alloc_fail.h): each kind's signature check, each kind's normalize with
 * every fixture of tests/fixtures, and whole requests through inbound_parse
 * (verify → classify → normalize) for each kind, with the 1st, 2nd, ... Nth
 * allocation failing until the path completes.
 *
 * The rule checked on every run: an allocation that failed is reported as
 * our own failure (VERIFY_ERROR, -ENOMEM, HTTP 500), never as the sender's
 * fault (a 4xx makes a platform give up on a good webhook) and never as a
 * success with something missing. OpenSSL absorbs some failures of its own
 * (a name cache it can do without): a run may then succeed, but only with
 * exactly the clean run's result. ASan (scripts/test --sanitize) adds: no
 * crash, no leak.
 *
 * The verify loop runs first, on a cold process: OpenSSL's algorithms are
 * fetched on first use, and that first use may be the one that fails.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "alloc_fail.h"
#include "inbound.h"
#include "source_kind.h"
#include "verify.h"
#include "test_fixture.h"

static const time_t now = 1767323047;
static const char std_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

static const struct source_kind *kind(const char *name)
{
    const struct source_kind *k = NULL;

    if (source_kind_parse(name, &k) < 0)
        fail_msg("no source kind %s", name);
    return k;
}

/* ------------------------------------------------------- signed requests */

#define MAX_HEADERS 6

/* One webhook as its platform sends it, signed before any allocation is armed. */
struct request {
    const char *kind;
    const char *fixture;
    const char *topic; /* for the platforms that send it as a header */
    const char *secret;
    const char *names[MAX_HEADERS];
    char values[MAX_HEADERS][128];
    size_t n;
    char *body;
    size_t len;
};

static const char *get_header(void *ctx, const char *name)
{
    struct request *r = ctx;

    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->names[i], name) == 0)
            return r->values[i];
    }
    return NULL;
}

static void header(struct request *r, const char *name, const char *value)
{
    assert_true(r->n < MAX_HEADERS);
    r->names[r->n] = name;
    snprintf(r->values[r->n], sizeof(r->values[r->n]), "%s", value);
    r->n++;
}

static void hmac(const char *secret, const void *msg, size_t len, unsigned char mac[32])
{
    unsigned int n = 0;

    HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, len, mac, &n);
}

static void sign(struct request *r)
{
    unsigned char mac[32];
    char b64[64], v[128];
    int off;

    r->body = read_fixture(r->fixture, &r->len);
    if (strcmp(r->kind, "shopify") == 0 || strcmp(r->kind, "woocommerce") == 0) {
        bool shopify = strcmp(r->kind, "shopify") == 0;

        hmac(r->secret, r->body, r->len, mac);
        EVP_EncodeBlock((unsigned char *)b64, mac, 32);
        header(r, shopify ? "x-shopify-hmac-sha256" : "x-wc-webhook-signature", b64);
        header(r, shopify ? "x-shopify-topic" : "x-wc-webhook-topic", r->topic);
        if (shopify)
            header(r, "x-shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    } else if (strcmp(r->kind, "stripe") == 0) {
        char *msg = NULL;
        int len = asprintf(&msg, "%lld.%.*s", (long long)now, (int)r->len, r->body);

        assert_true(len > 0);
        hmac(r->secret, msg, (size_t)len, mac);
        free(msg);
        off = snprintf(v, sizeof(v), "t=%lld,v1=", (long long)now);
        for (int i = 0; i < 32; i++)
            off += snprintf(v + off, sizeof(v) - (size_t)off, "%02x", mac[i]);
        header(r, "stripe-signature", v);
    } else {
        /* signed here, not with verify_sign_standard: verify.c must start cold */
        unsigned char key[64];
        char *msg = NULL;
        int keylen =
            EVP_DecodeBlock(key, (const unsigned char *)r->secret + 6, (int)strlen(r->secret + 6));
        int len = asprintf(&msg, "msg_torture.%lld.%.*s", (long long)now, (int)r->len, r->body);
        unsigned int n = 0;

        assert_true(keylen == 24 && len > 0);
        HMAC(EVP_sha256(), key, keylen, (const unsigned char *)msg, (size_t)len, mac, &n);
        free(msg);
        memcpy(v, "v1,", 3);
        EVP_EncodeBlock((unsigned char *)v + 3, mac, 32);
        header(r, "webhook-id", "msg_torture");
        header(r, "webhook-timestamp", "1767323047");
        header(r, "webhook-signature", v);
    }
}

static struct request requests[] = {
    {.kind = "shopify",
     .fixture = "shopify_order_create.json",
     .topic = "orders/create",
     .secret = "shpss_1"},
    {.kind = "shopify",
     .fixture = "shopify_refund_create.json",
     .topic = "refunds/create",
     .secret = "shpss_1"},
    {.kind = "woocommerce",
     .fixture = "woocommerce_order_created.json",
     .topic = "order.created",
     .secret = "wc_1"},
    {.kind = "woocommerce",
     .fixture = "woocommerce_order_cancelled.json",
     .topic = "order.updated",
     .secret = "wc_1"},
    {.kind = "stripe",
     .fixture = "stripe_checkout_session_completed.json",
     .topic = NULL,
     .secret = "whsec_st"},
    {.kind = "stripe",
     .fixture = "stripe_charge_refunded.json",
     .topic = NULL,
     .secret = "whsec_st"},
    {.kind = "standard",
     .fixture = "standard_order_created.json",
     .topic = NULL,
     .secret = std_secret},
    {.kind = "standard", .fixture = "standard_thin.json", .topic = NULL, .secret = std_secret},
};
#define N_REQUESTS (sizeof(requests) / sizeof(requests[0]))

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUESTS; i++)
        sign(&requests[i]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUESTS; i++)
        free(requests[i].body);
    return 0;
}

/* ------------------------------------------------------------- verify */

struct verify_case {
    struct request *r;
    struct hmac_sha256 *keys[2]; /* as the store keys the secret, or none */
};

static int verify_run(void *ctx)
{
    struct verify_case *c = ctx;
    struct request *r = c->r;
    const char *secrets[2] = {r->secret, NULL};
    struct source_request req = {secrets, 0, get_header, r, r->body, r->len, now, c->keys};
    char detail[SOURCE_DETAIL_SIZE];
    enum verify_result vr = kind(r->kind)->verify(&req, detail, sizeof(detail));

    if (vr != VERIFY_OK && (vr != VERIFY_ERROR || !alloc_fail_triggered()))
        fail_msg("%s: a valid signature was %s (%s)", r->fixture, verify_result_name(vr), detail);
    return vr == VERIFY_OK ? 0 : -ENOMEM;
}

static void verify_every_kind(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUESTS; i++) {
        struct verify_case c = {&requests[i], {NULL, NULL}};

        assert_true(alloc_fail_loop(requests[i].fixture, verify_run, &c, true) >= 0);
        /* pre-keyed (keyed before the loop, as a store load would have): no allocation at all */
        assert_int_equal(
            hmac_sha256_new(requests[i].secret, strlen(requests[i].secret), &c.keys[0]), 0);
        assert_true(alloc_fail_loop(requests[i].fixture, verify_run, &c, true) >= 0);
        hmac_sha256_free(&c.keys[0]);
    }
}

/*
 * OpenSSL's algorithms are fetched once, on the first HMAC. When an
 * allocation fails there, that first HMAC fails, but the next one must work:
 * a process must not be left unable to verify anything until it restarts.
 * Each n runs in a child of its own, so that every first use is cold.
 */
static void a_failed_first_use_is_not_forever(void **state)
{
    static const char key[] = "k", msg[] = "m";
    const void *parts[1] = {msg};
    size_t lens[1] = {1};

    (void)state;
    for (unsigned long n = 1;; n++) {
        unsigned char mac[VERIFY_SHA256_LEN];
        int status = 0;
        pid_t pid = fork();

        assert_true(pid >= 0);
        if (pid == 0) {
            int first, second;
            bool hit;

            alloc_fail_at(n);
            first = verify_hmac_sha256(key, 1, parts, lens, 1, mac);
            hit = alloc_fail_triggered();
            alloc_fail_at(0);
            second = verify_hmac_sha256(key, 1, parts, lens, 1, mac);
            _exit(!hit ? 2 : first == 0 || second == 0 ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 1)
            fail_msg("allocation %lu of the first HMAC failed, and so did every one after", n);
        if (WEXITSTATUS(status) == 2)
            break;
    }
}

/* ---------------------------------------------------------- normalize */

struct normalize_case {
    const char *kind;
    const char *fixture;
    const char *topic;
    json_t *payload;
    json_t *want; /* the clean run's order */
};

static int normalize_run(void *ctx)
{
    struct normalize_case *c = ctx;
    char err[SOURCE_DETAIL_SIZE] = "";
    json_t *out = NULL;
    int rc = kind(c->kind)->normalize("torture", c->topic, c->payload, now, &out, err, sizeof(err));

    if (alloc_fail_triggered()) {
        if (rc != -ENOMEM)
            fail_msg("%s: a failed allocation gave %d (%s), not -ENOMEM", c->fixture, rc, err);
        if (out != NULL)
            fail_msg("%s: an order came out of a failed normalize", c->fixture);
        return rc;
    }
    if (rc == 0 && c->want != NULL && !json_equal(out, c->want))
        fail_msg("%s: the order differs from the clean run's", c->fixture);
    json_decref(out);
    return rc;
}

static void normalize_every_fixture(void **state)
{
    struct normalize_case cases[] = {
        {.kind = "shopify", .fixture = "shopify_order_create.json", .topic = "orders/create"},
        {.kind = "shopify", .fixture = "shopify_order_small.json", .topic = "orders/updated"},
        {.kind = "shopify", .fixture = "shopify_refund_create.json", .topic = "refunds/create"},
        {.kind = "woocommerce",
         .fixture = "woocommerce_order_created.json",
         .topic = "order.created"},
        {.kind = "woocommerce",
         .fixture = "woocommerce_order_cancelled.json",
         .topic = "order.updated"},
        {.kind = "stripe",
         .fixture = "stripe_checkout_session_completed.json",
         .topic = "checkout.session.completed"},
        {.kind = "stripe", .fixture = "stripe_charge_refunded.json", .topic = "charge.refunded"},
        {.kind = "standard", .fixture = "standard_order_created.json", .topic = "order.created"},
        {.kind = "standard", .fixture = "standard_thin.json", .topic = "order.updated"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct normalize_case *c = &cases[i];
        char err[SOURCE_DETAIL_SIZE];
        size_t len;
        char *text = read_fixture(c->fixture, &len);

        c->payload = json_loadb(text, len, JSON_DECODE_ANY, NULL);
        free(text);
        assert_non_null(c->payload);
        assert_int_equal(
            kind(c->kind)->normalize("torture", c->topic, c->payload, now, &c->want, err, 256), 0);
        assert_true(alloc_fail_loop(c->fixture, normalize_run, c, false) > 0);
        json_decref(c->want);
        json_decref(c->payload);
    }
}

/* ------------------------------------------------------------ inbound */

struct inbound_case {
    struct request *r;
    struct inbound_event want; /* the clean run's */
};

static int inbound_run(void *ctx)
{
    struct inbound_case *c = ctx;
    struct request *r = c->r;
    struct inbound_source src = {"torture", kind(r->kind), {r->secret, NULL}, 0, {NULL, NULL}};
    struct inbound_event ev;
    struct inbound_error err;
    int rc =
        inbound_parse(&src, get_header, r, "application/json", r->body, r->len, now, &ev, &err);

    if (alloc_fail_triggered() && rc < 0) {
        /* our failure, so the sender retries: never a 4xx for a good webhook */
        if (err.http_status != 500)
            fail_msg("%s: a failed allocation gave %d, HTTP %d %s (%s)", r->fixture, rc,
                     err.http_status, err.error, err.detail);
        if (ev.payload != NULL || ev.order != NULL || ev.dedupe_key != NULL || ev.topic != NULL)
            fail_msg("%s: a failed request left an event behind", r->fixture);
        return rc;
    }
    if (rc != 0)
        return rc;
    if (strcmp(ev.dedupe_key, c->want.dedupe_key) != 0 || strcmp(ev.topic, c->want.topic) != 0 ||
        ev.event_type != c->want.event_type || !json_equal(ev.order, c->want.order))
        fail_msg("%s: the event differs from the clean run's: key %s, topic %s, type %s, order %s",
                 r->fixture, ev.dedupe_key, ev.topic, ev.event_type ? ev.event_type : "none",
                 ev.order != NULL ? "present" : "absent");
    inbound_event_clear(&ev);
    return 0;
}

static void inbound_every_kind(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_REQUESTS; i++) {
        struct request *r = &requests[i];
        struct inbound_source src = {"torture", kind(r->kind), {r->secret, NULL}, 0, {NULL, NULL}};
        struct inbound_case c = {.r = r};
        struct inbound_error err;

        assert_int_equal(inbound_parse(&src, get_header, r, "application/json", r->body, r->len,
                                       now, &c.want, &err),
                         0);
        assert_non_null(c.want.event_type);
        assert_true(alloc_fail_loop(r->fixture, inbound_run, &c, true) > 0);
        inbound_event_clear(&c.want);
    }
}

int main(void)
{
    alloc_fail_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_failed_first_use_is_not_forever),
        cmocka_unit_test(verify_every_kind),
        cmocka_unit_test(normalize_every_fixture),
        cmocka_unit_test(inbound_every_kind),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
