/*
 * relay_send: the relay's conversation with libcurl (lib/http_client). A job
 * is signed (relay_sign.c) and POSTed with the destination's extra headers,
 * within its room (relay_dest.c); its answer is decided by relay_policy and
 * applied: to the destination (breaker, 410), to the metrics and logs, and
 * to where the job came from (its window entry settles, or its row's result
 * goes to the next completion, relay_complete.c).
 *
 * relay_dispatch() is the one place that takes events out of a window to
 * send them: after a read, after an answer freed room, when a rate limit
 * token came, on every wake-up.
 */
#include "relay_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "log.h"
#include "metrics.h"
#include "prng.h"

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double jitter(void)
{
    uint16_t v = (uint16_t)(prng_u64() >> 48); /* no secret: lib/prng, not the DRBG */
    return 1.0 + 0.2 * ((double)v / 65535.0);
}

/* The answer is known (or the request was aborted): apply it. */
static void on_http_done(const struct http_client_result *res, void *data)
{
    struct job *j = data;
    struct relay *r = j->r;
    struct relay_dest *rd = j->rd;
    list_remove(&j->http);
    rd->in_flight--;
    r->jobs_in_http--;
    metric_set(rd->m_in_flight, rd->in_flight);

    if (res->aborted) {
        /* cut short by a shutdown: not an attempt; a leased row is released at once */
        if (j->kind == JOB_ROW) {
            relay_job_set_outcome(j, JOB_RELEASED, 0, 0, 0, "not sent: ordersync stopped", NULL);
            relay_complete_add(r, j);
        } else {
            relay_job_release(j);
        }
        return;
    }

    metric_add(rd->m_attempts, 1);
    metric_observe(rd->m_seconds, res->seconds);
    int ms = (int)(res->seconds * 1000);
    long st = res->http_status;
    struct relay_decision dec = relay_policy_decide(&rd->d->set.policy, j->attempt, st,
                                                    res->retry_after_s, j->age_s, jitter());
    relay_dest_answered(r, rd, &dec, j->position);
    char err[200] = "";
    if (dec.verdict == RELAY_DELIVERED) {
        metric_add(rd->m_delivered, 1);
        metric_observe(rd->m_lag, j->age_s + res->seconds);
    } else {
        if (st == 0)
            snprintf(err, sizeof(err), "%s", res->error ? res->error : "transport error");
        else
            snprintf(err, sizeof(err), "HTTP %ld", st);
        if (!dec.gone && dec.client_error)
            metric_add(rd->m_client_error, 1);
        if (dec.verdict == RELAY_DEAD) {
            metric_add(rd->m_dead, 1);
            log_warn("delivery dead",
                     json_pack("{s:s,s:I,s:s,s:i,s:s,s:s}", "destination", rd->d->id, "position",
                               (json_int_t)j->position, "webhook_id", j->msg_id, "attempts",
                               j->attempt, "last_error", err, "trace_id", j->trace_id));
            /* under on_dead = block, the order's later events wait behind it */
            if (rd->d->set.dead_blocks)
                relay_alert(r, rd, RELAY_ALERT_BLOCKED,
                            json_pack("{s:s,s:I,s:s,s:I,s:i,s:s}", "reason",
                                      "an event is dead and blocks the later events of its order",
                                      "position", (json_int_t)j->position, "webhook_id", j->msg_id,
                                      "order_id", (json_int_t)j->order_id, "attempts", j->attempt,
                                      "last_error", err));
        } else {
            metric_add(rd->m_retry, 1);
            log_info("delivery failed, will retry",
                     json_pack("{s:s,s:I,s:s,s:i,s:s,s:f,s:s}", "destination", rd->d->id,
                               "position", (json_int_t)j->position, "webhook_id", j->msg_id,
                               "attempt", j->attempt, "error", err, "retry_in_s", dec.delay_s,
                               "trace_id", j->trace_id));
        }
    }
    enum job_result result = dec.verdict == RELAY_DELIVERED ? JOB_OK
                             : dec.verdict == RELAY_DEAD    ? JOB_DEAD
                                                            : JOB_RETRY;
    relay_job_set_outcome(j, result, (int)st, ms, dec.delay_s, err, res->excerpt);

    if (j->kind == JOB_ROW) {
        relay_complete_add(r, j);
    } else {
        struct stream *s = relay_job_stream(j);
        struct wev *e = s && j->in_window ? relay_window_find(&s->win, j->position) : NULL;
        if (e != NULL && e->data == j)
            relay_window_settle(&s->win, e,
                                result == JOB_OK     ? WEV_OK
                                : result == JOB_DEAD ? WEV_DEAD
                                                     : WEV_FAILED);
        else
            relay_job_release(j); /* its stream was reset: the event will be read again */
    }
    if (!relay_running(r)) {
        relay_check_stopped(r);
        return;
    }
    /* room was freed: more of this destination can go */
    if (rd->stream != NULL)
        relay_dispatch(r, rd->stream);
}

