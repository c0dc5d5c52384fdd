/*
 * db: async libpq connection. States: DOWN (waiting for the retry timer),
 * RESOLVING (uv_getaddrinfo), CONNECTING (PQconnectPoll), PREPARING (sending
 * the statements), READY. One function, set_state(), changes the state.
 *
 * Lifetime: the struct embeds uv handles, so it is freed only after their
 * close callbacks ran (db_close counts them down).
 */
#include "db.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Reconnect backoff: Postgres coming back must be noticed within ~1 s. */
#define BACKOFF_MIN_MS     50
#define BACKOFF_MAX_MS     500
#define CONNECT_TIMEOUT_MS 5000

enum db_state { DB_DOWN, DB_RESOLVING, DB_CONNECTING, DB_PREPARING, DB_READY, DB_CLOSED };

static const char *const state_names[] = {"down",      "resolving", "connecting",
                                          "preparing", "ready",     "closed"};

struct db_query {
    struct db_query *next;
    bool prepared;
    const char *stmt; /* points into `copy` */
    int nparams;
    const char **values; /* points into `copy` */
    db_result_fn cb;
    void *data;
    _Alignas(void *) char copy[]; /* values, then the strings: one allocation per query */
};

struct db {
    uv_loop_t *loop;
    char *conninfo;
    char *name;
    const struct db_stmt *stmts;
    int n_stmts;
    const struct db_callbacks *cbs;
    void *data;

    enum db_state state;
    PGconn *conn;
    uv_poll_t *poll; /* separate allocation: replaced on every connection */
    int poll_events;
    uv_timer_t timer; /* backoff and connect timeout */
    uv_getaddrinfo_t resolve;
    bool resolving;
    unsigned backoff_ms;
    int prepared; /* statements prepared so far on this connection */

    struct db_query *head, *tail; /* head is in flight when sent */
    bool head_sent;
    PGresult *pending_res; /* result kept until the query's NULL result */
    unsigned queued;

    char last_error[256];
    int handles_open; /* uv handles not yet closed; free when 0 after close */
};

static void start_connect(struct db *db);
static void on_poll(uv_poll_t *h, int status, int events);
static void pump(struct db *db);

static void set_state(struct db *db, enum db_state s)
{
    if (db->state == DB_CLOSED && s != DB_CLOSED)
        abort(); /* nothing may resurrect a closed db */
    log_debug("db state", json_pack("{s:s,s:s,s:s}", "db", db->name, "from", state_names[db->state],
                                    "to", state_names[s]));
    db->state = s;
}

