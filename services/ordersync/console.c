/*
 * console: the console's statements on its own connection. Each builds one
 * JSON document in PostgreSQL (json_build_object escapes every string the
 * internet sent us) and returns it in a column named "doc".
 *
 * How each stays bounded with millions of orders (EXPLAINed in
 * scripts/console-bench --explain):
 *   overview      per destination: its rows in `deliveries` (the exceptions,
 *                 small), at most 10,000 unread events after its cursor
 *                 (events_position), the last hour of delivery_log and
 *                 delivery_attempts (partition pruning + BRIN, 009)
 *   recent        the orders primary key, backwards from a cursor
 *   search        orders_email, orders_number, the primary key, and the
 *                 unique (source_id, external_id) index probed once per
 *                 source (a skip scan finds the sources)
 *   order         events_order, inbound_events_order, delivery_attempts_order,
 *                 operator_actions_order, deliveries' primary key, and per
 *                 delivered event one probe of delivery_log_position
 *   deliveries    per destination, deliveries' primary key backwards from a
 *                 cursor (keyset pagination)
 * Lists inside one order are capped (LIMIT) too: a shop that sent one order
 * 100,000 updates still gets a page.
 */
#include "console.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"

struct console {
    struct db *db;
};

/* One query in flight: what to call back. */
struct console_call {
    console_result_fn cb;
    void *ctx;
    enum console_query q;
};

/* Events of one order shown at most (then the latest ones), and so on. */
#define ORDER_LIST_LIMIT "200"

static const char overview_sql[] =
    "SELECT json_build_object('now', now(), 'destinations', coalesce(("
    " SELECT json_agg(r ORDER BY r.id) FROM ("
    "  SELECT d.id, d.mode, d.enabled, d.disabled_reason, d.on_dead, d.paused_until,"
    "         coalesce(d.paused_until > now(), false) AS paused, d.consecutive_failures,"
    "         d.breaker_threshold,"
    /* another migration may add it; the row's JSON has it or not, and the
     * rest of the row (secrets included) never leaves the database */
    "         to_jsonb(d) -> 'rate_limit_per_s' AS rate_limit_per_s,"
    "         s.position AS stream_position, s.lease_owner AS delivered_by,"
    "         u.unread, u.unread >= 10000 AS unread_capped,"
    "         u.unread + c.pending AS pending, c.retrying, c.delivering, c.blocked, c.dead,"
    "         extract(epoch FROM now() - least(u.oldest, c.oldest))::float8 AS oldest_pending_s,"
    "         h.minutes"
    "    FROM destinations d"
    "    JOIN delivery_streams s ON s.destination_id = d.id"
    "   CROSS JOIN LATERAL ("
    "     SELECT count(*) FILTER (WHERE x.state = 'pending' AND x.attempts = 0) AS pending,"
    "            count(*) FILTER (WHERE x.state = 'pending' AND x.attempts > 0) AS retrying,"
    "            count(*) FILTER (WHERE x.state = 'delivering') AS delivering,"
    "            count(*) FILTER (WHERE x.state = 'blocked') AS blocked,"
    "            count(*) FILTER (WHERE x.state = 'dead') AS dead,"
    "            min(x.event_created_at) FILTER (WHERE x.state <> 'dead') AS oldest"
    "       FROM deliveries x WHERE x.destination_id = d.id) c"
    "   CROSS JOIN LATERAL ("
    "     SELECT count(*) AS unread, min(e.created_at) AS oldest FROM ("
    "       SELECT e.created_at FROM events e"
    "        WHERE e.position > s.position"
    "          AND (NOT EXISTS (SELECT 1 FROM subscriptions b WHERE b.destination_id = d.id)"
    "               OR e.type IN (SELECT b.event_type FROM subscriptions b"
    "                              WHERE b.destination_id = d.id))"
    "        ORDER BY e.position LIMIT 10000) e) u"
    /* [minutes ago, delivered, failed, of which 429] for each minute with any */
    "   CROSS JOIN LATERAL ("
    "     SELECT coalesce(json_agg(json_build_array(m.minute, m.ok, m.failed, m.throttled)"
    "                              ORDER BY m.minute), '[]') AS minutes FROM ("
    "       SELECT t.minute, sum(t.ok)::integer AS ok, sum(t.failed)::integer AS failed,"
    "              sum(t.throttled)::integer AS throttled FROM ("
    "         SELECT floor(extract(epoch FROM now() - l.completed_at) / 60)::integer AS minute,"
    "                l.delivered AS ok, 0 AS failed, 0 AS throttled"
    "           FROM delivery_log l"
    "          WHERE l.destination_id = d.id AND l.completed_at > now() - interval '1 hour'"
    "         UNION ALL"
    "         SELECT floor(extract(epoch FROM now() - a.started_at) / 60)::integer,"
    "                CASE WHEN a.http_status BETWEEN 200 AND 299 THEN 1 ELSE 0 END,"
    "                CASE WHEN a.http_status BETWEEN 200 AND 299 THEN 0 ELSE 1 END,"
    "                CASE WHEN a.http_status = 429 THEN 1 ELSE 0 END"
    "           FROM delivery_attempts a"
    "          WHERE a.destination_id = d.id AND a.started_at > now() - interval '1 hour') t"
    "        WHERE t.minute BETWEEN 0 AND 59"
    "        GROUP BY t.minute) m) h) r), '[]')) AS doc";

