/*
 * relay: the loop of delivery, see relay.h. Decisions are relay_policy's,
 * ordering is relay_window's; this file does the I/O and keeps the books.
 *
 * A `struct job` is one event on its way to one destination:
 *   - a stream job was read from a stream; a window entry points to it
 *     until the cursor passes it (in_window) and libcurl holds it while its
 *     request runs (in_http). When the cursor passes it still in flight, it
 *     becomes a row job (its event got a leased row).
 *   - a row job is a claimed `deliveries` row (a retry, or an event that
 *     waited behind another); its result settles the row.
 * A job is freed when neither the window nor libcurl holds it. Jobs refer to
 * their stream by destination and generation, never by pointer: a stream is
 * reset (its window dropped) whenever what the database holds for it is
 * uncertain, and the results of its old jobs are then ignored (their events
 * are delivered again: at least once).
 *
 * Results are written once per loop turn (uv_check), in one statement, one
 * statement at a time: a burst of responses costs one round trip.
 *
 * A destination's rate limit (relay_rate.h) is one more bound on its room
 * next to max_in_flight and the breaker (dest_room): what it holds back waits
 * in the window, or as due rows nobody claims, until the rate timer says
 * the next token is there. No read or claim is made on its behalf meanwhile.
 */
#include "relay.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "buf.h"
#include "db.h"
#include "http_client.h"
#include "log.h"
#include "metrics.h"
#include "relay_window.h"
#include "trace.h"
#include "verify.h"

#define PARAM_CAP ((size_t)64 << 20)
/* An event in flight this long at the head of a window gets a leased row, so
   that one slow receiver's request does not hold the cursor back. */
#define LEASE_AFTER_MS      1000
#define LEASE_AFTER_FULL_MS 250
/* A row that could not even be sent (bad secret, out of memory) is offered again after this */
#define NOT_SENT_DELAY_S 5.0
/* While the rate limit holds deliveries back, delivery_streams.limited_until
   is kept this far ahead (sync_backlog.rate_limited), written again when
   half of it has passed: a flag nobody refreshes lapses by itself. */
#define LIMITED_HOLD_S 5
/* A stream is sent to for at most this share of a lease after the acquire
   that renewed it was sent (stream_leased); the rest absorbs the loop's
   cached clock and the database's and this host's clocks running apart. */
#define LEASE_TRUST_PERMILLE 900

enum stmt_id {
    S_CLAIM,
    S_COMPLETE,
    S_ACQUIRE,
    S_NEXT_DUE,
    S_SWEEP,
    S_RELEASE_OWN,
    S_LEAVE,
    S_PAUSE,
    S_RESUME,
    S_DISABLE,
    S_LIMITED,
    N_STMTS
};

static const struct db_stmt stmts[N_STMTS] = {
    [S_CLAIM] = {"claim", "SELECT destination_id, event_position, replace(event_id::text, '-', '')"
                          " AS event_id, order_id, attempts, payload, age_s, trace_id"
                          " FROM delivery_claim($1::text[], $2::integer[],"
                          " make_interval(secs => $3::float8), $4)"},
    [S_COMPLETE] = {"complete", "SELECT lost FROM relay_complete($1, $2::jsonb)"},
    [S_ACQUIRE] = {"acquire", "SELECT destination_id, stream_position FROM relay_acquire($1,"
                              " make_interval(secs => $2::float8), $3::text[])"},
    /* rows due now but not claimed wait for room: completions wake us for those */
    [S_NEXT_DUE] = {"next_due", "SELECT extract(epoch FROM min(n.next_at) - now())::float8 AS in_s"
                                " FROM unnest($1::text[]) d(id) CROSS JOIN LATERAL ("
                                "  SELECT x.next_at FROM deliveries x WHERE x.destination_id = d.id"
                                "   AND x.state = 'pending' AND x.next_at > now()"
                                "   ORDER BY x.next_at LIMIT 1) n"},
    [S_SWEEP] = {"sweep", "SELECT released, unblocked FROM relay_sweep()"},
    [S_RELEASE_OWN] = {"release_own",
                       "SELECT relay_release_own($1, $2::text[], $3::bigint[]) AS released"},
    [S_LEAVE] = {"leave", "SELECT relay_leave($1)"},
    [S_PAUSE] = {"pause", "UPDATE destinations SET paused_until = now() + make_interval(secs =>"
                          " $2::float8), consecutive_failures = $3 WHERE id = $1"},
    [S_RESUME] = {"resume",
                  "UPDATE destinations SET paused_until = NULL, consecutive_failures = 0"
                  " WHERE id = $1 AND (paused_until IS NOT NULL OR consecutive_failures <> 0)"},
    [S_DISABLE] = {"disable", "UPDATE destinations SET enabled = false, disabled_reason = $2"
                              " WHERE id = $1"},
    [S_LIMITED] = {"limited",
                   "UPDATE delivery_streams SET limited_until = now() + make_interval(secs =>"
                   " $3::float8) WHERE destination_id = $1 AND lease_owner = $2"},
};

/* The read connection's one statement (see read_streams). */
static const struct db_stmt read_stmts[] = {
    {"stream_read",
     "SELECT destination_id, horizon, event_position, event_id, order_id,"
     " created_at, payload, age_s, held, trace_id FROM stream_read($1::text[], $2::bigint[],"
     " $3::text[], $4::integer[], $5::boolean[])"},
};

enum job_result { JOB_NONE, JOB_OK, JOB_RETRY, JOB_DEAD, JOB_RELEASED };

struct job {
    struct job *prev, *next; /* requests running (relay.in_http) */
    struct relay *r;
    struct dest *d;
    uint64_t stream_gen; /* stream jobs: the stream generation it was read in */
    bool in_window, in_http, row;
    int64_t position, order_id;
    char created_at[48]; /* the event's partition key, as the database printed it */
    char msg_id[40];     /* "msg_" + event uuid hex: the webhook-id */
    char trace_id[TRACE_ID_HEX +
                  1]; /* the order's trace (see trace.h); empty for events from before */
    int attempt;
    double age_s;   /* of the event when read */
    double started; /* wall clock, epoch s */
    char *payload;
    size_t payload_len;
    /* the outcome, once known */
    enum job_result result;
    int status, ms;
    double delay_s;
    char *error, *excerpt;
};

struct stream {
    struct stream *next;
    struct dest *d;
    uint64_t gen;
    int64_t cursor;   /* as written (or being written) to the database */
    int64_t read_pos; /* every event up to here was read into the window or skipped */
    struct relay_window win;
    uint64_t dest_gen;       /* the destination settings the window was made with */
    bool untaint_after_read; /* its completion came back while a read was out */
    bool in_complete;        /* part of the statement in flight */
    bool unsure;             /* a statement about it failed: wait for the database's cursor */
    int64_t complete_from, complete_to;
    uint64_t lease_until_ms; /* loop ms: sending stops here unless a renewal comes back */
};

struct relay {
    uv_loop_t *loop;
    struct relay_config cfg;
    char *conninfo, *instance;
    struct destinations *dests;
    struct db *db;      /* leases, claims, completions, bookkeeping */
    struct db *db_read; /* stream reads only */
    struct http_client *http;
    struct stream *streams;
    struct job *in_http; /* every job whose request runs */
    uint64_t next_gen;
    uv_timer_t due_timer, sweep_timer, acquire_timer, rate_timer;
    uv_check_t check;
    uint64_t rate_timer_at;   /* loop ms the rate timer fires at, when it runs */
    uint64_t acquire_sent_ms; /* loop ms the acquire in flight was sent */

    bool claiming, reclaim, acquiring, reacquire, completing, stopping, aborting, leaving;
    bool reading, reread;
    bool complete_had_rows; /* the statement in flight writes or settles rows */
    unsigned jobs_in_http;
    unsigned bad_results; /* row results waiting to be written */
    struct job **results;
    unsigned n_results, cap_results;
    struct buf doc, params[4], rparams[5];
    char lease_text[32];

    void (*stop_done)(void *);
    void *stop_data;
    unsigned open_handles;

    struct metric *m_claims, *m_db_errors, *m_reads;
};