static void maybe_free(struct db *db)
{
    if (db->state == DB_CLOSED && db->handles_open == 0 && !db->resolving) {
        free(db->conninfo);
        free(db->name);
        free(db);
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct db *db = h->data;
    db->handles_open--;
    if ((void *)h != (void *)&db->timer)
        free(h);
    maybe_free(db);
}

static void close_poll(struct db *db)
{
    if (db->poll != NULL) {
        uv_poll_stop(db->poll);
        uv_close((uv_handle_t *)db->poll, on_handle_closed);
        db->poll = NULL;
        db->poll_events = 0;
    }
}

/* Fails every queued query; callbacks may queue new ones (refused while down). */
static void fail_queue(struct db *db, const char *why)
{
    struct db_query *q = db->head;
    db->head = db->tail = NULL;
    db->head_sent = false;
    db->queued = 0;
    if (db->pending_res != NULL) {
        PQclear(db->pending_res);
        db->pending_res = NULL;
    }
    while (q != NULL) {
        struct db_query *next = q->next;
        q->cb(NULL, why, q->data);
        free(q);
        q = next;
    }
}

static void on_retry_timer(uv_timer_t *t)
{
    start_connect(t->data);
}

/* Drops the connection and schedules a new attempt. */
static void go_down(struct db *db, const char *why)
{
    snprintf(db->last_error, sizeof(db->last_error), "%s", why);
    /* libpq messages end with a newline; logs don't want it */
    size_t n = strlen(db->last_error);
    while (n > 0 && (db->last_error[n - 1] == '\n' || db->last_error[n - 1] == ' '))
        db->last_error[--n] = '\0';
    bool was_ready = db->state == DB_READY || db->state == DB_PREPARING;
    close_poll(db);
    if (db->conn != NULL) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    set_state(db, DB_DOWN);
    if (was_ready || db->backoff_ms == BACKOFF_MIN_MS)
        log_warn("database connection lost",
                 json_pack("{s:s,s:s}", "db", db->name, "detail", db->last_error));
    fail_queue(db, db->last_error);
    if (db->cbs->on_down != NULL)
        db->cbs->on_down(db, db->last_error, db->data);
    if (db->state != DB_DOWN)
        return; /* closed from the callback */
    uv_timer_start(&db->timer, on_retry_timer, db->backoff_ms, 0);
    db->backoff_ms = db->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : db->backoff_ms * 2;
}

static void want_events(struct db *db, int events)
{
    if (db->poll == NULL || db->poll_events == events)
        return;
    db->poll_events = events;
    int rc = uv_poll_start(db->poll, events, on_poll);
    if (rc < 0)
        go_down(db, uv_strerror(rc));
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct db *db = t->data;
    go_down(db, "timeout while connecting");
}

static void send_next_prepare(struct db *db)
{
    const struct db_stmt *s = &db->stmts[db->prepared];
    if (!PQsendPrepare(db->conn, s->name, s->sql, 0, NULL)) {
        go_down(db, PQerrorMessage(db->conn));
        return;
    }
    pump(db);
}

/* Connected and every statement prepared: queries may flow. */
static void became_ready(struct db *db)
{
    set_state(db, DB_READY);
    db->backoff_ms = BACKOFF_MIN_MS;
    log_info("database connected", json_pack("{s:s}", "db", db->name));
    if (db->cbs->on_ready != NULL)
        db->cbs->on_ready(db, db->data);
}

static void became_connected(struct db *db)
{
    uv_timer_stop(&db->timer);
    if (PQsetnonblocking(db->conn, 1) != 0) {
        go_down(db, PQerrorMessage(db->conn));
        return;
    }
    db->prepared = 0;
    set_state(db, DB_PREPARING);
    want_events(db, UV_READABLE);
    if (db->n_stmts > 0) {
        send_next_prepare(db);
        return;
    }
    became_ready(db);
}

static void drive_connect(struct db *db)
{
    switch (PQconnectPoll(db->conn)) {
    case PGRES_POLLING_READING:
        want_events(db, UV_READABLE);
        return;
    case PGRES_POLLING_WRITING:
        want_events(db, UV_WRITABLE);
        return;
    case PGRES_POLLING_OK:
        became_connected(db);
        return;
    default:
        go_down(db, PQerrorMessage(db->conn));
        return;
    }
}

static void connect_with(struct db *db, const char *hostaddr)
{
    PQconninfoOption *opts = NULL;
    const char **keys = NULL, **vals = NULL;
    char *perr = NULL;
    opts = PQconninfoParse(db->conninfo ? db->conninfo : "", &perr);
    if (opts == NULL) {
        go_down(db, perr ? perr : "invalid connection string");
        PQfreemem(perr);
        return;
    }
    int n = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
        n++;
    keys = calloc((size_t)n + 4, sizeof(*keys));
    vals = calloc((size_t)n + 4, sizeof(*vals));
    if (keys == NULL || vals == NULL) {
        go_down(db, "out of memory");
        goto done;
    }
    int k = 0;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (hostaddr != NULL && strcmp(o->keyword, "hostaddr") == 0)
            continue;
        keys[k] = o->keyword;
        vals[k++] = o->val;
    }
    if (hostaddr != NULL) {
        keys[k] = "hostaddr";
        vals[k++] = hostaddr;
    }
    keys[k] = "application_name";
    vals[k++] = "ordersync";
    keys[k] = NULL;
    /* expand_dbname=0: the options above are already parsed; later keys win over env */
    db->conn = PQconnectStartParams(keys, vals, 0);
    if (db->conn == NULL) {
        go_down(db, "out of memory");
        goto done;
    }
    if (PQstatus(db->conn) == CONNECTION_BAD) {
        go_down(db, PQerrorMessage(db->conn));
        goto done;
    }
    db->poll = malloc(sizeof(*db->poll));
    if (db->poll == NULL) {
        go_down(db, "out of memory");
        goto done;
    }
    int rc = uv_poll_init(db->loop, db->poll, PQsocket(db->conn));
    if (rc < 0) {
        free(db->poll);
        db->poll = NULL;
        go_down(db, uv_strerror(rc));
        goto done;
    }
    db->poll->data = db;
    db->handles_open++;
    db->poll_events = 0;
    set_state(db, DB_CONNECTING);
    uv_timer_start(&db->timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
    want_events(db, UV_WRITABLE);
done:
    free(keys);
    free(vals);
    PQconninfoFree(opts);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct db *db = req->data;
    db->resolving = false;
    if (db->state == DB_CLOSED) {
        uv_freeaddrinfo(res);
        maybe_free(db);
        return;
    }
    if (status < 0 || res == NULL) {
        char msg[200];
        snprintf(msg, sizeof(msg), "could not resolve database host: %s", uv_strerror(status));
        uv_freeaddrinfo(res);
        go_down(db, msg);
        return;
    }
    char addr[INET6_ADDRSTRLEN] = "";
    if (res->ai_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)res->ai_addr, addr, sizeof(addr));
    else
        uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, addr, sizeof(addr));
    uv_freeaddrinfo(res);
    connect_with(db, addr);
}

