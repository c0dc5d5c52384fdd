/*
 * loadgen: HTTP load generator for scripts/bench. Sends correctly signed,
 * unique Shopify order webhooks (orders/create) to ordersync.
 *
 * Why a C client on libuv and not wrk: scripts/bench needs an open-loop,
 * fixed-rate mode (latency at 1,000 orders/s, measured from each request's
 * intended send time, so a stalled server cannot hide its stall by slowing
 * the client down: "coordinated omission"), and wrk is closed-loop only. wrk
 * with a Lua script also formats every request in Lua at send time; here every
 * request is built and signed before the clock starts (one arena, zero-copy
 * writes), so the measured phase costs one write and one read per request and
 * the generator stays a small share of the 2 cores (it reports its own CPU).
 *
 *   loadgen --target HOST:PORT --path /webhooks/shopify --secret S --template FILE
 *           (--concurrency C | --rate R) --duration SECS [--requests N]
 *           [--id-base N] [--connections N] [--drain-timeout SECS]
 *           [--update-every K [--update-lag L]] [--responses FILE]
 *
 * Closed loop (--concurrency C): C keep-alive connections, each sends its next
 * request when the previous answer arrived; latency = answer - send.
 * Open loop (--rate R): request i is due at t0 + i/R; it goes out on an idle
 * connection (a new one is opened, up to --connections, when none is idle) and
 * its latency is counted from when it was due. After --duration no new request
 * is scheduled; outstanding ones are awaited up to --drain-timeout.
 *
 * Every request is unique: order id = id-base + i (19 digits, so ids beyond
 * 2^53 are exercised), X-Shopify-Webhook-Id derived from it, HMAC-SHA256 over
 * the exact body. Prints one JSON object on stdout; a summary on stderr.
 * Latency percentiles are exact (every sample kept, sorted at the end).
 *
 * --update-every K makes every K-th request an orders/updated of the order
 * created L requests earlier (--update-lag, default 1000), with a later
 * updated_at and fulfillment_status "fulfilled": a mix of new orders and
 * changes to existing ones, as a shop sends (scripts/soak).
 * --responses FILE appends one line per answer, "<unix time, µs>\t<webhook
 * id>\t<order id>\t<HTTP status, 0 when the connection failed>\t<latency,
 * µs>", flushed every second: which webhooks and orders were acknowledged,
 * and latency over time for a long run. Webhook ids are lg-<n> for new
 * orders, lu-<n> for updates.
 * Requests are pre-signed while they fit in PRESIGN_MAX bytes (every phase of
 * scripts/bench does); a longer run (a soak: 200/s for 30 minutes) builds and
 * signs each one when it is sent instead, a few microseconds per request.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <jansson.h>
#include <llhttp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <uv.h>

#define PLACEHOLDER_ID 1111111111111111111LL
#define PLACEHOLDER    "1111111111111111111"
#define ID_DIGITS      19
#define READ_BUF       65536
#define PRESIGN_MAX    ((size_t)256 << 20)
#define UPDATED_AT     "2030-01-01T00:00:00+00:00" /* later than any template's */

struct lg;

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    llhttp_t parser;
    struct lg *lg;
    struct conn *next_idle;
    bool connected, busy, idle, closing, dead;
    /* write_req is in libuv's hands until on_write runs, which can be after
       the answer to it was read: the next request waits for it (ready_owed) */
    bool writing, ready_owed;
    uint64_t t_start; /* ns: send time (closed loop) or due time (open loop) */
    uint64_t idx;     /* the request in flight */
    char *wbuf;       /* its bytes, when requests are signed at send time */
    char rbuf[READ_BUF];
};

/* A request kind (new order or update): head and body with the places the
 * order id, the webhook id and the signature go. */
struct kind {
    char head[1024];
    char *body;
    size_t hlen, blen, id_off, wh_off, mac_off;
};

struct opts {
    char host[64];
    int port;
    const char *path, *secret, *template_path, *topic;
    unsigned concurrency;
    double rate, duration, drain_timeout;
    uint64_t requests;
    long long id_base;
    unsigned max_conns;
    uint64_t update_every, update_lag;
    const char *responses;
};

