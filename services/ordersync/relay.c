/*
 * relay: claim -> deliver -> complete, see relay.h.
 *
 * Destinations live in a list that survives reloads (their in-flight counts
 * and failure streaks are runtime state); a reload updates them in place and
 * marks the ones that vanished. Results are buffered and written in the check
 * phase of the loop, so a burst of responses costs one statement.
 */
#include "relay.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "buf.h"
#include "db.h"
#include "deliver.h"
#include "log.h"
#include "metrics.h"
#include "verify.h"

#define MAX_SCHEDULE 32
#define PARAM_CAP    ((size_t)64 << 20)

enum stmt_id {
    S_CLAIM,
    S_COMPLETE,
    S_SWEEP,
    S_NEXT_DUE,
    S_DESTS,
    S_PAUSE,
    S_RESUME,
    S_DISABLE,
    S_RELEASE,
    S_PRUNE
};

static const struct db_stmt stmts[] = {
    [S_CLAIM] = {"claim", "SELECT id, event_id, destination_id, order_id, attempts, payload, age_s"
                          " FROM outbox_claim($1::text[], $2::integer[],"
                          " make_interval(secs => $3::float8), $4)"},
    [S_COMPLETE] = {"complete", "SELECT outbox_complete($1, $2::bigint[], $3::text[],"
                                " $4::integer[], $5::text[], $6::float8[], $7::float8[],"
                                " $8::integer[], $9::text[], $10::integer[])"},
    [S_SWEEP] = {"sweep", "UPDATE outbox SET state = 'pending', lease_until = NULL,"
                          " lease_owner = NULL WHERE state = 'delivering' AND lease_until < now()"},
    /* rows due in the past but held back by an earlier event are woken by that
       event's completion, not by this timer: hence "> now()" */
    [S_NEXT_DUE] = {"next_due",
                    "SELECT extract(epoch FROM min(n.next_attempt_at) - now())::float8"
                    " FROM destinations d CROSS JOIN LATERAL ("
                    "  SELECT o.next_attempt_at FROM outbox o WHERE o.destination_id = d.id"
                    "   AND o.state = 'pending' AND o.next_attempt_at > now()"
                    "   ORDER BY o.next_attempt_at LIMIT 1) n"
                    " WHERE d.enabled AND d.mode = 'push'"},
    [S_DESTS] = {"dests",
                 "SELECT id, url, secret, previous_secret, timeout_ms, max_in_flight,"
                 " array_to_string(ARRAY(SELECT extract(epoch FROM x)::float8"
                 "   FROM unnest(retry_schedule) x), ','),"
                 " max_attempts, extract(epoch FROM retry_window)::float8, breaker_threshold,"
                 " extract(epoch FROM breaker_pause)::float8,"
                 " extract(epoch FROM max_retry_after)::float8, enabled, mode = 'push',"
                 " coalesce(extract(epoch FROM paused_until - now()), 0)::float8,"
                 " consecutive_failures FROM destinations"},
    [S_PAUSE] = {"pause", "UPDATE destinations SET paused_until = now() + make_interval(secs =>"
                          " $2::float8), consecutive_failures = $3 WHERE id = $1"},
    [S_RESUME] = {"resume",
                  "UPDATE destinations SET paused_until = NULL, consecutive_failures = 0"
                  " WHERE id = $1 AND (paused_until IS NOT NULL OR consecutive_failures <> 0)"},
    [S_DISABLE] = {"disable", "UPDATE destinations SET enabled = false, disabled_reason = $2"
                              " WHERE id = $1"},
    [S_RELEASE] = {"release", "UPDATE outbox SET state = 'pending', lease_until = NULL,"
                              " lease_owner = NULL, attempts = greatest(attempts - 1, 0)"
                              " WHERE id = ANY($1::bigint[]) AND lease_owner = $2"
                              " AND state = 'delivering'"},
    /* delivered rows and their attempts (ON DELETE CASCADE) older than the retention */
    [S_PRUNE] = {"prune", "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
                          " WHERE state = 'delivered' AND delivered_at < now() - make_interval("
                          " days => $1::integer) LIMIT 10000)"},
};

struct dest {
    struct dest *next;
    char *id, *url, *secret, *prev_secret;
    long timeout_ms;
    unsigned max_in_flight;
    double schedule[MAX_SCHEDULE];
    unsigned n_schedule;
    int max_attempts;
    double window_s;
    int breaker_threshold;
    double breaker_pause_s;
    double max_retry_after_s;
    bool enabled, push, present;

    /* runtime */
    unsigned in_flight;
    int failures;          /* consecutive */
    uint64_t paused_until; /* loop ms; 0 = not paused */
    bool probing;          /* pause over: one delivery decides */

