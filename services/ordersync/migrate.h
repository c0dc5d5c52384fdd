/*
 * migrate: applies migrations/NNN_*.sql (embedded in the binary at build
 * time) and checks that a database's schema is the one this binary expects.
 *
 * Runs at start-up only, with blocking libpq: nothing else is on the loop yet.
 * Each pending file runs in its own transaction together with its row in
 * schema_migrations (version, name, SHA-256 checksum), under an advisory lock
 * so instances starting together do not race, and under a lock_timeout with
 * retries so that it never holds the instances running beside it for long
 * (README: Upgrading).
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
    SCHEMA_CHANGED, /* an applied file's checksum differs, or the history differs from this
                       binary's (an unknown migration among its own): refuse to run */
    SCHEMA_NEWER,   /* a newer release migrated it (every migration of this binary is there
                       too): serve with a warning, never migrate */
    SCHEMA_ERROR    /* could not tell (query failed) */
};

/*
 * Compares the database with the embedded migrations. `detail` receives a
 * sentence for logs. `conn` is borrowed.
 */
enum schema_status migrate_check(PGconn *conn, char *detail, size_t detail_len);

/* Defaults of struct migrate_options (ORDERSYNC_MIGRATE_LOCK_TIMEOUT_MS, _RETRIES). */
#define MIGRATE_LOCK_TIMEOUT_MS 500
#define MIGRATE_RETRIES         60

struct migrate_options {
    /* each statement waits at most this long for a lock (writers queue behind it meanwhile) */
    int lock_timeout_ms;
    /* a migration that timed out (or lost a deadlock) is rolled back and tried again this
       many times, after 0.5 s, 1 s, 2 s, ... 8 s */
    int retries;
};

/*
 * Applies pending migrations up to version `upto` (<= 0: all of them: a
 * staged upgrade, or a test of one, stops earlier). `options` is borrowed
 * (NULL: the defaults). Returns the number applied (>= 0), or -1 with
 * `detail` set (checksum changed, SQL error, a lock not had after the
 * retries, a database migrated by a newer release, ...).
 */
int migrate_apply(PGconn *conn, int upto, const struct migrate_options *options, char *detail,
                  size_t detail_len);

/*
 * Whether this binary may serve a database at schema version `db_version`:
 * its own, or a later release's (migrations only expand, so a release runs
 * on the next one's schema: that is what a rolling upgrade needs).
 */
bool migrate_compatible(int db_version);

/* The version (number prefix) of the newest embedded migration. */
int migrate_latest_version(void);

#endif
