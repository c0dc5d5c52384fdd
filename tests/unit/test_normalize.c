/*
 * Unit tests for normalize, each kind's hook (source_<name>.c) with the
 * conversions of normalize.c: each fixture of tests/fixtures gives exactly
 * the canonical fields expected, amounts stay exact (big ids, WooCommerce's
 * numeric prices, Stripe's minor units incl. zero- and three-decimal
 * currencies), and a payload that is not an order names the offending field.
 */
#include <errno.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <inttypes.h>

#include "normalize_internal.h"
#include "source_kind.h"

#define NORMALIZE_ERR_SIZE SOURCE_DETAIL_SIZE

/* A kind's normalize hook, reached as inbound reaches it: by the kind's name. */
static int normalize(const char *kind, const char *source, const char *topic, const json_t *p,
                     time_t now, json_t **out, char *err, size_t size)
{
    const struct source_kind *k = NULL;

    if (source_kind_parse(kind, &k) < 0)
        fail_msg("no source kind %s", kind);
    return k->normalize(source, topic, p, now, out, err, size);
}

static int normalize_shopify(const char *source, const char *topic, const json_t *p, json_t **out,
                             char *err, size_t size)
{
    return normalize("shopify", source, topic, p, 0, out, err, size);
}

static int normalize_woocommerce(const char *source, const char *topic, const json_t *p,
                                 time_t received_at, json_t **out, char *err, size_t size)
{
    return normalize("woocommerce", source, topic, p, received_at, out, err, size);
}

/* Stripe and Standard Webhooks bodies carry their type: the topic changes nothing. */
static int normalize_stripe(const char *source, const json_t *p, json_t **out, char *err,
                            size_t size)
{
    return normalize("stripe", source, "charge.refunded", p, 0, out, err, size);
}

static int normalize_standard(const char *source, const json_t *p, json_t **out, char *err,
                              size_t size)
{
    return normalize("standard", source, "order.cancelled", p, 0, out, err, size);
}

static json_t *fixture(const char *name)
{
    char path[512];
    json_error_t je;
    json_t *j;

    snprintf(path, sizeof(path), "%s/%s", FIXTURES_DIR, name);
    /* As inbound parses: integers stay json_int_t, never doubles. */
    j = json_load_file(path, JSON_DECODE_ANY, &je);
    if (j == NULL)
        fail_msg("%s: %s", path, je.text);
    return j;
}

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &je);

    if (j == NULL)
        fail_msg("test JSON: %s", je.text);
    return j;
}

static const char *str(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    if (!json_is_string(v))
        fail_msg("field %s is not a string", key);
    return json_string_value(v);
}

static const char *line_str(const json_t *o, size_t i, const char *key)
{
    return str(json_array_get(json_object_get(o, "lines"), i), key);
}

static void assert_null_field(const json_t *o, const char *key)
{
    assert_true(json_is_null(json_object_get(o, key)));
}

