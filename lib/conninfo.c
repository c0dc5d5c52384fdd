/*
 * conninfo: connection parameters for libpq. See conninfo.h.
 *
 * The keepalive defaults (conninfo.h) are chosen so that a dead peer is
 * noticed within the 10 s the service promises in the worst case, not only
 * the usual one. Linux ends a connection with ETIMEDOUT
 *   - when idle: at the first keepalive probe once nothing has been received
 *     for tcp_user_timeout (probes at 2, 3, 4 s: 4 s);
 *   - with data unacknowledged: tcp_user_timeout after that data was first
 *     sent, and keepalives pause meanwhile.
 * So a connection that falls silent and then sends a query just before its
 * keepalive would have fired (aux's timers, a lone webhook) is only given up
 * at about 4 + 4 = 8 s; with the 9 s often suggested it would be 18 s. The
 * usual case (a batch in flight, or an idle connection) is about 4 s. Shorter
 * would tear down healthy connections across ordinary loss: retransmissions
 * start at 200 ms and double, so 4 s still rides out four lost in a row.
 * keepalives_count only matters where TCP_USER_TIMEOUT does not exist (Linux
 * uses the timeout instead): 2 s + 2 probes 1 s apart is the same 4 s.
 */
#include "conninfo.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

struct kv {
    char *key;
    char *val;
};

/* One element of libpq's host list, as written. */
struct entry {
    char *host;     /* "" = libpq's default host */
    char *hostaddr; /* "" = none */
    char *port;     /* "" = libpq's default port */
    bool resolve;   /* host is a name libpq would look up with getaddrinfo() */
    bool resolved;  /* conninfo_set_addrs() ran for this attempt */
    char **addrs;
    size_t n_addrs;
};

/* One element of the list handed to libpq (borrowed strings). */
struct target {
    const char *host, *hostaddr, *port;
};

struct conninfo {
    struct kv *kv; /* every keyword the string set, except host/hostaddr/port */
    size_t n_kv;
    struct entry *entries;
    size_t n_entries;
    /* conninfo_params() output */
    const char **keys, **vals;
    char *out_host, *out_hostaddr, *out_port;
};

static const struct kv keepalive_defaults[] = {
    {"keepalives", "1"},
    {"keepalives_idle", CONNINFO_KEEPALIVES_IDLE_S},
    {"keepalives_interval", CONNINFO_KEEPALIVES_INTERVAL_S},
    {"keepalives_count", CONNINFO_KEEPALIVES_COUNT},
    {"tcp_user_timeout", CONNINFO_USER_TIMEOUT_MS},
};

static struct kv *find_kv(const struct conninfo *ci, const char *key)
{
    for (size_t i = 0; i < ci->n_kv; i++)
        if (strcmp(ci->kv[i].key, key) == 0)
            return &ci->kv[i];
    return NULL;
}

int conninfo_set(struct conninfo *ci, const char *key, const char *val)
{
    char *v = strdup(val);
    if (v == NULL)
        return -ENOMEM;
    struct kv *kv = find_kv(ci, key);
    if (kv != NULL) {
        free(kv->val);
        kv->val = v;
        return 0;
    }
    char *k = strdup(key);
    struct kv *grown = realloc(ci->kv, (ci->n_kv + 1) * sizeof(*grown));
    if (k == NULL || grown == NULL) {
        free(k);
        free(v);
        if (grown != NULL)
            ci->kv = grown;
        return -ENOMEM;
    }
    ci->kv = grown;
    ci->kv[ci->n_kv++] = (struct kv){k, v};
    return 0;
}

const char *conninfo_get(const struct conninfo *ci, const char *key)
{
    const struct kv *kv = find_kv(ci, key);
    return kv != NULL ? kv->val : NULL;
}

