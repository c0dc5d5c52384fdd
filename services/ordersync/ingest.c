/*
 * ingest: group commit. See ingest.h for the contract.
 *
 * Why one statement per batch rather than BEGIN/INSERT.../COMMIT: it is one
 * round trip and one parse, and the transaction can never be left open by a
 * lost connection. Measured on the 2-core test machine (DESIGN.md §5), one
 * order per transaction tops out near 3k/s; batches of 32 reach 14-20k/s.
 */
#include "ingest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"
#include "log.h"
#include "metrics.h"

/* A batch's JSON is capped: batch_max bodies of at most max_body each fit easily. */
#define BATCH_JSON_CAP ((size_t)1 << 30)
/* A batch that lost a deadlock or serialization race is re-run this many times */
#define MAX_TRANSIENT_TRIES 3

struct item {
    struct item *next;
    struct http_request *req;
    char *source_id;
    struct inbound_event ev;
    bool solo;   /* re-run alone after its batch failed on data */
    int retries; /* transient failures (deadlock, serialization) so far */
};

struct batch {
    struct ingest *ing;
    unsigned conn; /* index in ing->dbs */
    struct item *items;
    unsigned n;
    struct buf json;
    const char *params[1];
    uint64_t t0;
};

struct ingest {
    uv_loop_t *loop;
    struct db *dbs[INGEST_MAX_CONNECTIONS];
    bool busy[INGEST_MAX_CONNECTIONS]; /* a batch is in flight on that connection */
    unsigned n_dbs;
    struct ingest_config cfg;
    uv_check_t check;
    struct item *head, *tail;
    unsigned queued;
    unsigned in_flight; /* items in batches being committed */

    struct metric *m_tx_ok, *m_tx_failed, *m_tx_split, *m_batch_size, *m_commit_seconds;
    struct metric *m_accepted, *m_duplicate, *m_stale, *m_ignored, *m_db_errors;
};

static void item_free(struct item *it)
{
    inbound_event_clear(&it->ev);
    free(it->source_id);
    free(it);
}

static void reply_unavailable(struct ingest *ing, struct item *it, const char *detail)
{
    char ra[16];
    snprintf(ra, sizeof(ra), "%u", ing->cfg.retry_after_s);
    struct http_header h = {"Retry-After", ra};
    api_reply_error(it->req, 503, "database_unavailable", detail, it->source_id, &h, 1);
}

/* Everything queued gets 503: the database is away and the sender's retry will recover. */
static void fail_queued(struct ingest *ing, const char *detail)
{
    struct item *it = ing->head;
    ing->head = ing->tail = NULL;
    ing->queued = 0;
    while (it != NULL) {
        struct item *next = it->next;
        reply_unavailable(ing, it, detail);
        item_free(it);
        it = next;
    }
}

static const char *const outcome_status[] = {"applied", "accepted", "duplicate", "duplicate",
                                             "stale",   "stale",    "ignored",   "ignored"};

static void reply_outcome(struct ingest *ing, struct item *it, const char *outcome,
                          const char *order_id, int emitted)
{
    const char *status = "accepted";
    for (size_t i = 0; i < sizeof(outcome_status) / sizeof(*outcome_status); i += 2)
        if (strcmp(outcome, outcome_status[i]) == 0)
            status = outcome_status[i + 1];
    if (strcmp(status, "accepted") == 0)
        metric_add(ing->m_accepted, 1);
    else if (strcmp(status, "duplicate") == 0)
        metric_add(ing->m_duplicate, 1);
    else if (strcmp(status, "stale") == 0)
        metric_add(ing->m_stale, 1);
    else
        metric_add(ing->m_ignored, 1);
    json_t *body = json_pack("{s:s}", "status", status);
    if (body != NULL && order_id != NULL && order_id[0] != '\0')
        json_object_set_new(body, "order_id", json_string(order_id));
    if (body != NULL && emitted > 0)
        json_object_set_new(body, "events", json_integer(emitted));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    api_reply(it->req, 200, text ? text : "{\"status\":\"accepted\"}", status, it->source_id);
    free(text);
}