static void shopify_order_create(void **state)
{
    json_t *p = fixture("shopify_order_create.json"), *o = NULL;
    const json_t *a, *l;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_shopify("shop-eu", "orders/create", p, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 18);
    assert_string_equal(str(o, "source"), "shop-eu");
    /* Beyond 2^53: a double would have printed 5678901234567890432. */
    assert_string_equal(str(o, "external_id"), "5678901234567890123");
    assert_string_equal(str(o, "number"), "#1001");
    assert_string_equal(str(o, "status"), "open");
    assert_string_equal(str(o, "financial_status"), "paid");
    assert_string_equal(str(o, "fulfillment_status"), "unfulfilled");
    assert_string_equal(str(o, "currency"), "USD");
    assert_string_equal(str(o, "total"), "86.46");
    assert_string_equal(str(o, "subtotal"), "74.97");
    assert_string_equal(str(o, "tax"), "6.49");
    assert_string_equal(str(o, "shipping"), "5.00");
    assert_string_equal(str(o, "refunded"), "0.00");
    assert_string_equal(str(o, "customer_email"), "jon@example.com");
    a = json_object_get(o, "shipping_address");
    assert_string_equal(str(a, "name"), "Jon Snow");
    assert_string_equal(str(a, "line1"), "123 Wall Street");
    assert_string_equal(str(a, "line2"), "Apt 4");
    assert_string_equal(str(a, "city"), "Castle Black");
    assert_string_equal(str(a, "region"), "NY");
    assert_string_equal(str(a, "postal_code"), "10005");
    assert_string_equal(str(a, "country"), "US");
    l = json_object_get(o, "lines");
    assert_int_equal(json_array_size(l), 3);
    assert_string_equal(line_str(o, 0, "sku"), "SOCK-GRY-M");
    assert_string_equal(line_str(o, 0, "title"), "Wool Socks");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(l, 0), "quantity")), 2);
    assert_string_equal(line_str(o, 0, "unit_price"), "12.99");
    assert_string_equal(line_str(o, 1, "unit_price"), "45.00");
    assert_true(json_is_null(json_object_get(json_array_get(l, 2), "sku")));
    /* "+01:00" offsets become UTC. */
    assert_string_equal(str(o, "created_at"), "2026-01-02T03:04:05Z");
    assert_string_equal(str(o, "updated_at"), "2026-01-02T03:04:07Z");
    assert_true(json_is_false(json_object_get(o, "partial")));
    json_decref(o);
    json_decref(p);
}

static void shopify_states_and_refunds(void **state)
{
    json_t *p = fixture("shopify_order_create.json"), *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    json_object_set_new(p, "cancelled_at", json_string("2026-01-03T10:00:00-05:00"));
    json_object_set_new(p, "closed_at", json_string("2026-01-03T10:00:00-05:00"));
    json_object_set_new(p, "financial_status", json_string("partially_refunded"));
    json_object_set_new(p, "fulfillment_status", json_string("partial"));
    json_object_set_new(p, "email", json_null());
    json_object_set_new(
        p, "refunds",
        parse("[{\"transactions\": [{\"kind\": \"refund\", \"status\": \"success\", \"amount\": "
              "\"10.5\"}, {\"kind\": \"refund\", \"status\": \"failure\", \"amount\": \"99.00\"}]},"
              " {\"transactions\": [{\"kind\": \"refund\", \"status\": \"success\", \"amount\": "
              "\"3.55\"}]}]"));
    assert_int_equal(normalize_shopify("s", "orders/cancelled", p, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "status"), "cancelled");
    assert_string_equal(str(o, "financial_status"), "partially_refunded");
    assert_string_equal(str(o, "fulfillment_status"), "partial");
    assert_string_equal(str(o, "refunded"), "14.05");
    /* No top-level email: the customer's. */
    assert_string_equal(str(o, "customer_email"), "jon@example.com");
    json_decref(o);
    json_decref(p);
}

static void shopify_refund_is_partial(void **state)
{
    json_t *p = fixture("shopify_refund_create.json"), *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_shopify("s", "refunds/create", p, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 4);
    assert_string_equal(str(o, "external_id"), "5678901234567890123");
    assert_string_equal(str(o, "updated_at"), "2026-01-03T15:15:00Z");
    assert_true(json_is_true(json_object_get(o, "partial")));
    json_decref(o);
    json_decref(p);
}

static void expect_error(int rc, const char *err, const char *want)
{
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(err, want);
}