/* The columns an order shows with in lists and in its timeline. */
#define ORDER_FIELDS                                                                               \
    "'id', o.id, 'source', o.source_id, 'external_id', o.external_id, 'number', o.number,"         \
    " 'status', o.status, 'financial_status', o.financial_status,"                                 \
    " 'fulfillment_status', o.fulfillment_status, 'currency', o.currency,"                         \
    " 'total', o.total::text, 'customer_email', o.customer_email,"                                 \
    " 'created_at', o.created_at, 'updated_at', o.updated_at"

/* Per state, how many (event, destination) pairs of the order (012's order_delivery_states). */
#define ORDER_SYNC "'sync', order_delivery_states(o.id)"

/* $1 = cursor (show orders below this id) or NULL, $2 = page size */
static const char recent_sql[] =
    "SELECT json_build_object("
    " 'orders', coalesce(json_agg(json_build_object(" ORDER_FIELDS ", " ORDER_SYNC ")"
    "                              ORDER BY o.id DESC) FILTER (WHERE p.n <= $2::integer), '[]'),"
    " 'next', CASE WHEN max(p.n) > $2::integer THEN min(o.id) FILTER (WHERE p.n <= $2::integer)"
    "         END) AS doc"
    "  FROM (SELECT x.id, row_number() OVER (ORDER BY x.id DESC) AS n FROM orders x"
    "         WHERE $1::bigint IS NULL OR x.id < $1::bigint"
    "         ORDER BY x.id DESC LIMIT $2::integer + 1) p"
    "  JOIN orders o ON o.id = p.id";

/* $1 = what was typed, $2 = cursor or NULL, $3 = page size */
static const char search_sql[] =
    "WITH RECURSIVE srcs AS ("
    /* the sources that have orders, one index probe each (a loose index scan):
     * sources may have been deleted, their orders are kept */
    "  SELECT min(source_id) AS id FROM orders"
    "  UNION ALL"
    "  SELECT (SELECT min(x.source_id) FROM orders x WHERE x.source_id > srcs.id)"
    "    FROM srcs WHERE srcs.id IS NOT NULL"
    "), hits AS ("
    "  SELECT o.id FROM srcs JOIN orders o ON o.source_id = srcs.id AND o.external_id = $1"
    "  UNION"
    "  SELECT o.id FROM orders o"
    "   WHERE o.customer_email IS NOT NULL AND lower(o.customer_email) = lower($1)"
    "  UNION"
    "  SELECT o.id FROM orders o"
    "   WHERE o.number IS NOT NULL AND o.number IN ($1, '#' || ltrim($1, '#'), ltrim($1, '#'))"
    "  UNION"
    "  SELECT o.id FROM orders o"
    "   WHERE o.id = CASE WHEN $1 ~ '^[0-9]{1,18}$' THEN $1::bigint END"
    "), p AS ("
    "  SELECT h.id, row_number() OVER (ORDER BY h.id DESC) AS n FROM hits h"
    "   WHERE $2::bigint IS NULL OR h.id < $2::bigint"
    "   ORDER BY h.id DESC LIMIT $3::integer + 1"
    ")"
    "SELECT json_build_object("
    " 'orders', coalesce(json_agg(json_build_object(" ORDER_FIELDS ", " ORDER_SYNC ")"
    "                              ORDER BY o.id DESC) FILTER (WHERE p.n <= $3::integer), '[]'),"
    " 'next', CASE WHEN max(p.n) > $3::integer THEN min(o.id) FILTER (WHERE p.n <= $3::integer)"
    "         END) AS doc"
    "  FROM p JOIN orders o ON o.id = p.id";