struct lg {
    struct opts o;
    uv_loop_t *loop;
    uv_timer_t tick;
    struct sockaddr_in addr;
    llhttp_settings_t settings;

    struct kind kinds[2]; /* 0: orders/create (or --topic), 1: orders/updated */
    char *arena;          /* pre-signed requests, one slot of req_len bytes each; or NULL */
    size_t req_len;       /* the longest request */
    uint64_t n_reqs;
    FILE *responses;
    uint64_t t_flushed;

    struct conn **conns;
    unsigned n_conns, cap_conns, n_connecting;
    struct conn *idle;

    uint64_t next;      /* next request index to send */
    uint64_t scheduled; /* open loop: requests due so far */
    uint64_t in_flight;
    bool stopping, exhausted, drain_expired;

    uint64_t t0, t_stop_send, t_last;
    uint64_t *lat; /* ns per completed request */
    uint64_t done, st2xx, st4xx, st5xx, st_other, errors, connects;
    struct rusage ru0;
};

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

/* ---------------------------------------------------------------- requests */

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf != NULL && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Request i updates an order (orders/updated) rather than creating one. */
static bool is_update(const struct lg *lg, uint64_t i)
{
    uint64_t k = lg->o.update_every;
    return k > 1 && i >= lg->o.update_lag && i % k == k - 1;
}

/* The order request i is about: its own for a new order, an earlier new order's for an update. */
static long long order_of(const struct lg *lg, uint64_t i)
{
    if (is_update(lg, i)) {
        i -= lg->o.update_lag;
        if (is_update(lg, i))
            i--; /* updates are at most every other request: the one before is a new order */
    }
    return lg->o.id_base + (long long)i;
}

/* One kind's head and body from the template, with fixed-width fields. */
static void build_kind(struct lg *lg, struct kind *k, const json_t *tpl, const char *topic,
                       const char *wh_prefix, bool update)
{
    json_t *doc = json_deep_copy(tpl);
    if (doc == NULL)
        die("out of memory");
    json_object_set_new(doc, "id", json_integer(PLACEHOLDER_ID));
    if (update) {
        json_object_set_new(doc, "updated_at", json_string(UPDATED_AT));
        json_object_set_new(doc, "fulfillment_status", json_string("fulfilled"));
    }
    k->body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (k->body == NULL)
        die("out of memory");
    char *ph = strstr(k->body, "\"id\":" PLACEHOLDER);
    if (ph == NULL)
        die("template: could not place the order id");
    k->id_off = (size_t)(ph - k->body) + 5;
    k->blen = strlen(k->body);

    int hlen =
        snprintf(k->head, sizeof(k->head),
                 "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nX-Shopify-Topic: %s\r\n"
                 "X-Shopify-Shop-Domain: bench.myshopify.com\r\n"
                 "X-Shopify-API-Version: 2024-07\r\n"
                 "X-Shopify-Webhook-Id: %s-%0*lld\r\n"
                 "X-Shopify-Hmac-Sha256: %44s\r\n\r\n",
                 lg->o.path, lg->o.host, lg->o.port, k->blen, topic, wh_prefix, ID_DIGITS, 0LL, "");
    if (hlen <= 0 || (size_t)hlen >= sizeof(k->head))
        die("request head too long");
    k->hlen = (size_t)hlen;
    k->wh_off = (size_t)(strstr(k->head, "X-Shopify-Webhook-Id: ") - k->head) +
                strlen("X-Shopify-Webhook-Id: ") + strlen(wh_prefix) + 1;
    k->mac_off = (size_t)(strstr(k->head, "X-Shopify-Hmac-Sha256: ") - k->head) +
                 strlen("X-Shopify-Hmac-Sha256: ");
}

