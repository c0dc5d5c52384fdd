/*
 * source_kind: everything ordersync knows about one sending platform, as one
 * const struct per platform (source_<name>.c), the way curl has one struct
 * Curl_handler per protocol: how its webhooks are signed, where their topic
 * and dedupe key come from, which topics are about orders and what each
 * claims, how its bodies become the canonical order, and how a polled list
 * of its orders is read. inbound (webhooks) and the poller go through these
 * hooks and never name a platform, so they cannot drift apart.
 *
 * The table of kinds, and the lookup by the name stored in sources.kind, is
 * source_kind.c. A new platform is a new source_<name>.c and its line there.
 *
 * Every hook is pure (no I/O; the clock is a parameter) and takes its
 * pointer arguments borrowed.
 */
#ifndef OS_SOURCE_KIND_H
#define OS_SOURCE_KIND_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

#include "hmac.h"
#include "verify.h"

/* Size of a detail buffer (matches inbound_error.detail). */
#define SOURCE_DETAIL_SIZE 256

/*
 * The longest value used as a topic, a dedupe key or an order reference. Such values must
 * be short printable ASCII, as every platform sends them: anything else
 * would fail the whole group-commit batch it rides in, other senders'
 * webhooks included (bytes that are not UTF-8 cannot go into the batch's
 * JSON, and a key over ~2.7 kB does not fit the dedupe index, SQLSTATE 54000).
 */
#define SOURCE_MAX_TOKEN_LEN 200

/* One webhook request as a kind sees it. */
struct source_request {
    const char *const *secrets; /* [2]: current and, during a rotation, previous (may be NULL) */
    int tolerance_s;            /* of signed timestamps; <= 0 means VERIFY_DEFAULT_TOLERANCE_S */
    verify_get_header_fn get_header; /* lower-case name → value or NULL */
    void *ctx;                       /* get_header's */
    const char *body;                /* the raw bytes as received; never NULL */
    size_t len;
    time_t now;
    /*
     * NULL, or [2]: secrets[i] keyed once as an HMAC-SHA256 key (store.h),
     * for the kinds that key with the secret as given; where an entry is
     * NULL the secret is keyed per request, with the same result.
     */
    struct hmac_sha256 *const *keys;
};

/* Why a kind refuses a signed request; inbound answers each with its HTTP status. */
enum source_refusal {
    SOURCE_MISSING_TOPIC,  /* 400 missing_topic: the topic header is absent */
    SOURCE_INVALID_HEADER, /* 400 invalid_header: a topic or id header is not a short token */
    SOURCE_NOT_AN_ORDER,   /* 422 not_an_order: the signed body lacks what names the event */
};

struct source_refused {
    enum source_refusal why;
    char detail[SOURCE_DETAIL_SIZE]; /* for the sender; never a secret */
};

/*
 * A topic → event type rule. Shopify and WooCommerce sign the body but not
 * the topic header, so a validly signed body replayed under another topic
 * (an open order as orders/cancelled) must not become that event: the header
 * only chooses among the events the signed body supports. A rule whose event
 * claims a state names the canonical field that must show it (`field` ==
 * `value`); whether the body is an order, a refund or a deletion notice at
 * all is the normalize hook's to check (-EPROTO).
 */
struct source_topic {
    const char *topic;      /* as the sender names it; NULL ends a list */
    const char *event_type; /* "order.created", ... (static) */
    const char *field;      /* NULL: any body normalize accepts for this topic */
    const char *value;
};

struct source_kind {
    const char *name; /* sources.kind */

    /*
     * Optional. Is this an unsigned request the platform sends to check the
     * URL, to be answered exactly 200 with nothing written? Asked before the
     * signature, so it must recognize the request narrowly.
     */
    bool (*is_ping)(const struct source_request *req);

    /* The signature on the raw body: VERIFY_OK, or why not with detail filled. */
    enum verify_result (*verify)(const struct source_request *req, char *detail, size_t size);

    /*
     * The sender's topic of a verified request whose body parsed as
     * `payload`: *topic borrowed from a header or from payload. 0, or
     * -EINVAL with *why filled.
     */
    int (*topic)(const struct source_request *req, const json_t *payload, const char **topic,
                 struct source_refused *why);

    /*
     * The key that recognizes a redelivery of the same webhook: *key a new
     * allocation. 0, -EINVAL with *why filled, or -ENOMEM.
     */
    int (*dedupe_key)(const struct source_request *req, const json_t *payload, const char *topic,
                      char **key, struct source_refused *why);

    /* The topics that are about orders; a topic not listed is recorded and emits nothing. */
    const struct source_topic *topics;

    /*
     * Optional. The event a rule selects for this signed body, where the
     * body can say more than the topic (WooCommerce sends a cancellation as
     * order.updated); NULL means rule->event_type.
     */
    const char *(*event_of)(const struct source_topic *rule, const json_t *payload);

    /*
     * The platform's body → the canonical order (see normalize_internal.h
     * for the canonical shape). `now` dates a body that carries no time.
     * Returns 0 with *out a new reference; -EINVAL when the body is valid
     * JSON but not a usable order (err names the offending field by its JSON
     * path: the sender can fix that); -EPROTO when it is usable but not the
     * kind of body `topic` names (the unsigned topic is wrong, not the
     * body); or -ENOMEM. A topic never sets a field of the order.
     */
    int (*normalize)(const char *source, const char *topic, const json_t *payload, time_t now,
                     json_t **out, char *err, size_t err_size);

    /*
     * Optional: NULL when the platform has no list of orders to poll. One
     * element of a polled list → the canonical order, as normalize returns.
     */
    int (*poll_order)(const char *source, const json_t *order, time_t now, json_t **out, char *err,
                      size_t err_size);
};

/* Every kind, NULL-terminated (source_kind.c). */
extern const struct source_kind *const source_kinds[];

/* The kind named `name` (as stored in sources.kind): 0, or -EINVAL with *out untouched. */
int source_kind_parse(const char *name, const struct source_kind **out)
    __attribute__((warn_unused_result));

#endif
