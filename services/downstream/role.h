/*
 * role: what a downstream is. The roles with a database (inventory,
 * invoicing, shipping) each own a Postgres schema named after the role,
 * created by role_install() at start, with two functions the service calls:
 *   <role>.apply(msg_id text, event jsonb) -> 'applied' | 'duplicate'
 *       applies one event and records its webhook-id in one transaction
 *       (one round trip; the 200 follows its commit)
 *   <role>.state() -> jsonb   the body of GET /state, minus the counters
 * The sink has no database: it verifies, counts and answers.
 */
#ifndef DS_ROLE_H
#define DS_ROLE_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "db.h"

/* Prepared statement names, valid on the db opened with role->stmts. */
#define ROLE_STMT_APPLY "apply"
#define ROLE_STMT_STATE "state"
/* Their one result column each: apply's 'applied' | 'duplicate', state's JSON text. */
#define ROLE_COL_OUTCOME "outcome"
#define ROLE_COL_STATE   "state"

struct role {
    const char *name;
    const char *sql; /* the schema script; NULL for sink */
    const struct db_stmt *stmts;
    int n_stmts;
};

/* The role called `name`, or NULL. Returned pointer is static. */
const struct role *role_find(const char *name);

static inline bool role_has_db(const struct role *r)
{
    return r->sql != NULL;
}

/*
 * Creates or updates the role's schema on a blocking connection (start-up
 * only). Serialized by an advisory lock, so several processes of one role can
 * start together against one database. Returns 0 or -EIO with the server's
 * message in `err`.
 */
int role_install(const struct role *r, PGconn *conn, char *err, size_t errlen)
    __attribute__((warn_unused_result));

#endif
