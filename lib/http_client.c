/*
 * http_client: libcurl multi on libuv. See http_client.h.
 *
 * Each curl socket gets a `struct sock` holding a uv_poll_t, found by its
 * fd in `socks`; it is freed in the uv_close callback (memory holding a uv
 * handle must outlive the handle). Finished transfers are collected with
 * curl_multi_info_read after every socket action.
 *
 * What a request costs here is kept to the request itself:
 * - Connections: curl says CURL_POLL_REMOVE for a socket each time a
 *   transfer ends and the connection goes back to its pool, and wants the
 *   same socket again for the next request on it. Closing and re-creating
 *   the uv_poll each time registered and removed the fd with epoll per
 *   request. The sockets of connections are opened and closed through
 *   CURLOPT_OPENSOCKETFUNCTION / CURLOPT_CLOSESOCKETFUNCTION, so their poll
 *   lives as long as the socket: on REMOVE an idle socket keeps being watched
 *   for reading (what it was waiting for: no epoll change), and if the peer
 *   closes it or writes while idle, polling stops until curl wants it again
 *   (curl finds the dead connection itself when it next picks it). Other
 *   sockets curl reports (a resolver's) are closed by curl behind our back,
 *   so their poll goes on REMOVE as before.
 * - Easy handles: each keeps its options; a request changes only what
 *   differs from the last one on that handle (URL, method, body, timeout),
 *   and a handle last used for the same URL is preferred, so a destination's
 *   requests skip curl_easy_reset and most setopts.
 * - Request headers: the curl_slist nodes and their text live in the
 *   transfer and are reused (curl only reads the list), not malloc'd per line.
 */
#include "http_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "list.h"
#include "log.h"

struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct http_client *d;
    int events; /* what the poll is started with (0: stopped) */
    bool idle;  /* curl does not want it now (REMOVE): its connection is in the pool */
};

/* What the client knows of an fd. */
/* The request headers of one request, all lines together (far above what anyone sends) */
#define HEADER_TEXT_MAX (1024 * 1024)

struct fd_entry {
    struct sock *sock; /* its poll, or NULL */
    bool ours;         /* opened by on_open_socket: curl closes it through on_close_socket */
};

struct xfer {
    struct list_node node; /* d->active, or d->free_list */
    CURL *easy;
    /* the request's header list: nodes and text owned here, reused */
    struct curl_slist *nodes;
    size_t n_nodes_cap;
    struct buf header_text;
    /* what the handle was last set up with, to set only what changes */
    char *url;
    uint64_t url_hash;
    bool was_get;
    long timeout_ms;
    http_client_done_fn cb;
    void *data;
    struct http_client_result res;
    const char *const *want; /* capture_headers of the request (borrowed until finish) */
    unsigned n_want;
    char *captured[HTTP_CLIENT_MAX_CAPTURE]; /* new allocations, freed after the callback */
    size_t excerpt_len;
    struct buf body; /* capture */
    uint64_t t0;
};

struct http_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    char *user_agent;
    struct list_node free_list; /* finished transfers whose easy handles are reused */
    struct list_node active;    /* started, not finished: what http_client_free aborts */
    struct fd_entry *socks;     /* indexed by fd */
    size_t n_socks;
    unsigned in_flight;
    unsigned open_handles; /* timer + polls */
    bool closing;
};

static void check_done(struct http_client *d);

