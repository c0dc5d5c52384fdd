/*
 * pooler: tells at start-up whether a connection string leads through a
 * connection pooler that hands each transaction to any server connection
 * (pgbouncer's pool_mode=transaction or statement).
 *
 * ordersync keeps session state on some of its connections: LISTEN on the
 * `aux` connection, prepared statements on the others, session advisory
 * locks in migrations and maintenance. Behind such a pooler a NOTIFY goes to
 * whichever client holds the server connection at the time, and a prepared
 * statement exists on one server connection and not the next: ordersync would
 * start, then fail now and then. So it finds out first (README: Connection
 * poolers) and refuses, unless ORDERSYNC_SESSION_DATABASE_URL gives it a
 * session of its own for that state.
 */
#ifndef OS_POOLER_H
#define OS_POOLER_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

/*
 * Two open connections to the same connection string, `a` and `b`
 * (borrowed; left outside any transaction). Sets *per_transaction when a
 * statement of one connection ran in the server process another connection
 * had used, or two statements of one connection ran in different server
 * processes, or BEGIN was refused: none of this happens with a session of
 * one's own (PostgreSQL itself, or a pool in session mode). `detail`
 * receives the evidence, for the log. The pooler gives a server connection
 * released last to the next client that needs one (pgbouncer's default,
 * server_round_robin = 0), so a single round shows it on a quiet pool; four
 * rounds are run before a pool is taken for session mode.
 *
 * Returns 0, or -1 with `detail` set when a statement failed otherwise.
 */
int pooler_detect(PGconn *a, PGconn *b, bool *per_transaction, char *detail, size_t detail_len);

#endif