/* Writes request i, signed, to `r` (req_len bytes); returns its length. */
static size_t fill_request(const struct lg *lg, uint64_t i, char *r)
{
    const struct kind *k = &lg->kinds[is_update(lg, i) ? 1 : 0];
    memcpy(r, k->head, k->hlen);
    memcpy(r + k->hlen, k->body, k->blen);
    char id[ID_DIGITS + 1];
    snprintf(id, sizeof(id), "%0*lld", ID_DIGITS, order_of(lg, i));
    memcpy(r + k->hlen + k->id_off, id, ID_DIGITS);
    /* the webhook id is the request's own number: unique for updates too */
    snprintf(id, sizeof(id), "%0*lld", ID_DIGITS, lg->o.id_base + (long long)i);
    memcpy(r + k->wh_off, id, ID_DIGITS);
    unsigned char md[32];
    unsigned mdlen = 0;
    HMAC(EVP_sha256(), lg->o.secret, (int)strlen(lg->o.secret), (unsigned char *)r + k->hlen,
         k->blen, md, &mdlen);
    char b64[48];
    EVP_EncodeBlock((unsigned char *)b64, md, 32); /* 44 chars */
    memcpy(r + k->mac_off, b64, 44);
    return k->hlen + k->blen;
}

/* Builds both kinds, then signs every request before the clock starts when they fit. */
static void build_requests(struct lg *lg)
{
    size_t tlen;
    char *text = read_file(lg->o.template_path, &tlen);
    if (text == NULL)
        die("cannot read --template");
    json_error_t jerr;
    json_t *doc = json_loadb(text, tlen, 0, &jerr);
    free(text);
    if (doc == NULL || !json_is_object(doc))
        die("--template is not a JSON object");
    build_kind(lg, &lg->kinds[0], doc, lg->o.topic, "lg", false);
    build_kind(lg, &lg->kinds[1], doc, "orders/updated", "lu", true);
    json_decref(doc);
    for (int i = 0; i < 2; i++)
        if (lg->kinds[i].hlen + lg->kinds[i].blen > lg->req_len)
            lg->req_len = lg->kinds[i].hlen + lg->kinds[i].blen;

    if (lg->n_reqs > PRESIGN_MAX / lg->req_len)
        return; /* signed at send time, see send_req */
    lg->arena = malloc(lg->req_len * lg->n_reqs);
    if (lg->arena == NULL)
        die("out of memory for the pre-signed requests (lower --requests)");
    for (uint64_t i = 0; i < lg->n_reqs; i++)
        fill_request(lg, i, lg->arena + i * lg->req_len);
}

/* --responses: one line per answer (status 0: the connection failed). */
static void note_response(struct lg *lg, uint64_t idx, int status, uint64_t latency_ns)
{
    if (lg->responses == NULL)
        return;
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    fprintf(lg->responses, "%lld\t%s-%0*lld\t%0*lld\t%d\t%" PRIu64 "\n",
            (long long)tv.tv_sec * 1000000 + tv.tv_usec, is_update(lg, idx) ? "lu" : "lg",
            ID_DIGITS, lg->o.id_base + (long long)idx, ID_DIGITS, order_of(lg, idx), status,
            latency_ns / 1000);
}

/* ------------------------------------------------------------- connections */

static void conn_connect(struct lg *lg, struct conn *c);
static void dispatch(struct lg *lg);
static void maybe_finish(struct lg *lg);

static void idle_push(struct lg *lg, struct conn *c)
{
    if (c->idle)
        return;
    c->idle = true;
    c->next_idle = lg->idle;
    lg->idle = c;
}

static struct conn *idle_pop(struct lg *lg)
{
    while (lg->idle != NULL) {
        struct conn *c = lg->idle;
        lg->idle = c->next_idle;
        c->idle = false;
        if (c->connected && !c->closing && !c->busy)
            return c;
    }
    return NULL;
}

static void on_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct lg *lg = c->lg;
    c->closing = false;
    if (lg->stopping) {
        c->dead = true;
        maybe_finish(lg);
        return;
    }
    if (lg->o.rate > 0) {
        /* open loop: opened again only when a request waits (conn_new), so a
           connection the server closed for idling is not replaced by another
           idle one, again and again, through a long run */
        c->dead = true;
        return;
    }
    conn_connect(lg, c); /* closed loop: replace the connection */
}