static void shopify_not_an_order(void **state)
{
    json_t *p = fixture("shopify_order_create.json"), *o = NULL;
    json_t *line2 = json_array_get(json_object_get(p, "line_items"), 2);
    char err[NORMALIZE_ERR_SIZE];

    json_object_set_new(line2, "quantity", json_integer(0));
    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field 'line_items[2].quantity' must be a positive integer");
    /* a line past the tenth is named with its whole index */
    json_t *lines = json_object_get(p, "line_items");
    while (json_array_size(lines) < 12)
        json_array_append_new(lines, json_deep_copy(json_array_get(lines, 0)));
    json_object_set_new(json_array_get(lines, 11), "title", json_integer(5));
    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field 'line_items[2].quantity' must be a positive integer");
    json_object_set_new(line2, "quantity", json_integer(1));
    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field 'line_items[11].title' must be a string");
    json_array_remove(lines, 11);
    json_object_set_new(line2, "price", json_string("3,99"));
    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field 'line_items[2].price' must be a decimal amount like \"12.34\"");
    json_object_set_new(p, "id", json_real(1.5));
    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field 'id' must be an integer or a non-empty string id");
    json_object_set_new(p, "id", json_integer(1));
    json_object_set_new(p, "updated_at", json_string("yesterday"));
    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field 'updated_at' must be an RFC 3339 date-time like \"2026-01-02T03:04:05Z\"");
    json_object_set_new(p, "currency", json_string("US"));
    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field 'currency' must be a 3-letter ISO 4217 currency code");
    assert_null(o);
    json_decref(p);
}

static void woocommerce_order_created(void **state)
{
    json_t *p = fixture("woocommerce_order_created.json"), *o = NULL;
    const json_t *a;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_woocommerce("woo", "order.created", p, 0, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 18);
    assert_string_equal(str(o, "external_id"), "727");
    assert_string_equal(str(o, "number"), "727");
    assert_string_equal(str(o, "status"), "open");
    assert_string_equal(str(o, "financial_status"), "paid");
    assert_string_equal(str(o, "fulfillment_status"), "unfulfilled");
    assert_string_equal(str(o, "currency"), "EUR");
    assert_string_equal(str(o, "total"), "55.75");
    assert_string_equal(str(o, "subtotal"), "41.95");
    assert_string_equal(str(o, "tax"), "8.90");
    assert_string_equal(str(o, "shipping"), "4.90");
    assert_string_equal(str(o, "refunded"), "0.00");
    assert_string_equal(str(o, "customer_email"), "anna.schmidt@example.de");
    a = json_object_get(o, "shipping_address");
    assert_string_equal(str(a, "name"), "Anna Schmidt");
    assert_string_equal(str(a, "line1"), "Hauptstraße 5");
    assert_string_equal(str(a, "line2"), "Hinterhaus");
    assert_string_equal(str(a, "region"), "BE");
    assert_string_equal(str(a, "postal_code"), "10115");
    assert_string_equal(str(a, "country"), "DE");
    /* price is the JSON number 8.95: no "8.9499999999999993" artifacts. */
    assert_string_equal(line_str(o, 0, "unit_price"), "8.95");
    assert_string_equal(line_str(o, 0, "title"), "Ceramic Mug - Blue");
    assert_string_equal(line_str(o, 1, "unit_price"), "24.05");
    /* "" sku → null */
    assert_true(
        json_is_null(json_object_get(json_array_get(json_object_get(o, "lines"), 1), "sku")));
    /* date_*_gmt have no zone and are UTC. */
    assert_string_equal(str(o, "created_at"), "2026-01-02T03:04:05Z");
    assert_string_equal(str(o, "updated_at"), "2026-01-02T03:04:09Z");
    json_decref(o);
    json_decref(p);
}

static void woocommerce_order_cancelled(void **state)
{
    json_t *p = fixture("woocommerce_order_cancelled.json"), *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_woocommerce("woo", "order.updated", p, 0, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "status"), "cancelled");
    /* Paid, then refunded in full. */
    assert_string_equal(str(o, "financial_status"), "refunded");
    assert_string_equal(str(o, "refunded"), "55.75");
    assert_string_equal(str(o, "updated_at"), "2026-01-03T10:00:00Z");
    json_decref(o);
    json_decref(p);
}