static void claim(struct relay *r);
static void read_streams(struct relay *r);
static int append_json_str(struct buf *b, const char *s);
static void dispatch(struct relay *r, struct stream *s);
static void maybe_stop_done(struct relay *r);
static void acquire(struct relay *r);

static uint64_t now_ms(struct relay *r)
{
    return uv_now(r->loop);
}

/* The rate limit's clock: the time now, not the loop's, cached when this turn
   began, so that a token is counted when its request really starts. */
static uint64_t rate_now(void)
{
    return uv_hrtime() / 1000000;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double jitter(void)
{
    unsigned short v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1)
        v = (unsigned short)rand();
    return 1.0 + 0.2 * ((double)v / 65535.0);
}

/*
 * A claimed row's lease must outlive its request, with room to write the
 * result: a destination's timeout plus a margin of 30 s, or of the lease
 * itself when that is shorter (ORDERSYNC_LEASE_S is how soon work passes to
 * another instance when its process dies; a shorter margin risks a duplicate,
 * never a loss).
 */
static unsigned lease_s(struct relay *r)
{
    unsigned lease = r->cfg.lease_s;
    unsigned margin = lease < 30 ? lease : 30;
    for (struct dest *d = destinations_first(r->dests); d != NULL; d = d->next)
        if (d->present && d->push && (unsigned)(d->timeout_ms / 1000) + margin > lease)
            lease = (unsigned)(d->timeout_ms / 1000) + margin;
    return lease;
}

/* ---------------------------------------------------------------- destinations */

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
    if (d->metrics_ready)
        return;
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
    d->metrics_ready = true;
}

/* Is d a destination to deliver to now (not paused, not disabled)? */
static bool dest_usable(struct relay *r, const struct dest *d)
{
    return d->present && d->enabled && d->push && !r->stopping &&
           (d->breaker.paused_until == 0 || d->breaker.paused_until <= now_ms(r));
}

/* Whole tokens d's rate limit allows now (UINT32_MAX: none), the current limit applied first. */
static uint32_t dest_tokens(struct dest *d)
{
    uint64_t now = rate_now();
    relay_rate_set(&d->rate, d->rate_limit_per_s, now);
    return relay_rate_room(&d->rate, now);
}

/*
 * Can the relay deliver to d now, and how many more requests may it start?
 * Sets d->rate_short when the rate limit is what stops (no token) or bounds
 * (fewer tokens than places in flight) the answer.
 */
static bool dest_room(struct relay *r, struct dest *d, unsigned *room)
{
    d->rate_short = false;
    if (!d->present || !d->enabled || !d->push || r->stopping)
        return false;
    unsigned cap;
    if (!relay_breaker_allows(&d->breaker, now_ms(r), d->max_in_flight, &cap))
        return false;
    metric_set(d->m_paused, 0);
    if (d->in_flight >= cap)
        return false;
    *room = cap - d->in_flight;
    uint32_t tokens = dest_tokens(d);
    if (tokens <= *room) {
        d->rate_short = true;
        *room = tokens;
    }
    return *room > 0;
}

static void on_rate_timer(uv_timer_t *t);

/* d waits for a token: one timer for every destination, at the soonest next token. */
static void rate_wait(struct relay *r, struct dest *d)
{
    if (r->stopping)
        return;
    /* +1: the timer runs on the loop's clock, which may lag rate_now() a little */
    uint64_t wait = relay_rate_wait_ms(&d->rate, rate_now()) + 1;
    uint64_t at = now_ms(r) + wait;
    if (uv_is_active((uv_handle_t *)&r->rate_timer) && r->rate_timer_at <= at)
        return;
    r->rate_timer_at = at;
    uv_timer_start(&r->rate_timer, on_rate_timer, wait, 0);
}

static void on_dest_stmt(PGresult *res, const char *err, void *data)
{
    if (err != NULL)
        log_warn("relay statement failed",
                 json_pack("{s:s,s:s}", "statement", (const char *)data, "detail", err));
}

/*
 * The rate limit holds back deliveries that are ready: sync_backlog shows it
 * (rate_limited) while delivery_streams.limited_until is ahead. Only the
 * stream's owner writes it, at most every LIMITED_HOLD_S / 2 seconds.
 */
static void note_limited(struct relay *r, struct dest *d)
{
    uint64_t now = now_ms(r);
    if (d->limited_noted_ms != 0 && now - d->limited_noted_ms < LIMITED_HOLD_S * 1000 / 2)
        return;
    char hold[16];
    snprintf(hold, sizeof(hold), "%d", LIMITED_HOLD_S);
    const char *v[3] = {d->id, r->instance, hold};
    if (db_query(r->db, true, "limited", 3, v, on_dest_stmt, (void *)"limited") == 0)
        d->limited_noted_ms = now;
}

/* Destination bookkeeping (pause, resume, disable): fire and forget, logged on failure. */
static void dest_exec(struct relay *r, const char *stmt, int n, const char *const *v)
{
    if (db_query(r->db, true, stmt, n, v, on_dest_stmt, (void *)stmt) < 0)
        log_warn("relay statement not sent", json_pack("{s:s}", "statement", stmt));
}

/* ---------------------------------------------------------------- jobs */

static void job_free(struct job *j)
{
    free(j->payload);
    free(j->error);
    free(j->excerpt);
    free(j);
}

/* Frees a job nobody holds any more. */
static void job_release(struct job *j)
{
    if (!j->in_window && !j->in_http)
        job_free(j);
}

static struct job *job_new(struct relay *r, struct dest *d, const PGresult *res, int row, int c_pos,
                           int c_id, int c_order, int c_payload, int c_age, int c_trace)
{
    struct job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->r = r;
    j->d = d;
    j->position = strtoll(PQgetvalue(res, row, c_pos), NULL, 10);
    j->order_id = strtoll(PQgetvalue(res, row, c_order), NULL, 10);
    j->age_s = atof(PQgetvalue(res, row, c_age));
    snprintf(j->msg_id, sizeof(j->msg_id), "msg_%s", PQgetvalue(res, row, c_id));
    /* hex digits, as the statement prints it; NULL (events from before) leaves it empty */
    if (PQgetlength(res, row, c_trace) == TRACE_ID_HEX)
        memcpy(j->trace_id, PQgetvalue(res, row, c_trace), TRACE_ID_HEX + 1);
    j->payload_len = (size_t)PQgetlength(res, row, c_payload);
    j->payload = malloc(j->payload_len + 1);
    if (j->payload == NULL) {
        free(j);
        return NULL;
    }
    memcpy(j->payload, PQgetvalue(res, row, c_payload), j->payload_len + 1);
    j->attempt = 1;
    return j;
}

static struct stream *find_stream(struct relay *r, const struct dest *d)
{
    for (struct stream *s = r->streams; s != NULL; s = s->next)
        if (s->d == d)
            return s;
    return NULL;
}

/* The stream the job was read in, if it still exists as it was. */
static struct stream *job_stream(struct job *j)
{
    struct stream *s = find_stream(j->r, j->d);
    return s != NULL && s->gen == j->stream_gen ? s : NULL;
}

static int add_result(struct relay *r, struct job *j)
{
    if (r->n_results == r->cap_results) {
        unsigned cap = r->cap_results ? r->cap_results * 2 : 64;
        struct job **n = realloc(r->results, cap * sizeof(*n));
        if (n == NULL)
            return -ENOMEM;
        r->results = n;
        r->cap_results = cap;
    }
    r->results[r->n_results++] = j;
    return 0;
}

/* A row job is done: its result goes to the next completion statement. */
static void row_result(struct relay *r, struct job *j)
{
    if (add_result(r, j) < 0) {
        log_error(
            "out of memory recording a delivery result; its lease will expire",
            json_pack("{s:s,s:I}", "destination", j->d->id, "position", (json_int_t)j->position));
        job_free(j);
    }
}

static void set_outcome(struct job *j, enum job_result result, int status, int ms, double delay,
                        const char *error, const char *excerpt)
{
    j->result = result;
    j->status = status;
    j->ms = ms;
    j->delay_s = delay;
    free(j->error);
    free(j->excerpt);
    j->error = error && error[0] ? strdup(error) : NULL;
    j->excerpt = excerpt && excerpt[0] ? strdup(excerpt) : NULL;
}