static void conn_fail(struct conn *c)
{
    struct lg *lg = c->lg;
    if (c->busy) {
        c->busy = false;
        lg->in_flight--;
        lg->errors++;
        note_response(lg, c->idx, 0, 0);
    }
    c->connected = false;
    if (!c->closing) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_close);
    }
}

static void conn_ready(struct lg *lg, struct conn *c);

static void on_write(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->writing = false;
    if (status < 0) {
        c->ready_owed = false;
        conn_fail(c);
        return;
    }
    if (c->ready_owed) {
        c->ready_owed = false;
        conn_ready(c->lg, c);
    }
}

static void send_req(struct lg *lg, struct conn *c, uint64_t idx, uint64_t t_start)
{
    char *r;
    size_t len;
    if (lg->arena != NULL) {
        const struct kind *k = &lg->kinds[is_update(lg, idx) ? 1 : 0];
        r = lg->arena + idx * lg->req_len;
        len = k->hlen + k->blen;
    } else {
        /* one request in flight per connection: its buffer is free again */
        if (c->wbuf == NULL && (c->wbuf = malloc(lg->req_len)) == NULL)
            die("out of memory");
        r = c->wbuf;
        len = fill_request(lg, idx, r);
    }
    uv_buf_t b = uv_buf_init(r, (unsigned)len);
    c->busy = true;
    c->idx = idx;
    c->t_start = t_start;
    lg->in_flight++;
    c->write_req.data = c;
    if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        conn_fail(c);
        return;
    }
    c->writing = true;
}

/* The connection can take a request now. */
static void conn_ready(struct lg *lg, struct conn *c)
{
    if (lg->o.rate > 0) {
        idle_push(lg, c);
        dispatch(lg);
        return;
    }
    if (lg->stopping) {
        maybe_finish(lg);
        return;
    }
    if (lg->next >= lg->n_reqs) {
        lg->exhausted = true;
        lg->stopping = true;
        lg->t_stop_send = now_ns();
        maybe_finish(lg);
        return;
    }
    send_req(lg, c, lg->next++, now_ns());
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct lg *lg = c->lg;
    if (!c->busy) { /* an answer nobody asked for */
        lg->errors++;
        return 0;
    }
    uint64_t t = now_ns();
    int st = p->status_code;
    if (st >= 200 && st < 300)
        lg->st2xx++;
    else if (st >= 400 && st < 500)
        lg->st4xx++;
    else if (st >= 500 && st < 600)
        lg->st5xx++;
    else
        lg->st_other++;
    lg->lat[lg->done++] = t > c->t_start ? t - c->t_start : 0;
    note_response(lg, c->idx, st, lg->lat[lg->done - 1]);
    lg->t_last = t;
    c->busy = false;
    lg->in_flight--;
    if (!llhttp_should_keep_alive(p)) {
        conn_fail(c);
        return 0;
    }
    if (c->writing) /* answered before its write completed: reuse write_req after */
        c->ready_owed = true;
    else
        conn_ready(lg, c);
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n < 0) {
        conn_fail(c);
        return;
    }
    if (n == 0)
        return;
    if (llhttp_execute(&c->parser, buf->base, (size_t)n) != HPE_OK) {
        c->lg->errors++;
        conn_fail(c);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    struct lg *lg = c->lg;
    lg->n_connecting--;
    if (status < 0) {
        lg->errors++;
        /* UV_ECANCELED: maybe_finish() closed it while it was connecting */
        if (!uv_is_closing((uv_handle_t *)&c->tcp)) {
            c->closing = true;
            uv_close((uv_handle_t *)&c->tcp, on_close);
        }
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_RESPONSE, &lg->settings);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    conn_ready(lg, c);
}

static void conn_connect(struct lg *lg, struct conn *c)
{
    lg->connects++;
    c->connected = c->busy = c->writing = c->ready_owed = false; /* c->idle: see idle_pop */
    uv_tcp_init(lg->loop, &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    lg->n_connecting++;
    if (uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&lg->addr, on_connect) <
        0) {
        lg->n_connecting--;
        lg->errors++;
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_close);
    }
}