/*
 * libpq resolves host names with a blocking getaddrinfo() inside
 * PQconnectPoll; on the loop that would stall every client (think of a slow
 * DNS in compose). So a single host name is resolved on the thread pool first
 * and handed to libpq as hostaddr (host stays set for TLS and .pgpass).
 */
static void start_connect(struct db *db)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(db->conninfo ? db->conninfo : "", &perr);
    if (opts == NULL) {
        go_down(db, perr ? perr : "invalid connection string");
        PQfreemem(perr);
        return;
    }
    const char *host = NULL, *hostaddr = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
    }
    if (host == NULL && hostaddr == NULL)
        host = getenv("PGHOST");
    unsigned char tmp[sizeof(struct in6_addr)];
    bool needs_dns = host != NULL && hostaddr == NULL && host[0] != '/' && host[0] != '@' &&
                     strchr(host, ',') == NULL && inet_pton(AF_INET, host, tmp) != 1 &&
                     inet_pton(AF_INET6, host, tmp) != 1 && strcmp(host, "localhost") != 0;
    if (needs_dns) {
        char *h = strdup(host);
        PQconninfoFree(opts);
        if (h == NULL) {
            go_down(db, "out of memory");
            return;
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
        set_state(db, DB_RESOLVING);
        db->resolve.data = db;
        int rc = uv_getaddrinfo(db->loop, &db->resolve, on_resolved, h, NULL, &hints);
        free(h);
        if (rc < 0) {
            go_down(db, uv_strerror(rc));
            return;
        }
        db->resolving = true;
        return;
    }
    PQconninfoFree(opts);
    connect_with(db, NULL);
}

static void finish_query(struct db *db, PGresult *res, const char *err)
{
    struct db_query *q = db->head;
    db->head = q->next;
    if (db->head == NULL)
        db->tail = NULL;
    db->head_sent = false;
    db->queued--;
    q->cb(res, err, q->data);
    free(q);
}

static void send_head(struct db *db)
{
    struct db_query *q = db->head;
    int ok = q->prepared
                 ? PQsendQueryPrepared(db->conn, q->stmt, q->nparams, q->values, NULL, NULL, 0)
                 : PQsendQueryParams(db->conn, q->stmt, q->nparams, NULL, q->values, NULL, NULL, 0);
    if (!ok) {
        go_down(db, PQerrorMessage(db->conn));
        return;
    }
    db->head_sent = true;
}

/* A whole result arrived for what is in flight (a prepare or the head query). */
static void on_result(struct db *db, PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (db->state == DB_PREPARING) {
        if (!ok) {
            char msg[256];
            snprintf(msg, sizeof(msg), "preparing %s: %s", db->stmts[db->prepared].name,
                     PQresultErrorMessage(res));
            PQclear(res);
            go_down(db, msg);
            return;
        }
        PQclear(res);
        if (++db->prepared < db->n_stmts) {
            send_next_prepare(db);
            return;
        }
        became_ready(db);
        return;
    }
    finish_query(db, res, ok ? NULL : PQresultErrorMessage(res));
    PQclear(res);
}

static void drain_notifies(struct db *db)
{
    PGnotify *n;
    while (db->conn != NULL && (n = PQnotifies(db->conn)) != NULL) {
        if (db->cbs->on_notify != NULL)
            db->cbs->on_notify(db, n->relname, n->extra, db->data);
        PQfreemem(n);
    }
}