/*
 * SQLSTATE classes that a retry can cure: the sender should come back. 25006
 * (read_only_sql_transaction) is a primary that stopped taking writes during
 * a switchover: the database is away, not the order wrong (db.c reconnects).
 */
static bool transient_sqlstate(const char *st)
{
    return st != NULL &&
           (strncmp(st, "40", 2) == 0 || strncmp(st, "53", 2) == 0 || strncmp(st, "57", 2) == 0 ||
            strncmp(st, "08", 2) == 0 || strncmp(st, "55", 2) == 0 || strcmp(st, "25006") == 0);
}

static void flush(struct ingest *ing);

static void batch_free(struct batch *b)
{
    struct item *it = b->items;
    while (it != NULL) {
        struct item *next = it->next;
        item_free(it);
        it = next;
    }
    buf_free(&b->json);
    free(b);
}

static void on_batch_done(PGresult *res, const char *err, void *data)
{
    struct batch *b = data;
    struct ingest *ing = b->ing;
    ing->busy[b->conn] = false;
    ing->in_flight -= b->n;
    double secs = (double)(uv_hrtime() - b->t0) / 1e9;

    if (res == NULL) {
        /* connection lost: the batch may or may not have committed; 503 is
           safe either way (a retry of a committed event is a duplicate) */
        metric_add(ing->m_tx_failed, 1);
        metric_add(ing->m_db_errors, 1);
        for (struct item *it = b->items; it != NULL; it = it->next)
            reply_unavailable(ing, it, err ? err : "connection to the database lost");
        batch_free(b);
        flush(ing); /* another connection may still be up; if none, the queue gets 503 */
        return;
    }
    if (err != NULL) {
        const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        metric_add(ing->m_tx_failed, 1);
        metric_add(ing->m_db_errors, 1);
        log_warn("ingest transaction failed",
                 json_pack("{s:s,s:s,s:i}", "sqlstate", sqlstate ? sqlstate : "", "detail", err,
                           "batch", (int)b->n));
        bool transient = transient_sqlstate(sqlstate);
        struct item *retry = NULL, **tailp = &retry;
        for (struct item *it = b->items, *next; it != NULL; it = next) {
            next = it->next;
            it->next = NULL;
            if ((transient && ++it->retries < MAX_TRANSIENT_TRIES) || (!transient && b->n > 1)) {
                /* a lost race is run again as is; a data error alone, to find the culprit */
                it->solo = it->solo || !transient;
                *tailp = it;
                tailp = &it->next;
                continue;
            }
            if (transient)
                reply_unavailable(ing, it, "the transaction failed; retry later");
            else
                api_reply_error(it->req, 422, "rejected_by_database",
                                "the order was refused by a database constraint", it->source_id,
                                NULL, 0);
            item_free(it);
        }
        b->items = NULL;
        if (retry != NULL) {
            /* ahead of what is queued: these were received first */
            if (!transient)
                metric_add(ing->m_tx_split, 1);
            unsigned n = 0;
            struct item *last = retry;
            for (struct item *it = retry; it != NULL; it = it->next, n++)
                last = it;
            last->next = ing->head;
            ing->head = retry;
            if (ing->tail == NULL)
                ing->tail = last;
            ing->queued += n;
        }
        batch_free(b);
        flush(ing);
        return;
    }

    metric_add(ing->m_tx_ok, 1);
    metric_observe(ing->m_batch_size, b->n);
    metric_observe(ing->m_commit_seconds, secs);
    /* ingest_batch() returns one row per element, with its index (it works in
       lock order, not arrival order) */
    struct item *by_idx_small[256];
    struct item **by_idx = b->n <= 256 ? by_idx_small : calloc(b->n, sizeof(*by_idx));
    int total_emitted = 0;
    unsigned i = 0;
    for (struct item *it = b->items; it != NULL && by_idx != NULL; it = it->next)
        by_idx[i++] = it;
    for (int r = 0; r < PQntuples(res) && by_idx != NULL; r++) {
        long idx = atol(PQgetvalue(res, r, 0));
        if (idx < 0 || (unsigned long)idx >= b->n || by_idx[idx] == NULL)
            continue;
        int emitted = atoi(PQgetvalue(res, r, 3));
        total_emitted += emitted;
        reply_outcome(ing, by_idx[idx], PQgetvalue(res, r, 1), PQgetvalue(res, r, 2), emitted);
        by_idx[idx] = NULL;
    }
    i = 0;
    for (struct item *it = b->items; it != NULL; it = it->next, i++) {
        if (by_idx != NULL && by_idx[i] == NULL)
            continue;
        /* no row for it: a bug in ingest_batch(); never leave a sender hanging */
        api_reply_error(it->req, 500, "internal_error",
                        "the batch result had no row for this request", it->source_id, NULL, 0);
    }
    if (by_idx != by_idx_small)
        free(by_idx);
    batch_free(b);
    if (total_emitted > 0 && ing->cfg.on_committed != NULL)
        ing->cfg.on_committed(ing->cfg.data);
    flush(ing);
}

