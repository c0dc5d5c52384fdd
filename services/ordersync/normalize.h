/*
 * normalize: a source's parsed webhook body → the canonical order of
 * schema/order.schema.json. One function per source kind, each in its own
 * file (normalize_<kind>.c); shared conversions (money, time, ids, the error
 * path) live in normalize.c. Pure: no I/O, no clock but the one passed in.
 *
 * Every function returns 0 with *out set to a new reference, -EINVAL when the
 * body is valid JSON but not a usable order (err then names the offending
 * field by its JSON path, e.g. "field 'line_items[2].quantity' must be a
 * positive integer": the HTTP layer answers 422 with it), -EPROTO when the
 * body is usable but is not the kind of body `topic` names (err says why: the
 * topic, which the platform does not sign, is wrong, not the body), or -ENOMEM.
 * All pointer arguments but out are borrowed.
 *
 * State comes only from the body: a topic (an unsigned header for Shopify and
 * WooCommerce) never sets a field of the order; it is only checked against
 * what the body is.
 *
 * The canonical order: source, external_id, number, status, financial_status,
 * fulfillment_status, currency, total, subtotal, tax, shipping, refunded,
 * customer_email, shipping_address, lines, created_at, updated_at, partial.
 * A partial order (partial = true) carries only source, external_id,
 * updated_at, partial and the fields the payload really knows; it is merged
 * into the stored order instead of replacing it.
 */
#ifndef ORDERSYNC_NORMALIZE_H
#define ORDERSYNC_NORMALIZE_H

#include <stddef.h>
#include <time.h>

#include <jansson.h>

/* Size of the error buffer callers should pass (matches inbound_error.detail). */
#define NORMALIZE_ERR_SIZE 256

/*
 * Shopify order (orders/create, updated, paid, cancelled, fulfilled,
 * partially_fulfilled) or, when topic is "refunds/create", a refund object
 * (→ partial order keyed by its order_id). A body that is plainly the other
 * kind (a refund under an orders/ topic, an order under refunds/create) is
 * -EPROTO.
 */
int normalize_shopify(const char *source, const char *topic, const json_t *payload, json_t **out,
                      char *err, size_t err_size);

/*
 * WooCommerce order (REST API v3 shape). For a deleted resource WooCommerce
 * sends only {"id": n}: that becomes a partial cancelled order dated
 * `received_at`, since the body carries no date; under any topic but
 * order.deleted such a body is -EPROTO.
 */
int normalize_woocommerce(const char *source, const char *topic, const json_t *payload,
                          time_t received_at, json_t **out, char *err, size_t err_size);

/*
 * Stripe Event wrapping a checkout.session (full order, no lines), a
 * payment_intent or a charge (partial orders).
 */
int normalize_stripe(const char *source, const json_t *event, json_t **out, char *err,
                     size_t err_size);

/* Standard Webhooks body {"type", "timestamp", "data"}: data canonical or thin {"id"}. */
int normalize_standard(const char *source, const json_t *body, json_t **out, char *err,
                       size_t err_size);

#endif