/*
 * snprintf(out, size, "%s%s", name, value), without printf: three header
 * lines are made for every delivery.
 */
static void header_line(char *out, size_t size, const char *name, const char *value)
{
    size_t n = strlen(name), v = strlen(value);
    if (n > size - 1)
        n = size - 1;
    if (v > size - 1 - n)
        v = size - 1 - n;
    memcpy(out, name, n);
    memcpy(out + n, value, v);
    out[n + v] = '\0';
}

bool relay_send(struct relay *r, struct job *j, char *err, size_t errlen)
{
    struct relay_dest *rd = j->rd;
    const struct dest_settings *set = &rd->d->set;
    char hdr_id[80], hdr_ts[48], hdr_sig[RELAY_SIGN_LINE_SIZE];
    header_line(hdr_id, sizeof(hdr_id), "webhook-id: ", j->msg_id);
    j->started = wall_now();
    int64_t ts = (int64_t)j->started;
    char digits[24], *d = digits + sizeof(digits);
    uint64_t u = ts < 0 ? (uint64_t)0 - (uint64_t)ts : (uint64_t)ts;
    *--d = '\0';
    do {
        *--d = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (ts < 0)
        *--d = '-';
    header_line(hdr_ts, sizeof(hdr_ts), "webhook-timestamp: ", d);
    int rc = relay_sign_line(&rd->signer, set, j->msg_id, ts, j->payload, j->payload_len, hdr_sig,
                             sizeof(hdr_sig));
    if (rc < 0) {
        snprintf(err, errlen, "not sent: %s",
                 rc == -ENOMEM ? "out of memory"
                               : "the destination's secret is not a valid whsec_ key, or it"
                                 " has neither a secret nor a signing key");
        return false;
    }
    /* each delivery is a new span of the order's trace */
    char hdr_trace[16 + TRACE_PARENT_LEN + 1], parent[TRACE_PARENT_LEN + 1];
    bool traced = j->trace_id[0] != '\0' && trace_new_parent(j->trace_id, parent);
    if (traced)
        header_line(hdr_trace, sizeof(hdr_trace), "traceparent: ", parent);
    const char *headers[5 + DESTINATIONS_MAX_HEADERS + 1] = {"Content-Type: application/json",
                                                             hdr_id, hdr_ts, hdr_sig};
    unsigned nh = 4;
    if (traced)
        headers[nh++] = hdr_trace;
    /* the destination's own (destinations.headers), which may not be any of ours */
    for (char **h = set->headers; h != NULL && *h != NULL && nh < 5 + DESTINATIONS_MAX_HEADERS; h++)
        headers[nh++] = *h;
    headers[nh] = NULL;
    struct http_client_request req = {.url = set->url,
                                      .body = j->payload,
                                      .body_len = j->payload_len,
                                      .headers = headers,
                                      .timeout_ms = set->timeout_ms};
    rc = http_client_start(r->http, &req, on_http_done, j);
    if (rc < 0) {
        snprintf(err, errlen, "not sent: %s", rc == -ENOMEM ? "out of memory" : uv_strerror(rc));
        return false;
    }
    relay_rate_take(&rd->rate, relay_rate_now(), 1);
    list_prepend(&r->in_http, &j->http);
    rd->in_flight++;
    r->jobs_in_http++;
    metric_set(rd->m_in_flight, rd->in_flight);
    return true;
}

void relay_dispatch(struct relay *r, struct stream *s)
{
    struct relay_dest *rd = s->rd;
    unsigned room;
    rd->rate_short = false;
    while (relay_stream_leased(r, s) && relay_dest_room(r, rd, &room)) {
        struct wev *e = relay_window_next(&s->win, relay_now_ms(r));
        if (e == NULL)
            return;
        struct job *j = e->data;
        char err[160];
        if (!relay_send(r, j, err, sizeof(err))) {
            log_error("delivery not sent",
                      json_pack("{s:s,s:I,s:s}", "destination", rd->d->id, "position",
                                (json_int_t)j->position, "detail", err));
            /* a row, offered again after a while with the reason in last_error;
               not an attempt: nothing was sent */
            relay_job_set_outcome(j, JOB_RETRY, 0, 0, RELAY_NOT_SENT_DELAY_S, err, NULL);
            j->attempt = 0;
            relay_window_settle(&s->win, e, WEV_FAILED);
        }
    }
    /* out of tokens with an event ready: it waits for the rate timer */
    if (rd->rate_short && relay_window_has_ready(&s->win)) {
        relay_dest_rate_wait(r, rd);
        relay_dest_note_limited(r, rd);
    }
}
