/*
 * Unit tests for inbound: the order of the checks (ping, signature, content
 * type, JSON, order) and the status each failure gets, the topic → event
 * type rules of every source kind, and the dedupe key each kind derives,
 * through the whole request path as the HTTP handler drives it.
 * Requests are signed here with OpenSSL directly, as the platforms would.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "inbound.h"
#include "verify.h"
#include "test_fixture.h"

#define MAX_HEADERS 8

struct req {
    const char *names[MAX_HEADERS];
    char values[MAX_HEADERS][256];
    size_t n;
    char *body;
    size_t len;
};

static const char *get_header(void *ctx, const char *name)
{
    struct req *r = ctx;

    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->names[i], name) == 0)
            return r->values[i];
    }
    return NULL;
}

static void set_header(struct req *r, const char *name, const char *value)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->names[i], name) == 0) {
            snprintf(r->values[i], sizeof(r->values[i]), "%s", value);
            return;
        }
    }
    assert_true(r->n < MAX_HEADERS);
    r->names[r->n] = name;
    snprintf(r->values[r->n], sizeof(r->values[r->n]), "%s", value);
    r->n++;
}

static void del_header(struct req *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->names[i], name) == 0)
            r->names[i] = "x-deleted";
    }
}

static const time_t now = 1767323047;

static void set_body(struct req *r, const char *text)
{
    free(r->body);
    r->body = strdup(text);
    r->len = strlen(text);
}

static void sign_b64(struct req *r, const char *header, const char *secret)
{
    unsigned char mac[32];
    char b64[64];
    unsigned int n = 0;

    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)r->body, r->len, mac, &n);
    EVP_EncodeBlock((unsigned char *)b64, mac, (int)n);
    set_header(r, header, b64);
}

static void sign_stripe(struct req *r, const char *secret)
{
    unsigned char mac[32];
    char value[128], *msg;
    unsigned int n = 0;
    int len;

    len = asprintf(&msg, "%lld.%.*s", (long long)now, (int)r->len, r->body);
    assert_true(len > 0);
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (unsigned char *)msg, (size_t)len, mac, &n);
    free(msg);
    len = snprintf(value, sizeof(value), "t=%lld,v1=", (long long)now);
    for (unsigned int i = 0; i < n; i++)
        len += snprintf(value + len, sizeof(value) - (size_t)len, "%02x", mac[i]);
    set_header(r, "stripe-signature", value);
}

static const char std_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

static void sign_standard(struct req *r, const char *id)
{
    char sig[VERIFY_STANDARD_SIG_SIZE], ts[24];

    assert_int_equal(verify_sign_standard(id, now, r->body, r->len, std_secret, sig, sizeof(sig)),
                     0);
    snprintf(ts, sizeof(ts), "%lld", (long long)now);
    set_header(r, "webhook-id", id);
    set_header(r, "webhook-timestamp", ts);
    set_header(r, "webhook-signature", sig);
}

/* Each source's kind is looked up by name in setup_kinds(), as the store does. */
static struct inbound_source shopify = {"shop", NULL, {"shpss_1", NULL}, 0, {NULL, NULL}};
static struct inbound_source woo = {"woo", NULL, {"wc_1", NULL}, 0, {NULL, NULL}};
static struct inbound_source stripe = {"stripe", NULL, {"whsec_st", NULL}, 0, {NULL, NULL}};
static struct inbound_source standard = {"std", NULL, {std_secret, NULL}, 0, {NULL, NULL}};

static int setup_kinds(void **state)
{
    (void)state;
    return source_kind_parse("shopify", &shopify.kind) |
           source_kind_parse("woocommerce", &woo.kind) | source_kind_parse("stripe", &stripe.kind) |
           source_kind_parse("standard", &standard.kind);
}

static int run(const struct inbound_source *src, struct req *r, const char *ct,
               struct inbound_event *ev, struct inbound_error *err)
{
    return inbound_parse(src, get_header, r, ct, r->body, r->len, now, ev, err);
}

