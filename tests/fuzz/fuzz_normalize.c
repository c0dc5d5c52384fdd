/*
 * libFuzzer target for everything after the signature check: arbitrary bytes
 * as the body of a correctly signed webhook through inbound_parse (content
 * type, JSON, topic mapping, dedupe key, normalize), for each source kind.
 * The fuzzer signs its own input, so the verify gate lets everything through
 * and the parsing behind it is what gets explored.
 *
 * Input: byte 0 picks the source kind and the topic; the rest is the body.
 * Checks the contract too: on success, an order (when present) has string
 * source/external_id/updated_at and a boolean partial, and nothing leaks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "inbound.h"
#include "source_kind.h"
#include "verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET_STD "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SECRET     "fuzz-secret"
#define NOW        1767323047

struct headers {
    const char *names[6];
    char values[6][160];
    int n;
};

static const char *get_header(void *ctx, const char *name)
{
    struct headers *h = ctx;

    for (int i = 0; i < h->n; i++) {
        if (strcmp(h->names[i], name) == 0)
            return h->values[i];
    }
    return NULL;
}

static void add(struct headers *h, const char *name, const char *value)
{
    h->names[h->n] = name;
    snprintf(h->values[h->n], sizeof(h->values[h->n]), "%s", value);
    h->n++;
}

static void hmac(const void *msg, size_t len, unsigned char mac[32])
{
    unsigned int n = 0;

    HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET), msg, len, mac, &n);
}

/* What each platform puts on the request, as the platform computes it. */
static void sign_body_b64(const char *header, const char *body, size_t len, struct headers *h)
{
    unsigned char mac[32];
    char b64[64];

    hmac(body, len, mac);
    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    add(h, header, b64);
}

static void sign_shopify(const char *body, size_t len, struct headers *h)
{
    sign_body_b64("x-shopify-hmac-sha256", body, len, h);
}

static void sign_woocommerce(const char *body, size_t len, struct headers *h)
{
    sign_body_b64("x-wc-webhook-signature", body, len, h);
}

static void sign_stripe(const char *body, size_t len, struct headers *h)
{
    size_t prefix = strlen("1767323047.");
    char *msg = malloc(prefix + len + 1);
    unsigned char mac[32];
    char v[160];
    int off;

    if (msg == NULL)
        abort();
    memcpy(msg, "1767323047.", prefix);
    memcpy(msg + prefix, body, len);
    hmac(msg, prefix + len, mac);
    free(msg);
    off = snprintf(v, sizeof(v), "t=%d,v1=", NOW);
    for (int i = 0; i < 32; i++)
        off += snprintf(v + off, sizeof(v) - (size_t)off, "%02x", mac[i]);
    add(h, "stripe-signature", v);
}

static void sign_standard(const char *body, size_t len, struct headers *h)
{
    char v[160];

    if (verify_sign_standard("msg_fuzz", NOW, body, len, SECRET_STD, v, sizeof(v)) != 0)
        abort();
    add(h, "webhook-id", "msg_fuzz");
    add(h, "webhook-timestamp", "1767323047");
    add(h, "webhook-signature", v);
}

/*
 * The platforms this target plays, by kind name: a kind of the table that is
 * not here makes every input abort, so a new platform cannot go unfuzzed.
 */
static const struct platform {
    const char *kind;
    const char *secret;
    const char *topic_header; /* NULL: the type is in the signed body */
    const char *topics[4];
    void (*sign)(const char *body, size_t len, struct headers *h);
} platforms[] = {
    {"shopify",
     SECRET,
     "x-shopify-topic",
     {"orders/create", "refunds/create", "orders/paid", "products/update"},
     sign_shopify},
    {"woocommerce",
     SECRET,
     "x-wc-webhook-topic",
     {"order.created", "order.updated", "order.deleted", "product.created"},
     sign_woocommerce},
    {"stripe", SECRET, NULL, {NULL}, sign_stripe},
    {"standard", SECRET_STD, NULL, {NULL}, sign_standard},
};

static const struct platform *platform_of(const struct source_kind *kind)
{
    for (size_t i = 0; i < sizeof(platforms) / sizeof(platforms[0]); i++) {
        if (strcmp(platforms[i].kind, kind->name) == 0)
            return &platforms[i];
    }
    abort();
}

static void check(const struct inbound_event *ev)
{
    const json_t *o = ev->order;

    if (ev->dedupe_key == NULL || ev->topic == NULL || ev->payload == NULL)
        abort();
    if (ev->event_type == NULL && o != NULL)
        abort();
    if (o == NULL)
        return;
    if (!json_is_string(json_object_get(o, "source")) ||
        !json_is_string(json_object_get(o, "external_id")) ||
        !json_is_string(json_object_get(o, "updated_at")) ||
        !json_is_boolean(json_object_get(o, "partial")))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n_kinds = 0;
    const struct platform *pl;
    struct inbound_source src = {"fuzz", NULL, {SECRET, NULL}, 0, {NULL, NULL}};
    struct headers h = {0};
    struct inbound_event ev;
    struct inbound_error err;
    const char *body;
    int rc;

    if (size == 0)
        return 0;
    while (source_kinds[n_kinds] != NULL)
        n_kinds++;
    src.kind = source_kinds[data[0] % n_kinds];
    pl = platform_of(src.kind);
    src.secrets[0] = pl->secret;
    body = (const char *)data + 1;
    size--;
    if (pl->topic_header != NULL)
        add(&h, pl->topic_header, pl->topics[(data[0] >> 2) % 4]);
    /* One in eight inputs goes unsigned, so the ping path is explored too. */
    if ((data[0] >> 4) % 8 != 0)
        pl->sign(body, size, &h);
    rc = inbound_parse(&src, get_header, &h, "application/json", body, size, NOW, &ev, &err);
    if (rc == 0) {
        check(&ev);
        inbound_event_clear(&ev);
    } else if (rc < 0) {
        if (err.http_status < 400 || err.error == NULL || ev.payload != NULL || ev.order != NULL)
            abort();
    }
    return 0;
}