static void maybe_free(struct http_client *d)
{
    if (!d->closing || d->open_handles > 0)
        return;
    free(d->socks);
    free(d->user_agent);
    free(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct http_client *d = h->data;
    d->open_handles--;
    maybe_free(d);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct sock *s = h->data;
    struct http_client *d = s->d;
    free(s);
    d->open_handles--;
    maybe_free(d);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock *s = h->data;
    struct http_client *d = s->d;
    if (s->idle) {
        /* a pooled connection that the peer closed or wrote to: curl sees
           it when it next picks it; until then reading it would only spin */
        uv_poll_stop(&s->poll);
        s->events = 0;
        return;
    }
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(d->multi, s->fd, flags, &running);
    check_done(d);
}

static struct fd_entry *fd_entry(struct http_client *d, curl_socket_t fd, bool grow)
{
    if (fd < 0)
        return NULL;
    if ((size_t)fd >= d->n_socks) {
        if (!grow)
            return NULL;
        size_t n = d->n_socks ? d->n_socks : 64;
        while (n <= (size_t)fd)
            n *= 2;
        struct fd_entry *m = realloc(d->socks, n * sizeof(*m));
        if (m == NULL)
            return NULL;
        memset(m + d->n_socks, 0, (n - d->n_socks) * sizeof(*m));
        d->socks = m;
        d->n_socks = n;
    }
    return &d->socks[fd];
}

/* Stops and closes s's poll (freed in the close callback); forgets it. */
static void sock_close(struct http_client *d, struct sock *s)
{
    struct fd_entry *e = fd_entry(d, s->fd, false);
    if (e != NULL && e->sock == s)
        e->sock = NULL;
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static int sock_watch(struct sock *s, int events)
{
    if (events == s->events)
        return 0; /* unchanged: no epoll_ctl */
    int rc = events == 0 ? uv_poll_stop(&s->poll) : uv_poll_start(&s->poll, events, on_poll);
    s->events = rc < 0 ? 0 : events;
    return rc;
}

/* CURLMOPT_SOCKETFUNCTION: curl tells which events it wants on a socket. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct http_client *d = userp;
    struct fd_entry *e = fd_entry(d, fd, what != CURL_POLL_REMOVE);
    struct sock *s = e != NULL ? e->sock : NULL;
    if (what == CURL_POLL_REMOVE) {
        if (s == NULL)
            return 0;
        if (e->ours && !d->closing) {
            /* back in the pool: keep the poll, as it is waiting to read */
            s->idle = true;
            return sock_watch(s, UV_READABLE) < 0 ? -1 : 0;
        }
        sock_close(d, s);
        return 0;
    }
    if (e == NULL)
        return -1;
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        if (uv_poll_init_socket(d->loop, &s->poll, fd) < 0) {
            free(s);
            return -1;
        }
        s->fd = fd;
        s->d = d;
        s->poll.data = s;
        d->open_handles++;
        e->sock = s;
    }
    s->idle = false;
    int events = 0;
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    return sock_watch(s, events) < 0 ? -1 : 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: a connection's socket, noted as one curl closes through us. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct http_client *d = clientp;
    (void)purpose;
    curl_socket_t fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    struct fd_entry *e = fd_entry(d, fd, true);
    if (e == NULL) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    /* a poll left on this fd number belonged to a socket closed elsewhere */
    if (e->sock != NULL)
        sock_close(d, e->sock);
    e->ours = true;
    return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the poll goes with the socket, before it is closed. */
static int on_close_socket(void *clientp, curl_socket_t fd)
{
    struct http_client *d = clientp;
    struct fd_entry *e = fd_entry(d, fd, false);
    if (e != NULL) {
        if (e->sock != NULL)
            sock_close(d, e->sock);
        e->ours = false;
    }
    return close(fd);
}

static void on_timer(uv_timer_t *t)
{
    struct http_client *d = t->data;
    int running;
    curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(d);
}

/* CURLMOPT_TIMERFUNCTION: one timer for the whole multi handle. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct http_client *d = userp;
    if (timeout_ms < 0) {
        uv_timer_stop(&d->timer);
        return 0;
    }
    if (d->closing)
        return 0;
    /* 0 means "now": still go through the loop rather than recurse into curl */
    uv_timer_start(&d->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userp)
{
    struct xfer *x = userp;
    size_t n = size * nmemb;
    if (x->body.cap > 0 && !x->res.truncated && buf_append(&x->body, ptr, n) < 0)
        x->res.truncated = true;
    size_t room = HTTP_CLIENT_EXCERPT_MAX - x->excerpt_len;
    size_t take = n < room ? n : room;
    memcpy(x->res.excerpt + x->excerpt_len, ptr, take);
    x->excerpt_len += take;
    x->res.excerpt[x->excerpt_len] = '\0';
    return n; /* the rest is read and dropped: the connection stays reusable */
}

bool http_client_header_value(const char *line, size_t n, const char *name, char *out,
                              size_t out_size)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return false;
    const char *v = line + nl + 1;
    const char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t len = (size_t)(end - v);
    if (len >= out_size)
        len = out_size - 1;
    memcpy(out, v, len);
    out[len] = '\0';
    return true;
}