static void shopify_req(struct req *r, const char *fixture, const char *topic)
{
    memset(r, 0, sizeof(*r));
    r->body = read_fixture(fixture, &r->len);
    set_header(r, "x-shopify-topic", topic);
    set_header(r, "x-shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    sign_b64(r, "x-shopify-hmac-sha256", "shpss_1");
}

static void woo_req(struct req *r, const char *fixture, const char *topic)
{
    memset(r, 0, sizeof(*r));
    r->body = read_fixture(fixture, &r->len);
    set_header(r, "x-wc-webhook-topic", topic);
    set_header(r, "x-wc-webhook-delivery-id", "3f9a");
    sign_b64(r, "x-wc-webhook-signature", "wc_1");
}

static void stripe_req(struct req *r, const char *fixture)
{
    memset(r, 0, sizeof(*r));
    r->body = read_fixture(fixture, &r->len);
    sign_stripe(r, "whsec_st");
}

static void woocommerce_ping(void **state)
{
    struct req r = {0};
    struct inbound_event ev;
    struct inbound_error err;

    set_body(&r, "webhook_id=42");
    assert_int_equal(run(&woo, &r, "application/x-www-form-urlencoded", &ev, &err), INBOUND_PING);
    assert_null(ev.payload);
    /* Only for WooCommerce sources, and only without any X-WC-Webhook-* header. */
    assert_true(run(&shopify, &r, "application/x-www-form-urlencoded", &ev, &err) < 0);
    assert_int_equal(err.http_status, 401);
    set_header(&r, "x-wc-webhook-topic", "order.created");
    assert_true(run(&woo, &r, "application/x-www-form-urlencoded", &ev, &err) < 0);
    assert_int_equal(err.http_status, 401);
    assert_string_equal(err.error, "invalid_signature");
    r.n = 0;
    set_body(&r, "webhook_id=42&x=1");
    assert_true(run(&woo, &r, NULL, &ev, &err) < 0);
    assert_int_equal(err.http_status, 401);
    free(r.body);
}

static void signature_first(void **state)
{
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    /* A bad signature wins over a bad content type and bad JSON: nothing unsigned is parsed. */
    shopify_req(&r, "shopify_order_create.json", "orders/create");
    set_header(&r, "x-shopify-hmac-sha256", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_int_equal(run(&shopify, &r, "text/plain", &ev, &err), -EACCES);
    assert_int_equal(err.http_status, 401);
    assert_string_equal(err.error, "invalid_signature");
    assert_string_equal(err.detail, "X-Shopify-Hmac-Sha256 does not match the body");
    del_header(&r, "x-shopify-hmac-sha256");
    assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
    assert_string_equal(err.detail, "X-Shopify-Hmac-Sha256 header is missing");
    assert_null(ev.payload);
    free(r.body);
}

static void content_type(void **state)
{
    static const char *const ok[] = {"application/json", "application/json; charset=utf-8",
                                     "Application/JSON", " application/json ;charset=UTF-8"};
    static const char *const bad[] = {NULL, "", "text/plain", "application/jsonx",
                                      "application/x-www-form-urlencoded"};
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    shopify_req(&r, "shopify_order_create.json", "orders/create");
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(run(&shopify, &r, ok[i], &ev, &err), 0);
        inbound_event_clear(&ev);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_true(run(&shopify, &r, bad[i], &ev, &err) < 0);
        assert_int_equal(err.http_status, 415);
        assert_string_equal(err.error, "unsupported_media_type");
    }
    free(r.body);
}

static void malformed_json(void **state)
{
    struct req r = {0};
    struct inbound_event ev;
    struct inbound_error err;

    set_body(&r, "{\"id\": 1,\n \"total\": }");
    set_header(&r, "x-shopify-topic", "orders/create");
    sign_b64(&r, "x-shopify-hmac-sha256", "shpss_1");
    assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 400);
    assert_string_equal(err.error, "malformed_json");
    assert_non_null(strstr(err.detail, "line 2 column"));
    /* Duplicate keys: two values for one field is not an order we can trust. */
    set_body(&r, "{\"id\": 1, \"id\": 2}");
    sign_b64(&r, "x-shopify-hmac-sha256", "shpss_1");
    assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 400);
    free(r.body);
}

