/*
 * relay_claim: the rows of `deliveries` (retries, events that waited behind
 * an earlier one of their order) of the streams this process holds. A claim
 * (delivery_claim in 007_delivery.sql) leases the rows that are due, as many
 * per destination as it has room for, and they are sent at once; their
 * results settle them through the next completion. When nothing more is
 * due, the soonest next_at of a row not yet due sets the due timer (capped
 * at the sweep interval, and woken sooner by completions that write rows).
 *
 * The sweep (relay_sweep) frees rows whose lease expired (their process
 * died) and rows blocked behind an event that is now settled, then claims.
 */
#include "relay_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "metrics.h"

const char relay_sql_claim[] =
    "SELECT destination_id, event_position, replace(event_id::text, '-', '')"
    " AS event_id, order_id, attempts, payload, age_s, trace_id"
    " FROM delivery_claim($1::text[], $2::integer[], make_interval(secs => $3::float8), $4)";
/* rows due now but not claimed wait for room: completions wake us for those */
const char relay_sql_next_due[] =
    "SELECT extract(epoch FROM min(n.next_at) - now())::float8 AS in_s"
    " FROM unnest($1::text[]) d(id) CROSS JOIN LATERAL ("
    "  SELECT x.next_at FROM deliveries x WHERE x.destination_id = d.id"
    "   AND x.state = 'pending' AND x.next_at > now()"
    "   ORDER BY x.next_at LIMIT 1) n";
const char relay_sql_sweep[] = "SELECT released, unblocked FROM relay_sweep()";

enum { CC_DEST, CC_POS, CC_ID, CC_ORDER, CC_ATTEMPTS, CC_PAYLOAD, CC_AGE, CC_TRACE, N_CC };
static const char *const claim_cols[N_CC] = {"destination_id", "event_position", "event_id",
                                             "order_id",       "attempts",       "payload",
                                             "age_s",          "trace_id"};

static void on_due_timer(uv_timer_t *t)
{
    relay_wake(t->data);
    relay_claim(t->data);
}

static void schedule_due(struct relay *r, double secs)
{
    if (!relay_running(r))
        return;
    if (secs > r->cfg.sweep_interval_s)
        secs = r->cfg.sweep_interval_s;
    uint64_t ms = secs > 0 ? (uint64_t)(secs * 1000) + 1 : 1;
    ms = relay_dest_unpause_within(r, ms);
    uv_timer_start(&r->due_timer, on_due_timer, ms, 0);
}

/*
 * May the stream's due rows be claimed now, and how many? The rate limit's
 * share is lent to the claim (given back in on_claim): no request of the
 * window can spend a token that a claimed row will need. A destination out
 * of tokens is claimed for when the next one comes (relay_on_rate_timer),
 * not before.
 */
static bool claim_room(struct relay *r, struct stream *s, unsigned *room)
{
    struct relay_dest *rd = s->rd;
    rd->rate_short = false;
    rd->rate_claim_asked = 0;
    if (!relay_stream_leased(r, s) || !relay_dest_room(r, rd, room)) {
        if (rd->rate_short) {
            rd->rate_claim_owed = true;
            relay_dest_rate_wait(r, rd);
        }
        return false;
    }
    rd->rate_claim_owed = false;
    rd->rate_claim_asked = rd->rate_short ? *room : 0;
    if (rd->rate.per_s > 0) {
        relay_rate_lend(&rd->rate, relay_rate_now(), *room);
        rd->rate_lent += *room;
    }
    return true;
}

/* The held streams' destinations as a text[] literal (and, with room, their limits). */
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
    struct list_node *node;
    list_foreach(node, &r->streams)
    {
        struct stream *s = list_entry(node, struct stream, node);
        if (rc < 0)
            break;
        unsigned room = 0;
        if (lims != NULL && !claim_room(r, s, &room))
            continue;
        rc = buf_append_str(ids, n ? "," : "");
        if (rc == 0)
            rc = relay_append_str(ids, s->rd->d->id);
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
    static const char *const cols[] = {"in_s"};
    int c;
    double secs = r->cfg.sweep_interval_s;
    if (err == NULL && res != NULL && PQntuples(res) == 1 &&
        db_columns(res, "next_due", cols, &c, 1) == 0 && !PQgetisnull(res, 0, c))
        secs = atof(PQgetvalue(res, 0, c));
    schedule_due(r, secs);
}

/* Nothing is due now: when will something be? */
static void next_due(struct relay *r)
{
    unsigned nd;
    if (dest_arrays(r, &r->due_ids, NULL, &nd) == 0 && nd > 0) {
        const char *v[1] = {r->due_ids.data};
        if (db_query(r->db, true, "next_due", 1, v, on_next_due, r) == 0)
            return;
    }
    schedule_due(r, r->cfg.sweep_interval_s);
}