static void woocommerce_statuses(void **state)
{
    static const struct {
        const char *woo, *status, *financial, *fulfillment;
    } cases[] = {
        {"pending", "open", "pending", "unfulfilled"},
        {"on-hold", "open", "pending", "unfulfilled"},
        {"completed", "closed", "paid", "fulfilled"},
        {"refunded", "closed", "refunded", "unfulfilled"},
        {"failed", "open", "unpaid", "unfulfilled"},
        {"shipped-custom", "open", "paid", "unfulfilled"},
    };
    char err[NORMALIZE_ERR_SIZE];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *p = fixture("woocommerce_order_created.json"), *o = NULL;

        json_object_set_new(p, "status", json_string(cases[i].woo));
        assert_int_equal(normalize_woocommerce("w", "order.updated", p, 0, &o, err, sizeof(err)),
                         0);
        assert_string_equal(str(o, "status"), cases[i].status);
        assert_string_equal(str(o, "financial_status"), cases[i].financial);
        assert_string_equal(str(o, "fulfillment_status"), cases[i].fulfillment);
        json_decref(o);
        json_decref(p);
    }
}

static const char *woo_price(json_t *price, const char *currency, char *buf, size_t size)
{
    json_t *p = fixture("woocommerce_order_created.json"), *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    json_object_set_new(json_array_get(json_object_get(p, "line_items"), 0), "price", price);
    json_object_set_new(p, "currency", json_string(currency));
    assert_int_equal(normalize_woocommerce("w", "order.created", p, 0, &o, err, sizeof(err)), 0);
    snprintf(buf, size, "%s", line_str(o, 0, "unit_price"));
    json_decref(o);
    json_decref(p);
    return buf;
}

static void woocommerce_numeric_prices(void **state)
{
    char b[64];

    /* Rounded half away from zero on the number's shortest decimal text, to minor units. */
    assert_string_equal(woo_price(json_real(0.125), "EUR", b, sizeof(b)), "0.13");
    assert_string_equal(woo_price(json_real(1.005), "EUR", b, sizeof(b)), "1.01");
    assert_string_equal(woo_price(json_real(0.1 + 0.2), "EUR", b, sizeof(b)), "0.30");
    assert_string_equal(woo_price(json_real(19.999), "EUR", b, sizeof(b)), "20.00");
    assert_string_equal(woo_price(json_real(1e-7), "EUR", b, sizeof(b)), "0.00");
    assert_string_equal(woo_price(json_real(-2.5), "EUR", b, sizeof(b)), "-2.50");
    assert_string_equal(woo_price(json_real(123456789.99), "EUR", b, sizeof(b)), "123456789.99");
    assert_string_equal(woo_price(json_integer(10), "EUR", b, sizeof(b)), "10.00");
    assert_string_equal(woo_price(json_real(1200.0), "JPY", b, sizeof(b)), "1200");
    assert_string_equal(woo_price(json_real(1.2345), "KWD", b, sizeof(b)), "1.235");
    /* A string price (older API versions) is kept verbatim. */
    assert_string_equal(woo_price(json_string("8.950"), "EUR", b, sizeof(b)), "8.950");
}