static void not_an_order(void **state)
{
    struct req r = {0};
    struct inbound_event ev;
    struct inbound_error err;

    /* Valid JSON, even a bare scalar, is a 422 and not a 400. */
    set_body(&r, "42");
    set_header(&r, "x-shopify-topic", "orders/create");
    sign_b64(&r, "x-shopify-hmac-sha256", "shpss_1");
    assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 422);
    assert_string_equal(err.error, "not_an_order");
    assert_null(ev.payload);
    free(r.body);

    shopify_req(&r, "shopify_order_create.json", "orders/create");
    {
        /* Break one line's quantity, keep the body signed. */
        char *q = strstr(r.body, "\"quantity\": 1,");
        assert_non_null(q);
        memcpy(q, "\"quantity\": 0,", 14);
        sign_b64(&r, "x-shopify-hmac-sha256", "shpss_1");
    }
    assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 422);
    assert_string_equal(err.detail, "field 'line_items[1].quantity' must be a positive integer");
    free(r.body);

    memset(&r, 0, sizeof(r));
    set_body(&r, "{\"id\": \"evt_1\", \"object\": \"event\"}");
    sign_stripe(&r, "whsec_st");
    assert_true(run(&stripe, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 422);
    assert_string_equal(err.detail, "field 'type' must be a string");
    free(r.body);
}

static void missing_topic(void **state)
{
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    shopify_req(&r, "shopify_order_create.json", "orders/create");
    del_header(&r, "x-shopify-topic");
    assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 400);
    assert_string_equal(err.error, "missing_topic");
    free(r.body);
}

