/*
 * normalize: conversions the normalize hooks of every source kind share
 * (source_<name>.c), so that money, time and ids come out of one set of
 * rules whatever the source: decimal strings that are exact, UTC RFC 3339
 * time, ids that never pass through a double.
 */
#include "normalize_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range RFC 3339 can write. */
#define MIN_EPOCH (-62167219200LL)
#define MAX_EPOCH 253402300799LL

int norm_fail(struct norm_err *e, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (e == NULL || e->size == 0)
        return -EINVAL;
    n = snprintf(e->buf, e->size, "field '%s' ", path);
    if (n >= 0 && (size_t)n < e->size) {
        va_start(ap, fmt);
        vsnprintf(e->buf + n, e->size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

int norm_mismatch(struct norm_err *e, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL || e->size == 0)
        return -EPROTO;
    va_start(ap, fmt);
    vsnprintf(e->buf, e->size, fmt, ap);
    va_end(ap);
    return -EPROTO;
}

int norm_minor_units(const char *currency)
{
    /*
     * ISO 4217 currencies without minor units, plus those with three. The list
     * is Stripe's "zero-decimal" and "three-decimal" currencies, which is also
     * what WooCommerce stores prices in for these currencies.
     */
    static const char zero[][4] = {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
                                   "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"};
    static const char three[][4] = {"BHD", "JOD", "KWD", "OMR", "TND"};

    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++) {
        if (strcmp(currency, zero[i]) == 0)
            return 0;
    }
    for (size_t i = 0; i < sizeof(three) / sizeof(three[0]); i++) {
        if (strcmp(currency, three[i]) == 0)
            return 3;
    }
    return 2;
}

int norm_currency(const json_t *v, const char *path, char out[4], struct norm_err *e)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;

    if (s == NULL || strlen(s) != 3)
        return norm_fail(e, path, "must be a 3-letter ISO 4217 currency code");
    for (int i = 0; i < 3; i++) {
        if (!isalpha((unsigned char)s[i]))
            return norm_fail(e, path, "must be a 3-letter ISO 4217 currency code");
        out[i] = (char)toupper((unsigned char)s[i]);
    }
    out[3] = '\0';
    return 0;
}

static bool is_decimal(const char *s)
{
    size_t i = 0, digits = 0;

    if (s[i] == '-')
        i++;
    while (isdigit((unsigned char)s[i])) {
        i++;
        digits++;
    }
    if (digits == 0)
        return false;
    if (s[i] == '.') {
        i++;
        digits = 0;
        while (isdigit((unsigned char)s[i])) {
            i++;
            digits++;
        }
        if (digits == 0)
            return false;
    }
    return s[i] == '\0' && i < NORM_MONEY_SIZE;
}

/* Appends s to out[*n..size) as snprintf would, truncating and leaving room for the NUL. */
static void path_add(char *out, size_t size, size_t *n, const char *s, size_t len)
{
    size_t room = size - 1 - *n;
    if (len > room)
        len = room;
    memcpy(out + *n, s, len);
    *n += len;
}

/*
 * snprintf(out, size, "%.*s", len, s): the text as it fits. These helpers
 * stand in for snprintf where a webhook's fields are formatted several
 * times per order; tests/unit/test_normalize.c compares them with it.
 */
static void put_n(char *out, size_t size, const char *s, size_t len)
{
    if (len >= size)
        len = size - 1;
    memcpy(out, s, len);
    out[len] = '\0';
}