static void pause_dest(struct relay *r, struct dest *d)
{
    metric_set(d->m_paused, 1);
    char secs[32], fails[16];
    snprintf(secs, sizeof(secs), "%.3f", d->policy.breaker_pause_s);
    snprintf(fails, sizeof(fails), "%d", d->breaker.failures);
    const char *v[3] = {d->id, secs, fails};
    log_warn("destination paused",
             json_pack("{s:s,s:i,s:f}", "destination", d->id, "consecutive_failures",
                       d->breaker.failures, "pause_s", d->policy.breaker_pause_s));
    dest_exec(r, "pause", 3, v);
}

static void on_http_done(const struct http_client_result *res, void *data)
{
    struct job *j = data;
    struct relay *r = j->r;
    struct dest *d = j->d;
    j->in_http = false;
    if (j->prev != NULL)
        j->prev->next = j->next;
    else
        r->in_http = j->next;
    if (j->next != NULL)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
    d->in_flight--;
    r->jobs_in_http--;
    metric_set(d->m_in_flight, d->in_flight);

    if (res->aborted) {
        /* cut short by a shutdown: not an attempt; a leased row is released at once */
        if (j->row) {
            set_outcome(j, JOB_RELEASED, 0, 0, 0, "not sent: ordersync stopped", NULL);
            row_result(r, j);
        } else {
            job_release(j);
        }
        return;
    }

    metric_add(d->m_attempts, 1);
    metric_observe(d->m_seconds, res->seconds);
    int ms = (int)(res->seconds * 1000);
    long st = res->http_status;
    struct relay_decision dec =
        relay_policy_decide(&d->policy, j->attempt, st, res->retry_after_s, j->age_s, jitter());
    char err[200] = "";
    enum relay_breaker_change bc =
        relay_breaker_record(&d->breaker, &d->policy, dec.verdict == RELAY_DELIVERED, now_ms(r));
    if (dec.verdict == RELAY_DELIVERED) {
        metric_add(d->m_delivered, 1);
        metric_observe(d->m_lag, j->age_s + res->seconds);
    } else {
        if (st == 0)
            snprintf(err, sizeof(err), "%s", res->error ? res->error : "transport error");
        else
            snprintf(err, sizeof(err), "HTTP %ld", st);
        if (dec.gone) {
            metric_add(d->m_gone, 1);
            d->enabled = false;
            char reason[96];
            snprintf(reason, sizeof(reason), "answered 410 Gone to event %" PRId64, j->position);
            const char *v[2] = {d->id, reason};
            log_warn("destination disabled",
                     json_pack("{s:s,s:s}", "destination", d->id, "reason", reason));
            dest_exec(r, "disable", 2, v);
        } else if (dec.client_error) {
            metric_add(d->m_client_error, 1);
        }
        if (dec.verdict == RELAY_DEAD) {
            metric_add(d->m_dead, 1);
            log_warn("delivery dead",
                     json_pack("{s:s,s:I,s:s,s:i,s:s,s:s}", "destination", d->id, "position",
                               (json_int_t)j->position, "webhook_id", j->msg_id, "attempts",
                               j->attempt, "last_error", err, "trace_id", j->trace_id));
        } else {
            metric_add(d->m_retry, 1);
            log_info("delivery failed, will retry",
                     json_pack("{s:s,s:I,s:s,s:i,s:s,s:f,s:s}", "destination", d->id, "position",
                               (json_int_t)j->position, "webhook_id", j->msg_id, "attempt",
                               j->attempt, "error", err, "retry_in_s", dec.delay_s, "trace_id",
                               j->trace_id));
        }
    }
    if (bc == RELAY_BREAKER_PAUSED) {
        pause_dest(r, d);
    } else if (bc == RELAY_BREAKER_RESUMED) {
        log_info("destination resumed", json_pack("{s:s}", "destination", d->id));
        metric_set(d->m_paused, 0);
        const char *v[1] = {d->id};
        dest_exec(r, "resume", 1, v);
    }
    enum job_result result = dec.verdict == RELAY_DELIVERED ? JOB_OK
                             : dec.verdict == RELAY_DEAD    ? JOB_DEAD
                                                            : JOB_RETRY;
    set_outcome(j, result, (int)st, ms, dec.delay_s, err, res->excerpt);

    if (j->row) {
        row_result(r, j);
    } else {
        struct stream *s = job_stream(j);
        struct wev *e = s && j->in_window ? relay_window_find(&s->win, j->position) : NULL;
        if (e != NULL && e->data == j)
            relay_window_settle(&s->win, e,
                                result == JOB_OK     ? WEV_OK
                                : result == JOB_DEAD ? WEV_DEAD
                                                     : WEV_FAILED);
        else
            job_release(j); /* its stream was reset: the event will be read again */
    }
    if (r->stopping) {
        maybe_stop_done(r);
        return;
    }
    /* room was freed: more of this destination can go */
    struct stream *s = find_stream(r, d);
    if (s != NULL)
        dispatch(r, s);
}

/* Signs and sends; false (nothing started) when it cannot, with the reason in err. */
static bool start_http(struct relay *r, struct job *j, char *err, size_t errlen)
{
    struct dest *d = j->d;
    char hdr_id[80], hdr_ts[48], hdr_sig[2 * VERIFY_STANDARD_SIG_SIZE + 32];
    snprintf(hdr_id, sizeof(hdr_id), "webhook-id: %s", j->msg_id);
    j->started = wall_now();
    int64_t ts = (int64_t)j->started;
    snprintf(hdr_ts, sizeof(hdr_ts), "webhook-timestamp: %lld", (long long)ts);
    /* during a rotation, one signature per active secret, space-separated */
    char sig1[VERIFY_STANDARD_SIG_SIZE], sig2[VERIFY_STANDARD_SIG_SIZE];
    if (verify_sign_standard(j->msg_id, ts, j->payload, j->payload_len, d->secret, sig1,
                             sizeof(sig1)) < 0 ||
        (d->prev_secret != NULL && verify_sign_standard(j->msg_id, ts, j->payload, j->payload_len,
                                                        d->prev_secret, sig2, sizeof(sig2)) < 0)) {
        snprintf(err, errlen, "not sent: the destination's secret is not a valid whsec_ key");
        return false;
    }
    if (d->prev_secret != NULL)
        snprintf(hdr_sig, sizeof(hdr_sig), "webhook-signature: %s %s", sig1, sig2);
    else
        snprintf(hdr_sig, sizeof(hdr_sig), "webhook-signature: %s", sig1);
    /* each delivery is a new span of the order's trace */
    char hdr_trace[16 + TRACE_PARENT_LEN + 1], parent[TRACE_PARENT_LEN + 1];
    bool traced = j->trace_id[0] != '\0' && trace_new_parent(j->trace_id, parent);
    if (traced)
        snprintf(hdr_trace, sizeof(hdr_trace), "traceparent: %s", parent);
    const char *headers[5 + DESTINATIONS_MAX_HEADERS + 1] = {"Content-Type: application/json",
                                                             hdr_id, hdr_ts, hdr_sig};
    unsigned nh = 4;
    if (traced)
        headers[nh++] = hdr_trace;
    /* the destination's own (destinations.headers), which may not be any of ours */
    for (char **h = d->headers; h != NULL && *h != NULL && nh < 5 + DESTINATIONS_MAX_HEADERS; h++)
        headers[nh++] = *h;
    headers[nh] = NULL;
    struct http_client_request req = {.url = d->url,
                                      .body = j->payload,
                                      .body_len = j->payload_len,
                                      .headers = headers,
                                      .timeout_ms = d->timeout_ms};
    int rc = http_client_start(r->http, &req, on_http_done, j);
    if (rc < 0) {
        snprintf(err, errlen, "not sent: %s", rc == -ENOMEM ? "out of memory" : uv_strerror(rc));
        return false;
    }
    relay_rate_take(&d->rate, rate_now(), 1);
    j->in_http = true;
    j->prev = NULL;
    j->next = r->in_http;
    if (r->in_http != NULL)
        r->in_http->prev = j;
    r->in_http = j;
    d->in_flight++;
    r->jobs_in_http++;
    metric_set(d->m_in_flight, d->in_flight);
    return true;
}