/* Unsigned ids and topics that would fail a whole batch in the database are refused alone. */
static void unusable_ids_and_topics_are_400(void **state)
{
    static const char *const bad[] = {"",
                                      "orders/\xff"
                                      "create",
                                      "a b", "tab\there"};
    static const char *const headers[][2] = {
        {"x-shopify-topic", "orders/create"},
        {"x-shopify-webhook-id", "b54557e4"},
        {"x-shopify-event-id", "98880550"},
    };
    char long_id[202];
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    memset(long_id, 'a', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    for (size_t h = 0; h < sizeof(headers) / sizeof(headers[0]); h++) {
        for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
            shopify_req(&r, "shopify_order_create.json", "orders/create");
            set_header(&r, headers[h][0], i < sizeof(bad) / sizeof(bad[0]) ? bad[i] : long_id);
            assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
            assert_int_equal(err.http_status, 400);
            assert_string_equal(err.error, "invalid_header");
            assert_null(ev.payload);
            free(r.body);
        }
        /* 200 characters is still fine */
        shopify_req(&r, "shopify_order_create.json", "orders/create");
        long_id[200] = '\0';
        if (h > 0)
            set_header(&r, headers[h][0], long_id);
        long_id[200] = 'a';
        assert_int_equal(run(&shopify, &r, "application/json", &ev, &err), 0);
        inbound_event_clear(&ev);
        free(r.body);
    }

    woo_req(&r, "woocommerce_order_created.json",
            "order.\x01"
            "created");
    assert_true(run(&woo, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 400);
    free(r.body);

    memset(&r, 0, sizeof(r));
    r.body = read_fixture("standard_order_created.json", &r.len);
    sign_standard(&r, long_id);
    assert_true(run(&standard, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 400);
    free(r.body);
}

static void shopify_topics_and_dedupe(void **state)
{
    /* The fixture is a paid, unfulfilled, open order: it supports the first four only. */
    static const char *const map[][3] = {
        {"orders/create", "order.created", NULL},
        {"orders/updated", "order.updated", NULL},
        {"orders/paid", "order.paid", NULL},
        {"orders/partially_fulfilled", "order.updated", NULL},
        {"orders/cancelled", NULL, INBOUND_TOPIC_MISMATCH},
        {"orders/fulfilled", NULL, INBOUND_TOPIC_MISMATCH},
        {"refunds/create", NULL, INBOUND_TOPIC_MISMATCH},
        {"products/update", NULL, NULL},
        {"orders/delete", NULL, NULL},
    };
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        shopify_req(&r, "shopify_order_create.json", map[i][0]);
        assert_int_equal(run(&shopify, &r, "application/json", &ev, &err), 0);
        assert_string_equal(ev.topic, map[i][0]);
        assert_non_null(ev.payload);
        if (map[i][2] == NULL)
            assert_null(ev.ignored_reason);
        else
            assert_string_equal(ev.ignored_reason, map[i][2]);
        if (map[i][1] == NULL) {
            assert_null(ev.event_type);
            assert_null(ev.order);
        } else {
            assert_string_equal(ev.event_type, map[i][1]);
            assert_non_null(ev.order);
        }
        assert_string_equal(ev.dedupe_key, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
        inbound_event_clear(&ev);
        free(r.body);
    }

    shopify_req(&r, "shopify_refund_create.json", "refunds/create");
    del_header(&r, "x-shopify-webhook-id");
    set_header(&r, "x-shopify-event-id", "98880550-7158-44d4-b7cd-2c97c8a091b5");
    assert_int_equal(run(&shopify, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.refunded");
    assert_true(json_is_true(json_object_get(ev.order, "partial")));
    assert_string_equal(ev.dedupe_key, "refunds/create:98880550-7158-44d4-b7cd-2c97c8a091b5");
    inbound_event_clear(&ev);

    /* Neither header: the SHA-256 of the signed body. */
    del_header(&r, "x-shopify-event-id");
    assert_int_equal(run(&shopify, &r, "application/json", &ev, &err), 0);
    {
        unsigned char md[32];
        char want[7 + 65] = "sha256:";
        unsigned int n = 0;

        EVP_Digest(r.body, r.len, md, &n, EVP_sha256(), NULL);
        for (unsigned int i = 0; i < n; i++)
            sprintf(want + 7 + 2 * i, "%02x", md[i]);
        assert_string_equal(ev.dedupe_key, want);
    }
    inbound_event_clear(&ev);
    inbound_event_clear(&ev); /* idempotent */
    free(r.body);
}

static void woocommerce_topics_and_dedupe(void **state)
{
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    woo_req(&r, "woocommerce_order_created.json", "order.created");
    assert_int_equal(run(&woo, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.created");
    /* Never the delivery id: it repeats within a second. */
    assert_string_equal(ev.dedupe_key, "order:727:2026-01-02T03:04:09");
    assert_string_equal(json_string_value(json_object_get(ev.order, "external_id")), "727");
    inbound_event_clear(&ev);
    set_header(&r, "x-wc-webhook-topic", "order.updated");
    assert_int_equal(run(&woo, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.updated");
    inbound_event_clear(&ev);
    set_header(&r, "x-wc-webhook-topic", "order.restored");
    assert_int_equal(run(&woo, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.updated");
    inbound_event_clear(&ev);
    set_header(&r, "x-wc-webhook-topic", "product.updated");
    assert_int_equal(run(&woo, &r, "application/json", &ev, &err), 0);
    assert_null(ev.event_type);
    assert_null(ev.order);
    assert_int_equal(strncmp(ev.dedupe_key, "sha256:", 7), 0);
    inbound_event_clear(&ev);
    free(r.body);

    woo_req(&r, "woocommerce_order_cancelled.json", "order.updated");
    assert_int_equal(run(&woo, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.cancelled");
    assert_string_equal(ev.dedupe_key, "order:727:2026-01-03T10:00:00");
    inbound_event_clear(&ev);
    free(r.body);

    memset(&r, 0, sizeof(r));
    set_body(&r, "{\"id\":727}");
    set_header(&r, "x-wc-webhook-topic", "order.deleted");
    sign_b64(&r, "x-wc-webhook-signature", "wc_1");
    assert_int_equal(run(&woo, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.cancelled");
    assert_int_equal(strncmp(ev.dedupe_key, "sha256:", 7), 0);
    assert_string_equal(json_string_value(json_object_get(ev.order, "status")), "cancelled");
    inbound_event_clear(&ev);
    free(r.body);
}

/* The request `r` with `body` (taken) as its JSON text, re-signed as Shopify would. */
static void shopify_body(struct req *r, json_t *body, const char *topic)
{
    char *text = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    assert_non_null(text);
    memset(r, 0, sizeof(*r));
    r->body = text;
    r->len = strlen(text);
    set_header(r, "x-shopify-topic", topic);
    set_header(r, "x-shopify-webhook-id", "forged-or-not");
    sign_b64(r, "x-shopify-hmac-sha256", "shpss_1");
}

static json_t *fixture_json(const char *name)
{
    size_t len;
    char *text = read_fixture(name, &len);
    json_t *j = json_loadb(text, len, 0, NULL);

    free(text);
    assert_non_null(j);
    return j;
}

/* Runs a request expected to parse; returns the event (clear it) after the common checks. */
static void expect_event(const struct inbound_source *src, struct req *r, const char *event_type,
                         const char *status, struct inbound_event *ev)
{
    struct inbound_error err;

    assert_int_equal(run(src, r, "application/json", ev, &err), 0);
    assert_non_null(ev->topic);
    assert_non_null(ev->dedupe_key);
    if (event_type == NULL) {
        /* recorded, emits nothing: the database contract for an ignored event */
        assert_null(ev->event_type);
        assert_null(ev->order);
        assert_string_equal(ev->ignored_reason, INBOUND_TOPIC_MISMATCH);
        assert_true(ev->ignored_detail[0] != '\0');
        return;
    }
    assert_null(ev->ignored_reason);
    assert_string_equal(ev->event_type, event_type);
    if (status != NULL)
        assert_string_equal(json_string_value(json_object_get(ev->order, "status")), status);
}

static void shopify_topic_must_agree_with_signed_body(void **state)
{
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;
    json_t *b;

    /* The attack: an open order's signed body replayed as orders/cancelled. */
    shopify_body(&r, fixture_json("shopify_order_create.json"), "orders/cancelled");
    expect_event(&shopify, &r, NULL, NULL, &ev);
    assert_string_equal(ev.ignored_detail,
                        "topic 'orders/cancelled' needs status 'cancelled' but the signed body's "
                        "is 'open'");
    assert_string_equal(ev.topic, "orders/cancelled");
    assert_string_equal(ev.dedupe_key, "forged-or-not");
    inbound_event_clear(&ev);
    free(r.body);

    /* cancelled_at set: orders/cancelled holds; and any order topic sees it cancelled. */
    b = fixture_json("shopify_order_create.json");
    json_object_set_new(b, "cancelled_at", json_string("2026-01-03T10:00:00-05:00"));
    shopify_body(&r, json_deep_copy(b), "orders/cancelled");
    expect_event(&shopify, &r, "order.cancelled", "cancelled", &ev);
    inbound_event_clear(&ev);
    free(r.body);
    shopify_body(&r, b, "orders/updated");
    expect_event(&shopify, &r, "order.updated", "cancelled", &ev);
    inbound_event_clear(&ev);
    free(r.body);

    /* orders/paid needs financial_status paid. */
    b = fixture_json("shopify_order_create.json");
    json_object_set_new(b, "financial_status", json_string("pending"));
    shopify_body(&r, json_deep_copy(b), "orders/paid");
    expect_event(&shopify, &r, NULL, NULL, &ev);
    inbound_event_clear(&ev);
    free(r.body);
    shopify_body(&r, b, "orders/create");
    expect_event(&shopify, &r, "order.created", "open", &ev);
    assert_string_equal(json_string_value(json_object_get(ev.order, "financial_status")),
                        "pending");
    inbound_event_clear(&ev);
    free(r.body);

    /* orders/fulfilled needs fulfillment_status fulfilled. */
    b = fixture_json("shopify_order_create.json");
    json_object_set_new(b, "fulfillment_status", json_string("partial"));
    shopify_body(&r, b, "orders/fulfilled");
    expect_event(&shopify, &r, NULL, NULL, &ev);
    inbound_event_clear(&ev);
    free(r.body);
    b = fixture_json("shopify_order_create.json");
    json_object_set_new(b, "fulfillment_status", json_string("fulfilled"));
    shopify_body(&r, b, "orders/fulfilled");
    expect_event(&shopify, &r, "order.fulfilled", "open", &ev);
    inbound_event_clear(&ev);
    free(r.body);

    /* A refund is only a refund: not an order under any orders/ topic. */
    shopify_body(&r, fixture_json("shopify_refund_create.json"), "orders/cancelled");
    expect_event(&shopify, &r, NULL, NULL, &ev);
    assert_non_null(strstr(ev.ignored_detail, "the body is a refund"));
    inbound_event_clear(&ev);
    free(r.body);
    shopify_body(&r, fixture_json("shopify_refund_create.json"), "refunds/create");
    expect_event(&shopify, &r, "order.refunded", NULL, &ev);
    inbound_event_clear(&ev);
    free(r.body);

    /* A body that is no order at all stays a 422, whatever the topic. */
    shopify_body(&r, json_pack("{s:s}", "hello", "world"), "orders/cancelled");
    assert_true(run(&shopify, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 422);
    free(r.body);
}

static void woocommerce_body(struct req *r, json_t *body, const char *topic)
{
    char *text = json_dumps(body, JSON_COMPACT);

    json_decref(body);
    assert_non_null(text);
    memset(r, 0, sizeof(*r));
    r->body = text;
    r->len = strlen(text);
    set_header(r, "x-wc-webhook-topic", topic);
    sign_b64(r, "x-wc-webhook-signature", "wc_1");
}

static void woocommerce_topic_must_agree_with_signed_body(void **state)
{
    static const struct {
        const char *fixture; /* NULL: the deletion notice {"id": 727} */
        const char *status;  /* replaces the body's status when not NULL */
        const char *topic;
        const char *event_type; /* NULL: topic mismatch */
        const char *order_status;
    } cases[] = {
        {"woocommerce_order_created.json", NULL, "order.created", "order.created", "open"},
        {"woocommerce_order_created.json", NULL, "order.updated", "order.updated", "open"},
        {"woocommerce_order_created.json", NULL, "order.restored", "order.updated", "open"},
        /* the attack: a live order's signed body replayed as a deletion */
        {"woocommerce_order_created.json", NULL, "order.deleted", NULL, NULL},
        {"woocommerce_order_created.json", "on-hold", "order.deleted", NULL, NULL},
        {"woocommerce_order_cancelled.json", NULL, "order.deleted", "order.cancelled", "cancelled"},
        {"woocommerce_order_created.json", "trash", "order.deleted", "order.cancelled",
         "cancelled"},
        /* no cancel topic: the signed status decides */
        {"woocommerce_order_cancelled.json", NULL, "order.updated", "order.cancelled", "cancelled"},
        {"woocommerce_order_cancelled.json", NULL, "order.created", "order.created", "cancelled"},
        {"woocommerce_order_created.json", "refunded", "order.updated", "order.refunded", "closed"},
        /* a deletion notice is only ever a deletion */
        {NULL, NULL, "order.deleted", "order.cancelled", "cancelled"},
        {NULL, NULL, "order.updated", NULL, NULL},
        {NULL, NULL, "order.created", NULL, NULL},
        {NULL, NULL, "order.restored", NULL, NULL},
    };
    struct req r;
    struct inbound_event ev;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *b = cases[i].fixture != NULL ? fixture_json(cases[i].fixture)
                                             : json_pack("{s:i}", "id", 727);

        if (cases[i].status != NULL)
            json_object_set_new(b, "status", json_string(cases[i].status));
        woocommerce_body(&r, b, cases[i].topic);
        expect_event(&woo, &r, cases[i].event_type, cases[i].order_status, &ev);
        inbound_event_clear(&ev);
        free(r.body);
    }
}

static void signed_types_ignore_topic_headers(void **state)
{
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    /* Stripe: the type is in the signed body; platform topic headers mean nothing. */
    stripe_req(&r, "stripe_checkout_session_completed.json");
    set_header(&r, "x-shopify-topic", "orders/cancelled");
    set_header(&r, "x-wc-webhook-topic", "order.deleted");
    expect_event(&stripe, &r, "order.created", "open", &ev);
    assert_string_equal(ev.topic, "checkout.session.completed");
    inbound_event_clear(&ev);
    /* ...and changing the type means changing signed bytes. */
    {
        char *t = strstr(r.body, "checkout.session.completed"), *nb;
        int n;

        assert_non_null(t);
        n = asprintf(&nb, "%.*scheckout.session.expired%s", (int)(t - r.body), r.body,
                     t + strlen("checkout.session.completed"));
        assert_true(n > 0);
        free(r.body);
        r.body = nb;
        r.len = (size_t)n;
    }
    assert_true(run(&stripe, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 401);
    free(r.body);

    /* Standard Webhooks: likewise; the webhook-id is signed too. */
    memset(&r, 0, sizeof(r));
    r.body = read_fixture("standard_order_created.json", &r.len);
    sign_standard(&r, "msg_typed");
    set_header(&r, "x-shopify-topic", "orders/cancelled");
    expect_event(&standard, &r, "order.created", NULL, &ev);
    inbound_event_clear(&ev);
    set_header(&r, "webhook-id", "msg_replayed");
    assert_true(run(&standard, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 401);
    free(r.body);
}

static void stripe_types_and_dedupe(void **state)
{
    static const char *const map[][2] = {
        {"checkout.session.completed", "order.created"},
        {"checkout.session.async_payment_succeeded", "order.paid"},
        {"checkout.session.async_payment_failed", "order.updated"},
        {"checkout.session.expired", "order.cancelled"},
        {"customer.created", NULL},
    };
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        char *t;

        stripe_req(&r, "stripe_checkout_session_completed.json");
        t = strstr(r.body, "\"checkout.session.completed\"");
        assert_non_null(t);
        /* Rewrite the type in place, then sign what is sent. */
        {
            char *nb;
            int n = asprintf(&nb, "%.*s\"%s\"%s", (int)(t - r.body), r.body, map[i][0],
                             t + strlen("\"checkout.session.completed\""));
            assert_true(n > 0);
            free(r.body);
            r.body = nb;
            r.len = (size_t)n;
        }
        sign_stripe(&r, "whsec_st");
        assert_int_equal(run(&stripe, &r, "application/json; charset=utf-8", &ev, &err), 0);
        assert_string_equal(ev.topic, map[i][0]);
        assert_string_equal(ev.dedupe_key, "evt_1QfR2kLkdIwHu7ixCxWpL0aB");
        if (map[i][1] == NULL) {
            assert_null(ev.event_type);
            assert_null(ev.order);
        } else {
            assert_string_equal(ev.event_type, map[i][1]);
            assert_string_equal(json_string_value(json_object_get(ev.order, "external_id")),
                                "ORD-2026-000417");
        }
        inbound_event_clear(&ev);
        free(r.body);
    }

    stripe_req(&r, "stripe_charge_refunded.json");
    assert_int_equal(run(&stripe, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.refunded");
    assert_string_equal(ev.dedupe_key, "evt_3QfS9xLkdIwHu7ix1RfNdQ2c");
    assert_true(json_is_true(json_object_get(ev.order, "partial")));
    inbound_event_clear(&ev);
    free(r.body);
}

static void standard_types_and_dedupe(void **state)
{
    struct req r;
    struct inbound_event ev;
    struct inbound_error err;

    memset(&r, 0, sizeof(r));
    r.body = read_fixture("standard_order_created.json", &r.len);
    sign_standard(&r, "msg_2b5d7fzJ4Qk");
    assert_int_equal(run(&standard, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.created");
    assert_string_equal(ev.topic, "order.created");
    assert_string_equal(ev.dedupe_key, "msg_2b5d7fzJ4Qk");
    /* The source is ours, whatever the body says. */
    assert_string_equal(json_string_value(json_object_get(ev.order, "source")), "std");
    inbound_event_clear(&ev);
    free(r.body);

    memset(&r, 0, sizeof(r));
    r.body = read_fixture("standard_thin.json", &r.len);
    sign_standard(&r, "msg_thin1");
    assert_int_equal(run(&standard, &r, "application/json", &ev, &err), 0);
    assert_string_equal(ev.event_type, "order.updated");
    assert_true(json_is_true(json_object_get(ev.order, "partial")));
    inbound_event_clear(&ev);

    set_body(&r, "{\"type\": \"store/order/statusUpdated\", \"data\": {\"id\": 1}}");
    sign_standard(&r, "msg_other");
    assert_int_equal(run(&standard, &r, "application/json", &ev, &err), 0);
    assert_null(ev.event_type);
    assert_null(ev.order);
    assert_string_equal(ev.dedupe_key, "msg_other");
    inbound_event_clear(&ev);

    /* Stale: 401 with the distance in the detail (the timestamp is signed: re-sign). */
    {
        char sig[VERIFY_STANDARD_SIG_SIZE];

        assert_int_equal(verify_sign_standard("msg_other", 1767322000, r.body, r.len, std_secret,
                                              sig, sizeof(sig)),
                         0);
        set_header(&r, "webhook-timestamp", "1767322000");
        set_header(&r, "webhook-signature", sig);
    }
    assert_true(run(&standard, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 401);
    assert_string_equal(err.detail, "webhook-timestamp is 1047 s away from now (tolerance 300 s)");
    free(r.body);
}

static void unusable_secret_is_500(void **state)
{
    const struct inbound_source bad = {"std", standard.kind, {"whsec_***", NULL}, 0, {NULL, NULL}};
    struct req r = {0};
    struct inbound_event ev;
    struct inbound_error err;

    set_body(&r, "{}");
    sign_standard(&r, "msg_1");
    assert_true(run(&bad, &r, "application/json", &ev, &err) < 0);
    assert_int_equal(err.http_status, 500);
    assert_null(strstr(err.detail, "***"));
    free(r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(woocommerce_ping),
        cmocka_unit_test(signature_first),
        cmocka_unit_test(content_type),
        cmocka_unit_test(malformed_json),
        cmocka_unit_test(not_an_order),
        cmocka_unit_test(missing_topic),
        cmocka_unit_test(unusable_ids_and_topics_are_400),
        cmocka_unit_test(shopify_topics_and_dedupe),
        cmocka_unit_test(woocommerce_topics_and_dedupe),
        cmocka_unit_test(shopify_topic_must_agree_with_signed_body),
        cmocka_unit_test(woocommerce_topic_must_agree_with_signed_body),
        cmocka_unit_test(signed_types_ignore_topic_headers),
        cmocka_unit_test(stripe_types_and_dedupe),
        cmocka_unit_test(standard_types_and_dedupe),
        cmocka_unit_test(unusable_secret_is_500),
    };
    return cmocka_run_group_tests(tests, setup_kinds, NULL);
}
