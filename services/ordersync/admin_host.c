/*
 * admin_host: the admin listener's Host check (see admin_host.h for what is
 * accepted and why).
 */
#include "admin_host.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* A DNS name as RFC 1123 writes them: letters, digits, '-' and '.', or '_' (seen in the wild). */
static bool is_name(const char *s, size_t n)
{
    if (n == 0 || n > ADMIN_HOST_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

static int add(struct admin_hosts *h, const char *s, size_t n, char *err, size_t errlen)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    /* "name." is the same name (the root label); match it without the dot */
    if (n > 1 && s[n - 1] == '.')
        n--;
    if (n == 0)
        return 0;
    if (!is_name(s, n)) {
        snprintf(err, errlen, "ORDERSYNC_ADMIN_HOSTS: \"%.*s\" is not a host name",
                 (int)(n > 64 ? 64 : n), s);
        return -EINVAL;
    }
    if (h->n >= sizeof(h->names) / sizeof(h->names[0])) {
        snprintf(err, errlen, "ORDERSYNC_ADMIN_HOSTS: at most %d names", ADMIN_HOST_MAX_NAMES);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        h->names[h->n][i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    h->names[h->n][n] = '\0';
    h->n++;
    return 0;
}

int admin_hosts_init(struct admin_hosts *h, const char *listen_host, const char *names, char *err,
                     size_t errlen)
{
    memset(h, 0, sizeof(*h));
    /* the listener's own host, when it is a name (an address is accepted anyway) */
    if (listen_host != NULL && is_name(listen_host, strlen(listen_host)) &&
        add(h, listen_host, strlen(listen_host), err, errlen) < 0)
        return -EINVAL;
    size_t own = h->n;
    for (const char *p = names; p != NULL && *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (add(h, p, n, err, errlen) < 0)
            return -EINVAL;
        if (h->n - own > ADMIN_HOST_MAX_NAMES) {
            snprintf(err, errlen, "ORDERSYNC_ADMIN_HOSTS: at most %d names", ADMIN_HOST_MAX_NAMES);
            return -EINVAL;
        }
        p = comma ? comma + 1 : NULL;
    }
    return 0;
}

/* ":digits" or nothing: what may follow a host in a Host header */
static bool port_ok(const char *s)
{
    if (*s == '\0')
        return true;
    if (*s != ':' || s[1] == '\0' || strlen(s + 1) > 5)
        return false;
    return strspn(s + 1, "0123456789") == strlen(s + 1);
}

bool admin_hosts_allowed(const struct admin_hosts *h, const char *host_header)
{
    if (host_header == NULL)
        return true;
    char host[ADMIN_HOST_MAX_LEN + 1];
    const char *rest;
    if (host_header[0] == '[') {
        /* [IPv6]:port */
        const char *close = strchr(host_header, ']');
        size_t n = close ? (size_t)(close - host_header - 1) : 0;
        if (close == NULL || n == 0 || n >= sizeof(host))
            return false;
        memcpy(host, host_header + 1, n);
        host[n] = '\0';
        struct in6_addr a6;
        return inet_pton(AF_INET6, host, &a6) == 1 && port_ok(close + 1);
    }
    size_t n = strcspn(host_header, ":");
    rest = host_header + n;
    if (n == 0 || n >= sizeof(host) || !port_ok(rest))
        return false;
    memcpy(host, host_header, n);
    host[n] = '\0';
    if (n > 1 && host[n - 1] == '.')
        host[--n] = '\0';
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return true;
    if (strcasecmp(host, "localhost") == 0)
        return true;
    for (size_t i = 0; i < h->n; i++) {
        if (strcasecmp(host, h->names[i]) == 0)
            return true;
    }
    return false;
}