static struct conn *conn_new(struct lg *lg)
{
    for (unsigned i = 0; i < lg->n_conns; i++) {
        struct conn *c = lg->conns[i];
        if (c->dead) { /* closed earlier: open it again */
            c->dead = false;
            conn_connect(lg, c);
            return c;
        }
    }
    if (lg->n_conns == lg->cap_conns)
        return NULL;
    struct conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        die("out of memory");
    c->lg = lg;
    lg->conns[lg->n_conns++] = c;
    conn_connect(lg, c);
    return c;
}

/* Open loop: send every due request that has a connection; open more if needed. */
static void dispatch(struct lg *lg)
{
    while (lg->next < lg->scheduled) {
        struct conn *c = idle_pop(lg);
        if (c == NULL) {
            /* requests waiting beyond the connections being opened: open one more */
            if (lg->scheduled - lg->next > lg->n_connecting)
                if (conn_new(lg) == NULL)
                    break;
            break;
        }
        uint64_t due = lg->t0 + (uint64_t)((double)lg->next * 1e9 / lg->o.rate);
        send_req(lg, c, lg->next++, due);
    }
    maybe_finish(lg);
}

static void on_tick(uv_timer_t *t)
{
    struct lg *lg = t->data;
    uint64_t now = now_ns();
    double el = (double)(now - lg->t0) / 1e9;
    if (lg->o.rate > 0 && !lg->stopping) {
        uint64_t due = (uint64_t)(el * lg->o.rate) + 1;
        if (due > lg->n_reqs) {
            due = lg->n_reqs;
            lg->exhausted = true;
        }
        lg->scheduled = due;
        if (el >= lg->o.duration || lg->exhausted) {
            lg->stopping = true;
            lg->t_stop_send = now;
        }
        dispatch(lg);
    } else if (!lg->stopping && el >= lg->o.duration) {
        lg->stopping = true;
        lg->t_stop_send = now;
    }
    if (lg->responses != NULL && now - lg->t_flushed >= 1000000000) {
        fflush(lg->responses); /* readable while the run goes on */
        lg->t_flushed = now;
    }
    if (lg->stopping && (double)(now - lg->t_stop_send) / 1e9 > lg->o.drain_timeout) {
        lg->drain_expired = true;
        lg->in_flight = 0;
        lg->next = lg->scheduled;
    }
    maybe_finish(lg);
}

static void maybe_finish(struct lg *lg)
{
    if (!lg->stopping || lg->in_flight > 0)
        return;
    if (lg->o.rate > 0 && lg->next < lg->scheduled)
        return;
    if (!uv_is_closing((uv_handle_t *)&lg->tick))
        uv_close((uv_handle_t *)&lg->tick, NULL);
    for (unsigned i = 0; i < lg->n_conns; i++) {
        struct conn *c = lg->conns[i];
        if (!c->closing && !c->dead && !uv_is_closing((uv_handle_t *)&c->tcp)) {
            c->closing = true;
            uv_close((uv_handle_t *)&c->tcp, on_close);
        }
    }
}

