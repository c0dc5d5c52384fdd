/*
 * conninfo: the parameters handed to libpq for one connection attempt, built
 * from a connection string (URL or key=value, or libpq's PG* environment).
 *
 * Three things are added to what the user wrote, each only where the string
 * leaves it open:
 *   - TCP keepalive and tcp_user_timeout defaults, so that a peer that went
 *     away without a word (a partition, a dead machine) is noticed in seconds
 *     instead of the kernel's two hours;
 *   - host names replaced by addresses resolved elsewhere (db.c resolves them
 *     on libuv's thread pool, because libpq's own getaddrinfo() blocks). A
 *     name with several addresses becomes several entries of libpq's host
 *     list, so libpq still walks every address of every host itself and
 *     honours target_session_attrs;
 *   - a rotation of that list, so that a host that hung a connection attempt
 *     is tried last next time instead of first.
 * Pure data: no I/O apart from reading PGHOST, PGHOSTADDR, PGPORT and
 * PGCONNECT_TIMEOUT, and no libuv.
 */
#ifndef OS_CONNINFO_H
#define OS_CONNINFO_H

#include <stddef.h>

/*
 * Defaults for a connection string that does not set them (why these values:
 * conninfo.c). An idle connection to a dead peer is dropped after about
 * CONNINFO_USER_TIMEOUT_MS; so is one waiting for the answer to a query.
 */
#define CONNINFO_KEEPALIVES_IDLE_S     "2"
#define CONNINFO_KEEPALIVES_INTERVAL_S "1"
#define CONNINFO_KEEPALIVES_COUNT      "2"
#define CONNINFO_USER_TIMEOUT_MS       "4000"

/* Most addresses used of one host name: a name with more is a mistake, not HA. */
#define CONNINFO_MAX_ADDRS 8

struct conninfo;

/*
 * Parses `conninfo` (NULL or "": libpq's environment alone) and applies the
 * defaults above. On error returns -EINVAL with a message in `err` (libpq's
 * when it is a syntax error) or -ENOMEM. `*out` is a new allocation.
 */
int conninfo_new(const char *conninfo, char *err, size_t errlen, struct conninfo **out)
    __attribute__((warn_unused_result));

void conninfo_free(struct conninfo **ci);

/* Sets `key` (copied), replacing any value the string gave. 0 or -ENOMEM. */
int conninfo_set(struct conninfo *ci, const char *key, const char *val)
    __attribute__((warn_unused_result));

/* Value of `key`, or NULL when neither the string nor a default set it (borrowed). */
const char *conninfo_get(const struct conninfo *ci, const char *key);

/*
 * The connect timeout to apply per host, in ms: libpq's connect_timeout
 * (from the string or PGCONNECT_TIMEOUT; values under 2 s count as 2 s like
 * libpq does) or `default_ms`. 0 means none (connect_timeout=0).
 */
unsigned conninfo_connect_timeout_ms(const struct conninfo *ci, unsigned default_ms);

/* Entries of the host list as the user wrote it (1 when no host is given). */
size_t conninfo_host_count(const struct conninfo *ci);

/*
 * The name entry `i` asks libpq to resolve, or NULL when it needs no
 * resolving (an address, a socket directory, the default host, or an entry
 * with its own hostaddr). Borrowed.
 */
const char *conninfo_host_to_resolve(const struct conninfo *ci, size_t i);

/*
 * Records what resolving entry `i` gave: `n` numeric addresses (copied; at
 * most CONNINFO_MAX_ADDRS are kept, duplicates dropped). n == 0 means the
 * name did not resolve: the entry is left out, as libpq skips a host it
 * cannot resolve. 0 or -ENOMEM.
 */
int conninfo_set_addrs(struct conninfo *ci, size_t i, const char *const *addrs, size_t n)
    __attribute__((warn_unused_result));

/* Forgets every resolution, before a new attempt resolves again. */
void conninfo_clear_addrs(struct conninfo *ci);

/*
 * Entries libpq will walk, after expanding resolved names into their
 * addresses and leaving out names that did not resolve. 0 means there is
 * nothing to connect to.
 */
size_t conninfo_target_count(const struct conninfo *ci);

/*
 * Index (0 .. conninfo_target_count()-1, before any rotation) of the entry
 * that a connection reports as its current server: PQhost(), PQhostaddr(),
 * PQport(). Returns -1 when no entry matches.
 */
long conninfo_find_target(const struct conninfo *ci, const char *host, const char *hostaddr,
                          const char *port);

/*
 * Keyword and value arrays for PQconnectStartParams()/PQconnectdbParams()
 * with expand_dbname = 0, NULL-terminated, the host list starting at entry
 * `first` (modulo the count) and wrapping around. Both arrays are owned by
 * `ci` and valid until the next call that changes it. 0, -ENOMEM, or
 * -EHOSTUNREACH when no entry is left (every name failed to resolve).
 */
int conninfo_params(struct conninfo *ci, size_t first, const char *const **keys,
                    const char *const **vals) __attribute__((warn_unused_result));

#endif