/* Elements of a comma-separated libpq list ("" counts as one empty element). */
static size_t list_count(const char *s)
{
    size_t n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

/* Element `i` of a comma-separated list as a new allocation ("" past the end). */
static char *list_item(const char *s, size_t i)
{
    for (; i > 0 && s != NULL; i--) {
        s = strchr(s, ',');
        if (s != NULL)
            s++;
    }
    if (s == NULL)
        return strdup("");
    size_t len = strcspn(s, ",");
    return strndup(s, len);
}

static bool is_address(const char *s)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* libpq's rule: a host starting with '/' (or '@', Linux's abstract namespace) is a socket. */
static bool needs_resolving(const struct entry *e)
{
    return e->hostaddr[0] == '\0' && e->host[0] != '\0' && e->host[0] != '/' && e->host[0] != '@' &&
           !is_address(e->host);
}

static void entry_clear_addrs(struct entry *e)
{
    for (size_t i = 0; i < e->n_addrs; i++)
        free(e->addrs[i]);
    free(e->addrs);
    e->addrs = NULL;
    e->n_addrs = 0;
    e->resolved = false;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

/*
 * Splits host/hostaddr/port into entries with libpq's rules: hostaddr, when
 * given, fixes the count; host must then have as many elements; port has
 * one (for every host) or one per host.
 */
static int split_hosts(struct conninfo *ci, const char *host, const char *hostaddr,
                       const char *port, char *err, size_t errlen)
{
    bool has_host = host != NULL && host[0] != '\0';
    bool has_addr = hostaddr != NULL && hostaddr[0] != '\0';
    bool has_port = port != NULL && port[0] != '\0';
    size_t n = has_addr ? list_count(hostaddr) : has_host ? list_count(host) : 1;
    if (has_host && list_count(host) != n) {
        snprintf(err, errlen, "could not match %zu host names to %zu hostaddr values",
                 list_count(host), n);
        return -EINVAL;
    }
    if (has_port && list_count(port) != 1 && list_count(port) != n) {
        snprintf(err, errlen, "could not match %zu port numbers to %zu hosts", list_count(port), n);
        return -EINVAL;
    }
    ci->entries = calloc(n, sizeof(*ci->entries));
    if (ci->entries == NULL)
        return -ENOMEM;
    ci->n_entries = n;
    for (size_t i = 0; i < n; i++) {
        struct entry *e = &ci->entries[i];
        e->host = has_host ? list_item(host, i) : strdup("");
        e->hostaddr = has_addr ? list_item(hostaddr, i) : strdup("");
        e->port = has_port ? list_item(port, list_count(port) == 1 ? 0 : i) : strdup("");
        if (e->host == NULL || e->hostaddr == NULL || e->port == NULL)
            return -ENOMEM;
        e->resolve = needs_resolving(e);
    }
    return 0;
}

int conninfo_new(const char *conninfo, char *err, size_t errlen, struct conninfo **out)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo != NULL ? conninfo : "", &perr);
    if (opts == NULL) {
        set_err(err, errlen, perr != NULL ? perr : "out of memory");
        int rc = perr != NULL ? -EINVAL : -ENOMEM;
        PQfreemem(perr);
        return rc;
    }
    struct conninfo *ci = calloc(1, sizeof(*ci));
    if (ci == NULL) {
        PQconninfoFree(opts);
        set_err(err, errlen, "out of memory");
        return -ENOMEM;
    }
    int rc = 0;
    const char *host = NULL, *hostaddr = NULL, *port = NULL;
    for (PQconninfoOption *o = opts; rc == 0 && o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else
            rc = conninfo_set(ci, o->keyword, o->val);
    }
    /*
     * The list is handed to libpq explicitly, so libpq's environment has to
     * be read here, with libpq's precedence: the string, then a service file,
     * then PG*. With a service in play its hosts are libpq's business (they
     * are then resolved by libpq, blocking: resolve-ahead needs them in the
     * string or the environment).
     */
    bool service = conninfo_get(ci, "service") != NULL || getenv("PGSERVICE") != NULL;
    if (!service) {
        host = host != NULL ? host : getenv("PGHOST");
        hostaddr = hostaddr != NULL ? hostaddr : getenv("PGHOSTADDR");
        port = port != NULL ? port : getenv("PGPORT");
    }
    if (rc == 0)
        rc = split_hosts(ci, host, hostaddr, port, err, errlen);
    for (size_t i = 0; rc == 0 && i < sizeof(keepalive_defaults) / sizeof(*keepalive_defaults); i++)
        if (conninfo_get(ci, keepalive_defaults[i].key) == NULL)
            rc = conninfo_set(ci, keepalive_defaults[i].key, keepalive_defaults[i].val);
    PQconninfoFree(opts);
    if (rc < 0) {
        if (rc == -ENOMEM)
            set_err(err, errlen, "out of memory");
        conninfo_free(&ci);
        return rc;
    }
    *out = ci;
    return 0;
}