/* ------------------------------------------------------------------ report */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, uint64_t n, double q)
{
    if (n == 0)
        return 0;
    uint64_t k = (uint64_t)(q * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)v[k - 1] / 1e6;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void report(struct lg *lg, double gen_s)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = tv_s(ru.ru_utime) - tv_s(lg->ru0.ru_utime);
    double sys = tv_s(ru.ru_stime) - tv_s(lg->ru0.ru_stime);
    uint64_t end = lg->t_last > lg->t0 ? lg->t_last : now_ns();
    double wall = (double)(end - lg->t0) / 1e9;
    double send_wall = (double)((lg->t_stop_send ? lg->t_stop_send : end) - lg->t0) / 1e9;
    qsort(lg->lat, lg->done, sizeof(uint64_t), cmp_u64);
    double sum = 0;
    for (uint64_t i = 0; i < lg->done; i++)
        sum += (double)lg->lat[i];
    double mean = lg->done ? sum / (double)lg->done / 1e6 : 0;
    json_t *o = json_pack(
        "{s:s,s:I,s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:b,s:b,s:I,"
        "s:{s:f,s:f,s:f,s:f,s:f,s:f,s:f},s:{s:f,s:f,s:f,s:f},s:f,s:I}",
        "mode", lg->o.rate > 0 ? "open" : "closed", "concurrency", (json_int_t)lg->o.concurrency,
        "rate", lg->o.rate, "duration_s", lg->o.duration, "sent", (json_int_t)lg->next, "done",
        (json_int_t)lg->done, "ok", (json_int_t)lg->st2xx, "status_4xx", (json_int_t)lg->st4xx,
        "status_5xx", (json_int_t)lg->st5xx, "status_other", (json_int_t)lg->st_other, "errors",
        (json_int_t)lg->errors, "connects", (json_int_t)lg->connects, "wall_s", wall, "send_wall_s",
        send_wall, "ok_per_s", wall > 0 ? (double)lg->st2xx / wall : 0, "exhausted", lg->exhausted,
        "drain_expired", lg->drain_expired, "request_bytes", (json_int_t)lg->req_len, "latency_ms",
        "p50", pct(lg->lat, lg->done, 0.50), "p90", pct(lg->lat, lg->done, 0.90), "p99",
        pct(lg->lat, lg->done, 0.99), "p999", pct(lg->lat, lg->done, 0.999), "max",
        lg->done ? (double)lg->lat[lg->done - 1] / 1e6 : 0, "min",
        lg->done ? (double)lg->lat[0] / 1e6 : 0, "mean", mean, "cpu", "user_s", user, "sys_s", sys,
        "wall_s", wall, "share", wall > 0 ? (user + sys) / wall : 0, "presign_s", gen_s,
        "max_connections", (json_int_t)lg->n_conns);
    if (o == NULL)
        die("out of memory");
    json_object_set_new(o, "presigned", json_boolean(lg->arena != NULL));
    char *s = json_dumps(o, JSON_COMPACT);
    printf("%s\n", s);
    fflush(stdout);
    fprintf(stderr,
            "loadgen: %s %s: %" PRIu64 " ok / %" PRIu64 " done in %.2fs = %.0f/s, p50 %.2f ms, "
            "p99 %.2f ms, max %.2f ms, errors %" PRIu64 ", non-2xx %" PRIu64
            ", cpu %.0f%% of one core\n",
            lg->o.rate > 0 ? "open" : "closed", lg->o.rate > 0 ? "rate" : "concurrency", lg->st2xx,
            lg->done, wall, wall > 0 ? (double)lg->st2xx / wall : 0, pct(lg->lat, lg->done, 0.5),
            pct(lg->lat, lg->done, 0.99), lg->done ? (double)lg->lat[lg->done - 1] / 1e6 : 0,
            lg->errors, lg->st4xx + lg->st5xx + lg->st_other,
            wall > 0 ? 100 * (user + sys) / wall : 0);
    free(s);
    json_decref(o);
}