static void woocommerce_errors_and_thin_delete(void **state)
{
    json_t *p = fixture("woocommerce_order_created.json"), *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    json_object_set_new(json_array_get(json_object_get(p, "line_items"), 1), "price",
                        json_string("abc"));
    expect_error(normalize_woocommerce("w", "order.created", p, 0, &o, err, sizeof(err)), err,
                 "field 'line_items[1].price' must be a decimal amount like \"12.34\"");
    json_object_set_new(json_array_get(json_object_get(p, "line_items"), 1), "price",
                        json_real(1e300));
    expect_error(normalize_woocommerce("w", "order.created", p, 0, &o, err, sizeof(err)), err,
                 "field 'line_items[1].price' is out of range");
    json_object_set_new(p, "date_modified_gmt", json_null());
    expect_error(normalize_woocommerce("w", "order.created", p, 0, &o, err, sizeof(err)), err,
                 "field 'date_modified_gmt' must be an RFC 3339 date-time like "
                 "\"2026-01-02T03:04:05Z\"");
    json_decref(p);

    p = parse("{\"id\": 727}");
    assert_int_equal(
        normalize_woocommerce("w", "order.deleted", p, 1767323047, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 5);
    assert_string_equal(str(o, "external_id"), "727");
    assert_string_equal(str(o, "status"), "cancelled");
    assert_string_equal(str(o, "updated_at"), "2026-01-02T03:04:07Z");
    assert_true(json_is_true(json_object_get(o, "partial")));
    json_decref(o);
    json_decref(p);
}

/* A topic (unsigned) never makes a body into another kind of body: -EPROTO, not a guess. */
static void topic_must_name_the_body(void **state)
{
    json_t *order = fixture("shopify_order_create.json"),
           *refund = fixture("shopify_refund_create.json");
    json_t *woo = fixture("woocommerce_order_created.json"), *thin = parse("{\"id\": 727}");
    json_t *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_shopify("s", "orders/create", refund, &o, err, sizeof(err)),
                     -EPROTO);
    assert_string_equal(err, "the body is a refund, not an order as topic 'orders/create' says");
    assert_int_equal(normalize_shopify("s", "refunds/create", order, &o, err, sizeof(err)),
                     -EPROTO);
    assert_string_equal(err, "the body is an order, not a refund as topic 'refunds/create' says");
    assert_int_equal(normalize_woocommerce("w", "order.updated", thin, 0, &o, err, sizeof(err)),
                     -EPROTO);
    assert_string_equal(
        err, "the body is a deletion notice (only an id), not what topic 'order.updated' says");
    assert_null(o);
    /* The state is the body's: order.deleted on a live order's full body keeps it live. */
    assert_int_equal(normalize_woocommerce("w", "order.deleted", woo, 0, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "status"), "open");
    json_decref(o);
    json_decref(order);
    json_decref(refund);
    json_decref(woo);
    json_decref(thin);
}

static void stripe_checkout_session(void **state)
{
    json_t *p = fixture("stripe_checkout_session_completed.json"), *o = NULL;
    const json_t *a;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_stripe("stripe", p, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 18);
    assert_string_equal(str(o, "external_id"), "ORD-2026-000417");
    assert_null_field(o, "number");
    assert_string_equal(str(o, "status"), "open");
    assert_string_equal(str(o, "financial_status"), "paid");
    assert_string_equal(str(o, "fulfillment_status"), "unfulfilled");
    assert_string_equal(str(o, "currency"), "USD");
    assert_string_equal(str(o, "total"), "50.97");
    assert_string_equal(str(o, "subtotal"), "42.00");
    assert_string_equal(str(o, "tax"), "3.97");
    assert_string_equal(str(o, "shipping"), "5.00");
    assert_string_equal(str(o, "refunded"), "0.00");
    assert_string_equal(str(o, "customer_email"), "maria@example.com");
    a = json_object_get(o, "shipping_address");
    assert_string_equal(str(a, "name"), "Maria Lopez");
    assert_string_equal(str(a, "line2"), "Suite 210");
    assert_string_equal(str(a, "region"), "OR");
    assert_int_equal(json_array_size(json_object_get(o, "lines")), 0);
    assert_string_equal(str(o, "created_at"), "2026-01-02T03:03:00Z");
    assert_string_equal(str(o, "updated_at"), "2026-01-02T03:04:07Z");
    assert_true(json_is_false(json_object_get(o, "partial")));
    json_decref(o);
    json_decref(p);
}