/*
 * Is the stream's lease still ours by this process's own clock? relay_acquire
 * renewed it for lease_s from when the database ran it, which is after the
 * acquire was sent. Past that, another instance may have taken the stream
 * without this one knowing (it cannot reach the database, say): two senders
 * would break the one-sender rule, and double the destination's rate limit.
 * So sending stops there until a renewal comes back.
 */
static bool stream_leased(struct relay *r, const struct stream *s)
{
    return now_ms(r) < s->lease_until_ms;
}

/* Starts what the window lets go, as far as the destination has room. */
static void dispatch(struct relay *r, struct stream *s)
{
    unsigned room;
    s->d->rate_short = false;
    while (stream_leased(r, s) && dest_room(r, s->d, &room)) {
        struct wev *e = relay_window_next(&s->win, now_ms(r));
        if (e == NULL)
            return;
        struct job *j = e->data;
        char err[160];
        if (!start_http(r, j, err, sizeof(err))) {
            log_error("delivery not sent",
                      json_pack("{s:s,s:I,s:s}", "destination", s->d->id, "position",
                                (json_int_t)j->position, "detail", err));
            /* a row, offered again after a while with the reason in last_error;
               not an attempt: nothing was sent */
            set_outcome(j, JOB_RETRY, 0, 0, NOT_SENT_DELAY_S, err, NULL);
            j->attempt = 0;
            relay_window_settle(&s->win, e, WEV_FAILED);
        }
    }
    /* out of tokens with an event ready: it waits for the rate timer */
    if (s->d->rate_short && relay_window_has_ready(&s->win)) {
        rate_wait(r, s->d);
        note_limited(r, s->d);
    }
}

/* ---------------------------------------------------------------- streams */

static void drop_job_in_window(struct wev *e, void *ctx)
{
    (void)ctx;
    struct job *j = e->data;
    if (j == NULL)
        return;
    j->in_window = false;
    job_release(j); /* one in flight lives on until its answer, which is then ignored */
}

/* Forgets what is in memory for a stream: the database is the truth again. */
static void stream_reset(struct relay *r, struct stream *s, int64_t position)
{
    relay_window_clear(&s->win, drop_job_in_window, NULL);
    s->gen = ++r->next_gen;
    s->cursor = s->read_pos = position;
    s->in_complete = s->unsure = s->untaint_after_read = false;
}

static void stream_free(struct stream *s)
{
    relay_window_clear(&s->win, drop_job_in_window, NULL);
    relay_window_free(&s->win);
    free(s);
}

static void stream_drop(struct relay *r, struct stream *s)
{
    struct stream **p = &r->streams;
    while (*p != NULL && *p != s)
        p = &(*p)->next;
    if (*p == s)
        *p = s->next;
    stream_free(s);
}

/* A stream this instance was given, leased until lease_until_ms (loop ms). */
static int stream_new(struct relay *r, struct dest *d, int64_t position, uint64_t lease_until_ms)
{
    struct stream *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    unsigned cap = 2 * (d->max_in_flight ? d->max_in_flight : 64);
    if (cap < r->cfg.claim_batch)
        cap = r->cfg.claim_batch;
    if (relay_window_init(&s->win, cap, d->dead_blocks) < 0) {
        free(s);
        return -ENOMEM;
    }
    s->d = d;
    s->dest_gen = d->generation;
    s->gen = ++r->next_gen;
    s->cursor = s->read_pos = position;
    s->lease_until_ms = lease_until_ms;
    s->next = r->streams;
    r->streams = s;
    /* the previous owner may have spent a whole burst just before it let go */
    uint64_t now = rate_now();
    relay_rate_set(&d->rate, d->rate_limit_per_s, now);
    relay_rate_empty(&d->rate, now);
    d->limited_noted_ms = 0;
    dest_metrics(d);
    log_info("delivering a stream",
             json_pack("{s:s,s:I}", "destination", d->id, "position", (json_int_t)position));
    return 0;
}

/*
 * Reading. One read is in flight at a time, for every stream that wants
 * events (stream_read in 007): one round trip per wake-up whatever the number
 * of destinations. It runs on a connection of its own, so a long completion
 * never holds up the events a commit just made; the price is that a read and
 * a completion are no longer ordered, which the taint rule covers (see
 * on_complete: a completion's taint is lifted only once no read that could
 * have missed its rows is out).
 */
struct read_part {
    struct dest *d;
    uint64_t gen;
    unsigned limit;
};

struct read_ctx {
    struct relay *r;
    unsigned n;
    struct read_part part[];
};

static void on_read(PGresult *res, const char *err, void *data);

/* Does s want events, and how many may it take? */
static unsigned read_room(struct relay *r, struct stream *s)
{
    if (s->unsure || !dest_usable(r, s->d))
        return 0; /* paused or disabled: the window waits too */
    double per_s = s->d->rate_limit_per_s;
    if (per_s > 0 && relay_window_len(&s->win) >= per_s + relay_rate_burst(per_s))
        return 0; /* a second's worth waits for the rate limit: completions read again */
    unsigned limit = relay_window_room(&s->win);
    if (limit > r->cfg.claim_batch)
        limit = r->cfg.claim_batch;
    /* a few free places are not worth a query: results free more soon */
    if (limit < relay_window_len(&s->win) / 4 && limit < 16)
        return 0;
    return limit;
}

static void read_streams(struct relay *r)
{
    if (r->stopping || !db_is_ready(r->db_read))
        return;
    if (r->reading) {
        r->reread = true;
        return;
    }
    unsigned n = 0;
    for (struct stream *s = r->streams; s != NULL; s = s->next)
        if (read_room(r, s) > 0)
            n++;
    if (n == 0)
        return;
    struct read_ctx *ctx = malloc(sizeof(*ctx) + n * sizeof(ctx->part[0]));
    if (ctx == NULL)
        return;
    ctx->r = r;
    ctx->n = 0;
    struct buf *ids = &r->rparams[0], *afters = &r->rparams[1], *types = &r->rparams[2],
               *lims = &r->rparams[3], *dbs = &r->rparams[4];
    for (int i = 0; i < 5; i++)
        buf_reset(&r->rparams[i]);
    int rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++)
        rc = buf_append_str(&r->rparams[i], "{");
    for (struct stream *s = r->streams; s != NULL && rc == 0 && ctx->n < n; s = s->next) {
        unsigned limit = read_room(r, s);
        if (limit == 0)
            continue;
        const char *sep = ctx->n ? "," : "";
        rc = buf_append_str(ids, sep);
        if (rc == 0)
            rc = append_json_str(ids, s->d->id);
        if (rc == 0)
            rc = buf_printf(afters, "%s%" PRId64, sep, s->read_pos);
        if (rc == 0)
            rc = buf_append_str(types, sep);
        /* an array literal of array literals: the inner one quoted as an element */
        if (rc == 0)
            rc = s->d->types ? append_json_str(types, s->d->types) : buf_append_str(types, "NULL");
        if (rc == 0)
            rc = buf_printf(lims, "%s%u", sep, limit);
        if (rc == 0)
            rc = buf_printf(dbs, "%s%s", sep, s->d->dead_blocks ? "t" : "f");
        ctx->part[ctx->n++] = (struct read_part){.d = s->d, .gen = s->gen, .limit = limit};
    }
    for (int i = 0; i < 5 && rc == 0; i++)
        rc = buf_append_str(&r->rparams[i], "}");
    const char *v[5] = {ids->data, afters->data, types->data, lims->data, dbs->data};
    if (rc < 0 || db_query(r->db_read, true, "stream_read", 5, v, on_read, ctx) < 0) {
        free(ctx);
        return;
    }
    r->reading = true;
    r->reread = false;
    metric_add(r->m_reads, 1);
}

enum {
    RC_DEST,
    RC_HORIZON,
    RC_POS,
    RC_ID,
    RC_ORDER,
    RC_CREATED,
    RC_PAYLOAD,
    RC_AGE,
    RC_HELD,
    RC_TRACE,
    N_RC
};
static const char *const read_cols[N_RC] = {
    "destination_id", "horizon", "event_position", "event_id", "order_id",
    "created_at",     "payload", "age_s",          "held",     "trace_id"};