/* The decimal digits of u, written backwards so that they end at `end`; returns their start. */
static char *digits_before(char *end, uint64_t u)
{
    do {
        *--end = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    return end;
}

void norm_money_minor(int64_t amount, int minor, char out[NORM_MONEY_SIZE])
{
    /* Unsigned so that INT64_MIN has a magnitude too. */
    uint64_t mag = amount < 0 ? (uint64_t)0 - (uint64_t)amount : (uint64_t)amount;
    uint64_t scale = 1;

    for (int i = 0; i < minor; i++)
        scale *= 10;
    if (minor >= 0 && minor <= 18) {
        /* what the snprintf calls below write, by hand: "-" units "." minor digits */
        char text[48], *end = text + sizeof(text), *p = end;
        uint64_t frac = mag % scale;

        if (minor > 0) {
            for (int i = 0; i < minor; i++) {
                *--p = (char)('0' + frac % 10);
                frac /= 10;
            }
            *--p = '.';
        }
        p = digits_before(p, mag / scale);
        if (amount < 0)
            *--p = '-';
        put_n(out, NORM_MONEY_SIZE, p, (size_t)(end - p));
        return;
    }
    if (minor == 0)
        snprintf(out, NORM_MONEY_SIZE, "%s%" PRIu64, amount < 0 ? "-" : "", mag);
    else
        snprintf(out, NORM_MONEY_SIZE, "%s%" PRIu64 ".%0*" PRIu64, amount < 0 ? "-" : "",
                 mag / scale, minor, mag % scale);
}

/*
 * A JSON number that jansson parsed into a double (WooCommerce's line price)
 * → amount in minor units. Printing the double with "%.2f" would round its
 * binary value, so 0.125 (exactly representable) and 1.005 (really
 * 1.00499999...) would round differently from what the sender wrote. Instead
 * take the shortest "%.*e" form that reads back as the same double — the text
 * the sender most likely sent — and round that decimal text half away from
 * zero to the currency's minor units. Amounts of 1e15 or more are refused:
 * no price is that large, and beyond 2^53 a double no longer holds cents.
 */
static int real_to_minor(double d, int minor, int64_t *out)
{
    char text[40];
    char digits[24];
    size_t nd = 0;
    int exp10, point, p;
    int64_t n = 0;
    char *ep;

    if (!isfinite(d) || fabs(d) >= 1e15)
        return -EINVAL;
    for (p = 1; p <= 17; p++) {
        snprintf(text, sizeof(text), "%.*e", p - 1, d);
        if (strtod(text, NULL) == d)
            break;
    }
    /* text is "[-]d[.ddd]e±XX": collect the mantissa digits and the exponent. */
    for (const char *s = text; *s != 'e' && *s != '\0'; s++) {
        if (isdigit((unsigned char)*s) && nd < sizeof(digits))
            digits[nd++] = *s;
    }
    ep = strchr(text, 'e');
    if (ep == NULL)
        return -EINVAL;
    exp10 = (int)strtol(ep + 1, NULL, 10);
    /* The value is 0.d1d2d3... × 10^(exp10 + 1); keep the digits left of `point`. */
    point = exp10 + 1 + minor;
    for (int i = 0; i < point; i++)
        n = n * 10 + (i < (int)nd ? digits[i] - '0' : 0);
    if (point >= 0 && point < (int)nd && digits[point] >= '5')
        n++;
    *out = d < 0 ? -n : n;
    return 0;
}

int norm_money(const json_t *v, int minor, const char *path, char out[NORM_MONEY_SIZE],
               struct norm_err *e)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);

        if (!is_decimal(s))
            return norm_fail(e, path, "must be a decimal amount like \"12.34\"");
        put_n(out, NORM_MONEY_SIZE, s, strlen(s));
        return 0;
    }
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        int64_t scaled = i;

        if (i <= -1000000000000000LL || i >= 1000000000000000LL)
            return norm_fail(e, path, "is out of range");
        for (int k = 0; k < minor; k++)
            scaled *= 10;
        norm_money_minor(scaled, minor, out);
        return 0;
    }
    if (json_is_real(v)) {
        int64_t scaled;

        if (real_to_minor(json_real_value(v), minor, &scaled) < 0)
            return norm_fail(e, path, "is out of range");
        norm_money_minor(scaled, minor, out);
        return 0;
    }
    return norm_fail(e, path, "must be a decimal amount");
}

int norm_decimal_parse(const char *s, int64_t *micros, int *decimals)
{
    bool neg = false;
    int64_t v = 0;
    int ints = 0, frac = 0;

    if (!is_decimal(s))
        return -EINVAL;
    if (*s == '-') {
        neg = true;
        s++;
    }
    for (; isdigit((unsigned char)*s); s++) {
        if (++ints > 12)
            return -EINVAL;
        v = v * 10 + (*s - '0');
    }
    v *= 1000000;
    if (*s == '.') {
        int64_t scale = 100000;

        for (s++; isdigit((unsigned char)*s); s++) {
            if (++frac > 6)
                return -EINVAL;
            v += (*s - '0') * scale;
            scale /= 10;
        }
    }
    *micros = neg ? -v : v;
    *decimals = frac;
    return 0;
}

void norm_decimal_format(int64_t micros, int decimals, char out[NORM_MONEY_SIZE])
{
    int64_t div = 1;

    if (decimals > 6)
        decimals = 6;
    if (decimals < 0)
        decimals = 0;
    for (int i = decimals; i < 6; i++)
        div *= 10;
    /* Terms have at most `decimals` digits, so this division is exact. */
    norm_money_minor(micros / div, decimals, out);
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t)doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

    return m == 2 && leap ? 29 : days[m - 1];
}

static bool digits_at(const char *s, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        *out = *out * 10 + (s[i] - '0');
    }
    return true;
}