    struct metric *m_delivered, *m_retry, *m_client_error, *m_dead, *m_gone, *m_attempts,
        *m_in_flight, *m_seconds, *m_lag, *m_paused;
};

struct job {
    struct relay *r;
    struct dest *d;
    long long id;
    int attempt;
    double age_s;
    double started; /* wall clock, epoch s */
    char *payload;
    size_t payload_len;
    char *url; /* copy: the destination may be reloaded meanwhile */
    char hdr_id[64], hdr_ts[48], hdr_sig[2 * VERIFY_STANDARD_SIG_SIZE + 32];
};

struct result {
    long long id;
    const char *state; /* static */
    int status;        /* 0: NULL */
    char *error;       /* may be NULL */
    double delay;
    double started;
    int duration_ms;
    char *excerpt;
    int attempt;
};

struct relay {
    uv_loop_t *loop;
    struct relay_config cfg;
    char *conninfo, *instance;
    struct db *db;
    struct deliver *http;
    struct dest *dests;
    uv_timer_t due_timer, sweep_timer;
    uv_check_t check;

    bool claiming, rewake, loading, completing, stopping;
    unsigned busy_jobs;
    struct result *results;
    unsigned n_results, cap_results;
    /* reusable buffers for statement parameters (db_query copies them) */
    struct buf params[16]; /* 0-3 claim, 4-13 complete, 14-15 release */
    const char *pv[16];
    long long *released;
    unsigned n_released;

    void (*stop_done)(void *);
    void *stop_data;
    unsigned open_handles;
    bool freeing;

    char retention[16];
    unsigned sweeps;

    struct metric *m_claims, *m_db_errors;
};

static void claim(struct relay *r);
static void maybe_stop_done(struct relay *r);

static uint64_t now_ms(struct relay *r)
{
    return uv_now(r->loop);
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- destinations */

static void dest_free(struct dest *d)
{
    free(d->id);
    free(d->url);
    free(d->secret);
    free(d->prev_secret);
    free(d);
}

static struct dest *dest_find(struct relay *r, const char *id)
{
    for (struct dest *d = r->dests; d != NULL; d = d->next)
        if (strcmp(d->id, id) == 0)
            return d;
    return NULL;
}

static struct metric *dest_metric(const char *name, const char *help, const char *dest,
                                  const char *extra, enum metric_type type)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "destination=\"%s\"%s%s", dest, extra[0] ? "," : "", extra);
    return metrics_get(type, name, help, labels,
                       type == METRIC_HISTOGRAM ? metrics_latency_buckets : NULL,
                       type == METRIC_HISTOGRAM ? metrics_latency_buckets_n : 0);
}

static void dest_metrics(struct dest *d)
{
    const char *dn = "ordersync_deliveries_total";
    const char *dh = "Delivery attempts by destination and outcome";
    d->m_delivered = dest_metric(dn, dh, d->id, "outcome=\"delivered\"", METRIC_COUNTER);
    d->m_retry = dest_metric(dn, dh, d->id, "outcome=\"retry\"", METRIC_COUNTER);
    d->m_client_error = dest_metric(dn, dh, d->id, "outcome=\"client_error\"", METRIC_COUNTER);
    d->m_dead = dest_metric(dn, dh, d->id, "outcome=\"dead\"", METRIC_COUNTER);
    d->m_gone = dest_metric(dn, dh, d->id, "outcome=\"gone\"", METRIC_COUNTER);
    d->m_attempts = dest_metric("ordersync_delivery_attempts_total", "HTTP attempts made", d->id,
                                "", METRIC_COUNTER);
    d->m_in_flight = dest_metric("ordersync_deliveries_in_flight", "Deliveries awaiting a response",
                                 d->id, "", METRIC_GAUGE);
    d->m_seconds = dest_metric("ordersync_delivery_seconds", "Duration of one HTTP attempt", d->id,
                               "", METRIC_HISTOGRAM);
    d->m_lag = dest_metric("ordersync_delivery_lag_seconds",
                           "Time from ingest commit to the destination's 2xx", d->id, "",
                           METRIC_HISTOGRAM);
    d->m_paused =
        dest_metric("ordersync_destination_paused",
                    "1 while the circuit breaker holds the destination", d->id, "", METRIC_GAUGE);
}

static int set_str(char **field, const PGresult *res, int row, int col)
{
    char *v = NULL;
    if (!PQgetisnull(res, row, col)) {
        v = strdup(PQgetvalue(res, row, col));
        if (v == NULL)
            return -ENOMEM;
    }
    free(*field);
    *field = v;
    return 0;
}

