/*
 * admin_host: which Host headers the admin listener answers (DNS rebinding).
 *
 * A web page an operator happens to open can make the browser resolve the
 * page's own name (attacker.example) to 127.0.0.1 or to the admin
 * listener's address a moment later; its script then reads the admin
 * listener as if it were its own origin: /metrics, the console's login page,
 * /api/... with a token it guesses. The browser still sends the page's name
 * in Host, which is what this checks. Accepted by default:
 *   - `localhost` (any port: an SSH tunnel moves the port);
 *   - any IP address literal, IPv4 or [IPv6], the listener's own among them
 *     (a page whose origin is an IP address is not rebound: its browser
 *     connects to that address, and probes and scrapers use these);
 *   - the listener's own host when ORDERSYNC_ADMIN_LISTEN names one;
 *   - a request without Host (HTTP/1.0 tools: no browser omits it);
 * plus the names of ORDERSYNC_ADMIN_HOSTS (comma-separated, any port).
 * Pure: unit-tested in tests/unit/test_admin_host.c.
 */
#ifndef OS_ADMIN_HOST_H
#define OS_ADMIN_HOST_H

#include <stdbool.h>
#include <stddef.h>

/* Names one may list, and how long each may be. */
#define ADMIN_HOST_MAX_NAMES 32
#define ADMIN_HOST_MAX_LEN   253

struct admin_hosts {
    char names[ADMIN_HOST_MAX_NAMES + 1][ADMIN_HOST_MAX_LEN + 1]; /* lower case, no port */
    size_t n;
};

/*
 * Fills `h` from the listener's host (borrowed; may be NULL) and the
 * setting's comma-separated names (borrowed; may be NULL). Returns 0, or
 * -EINVAL (with `err` saying why) for a name that is not a host name or too
 * many of them.
 */
int admin_hosts_init(struct admin_hosts *h, const char *listen_host, const char *names, char *err,
                     size_t errlen) __attribute__((warn_unused_result));

/* Does the admin listener answer a request with this Host header (borrowed, may be NULL)? */
bool admin_hosts_allowed(const struct admin_hosts *h, const char *host_header);

#endif