/* The rows of one stream in a read's result: [from, to). */
static void take_events(struct relay *r, struct stream *s, const struct read_part *part,
                        PGresult *res, const int *c, int from, int to, int64_t horizon)
{
    int rows = to - from, n = 0;
    bool whole = true; /* every event returned went into the window */
    int64_t last = s->read_pos;
    for (int row = from; row < to; row++) {
        struct job *j = job_new(r, s->d, res, row, c[RC_POS], c[RC_ID], c[RC_ORDER], c[RC_PAYLOAD],
                                c[RC_AGE], c[RC_TRACE]);
        if (j == NULL) {
            whole = false; /* out of memory: read again from the last one kept */
            break;
        }
        snprintf(j->created_at, sizeof(j->created_at), "%s", PQgetvalue(res, row, c[RC_CREATED]));
        j->stream_gen = s->gen;
        bool held = PQgetvalue(res, row, c[RC_HELD])[0] == 't';
        if (relay_window_push(&s->win, j->position, j->order_id, held, j) == NULL) {
            job_free(j);
            whole = false;
            break;
        }
        j->in_window = true;
        last = j->position;
        n++;
    }
    /* a short page: every event up to the horizon was read or is not for it */
    if (whole && (unsigned)rows < part->limit && horizon > last)
        last = horizon;
    if (last > s->read_pos)
        s->read_pos = last;
    if (whole && (unsigned)rows == part->limit)
        r->reread = true; /* a full page: there may be more */
}

static void on_read(PGresult *res, const char *err, void *data)
{
    struct read_ctx *ctx = data;
    struct relay *r = ctx->r;
    r->reading = false;
    int c[N_RC];
    bool ok = err == NULL && res != NULL && PQntuples(res) > 0 &&
              db_columns(res, "stream_read", read_cols, c, N_RC) == 0;
    if (!ok && err != NULL && res != NULL) {
        metric_add(r->m_db_errors, 1);
        log_warn("stream read failed", json_pack("{s:s}", "detail", err));
    }
    int64_t horizon = ok ? strtoll(PQgetvalue(res, 0, c[RC_HORIZON]), NULL, 10) : 0;
    int row = 1, n = ok ? PQntuples(res) : 0;
    for (unsigned i = 0; ok && i < ctx->n; i++) {
        /* each destination's rows come together, in position order */
        int from = row;
        while (row < n && strcmp(PQgetvalue(res, row, c[RC_DEST]), ctx->part[i].d->id) == 0)
            row++;
        struct stream *s = find_stream(r, ctx->part[i].d);
        if (s == NULL || s->gen != ctx->part[i].gen)
            continue; /* reset or dropped meanwhile: read again from the database's cursor */
        take_events(r, s, &ctx->part[i], res, c, from, row, horizon);
    }
    free(ctx);
    /* a completion that came back while this read was out can lift its taint now */
    for (struct stream *s = r->streams; s != NULL; s = s->next) {
        if (s->untaint_after_read) {
            s->untaint_after_read = false;
            relay_window_untaint(&s->win);
        }
        dispatch(r, s);
    }
    if (r->reread && !r->stopping)
        read_streams(r);
}

/* ---------------------------------------------------------------- completion */

/* JSON string of arbitrary bytes: escaped, and non-ASCII bytes replaced (excerpts are not UTF-8).
 */
static int append_json_str(struct buf *b, const char *s)
{
    if (s == NULL)
        return buf_append_str(b, "null");
    int rc = buf_append_str(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            rc = buf_append(b, esc, 2);
        } else if (*p < 0x20) {
            rc = buf_printf(b, "\\u%04x", *p);
        } else {
            char ch = *p < 0x7f ? (char)*p : '?';
            rc = buf_append(b, &ch, 1);
        }
    }
    return rc == 0 ? buf_append_str(b, "\"") : rc;
}

static int append_outcome(struct buf *b, const struct job *j)
{
    int rc = buf_printf(b, ",\"n\":%d,\"t0\":%.6f,\"ms\":%d,\"dl\":%.3f", j->attempt, j->started,
                        j->ms, j->delay_s);
    if (rc == 0 && j->status > 0)
        rc = buf_printf(b, ",\"st\":%d", j->status);
    if (rc == 0)
        rc = buf_append_str(b, ",\"er\":");
    if (rc == 0)
        rc = append_json_str(b, j->error);
    if (rc == 0)
        rc = buf_append_str(b, ",\"ex\":");
    if (rc == 0)
        rc = append_json_str(b, j->excerpt);
    return rc;
}

struct emit_ctx {
    struct relay *r;
    struct buf ok, rows;
    int rc;
};

/* An entry leaves the window: into "ok" or "rows" of its stream's part of the statement. */
static void emit_entry(struct wev *e, void *data)
{
    struct emit_ctx *x = data;
    struct job *j = e->data;
    e->data = NULL;
    j->in_window = false;
    int rc = x->rc;
    if (e->state == WEV_OK) {
        if (rc == 0)
            rc = buf_printf(&x->ok, "%s[%" PRId64 ",%d,%d]", x->ok.len ? "," : "", j->position,
                            j->status, j->ms);
        x->rc = rc;
        job_release(j);
        return;
    }
    const char *kind = e->state == WEV_FAILED   ? "failed"
                       : e->state == WEV_DEAD   ? "dead"
                       : e->state == WEV_LEASED ? "leased"
                                                : "blocked";
    if (rc == 0)
        rc = buf_printf(&x->rows,
                        "%s{\"p\":%" PRId64 ",\"o\":%" PRId64 ",\"c\":", x->rows.len ? "," : "",
                        j->position, j->order_id);
    if (rc == 0)
        rc = append_json_str(&x->rows, j->created_at);
    if (rc == 0)
        rc = buf_printf(&x->rows, ",\"k\":\"%s\"", kind);
    if (rc == 0 && (e->state == WEV_FAILED || e->state == WEV_DEAD))
        rc = append_outcome(&x->rows, j);
    if (rc == 0 && e->state == WEV_LEASED)
        rc = buf_printf(&x->rows, ",\"lease\":%u", lease_s(x->r));
    if (rc == 0)
        rc = buf_append_str(&x->rows, "}");
    x->rc = rc;
    if (e->state == WEV_LEASED)
        j->row = true; /* still in flight; its answer settles the row */
    else
        job_release(j);
}

static void on_complete(PGresult *res, const char *err, void *data);