static void load_dests(struct relay *r, const PGresult *res)
{
    for (struct dest *d = r->dests; d != NULL; d = d->next)
        d->present = false;
    for (int row = 0; row < PQntuples(res); row++) {
        const char *id = PQgetvalue(res, row, 0);
        struct dest *d = dest_find(r, id);
        if (d == NULL) {
            d = calloc(1, sizeof(*d));
            if (d == NULL || (d->id = strdup(id)) == NULL) {
                free(d);
                log_error("out of memory loading destinations", NULL);
                continue;
            }
            dest_metrics(d);
            d->failures = atoi(PQgetvalue(res, row, 15));
            d->next = r->dests;
            r->dests = d;
        }
        if (set_str(&d->url, res, row, 1) < 0 || set_str(&d->secret, res, row, 2) < 0 ||
            set_str(&d->prev_secret, res, row, 3) < 0) {
            log_error("out of memory loading destinations", NULL);
            continue;
        }
        d->timeout_ms = atol(PQgetvalue(res, row, 4));
        d->max_in_flight = (unsigned)atoi(PQgetvalue(res, row, 5));
        d->n_schedule = 0;
        const char *p = PQgetvalue(res, row, 6);
        while (*p != '\0' && d->n_schedule < MAX_SCHEDULE) {
            char *end;
            d->schedule[d->n_schedule++] = strtod(p, &end);
            p = *end == ',' ? end + 1 : end;
            if (end == p && *p != '\0')
                break;
        }
        if (d->n_schedule == 0)
            d->schedule[d->n_schedule++] = 5;
        d->max_attempts = atoi(PQgetvalue(res, row, 7));
        d->window_s = atof(PQgetvalue(res, row, 8));
        d->breaker_threshold = atoi(PQgetvalue(res, row, 9));
        d->breaker_pause_s = atof(PQgetvalue(res, row, 10));
        d->max_retry_after_s = atof(PQgetvalue(res, row, 11));
        d->enabled = PQgetvalue(res, row, 12)[0] == 't';
        d->push = PQgetvalue(res, row, 13)[0] == 't';
        double paused_for = atof(PQgetvalue(res, row, 14));
        /* another instance (or an operator) may have paused or resumed it */
        if (paused_for > 0)
            d->paused_until = now_ms(r) + (uint64_t)(paused_for * 1000);
        else if (d->paused_until != 0 && !d->probing && PQgetisnull(res, row, 14) == 0)
            d->paused_until = 0;
        metric_set(d->m_paused, d->paused_until > now_ms(r) ? 1 : 0);
        d->present = d->secret != NULL && d->url != NULL;
    }
}

static void on_dests(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    r->loading = false;
    if (err != NULL || res == NULL) {
        log_warn("could not load destinations", json_pack("{s:s}", "detail", err ? err : "?"));
        return;
    }
    load_dests(r, res);
    relay_wake(r);
}

void relay_reload(struct relay *r)
{
    if (r->loading || !db_is_ready(r->db))
        return;
    if (db_query(r->db, true, "dests", 0, NULL, on_dests, r) == 0)
        r->loading = true;
}

/* ---------------------------------------------------------------- results */

static void on_dest_stmt(PGresult *res, const char *err, void *data)
{
    if (err != NULL)
        log_warn("relay statement failed",
                 json_pack("{s:s,s:s}", "statement", (const char *)data, "detail", err));
}

/* Destination bookkeeping (pause, resume, disable): fire and forget, logged on failure. */
static void dest_exec(struct relay *r, const char *stmt, int n, const char *const *v)
{
    if (db_query(r->db, true, stmt, n, v, on_dest_stmt, (void *)stmt) < 0)
        log_warn("relay statement not sent", json_pack("{s:s}", "statement", stmt));
}

/* Array literal element: quoted, with " and \ escaped, non-ASCII replaced (excerpts are bytes). */
static int append_elem(struct buf *b, const char *s)
{
    if (s == NULL)
        return buf_append_str(b, "NULL");
    int rc = buf_append_str(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            rc = buf_append(b, esc, 2);
        } else {
            char c = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
            rc = buf_append(b, &c, 1);
        }
    }
    return rc == 0 ? buf_append_str(b, "\"") : rc;
}

static void on_complete(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    r->completing = false;
    if (err != NULL) {
        /* the rows stay 'delivering' and come back when their lease expires:
           at-least-once holds, at the cost of a redelivery */
        metric_add(r->m_db_errors, 1);
        log_warn("could not record delivery results",
                 json_pack("{s:s}", "detail", err ? err : "connection lost"));
    }
    relay_wake(r);
    maybe_stop_done(r);
}