static void stripe_minor_units_and_linking(void **state)
{
    json_t *p = fixture("stripe_checkout_session_completed.json"), *o = NULL;
    json_t *s = json_object_get(json_object_get(p, "data"), "object");
    char err[NORMALIZE_ERR_SIZE];

    json_object_set_new(s, "currency", json_string("jpy"));
    json_object_set_new(s, "amount_total", json_integer(1200));
    json_object_set_new(s, "payment_status", json_string("unpaid"));
    json_object_set_new(s, "client_reference_id", json_null());
    json_object_set_new(s, "metadata", parse("{\"order_id\": \"A-17\"}"));
    assert_int_equal(normalize_stripe("st", p, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "currency"), "JPY");
    assert_string_equal(str(o, "total"), "1200");
    assert_string_equal(str(o, "refunded"), "0");
    assert_string_equal(str(o, "financial_status"), "unpaid");
    assert_string_equal(str(o, "external_id"), "A-17");
    json_decref(o);

    json_object_set_new(s, "currency", json_string("kwd"));
    json_object_set_new(s, "amount_total", json_integer(12345));
    json_object_set_new(s, "metadata", json_object());
    json_object_set_new(s, "status", json_string("expired"));
    json_object_set_new(s, "payment_status", json_string("no_payment_required"));
    assert_int_equal(normalize_stripe("st", p, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "total"), "12.345");
    assert_string_equal(str(o, "status"), "cancelled");
    assert_string_equal(str(o, "financial_status"), "paid");
    assert_string_equal(str(o, "external_id"), "cs_live_a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVwXyZ");
    json_decref(o);

    json_object_set_new(s, "currency", json_string("usd"));
    json_object_set_new(s, "amount_total", json_integer(-5));
    assert_int_equal(normalize_stripe("st", p, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "total"), "-0.05");
    json_decref(o);

    json_object_del(s, "amount_total");
    expect_error(normalize_stripe("st", p, &o, err, sizeof(err)), err,
                 "field 'data.object.amount_total' must be an integer amount in minor units");
    json_decref(p);
}

static void stripe_charge_refunded(void **state)
{
    json_t *p = fixture("stripe_charge_refunded.json"), *o = NULL;
    json_t *c = json_object_get(json_object_get(p, "data"), "object");
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_stripe("stripe", p, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 7);
    assert_string_equal(str(o, "external_id"), "ORD-2026-000417");
    assert_string_equal(str(o, "financial_status"), "partially_refunded");
    assert_string_equal(str(o, "currency"), "USD");
    assert_string_equal(str(o, "refunded"), "20.00");
    assert_string_equal(str(o, "updated_at"), "2026-01-03T03:00:00Z");
    assert_true(json_is_true(json_object_get(o, "partial")));
    json_decref(o);

    /* Fully refunded, and no metadata: linked by the payment intent. */
    json_object_set_new(c, "amount_refunded", json_integer(5097));
    json_object_set_new(c, "refunded", json_true());
    json_object_set_new(c, "metadata", json_object());
    assert_int_equal(normalize_stripe("stripe", p, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "financial_status"), "refunded");
    assert_string_equal(str(o, "refunded"), "50.97");
    assert_string_equal(str(o, "external_id"), "pi_3QfR2jLkdIwHu7ix0abcDEF1");
    json_decref(o);
    json_decref(p);
}

static void stripe_payment_intent(void **state)
{
    json_t *p = parse("{\"id\": \"evt_1\", \"type\": \"payment_intent.succeeded\", \"created\": "
                      "1767323047, \"data\": {\"object\": {\"id\": \"pi_1\", \"object\": "
                      "\"payment_intent\", \"amount\": 5097, \"currency\": \"usd\", \"status\": "
                      "\"succeeded\", \"metadata\": {\"order_id\": \"ORD-9\"}}}}");
    json_t *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_stripe("stripe", p, &o, err, sizeof(err)), 0);
    assert_string_equal(str(o, "external_id"), "ORD-9");
    assert_string_equal(str(o, "financial_status"), "paid");
    assert_string_equal(str(o, "total"), "50.97");
    assert_true(json_is_true(json_object_get(o, "partial")));
    json_decref(o);
    json_decref(p);
}

