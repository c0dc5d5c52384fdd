/*
 * ingest: group commit. See ingest.h for the contract.
 *
 * Why one statement per batch rather than BEGIN/INSERT.../COMMIT: it is one
 * round trip and one parse, and the transaction can never be left open by a
 * lost connection. Measured on a 2-core machine (scripts/bench), one
 * order per transaction tops out near 3k/s; batches of 32 reach 14-20k/s.
 */
#include "ingest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json_text.h"
#include "log.h"
#include "metrics.h"

/* A batch's JSON is capped: batch_max bodies of at most max_body each fit easily. */
#define BATCH_JSON_CAP ((size_t)1 << 30)
/* A batch that lost a deadlock or serialization race is re-run this many times */
#define MAX_TRANSIENT_TRIES 3

struct item {
    struct item *next;
    ingest_done_fn done;
    void *ctx;
    const char *body; /* borrowed until done */
    size_t body_len;
    /*
     * Its ingest_batch() element, serialized when it is submitted: the parsed
     * body and order go at once, so a request waiting for its commit costs
     * its text only (under overload, thousands wait).
     */
    char *element;
    const char *ignored_reason; /* static; see inbound_event */
    char trace_id[33];
    bool solo;   /* re-run alone after its batch failed on data */
    int retries; /* transient failures (deadlock, serialization) so far */
};

struct batch {
    struct ingest *ing;
    unsigned conn; /* index in ing->dbs */
    struct item *items;
    unsigned n;
    struct buf json, payloads;
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
    free(it->element);
    free(it);
}

static void report(struct item *it, enum ingest_result result, const char *outcome,
                   const char *order_id, int events, const char *detail)
{
    struct ingest_outcome o = {
        .result = result,
        .outcome = outcome,
        .reason = outcome != NULL && strcmp(outcome, "ignored") == 0 ? it->ignored_reason : NULL,
        .order_id = order_id,
        .events = events,
        .detail = detail,
        .trace_id = it->trace_id};
    it->done(it->ctx, &o);
}

static void reply_unavailable(struct ingest *ing, struct item *it, const char *detail)
{
    (void)ing;
    report(it, INGEST_UNAVAILABLE, NULL, NULL, 0, detail);
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

static const char *const outcomes[] = {"applied", "stale", "ignored", "duplicate"};

/* Ignored webhooks that carry a reason (inbound_event.ignored_reason) are counted apart. */
static struct metric *ignored_counter(const char *reason)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "outcome=\"ignored\",reason=\"%s\"", reason);
    return metrics_counter("ordersync_webhooks_total",
                           "Webhooks by outcome (rejected ones by reason)", labels);
}