void norm_time_epoch(int64_t t, char out[NORM_TIME_SIZE])
{
    time_t tt = (time_t)t;
    struct tm tm;

    /* Years outside 0..9999 do not fit RFC 3339; callers' inputs cannot produce them. */
    if (t < MIN_EPOCH || t > MAX_EPOCH || gmtime_r(&tt, &tm) == NULL) {
        snprintf(out, NORM_TIME_SIZE, "1970-01-01T00:00:00Z");
        return;
    }
    strftime(out, NORM_TIME_SIZE, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int norm_epoch(const json_t *v, const char *path, char out[NORM_TIME_SIZE], struct norm_err *e)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_EPOCH)
        return norm_fail(e, path, "must be a Unix time in seconds");
    norm_time_epoch(json_integer_value(v), out);
    return 0;
}

int norm_time(const json_t *v, bool assume_utc, const char *path, char out[NORM_TIME_SIZE],
              struct norm_err *e)
{
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
    const char *p;
    int64_t t;

    if (s == NULL || strlen(s) < 19 || !digits_at(s, 4, &y) || s[4] != '-' ||
        !digits_at(s + 5, 2, &mo) || s[7] != '-' || !digits_at(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits_at(s + 11, 2, &h) ||
        s[13] != ':' || !digits_at(s + 14, 2, &mi) || s[16] != ':' || !digits_at(s + 17, 2, &sec))
        goto bad;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        goto bad;
    p = s + 19;
    /* Fractions of a second are dropped: senders' updated_at are whole seconds anyway. */
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            goto bad;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && p[1] == '\0') {
        sign = 0;
    } else if ((*p == '+' || *p == '-') && strlen(p) == 6 && digits_at(p + 1, 2, &oh) &&
               p[3] == ':' && digits_at(p + 4, 2, &om) && oh <= 23 && om <= 59) {
        sign = *p == '+' ? 1 : -1;
    } else if (*p == '\0' && assume_utc) {
        sign = 0;
    } else {
        goto bad;
    }
    t = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec -
        sign * (oh * 3600 + om * 60);
    /* An offset can push year 0000 or 9999 out of what RFC 3339 can write in UTC. */
    if (t < MIN_EPOCH || t > MAX_EPOCH)
        goto bad;
    norm_time_epoch(t, out);
    return 0;
bad:
    return norm_fail(e, path, "must be an RFC 3339 date-time like \"2026-01-02T03:04:05Z\"");
}

int norm_id(const json_t *v, const char *path, char out[NORM_ID_SIZE], struct norm_err *e)
{
    if (json_is_integer(v)) {
        /* Integers stay json_int_t (int64) from the parser on: ids beyond 2^53 stay exact. */
        json_int_t i = json_integer_value(v);
        char text[24], *end = text + sizeof(text);
        char *p = digits_before(end, i < 0 ? (uint64_t)0 - (uint64_t)i : (uint64_t)i);

        if (i < 0)
            *--p = '-';
        put_n(out, NORM_ID_SIZE, p, (size_t)(end - p));
        return 0;
    }
    if (json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < NORM_ID_SIZE &&
        strlen(json_string_value(v)) == json_string_length(v)) {
        put_n(out, NORM_ID_SIZE, json_string_value(v), json_string_length(v));
        return 0;
    }
    return norm_fail(e, path, "must be an integer or a non-empty string id");
}

int norm_quantity(const json_t *v, const char *path, json_int_t *out, struct norm_err *e)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return norm_fail(e, path, "must be a positive integer");
    *out = json_integer_value(v);
    return 0;
}

/*
 * snprintf(out, size, "%s[%zu].%s", array, i, field), without printf: the
 * path of a line's field, made for every field of every line (a failure
 * names it) and so once per webhook several times over.
 */
static void item_path(char *out, size_t size, const char *array, size_t i, const char *field)
{
    char digits[24];
    size_t nd = 0, n = 0;
    do {
        digits[sizeof(digits) - 1 - nd++] = (char)('0' + i % 10);
        i /= 10;
    } while (i != 0);
    path_add(out, size, &n, array, strlen(array));
    path_add(out, size, &n, "[", 1);
    path_add(out, size, &n, digits + sizeof(digits) - nd, nd);
    path_add(out, size, &n, "].", 2);
    path_add(out, size, &n, field, strlen(field));
    out[n] = '\0';
}