/*
 * $1 = order id. One document with every list of the timeline; the page
 * merges them by time. First-attempt successes are not rows: they are found
 * in the delivery_log round whose range covers the event's position (one
 * probe of delivery_log_position per partition).
 */
static const char order_sql[] =
    "WITH ev AS ("
    "  SELECT e.position, e.id, e.type, e.created_at FROM events e WHERE e.order_id = $1::bigint"
    "   ORDER BY e.position DESC LIMIT " ORDER_LIST_LIMIT ")"
    "SELECT json_build_object("
    " 'order', json_build_object(" ORDER_FIELDS ","
    "   'subtotal', o.subtotal::text,"
    "   'tax', o.tax::text, 'shipping', o.shipping::text, 'refunded', o.refunded::text,"
    "   'sender_updated_at', o.sender_updated_at, 'lines', o.lines,"
    "   'shipping_address', o.shipping_address),"
    " 'limit', " ORDER_LIST_LIMIT ","
    " 'inbound', (SELECT coalesce(json_agg(i ORDER BY i.received_at, i.id), '[]') FROM ("
    "   SELECT i.id, i.source_id AS source, i.topic, i.event_type, i.outcome, i.received_at,"
    "          i.dedupe_key, octet_length(i.payload) AS payload_bytes"
    "     FROM inbound_events i WHERE i.order_id = o.id"
    "    ORDER BY i.received_at DESC, i.id DESC LIMIT " ORDER_LIST_LIMIT ") i),"
    " 'events', (SELECT coalesce(json_agg(json_build_object('position', ev.position,"
    "   'webhook_id', 'msg_' || replace(ev.id::text, '-', ''), 'type', ev.type,"
    "   'created_at', ev.created_at) ORDER BY ev.position), '[]') FROM ev),"
    /* order_deliveries_doc (012): one row per event and destination, from the evidence */
    " 'deliveries', order_deliveries_doc(o.id, (SELECT coalesce(min(position), 0) FROM ev)),"
    " 'attempts', (SELECT coalesce(json_agg(a ORDER BY a.started_at, a.attempt), '[]') FROM ("
    "   SELECT a.destination_id AS destination, a.position, a.attempt, a.started_at,"
    "          a.duration_ms, a.http_status, left(a.error, 300) AS error,"
    "          left(a.response_excerpt, 300) AS excerpt"
    "     FROM delivery_attempts a WHERE a.order_id = o.id"
    "    ORDER BY a.started_at DESC LIMIT 500) a),"
    " 'actions', (SELECT coalesce(json_agg(x ORDER BY x.at, x.id), '[]') FROM ("
    "   SELECT x.id, x.at, x.actor, x.action, x.destination_id AS destination, x.position"
    "     FROM operator_actions x WHERE x.order_id = o.id"
    "    ORDER BY x.id DESC LIMIT " ORDER_LIST_LIMIT ") x)"
    ") AS doc FROM orders o WHERE o.id = $1::bigint";

/* $1 = order id, $2 = inbound event id: the body exactly as the sender sent it */
static const char inbound_sql[] =
    "SELECT json_build_object('id', i.id, 'source', i.source_id, 'topic', i.topic,"
    " 'received_at', i.received_at, 'payload', i.payload) AS doc"
    "  FROM inbound_events i WHERE i.order_id = $1::bigint AND i.id = $2::bigint";

/* $1 = order id, $2 = position: the envelope every destination was sent */
static const char event_sql[] =
    "SELECT json_build_object('position', e.position,"
    " 'webhook_id', 'msg_' || replace(e.id::text, '-', ''), 'type', e.type,"
    " 'created_at', e.created_at, 'payload', e.payload) AS doc"
    "  FROM events e WHERE e.order_id = $1::bigint AND e.position = $2::bigint";

/*
 * $1 state, $2 destination, $3 since, $4 until (event time), $5/$6 cursor
 * (position, destination), $7 page size. Newest first; per destination a
 * backward walk of deliveries' primary key from the cursor, merged.
 */