static void free_results(struct relay *r)
{
    for (unsigned i = 0; i < r->n_results; i++) {
        free(r->results[i].error);
        free(r->results[i].excerpt);
    }
    r->n_results = 0;
}

static void flush_results(struct relay *r)
{
    if (r->completing || r->n_results == 0 || !db_is_ready(r->db))
        return;
    for (int i = 4; i < 14; i++)
        buf_reset(&r->params[i]);
    int rc = buf_append_str(&r->params[4], r->instance);
    for (int i = 5; i < 14 && rc == 0; i++)
        rc = buf_append_str(&r->params[i], "{");
    for (unsigned i = 0; i < r->n_results && rc == 0; i++) {
        struct result *x = &r->results[i];
        const char *sep = i ? "," : "";
        rc = buf_printf(&r->params[5], "%s%lld", sep, x->id);
        if (rc == 0)
            rc = buf_printf(&r->params[6], "%s%s", sep, x->state);
        if (rc == 0)
            rc = x->status ? buf_printf(&r->params[7], "%s%d", sep, x->status)
                           : buf_printf(&r->params[7], "%sNULL", sep);
        if (rc == 0)
            rc = buf_append_str(&r->params[8], sep);
        if (rc == 0)
            rc = append_elem(&r->params[8], x->error);
        if (rc == 0)
            rc = buf_printf(&r->params[9], "%s%.3f", sep, x->delay);
        if (rc == 0)
            rc = buf_printf(&r->params[10], "%s%.6f", sep, x->started);
        if (rc == 0)
            rc = buf_printf(&r->params[11], "%s%d", sep, x->duration_ms);
        if (rc == 0)
            rc = buf_append_str(&r->params[12], sep);
        if (rc == 0)
            rc = append_elem(&r->params[12], x->excerpt);
        if (rc == 0)
            rc = buf_printf(&r->params[13], "%s%d", sep, x->attempt);
    }
    for (int i = 5; i < 14 && rc == 0; i++)
        rc = buf_append_str(&r->params[i], "}");
    free_results(r);
    if (rc < 0) {
        log_error("could not build delivery results", json_pack("{s:i}", "errno", -rc));
        return;
    }
    for (int i = 4; i < 14; i++)
        r->pv[i] = r->params[i].data;
    if (db_query(r->db, true, "complete", 10, &r->pv[4], on_complete, r) == 0)
        r->completing = true;
}

