/*
 * relay_dest: what this process knows of a destination besides its settings
 * (struct relay_dest, relay_internal.h): requests in flight, the circuit
 * breaker, the rate limit's bucket, its metrics. The settings are the
 * registry's (destinations.h), reloaded whole; this state is the relay's
 * alone and lives as long as the relay.
 *
 * From it the other files learn whether a destination may be sent to now
 * and how much (relay_dest_room: max_in_flight, the breaker and the rate
 * limit, the tightest wins), and here an answer's consequences for the
 * destination are applied and written to `destinations` (pause, resume,
 * disable after a 410) or `delivery_streams` (rate limited), fire and
 * forget: a failed write is logged, and the next answer writes again. The
 * same changes raise operational alerts (relay_alert.c).
 *
 * The rate limit is one more bound on a destination's room: what it holds
 * back waits in the window, or as due rows nobody claims, until the rate
 * timer says the next token is there. No read or claim is made on its
 * behalf meanwhile.
 */
#include "relay_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"

/* While the rate limit holds deliveries back, delivery_streams.limited_until
   is kept this far ahead (sync_backlog.rate_limited), written again when
   half of it has passed: a flag nobody refreshes lapses by itself. */
#define LIMITED_HOLD_S 5

const char relay_sql_pause[] =
    "UPDATE destinations SET paused_until = now() + make_interval(secs =>"
    " $2::float8), consecutive_failures = $3 WHERE id = $1";
const char relay_sql_resume[] =
    "UPDATE destinations SET paused_until = NULL, consecutive_failures = 0"
    " WHERE id = $1 AND (paused_until IS NOT NULL OR consecutive_failures <> 0)";
const char relay_sql_disable[] =
    "UPDATE destinations SET enabled = false, disabled_reason = $2 WHERE id = $1";
const char relay_sql_limited[] =
    "UPDATE delivery_streams SET limited_until = now() + make_interval(secs =>"
    " $3::float8) WHERE destination_id = $1 AND lease_owner = $2";

/* ---------------------------------------------------------------- the state and its metrics */

static struct metric *dest_metric(const char *name, const char *help, const char *dest,
                                  const char *extra, enum metric_type type)
{
    char labels[160];
    snprintf(labels, sizeof(labels), "destination=\"%s\"%s%s", dest, extra[0] ? "," : "", extra);
    return metrics_get(type, name, help, labels,
                       type == METRIC_HISTOGRAM ? metrics_latency_buckets : NULL,
                       type == METRIC_HISTOGRAM ? metrics_latency_buckets_n : 0);
}

static void dest_metrics(struct relay_dest *rd)
{
    const char *id = rd->d->id;
    const char *dn = "ordersync_deliveries_total";
    const char *dh = "Delivery attempts by destination and outcome";
    rd->m_delivered = dest_metric(dn, dh, id, "outcome=\"delivered\"", METRIC_COUNTER);
    rd->m_retry = dest_metric(dn, dh, id, "outcome=\"retry\"", METRIC_COUNTER);
    rd->m_client_error = dest_metric(dn, dh, id, "outcome=\"client_error\"", METRIC_COUNTER);
    rd->m_dead = dest_metric(dn, dh, id, "outcome=\"dead\"", METRIC_COUNTER);
    rd->m_gone = dest_metric(dn, dh, id, "outcome=\"gone\"", METRIC_COUNTER);
    rd->m_attempts = dest_metric("ordersync_delivery_attempts_total", "HTTP attempts made", id, "",
                                 METRIC_COUNTER);
    rd->m_in_flight = dest_metric("ordersync_deliveries_in_flight",
                                  "Deliveries awaiting a response", id, "", METRIC_GAUGE);
    rd->m_seconds = dest_metric("ordersync_delivery_seconds", "Duration of one HTTP attempt", id,
                                "", METRIC_HISTOGRAM);
    rd->m_lag =
        dest_metric("ordersync_delivery_lag_seconds",
                    "Time from ingest commit to the destination's 2xx", id, "", METRIC_HISTOGRAM);
    rd->m_paused =
        dest_metric("ordersync_destination_paused",
                    "1 while the circuit breaker holds the destination", id, "", METRIC_GAUGE);
    rd->m_held =
        dest_metric("ordersync_destination_held", "1 while an operator has paused the destination",
                    id, "", METRIC_GAUGE);
    rd->m_filtered = dest_metric("ordersync_events_filtered_total",
                                 "Events the destination's filter left out (never sent)", id, "",
                                 METRIC_COUNTER);
}

struct relay_dest *relay_dest_find(struct relay *r, const struct dest *d)
{
    struct list_node *n;
    list_foreach(n, &r->rdests)
    {
        struct relay_dest *rd = list_entry(n, struct relay_dest, node);
        if (rd->d == d)
            return rd;
    }
    return NULL;
}