/* Sends what is queued, flushes, reads what arrived. Re-entrant safe via state checks. */
static void pump(struct db *db)
{
    for (;;) {
        if (db->state != DB_READY && db->state != DB_PREPARING)
            return;
        if (db->state == DB_READY && db->head != NULL && !db->head_sent) {
            send_head(db);
            if (db->state != DB_READY)
                return;
        }
        int f = PQflush(db->conn);
        if (f < 0) {
            go_down(db, PQerrorMessage(db->conn));
            return;
        }
        want_events(db, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
        if (db->state != DB_READY && db->state != DB_PREPARING)
            return;
        if (PQisBusy(db->conn))
            return; /* wait for more input */
        PGresult *res = PQgetResult(db->conn);
        if (res == NULL) {
            /* the end of one command's results */
            if (db->pending_res != NULL) {
                PGresult *r = db->pending_res;
                db->pending_res = NULL;
                on_result(db, r);
                continue;
            }
            return;
        }
        /* keep the last result of a command; hand it over at the terminating NULL */
        if (db->pending_res != NULL) {
            /* a multi-statement query: an error result wins over later ones */
            if (PQresultStatus(db->pending_res) == PGRES_FATAL_ERROR) {
                PQclear(res);
                continue;
            }
            PQclear(db->pending_res);
        }
        db->pending_res = res;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct db *db = h->data;
    if (status < 0) {
        go_down(db, uv_strerror(status));
        return;
    }
    if (db->state == DB_CONNECTING) {
        drive_connect(db);
        return;
    }
    if (events & UV_READABLE) {
        if (!PQconsumeInput(db->conn)) {
            go_down(db, PQerrorMessage(db->conn));
            return;
        }
        drain_notifies(db);
    }
    pump(db);
    drain_notifies(db);
}

int db_open(uv_loop_t *loop, const char *conninfo, const char *name, const struct db_stmt *stmts,
            int n_stmts, const struct db_callbacks *cbs, void *data, struct db **out)
{
    struct db *db = calloc(1, sizeof(*db));
    if (db == NULL)
        return -ENOMEM;
    db->loop = loop;
    db->conninfo = conninfo ? strdup(conninfo) : NULL;
    db->name = strdup(name);
    if ((conninfo != NULL && db->conninfo == NULL) || db->name == NULL) {
        free(db->conninfo);
        free(db->name);
        free(db);
        return -ENOMEM;
    }
    db->stmts = stmts;
    db->n_stmts = n_stmts;
    db->cbs = cbs;
    db->data = data;
    db->backoff_ms = BACKOFF_MIN_MS;
    db->state = DB_DOWN;
    uv_timer_init(loop, &db->timer);
    db->timer.data = db;
    db->handles_open = 1;
    start_connect(db);
    *out = db;
    return 0;
}

bool db_is_ready(const struct db *db)
{
    return db->state == DB_READY;
}

unsigned db_queue_length(const struct db *db)
{
    return db->queued;
}

const char *db_last_error(const struct db *db)
{
    return db->last_error;
}

int db_query(struct db *db, bool prepared, const char *stmt, int nparams, const char *const *values,
             db_result_fn cb, void *data)
{
    if (db->state != DB_READY)
        return -ENOTCONN;
    /*
     * The query owns copies of its statement and parameters: it may wait in
     * the queue behind others, and a caller's stack or buffers must not have
     * to outlive that (a borrowed-parameter contract was a crash waiting to
     * happen). One malloc: pointer array, then the strings.
     */
    size_t need = (size_t)nparams * sizeof(char *) + strlen(stmt) + 1;
    for (int i = 0; i < nparams; i++)
        need += values[i] != NULL ? strlen(values[i]) + 1 : 0;
    struct db_query *q = malloc(sizeof(*q) + need);
    if (q == NULL)
        return -ENOMEM;
    *q = (struct db_query){.prepared = prepared, .nparams = nparams, .cb = cb, .data = data};
    q->values = (const char **)(void *)q->copy;
    char *p = q->copy + (size_t)nparams * sizeof(char *);
    for (int i = 0; i < nparams; i++) {
        if (values[i] == NULL) {
            q->values[i] = NULL;
            continue;
        }
        size_t len = strlen(values[i]) + 1;
        memcpy(p, values[i], len);
        q->values[i] = p;
        p += len;
    }
    memcpy(p, stmt, strlen(stmt) + 1);
    q->stmt = p;
    if (db->tail != NULL)
        db->tail->next = q;
    else
        db->head = q;
    db->tail = q;
    db->queued++;
    if (db->head == q)
        pump(db);
    return 0;
}

void db_close(struct db **pdb)
{
    struct db *db = *pdb;
    if (db == NULL)
        return;
    *pdb = NULL;
    close_poll(db);
    if (db->conn != NULL) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
    uv_timer_stop(&db->timer);
    set_state(db, DB_CLOSED);
    fail_queue(db, "connection closed");
    if (db->resolving)
        uv_cancel((uv_req_t *)&db->resolve);
    uv_close((uv_handle_t *)&db->timer, on_handle_closed);
}

int db_columns(const PGresult *res, const char *what, const char *const *names, int *idx, int n)
{
    for (int i = 0; i < n; i++) {
        idx[i] = PQfnumber(res, names[i]);
        if (idx[i] < 0) {
            log_error("a query result lacks a column",
                      json_pack("{s:s,s:s}", "query", what, "column", names[i]));
            return -EINVAL;
        }
    }
    return 0;
}