static void reply_outcome(struct ingest *ing, struct item *it, const char *outcome,
                          const char *order_id, int emitted)
{
    const char *o = NULL;
    for (size_t i = 0; i < sizeof(outcomes) / sizeof(*outcomes); i++)
        if (strcmp(outcome, outcomes[i]) == 0)
            o = outcomes[i];
    if (o == NULL) {
        report(it, INGEST_FAILED, NULL, order_id, 0, "the database answered an unknown outcome");
        return;
    }
    if (o == outcomes[0])
        metric_add(ing->m_accepted, 1);
    else if (o == outcomes[3])
        metric_add(ing->m_duplicate, 1);
    else if (o == outcomes[1])
        metric_add(ing->m_stale, 1);
    else if (it->ignored_reason == NULL)
        metric_add(ing->m_ignored, 1);
    else
        metric_add(ignored_counter(it->ignored_reason), 1);
    report(it, INGEST_DONE, o, order_id, emitted, NULL);
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

/*
 * SQLSTATE classes 22 (data exception) and 23 (integrity constraint) are the
 * only ones a request's content can cause; any other failure (a bug, a full
 * disk, a trigger gone wrong: XX, 53, P0, 42...) is ours, and the sender must
 * keep its event and retry rather than be told it is wrong.
 */
static bool senders_sqlstate(const char *st)
{
    return st != NULL && (strncmp(st, "22", 2) == 0 || strncmp(st, "23", 2) == 0);
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
    buf_free(&b->payloads);
    free(b);
}

enum { RC_IDX, RC_OUTCOME, RC_ORDER, RC_EMITTED, N_RC };
static const char *const result_cols[N_RC] = {"idx", "outcome", "order_id", "emitted"};

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
        bool transient = transient_sqlstate(sqlstate);
        bool senders = senders_sqlstate(sqlstate);
        metric_add(ing->m_tx_failed, 1);
        metric_add(ing->m_db_errors, 1);
        log_json(transient || senders ? LOG_WARN : LOG_ERROR, "ingest transaction failed",
                 json_pack("{s:s,s:s,s:i}", "sqlstate", sqlstate ? sqlstate : "", "detail", err,
                           "batch", (int)b->n));
        struct item *retry = NULL, **tailp = &retry;
        for (struct item *it = b->items, *next; it != NULL; it = next) {
            next = it->next;
            it->next = NULL;
            if ((transient && ++it->retries < MAX_TRANSIENT_TRIES) || (senders && b->n > 1)) {
                /* a lost race is run again as is; a data error alone, to find the culprit */
                it->solo = it->solo || senders;
                *tailp = it;
                tailp = &it->next;
                continue;
            }
            if (senders)
                report(it, INGEST_REJECTED, NULL, NULL, 0,
                       "the order was refused by a database constraint");
            else
                reply_unavailable(ing, it, "the transaction failed; retry later");
            item_free(it);
        }
        b->items = NULL;
        if (retry != NULL) {
            /* ahead of what is queued: these were received first */
            if (senders)
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
    int c[N_RC];
    bool readable = db_columns(res, "ingest_batch", result_cols, c, N_RC) == 0;
    for (int r = 0; readable && r < PQntuples(res) && by_idx != NULL; r++) {
        long idx = atol(PQgetvalue(res, r, c[RC_IDX]));
        if (idx < 0 || (unsigned long)idx >= b->n || by_idx[idx] == NULL)
            continue;
        int emitted = atoi(PQgetvalue(res, r, c[RC_EMITTED]));
        total_emitted += emitted;
        reply_outcome(ing, by_idx[idx], PQgetvalue(res, r, c[RC_OUTCOME]),
                      PQgetisnull(res, r, c[RC_ORDER]) ? NULL : PQgetvalue(res, r, c[RC_ORDER]),
                      emitted);
        by_idx[idx] = NULL;
    }
    i = 0;
    for (struct item *it = b->items; it != NULL; it = it->next, i++) {
        if (by_idx != NULL && by_idx[i] == NULL)
            continue;
        /* no row for it: a bug in ingest_batch(); never leave a sender hanging */
        report(it, INGEST_FAILED, NULL, NULL, 0, "the batch result had no row for this request");
    }
    if (by_idx != by_idx_small)
        free(by_idx);
    batch_free(b);
    if (total_emitted > 0 && ing->cfg.on_committed != NULL)
        ing->cfg.on_committed(ing->cfg.data);
    flush(ing);
}

/* ,"key": and a string, or null when s is NULL (json_pack's "s?") */
static int append_member(struct buf *b, const char *key, const char *s)
{
    int rc = buf_append_str(b, key);
    if (rc == 0)
        rc = s != NULL ? json_text_append_string(b, s, strlen(s)) : buf_append(b, "null", 4);
    return rc;
}

char *ingest_element(const char *source_id, const struct inbound_event *ev)
{
    /*
     * The text json_pack("{s:s,s:s,s:s,s:s?,s:O?,s:s?}") and "tr" when there
     * is a trace id, dumped compact, would be (tests/unit/test_json_text.c
     * compares them), written directly: the schema is fixed. "x": the order
     * an ignored webhook's body names (inbound_event.order_ref).
     */
    struct buf b;
    int rc;

    if (source_id == NULL || ev->dedupe_key == NULL || ev->topic == NULL)
        return NULL;
    buf_init(&b, BATCH_JSON_CAP);
    /* one allocation for a typical order, rather than doubling from 64 bytes */
    rc = buf_reserve(&b, 1024);
    if (rc == 0)
        rc = append_member(&b, "{\"s\":", source_id);
    if (rc == 0)
        rc = append_member(&b, ",\"k\":", ev->dedupe_key);
    if (rc == 0)
        rc = append_member(&b, ",\"t\":", ev->topic);
    if (rc == 0)
        rc = append_member(&b, ",\"e\":", ev->event_type);
    if (rc == 0)
        rc = buf_append_str(&b, ",\"o\":");
    if (rc == 0)
        rc = ev->order != NULL ? json_text_append(&b, ev->order) : buf_append(&b, "null", 4);
    if (rc == 0)
        rc = append_member(&b, ",\"x\":", ev->order_ref);
    if (rc == 0 && ev->trace_id[0] != '\0')
        rc = append_member(&b, ",\"tr\":", ev->trace_id);
    if (rc == 0)
        rc = buf_append(&b, "}", 1);
    if (rc < 0) {
        buf_free(&b);
        return NULL;
    }
    /* it may wait in the queue a while (thousands do under overload): no slack kept */
    size_t len;
    char *text = buf_steal(&b, &len);
    char *exact = realloc(text, len + 1);
    return exact != NULL ? exact : text;
}

/*
 * Appends the raw body as one element of a text[] literal. It is valid JSON
 * (inbound_parse checked), so UTF-8 without NUL; only " and \ need escaping.
 * Room for the worst case (every byte escaped) is made first, so that the
 * bytes are written in place in one pass (a body has a quote on either side
 * of every key); the batch's text lives only until it is sent.
 */
static int append_payload(struct buf *out, const struct item *it)
{
    const char *p = it->body, *end = it->body + it->body_len;
    if (it->body_len > (out->cap - 2) / 2)
        return -E2BIG;
    int rc = buf_reserve(out, 2 * it->body_len + 2);
    if (rc < 0)
        return rc;
    char *start = out->data + out->len, *o = start;
    *o++ = '"';
    for (; p < end; p++) {
        if (*p == '"' || *p == '\\')
            *o++ = '\\';
        *o++ = *p;
    }
    *o++ = '"';
    buf_advance(out, (size_t)(o - start));
    return 0;
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
    buf_init(&b->payloads, BATCH_JSON_CAP);
    int rc = buf_append_str(&b->json, "[");
    if (rc == 0)
        rc = buf_append_str(&b->payloads, "{");
    struct item *last = NULL;
    bool solo = ing->head->solo;
    while (rc == 0 && ing->head != NULL && b->n < ing->cfg.batch_max) {
        if (b->n > 0 && (solo || ing->head->solo))
            break;
        struct item *it = ing->head;
        if (b->n > 0) {
            rc = buf_append_str(&b->json, ",");
            if (rc == 0)
                rc = buf_append_str(&b->payloads, ",");
        }
        if (rc == 0)
            rc = buf_append_str(&b->json, it->element);
        if (rc == 0)
            rc = append_payload(&b->payloads, it);
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
    if (rc == 0)
        rc = buf_append_str(&b->payloads, "}");
    if (rc == 0) {
        const char *params[2] = {b->json.data, b->payloads.data};
        b->t0 = uv_hrtime();
        rc = db_query(ing->dbs[c], true, "ingest_batch", 2, params, on_batch_done, b);
    }
    if (rc < 0) {
        for (struct item *it = b->items; it != NULL; it = it->next)
            reply_unavailable(ing, it,
                              rc == -ENOTCONN ? "the database is not connected"
                                              : "could not build the transaction");
        batch_free(b);
        return;
    }
    /* the statement holds its own copy: the text can go now */
    buf_free(&b->json);
    buf_free(&b->payloads);
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
    if (ing->cfg.max_pending == 0)
        ing->cfg.max_pending = 2048;
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

void ingest_submit(struct ingest *ing, const char *source_id, struct inbound_event *ev,
                   const char *body, size_t body_len, ingest_done_fn done, void *ctx)
{
    struct item *it = calloc(1, sizeof(*it));
    char *element = it != NULL ? ingest_element(source_id, ev) : NULL;
    const char *reason = ev->ignored_reason;
    char trace_id[sizeof(it->trace_id)];
    snprintf(trace_id, sizeof(trace_id), "%s", ev->trace_id);
    inbound_event_clear(ev);
    if (it == NULL || element == NULL) {
        free(it);
        free(element);
        struct ingest_outcome o = {.result = INGEST_UNAVAILABLE, .detail = "out of memory"};
        done(ctx, &o);
        return;
    }
    it->done = done;
    it->ctx = ctx;
    it->body = body;
    it->body_len = body_len;
    it->element = element;
    it->ignored_reason = reason;
    memcpy(it->trace_id, trace_id, sizeof(it->trace_id));
    if (ing->tail != NULL)
        ing->tail->next = it;
    else
        ing->head = it;
    ing->tail = it;
    ing->queued++;
}

bool ingest_full(const struct ingest *ing)
{
    return ing->queued + ing->in_flight >= ing->cfg.max_pending;
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