/* -------------------------------------------------------------------- main */

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --target HOST:PORT --secret S --template FILE\n"
            "               (--concurrency C | --rate R) --duration SECS [--requests N]\n"
            "               [--path /webhooks/shopify] [--topic orders/create] [--id-base N]\n"
            "               [--connections N] [--drain-timeout SECS]\n"
            "               [--update-every K [--update-lag L]] [--responses FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static struct lg L;
    struct lg *lg = &L;
    lg->o.path = "/webhooks/shopify";
    lg->o.topic = "orders/create";
    lg->o.duration = 10;
    lg->o.drain_timeout = 30;
    lg->o.max_conns = 512;
    lg->o.id_base = 2000000000000000000LL;
    lg->o.update_lag = 1000;
    const char *target = NULL;
    static const struct option longopts[] = {
        {"target", required_argument, 0, 't'},       {"path", required_argument, 0, 'p'},
        {"secret", required_argument, 0, 's'},       {"template", required_argument, 0, 'f'},
        {"topic", required_argument, 0, 'T'},        {"concurrency", required_argument, 0, 'c'},
        {"rate", required_argument, 0, 'r'},         {"duration", required_argument, 0, 'd'},
        {"requests", required_argument, 0, 'n'},     {"id-base", required_argument, 0, 'i'},
        {"connections", required_argument, 0, 'C'},  {"drain-timeout", required_argument, 0, 'D'},
        {"update-every", required_argument, 0, 'u'}, {"update-lag", required_argument, 0, 'L'},
        {"responses", required_argument, 0, 'R'},    {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 't':
            target = optarg;
            break;
        case 'p':
            lg->o.path = optarg;
            break;
        case 's':
            lg->o.secret = optarg;
            break;
        case 'f':
            lg->o.template_path = optarg;
            break;
        case 'T':
            lg->o.topic = optarg;
            break;
        case 'c':
            lg->o.concurrency = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            lg->o.rate = strtod(optarg, NULL);
            break;
        case 'd':
            lg->o.duration = strtod(optarg, NULL);
            break;
        case 'n':
            lg->o.requests = strtoull(optarg, NULL, 10);
            break;
        case 'i':
            lg->o.id_base = strtoll(optarg, NULL, 10);
            break;
        case 'C':
            lg->o.max_conns = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'D':
            lg->o.drain_timeout = strtod(optarg, NULL);
            break;
        case 'u':
            lg->o.update_every = strtoull(optarg, NULL, 10);
            break;
        case 'L':
            lg->o.update_lag = strtoull(optarg, NULL, 10);
            break;
        case 'R':
            lg->o.responses = optarg;
            break;
        default:
            usage();
        }
    }
    if (target == NULL || lg->o.secret == NULL || lg->o.template_path == NULL ||
        (lg->o.concurrency == 0) == (lg->o.rate <= 0) || lg->o.duration <= 0)
        usage();
    if (sscanf(target, "%63[^:]:%d", lg->o.host, &lg->o.port) != 2)
        usage();
    if (lg->o.update_every == 1)
        die("--update-every must be at least 2: every update needs an earlier new order");
    if (uv_ip4_addr(lg->o.host, lg->o.port, &lg->addr) != 0)
        die("--target must be IPv4 HOST:PORT");
    if (lg->o.requests == 0)
        lg->o.requests = lg->o.rate > 0 ? (uint64_t)(lg->o.rate * lg->o.duration) + 1
                                        : (uint64_t)(lg->o.duration * 20000);
    if (lg->o.id_base < 1000000000000000000LL ||
        lg->o.id_base + (long long)lg->o.requests > 9000000000000000000LL)
        die("--id-base must keep ids at 19 digits");
    lg->n_reqs = lg->o.requests;

    if (lg->o.responses != NULL) {
        lg->responses = fopen(lg->o.responses, "a");
        if (lg->responses == NULL)
            die("cannot open --responses");
        setvbuf(lg->responses, NULL, _IOFBF, 1 << 20);
    }
    uint64_t g0 = now_ns();
    build_requests(lg);
    double gen_s = (double)(now_ns() - g0) / 1e9;
    lg->lat = malloc(sizeof(uint64_t) * lg->n_reqs);
    unsigned cap = lg->o.rate > 0 ? lg->o.max_conns : lg->o.concurrency;
    lg->conns = calloc(cap, sizeof(*lg->conns));
    if (lg->lat == NULL || lg->conns == NULL)
        die("out of memory");
    lg->cap_conns = cap;

    llhttp_settings_init(&lg->settings);
    lg->settings.on_message_complete = on_message_complete;
    lg->loop = uv_default_loop();
    uv_timer_init(lg->loop, &lg->tick);
    lg->tick.data = lg;

    getrusage(RUSAGE_SELF, &lg->ru0);
    lg->t0 = now_ns();
    if (lg->o.rate > 0) {
        /* a few connections up front; more are opened when requests wait */
        unsigned warm = lg->o.rate >= 1000 ? 8 : 2;
        for (unsigned i = 0; i < warm && i < cap; i++)
            conn_new(lg);
    } else {
        for (unsigned i = 0; i < cap; i++)
            conn_new(lg);
    }
    uv_timer_start(&lg->tick, on_tick, 1, 1);
    uv_run(lg->loop, UV_RUN_DEFAULT);
    report(lg, gen_s);
    if (lg->responses != NULL && fclose(lg->responses) != 0)
        die("could not write --responses");
    return 0;
}