static const char deliveries_sql[] =
    "WITH p AS ("
    "  SELECT x.*, row_number() OVER (ORDER BY x.position DESC, x.destination_id DESC) AS n"
    "    FROM destinations d"
    "   CROSS JOIN LATERAL ("
    "     SELECT x.* FROM deliveries x"
    "      WHERE x.destination_id = d.id AND x.state = $1"
    "        AND ($3::timestamptz IS NULL OR x.event_created_at >= $3::timestamptz)"
    "        AND ($4::timestamptz IS NULL OR x.event_created_at < $4::timestamptz)"
    "        AND ($5::bigint IS NULL OR x.position < $5::bigint"
    "             OR (x.position = $5::bigint AND x.destination_id < $6))"
    "      ORDER BY x.position DESC LIMIT $7::integer + 1) x"
    "   WHERE $2::text IS NULL OR d.id = $2::text"
    "   ORDER BY x.position DESC, x.destination_id DESC LIMIT $7::integer + 1"
    ")"
    "SELECT json_build_object("
    " 'items', coalesce(json_agg(json_build_object("
    "   'destination', p.destination_id, 'position', p.position, 'order_id', p.order_id,"
    "   'state', p.state, 'round_attempts', p.attempts,"
    /* every attempt on record across replays (012), not the round's counter */
    "   'attempts', greatest(delivery_attempts_made(p.destination_id, p.position)"
    "                        + CASE WHEN p.state = 'delivering' THEN 1 ELSE 0 END, p.attempts),"
    "   'next_at', p.next_at,"
    "   'blocked_by', p.blocked_by, 'blocked_by_state', b.state,"
    "   'last_status', p.last_status, 'last_error', left(p.last_error, 300),"
    "   'updated_at', p.updated_at, 'event_created_at', p.event_created_at,"
    "   'type', e.type, 'webhook_id', 'msg_' || replace(e.id::text, '-', ''),"
    "   'source', o.source_id, 'external_id', o.external_id, 'number', o.number)"
    "   ORDER BY p.position DESC, p.destination_id DESC) FILTER (WHERE p.n <= $7::integer), '[]'),"
    " 'next', (SELECT json_build_object('position', q.position, 'destination', q.destination_id)"
    "            FROM p q WHERE q.n = $7::integer"
    "             AND EXISTS (SELECT 1 FROM p r WHERE r.n > $7::integer))) AS doc"
    "  FROM p"
    "  LEFT JOIN events e ON e.position = p.position AND e.created_at = p.event_created_at"
    "  LEFT JOIN orders o ON o.id = p.order_id"
    "  LEFT JOIN deliveries b ON b.destination_id = p.destination_id AND b.position = p.blocked_by";

/*
 * Replay and skip (012's delivery_act). The last parameter is "preview":
 * true counts what the action would touch and changes nothing, so that a
 * confirmation can say how many events it is about (the answer then says
 * "preview": true; without it the answer is as before).
 */
static const char replay_sql[] =
    "SELECT json_strip_nulls(json_build_object('replayed', delivery_act('replay', dests => "
    "$1::text[],"
    " positions => $2::bigint[], states => '{dead}', actor => $3, preview => $4::boolean),"
    " 'preview', CASE WHEN $4::boolean THEN true END)) AS doc";

static const char skip_sql[] =
    "SELECT json_strip_nulls(json_build_object('skipped', delivery_act('skip', dests => $1::text[],"
    " positions => $2::bigint[], states => '{dead,blocked}', actor => $3,"
    " preview => $4::boolean), 'preview', CASE WHEN $4::boolean THEN true END)) AS doc";

static const char replay_matching_sql[] =
    "SELECT json_strip_nulls(json_build_object('replayed', delivery_act('replay', dest => $1::text,"
    " since => $2::timestamptz, until => $3::timestamptz, states => '{dead}',"
    " actor => $4::text, preview => $5::boolean), 'preview', CASE WHEN $5::boolean THEN true END)) "
    "AS doc";

static const char skip_matching_sql[] =
    "SELECT json_strip_nulls(json_build_object('skipped', delivery_act('skip', dest => $1::text,"
    " since => $2::timestamptz, until => $3::timestamptz, states => $4::text[],"
    " actor => $5::text, preview => $6::boolean), 'preview', CASE WHEN $6::boolean THEN true END)) "
    "AS doc";

