/*
 * db: async libpq connection. States: DOWN (waiting for the retry timer),
 * RESOLVING (uv_getaddrinfo for every host name), CONNECTING (PQconnectPoll),
 * PREPARING (sending the statements), READY. One function, set_state(),
 * changes the state.
 *
 * Connecting: conninfo.c turns the connection string into libpq's parameters
 * (keepalive defaults, names replaced by addresses resolved here on the
 * thread pool). libpq then walks the host list itself and applies
 * target_session_attrs, which means PQsocket() changes between
 * PQconnectPoll() calls: the uv_poll_t follows it (watch_socket()). Each
 * address gets its own connect timeout, as libpq's connect_timeout would in
 * blocking mode; an address that hangs is tried last on the next attempt.
 *
 * Lifetime: the struct embeds uv handles, so it is freed only after their
 * close callbacks ran and every lookup answered (db_close counts them down).
 */
#include "db.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "conninfo.h"
#include "log.h"

/* Reconnect backoff: Postgres coming back must be noticed within ~1 s. */
#define BACKOFF_MIN_MS     50
#define BACKOFF_MAX_MS     500
#define CONNECT_TIMEOUT_MS 5000 /* per address, unless the string sets connect_timeout */

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

/* One host name being resolved; lives in db->resolves until every lookup answered. */
struct db_resolve {
    uv_getaddrinfo_t req;
    struct db *db;
    size_t entry; /* index in the conninfo host list */
    bool pending;
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
    struct conninfo *ci; /* parameters of the current attempt */
    PGconn *conn;
    uv_poll_t *poll; /* separate allocation: replaced whenever the socket changes */
    int poll_events;
    /* the socket `poll` watches, by fd and inode: libpq may close a socket
       and get the same fd number back for the next one */
    int poll_fd;
    dev_t poll_dev;
    ino_t poll_ino;
    uv_timer_t timer; /* backoff and connect timeout */
    struct db_resolve *resolves;
    unsigned resolving; /* lookups not answered yet */
    char resolve_error[256];
    bool resolve_oom;            /* an answer could not be recorded: the attempt fails */
    unsigned connect_timeout_ms; /* per address; 0: none */
    bool wants_primary;          /* target_session_attrs asks for a writable server */
    size_t first;                /* host list entry the next attempt starts with */
    long current;                /* entry being tried, -1 when unknown */
    unsigned backoff_ms;
    int prepared; /* statements prepared so far on this connection */

    struct db_query *head, *tail; /* head is in flight when sent */
    bool head_sent;
    PGresult *pending_res; /* result kept until the query's NULL result */
    unsigned queued;

    char last_error[256];
    int handles_open; /* uv handles not yet closed; free when 0 after close */
};

/*
 * Set once at start-up (db_use_unnamed_statements): behind a pooler in
 * transaction mode a statement prepared on one server connection is unknown
 * to the next, so the statements given at open are sent as unnamed ones,
 * parsed with each query (the unnamed statement lives within one
 * Parse/Bind/Execute/Sync, which the pooler keeps on one server).
 */
static bool unnamed_statements;

void db_use_unnamed_statements(bool on)
{
    unnamed_statements = on;
}

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
    if (db->state == DB_CLOSED && db->handles_open == 0 && db->resolving == 0) {
        conninfo_free(&db->ci);
        free(db->resolves);
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

/*
 * Makes `poll` watch PQsocket(). libpq documents that the socket may change
 * between PQconnectPoll() calls: it closes the socket of a host it gives up
 * on (refused, a standby under target_session_attrs=read-write, IPv6 before
 * IPv4, SSL or GSS fallback) and opens another, often with the same fd
 * number. A uv_poll_t left on it would watch a closed descriptor (libuv then
 * aborts in epoll_ctl, or never reports the new socket), so a different
 * socket (fd or inode) gets a new handle. Returns 1 when the socket changed,
 * 0 when not, -1 after going down.
 */
static int watch_socket(struct db *db)
{
    int fd = PQsocket(db->conn);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        go_down(db, "the connection has no socket");
        return -1;
    }
    if (db->poll != NULL && fd == db->poll_fd && st.st_dev == db->poll_dev &&
        st.st_ino == db->poll_ino)
        return 0;
    close_poll(db);
    db->poll = malloc(sizeof(*db->poll));
    if (db->poll == NULL) {
        go_down(db, "out of memory");
        return -1;
    }
    int rc = uv_poll_init(db->loop, db->poll, fd);
    if (rc < 0) {
        free(db->poll);
        db->poll = NULL;
        go_down(db, uv_strerror(rc));
        return -1;
    }
    db->poll->data = db;
    db->handles_open++;
    db->poll_events = 0;
    db->poll_fd = fd;
    db->poll_dev = st.st_dev;
    db->poll_ino = st.st_ino;
    return 1;
}