static void standard_full_and_thin(void **state)
{
    json_t *p = fixture("standard_order_created.json"), *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_standard("erp", p, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 18);
    assert_string_equal(str(o, "external_id"), "SO-88231");
    assert_string_equal(str(o, "financial_status"), "authorized");
    assert_string_equal(str(o, "currency"), "GBP");
    assert_string_equal(str(o, "total"), "64.80");
    assert_string_equal(str(json_object_get(o, "shipping_address"), "postal_code"), "M1 1AE");
    assert_null(
        json_string_value(json_object_get(json_object_get(o, "shipping_address"), "line2")));
    assert_string_equal(line_str(o, 1, "title"), "Bookmark set");
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(o, "lines"), 1), "quantity")),
                     4);
    assert_string_equal(str(o, "updated_at"), "2026-01-02T03:04:05Z");
    assert_true(json_is_false(json_object_get(o, "partial")));
    json_decref(o);
    json_decref(p);

    p = fixture("standard_thin.json");
    assert_int_equal(normalize_standard("bc", p, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 4);
    assert_string_equal(str(o, "external_id"), "250");
    assert_string_equal(str(o, "updated_at"), "2026-01-05T08:30:00Z");
    assert_true(json_is_true(json_object_get(o, "partial")));
    json_decref(o);
    json_decref(p);
}