/*
 * A URL shows its scheme, host and port, nothing else: credentials hide in
 * the user part and the query, and in the path too (Slack's and Zapier's
 * webhook URLs are secrets from end to end: hooks.slack.com/services/T../B../
 * <key>). A value whose host is not plainly a host name or an IP address
 * (a malformed URL could put part of a password there) shows nothing.
 */
#define URL_AUTHORITY                                                                              \
    "([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*@)?([A-Za-z0-9._~-]+|\\[[0-9A-Fa-f:.]+\\])(:[0-9]{1,5})?"
#define URL_SHOWN(col)                                                                             \
    "CASE WHEN " col " ~ '^" URL_AUTHORITY "([/?#]|$)' THEN regexp_replace(" col                   \
    ", '^" URL_AUTHORITY ".*$', '\\1\\3\\4') END"
/* Was anything hidden: more than scheme://host[:port][/]? */
#define URL_REDACTED(col) "(" col " !~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*/?$')"

static const char sources_sql[] =
    "SELECT coalesce(json_agg(json_build_object("
    " 'id', s.id, 'kind', s.kind, 'mode', s.mode, 'enabled', s.enabled,"
    " 'secret_set', s.secret IS NOT NULL, 'rotating', s.previous_secret IS NOT NULL,"
    " 'secret_changed_at', s.secret_changed_at, 'tolerance_s', s.tolerance_s,"
    " 'poll_url', " URL_SHOWN(
        "s.poll_url") ","
                      " 'poll_url_redacted', " URL_REDACTED(
                          "s.poll_url") ","
                                        " 'poll_interval', s.poll_interval::text, 'poll_auth_set', "
                                        "s.poll_auth_header IS NOT NULL,"
                                        " 'reconcile_interval', s.reconcile_interval::text,"
                                        " 'created_at', s.created_at, 'updated_at', s.updated_at,"
                                        " 'polls', p.polls, 'poll_errors', p.errors, "
                                        "'last_poll_at', p.last_poll_at,"
                                        " 'last_success_at', p.last_success_at, 'last_error', "
                                        "left(p.last_error, 300))"
                                        " ORDER BY s.id), '[]') AS doc"
                                        "  FROM sources s LEFT JOIN source_polls p ON p.source_id "
                                        "= s.id";

static const char destinations_sql_text[] =
    "SELECT coalesce(json_agg(json_build_object("
    " 'id', d.id, 'mode', d.mode, 'enabled', d.enabled, 'disabled_reason', d.disabled_reason,"
    " 'url', " URL_SHOWN("d.url") ", 'url_redacted', " URL_REDACTED(
        "d.url") ","
                 " 'secret_set', d.secret IS NOT NULL, 'rotating', d.previous_secret IS NOT NULL,"
                 " 'secret_changed_at', d.secret_changed_at, 'feed_token_set', d.feed_token IS NOT "
                 "NULL,"
                 " 'feed_token_changed_at', d.feed_token_changed_at,"
                 " 'timeout_ms', d.timeout_ms, 'max_in_flight', d.max_in_flight,"
                 " 'max_attempts', d.max_attempts, 'retry_schedule', d.retry_schedule::text[],"
                 " 'retry_window', d.retry_window::text, 'breaker_threshold', d.breaker_threshold,"
                 " 'breaker_pause', d.breaker_pause::text, 'max_retry_after', "
                 "d.max_retry_after::text,"
                 " 'on_dead', d.on_dead, 'paused_until', d.paused_until,"
                 " 'filter', d.filter::text, 'paused_at', d.paused_at, 'paused_by', d.paused_by,"
                 " 'actions', (SELECT coalesce(json_agg(json_build_object('at', a.at, 'actor',"
                 "   a.actor, 'action', a.action, 'detail', a.detail) ORDER BY a.id DESC), '[]')"
                 "   FROM (SELECT * FROM operator_actions a WHERE a.destination_id = d.id"
                 "          AND a.order_id IS NULL ORDER BY a.destination_id, a.at DESC"
                 "          LIMIT 10) a),"
                 " 'rate_limit_per_s', to_jsonb(d) -> 'rate_limit_per_s',"
                 " 'subscriptions', (SELECT coalesce(json_agg(u.event_type ORDER BY u.event_type), "
                 "'[]')"
                 "                     FROM subscriptions u WHERE u.destination_id = d.id),"
                 " 'created_at', d.created_at, 'updated_at', d.updated_at) ORDER BY d.id), '[]') "
                 "AS doc"
                 "  FROM destinations d";