static void on_connect_timeout(uv_timer_t *t)
{
    struct db *db = t->data;
    char msg[256];
    snprintf(msg, sizeof(msg), "timeout expired while connecting to server at \"%s\" (%s), port %s",
             PQhost(db->conn), PQhostaddr(db->conn), PQport(db->conn));
    /*
     * libpq cannot be told to skip to the next host, so the attempt ends
     * here; the next one starts after the host that hung, or a silent
     * first host (a partitioned primary) would hide every other one.
     */
    size_t n = conninfo_target_count(db->ci);
    if (db->current >= 0 && n > 1)
        db->first = ((size_t)db->current + 1) % n;
    go_down(db, msg);
}

/* libpq moved to another address (or started): a fresh connect timeout for it. */
static void new_target(struct db *db)
{
    db->current =
        conninfo_find_target(db->ci, PQhost(db->conn), PQhostaddr(db->conn), PQport(db->conn));
    log_debug("database connecting",
              json_pack("{s:s,s:s,s:s,s:s}", "db", db->name, "host", PQhost(db->conn), "hostaddr",
                        PQhostaddr(db->conn), "port", PQport(db->conn)));
    if (db->connect_timeout_ms > 0)
        uv_timer_start(&db->timer, on_connect_timeout, db->connect_timeout_ms, 0);
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
    log_info("database connected", json_pack("{s:s,s:s,s:s}", "db", db->name, "host",
                                             PQhost(db->conn), "port", PQport(db->conn)));
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
    if (db->state != DB_PREPARING)
        return;
    if (db->n_stmts > 0 && !unnamed_statements) {
        send_next_prepare(db);
        return;
    }
    became_ready(db);
}