/* Appends one element of the ingest_batch() array; the raw body is spliced in verbatim. */
static int append_item(struct buf *out, const struct item *it)
{
    const char *body;
    size_t body_len;
    body = http_request_body(it->req, &body_len);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s?,s:O?}", "s", it->source_id, "k", it->ev.dedupe_key,
                          "t", it->ev.topic, "e", it->ev.event_type, "o", it->ev.order);
    if (o == NULL)
        return -ENOMEM;
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (text == NULL)
        return -ENOMEM;
    size_t n = strlen(text);
    int rc = buf_append(out, text, n - 1); /* without the closing brace */
    free(text);
    if (rc == 0)
        rc = buf_append_str(out, ",\"p\":");
    if (rc == 0)
        rc = buf_append(out, body, body_len);
    if (rc == 0)
        rc = buf_append_str(out, "}");
    return rc;
}

/* Sends what is queued as one batch on connection `c`. */
static void send_batch(struct ingest *ing, unsigned c)
{
    struct batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        fail_queued(ing, "out of memory");
        return;
    }
    b->ing = ing;
    b->conn = c;
    buf_init(&b->json, BATCH_JSON_CAP);
    int rc = buf_append_str(&b->json, "[");
    struct item *last = NULL;
    bool solo = ing->head->solo;
    while (rc == 0 && ing->head != NULL && b->n < ing->cfg.batch_max) {
        if (b->n > 0 && (solo || ing->head->solo))
            break;
        struct item *it = ing->head;
        if (b->n > 0)
            rc = buf_append_str(&b->json, ",");
        if (rc == 0)
            rc = append_item(&b->json, it);
        ing->head = it->next;
        if (ing->head == NULL)
            ing->tail = NULL;
        ing->queued--;
        it->next = NULL;
        if (last != NULL)
            last->next = it;
        else
            b->items = it;
        last = it;
        b->n++;
    }
    if (rc == 0)
        rc = buf_append_str(&b->json, "]");
    if (rc == 0) {
        b->params[0] = b->json.data;
        b->t0 = uv_hrtime();
        rc = db_query(ing->dbs[c], true, "ingest_batch", 1, b->params, on_batch_done, b);
    }
    if (rc < 0) {
        for (struct item *it = b->items; it != NULL; it = it->next)
            reply_unavailable(ing, it,
                              rc == -ENOTCONN ? "the database is not connected"
                                              : "could not build the transaction");
        batch_free(b);
        return;
    }
    /* the statement holds its own copy: the JSON can go now */
    buf_free(&b->json);
    ing->busy[c] = true;
    ing->in_flight += b->n;
}

/*
 * Everything queued goes out, one batch per idle connection; with every
 * connection busy the queue grows into the next batch (that is the group
 * commit: the busier the database, the bigger the batches).
 */
static void flush(struct ingest *ing)
{
    bool any_ready = false;
    for (unsigned c = 0; c < ing->n_dbs && ing->head != NULL; c++) {
        if (!db_is_ready(ing->dbs[c]))
            continue;
        any_ready = true;
        if (!ing->busy[c])
            send_batch(ing, c);
    }
    if (!any_ready && ing->head != NULL) {
        const char *why = db_last_error(ing->dbs[0]);
        fail_queued(ing, why[0] ? why : "the database is not connected");
    }
}