/* Writes everything settled since the last statement, if there is anything. */
static void flush(struct relay *r)
{
    if (r->completing || !db_is_ready(r->db))
        return;
    struct buf *doc = &r->doc;
    buf_reset(doc);
    int rc = buf_append_str(doc, "{\"streams\":[");
    unsigned n_streams = 0;
    bool rows_written = false;
    struct emit_ctx x = {.r = r};
    buf_init(&x.ok, PARAM_CAP);
    buf_init(&x.rows, PARAM_CAP);
    for (struct stream *s = r->streams; s != NULL && rc == 0; s = s->next) {
        if (relay_window_len(&s->win) == 0 && s->read_pos == s->cursor)
            continue;
        buf_reset(&x.ok);
        buf_reset(&x.rows);
        x.rc = 0;
        /* when the window is nearly full, hand slow requests over sooner */
        uint64_t lease_after =
            relay_window_room(&s->win) < s->win.cap / 4 ? LEASE_AFTER_FULL_MS : LEASE_AFTER_MS;
        relay_window_advance(&s->win, now_ms(r), lease_after, emit_entry, &x);
        int64_t to = relay_window_len(&s->win) == 0 ? s->read_pos
                                                    : relay_window_at(&s->win, 0)->position - 1;
        if (x.rc < 0) {
            rc = x.rc;
            break;
        }
        if (to <= s->cursor && x.rows.len == 0)
            continue;
        if (to < s->cursor)
            to = s->cursor;
        rows_written = rows_written || x.rows.len > 0;
        rc = buf_printf(doc, "%s{\"d\":", n_streams ? "," : "");
        if (rc == 0)
            rc = append_json_str(doc, s->d->id);
        if (rc == 0)
            rc = buf_printf(
                doc, ",\"from\":%" PRId64 ",\"to\":%" PRId64 ",\"ok\":[%s],\"rows\":[%s]}",
                s->cursor, to, x.ok.data ? x.ok.data : "", x.rows.data ? x.rows.data : "");
        s->in_complete = true;
        s->complete_from = s->cursor;
        s->complete_to = to;
        s->cursor = to;
        n_streams++;
    }
    buf_free(&x.ok);
    buf_free(&x.rows);
    if (rc == 0)
        rc = buf_append_str(doc, "],\"results\":[");
    for (unsigned i = 0; i < r->n_results && rc == 0; i++) {
        struct job *j = r->results[i];
        static const char *const names[] = {"", "ok", "retry", "dead", "released"};
        rc = buf_printf(doc, "%s{\"d\":", i ? "," : "");
        if (rc == 0)
            rc = append_json_str(doc, j->d->id);
        if (rc == 0)
            rc = buf_printf(doc, ",\"p\":%" PRId64 ",\"r\":\"%s\"", j->position, names[j->result]);
        if (rc == 0)
            rc = append_outcome(doc, j);
        if (rc == 0)
            rc = buf_append_str(doc, "}");
    }
    if (rc == 0)
        rc = buf_append_str(doc, "]}");
    unsigned n_results = r->n_results;
    for (unsigned i = 0; i < r->n_results; i++)
        job_free(r->results[i]);
    r->n_results = 0;
    if (rc < 0) {
        log_error("could not build delivery results; streams are read again",
                  json_pack("{s:i}", "errno", -rc));
        for (struct stream *s = r->streams; s != NULL; s = s->next)
            if (s->in_complete)
                stream_reset(r, s, s->complete_from);
        return;
    }
    if (n_streams == 0 && n_results == 0)
        return;
    r->complete_had_rows = n_results > 0 || rows_written;
    const char *v[2] = {r->instance, doc->data};
    if (db_query(r->db, true, "complete", 2, v, on_complete, r) < 0) {
        for (struct stream *s = r->streams; s != NULL; s = s->next)
            if (s->in_complete)
                stream_reset(r, s, s->complete_from);
        return;
    }
    r->completing = true;
}

static void on_complete(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    r->completing = false;
    if (err != NULL || res == NULL) {
        /* did it commit? Unknown: every stream in it starts over from what the
           database says (acquire), and the rows it settled keep their leases
           (released at the next reconnect, or when the lease runs out) */
        metric_add(r->m_db_errors, 1);
        log_warn("could not record delivery results; they are redone",
                 json_pack("{s:s}", "detail", err ? err : "connection lost"));
        for (struct stream *s = r->streams; s != NULL; s = s->next)
            if (s->in_complete) {
                stream_reset(r, s, s->complete_from);
                s->unsure = true;
            }
        acquire(r);
        maybe_stop_done(r);
        return;
    }
    for (int row = 0; row < PQntuples(res); row++) {
        struct dest *d = destinations_find(r->dests, PQgetvalue(res, row, 0));
        struct stream *s = d ? find_stream(r, d) : NULL;
        if (s != NULL) {
            log_warn("stream taken over by another instance",
                     json_pack("{s:s}", "destination", d->id));
            stream_drop(r, s);
        }
    }
    for (struct stream *s = r->streams; s != NULL; s = s->next) {
        if (!s->in_complete)
            continue;
        s->in_complete = false;
        /* a read out now may have run before this commit, on the other
           connection: its answers count as held until it is back */
        if (r->reading)
            s->untaint_after_read = true;
        else
            relay_window_untaint(&s->win);
    }
    if (r->stopping) {
        maybe_stop_done(r);
        return;
    }
    relay_wake(r);
    /* new rows (failures, blocked, promotions) may be due: claim them */
    if (r->complete_had_rows)
        claim(r);
}

static void on_check(uv_check_t *h)
{
    flush(h->data);
}

/* ---------------------------------------------------------------- rows (claims) */

static void on_due_timer(uv_timer_t *t)
{
    relay_wake(t->data);
    claim(t->data);
}

static void schedule_due(struct relay *r, double secs)
{
    if (r->stopping)
        return;
    if (secs > r->cfg.sweep_interval_s)
        secs = r->cfg.sweep_interval_s;
    uint64_t ms = secs > 0 ? (uint64_t)(secs * 1000) + 1 : 1;
    uint64_t now = now_ms(r);
    for (struct dest *d = destinations_first(r->dests); d != NULL; d = d->next)
        if (d->breaker.paused_until > now && d->breaker.paused_until - now < ms)
            ms = d->breaker.paused_until - now + 1;
    uv_timer_start(&r->due_timer, on_due_timer, ms, 0);
}

/*
 * May d's due rows be claimed now, and how many? The rate limit's share is
 * lent to the claim (given back in on_claim): no request of the window can
 * spend a token that a claimed row will need. A destination out of tokens
 * is claimed for when the next one comes (on_rate_timer), not before.
 */
static bool claim_room(struct relay *r, struct stream *s, unsigned *room)
{
    struct dest *d = s->d;
    d->rate_short = false;
    d->rate_claim_asked = 0;
    if (!stream_leased(r, s) || !dest_room(r, d, room)) {
        if (d->rate_short) {
            d->rate_claim_owed = true;
            rate_wait(r, d);
        }
        return false;
    }
    d->rate_claim_owed = false;
    d->rate_claim_asked = d->rate_short ? *room : 0;
    if (d->rate.per_s > 0) {
        relay_rate_lend(&d->rate, rate_now(), *room);
        d->rate_lent += *room;
    }
    return true;
}

/* The tokens lent to claims come back (the claim was answered, failed or not sent). */
static void rate_repay_all(struct relay *r)
{
    for (struct dest *d = destinations_first(r->dests); d != NULL; d = d->next) {
        relay_rate_repay(&d->rate, d->rate_lent);
        d->rate_lent = 0;
    }
}

/* The owned destinations as a text[] literal (and, with room, their limits). */
static int dest_arrays(struct relay *r, struct buf *ids, struct buf *lims, unsigned *n_out)
{
    buf_reset(ids);
    int rc = buf_append_str(ids, "{");
    if (lims != NULL) {
        buf_reset(lims);
        if (rc == 0)
            rc = buf_append_str(lims, "{");
    }
    unsigned n = 0;
    for (struct stream *s = r->streams; s != NULL && rc == 0; s = s->next) {
        unsigned room = 0;
        if (lims != NULL && !claim_room(r, s, &room))
            continue;
        rc = buf_append_str(ids, n ? "," : "");
        if (rc == 0)
            rc = append_json_str(ids, s->d->id);
        if (rc == 0 && lims != NULL)
            rc = buf_printf(lims, "%s%u", n ? "," : "", room);
        n++;
    }
    if (rc == 0)
        rc = buf_append_str(ids, "}");
    if (rc == 0 && lims != NULL)
        rc = buf_append_str(lims, "}");
    *n_out = n;
    return rc;
}