/*
 * Console sessions (migration 014): a login's row, its use, its logout.
 * $1 = the cookie's nonce, $2 = operator, $3 = expiry (Unix seconds, as in
 * the cookie), $4 = the client's address. Each login also deletes the rows
 * whose cookie has expired, so the table keeps about 12 hours of logins.
 */
static const char session_start_sql[] =
    "WITH gone AS (DELETE FROM console_sessions WHERE expires_at < now())"
    " INSERT INTO console_sessions (id, operator, peer, expires_at)"
    " VALUES ($1, $2, $3, to_timestamp($4::bigint))"
    " RETURNING json_build_object('id', id) AS doc";

/*
 * $1 = nonce, $2 = idle timeout (s). One row: "alive" (and this use counts),
 * else whether the session was ended (logout) or is not known at all (made
 * before migration 014, or pruned): the rest idled out or expired.
 */
static const char session_touch_sql[] =
    "WITH u AS (UPDATE console_sessions SET last_seen_at = now()"
    "  WHERE id = $1 AND ended_at IS NULL AND expires_at > now()"
    "    AND last_seen_at > now() - make_interval(secs => $2::integer) RETURNING id)"
    " SELECT json_build_object('alive', EXISTS (SELECT 1 FROM u),"
    "  'known', s.id IS NOT NULL, 'ended', s.ended_at IS NOT NULL) AS doc"
    "  FROM (SELECT 1) one LEFT JOIN console_sessions s ON s.id = $1";

/* $1 = nonce */
static const char session_end_sql[] =
    "UPDATE console_sessions SET ended_at = coalesce(ended_at, now()) WHERE id = $1"
    " RETURNING json_build_object('ended_at', ended_at) AS doc";

/* An operator's actions on a destination as a whole (016_filters_actions.sql). */
static const char dest_pause_sql[] =
    "SELECT json_build_object('destination', $1::text, 'paused', $2::boolean,"
    " 'changed', destination_pause($1, $2::boolean, $3)) AS doc";
static const char dest_filter_sql[] = "SELECT json_build_object('destination', $1::text,"
                                      " 'filter', destination_set_filter($1, $2, $3)) AS doc";
static const char dest_replay_sql[] =
    "SELECT json_build_object('destination', $1::text, 'since', $2::timestamptz,"
    " 'until', $3::timestamptz, 'preview', $5::boolean,"
    " 'replayed', destination_replay_range($1, $2::timestamptz, $3::timestamptz, $4,"
    "                                      $5::boolean)) AS doc";
static const char dest_test_sql[] =
    "SELECT json_build_object('destination', $1::text,"
    " 'action_id', destination_test_record($1, $2, $3, $4::integer, $5, $6, $7::integer),"
    " 'webhook_id', $3::text, 'status', $4::integer, 'body', $5::text, 'error', $6::text,"
    " 'ms', $7::integer) AS doc";

struct console_stmt {
    struct db_stmt stmt;
    int nparams;
};