double http_client_retry_after(const char *value, time_t now)
{
    /* delay-seconds = 1*DIGIT (RFC 9110, 10.2.3): no sign, no fraction, no
       exponent, so "1e308", "inf" and "nan" are not numbers of seconds */
    size_t digits = strspn(value, "0123456789");
    if (digits > 0 && value[digits] == '\0') {
        double secs = 0;
        for (size_t i = 0; i < digits && secs < HTTP_CLIENT_RETRY_AFTER_MAX_S; i++)
            secs = secs * 10 + (value[i] - '0');
        return secs < HTTP_CLIENT_RETRY_AFTER_MAX_S ? secs : HTTP_CLIENT_RETRY_AFTER_MAX_S;
    }
    if (digits > 0 || value[0] == '\0')
        return -1;
    time_t when = curl_getdate(value, NULL);
    if (when == (time_t)-1)
        return -1;
    double delta = difftime(when, now);
    if (delta <= 0)
        return 0;
    return delta < HTTP_CLIENT_RETRY_AFTER_MAX_S ? delta : HTTP_CLIENT_RETRY_AFTER_MAX_S;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userp)
{
    struct xfer *x = userp;
    size_t n = size * nitems;
    char value[HTTP_CLIENT_CAPTURE_SIZE];
    for (unsigned i = 0; i < x->n_want; i++) {
        if (!http_client_header_value(buf, n, x->want[i], value, sizeof(value)))
            continue;
        free(x->captured[i]);
        x->captured[i] = strdup(value); /* NULL (out of memory) reads as absent */
        x->res.header[i] = x->captured[i] ? x->captured[i] : "";
        break;
    }
    /* also when captured: the result's retry_after_s is read whatever was asked */
    char ra[128]; /* an HTTP-date is 29 bytes; longer is not a Retry-After */
    if (http_client_header_value(buf, n, "retry-after", ra, sizeof(ra))) {
        double secs = http_client_retry_after(ra, time(NULL));
        if (secs >= 0)
            x->res.retry_after_s = secs;
    }
    return n;
}

static void finish(struct http_client *d, struct xfer *x, CURLcode code)
{
    curl_multi_remove_handle(d->multi, x->easy);
    d->in_flight--;
    list_remove(&x->node);
    x->res.seconds = (double)(uv_hrtime() - x->t0) / 1e9;
    curl_easy_getinfo(x->easy, CURLINFO_NUM_CONNECTS, &x->res.connects);
    if (code == CURLE_OK) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->res.http_status);
        x->res.error = NULL;
    } else {
        x->res.http_status = 0;
        x->res.error = curl_easy_strerror(code);
        x->res.aborted = code == CURLE_ABORTED_BY_CALLBACK && d->closing;
    }
    http_client_done_fn cb = x->cb;
    void *data = x->data;
    if (x->body.cap > 0) {
        x->res.body = x->body.data ? x->body.data : "";
        x->res.body_len = x->body.len;
    }
    /* the result lives in x: call back before x goes back to the free list */
    cb(&x->res, data);
    for (unsigned i = 0; i < HTTP_CLIENT_MAX_CAPTURE; i++) {
        free(x->captured[i]);
        x->captured[i] = NULL;
    }
    buf_free(&x->body);
    list_prepend(&d->free_list, &x->node);
}

static void check_done(struct http_client *d)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(d->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct xfer *x = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
        finish(d, x, msg->data.result);
    }
}

int http_client_new(uv_loop_t *loop, const char *user_agent, unsigned max_connections,
                    struct http_client **out)
{
    struct http_client *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    d->loop = loop;
    list_init(&d->free_list);
    list_init(&d->active);
    d->user_agent = strdup(user_agent);
    d->multi = curl_multi_init();
    if (d->user_agent == NULL || d->multi == NULL) {
        if (d->multi != NULL)
            curl_multi_cleanup(d->multi);
        free(d->user_agent);
        free(d);
        return -ENOMEM;
    }
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
    /* keep-alive pool: enough idle connections for every destination's in-flight bound */
    curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    d->open_handles = 1;
    *out = d;
    return 0;
}

static uint64_t hash_str(const char *p)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

static void xfer_free_parts(struct xfer *x)
{
    free(x->nodes);
    x->nodes = NULL;
    x->n_nodes_cap = 0;
    buf_free(&x->header_text);
    free(x->url);
    x->url = NULL;
}

/* A new transfer whose easy handle holds the options every request has. */
static struct xfer *xfer_new(struct http_client *d)
{
    struct xfer *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    list_init(&x->node);
    buf_init(&x->header_text, HEADER_TEXT_MAX);
    x->timeout_ms = -1;
    x->easy = curl_easy_init();
    if (x->easy == NULL) {
        free(x);
        return NULL;
    }
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_USERAGENT, d->user_agent);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is the receiver's answer */
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, d);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, d);
    return x;
}

/* A free transfer, last used for this URL if there is one (its handle is set up for it). */
static struct xfer *xfer_take(struct http_client *d, const char *url, uint64_t url_hash)
{
    struct list_node *n;
    struct xfer *any = NULL;
    list_foreach(n, &d->free_list)
    {
        struct xfer *x = list_entry(n, struct xfer, node);
        if (x->url_hash == url_hash && x->url != NULL && strcmp(x->url, url) == 0) {
            list_remove(n);
            return x;
        }
        if (any == NULL)
            any = x;
    }
    if (any != NULL) {
        list_remove(&any->node);
        return any;
    }
    return xfer_new(d);
}

