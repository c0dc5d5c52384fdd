/*
 * destinations: see destinations.h. A reload parses every row into a fresh
 * settings record before it touches the entry, then swaps the record in
 * whole; a row that cannot be loaded (out of memory) leaves its entry as it
 * was.
 */
#include "destinations.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "db.h"
#include "ed25519.h"
#include "log.h"

struct destinations {
    struct dest *head;
    bool loaded;
};

const char destinations_sql[] =
    "SELECT d.id, d.mode = 'push' AS push, d.enabled, d.url, d.secret, d.previous_secret,"
    " d.feed_token, d.timeout_ms, d.max_in_flight,"
    " array_to_string(ARRAY(SELECT extract(epoch FROM x)::float8"
    "   FROM unnest(d.retry_schedule) x), ',') AS schedule,"
    " d.max_attempts, extract(epoch FROM d.retry_window)::float8 AS window_s,"
    " d.breaker_threshold, extract(epoch FROM d.breaker_pause)::float8 AS breaker_pause_s,"
    " extract(epoch FROM d.max_retry_after)::float8 AS max_retry_after_s,"
    " d.on_dead = 'block' AS dead_blocks,"
    " greatest(coalesce(extract(epoch FROM d.paused_until - now()), 0), 0)::float8"
    "   AS paused_for_s,"
    " d.consecutive_failures,"
    " (SELECT array_agg(s.event_type ORDER BY s.event_type) FROM subscriptions s"
    "   WHERE s.destination_id = d.id)::text AS types,"
    " d.headers::text AS headers, d.rate_limit_per_s::float8 AS rate_limit_per_s,"
    " d.signing_key, d.previous_signing_key,"
    " d.filter::text AS filter, d.paused_at IS NOT NULL AS held"
    " FROM destinations d ORDER BY d.id";

enum col {
    C_ID,
    C_PUSH,
    C_ENABLED,
    C_URL,
    C_SECRET,
    C_PREV_SECRET,
    C_FEED_TOKEN,
    C_TIMEOUT,
    C_MAX_IN_FLIGHT,
    C_SCHEDULE,
    C_MAX_ATTEMPTS,
    C_WINDOW,
    C_BREAKER_THRESHOLD,
    C_BREAKER_PAUSE,
    C_MAX_RETRY_AFTER,
    C_DEAD_BLOCKS,
    C_PAUSED_FOR,
    C_FAILURES,
    C_TYPES,
    C_HEADERS,
    C_RATE_LIMIT,
    C_SIGNING_KEY,
    C_PREV_SIGNING_KEY,
    C_FILTER,
    C_HELD,
    N_COLS
};

static const char *const col_names[N_COLS] = {"id",
                                              "push",
                                              "enabled",
                                              "url",
                                              "secret",
                                              "previous_secret",
                                              "feed_token",
                                              "timeout_ms",
                                              "max_in_flight",
                                              "schedule",
                                              "max_attempts",
                                              "window_s",
                                              "breaker_threshold",
                                              "breaker_pause_s",
                                              "max_retry_after_s",
                                              "dead_blocks",
                                              "paused_for_s",
                                              "consecutive_failures",
                                              "types",
                                              "headers",
                                              "rate_limit_per_s",
                                              "signing_key",
                                              "previous_signing_key",
                                              "filter",
                                              "held"};

struct destinations *destinations_new(void)
{
    return calloc(1, sizeof(struct destinations));
}

static void dest_settings_free(struct dest_settings *set)
{
    free(set->url);
    free(set->secret);
    free(set->prev_secret);
    free(set->feed_token);
    free(set->types);
    free(set->headers);
    ed25519_signer_free(&set->signer);
    ed25519_signer_free(&set->prev_signer);
    free(set->filter);
    *set = (struct dest_settings){0};
}

void destinations_free(struct destinations **pdests)
{
    struct destinations *ds = *pdests;
    if (ds == NULL)
        return;
    *pdests = NULL;
    while (ds->head != NULL) {
        struct dest *d = ds->head;
        ds->head = d->next;
        dest_settings_free(&d->set);
        free(d->id);
        free(d);
    }
    free(ds);
}