struct relay_dest *relay_dest_find_id(struct relay *r, const char *id)
{
    struct list_node *n;
    list_foreach(n, &r->rdests)
    {
        struct relay_dest *rd = list_entry(n, struct relay_dest, node);
        if (strcmp(rd->d->id, id) == 0)
            return rd;
    }
    return NULL;
}

struct relay_dest *relay_dest_get(struct relay *r, struct dest *d)
{
    struct relay_dest *rd = relay_dest_find(r, d);
    if (rd != NULL)
        return rd;
    rd = calloc(1, sizeof(*rd));
    if (rd == NULL)
        return NULL;
    rd->d = d;
    dest_metrics(rd); /* a metric that could not be made stays NULL: not counted */
    metric_set(rd->m_held, d->set.held);
    list_append(&r->rdests, &rd->node);
    return rd;
}

void relay_dest_free_all(struct relay *r)
{
    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &r->rdests)
    {
        list_remove(n);
        struct relay_dest *rd = list_entry(n, struct relay_dest, node);
        relay_signer_clear(&rd->signer);
        free(rd);
    }
}

void relay_dest_took_stream(struct relay_dest *rd)
{
    /* the previous owner may have spent a whole burst just before it let go */
    uint64_t now = relay_rate_now();
    relay_rate_set(&rd->rate, rd->d->set.rate_limit_per_s, now);
    relay_rate_empty(&rd->rate, now);
    rd->limited_noted_ms = 0;
}

/* ---------------------------------------------------------------- room */

bool relay_dest_gone(const struct relay_dest *rd)
{
    return rd->gone && rd->gone_generation == rd->d->generation;
}

/* Settings and this process's view allow delivering to it (breaker aside). */
static bool deliverable(struct relay *r, struct relay_dest *rd)
{
    const struct dest *d = rd->d;
    return d->present && d->set.enabled && !d->set.held && d->set.push && !relay_dest_gone(rd) &&
           relay_running(r);
}

bool relay_dest_usable(struct relay *r, struct relay_dest *rd)
{
    return deliverable(r, rd) &&
           (rd->breaker.paused_until == 0 || rd->breaker.paused_until <= relay_now_ms(r));
}

uint32_t relay_dest_tokens(struct relay_dest *rd)
{
    uint64_t now = relay_rate_now();
    relay_rate_set(&rd->rate, rd->d->set.rate_limit_per_s, now);
    return relay_rate_room(&rd->rate, now);
}

bool relay_dest_room(struct relay *r, struct relay_dest *rd, unsigned *room)
{
    rd->rate_short = false;
    if (!deliverable(r, rd))
        return false;
    unsigned cap;
    if (!relay_breaker_allows(&rd->breaker, relay_now_ms(r), rd->d->set.max_in_flight, &cap))
        return false;
    metric_set(rd->m_paused, 0);
    if (rd->in_flight >= cap)
        return false;
    *room = cap - rd->in_flight;
    uint32_t tokens = relay_dest_tokens(rd);
    if (tokens <= *room) {
        rd->rate_short = true;
        *room = tokens;
    }
    return *room > 0;
}

uint64_t relay_dest_unpause_within(struct relay *r, uint64_t ms)
{
    uint64_t now = relay_now_ms(r);
    struct list_node *n;
    list_foreach(n, &r->rdests)
    {
        struct relay_dest *rd = list_entry(n, struct relay_dest, node);
        if (rd->breaker.paused_until > now && rd->breaker.paused_until - now < ms)
            ms = rd->breaker.paused_until - now + 1;
    }
    return ms;
}

/*
 * A claimed row's lease must outlive its request, with room to write the
 * result: a destination's timeout plus a margin of 30 s, or of the lease
 * itself when that is shorter (ORDERSYNC_LEASE_S is how soon work passes to
 * another instance when its process dies; a shorter margin risks a duplicate,
 * never a loss).
 */
unsigned relay_row_lease_s(struct relay *r)
{
    unsigned lease = r->cfg.lease_s;
    unsigned margin = lease < 30 ? lease : 30;
    for (struct dest *d = destinations_first(r->dests); d != NULL; d = d->next)
        if (d->present && d->set.push && (unsigned)(d->set.timeout_ms / 1000) + margin > lease)
            lease = (unsigned)(d->set.timeout_ms / 1000) + margin;
    return lease;
}

/* ---------------------------------------------------------------- the rate limit */

/* d waits for a token: one timer for every destination, at the soonest next token. */
void relay_dest_rate_wait(struct relay *r, struct relay_dest *rd)
{
    if (!relay_running(r))
        return;
    /* +1: the timer runs on the loop's clock, which may lag relay_rate_now() a little */
    uint64_t wait = relay_rate_wait_ms(&rd->rate, relay_rate_now()) + 1;
    uint64_t at = relay_now_ms(r) + wait;
    if (uv_is_active((uv_handle_t *)&r->rate_timer) && r->rate_timer_at <= at)
        return;
    r->rate_timer_at = at;
    uv_timer_start(&r->rate_timer, relay_on_rate_timer, wait, 0);
}