static void drive_connect(struct db *db)
{
    PostgresPollingStatusType st = PQconnectPoll(db->conn);
    if (st != PGRES_POLLING_READING && st != PGRES_POLLING_WRITING && st != PGRES_POLLING_OK) {
        go_down(db, PQerrorMessage(db->conn));
        return;
    }
    int changed = watch_socket(db);
    if (changed < 0)
        return;
    if (st == PGRES_POLLING_OK) {
        became_connected(db);
        return;
    }
    if (changed)
        new_target(db);
    want_events(db, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
}

/*
 * Server notices and warnings (a crash shutdown's "terminating connection",
 * a cancelled wait for synchronous replication) would otherwise be printed
 * by libpq's default processor as bare text in the middle of the JSON log.
 */
static void on_notice(void *arg, const PGresult *res)
{
    struct db *db = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    json_t *f = json_pack("{s:s,s:s,s:s,s:s}", "db", db->name, "severity", severity ? severity : "",
                          "sqlstate", sqlstate ? sqlstate : "", "detail", msg ? msg : "");
    if (severity != NULL && strcmp(severity, "WARNING") == 0)
        log_warn("database warning", f);
    else
        log_debug("database notice", f);
}

/* Every name is resolved (or failed): hand libpq the list. */
static void connect_params(struct db *db)
{
    const char *const *keys, *const *vals;
    int rc = conninfo_params(db->ci, db->first, &keys, &vals);
    if (rc < 0) {
        go_down(db, rc == -ENOMEM                  ? "out of memory"
                    : db->resolve_error[0] != '\0' ? db->resolve_error
                                                   : "no database host to connect to");
        return;
    }
    /* expand_dbname=0: the options are already parsed */
    db->conn = PQconnectStartParams(keys, vals, 0);
    if (db->conn == NULL) {
        go_down(db, "out of memory");
        return;
    }
    if (PQstatus(db->conn) == CONNECTION_BAD) {
        go_down(db, PQerrorMessage(db->conn));
        return;
    }
    PQsetNoticeReceiver(db->conn, on_notice, db);
    set_state(db, DB_CONNECTING);
    db->current = -1;
    if (watch_socket(db) < 0)
        return;
    new_target(db);
    /* libpq: before the first PQconnectPoll(), wait as if it had said WRITING */
    want_events(db, UV_WRITABLE);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct db_resolve *r = req->data;
    struct db *db = r->db;
    r->pending = false;
    if (db->state != DB_CLOSED) {
        const char *host = conninfo_host_to_resolve(db->ci, r->entry);
        char bufs[CONNINFO_MAX_ADDRS][NI_MAXHOST];
        const char *addrs[CONNINFO_MAX_ADDRS];
        size_t n = 0;
        /* numeric only: getnameinfo() then does no lookup (and keeps an IPv6 scope) */
        for (struct addrinfo *ai = res; status == 0 && ai != NULL && n < CONNINFO_MAX_ADDRS;
             ai = ai->ai_next) {
            if (getnameinfo(ai->ai_addr, ai->ai_addrlen, bufs[n], sizeof(bufs[n]), NULL, 0,
                            NI_NUMERICHOST) == 0) {
                addrs[n] = bufs[n];
                n++;
            }
        }
        if (n == 0 && db->resolve_error[0] == '\0')
            snprintf(db->resolve_error, sizeof(db->resolve_error),
                     "could not translate host name \"%s\" to address: %s", host,
                     status < 0 ? uv_strerror(status) : "no usable address");
        /* a name that did not resolve is left out; libpq skips such a host too */
        if (conninfo_set_addrs(db->ci, r->entry, addrs, n) < 0)
            db->resolve_oom = true;
    }
    uv_freeaddrinfo(res);
    if (--db->resolving > 0)
        return;
    free(db->resolves);
    db->resolves = NULL;
    if (db->state == DB_CLOSED) {
        maybe_free(db);
        return;
    }
    if (db->resolve_oom) {
        go_down(db, "out of memory");
        return;
    }
    connect_params(db);
}

/*
 * libpq resolves host names with a blocking getaddrinfo() inside
 * PQconnectPoll; on the loop that would stall every client (think of a slow
 * DNS in compose). So every host name of the list is resolved on the thread
 * pool first, in parallel, and handed to libpq as hostaddr (host stays set
 * for TLS and .pgpass). Names are resolved again on every attempt: after a
 * failover the name may point elsewhere.
 */
static void start_connect(struct db *db)
{
    char err[256];
    conninfo_free(&db->ci);
    int rc = conninfo_new(db->conninfo, err, sizeof(err), &db->ci);
    if (rc == 0)
        rc = conninfo_set(db->ci, "application_name", "ordersync");
    if (rc < 0) {
        go_down(db, rc == -ENOMEM ? "out of memory" : err);
        return;
    }
    db->connect_timeout_ms = conninfo_connect_timeout_ms(db->ci, CONNECT_TIMEOUT_MS);
    const char *tsa = conninfo_get(db->ci, "target_session_attrs");
    if (tsa == NULL)
        tsa = getenv("PGTARGETSESSIONATTRS");
    db->wants_primary =
        tsa != NULL && (strcmp(tsa, "read-write") == 0 || strcmp(tsa, "primary") == 0);
    db->resolve_error[0] = '\0';
    db->resolve_oom = false;
    size_t n = conninfo_host_count(db->ci);
    bool any = false;
    for (size_t i = 0; i < n && !any; i++)
        any = conninfo_host_to_resolve(db->ci, i) != NULL;
    if (!any) {
        connect_params(db);
        return;
    }
    db->resolves = calloc(n, sizeof(*db->resolves));
    if (db->resolves == NULL) {
        go_down(db, "out of memory");
        return;
    }
    set_state(db, DB_RESOLVING);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    for (size_t i = 0; i < n; i++) {
        const char *host = conninfo_host_to_resolve(db->ci, i);
        if (host == NULL)
            continue;
        struct db_resolve *r = &db->resolves[i];
        *r = (struct db_resolve){.db = db, .entry = i};
        r->req.data = r;
        rc = uv_getaddrinfo(db->loop, &r->req, on_resolved, host, NULL, &hints);
        if (rc == 0) {
            r->pending = true;
            db->resolving++;
            continue;
        }
        if (db->resolve_error[0] == '\0')
            snprintf(db->resolve_error, sizeof(db->resolve_error),
                     "could not translate host name \"%s\" to address: %s", host, uv_strerror(rc));
        if (conninfo_set_addrs(db->ci, i, NULL, 0) < 0)
            db->resolve_oom = true;
    }
    if (db->resolving > 0)
        return; /* the last answer connects */
    free(db->resolves);
    db->resolves = NULL;
    if (db->resolve_oom) {
        go_down(db, "out of memory");
        return;
    }
    connect_params(db);
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

/* The text of a statement given at open, by name; NULL when there is none by that name. */
static const char *stmt_sql(const struct db *db, const char *name)
{
    for (int i = 0; i < db->n_stmts; i++)
        if (strcmp(db->stmts[i].name, name) == 0)
            return db->stmts[i].sql;
    return NULL;
}

static void send_head(struct db *db)
{
    struct db_query *q = db->head;
    /* an unknown name goes to the server as prepared: it answers what is wrong */
    const char *text = q->prepared && unnamed_statements ? stmt_sql(db, q->stmt) : NULL;
    int ok = q->prepared && text == NULL
                 ? PQsendQueryPrepared(db->conn, q->stmt, q->nparams, q->values, NULL, NULL, 0)
                 : PQsendQueryParams(db->conn, text != NULL ? text : q->stmt, q->nparams, NULL,
                                     q->values, NULL, NULL, 0);
    if (!ok) {
        go_down(db, PQerrorMessage(db->conn));
        return;
    }
    db->head_sent = true;
}

/*
 * libpq's own test for target_session_attrs=read-write, applied after every
 * command rather than only at connect: the server stopped taking writes while
 * we were on it (fenced before a switchover, as pg_auto_failover does, or
 * demoted in place). PostgreSQL 14+ reports both settings as they change;
 * older servers are caught by the 25006 (read_only_sql_transaction) of the
 * first write. Staying would fail every write; a new attempt lets libpq pass
 * this server over for the primary.
 */
static bool server_read_only(const struct db *db)
{
    const char *ro = PQparameterStatus(db->conn, "default_transaction_read_only");
    const char *standby = PQparameterStatus(db->conn, "in_hot_standby");
    return (ro != NULL && strcmp(ro, "on") == 0) || (standby != NULL && strcmp(standby, "on") == 0);
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
    const char *sqlstate = ok ? NULL : PQresultErrorField(res, PG_DIAG_SQLSTATE);
    bool read_only = sqlstate != NULL && strcmp(sqlstate, "25006") == 0;
    finish_query(db, res, ok ? NULL : PQresultErrorMessage(res));
    PQclear(res);
    if (db->wants_primary && db->state == DB_READY && (read_only || server_read_only(db)))
        go_down(db, "the server no longer accepts writes; looking for the primary");
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
        /*
         * libuv reports a socket error (POLLERR) as UV_EBADF and stops the
         * handle. The error itself is libpq's to read: a refused connection
         * sends PQconnectPoll() on to the next host; keepalives or
         * tcp_user_timeout giving up on a silent peer (ETIMEDOUT) make
         * PQconsumeInput() fail with a message that says so.
         */
        db->poll_events = 0;
        events = UV_READABLE;
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
    /* their callbacks still run (UV_EAI_CANCELED); maybe_free waits for them */
    for (size_t i = 0; db->resolves != NULL && i < conninfo_host_count(db->ci); i++)
        if (db->resolves[i].pending)
            uv_cancel((uv_req_t *)&db->resolves[i].req);
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