/* The request's headers, and "Expect:", as x's reused list. */
static int set_headers(struct xfer *x, const char *const *headers)
{
    size_t n = 1;
    for (const char *const *h = headers; h != NULL && *h != NULL; h++)
        n++;
    if (n > x->n_nodes_cap) {
        struct curl_slist *m = realloc(x->nodes, n * sizeof(*m));
        if (m == NULL)
            return -ENOMEM;
        x->nodes = m;
        x->n_nodes_cap = n;
    }
    buf_reset(&x->header_text);
    size_t offs[n];
    size_t i = 0;
    for (const char *const *h = headers; h != NULL && *h != NULL; h++) {
        offs[i++] = x->header_text.len;
        if (buf_append(&x->header_text, *h, strlen(*h) + 1) < 0)
            return -ENOMEM;
    }
    /* no "Expect: 100-continue" round trip for our small bodies */
    offs[i++] = x->header_text.len;
    if (buf_append(&x->header_text, "Expect:", sizeof("Expect:")) < 0)
        return -ENOMEM;
    /* the text is complete (no more moves): point the nodes at it */
    for (i = 0; i < n; i++) {
        x->nodes[i].data = x->header_text.data + offs[i];
        x->nodes[i].next = i + 1 < n ? &x->nodes[i + 1] : NULL;
    }
    return 0;
}

int http_client_start(struct http_client *d, const struct http_client_request *req,
                      http_client_done_fn cb, void *data)
{
    if (d->closing)
        return -ECANCELED;
    uint64_t url_hash = hash_str(req->url);
    struct xfer *x = xfer_take(d, req->url, url_hash);
    if (x == NULL)
        return -ENOMEM;
    x->cb = cb;
    x->data = data;
    memset(&x->res, 0, sizeof(x->res));
    x->res.retry_after_s = -1;
    x->excerpt_len = 0;
    x->want = req->capture_headers;
    x->n_want = 0;
    while (x->want != NULL && x->n_want < HTTP_CLIENT_MAX_CAPTURE && x->want[x->n_want] != NULL)
        x->n_want++;
    for (unsigned i = 0; i < HTTP_CLIENT_MAX_CAPTURE; i++) {
        x->captured[i] = NULL;
        x->res.header[i] = "";
    }
    buf_init(&x->body, req->capture);
    if (set_headers(x, req->headers) < 0)
        goto fail;
    CURL *e = x->easy;
    if (x->url == NULL || x->url_hash != url_hash || strcmp(x->url, req->url) != 0) {
        char *url = strdup(req->url);
        if (url == NULL || curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK) {
            free(url);
            goto fail;
        }
        free(x->url);
        x->url = url;
        x->url_hash = url_hash;
    }
    if (req->get) {
        if (!x->was_get) {
            /* no body of an earlier POST stays behind (this one makes it a POST: GET after) */
            curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
            curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, ""); /* list APIs compress well */
        }
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        if (x->was_get)
            curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, NULL);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
    }
    x->was_get = req->get;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->nodes);
    if (x->timeout_ms != req->timeout_ms) {
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, req->timeout_ms);
        x->timeout_ms = req->timeout_ms;
    }
    x->t0 = uv_hrtime();
    if (curl_multi_add_handle(d->multi, e) != CURLM_OK)
        goto fail;
    d->in_flight++;
    list_prepend(&d->active, &x->node);
    return 0;
fail:
    buf_free(&x->body);
    list_prepend(&d->free_list, &x->node);
    return -ENOMEM;
}

unsigned http_client_in_flight(const struct http_client *d)
{
    return d->in_flight;
}

void http_client_free(struct http_client **pd)
{
    struct http_client *d = *pd;
    if (d == NULL)
        return;
    *pd = NULL;
    d->closing = true;
    while (!list_empty(&d->active))
        finish(d, list_entry(list_first(&d->active), struct xfer, node), CURLE_ABORTED_BY_CALLBACK);
    /* closing the pooled keep-alive connections calls on_curl_socket(REMOVE),
       which closes their poll handles: d must stay alive until those ran */
    curl_multi_cleanup(d->multi);
    d->multi = NULL;
    struct list_node *n, *tmp;
    list_foreach_safe(n, tmp, &d->free_list)
    {
        struct xfer *x = list_entry(n, struct xfer, node);
        curl_easy_cleanup(x->easy);
        xfer_free_parts(x);
        free(x);
    }
    /* curl closed its connections above; whatever poll is left had no socket of ours */
    for (size_t i = 0; i < d->n_socks; i++) {
        if (d->socks[i].sock != NULL)
            sock_close(d, d->socks[i].sock);
    }
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}