struct dest *destinations_find(const struct destinations *ds, const char *id)
{
    for (struct dest *d = ds->head; d != NULL; d = d->next)
        if (strcmp(d->id, id) == 0)
            return d;
    return NULL;
}

struct dest *destinations_first(const struct destinations *ds)
{
    return ds->head;
}

bool destinations_loaded(const struct destinations *ds)
{
    return ds->loaded;
}

static char *text_or_null(const PGresult *res, int row, int col, bool *oom)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    char *s = strdup(PQgetvalue(res, row, col));
    if (s == NULL)
        *oom = true;
    return s;
}

static bool same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/*
 * Extra headers: the rules of destination_options_check() in
 * migrations/008_destination_options.sql, checked again here because a line
 * with a CR or LF in it would let the table write arbitrary requests (the
 * trigger can be disabled, a dump restored without it). Keep the two in step.
 */
#define HEADER_NAME_MAX  128
#define HEADER_VALUE_MAX 4096
#define HEADERS_TOTAL    8192

/* ordersync's own fields (the trace context too), and those libcurl owns (framing, the connection)
 */
static const char *const own_headers[] = {
    "content-type", "content-length",    "user-agent", "host",       "traceparent", "tracestate",
    "expect",       "transfer-encoding", "connection", "keep-alive", "te",          "trailer",
    "upgrade"};

/* RFC 9110 5.1: a field name is a token */
static bool header_name_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > HEADER_NAME_MAX)
        return false;
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              strchr("!#$%&'*+-.^_`|~", *p) != NULL))
            return false;
    if (strncasecmp(k, "webhook-", 8) == 0)
        return false;
    for (size_t i = 0; i < sizeof(own_headers) / sizeof(*own_headers); i++)
        if (strcasecmp(k, own_headers[i]) == 0)
            return false;
    return true;
}

/* RFC 9110 5.5, ASCII only: visible characters, spaces and tabs inside, no CR/LF */
static bool header_value_ok(const char *v, size_t n)
{
    if (n > HEADER_VALUE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] != '\t' && (v[i] < 0x20 || v[i] > 0x7e))
            return false;
    return n == 0 || (v[0] != ' ' && v[0] != '\t' && v[n - 1] != ' ' && v[n - 1] != '\t');
}

/*
 * Parses the headers column (JSON text) into request lines: *out is a new
 * allocation (pointers, then the lines), or NULL when there are none.
 * Returns 0, -EINVAL (headers we refuse to send) or -ENOMEM.
 */
static int parse_headers(const char *text, char ***out)
{
    *out = NULL;
    json_t *obj = json_loads(text, 0, NULL);
    /* The column is jsonb NOT NULL, so its text always parses: a failure is
       jansson out of memory (which it does not always report as such), not a
       verdict on the headers, and the entry keeps its old settings. */
    if (obj == NULL && text[0] != '\0')
        return -ENOMEM;
    int rc = -EINVAL;
    size_t n = json_is_object(obj) ? json_object_size(obj) : 0;
    if (obj == NULL || !json_is_object(obj) || n > DESTINATIONS_MAX_HEADERS)
        goto done;
    size_t total = 0, bytes = (n + 1) * sizeof(char *);
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (!json_is_string(v) || !header_name_ok(k) ||
            !header_value_ok(json_string_value(v), json_string_length(v)))
            goto done;
        const char *k2;
        json_t *v2;
        json_object_foreach(obj, k2, v2)
        {
            if (k2 != k && strcasecmp(k2, k) == 0)
                goto done; /* names ignore case: which one would the receiver see? */
        }
        total += strlen(k) + json_string_length(v) + 4;
        bytes += strlen(k) + json_string_length(v) + 3;
    }
    if (total > HEADERS_TOTAL)
        goto done;
    rc = 0;
    if (n == 0)
        goto done;
    char **lines = malloc(bytes);
    if (lines == NULL) {
        rc = -ENOMEM;
        goto done;
    }
    char *p = (char *)(lines + n + 1);
    size_t i = 0;
    json_object_foreach(obj, k, v)
    {
        size_t kl = strlen(k), vl = json_string_length(v);
        lines[i++] = p;
        memcpy(p, k, kl);
        p += kl;
        /* libcurl drops a header written "Name:" with nothing after it, and
           sends "Name;" as that header with an empty value */
        if (vl == 0) {
            *p++ = ';';
        } else {
            memcpy(p, ": ", 2);
            memcpy(p + 2, json_string_value(v), vl);
            p += 2 + vl;
        }
        *p++ = '\0';
    }
    lines[n] = NULL;
    *out = lines;
