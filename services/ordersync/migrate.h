/*
 * migrate: applies migrations/NNN_*.sql (embedded in the binary at build
 * time) and checks that a database's schema is the one this binary expects.
 *
 * Runs at start-up only, with blocking libpq: nothing else is on the loop yet.
 * Each pending file runs in its own transaction together with its row in
 * schema_migrations (version, name, SHA-256 checksum), under an advisory lock
 * so instances starting together do not race.
 */
#ifndef OS_MIGRATE_H
#define OS_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <libpq-fe.h>

struct migration {
    const char *name; /* "001_init.sql" */
    const char *sql;  /* NUL-terminated */
    size_t len;
};

extern const struct migration migrations[];
extern const size_t n_migrations;

enum schema_status {
    SCHEMA_CURRENT,
    SCHEMA_PENDING, /* some migrations not applied yet */
    SCHEMA_CHANGED, /* an applied file's checksum differs: refuse to run */
    SCHEMA_NEWER,   /* the database has migrations this binary does not know */
    SCHEMA_ERROR    /* could not tell (query failed) */
};

/*
 * Compares the database with the embedded migrations. `detail` receives a
 * sentence for logs. `conn` is borrowed.
 */
enum schema_status migrate_check(PGconn *conn, char *detail, size_t detail_len);

/*
 * Applies pending migrations up to version `upto` (<= 0: all of them: a
 * staged upgrade, or a test of one, stops earlier). Returns the number
 * applied (>= 0), or -1 with `detail` set (checksum changed, SQL error, ...).
 */
int migrate_apply(PGconn *conn, int upto, char *detail, size_t detail_len);

/* The version (number prefix) of the newest embedded migration. */
int migrate_latest_version(void);

#endif