static void on_check(uv_check_t *h)
{
    flush(h->data);
}

int ingest_new(uv_loop_t *loop, struct db *const *dbs, unsigned n_dbs,
               const struct ingest_config *cfg, struct ingest **out)
{
    if (n_dbs == 0 || n_dbs > INGEST_MAX_CONNECTIONS)
        return -EINVAL;
    struct ingest *ing = calloc(1, sizeof(*ing));
    if (ing == NULL)
        return -ENOMEM;
    ing->loop = loop;
    memcpy(ing->dbs, dbs, n_dbs * sizeof(*dbs));
    ing->n_dbs = n_dbs;
    ing->cfg = *cfg;
    if (ing->cfg.batch_max == 0)
        ing->cfg.batch_max = 256;
    int rc = uv_check_init(loop, &ing->check);
    if (rc < 0) {
        free(ing);
        return rc;
    }
    ing->check.data = ing;
    /* the check handle runs right after each poll phase: the end of a loop turn's I/O */
    uv_check_start(&ing->check, on_check);
    uv_unref((uv_handle_t *)&ing->check);

    const char *tx = "ordersync_ingest_transactions_total";
    const char *txh = "Ingest transactions by result";
    ing->m_tx_ok = metrics_counter(tx, txh, "result=\"committed\"");
    ing->m_tx_failed = metrics_counter(tx, txh, "result=\"failed\"");
    ing->m_tx_split = metrics_counter(tx, txh, "result=\"split\"");
    ing->m_batch_size =
        metrics_get(METRIC_HISTOGRAM, "ordersync_ingest_batch_size", "Webhooks per transaction", "",
                    metrics_size_buckets, metrics_size_buckets_n);
    ing->m_commit_seconds = metrics_get(METRIC_HISTOGRAM, "ordersync_ingest_commit_seconds",
                                        "Time from sending a batch to its commit", "",
                                        metrics_latency_buckets, metrics_latency_buckets_n);
    const char *wh = "ordersync_webhooks_total";
    const char *whh = "Webhooks by outcome (rejected ones by reason)";
    ing->m_accepted = metrics_counter(wh, whh, "outcome=\"accepted\"");
    ing->m_duplicate = metrics_counter(wh, whh, "outcome=\"duplicate\"");
    ing->m_stale = metrics_counter(wh, whh, "outcome=\"stale\"");
    ing->m_ignored = metrics_counter(wh, whh, "outcome=\"ignored\"");
    ing->m_db_errors = metrics_counter("ordersync_db_errors_total", "Failed database operations",
                                       "component=\"ingest\"");
    *out = ing;
    return 0;
}

void ingest_submit(struct ingest *ing, struct http_request *req, const char *source_id,
                   struct inbound_event *ev)
{
    struct item *it = calloc(1, sizeof(*it));
    char *sid = strdup(source_id);
    if (it == NULL || sid == NULL) {
        free(it);
        free(sid);
        inbound_event_clear(ev);
        api_reply_error(req, 503, "overloaded", "out of memory", source_id, NULL, 0);
        return;
    }
    it->req = req;
    it->source_id = sid;
    it->ev = *ev;
    memset(ev, 0, sizeof(*ev));
    if (ing->tail != NULL)
        ing->tail->next = it;
    else
        ing->head = it;
    ing->tail = it;
    ing->queued++;
}

bool ingest_ready(const struct ingest *ing)
{
    for (unsigned c = 0; c < ing->n_dbs; c++)
        if (db_is_ready(ing->dbs[c]))
            return true;
    return false;
}

const char *ingest_last_error(const struct ingest *ing)
{
    return db_last_error(ing->dbs[0]);
}

unsigned ingest_pending(const struct ingest *ing)
{
    return ing->queued + ing->in_flight;
}

static void on_check_closed(uv_handle_t *h)
{
    free(h->data);
}

void ingest_free(struct ingest **ping)
{
    struct ingest *ing = *ping;
    if (ing == NULL)
        return;
    *ping = NULL;
    fail_queued(ing, "ordersync is shutting down");
    uv_close((uv_handle_t *)&ing->check, on_check_closed);
}