void conninfo_free(struct conninfo **pci)
{
    struct conninfo *ci = *pci;
    if (ci == NULL)
        return;
    *pci = NULL;
    for (size_t i = 0; i < ci->n_kv; i++) {
        free(ci->kv[i].key);
        free(ci->kv[i].val);
    }
    free(ci->kv);
    for (size_t i = 0; i < ci->n_entries; i++) {
        entry_clear_addrs(&ci->entries[i]);
        free(ci->entries[i].host);
        free(ci->entries[i].hostaddr);
        free(ci->entries[i].port);
    }
    free(ci->entries);
    free(ci->keys);
    free(ci->vals);
    free(ci->out_host);
    free(ci->out_hostaddr);
    free(ci->out_port);
    free(ci);
}

unsigned conninfo_connect_timeout_ms(const struct conninfo *ci, unsigned default_ms)
{
    const char *v = conninfo_get(ci, "connect_timeout");
    if (v == NULL)
        v = getenv("PGCONNECT_TIMEOUT");
    if (v == NULL || v[0] == '\0')
        return default_ms;
    char *end;
    long s = strtol(v, &end, 10);
    if (*end != '\0')
        return default_ms; /* libpq refuses the connection string itself */
    if (s <= 0)
        return 0;
    /* libpq: "it is not recommended to use a timeout of less than 2 seconds" (it rounds up) */
    return s < 2 ? 2000 : s > 86400 ? 86400000u : (unsigned)s * 1000u;
}

size_t conninfo_host_count(const struct conninfo *ci)
{
    return ci->n_entries;
}

const char *conninfo_host_to_resolve(const struct conninfo *ci, size_t i)
{
    return i < ci->n_entries && ci->entries[i].resolve ? ci->entries[i].host : NULL;
}

int conninfo_set_addrs(struct conninfo *ci, size_t i, const char *const *addrs, size_t n)
{
    if (i >= ci->n_entries)
        return -EINVAL;
    struct entry *e = &ci->entries[i];
    entry_clear_addrs(e);
    e->addrs = calloc(n > 0 ? n : 1, sizeof(*e->addrs));
    if (e->addrs == NULL)
        return -ENOMEM;
    for (size_t k = 0; k < n && e->n_addrs < CONNINFO_MAX_ADDRS; k++) {
        bool dup = false;
        for (size_t j = 0; j < e->n_addrs && !dup; j++)
            dup = strcmp(e->addrs[j], addrs[k]) == 0;
        if (dup)
            continue;
        e->addrs[e->n_addrs] = strdup(addrs[k]);
        if (e->addrs[e->n_addrs] == NULL)
            return -ENOMEM;
        e->n_addrs++;
    }
    e->resolved = true;
    return 0;
}

void conninfo_clear_addrs(struct conninfo *ci)
{
    for (size_t i = 0; i < ci->n_entries; i++)
        entry_clear_addrs(&ci->entries[i]);
}