static int add_result(struct relay *r, const struct result *x)
{
    if (r->n_results == r->cap_results) {
        unsigned cap = r->cap_results ? r->cap_results * 2 : 64;
        struct result *n = realloc(r->results, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        r->results = n;
        r->cap_results = cap;
    }
    r->results[r->n_results++] = *x;
    return 0;
}

/* ---------------------------------------------------------------- outcomes */

static double jitter(void)
{
    unsigned short v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = (unsigned short)rand();
    return 1.0 + 0.2 * ((double)v / 65535.0); /* positive: never earlier than the schedule */
}

static void pause_dest(struct relay *r, struct dest *d)
{
    d->paused_until = now_ms(r) + (uint64_t)(d->breaker_pause_s * 1000);
    d->probing = false;
    metric_set(d->m_paused, 1);
    char secs[32], fails[16];
    snprintf(secs, sizeof(secs), "%.3f", d->breaker_pause_s);
    snprintf(fails, sizeof(fails), "%d", d->failures);
    const char *v[3] = {d->id, secs, fails};
    log_warn("destination paused",
             json_pack("{s:s,s:i,s:f}", "destination", d->id, "consecutive_failures", d->failures,
                       "pause_s", d->breaker_pause_s));
    dest_exec(r, "pause", 3, v);
}

static void on_delivered(const struct deliver_result *res, void *data)
{
    struct job *j = data;
    struct relay *r = j->r;
    struct dest *d = j->d;
    d->in_flight--;
    r->busy_jobs--;
    metric_set(d->m_in_flight, d->in_flight);

    if (res->aborted) {
        /* aborted by shutdown: not an attempt; its lease is released */
        long long *n = realloc(r->released, (r->n_released + 1) * sizeof(*n));
        if (n != NULL) {
            r->released = n;
            r->released[r->n_released++] = j->id;
        }
        goto done;
    }

    metric_add(d->m_attempts, 1);
    metric_observe(d->m_seconds, res->seconds);
    long st = res->http_status;
    struct result x = {.id = j->id,
                       .status = (int)st,
                       .started = j->started,
                       .duration_ms = (int)(res->seconds * 1000),
                       .attempt = j->attempt};
    char err[160] = "";
    if (st >= 200 && st < 300) {
        x.state = "delivered";
        metric_add(d->m_delivered, 1);
        metric_observe(d->m_lag, j->age_s + res->seconds);
        bool was = d->failures > 0 || d->probing || d->paused_until != 0;
        d->failures = 0;
        if (was) {
            if (d->probing)
                log_info("destination resumed", json_pack("{s:s}", "destination", d->id));
            d->probing = false;
            d->paused_until = 0;
            metric_set(d->m_paused, 0);
            const char *v[1] = {d->id};
            dest_exec(r, "resume", 1, v);
        }
    } else {
        bool retryable = st == 0 || st == 408 || st == 425 || st == 429 || st >= 500;
        if (st == 0)
            snprintf(err, sizeof(err), "%s", res->error ? res->error : "transport error");
        else
            snprintf(err, sizeof(err), "HTTP %ld", st);
        d->failures++;
        if (st == 410) {
            metric_add(d->m_gone, 1);
            d->enabled = false;
            char reason[96];
            snprintf(reason, sizeof(reason), "answered 410 Gone to delivery %lld", j->id);
            const char *v[2] = {d->id, reason};
            log_warn("destination disabled",
                     json_pack("{s:s,s:s}", "destination", d->id, "reason", reason));
            dest_exec(r, "disable", 2, v);
        } else if (!retryable) {
            metric_add(d->m_client_error, 1);
        }
        unsigned k = (unsigned)(j->attempt - 1) < d->n_schedule ? (unsigned)(j->attempt - 1)
                                                                : d->n_schedule - 1;
        double delay = d->schedule[k] * jitter();
        if (retryable && res->retry_after_s >= 0) {
            double hint = res->retry_after_s < d->max_retry_after_s ? res->retry_after_s
                                                                    : d->max_retry_after_s;
            if (hint > delay)
                delay = hint;
        }
        if (j->attempt >= d->max_attempts || j->age_s + delay > d->window_s) {
            x.state = "dead";
            metric_add(d->m_dead, 1);
            log_warn("delivery dead",
                     json_pack("{s:s,s:I,s:i,s:s}", "destination", d->id, "outbox_id",
                               (json_int_t)j->id, "attempts", j->attempt, "last_error", err));
        } else {
            x.state = "pending";
            x.delay = delay;
            metric_add(d->m_retry, 1);
            log_info("delivery failed, will retry",
                     json_pack("{s:s,s:I,s:i,s:s,s:f}", "destination", d->id, "outbox_id",
                               (json_int_t)j->id, "attempt", j->attempt, "error", err, "retry_in_s",
                               delay));
        }
        if (d->probing || (d->failures >= d->breaker_threshold && d->paused_until == 0))
            pause_dest(r, d);
    }
    x.error = err[0] ? strdup(err) : NULL;
    x.excerpt = res->excerpt[0] ? strdup(res->excerpt) : NULL;
    if (add_result(r, &x) < 0) {
        free(x.error);
        free(x.excerpt);
        log_error("out of memory recording a delivery result; its lease will expire", NULL);
    }
done:
    free(j->payload);
    free(j->url);
    free(j);
}

/* ---------------------------------------------------------------- claims */

static void start_job(struct relay *r, struct dest *d, const PGresult *res, int row)
{
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return; /* its lease expires and the row comes back */
    j->r = r;
    j->d = d;
    j->id = atoll(PQgetvalue(res, row, 0));
    j->attempt = atoi(PQgetvalue(res, row, 4));
    j->age_s = atof(PQgetvalue(res, row, 6));
    j->payload_len = (size_t)PQgetlength(res, row, 5);
    j->payload = malloc(j->payload_len + 1);
    j->url = strdup(d->url);
    if (j->payload == NULL || j->url == NULL)
        goto fail;
    memcpy(j->payload, PQgetvalue(res, row, 5), j->payload_len + 1);

    /* webhook-id: "msg_" + the event uuid without dashes; stable across retries */
    const char *uuid = PQgetvalue(res, row, 1);
    char *o = j->hdr_id + snprintf(j->hdr_id, sizeof(j->hdr_id), "webhook-id: msg_");
    for (const char *p = uuid; *p && o < j->hdr_id + sizeof(j->hdr_id) - 1; p++)
        if (*p != '-')
            *o++ = *p;
    *o = '\0';
    const char *msg_id = j->hdr_id + strlen("webhook-id: ");
    j->started = wall_now();
    int64_t ts = (int64_t)j->started;
    snprintf(j->hdr_ts, sizeof(j->hdr_ts), "webhook-timestamp: %lld", (long long)ts);
    /* during a rotation, one signature per active secret, space-separated */
    char sig1[VERIFY_STANDARD_SIG_SIZE], sig2[VERIFY_STANDARD_SIG_SIZE];
    if (verify_sign_standard(msg_id, ts, j->payload, j->payload_len, d->secret, sig1,
                             sizeof(sig1)) < 0)
        goto bad_secret;
    if (d->prev_secret != NULL) {
        if (verify_sign_standard(msg_id, ts, j->payload, j->payload_len, d->prev_secret, sig2,
                                 sizeof(sig2)) < 0)
            goto bad_secret;
        snprintf(j->hdr_sig, sizeof(j->hdr_sig), "webhook-signature: %s %s", sig1, sig2);
    } else {
        snprintf(j->hdr_sig, sizeof(j->hdr_sig), "webhook-signature: %s", sig1);
    }
    const char *headers[] = {"Content-Type: application/json", j->hdr_id, j->hdr_ts, j->hdr_sig,
                             NULL};
    struct deliver_request req = {.url = j->url,
                                  .body = j->payload,
                                  .body_len = j->payload_len,
                                  .headers = headers,
                                  .timeout_ms = d->timeout_ms};
    d->in_flight++;
    r->busy_jobs++;
    if (deliver_start(r->http, &req, on_delivered, j) < 0) {
        d->in_flight--;
        r->busy_jobs--;
        goto fail;
    }
    metric_set(d->m_in_flight, d->in_flight);
    return;
bad_secret:
    log_error("destination secret is not a valid whsec_ key",
              json_pack("{s:s}", "destination", d->id));
fail:
    free(j->payload);
    free(j->url);
    free(j);
}

static bool dest_claimable(struct relay *r, struct dest *d, unsigned *room)
{
    if (!d->present || !d->enabled || !d->push)
        return false;
    if (d->paused_until != 0) {
        if (d->paused_until > now_ms(r))
            return false;
        d->probing = true; /* the pause is over: one delivery decides */
        metric_set(d->m_paused, 0);
    }
    unsigned cap = d->probing ? 1 : d->max_in_flight;
    if (d->in_flight >= cap)
        return false;
    *room = cap - d->in_flight;
    if (*room > r->cfg.claim_batch)
        *room = r->cfg.claim_batch;
    return true;
}

static void schedule_due(struct relay *r, double secs);

static void on_next_due(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    double secs = r->cfg.sweep_interval_s;
    if (err == NULL && res != NULL && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        secs = atof(PQgetvalue(res, 0, 0));
    schedule_due(r, secs);
}

static void on_due_timer(uv_timer_t *t)
{
    claim(t->data);
}

/* Arms the timer for the earliest of: the next due retry, the end of a pause, the sweep. */
static void schedule_due(struct relay *r, double secs)
{
    if (r->stopping)
        return;
    log_debug("next claim", json_pack("{s:f}", "in_s", secs));
    if (secs > r->cfg.sweep_interval_s)
        secs = r->cfg.sweep_interval_s;
    uint64_t ms = secs > 0 ? (uint64_t)(secs * 1000) + 1 : 1;
    uint64_t now = now_ms(r);
    for (struct dest *d = r->dests; d != NULL; d = d->next)
        if (d->paused_until > now && d->paused_until - now < ms)
            ms = d->paused_until - now + 1;
    uv_timer_start(&r->due_timer, on_due_timer, ms, 0);
}

static void on_claim(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    r->claiming = false;
    if (err != NULL || res == NULL) {
        metric_add(r->m_db_errors, 1);
        if (res != NULL)
            log_warn("claim failed", json_pack("{s:s}", "detail", err));
        schedule_due(r, 1);
        return;
    }
    int n = PQntuples(res);
    metric_add(r->m_claims, 1);
    log_debug("claimed", json_pack("{s:i}", "rows", n));
    for (int row = 0; row < n; row++) {
        struct dest *d = dest_find(r, PQgetvalue(res, row, 2));
        if (d == NULL || r->stopping) {
            /* should not happen (we named the destinations); leave it to the lease */
            continue;
        }
        start_job(r, d, res, row);
    }
    if (r->rewake) {
        r->rewake = false;
        claim(r);
        return;
    }
    if (n == 0 && !r->stopping && db_is_ready(r->db))
        if (db_query(r->db, true, "next_due", 0, NULL, on_next_due, r) < 0)
            schedule_due(r, 1);
}

static void claim(struct relay *r)
{
    if (r->stopping || !db_is_ready(r->db))
        return;
    if (r->claiming) {
        r->rewake = true;
        return;
    }
    struct buf *ids = &r->params[0], *lims = &r->params[1];
    buf_reset(ids);
    buf_reset(lims);
    int rc = buf_append_str(ids, "{");
    if (rc == 0)
        rc = buf_append_str(lims, "{");
    unsigned n = 0;
    for (struct dest *d = r->dests; d != NULL && rc == 0; d = d->next) {
        unsigned room;
        if (!dest_claimable(r, d, &room))
            continue;
        rc = buf_append_str(ids, n ? "," : "");
        if (rc == 0)
            rc = append_elem(ids, d->id);
        if (rc == 0)
            rc = buf_printf(lims, "%s%u", n ? "," : "", room);
        n++;
    }
    if (rc == 0)
        rc = buf_append_str(ids, "}");
    if (rc == 0)
        rc = buf_append_str(lims, "}");
    if (rc < 0 || n == 0) {
        /* nothing has room (or nothing to deliver to): completions or timers wake us */
        schedule_due(r, r->cfg.sweep_interval_s);
        return;
    }
    buf_reset(&r->params[2]);
    buf_reset(&r->params[3]);
    unsigned lease = r->cfg.lease_s;
    for (struct dest *d = r->dests; d != NULL; d = d->next)
        if (d->present && (unsigned)(d->timeout_ms / 1000) + 30 > lease)
            lease = (unsigned)(d->timeout_ms / 1000) + 30; /* a lease must outlive the request */
    if (buf_printf(&r->params[2], "%u", lease) < 0 ||
        buf_append_str(&r->params[3], r->instance) < 0)
        return;
    r->pv[0] = ids->data;
    r->pv[1] = lims->data;
    r->pv[2] = r->params[2].data;
    r->pv[3] = r->params[3].data;
    if (db_query(r->db, true, "claim", 4, r->pv, on_claim, r) == 0)
        r->claiming = true;
}

void relay_wake(struct relay *r)
{
    if (r->completing) {
        /* rows just delivered are still 'delivering' in the database until the
           results are written; claiming now could skip their successors */
        return;
    }
    claim(r);
}

/* ---------------------------------------------------------------- sweep, lifecycle */

static void on_sweep(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    if (err == NULL && res != NULL) {
        const char *n = PQcmdTuples(res);
        if (n[0] != '\0' && strcmp(n, "0") != 0)
            log_info("expired leases released", json_pack("{s:s}", "rows", n));
    }
    relay_wake(r);
}

static void on_prune(PGresult *res, const char *err, void *data)
{
    if (err == NULL && res != NULL && strcmp(PQcmdTuples(res), "0") != 0)
        log_info("pruned delivered outbox rows", json_pack("{s:s}", "rows", PQcmdTuples(res)));
}

static void on_sweep_timer(uv_timer_t *t)
{
    struct relay *r = t->data;
    if (r->stopping || !db_is_ready(r->db))
        return;
    if (db_query(r->db, true, "sweep", 0, NULL, on_sweep, r) < 0)
        return;
    /* pruning is slow work: every 20th sweep, 10k rows at a time */
    if (r->cfg.retention_days > 0 && ++r->sweeps % 20 == 1) {
        snprintf(r->retention, sizeof(r->retention), "%u", r->cfg.retention_days);
        const char *v[1] = {r->retention};
        if (db_query(r->db, true, "prune", 1, v, on_prune, r) < 0)
            log_debug("prune not sent", NULL);
    }
}

static void on_check(uv_check_t *h)
{
    flush_results(h->data);
}

static void on_ready(struct db *db, void *data)
{
    struct relay *r = data;
    r->claiming = r->completing = r->loading = false;
    relay_reload(r);
    if (db_query(db, true, "sweep", 0, NULL, on_sweep, r) < 0)
        return;
}

static const struct db_callbacks relay_cbs = {.on_ready = on_ready};

int relay_new(uv_loop_t *loop, const struct relay_config *cfg, struct relay **out)
{
    struct relay *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->loop = loop;
    r->cfg = *cfg;
    if (r->cfg.claim_batch == 0)
        r->cfg.claim_batch = 256;
    if (r->cfg.sweep_interval_s == 0)
        r->cfg.sweep_interval_s = 30;
    if (r->cfg.lease_s == 0)
        r->cfg.lease_s = 60;
    for (int i = 0; i < 16; i++)
        buf_init(&r->params[i], PARAM_CAP);
    r->instance = strdup(cfg->instance ? cfg->instance : "ordersync");
    r->conninfo = cfg->conninfo ? strdup(cfg->conninfo) : NULL;
    if (r->instance == NULL || (cfg->conninfo != NULL && r->conninfo == NULL))
        goto fail;
    r->cfg.instance = r->instance;
    r->cfg.conninfo = r->conninfo;
    char ua[64];
    snprintf(ua, sizeof(ua), "ordersync/%s", ORDERSYNC_VERSION);
    int rc = deliver_new(loop, ua, 1024, &r->http);
    if (rc < 0)
        goto fail;
    uv_timer_init(loop, &r->due_timer);
    uv_timer_init(loop, &r->sweep_timer);
    uv_check_init(loop, &r->check);
    r->due_timer.data = r->sweep_timer.data = r->check.data = r;
    r->open_handles = 3;
    uv_check_start(&r->check, on_check);
    uv_unref((uv_handle_t *)&r->check);
    uv_timer_start(&r->sweep_timer, on_sweep_timer, (uint64_t)r->cfg.sweep_interval_s * 1000,
                   (uint64_t)r->cfg.sweep_interval_s * 1000);
    r->m_claims = metrics_counter("ordersync_relay_claims_total", "Claim statements run", "");
    r->m_db_errors = metrics_counter("ordersync_db_errors_total", "Failed database operations",
                                     "component=\"relay\"");
    rc = db_open(loop, r->conninfo, "relay", stmts, (int)(sizeof(stmts) / sizeof(stmts[0])),
                 &relay_cbs, r, &r->db);
    if (rc < 0) {
        relay_free(&r);
        return rc;
    }
    *out = r;
    return 0;
fail:
    free(r->instance);
    free(r->conninfo);
    for (int i = 0; i < 16; i++)
        buf_free(&r->params[i]);
    free(r);
    return -ENOMEM;
}

unsigned relay_busy(const struct relay *r)
{
    return r->busy_jobs + r->n_results + (r->completing ? 1 : 0);
}

static void on_released(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    if (err != NULL)
        log_warn("could not release leases; they expire by themselves",
                 json_pack("{s:s}", "detail", err));
    else
        log_info("leases released", json_pack("{s:s}", "rows", PQcmdTuples(res)));
    r->n_released = 0;
    maybe_stop_done(r);
}

static void maybe_stop_done(struct relay *r)
{
    if (!r->stopping || r->stop_done == NULL)
        return;
    if (r->busy_jobs > 0 || r->completing)
        return;
    if (r->n_results > 0 && db_is_ready(r->db)) {
        flush_results(r);
        if (r->completing)
            return;
    }
    if (r->n_released > 0 && db_is_ready(r->db)) {
        buf_reset(&r->params[14]);
        buf_reset(&r->params[15]);
        int rc = buf_append_str(&r->params[14], "{");
        for (unsigned i = 0; i < r->n_released && rc == 0; i++)
            rc = buf_printf(&r->params[14], "%s%lld", i ? "," : "", r->released[i]);
        if (rc == 0)
            rc = buf_append_str(&r->params[14], "}");
        if (rc == 0)
            rc = buf_append_str(&r->params[15], r->instance);
        r->pv[14] = r->params[14].data;
        r->pv[15] = r->params[15].data;
        if (rc == 0 && db_query(r->db, true, "release", 2, &r->pv[14], on_released, r) == 0) {
            r->completing = true; /* reuse the flag: one statement in flight */
            return;
        }
    }
    void (*done)(void *) = r->stop_done;
    r->stop_done = NULL;
    done(r->stop_data);
}

void relay_stop(struct relay *r, void (*done)(void *data), void *data)
{
    r->stopping = true;
    r->stop_done = done;
    r->stop_data = data;
    uv_timer_stop(&r->due_timer);
    uv_timer_stop(&r->sweep_timer);
    maybe_stop_done(r);
}

void relay_abort(struct relay *r)
{
    r->stopping = true;
    /* callbacks run now with "aborted": their ids go to r->released */
    deliver_free(&r->http);
    r->completing = false;
    maybe_stop_done(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct relay *r = h->data;
    if (--r->open_handles > 0)
        return;
    free_results(r);
    free(r->results);
    free(r->released);
    for (int i = 0; i < 16; i++)
        buf_free(&r->params[i]);
    while (r->dests != NULL) {
        struct dest *d = r->dests;
        r->dests = d->next;
        dest_free(d);
    }
    free(r->instance);
    free(r->conninfo);
    free(r);
}

void relay_free(struct relay **pr)
{
    struct relay *r = *pr;
    if (r == NULL)
        return;
    *pr = NULL;
    r->stopping = true;
    r->stop_done = NULL;
    deliver_free(&r->http); /* aborts anything left; callbacks only record */
    db_close(&r->db);       /* fails queued statements: their callbacks see stopping */
    uv_close((uv_handle_t *)&r->due_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->sweep_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->check, on_handle_closed);
}