/* Indexed by enum console_query. */
static const struct console_stmt stmts[CONSOLE_QUERY_COUNT] = {
    [CONSOLE_OVERVIEW] = {{"console_overview", overview_sql}, 0},
    [CONSOLE_RECENT] = {{"console_recent", recent_sql}, 2},
    [CONSOLE_SEARCH] = {{"console_search", search_sql}, 3},
    [CONSOLE_ORDER] = {{"console_order", order_sql}, 1},
    [CONSOLE_INBOUND] = {{"console_inbound", inbound_sql}, 2},
    [CONSOLE_EVENT] = {{"console_event", event_sql}, 2},
    [CONSOLE_DELIVERIES] = {{"console_deliveries", deliveries_sql}, 7},
    [CONSOLE_REPLAY] = {{"console_replay", replay_sql}, 4},
    [CONSOLE_SKIP] = {{"console_skip", skip_sql}, 4},
    [CONSOLE_REPLAY_MATCHING] = {{"console_replay_matching", replay_matching_sql}, 5},
    [CONSOLE_SKIP_MATCHING] = {{"console_skip_matching", skip_matching_sql}, 6},
    [CONSOLE_SOURCES] = {{"console_sources", sources_sql}, 0},
    [CONSOLE_DESTINATIONS] = {{"console_destinations", destinations_sql_text}, 0},
    [CONSOLE_SESSION_START] = {{"console_session_start", session_start_sql}, 4},
    [CONSOLE_SESSION_TOUCH] = {{"console_session_touch", session_touch_sql}, 2},
    [CONSOLE_SESSION_END] = {{"console_session_end", session_end_sql}, 1},
    [CONSOLE_DEST_PAUSE] = {{"console_dest_pause", dest_pause_sql}, 3},
    [CONSOLE_DEST_FILTER] = {{"console_dest_filter", dest_filter_sql}, 3},
    [CONSOLE_DEST_REPLAY] = {{"console_dest_replay", dest_replay_sql}, 5},
    [CONSOLE_DEST_TEST] = {{"console_dest_test", dest_test_sql}, 7},
};

/* db_open wants a flat array of statements; filled once from the table above. */
static struct db_stmt db_stmts[CONSOLE_QUERY_COUNT];

static void on_down(struct db *db, const char *err, void *data)
{
    log_warn("console database connection lost", json_pack("{s:s}", "detail", err ? err : "?"));
}

static const struct db_callbacks console_cbs = {.on_down = on_down};

int console_new(uv_loop_t *loop, const char *conninfo, struct console **out)
{
    struct console *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    for (int i = 0; i < CONSOLE_QUERY_COUNT; i++)
        db_stmts[i] = stmts[i].stmt;
    int rc =
        db_open(loop, conninfo, "console", db_stmts, CONSOLE_QUERY_COUNT, &console_cbs, c, &c->db);
    if (rc < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

bool console_ready(const struct console *c)
{
    return c != NULL && db_is_ready(c->db);
}

static void on_result(PGresult *res, const char *err, void *data)
{
    struct console_call *call = data;
    const char *name = stmts[call->q].stmt.name;
    if (res == NULL) {
        call->cb(call->ctx, CONSOLE_UNAVAILABLE, NULL,
                 "the database connection was lost; try again");
    } else if (err != NULL) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (state != NULL && strncmp(state, "22", 2) == 0) {
            /* a date or number the database could not read: the caller's mistake */
            const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            call->cb(call->ctx, CONSOLE_BAD_INPUT, NULL, primary ? primary : "bad parameter");
        } else {
            log_error("console query failed", json_pack("{s:s,s:s,s:s}", "query", name, "sqlstate",
                                                        state ? state : "", "detail", err));
            call->cb(call->ctx, CONSOLE_FAILED, NULL, "the query failed (see the log)");
        }
    } else {
        int col;
        static const char *const cols[] = {"doc"};
        if (db_columns(res, name, cols, &col, 1) < 0)
            call->cb(call->ctx, CONSOLE_FAILED, NULL, "unexpected result");
        else if (PQntuples(res) == 0 || PQgetisnull(res, 0, col))
            call->cb(call->ctx, CONSOLE_NOT_FOUND, NULL, "not found");
        else
            call->cb(call->ctx, CONSOLE_OK, PQgetvalue(res, 0, col), NULL);
    }
    free(call);
}

int console_run(struct console *c, enum console_query q, const char *const *params,
                console_result_fn cb, void *ctx)
{
    if (c == NULL || (int)q < 0 || q >= CONSOLE_QUERY_COUNT)
        return -EINVAL;
    if (!db_is_ready(c->db))
        return -ENOTCONN;
    struct console_call *call = malloc(sizeof(*call));
    if (call == NULL)
        return -ENOMEM;
    call->cb = cb;
    call->ctx = ctx;
    call->q = q;
    int rc = db_query(c->db, true, stmts[q].stmt.name, stmts[q].nparams, params, on_result, call);
    if (rc < 0) {
        free(call);
        return rc;
    }
    return 0;
}

void console_free(struct console **pc)
{
    struct console *c = *pc;
    if (c == NULL)
        return;
    *pc = NULL;
    /* runs the pending callbacks (connection closed) before the memory goes */
    db_close(&c->db);
    free(c);
}