done:
    json_decref(obj);
    return rc;
}

/*
 * A signing key column into a signer (NULL when the column is). Returns 0,
 * -ENOMEM, or -EINVAL with the reason in *why (the key itself is never
 * logged: it is a secret).
 */
static int parse_key(const PGresult *res, int row, int col, struct ed25519_signer **out,
                     const char **why)
{
    *out = NULL;
    if (PQgetisnull(res, row, col))
        return 0;
    return ed25519_signer_new(PQgetvalue(res, row, col), out, why);
}

/* Fills `n` (zeroed) from one row; its strings are new allocations. */
static int parse_row(const PGresult *res, int row, const int *c, struct dest_settings *n,
                     const char **key_why)
{
    bool oom = false;
    n->push = PQgetvalue(res, row, c[C_PUSH])[0] == 't';
    n->enabled = PQgetvalue(res, row, c[C_ENABLED])[0] == 't';
    n->url = text_or_null(res, row, c[C_URL], &oom);
    n->secret = text_or_null(res, row, c[C_SECRET], &oom);
    n->prev_secret = text_or_null(res, row, c[C_PREV_SECRET], &oom);
    n->feed_token = text_or_null(res, row, c[C_FEED_TOKEN], &oom);
    n->types = text_or_null(res, row, c[C_TYPES], &oom);
    n->filter = text_or_null(res, row, c[C_FILTER], &oom);
    int hrc = parse_headers(PQgetvalue(res, row, c[C_HEADERS]), &n->headers);
    if (hrc == -ENOMEM)
        oom = true;
    n->headers_bad = hrc == -EINVAL;
    *key_why = NULL;
    const char *why2 = NULL;
    int k1 = parse_key(res, row, c[C_SIGNING_KEY], &n->signer, key_why);
    int k2 = parse_key(res, row, c[C_PREV_SIGNING_KEY], &n->prev_signer, &why2);
    if (k1 == -ENOMEM || k2 == -ENOMEM)
        oom = true;
    n->keys_bad = k1 == -EINVAL || k2 == -EINVAL;
    if (*key_why == NULL)
        *key_why = why2;
    if (oom) {
        dest_settings_free(n);
        return -ENOMEM;
    }
    n->timeout_ms = atol(PQgetvalue(res, row, c[C_TIMEOUT]));
    n->max_in_flight = (unsigned)atoi(PQgetvalue(res, row, c[C_MAX_IN_FLIGHT]));
    struct relay_policy *p = &n->policy;
    p->n_schedule = 0;
    const char *s = PQgetvalue(res, row, c[C_SCHEDULE]);
    while (*s != '\0' && p->n_schedule < RELAY_POLICY_MAX_SCHEDULE) {
        char *end;
        double v = strtod(s, &end);
        if (end == s)
            break;
        p->schedule[p->n_schedule++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    if (p->n_schedule == 0)
        p->schedule[p->n_schedule++] = 5;
    p->max_attempts = atoi(PQgetvalue(res, row, c[C_MAX_ATTEMPTS]));
    p->window_s = atof(PQgetvalue(res, row, c[C_WINDOW]));
    p->breaker_threshold = atoi(PQgetvalue(res, row, c[C_BREAKER_THRESHOLD]));
    p->breaker_pause_s = atof(PQgetvalue(res, row, c[C_BREAKER_PAUSE]));
    p->max_retry_after_s = atof(PQgetvalue(res, row, c[C_MAX_RETRY_AFTER]));
    n->dead_blocks = PQgetvalue(res, row, c[C_DEAD_BLOCKS])[0] == 't';
    n->paused_for_s = atof(PQgetvalue(res, row, c[C_PAUSED_FOR]));
    n->failures = atoi(PQgetvalue(res, row, c[C_FAILURES]));
    n->held = PQgetvalue(res, row, c[C_HELD])[0] == 't';
    n->rate_limit_per_s =
        PQgetisnull(res, row, c[C_RATE_LIMIT]) ? 0 : atof(PQgetvalue(res, row, c[C_RATE_LIMIT]));
    return 0;
}

static bool policy_differs(const struct relay_policy *a, const struct relay_policy *b)
{
    if (a->n_schedule != b->n_schedule || a->max_attempts != b->max_attempts ||
        a->window_s != b->window_s || a->max_retry_after_s != b->max_retry_after_s ||
        a->breaker_threshold != b->breaker_threshold || a->breaker_pause_s != b->breaker_pause_s)
        return true;
    for (unsigned i = 0; i < a->n_schedule; i++)
        if (a->schedule[i] != b->schedule[i])
            return true;
    return false;
}

/*
 * Does the relay need a new window for this destination? Headers, the rate
 * limit and an operator's pause are not compared: they are read at each
 * request, and a new window would send what is in flight again. The filter
 * is: what the window holds was read with the old one, and a changed filter
 * applies to every event not sent yet.
 */
static bool settings_differ(const struct dest_settings *a, const struct dest_settings *b)
{
    return a->push != b->push || a->enabled != b->enabled || !same_str(a->url, b->url) ||
           !same_str(a->secret, b->secret) || !same_str(a->prev_secret, b->prev_secret) ||
           !ed25519_signer_same(a->signer, b->signer) ||
           !ed25519_signer_same(a->prev_signer, b->prev_signer) || a->keys_bad != b->keys_bad ||
           !same_str(a->feed_token, b->feed_token) || !same_str(a->types, b->types) ||
           !same_str(a->filter, b->filter) || a->timeout_ms != b->timeout_ms ||
           a->max_in_flight != b->max_in_flight || a->dead_blocks != b->dead_blocks ||
           policy_differs(&a->policy, &b->policy);
}

/* A push destination without a URL, or with neither a secret nor a signing
   key, or with headers or keys we refuse, cannot be delivered to: it counts
   as absent. */
static bool usable(const struct dest_settings *set)
{
    return !set->push || (set->url != NULL && (set->secret != NULL || set->signer != NULL) &&
                          !set->headers_bad && !set->keys_bad);
}

int destinations_load(struct destinations *ds, const PGresult *res)
{
    int c[N_COLS];
    if (db_columns(res, "destinations", col_names, c, N_COLS) < 0)
        return -EINVAL;
    for (struct dest *d = ds->head; d != NULL; d = d->next)
        d->present = false;
    int rc = 0;
    for (int row = 0; row < PQntuples(res); row++) {
        const char *id = PQgetvalue(res, row, c[C_ID]);
        struct dest *d = destinations_find(ds, id);
        if (d == NULL) {
            d = calloc(1, sizeof(*d));
            if (d == NULL || (d->id = strdup(id)) == NULL) {
                free(d);
                rc = -ENOMEM;
                continue;
            }
            d->next = ds->head;
            ds->head = d;
        }
        struct dest_settings n = {0};
        const char *key_why = NULL;
        if (parse_row(res, row, c, &n, &key_why) < 0) {
            /* keep the old settings rather than lose the destination (a new
               entry has none yet: disabled until a reload loads it) */
            d->present = usable(&d->set);
            rc = -ENOMEM;
            continue;
        }
        if (settings_differ(&d->set, &n))
            d->generation++;
        if (n.headers_bad && !d->set.headers_bad)
            log_error("destination headers refused; nothing is sent to it until they are fixed",
                      json_pack("{s:s,s:s}", "destination", d->id, "hint",
                                "see destination_options_check() for the rules"));
        if (n.keys_bad && !d->set.keys_bad)
            log_error("destination signing key refused; nothing is sent to it until it is fixed",
                      json_pack("{s:s,s:s,s:s}", "destination", d->id, "detail", key_why, "hint",
                                "ordersync keygen makes a key"));
        dest_settings_free(&d->set);
        d->set = n;
        d->present = usable(&d->set);
    }
    if (rc == 0)
        ds->loaded = true;
    if (rc < 0)
        log_error("destinations not fully reloaded", json_pack("{s:i}", "errno", -rc));
    return rc;
}