int norm_lines(const json_t *items, const char *array_name, const char *title_key,
               const char *price_key, int minor, bool strict, json_t **out, struct norm_err *e)
{
    json_t *arr;
    const json_t *it;
    size_t i;
    char p[128];
    int rc;

    if (!json_is_array(items))
        return norm_fail(e, array_name, "must be an array");
    arr = json_array();
    if (arr == NULL)
        return -ENOMEM;
    json_array_foreach(items, i, it)
    {
        const json_t *sku = json_object_get(it, "sku");
        const json_t *title = json_object_get(it, title_key);
        const json_t *price_v = json_object_get(it, price_key);
        char price[NORM_MONEY_SIZE];
        json_int_t qty = 0; /* set by norm_quantity; -Wmaybe-uninitialized at -O2 cannot tell */
        json_t *line;
        bool oom = false;

        item_path(p, sizeof(p), array_name, i, "sku");
        if (strict && sku != NULL && !json_is_null(sku) && !json_is_string(sku)) {
            rc = norm_fail(e, p, "must be a string or null");
            goto fail;
        }
        item_path(p, sizeof(p), array_name, i, title_key);
        if (!json_is_string(title)) {
            rc = norm_fail(e, p, "must be a string");
            goto fail;
        }
        item_path(p, sizeof(p), array_name, i, "quantity");
        rc = norm_quantity(json_object_get(it, "quantity"), p, &qty, e);
        if (rc < 0)
            goto fail;
        item_path(p, sizeof(p), array_name, i, price_key);
        /* Canonical amounts are strings: a JSON number would already have lost exactness. */
        if (strict && !json_is_string(price_v)) {
            rc = norm_fail(e, p, "must be a decimal string like \"12.34\"");
            goto fail;
        }
        rc = norm_money(price_v, minor, p, price, e);
        if (rc < 0)
            goto fail;
        line = json_object();
        if (line == NULL || json_array_append_new(arr, line) != 0) {
            rc = -ENOMEM;
            goto fail;
        }
        /* WooCommerce sends "" for products without a SKU: null, like a missing one. */
        norm_put(line, "sku", norm_string_or_null(norm_str(sku)), &oom);
        norm_put(line, "title", json_string(json_string_value(title)), &oom);
        norm_put(line, "quantity", json_integer(qty), &oom);
        norm_put(line, "unit_price", json_string(price), &oom);
        if (oom) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    *out = arr;
    return 0;
fail:
    json_decref(arr);
    return rc;
}

const char *norm_str(const json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return NULL;
    return json_string_value(v);
}

json_t *norm_string_or_null(const char *s)
{
    if (s == NULL || s[0] == '\0')
        return json_null();
    return json_string(s);
}

void norm_put(json_t *obj, const char *key, json_t *v, bool *oom)
{
    /* json_object_set_new releases v even when it fails. */
    if (v == NULL || json_object_set_new(obj, key, v) != 0)
        *oom = true;
}

json_t *norm_address(const char *name, const char *line1, const char *line2, const char *city,
                     const char *region, const char *postal_code, const char *country)
{
    const char *parts[] = {name, line1, line2, city, region, postal_code, country};
    static const char *const keys[] = {"name",   "line1",       "line2",  "city",
                                       "region", "postal_code", "country"};
    bool any = false, oom = false;
    json_t *a;

    for (size_t i = 0; i < 7; i++) {
        if (parts[i] != NULL && parts[i][0] != '\0')
            any = true;
    }
    /* WooCommerce sends a shipping object of empty strings for virtual goods: no address. */
    if (!any)
        return json_null();
    a = json_object();
    if (a == NULL)
        return NULL;
    for (size_t i = 0; i < 7; i++)
        norm_put(a, keys[i], norm_string_or_null(parts[i]), &oom);
    if (oom) {
        json_decref(a);
        return NULL;
    }
    return a;
}

void norm_join_name(const char *first, const char *last, char *out, size_t size)
{
    bool f = first != NULL && first[0] != '\0';
    bool l = last != NULL && last[0] != '\0';

    size_t n = 0;

    if (size == 0)
        return;
    /* snprintf(out, size, "%s%s%s", first, " ", last), by hand */
    out[0] = '\0';
    if (f)
        path_add(out, size, &n, first, strlen(first));
    if (f && l)
        path_add(out, size, &n, " ", 1);
    if (l)
        path_add(out, size, &n, last, strlen(last));
    out[n] = '\0';
}

json_t *norm_order_new(const char *source, const char *external_id)
{
    json_t *o = json_object();
    bool oom = false;

    if (o == NULL)
        return NULL;
    norm_put(o, "source", json_string(source), &oom);
    norm_put(o, "external_id", json_string(external_id), &oom);
    if (oom) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int norm_order_finish(json_t *order, const char *created_at, const char *updated_at, bool partial)
{
    bool oom = false;

    if (created_at != NULL)
        norm_put(order, "created_at", json_string(created_at), &oom);
    norm_put(order, "updated_at", json_string(updated_at), &oom);
    norm_put(order, "partial", json_boolean(partial), &oom);
    return oom ? -ENOMEM : 0;
}
