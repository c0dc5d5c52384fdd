/*
 * relay_alert: operational alerts about destinations (issue: a destination
 * that fails for good must not fail silently). What the relay sees, it
 * reports to ORDERSYNC_ALERT_DESTINATION through alert_raise (migration
 * 015), which stores the alert as an event with one delivery row for the
 * alert destination: from there it is claimed, signed, sent and retried
 * like any delivery, at least once, by whichever instance holds that
 * destination's stream.
 *
 * The database decides whether an alert is raised: at most one per
 * (destination, kind) per ORDERSYNC_ALERT_INTERVAL_S, whichever instance
 * saw the trouble; none about the alert destination itself (it could only
 * queue behind the trouble it reports, and would report its own alerts'
 * failures in a loop); "recovered" only after an alert of trouble.
 * Fire and forget: a failed statement is logged, and the next occurrence
 * raises the alert again.
 */
#include "relay_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

const char relay_sql_alert[] = "SELECT alert_raise($1, $2, $3, $4::jsonb,"
                               " make_interval(secs => $5::float8)) AS position";

static const char *const kind_names[] = {
    [RELAY_ALERT_DISABLED] = "destination.disabled",
    [RELAY_ALERT_BLOCKED] = "destination.blocked",
    [RELAY_ALERT_BREAKER_OPENED] = "destination.breaker_opened",
    [RELAY_ALERT_RECOVERED] = "destination.recovered",
};

struct alert_ctx {
    char kind[32];
    char dest[64 + 1]; /* destination ids are at most 63 characters (migration 001) */
};

static void on_alert(PGresult *res, const char *err, void *data)
{
    struct alert_ctx *c = data;
    static const char *const cols[] = {"position"};
    int col;
    if (err != NULL)
        log_warn("alert not raised", json_pack("{s:s,s:s,s:s}", "kind", c->kind, "destination",
                                               c->dest, "detail", err));
    else if (res != NULL && db_columns(res, "alert", cols, &col, 1) == 0 && PQntuples(res) == 1 &&
             !PQgetisnull(res, 0, col))
        log_info("alert raised", json_pack("{s:s,s:s,s:s}", "kind", c->kind, "destination", c->dest,
                                           "position", PQgetvalue(res, 0, col)));
    free(c);
}

void relay_alert(struct relay *r, struct relay_dest *rd, enum relay_alert_kind kind, json_t *detail)
{
    const char *id = rd->d->id;
    if (kind != RELAY_ALERT_RECOVERED)
        rd->troubled = true;
    else
        rd->troubled = false;
    /* none configured, or about the alert destination itself (see the top) */
    if (r->alert_dest == NULL || strcmp(r->alert_dest, id) == 0) {
        json_decref(detail);
        return;
    }
    char *text = detail != NULL ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    struct alert_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL || text == NULL) {
        log_warn("alert not raised", json_pack("{s:s,s:s,s:s}", "kind", kind_names[kind],
                                               "destination", id, "detail", "out of memory"));
        free(c);
        free(text);
        return;
    }
    snprintf(c->kind, sizeof(c->kind), "%s", kind_names[kind]);
    snprintf(c->dest, sizeof(c->dest), "%s", id);
    char interval[24];
    snprintf(interval, sizeof(interval), "%u", r->cfg.alert_interval_s);
    const char *v[5] = {r->alert_dest, id, kind_names[kind], text, interval};
    if (db_query(r->db, true, "alert", 5, v, on_alert, c) < 0) {
        log_warn("alert not raised", json_pack("{s:s,s:s,s:s}", "kind", kind_names[kind],
                                               "destination", id, "detail", "not sent"));
        free(c);
    }
    free(text);
}