static void on_next_due(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    double secs = r->cfg.sweep_interval_s;
    if (err == NULL && res != NULL && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
        secs = atof(PQgetvalue(res, 0, 0));
    schedule_due(r, secs);
}

enum { CC_DEST, CC_POS, CC_ID, CC_ORDER, CC_ATTEMPTS, CC_PAYLOAD, CC_AGE, CC_TRACE, N_CC };
static const char *const claim_cols[N_CC] = {"destination_id", "event_position", "event_id",
                                             "order_id",       "attempts",       "payload",
                                             "age_s",          "trace_id"};

static void on_claim(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    r->claiming = false;
    /* each row sent below takes its token from what the claim gives back */
    rate_repay_all(r);
    int c[N_CC];
    if (err != NULL || res == NULL || db_columns(res, "claim", claim_cols, c, N_CC) < 0) {
        metric_add(r->m_db_errors, 1);
        if (res != NULL)
            log_warn("claim failed", json_pack("{s:s}", "detail", err ? err : "bad result"));
        schedule_due(r, 1);
        return;
    }
    int n = PQntuples(res);
    metric_add(r->m_claims, 1);
    for (int row = 0; row < n; row++) {
        struct dest *d = destinations_find(r->dests, PQgetvalue(res, row, c[CC_DEST]));
        struct job *j = d ? job_new(r, d, res, row, c[CC_POS], c[CC_ID], c[CC_ORDER], c[CC_PAYLOAD],
                                    c[CC_AGE], c[CC_TRACE])
                          : NULL;
        if (j == NULL)
            continue; /* its lease runs out and it comes back */
        j->row = true;
        j->attempt = atoi(PQgetvalue(res, row, c[CC_ATTEMPTS]));
        char why[160];
        if (r->stopping || !start_http(r, j, why, sizeof(why))) {
            set_outcome(j, JOB_RELEASED, 0, 0, r->stopping ? 0 : NOT_SENT_DELAY_S,
                        r->stopping ? "not sent: ordersync stopped" : why, NULL);
            row_result(r, j);
        } else {
            d->rate_claimed++;
        }
    }
    /* a claim the rate limit sized came back full: more due rows wait for tokens */
    for (struct dest *d = destinations_first(r->dests); d != NULL; d = d->next) {
        if (d->rate_claim_asked > 0 && d->rate_claimed >= d->rate_claim_asked)
            note_limited(r, d);
        d->rate_claim_asked = d->rate_claimed = 0;
    }
    if (r->reclaim || n > 0) {
        /* a full claim may have left more due rows; a new wake may have come */
        r->reclaim = false;
        claim(r);
        return;
    }
    unsigned nd;
    if (dest_arrays(r, &r->params[2], NULL, &nd) == 0 && nd > 0) {
        const char *v[1] = {r->params[2].data};
        if (db_query(r->db, true, "next_due", 1, v, on_next_due, r) == 0)
            return;
    }
    schedule_due(r, r->cfg.sweep_interval_s);
}

static void claim(struct relay *r)
{
    if (r->stopping || !db_is_ready(r->db))
        return;
    if (r->claiming) {
        r->reclaim = true;
        return;
    }
    unsigned n;
    if (dest_arrays(r, &r->params[0], &r->params[1], &n) < 0 || n == 0) {
        rate_repay_all(r);
        return; /* nothing has room: completions (or the rate timer) wake us */
    }
    snprintf(r->lease_text, sizeof(r->lease_text), "%u", lease_s(r));
    const char *v[4] = {r->params[0].data, r->params[1].data, r->lease_text, r->instance};
    if (db_query(r->db, true, "claim", 4, v, on_claim, r) == 0)
        r->claiming = true;
    else
        rate_repay_all(r);
}

/*
 * A token is there for a destination that waited: its window sends (no
 * read: what waits is in it already), and its due rows are claimed if a
 * claim skipped them for want of tokens and the window left some.
 */
static void on_rate_timer(uv_timer_t *t)
{
    struct relay *r = t->data;
    if (r->stopping)
        return;
    bool rows = false;
    for (struct stream *s = r->streams; s != NULL; s = s->next) {
        if (s->d->rate_limit_per_s <= 0)
            continue;
        dispatch(r, s);
        if (s->d->rate_claim_owed && dest_tokens(s->d) > 0)
            rows = true;
    }
    if (rows)
        claim(r);
}

/* ---------------------------------------------------------------- leases of streams */

static void on_acquired(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    r->acquiring = false;
    if (err != NULL || res == NULL) {
        if (res != NULL)
            log_warn("could not take streams", json_pack("{s:s}", "detail", err));
        return;
    }
    /* streams still ours stay; new ones start at the database's cursor */
    uint64_t until = r->acquire_sent_ms + (uint64_t)r->cfg.lease_s * LEASE_TRUST_PERMILLE;
    for (int row = 0; row < PQntuples(res); row++) {
        struct dest *d = destinations_find(r->dests, PQgetvalue(res, row, 0));
        if (d == NULL)
            continue;
        int64_t pos = strtoll(PQgetvalue(res, row, 1), NULL, 10);
        struct stream *s = find_stream(r, d);
        if (s == NULL) {
            if (stream_new(r, d, pos, until) < 0)
                log_error("out of memory taking a stream",
                          json_pack("{s:s}", "destination", d->id));
            continue;
        }
        s->lease_until_ms = until;
        if (!s->in_complete && !r->completing && (pos != s->cursor || s->unsure)) {
            /* moved by someone else (we lost it for a while): start from the database */
            log_warn("stream moved meanwhile: reading it again",
                     json_pack("{s:s,s:I,s:I}", "destination", d->id, "ours", (json_int_t)s->cursor,
                               "database", (json_int_t)pos));
            stream_reset(r, s, pos);
        }
        if (s->dest_gen != d->generation) {
            /* settings changed (types, on_dead, max_in_flight): a new window */
            s->dest_gen = d->generation;
            if (!s->in_complete) {
                unsigned cap = 2 * (d->max_in_flight ? d->max_in_flight : 64);
                if (cap < r->cfg.claim_batch)
                    cap = r->cfg.claim_batch;
                stream_reset(r, s, s->cursor);
                relay_window_free(&s->win);
                if (relay_window_init(&s->win, cap, d->dead_blocks) < 0)
                    log_error("out of memory resizing a window", NULL);
            }
        }
    }
    /* streams not returned are no longer ours */
    for (struct stream *s = r->streams, *next; s != NULL; s = next) {
        next = s->next;
        bool mine = false;
        for (int row = 0; row < PQntuples(res) && !mine; row++)
            mine = strcmp(PQgetvalue(res, row, 0), s->d->id) == 0;
        if (!mine) {
            log_info("stream let go", json_pack("{s:s}", "destination", s->d->id));
            stream_drop(r, s);
        }
    }
    if (r->reacquire) {
        r->reacquire = false;
        acquire(r);
    }
    relay_wake(r);
    claim(r); /* a stream just taken may have rows due */
}

static void acquire(struct relay *r)
{
    if (r->stopping || !db_is_ready(r->db) || !destinations_loaded(r->dests))
        return;
    if (r->acquiring) {
        r->reacquire = true;
        return;
    }
    struct buf *ids = &r->params[3];
    buf_reset(ids);
    int rc = buf_append_str(ids, "{");
    unsigned n = 0;
    for (struct dest *d = destinations_first(r->dests); d != NULL && rc == 0; d = d->next) {
        if (!d->present || !d->push || !d->enabled)
            continue;
        rc = buf_append_str(ids, n++ ? "," : "");
        if (rc == 0)
            rc = append_json_str(ids, d->id);
    }
    if (rc == 0)
        rc = buf_append_str(ids, "}");
    if (rc < 0)
        return;
    char lease[32];
    snprintf(lease, sizeof(lease), "%u", r->cfg.lease_s);
    const char *v[3] = {r->instance, lease, ids->data};
    r->acquire_sent_ms = now_ms(r);
    if (db_query(r->db, true, "acquire", 3, v, on_acquired, r) == 0)
        r->acquiring = true;
}

static void on_acquire_timer(uv_timer_t *t)
{
    acquire(t->data);
}

void relay_reload(struct relay *r)
{
    /* settings are applied where they are read; stream ownership may change */
    acquire(r);
}

void relay_wake(struct relay *r)
{
    if (r->stopping)
        return;
    for (struct stream *s = r->streams; s != NULL; s = s->next)
        dispatch(r, s);
    read_streams(r);
}

void relay_rows_changed(struct relay *r)
{
    claim(r);
}

/* ---------------------------------------------------------------- sweep, lifecycle */

static void on_sweep(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    if (err == NULL && res != NULL && PQntuples(res) == 1) {
        int released = atoi(PQgetvalue(res, 0, 0)), unblocked = atoi(PQgetvalue(res, 0, 1));
        if (released > 0 || unblocked > 0)
            log_info("sweep", json_pack("{s:i,s:i}", "expired_leases_released", released,
                                        "blocked_rows_freed", unblocked));
    }
    claim(r);
}

static void on_sweep_timer(uv_timer_t *t)
{
    struct relay *r = t->data;
    if (r->stopping || !db_is_ready(r->db))
        return;
    if (db_query(r->db, true, "sweep", 0, NULL, on_sweep, r) < 0)
        log_debug("sweep not sent", NULL);
}

static void on_released_own(PGresult *res, const char *err, void *data)
{
    if (err != NULL)
        log_warn("could not release this process's leases; they expire by themselves",
                 json_pack("{s:s}", "detail", err));
    else if (res != NULL && PQntuples(res) == 1 && atoi(PQgetvalue(res, 0, 0)) > 0)
        log_info("own leases released after reconnecting",
                 json_pack("{s:i}", "rows", atoi(PQgetvalue(res, 0, 0))));
}

/*
 * (Re)connected. Whatever was in flight on the old connection is unknown:
 * every stream is read again from the database's cursor, and rows leased to
 * this process that no request of it is working on any more are released
 * at once rather than waiting out their lease.
 */
static void on_ready(struct db *db, void *data)
{
    struct relay *r = data;
    r->claiming = r->completing = r->acquiring = false;
    rate_repay_all(r); /* a claim lost with the connection */
    for (struct stream *s = r->streams, *next; s != NULL; s = next) {
        next = s->next;
        stream_drop(r, s);
    }
    struct buf *ds = &r->params[0], *ps = &r->params[1];
    buf_reset(ds);
    buf_reset(ps);
    int rc = buf_append_str(ds, "{");
    if (rc == 0)
        rc = buf_append_str(ps, "{");
    /* rows whose request is still running here keep their lease */
    unsigned n = 0;
    for (struct job *j = r->in_http; j != NULL && rc == 0; j = j->next) {
        if (!j->row)
            continue;
        rc = buf_append_str(ds, n ? "," : "");
        if (rc == 0)
            rc = append_json_str(ds, j->d->id);
        if (rc == 0)
            rc = buf_printf(ps, "%s%" PRId64, n ? "," : "", j->position);
        n++;
    }
    if (rc == 0)
        rc = buf_append_str(ds, "}");
    if (rc == 0)
        rc = buf_append_str(ps, "}");
    const char *v[3] = {r->instance, ds->data, ps->data};
    if (rc == 0 && db_query(db, true, "release_own", 3, v, on_released_own, r) < 0)
        log_debug("release_own not sent", NULL);
    acquire(r);
    on_sweep_timer(&r->sweep_timer);
}

static const struct db_callbacks relay_cbs = {.on_ready = on_ready};

static void on_read_ready(struct db *db, void *data)
{
    struct relay *r = data;
    r->reading = false;
    read_streams(r);
}

static const struct db_callbacks read_cbs = {.on_ready = on_read_ready};

int relay_new(uv_loop_t *loop, const struct relay_config *cfg, struct destinations *dests,
              struct relay **out)
{
    struct relay *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->loop = loop;
    r->cfg = *cfg;
    r->dests = dests;
    if (r->cfg.claim_batch == 0)
        r->cfg.claim_batch = 256;
    if (r->cfg.sweep_interval_s == 0)
        r->cfg.sweep_interval_s = 30;
    if (r->cfg.lease_s == 0)
        r->cfg.lease_s = 60;
    buf_init(&r->doc, PARAM_CAP);
    for (int i = 0; i < 4; i++)
        buf_init(&r->params[i], PARAM_CAP);
    for (int i = 0; i < 5; i++)
        buf_init(&r->rparams[i], PARAM_CAP);
    r->instance = strdup(cfg->instance ? cfg->instance : "ordersync");
    r->conninfo = cfg->conninfo ? strdup(cfg->conninfo) : NULL;
    if (r->instance == NULL || (cfg->conninfo != NULL && r->conninfo == NULL))
        goto fail;
    r->cfg.instance = r->instance;
    r->cfg.conninfo = r->conninfo;
    char ua[64];
    snprintf(ua, sizeof(ua), "ordersync/%s", ORDERSYNC_VERSION);
    int rc = http_client_new(loop, ua, 1024, &r->http);
    if (rc < 0)
        goto fail;
    uv_timer_init(loop, &r->due_timer);
    uv_timer_init(loop, &r->sweep_timer);
    uv_timer_init(loop, &r->acquire_timer);
    uv_timer_init(loop, &r->rate_timer);
    uv_check_init(loop, &r->check);
    r->due_timer.data = r->sweep_timer.data = r->acquire_timer.data = r->rate_timer.data =
        r->check.data = r;
    r->open_handles = 5;
    uv_check_start(&r->check, on_check);
    uv_unref((uv_handle_t *)&r->check);
    uv_timer_start(&r->sweep_timer, on_sweep_timer, (uint64_t)r->cfg.sweep_interval_s * 1000,
                   (uint64_t)r->cfg.sweep_interval_s * 1000);
    /* renewed at a quarter of the lease: three renewals can fail before it runs out */
    uint64_t every = (uint64_t)r->cfg.lease_s * 1000 / 4;
    uv_timer_start(&r->acquire_timer, on_acquire_timer, every, every);
    r->m_claims = metrics_counter("ordersync_relay_claims_total", "Claim statements run", "");
    r->m_reads = metrics_counter("ordersync_relay_reads_total", "Stream reads run", "");
    r->m_db_errors = metrics_counter("ordersync_db_errors_total", "Failed database operations",
                                     "component=\"relay\"");
    rc = db_open(loop, r->conninfo, "relay", stmts, N_STMTS, &relay_cbs, r, &r->db);
    if (rc == 0)
        rc = db_open(loop, r->conninfo, "relay-read", read_stmts, 1, &read_cbs, r, &r->db_read);
    if (rc < 0) {
        relay_free(&r);
        return rc;
    }
    *out = r;
    return 0;
fail:
    http_client_free(&r->http);
    free(r->instance);
    free(r->conninfo);
    buf_free(&r->doc);
    for (int i = 0; i < 4; i++)
        buf_free(&r->params[i]);
    for (int i = 0; i < 5; i++)
        buf_free(&r->rparams[i]);
    free(r);
    return -ENOMEM;
}

unsigned relay_busy(const struct relay *r)
{
    return r->jobs_in_http + r->n_results + (r->completing ? 1 : 0);
}

static bool settled_to_write(struct relay *r)
{
    if (r->n_results > 0)
        return true;
    for (struct stream *s = r->streams; s != NULL; s = s->next)
        if (relay_window_len(&s->win) > 0) {
            struct wev *e = relay_window_at(&s->win, 0);
            if (e->state != WEV_WAITING && e->state != WEV_IN_FLIGHT)
                return true;
        }
    return false;
}

static void on_left(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    if (err != NULL)
        log_warn("could not hand the streams back; their leases run out instead",
                 json_pack("{s:s}", "detail", err));
    r->leaving = false;
    void (*done)(void *) = r->stop_done;
    r->stop_done = NULL;
    if (done != NULL)
        done(r->stop_data);
}

static void maybe_stop_done(struct relay *r)
{
    if (!r->stopping || r->stop_done == NULL || r->leaving)
        return;
    if (r->jobs_in_http > 0 || r->completing)
        return;
    if (db_is_ready(r->db) && settled_to_write(r)) {
        flush(r);
        if (r->completing)
            return;
    }
    /* everything written: the streams go back to the others now, not when the lease ends */
    const char *v[1] = {r->instance};
    if (db_is_ready(r->db) && db_query(r->db, true, "leave", 1, v, on_left, r) == 0) {
        r->leaving = true;
        return;
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
    uv_timer_stop(&r->acquire_timer);
    uv_timer_stop(&r->rate_timer);
    maybe_stop_done(r);
}

void relay_abort(struct relay *r)
{
    r->stopping = true;
    r->aborting = true;
    /* callbacks run now with `aborted`: leased rows become "released" results */
    http_client_free(&r->http);
    maybe_stop_done(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct relay *r = h->data;
    if (--r->open_handles > 0)
        return;
    for (unsigned i = 0; i < r->n_results; i++)
        job_free(r->results[i]);
    free(r->results);
    while (r->streams != NULL) {
        struct stream *s = r->streams;
        r->streams = s->next;
        stream_free(s);
    }
    buf_free(&r->doc);
    for (int i = 0; i < 4; i++)
        buf_free(&r->params[i]);
    for (int i = 0; i < 5; i++)
        buf_free(&r->rparams[i]);
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
    http_client_free(&r->http); /* aborts anything left; callbacks only record */
    db_close(&r->db);           /* fails queued statements: their callbacks see stopping */
    db_close(&r->db_read);
    uv_close((uv_handle_t *)&r->due_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->sweep_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->acquire_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->rate_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->check, on_handle_closed);
}