static void standard_partial_and_errors(void **state)
{
    json_t *p = parse("{\"type\": \"order.paid\", \"timestamp\": \"2026-01-05T08:30:00Z\", "
                      "\"data\": {\"external_id\": 9007199254740993, \"financial_status\": "
                      "\"paid\", \"partial\": true, \"extra\": 1}}");
    json_t *o = NULL, *data;
    char err[NORMALIZE_ERR_SIZE];

    assert_int_equal(normalize_standard("x", p, &o, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(o), 5);
    assert_string_equal(str(o, "external_id"), "9007199254740993");
    assert_string_equal(str(o, "financial_status"), "paid");
    json_decref(o);
    json_decref(p);

    p = fixture("standard_order_created.json");
    data = json_object_get(p, "data");
    json_object_set_new(json_array_get(json_object_get(data, "lines"), 0), "unit_price",
                        json_real(30.0));
    expect_error(normalize_standard("x", p, &o, err, sizeof(err)), err,
                 "field 'data.lines[0].unit_price' must be a decimal string like \"12.34\"");
    json_object_del(data, "lines");
    expect_error(normalize_standard("x", p, &o, err, sizeof(err)), err,
                 "field 'data.lines' is required in a full order (or set \"partial\": true)");
    json_object_set_new(data, "status", json_string("shipped"));
    json_object_set_new(data, "partial", json_true());
    expect_error(normalize_standard("x", p, &o, err, sizeof(err)), err,
                 "field 'data.status' must be one of \"open\", \"cancelled\", \"closed\"");
    json_object_del(data, "external_id");
    expect_error(normalize_standard("x", p, &o, err, sizeof(err)), err,
                 "field 'data.id' must be an integer or a non-empty string id");
    json_decref(p);
}

static void not_objects(void **state)
{
    json_t *p = parse("[1, 2]"), *o = NULL;
    char err[NORMALIZE_ERR_SIZE];

    expect_error(normalize_shopify("s", "orders/create", p, &o, err, sizeof(err)), err,
                 "field '$' must be an order object");
    expect_error(normalize_woocommerce("s", "order.created", p, 0, &o, err, sizeof(err)), err,
                 "field '$' must be an order object");
    expect_error(normalize_stripe("s", p, &o, err, sizeof(err)), err,
                 "field '$' must be a Stripe event object");
    expect_error(normalize_standard("s", p, &o, err, sizeof(err)), err,
                 "field '$' must be an object {\"type\", \"timestamp\", \"data\"}");
    json_decref(p);
}

/* ------------------------------------------- formatting without printf */

/* What norm_money_minor wrote with snprintf before. */
static void money_by_printf(int64_t amount, int minor, char out[NORM_MONEY_SIZE])
{
    uint64_t mag = amount < 0 ? (uint64_t)0 - (uint64_t)amount : (uint64_t)amount;
    uint64_t scale = 1;

    for (int i = 0; i < minor; i++)
        scale *= 10;
    /* printed whole, then cut to the size as snprintf into out would */
    char whole[128];
    if (minor == 0)
        snprintf(whole, sizeof(whole), "%s%" PRIu64, amount < 0 ? "-" : "", mag);
    else
        snprintf(whole, sizeof(whole), "%s%" PRIu64 ".%0*" PRIu64, amount < 0 ? "-" : "",
                 mag / scale, minor, mag % scale);
    snprintf(out, NORM_MONEY_SIZE, "%.*s", NORM_MONEY_SIZE - 1, whole);
}

static void formatting_matches_printf(void **state)
{
    static const int64_t amounts[] = {0,
                                      1,
                                      -1,
                                      5,
                                      -5,
                                      99,
                                      100,
                                      -100,
                                      1234,
                                      100000,
                                      -1000001,
                                      INT64_MAX,
                                      INT64_MIN,
                                      INT64_MIN + 1,
                                      999999999999999999LL};
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    char want[NORM_MONEY_SIZE], got[NORM_MONEY_SIZE];

    (void)state;
    for (int minor = 0; minor <= 18; minor++) {
        for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]) + 2000; i++) {
            int64_t a;
            if (i < sizeof(amounts) / sizeof(amounts[0])) {
                a = amounts[i];
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                a = (int64_t)(x >> (x & 63)); /* all magnitudes */
                if (x & 1)
                    a = -a;
            }
            money_by_printf(a, minor, want);
            norm_money_minor(a, minor, got);
            assert_string_equal(got, want);
        }
    }
    /* ids: integers at their edges, strings as they are */
    static const json_int_t ids[] = {0, 7, -7, INT64_MAX, INT64_MIN, 5678901234567890123LL};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char id[NORM_ID_SIZE], ref[NORM_ID_SIZE], err[64];
        struct norm_err e = {err, sizeof(err)};
        json_t *v = json_integer(ids[i]);
        assert_int_equal(norm_id(v, "id", id, &e), 0);
        snprintf(ref, sizeof(ref), "%" JSON_INTEGER_FORMAT, ids[i]);
        assert_string_equal(id, ref);
        json_decref(v);
    }
    /* names, also cut short by a small buffer, as snprintf cuts them */
    static const char *const names[][2] = {{"Ana", "Lima"}, {"Ana", NULL}, {NULL, "Lima"},
                                           {"", "Lima"},    {"Ana", ""},   {NULL, NULL}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        for (size_t size = 1; size <= 12; size++) {
            const char *f = names[i][0], *l = names[i][1];
            bool hf = f != NULL && f[0] != '\0', hl = l != NULL && l[0] != '\0';
            char ref[16], got_name[16];
            snprintf(ref, size, "%s%s%s", hf ? f : "", hf && hl ? " " : "", hl ? l : "");
            norm_join_name(f, l, got_name, size);
            assert_string_equal(got_name, ref);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shopify_order_create),
        cmocka_unit_test(shopify_states_and_refunds),
        cmocka_unit_test(shopify_refund_is_partial),
        cmocka_unit_test(shopify_not_an_order),
        cmocka_unit_test(woocommerce_order_created),
        cmocka_unit_test(woocommerce_order_cancelled),
        cmocka_unit_test(woocommerce_statuses),
        cmocka_unit_test(woocommerce_numeric_prices),
        cmocka_unit_test(woocommerce_errors_and_thin_delete),
        cmocka_unit_test(topic_must_name_the_body),
        cmocka_unit_test(stripe_checkout_session),
        cmocka_unit_test(stripe_minor_units_and_linking),
        cmocka_unit_test(stripe_charge_refunded),
        cmocka_unit_test(stripe_payment_intent),
        cmocka_unit_test(standard_full_and_thin),
        cmocka_unit_test(standard_partial_and_errors),
        cmocka_unit_test(not_objects),
        cmocka_unit_test(formatting_matches_printf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
