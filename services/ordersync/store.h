/*
 * store: the in-memory copy of the `sources` table that ingest verifies
 * against. Operators edit sources with SQL; a trigger NOTIFYs
 * `ordersync_config` and the copy is reloaded (and on a timer as a backstop),
 * so no restart is needed. Reloads swap the whole set at once.
 */
#ifndef OS_STORE_H
#define OS_STORE_H

#include <stdbool.h>

#include <libpq-fe.h>

#include "hmac.h"
#include "source_kind.h"

struct source {
    char *id;
    const struct source_kind *kind;
    char *secret;          /* NULL for pure poll sources */
    char *previous_secret; /* NULL unless rotating */
    /*
     * secret and previous_secret as HMAC-SHA256 keys, keyed once (lib/hmac)
     * for the kinds that key the HMAC with the secret as given; NULL where
     * that secret is NULL or empty. A reload keeps a source's key while its
     * secret is unchanged and keys a new or rotated one afresh.
     */
    struct hmac_sha256 *keys[2];
    int tolerance_s;
    bool enabled;
    bool push;
};

struct store;

/* Returns a new empty store, or NULL when out of memory. */
struct store *store_new(void);
void store_free(struct store **store);

/* SQL whose result store_load() takes. */
extern const char store_sources_sql[];

/*
 * Replaces the sources with the rows of `res` (borrowed; columns as named in
 * store_sources_sql, in any order), their secrets keyed (see keys above).
 * Returns 0, or -EINVAL (a column is missing, logged) / -ENOMEM leaving the
 * old set, its keys included.
 */
int store_load(struct store *store, const PGresult *res) __attribute__((warn_unused_result));

bool store_loaded(const struct store *store);
/* The source with this id, or NULL. Borrowed until the next store_load(). */
const struct source *store_find_source(const struct store *store, const char *id);
unsigned store_source_count(const struct store *store);

#endif