void relay_dest_repay_all(struct relay *r)
{
    struct list_node *n;
    list_foreach(n, &r->rdests)
    {
        struct relay_dest *rd = list_entry(n, struct relay_dest, node);
        relay_rate_repay(&rd->rate, rd->rate_lent);
        rd->rate_lent = 0;
    }
}

static void on_dest_stmt(PGresult *res, const char *err, void *data)
{
    (void)res;
    if (err != NULL)
        log_warn("relay statement failed",
                 json_pack("{s:s,s:s}", "statement", (const char *)data, "detail", err));
}

/*
 * The rate limit holds back deliveries that are ready: sync_backlog shows it
 * (rate_limited) while delivery_streams.limited_until is ahead. Only the
 * stream's owner writes it, at most every LIMITED_HOLD_S / 2 seconds.
 */
void relay_dest_note_limited(struct relay *r, struct relay_dest *rd)
{
    uint64_t now = relay_now_ms(r);
    if (rd->limited_noted_ms != 0 && now - rd->limited_noted_ms < LIMITED_HOLD_S * 1000 / 2)
        return;
    char hold[16];
    snprintf(hold, sizeof(hold), "%d", LIMITED_HOLD_S);
    const char *v[3] = {rd->d->id, r->instance, hold};
    if (db_query(r->db, true, "limited", 3, v, on_dest_stmt, (void *)"limited") == 0)
        rd->limited_noted_ms = now;
}

/* ---------------------------------------------------------------- what an answer changes */

/* Destination bookkeeping (pause, resume, disable): fire and forget, logged on failure. */
static void dest_exec(struct relay *r, const char *stmt, int n, const char *const *v)
{
    if (db_query(r->db, true, stmt, n, v, on_dest_stmt, (void *)stmt) < 0)
        log_warn("relay statement not sent", json_pack("{s:s}", "statement", stmt));
}

static void disable_dest(struct relay *r, struct relay_dest *rd, int64_t position)
{
    metric_add(rd->m_gone, 1);
    rd->gone = true;
    rd->gone_generation = rd->d->generation;
    char reason[96];
    snprintf(reason, sizeof(reason), "answered 410 Gone to event %" PRId64, position);
    const char *v[2] = {rd->d->id, reason};
    log_warn("destination disabled",
             json_pack("{s:s,s:s}", "destination", rd->d->id, "reason", reason));
    dest_exec(r, "disable", 2, v);
    relay_alert(r, rd, RELAY_ALERT_DISABLED,
                json_pack("{s:s,s:i,s:I}", "reason", reason, "status", 410, "position",
                          (json_int_t)position));
}

static void pause_dest(struct relay *r, struct relay_dest *rd)
{
    const struct dest *d = rd->d;
    metric_set(rd->m_paused, 1);
    char secs[32], fails[16];
    snprintf(secs, sizeof(secs), "%.3f", d->set.policy.breaker_pause_s);
    snprintf(fails, sizeof(fails), "%d", rd->breaker.failures);
    const char *v[3] = {d->id, secs, fails};
    log_warn("destination paused",
             json_pack("{s:s,s:i,s:f}", "destination", d->id, "consecutive_failures",
                       rd->breaker.failures, "pause_s", d->set.policy.breaker_pause_s));
    dest_exec(r, "pause", 3, v);
    relay_alert(r, rd, RELAY_ALERT_BREAKER_OPENED,
                json_pack("{s:s,s:i,s:i,s:f}", "reason", "consecutive failures",
                          "consecutive_failures", rd->breaker.failures, "breaker_threshold",
                          d->set.policy.breaker_threshold, "pause_s",
                          d->set.policy.breaker_pause_s));
}

static void resume_dest(struct relay *r, struct relay_dest *rd)
{
    log_info("destination resumed", json_pack("{s:s}", "destination", rd->d->id));
    metric_set(rd->m_paused, 0);
    const char *v[1] = {rd->d->id};
    dest_exec(r, "resume", 1, v);
}

void relay_dest_answered(struct relay *r, struct relay_dest *rd, const struct relay_decision *dec,
                         int64_t position)
{
    enum relay_breaker_change bc = relay_breaker_record(
        &rd->breaker, &rd->d->set.policy, dec->verdict == RELAY_DELIVERED, relay_now_ms(r));
    if (dec->gone)
        disable_dest(r, rd, position);
    if (bc == RELAY_BREAKER_PAUSED)
        pause_dest(r, rd);
    else if (bc == RELAY_BREAKER_RESUMED)
        resume_dest(r, rd);
    /* the first delivery that goes through after an alert of trouble raised here */
    if (dec->verdict == RELAY_DELIVERED && rd->troubled)
        relay_alert(r, rd, RELAY_ALERT_RECOVERED,
                    json_pack("{s:s,s:I}", "reason", "a delivery went through", "position",
                              (json_int_t)position));
}