static void on_claim(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    bool again = relay_conv_back(&r->claim);
    /* each row sent below takes its token from what the claim gives back */
    relay_dest_repay_all(r);
    int c[N_CC];
    if (err != NULL || res == NULL || db_columns(res, "claim", claim_cols, c, N_CC) < 0) {
        metric_add(r->m_db_errors, 1);
        if (res != NULL)
            log_warn("claim failed", json_pack("{s:s}", "detail", err ? err : "bad result"));
        schedule_due(r, 1);
        return;
    }
    const struct job_cols jc = {.pos = c[CC_POS],
                                .id = c[CC_ID],
                                .order = c[CC_ORDER],
                                .payload = c[CC_PAYLOAD],
                                .age = c[CC_AGE],
                                .trace = c[CC_TRACE]};
    int n = PQntuples(res);
    metric_add(r->m_claims, 1);
    for (int row = 0; row < n; row++) {
        struct relay_dest *rd = relay_dest_find_id(r, PQgetvalue(res, row, c[CC_DEST]));
        struct job *j = rd ? relay_job_new(r, rd, res, row, &jc) : NULL;
        if (j == NULL)
            continue; /* its lease runs out and it comes back */
        j->kind = JOB_ROW;
        j->attempt = atoi(PQgetvalue(res, row, c[CC_ATTEMPTS]));
        char why[160];
        bool running = relay_running(r);
        if (!running || !relay_send(r, j, why, sizeof(why))) {
            relay_job_set_outcome(j, JOB_RELEASED, 0, 0, running ? RELAY_NOT_SENT_DELAY_S : 0,
                                  running ? why : "not sent: ordersync stopped", NULL);
            relay_complete_add(r, j);
        } else {
            rd->rate_claimed++;
        }
    }
    /* a claim the rate limit sized came back full: more due rows wait for tokens */
    struct list_node *node;
    list_foreach(node, &r->rdests)
    {
        struct relay_dest *rd = list_entry(node, struct relay_dest, node);
        if (rd->rate_claim_asked > 0 && rd->rate_claimed >= rd->rate_claim_asked)
            relay_dest_note_limited(r, rd);
        rd->rate_claim_asked = rd->rate_claimed = 0;
    }
    if (again || n > 0) {
        /* a full claim may have left more due rows; a new wake may have come */
        relay_claim(r);
        return;
    }
    next_due(r);
}

void relay_claim(struct relay *r)
{
    if (!relay_running(r) || !db_is_ready(r->db))
        return;
    if (!relay_conv_want(&r->claim))
        return; /* claimed again once the one in flight is back */
    unsigned n;
    if (dest_arrays(r, &r->claim_ids, &r->claim_room, &n) < 0 || n == 0) {
        relay_dest_repay_all(r);
        return; /* nothing has room: completions (or the rate timer) wake us */
    }
    snprintf(r->lease_text, sizeof(r->lease_text), "%u", relay_row_lease_s(r));
    const char *v[4] = {r->claim_ids.data, r->claim_room.data, r->lease_text, r->instance};
    if (db_query(r->db, true, "claim", 4, v, on_claim, r) == 0)
        relay_conv_sent(&r->claim);
    else
        relay_dest_repay_all(r);
}

/*
 * A token is there for a destination that waited: its window sends (no
 * read: what waits is in it already), and its due rows are claimed if a
 * claim skipped them for want of tokens and the window left some.
 */
void relay_on_rate_timer(uv_timer_t *t)
{
    struct relay *r = t->data;
    if (!relay_running(r))
        return;
    bool rows = false;
    struct list_node *node;
    list_foreach(node, &r->streams)
    {
        struct stream *s = list_entry(node, struct stream, node);
        if (s->rd->d->set.rate_limit_per_s <= 0)
            continue;
        relay_dispatch(r, s);
        if (s->rd->rate_claim_owed && relay_dest_tokens(s->rd) > 0)
            rows = true;
    }
    if (rows)
        relay_claim(r);
}

/* ---------------------------------------------------------------- sweep */

static void on_sweep(PGresult *res, const char *err, void *data)
{
    struct relay *r = data;
    static const char *const cols[] = {"released", "unblocked"};
    int c[2];
    if (err == NULL && res != NULL && PQntuples(res) == 1 &&
        db_columns(res, "sweep", cols, c, 2) == 0) {
        int released = atoi(PQgetvalue(res, 0, c[0])), unblocked = atoi(PQgetvalue(res, 0, c[1]));
        if (released > 0 || unblocked > 0)
            log_info("sweep", json_pack("{s:i,s:i}", "expired_leases_released", released,
                                        "blocked_rows_freed", unblocked));
    }
    relay_claim(r);
}

void relay_on_sweep_timer(uv_timer_t *t)
{
    struct relay *r = t->data;
    if (!relay_running(r) || !db_is_ready(r->db))
        return;
    if (db_query(r->db, true, "sweep", 0, NULL, on_sweep, r) < 0)
        log_debug("sweep not sent", NULL);
}