/* Fills up to `cap` targets in order; returns how many there are in all. */
static size_t targets(const struct conninfo *ci, struct target *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < ci->n_entries; i++) {
        const struct entry *e = &ci->entries[i];
        if (e->resolve && e->resolved) {
            for (size_t k = 0; k < e->n_addrs; k++, n++)
                if (n < cap)
                    out[n] = (struct target){e->host, e->addrs[k], e->port};
            continue;
        }
        if (n < cap)
            out[n] = (struct target){e->host, e->hostaddr, e->port};
        n++;
    }
    return n;
}

size_t conninfo_target_count(const struct conninfo *ci)
{
    return targets(ci, NULL, 0);
}

long conninfo_find_target(const struct conninfo *ci, const char *host, const char *hostaddr,
                          const char *port)
{
    size_t n = targets(ci, NULL, 0);
    struct target *t = calloc(n > 0 ? n : 1, sizeof(*t));
    if (t == NULL)
        return -1;
    targets(ci, t, n);
    long found = -1;
    host = host != NULL ? host : "";
    hostaddr = hostaddr != NULL ? hostaddr : "";
    port = port != NULL ? port : "";
    for (size_t i = 0; i < n && found < 0; i++) {
        /* PQhostaddr() is the address being tried, also for a literal given as host */
        bool addr_match = t[i].hostaddr[0] != '\0'
                              ? strcmp(t[i].hostaddr, hostaddr) == 0
                              : strcmp(t[i].host, host) == 0 || strcmp(t[i].host, hostaddr) == 0;
        bool port_match = t[i].port[0] == '\0' || strcmp(t[i].port, port) == 0;
        if (addr_match && port_match)
            found = (long)i;
    }
    free(t);
    return found;
}

/* Joins field `f` of the targets, starting at `first` and wrapping; NULL when all are "". */
static int join(const struct target *t, size_t n, size_t first, size_t field, char **out)
{
    size_t len = 1;
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        const char *v = field == 0 ? t[i].host : field == 1 ? t[i].hostaddr : t[i].port;
        len += strlen(v) + 1;
        any = any || v[0] != '\0';
    }
    free(*out);
    *out = NULL;
    if (!any)
        return 0;
    char *s = malloc(len);
    if (s == NULL)
        return -ENOMEM;
    char *p = s;
    for (size_t k = 0; k < n; k++) {
        const struct target *x = &t[(first + k) % n];
        const char *v = field == 0 ? x->host : field == 1 ? x->hostaddr : x->port;
        if (k > 0)
            *p++ = ',';
        size_t l = strlen(v);
        memcpy(p, v, l);
        p += l;
    }
    *p = '\0';
    *out = s;
    return 0;
}

int conninfo_params(struct conninfo *ci, size_t first, const char *const **keys,
                    const char *const **vals)
{
    size_t n = targets(ci, NULL, 0);
    if (n == 0)
        return -EHOSTUNREACH;
    struct target *t = calloc(n, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    targets(ci, t, n);
    int rc = join(t, n, first % n, 0, &ci->out_host);
    if (rc == 0)
        rc = join(t, n, first % n, 1, &ci->out_hostaddr);
    if (rc == 0)
        rc = join(t, n, first % n, 2, &ci->out_port);
    free(t);
    if (rc < 0)
        return rc;
    free(ci->keys);
    free(ci->vals);
    ci->keys = calloc(ci->n_kv + 4, sizeof(*ci->keys));
    ci->vals = calloc(ci->n_kv + 4, sizeof(*ci->vals));
    if (ci->keys == NULL || ci->vals == NULL)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < ci->n_kv; i++, k++) {
        ci->keys[k] = ci->kv[i].key;
        ci->vals[k] = ci->kv[i].val;
    }
    static const char *const list_keys[] = {"host", "hostaddr", "port"};
    char *const lists[] = {ci->out_host, ci->out_hostaddr, ci->out_port};
    for (size_t i = 0; i < 3; i++) {
        if (lists[i] == NULL)
            continue;
        ci->keys[k] = list_keys[i];
        ci->vals[k++] = lists[i];
    }
    *keys = ci->keys;
    *vals = ci->vals;
    return 0;
}
