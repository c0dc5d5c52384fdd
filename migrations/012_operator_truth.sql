-- 012_operator_truth: what the views say about a delivery comes from
-- evidence, never from where a stream's cursor stands.
--
-- Until now event_deliveries called every event behind a destination's
-- cursor without a row in `deliveries` "delivered", with "1 attempt". But an
-- operator's skip also deletes the row (so skipped events, some never sent,
-- read as delivered), an event delivered at the 7th attempt read as 1, and a
-- replay reset the count. From here on, per (event, destination):
--
--   delivered   a 2xx is on record: in delivery_log (a first attempt, or a
--               feed read that acknowledged it) or in delivery_attempts
--   skipped     an operator gave up on it after its last 2xx, if any
--               (delivery_skips, below)
--   filtered    reserved for the content filters to come: an event a
--               destination's filter left out (never sent, on purpose);
--               nothing produces it yet
--   unrecorded  the stream has passed it and neither a 2xx nor a skip is on
--               record: the records aged out (ORDERSYNC_RETENTION), or the
--               destination did not take its type when the stream passed it
--               (a subscription added later)
--   pending, delivering, blocked, dead: its row in `deliveries`, as before
--
-- and `attempts` is every HTTP attempt on record, across replays (a replay
-- starts a new round of the row's own counter, which the retry schedule
-- uses; the total is counted from the records).
--
-- Where the skip evidence lives, and why there: `delivery_skips`, one narrow
-- row per skipped (destination, event), written only by an operator's skip
-- (the relay never reads or writes it: its hot path is unchanged), looked up
-- by primary key. It is bounded: each skip deletes (in batches) the rows of
-- events the event store has already dropped, so it holds at most the skips
-- of the retained events (the same horizon as events and delivery_log).
-- operator_actions keeps the audit trail (who, when) as before.
--
-- Also here:
--   * the bodies of delivery_replay, delivery_skip, delivery_replay_events
--     and delivery_skip_events (007, 009) become one function,
--     delivery_act(); the four keep their signatures (the previous release
--     calls them) and call it. It can also count what it would touch
--     without touching it (preview), for the console's confirmations;
--   * a feed read that acknowledges events records them in delivery_log, as
--     the relay records a round (feed_read); a feed without `after` starts
--     where its destination started, not at position 1;
--   * destinations.start_from: where a new destination starts, chosen when
--     it is created (NULL: now);
--   * an ignored webhook (topic contradicting its signed body) is linked to
--     the order its body names, when that order exists (ingest_batch takes
--     the name as "x").
--
-- Expand-only: one new table, one new nullable column, new functions; the
-- views keep their columns (new ones at the end), and functions keep their
-- signatures.

-- ---------------------------------------------------------------- evidence of skips

CREATE TABLE delivery_skips (
    destination_id text NOT NULL REFERENCES destinations (id) ON DELETE CASCADE
                                                                ON UPDATE CASCADE,
    position       bigint NOT NULL,
    order_id       bigint NOT NULL,
    skipped_at     timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    PRIMARY KEY (destination_id, position)
);

-- The evidence for one (destination, event), whatever the round: every HTTP
-- attempt on record (the failed and retried ones in delivery_attempts, by its
-- index, and a first attempt that succeeded, or a feed read that
-- acknowledged it, in delivery_log) and when the last 2xx came. A
-- destination's rounds in delivery_log cover disjoint ranges in position
-- order, so the round that holds a position is among the first few whose
-- last_position reaches it: a bounded probe of delivery_log_position,
-- whatever the log's size.
-- PL/pgSQL on purpose, as the hot-path functions of 007: its two probes are
-- planned once per session, and the views that call it per row keep a small
-- plan. Written inline in a view, the same probes made the planner estimate
-- a cost that switched on JIT compilation: seconds for one page of orders.
CREATE FUNCTION delivery_evidence(dest text, pos bigint,
                                  OUT attempts integer, OUT delivered_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n_log  integer;
    log_at timestamptz;
BEGIN
    SELECT count(*)::integer,
           max(a.started_at + a.duration_ms * interval '1 millisecond')
               FILTER (WHERE a.http_status BETWEEN 200 AND 299)
      INTO attempts, delivered_at
      FROM delivery_attempts a
     WHERE a.destination_id = dest AND a.position = pos;
    SELECT count(*)::integer, max(l.completed_at) INTO n_log, log_at
      FROM (SELECT l.first_position, l.positions, l.completed_at FROM delivery_log l
             WHERE l.destination_id = dest AND l.last_position >= pos
             ORDER BY l.last_position LIMIT 4) l
     WHERE l.first_position <= pos AND pos = ANY (l.positions);
    attempts := attempts + n_log;
    delivered_at := greatest(delivered_at, log_at);
END;
$$;

-- Every HTTP attempt on record for one (destination, event), across rounds.
CREATE FUNCTION delivery_attempts_made(dest text, pos bigint) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT (delivery_evidence(dest, pos)).attempts
$$;

-- Where one (destination, event) stands, from the evidence (see the top):
-- its row in `deliveries` if it has one; else pending while the stream has
-- not passed it (cursor_pos); else skipped, delivered or unrecorded by what
-- is on record. `attempts` counts every attempt on record, the one in flight
-- included, and never less than the row's own round counter (whose older
-- records may have aged out). Three primary-key or index probes, in
-- PL/pgSQL for the same reason as delivery_evidence.
CREATE FUNCTION delivery_state(dest text, cursor_pos bigint, pos bigint,
                               OUT state text, OUT attempts integer, OUT next_at timestamptz,
                               OUT blocked_by bigint, OUT last_status integer,
                               OUT last_error text, OUT delivered_at timestamptz,
                               OUT skipped_at timestamptz, OUT skipped_by text)
LANGUAGE plpgsql STABLE COST 20 AS $$
DECLARE
    x  record;
    ev record;
BEGIN
    SELECT d.state AS st, d.attempts AS n, d.next_at AS due, d.blocked_by AS behind,
           d.last_status AS status, d.last_error AS error
      INTO x
      FROM deliveries d WHERE d.destination_id = dest AND d.position = pos;
    IF x.st IS NULL AND pos > cursor_pos THEN
        state := 'pending';   -- not read by its stream yet: nothing can be on record
        attempts := 0;
        RETURN;
    END IF;
    SELECT * INTO ev FROM delivery_evidence(dest, pos);
    delivered_at := ev.delivered_at;
    SELECT k.skipped_at, k.actor INTO skipped_at, skipped_by
      FROM delivery_skips k WHERE k.destination_id = dest AND k.position = pos;
    IF x.st IS NOT NULL THEN
        state := x.st;
        next_at := x.due;
        blocked_by := x.behind;
        last_status := x.status;
        last_error := x.error;
    ELSIF skipped_at IS NOT NULL AND (delivered_at IS NULL OR skipped_at > delivered_at) THEN
        state := 'skipped';
    ELSIF delivered_at IS NOT NULL THEN
        state := 'delivered';
    ELSE
        state := 'unrecorded';
    END IF;
    attempts := greatest(ev.attempts + CASE WHEN x.st = 'delivering' THEN 1 ELSE 0 END,
                         coalesce(x.n, 0));
END;
$$;

-- ---------------------------------------------------------------- replay and skip, once

-- What an operator does to undelivered (or delivered) events, in one place.
--   act        'replay': make them deliverable again, webhook-id unchanged
--              (the row's round counter restarts; the attempts on record
--              stay); 'skip': give up on them, record the skip, and let the
--              later events of their orders go on
--   dests/positions  exactly these (destination, event) pairs; or NULL and
--              the filters dest, ord, since, until (event time), NULL: any
--   states     the rows' states to act on ('delivering' never)
--   settled    replay only: also the events the stream has passed with no
--              open row (delivered, skipped...), push destinations only
--   preview    count what it would touch, change nothing
-- Returns how many (event, destination) pairs it acted on (or would).
-- Records one operator_actions row each and wakes the relays.
CREATE FUNCTION delivery_act(act text, dests text[] DEFAULT NULL, positions bigint[] DEFAULT NULL,
                             dest text DEFAULT NULL, ord bigint DEFAULT NULL,
                             since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                             states text[] DEFAULT '{dead}', settled boolean DEFAULT false,
                             actor text DEFAULT session_user, preview boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    sel_d text[];
    sel_p bigint[];
    sel_o bigint[];
    add_d text[];
    add_p bigint[];
    add_o bigint[];
    n     integer;
    g     record;
BEGIN
    IF act IS NULL OR act NOT IN ('replay', 'skip') THEN
        RAISE EXCEPTION 'act must be replay or skip, not %', coalesce(act, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF cardinality(dests) IS DISTINCT FROM cardinality(positions) THEN
        RAISE EXCEPTION 'dests and positions differ in length' USING ERRCODE = '22023';
    END IF;
    IF dest IS NOT NULL AND NOT EXISTS (SELECT 1 FROM destinations d WHERE d.id = dest) THEN
        RAISE EXCEPTION 'no destination "%"', dest USING ERRCODE = '22023';
    END IF;
    -- the open rows it acts on, locked
    IF dests IS NOT NULL THEN
        SELECT coalesce(array_agg(s.destination_id), '{}'), coalesce(array_agg(s.position), '{}'),
               coalesce(array_agg(s.order_id), '{}')
          INTO sel_d, sel_p, sel_o
          FROM (SELECT x.destination_id, x.position, x.order_id
                  FROM unnest(dests, positions) AS k(d, p)
                  JOIN deliveries x ON x.destination_id = k.d AND x.position = k.p
                 WHERE x.state = ANY (states) AND x.state <> 'delivering'
                 ORDER BY x.destination_id, x.position
                   FOR UPDATE OF x) s;
    ELSE
        SELECT coalesce(array_agg(s.destination_id), '{}'), coalesce(array_agg(s.position), '{}'),
               coalesce(array_agg(s.order_id), '{}')
          INTO sel_d, sel_p, sel_o
          FROM (SELECT x.destination_id, x.position, x.order_id
                  FROM deliveries x
                 WHERE x.state = ANY (states) AND x.state <> 'delivering'
                   AND (dest IS NULL OR x.destination_id = dest)
                   AND (ord IS NULL OR x.order_id = ord)
                   AND (since IS NULL OR x.event_created_at >= since)
                   AND (until IS NULL OR x.event_created_at < until)
                 ORDER BY x.destination_id, x.position
                   FOR UPDATE OF x) s;
    END IF;
    -- replay of settled events: those the stream passed without an open row
    add_d := '{}';
    add_p := '{}';
    add_o := '{}';
    IF act = 'replay' AND settled THEN
        SELECT coalesce(array_agg(e.destination_id), '{}'), coalesce(array_agg(e.position), '{}'),
               coalesce(array_agg(e.order_id), '{}')
          INTO add_d, add_p, add_o
          FROM (SELECT s.destination_id, e.position, e.order_id
                  FROM delivery_streams s
                  JOIN destinations d ON d.id = s.destination_id AND d.mode = 'push'
                  JOIN events e ON e.position > s.start_position AND e.position <= s.position
                 WHERE (dest IS NULL OR s.destination_id = dest)
                   AND (ord IS NULL OR e.order_id = ord)
                   AND (since IS NULL OR e.created_at >= since)
                   AND (until IS NULL OR e.created_at < until)
                   AND (dests IS NULL OR (s.destination_id, e.position)
                                         IN (SELECT k.d, k.p FROM unnest(dests, positions) k(d, p)))
                   AND (NOT EXISTS (SELECT 1 FROM subscriptions u WHERE u.destination_id = d.id)
                        OR EXISTS (SELECT 1 FROM subscriptions u
                                    WHERE u.destination_id = d.id AND u.event_type = e.type))
                   AND NOT EXISTS (SELECT 1 FROM deliveries x
                                    WHERE x.destination_id = s.destination_id
                                      AND x.position = e.position)) e;
    END IF;
    n := cardinality(sel_d) + cardinality(add_d);
    IF preview OR n = 0 THEN
        RETURN n;
    END IF;

    IF act = 'replay' THEN
        UPDATE deliveries x
           SET state = 'pending', attempts = 0, next_at = now(), blocked_by = NULL,
               updated_at = now()
          FROM unnest(sel_d, sel_p) AS k(d, p)
         WHERE x.destination_id = k.d AND x.position = k.p;
        INSERT INTO deliveries (destination_id, position, order_id, event_created_at, state)
        SELECT k.d, k.p, k.o, e.created_at, 'pending'
          FROM unnest(add_d, add_p, add_o) AS k(d, p, o)
          JOIN events e ON e.position = k.p
        ON CONFLICT (destination_id, position) DO NOTHING;
    ELSE
        DELETE FROM deliveries x
         USING unnest(sel_d, sel_p) AS k(d, p)
         WHERE x.destination_id = k.d AND x.position = k.p;
        INSERT INTO delivery_skips AS s (destination_id, position, order_id, actor)
        SELECT k.d, k.p, k.o, delivery_act.actor FROM unnest(sel_d, sel_p, sel_o) AS k(d, p, o)
        ON CONFLICT (destination_id, position)
        DO UPDATE SET skipped_at = now(), actor = excluded.actor, order_id = excluded.order_id;
        -- the evidence of events the event store has dropped goes too (in
        -- batches): what is left is bounded by the retention
        DELETE FROM delivery_skips s
         WHERE s.ctid = ANY (ARRAY(SELECT z.ctid FROM delivery_skips z
                                    WHERE z.position < coalesce((SELECT min(e.position)
                                                                   FROM events e), 0)
                                    LIMIT 10000));
    END IF;
    FOR g IN SELECT DISTINCT k.d, k.o
               FROM unnest(sel_d || add_d, sel_o || add_o) AS k(d, o) LOOP
        PERFORM deliveries_reorder(g.d, g.o);
    END LOOP;
    INSERT INTO operator_actions (actor, action, destination_id, position, order_id)
    SELECT delivery_act.actor, act, k.d, k.p, k.o
      FROM unnest(sel_d || add_d, sel_p || add_p, sel_o || add_o) AS k(d, p, o);
    PERFORM pg_notify('ordersync_deliveries', '');
    RETURN n;
END;
$$;

-- The four entry points of 007 and 009, same signatures and results: the
-- previous release, scripts and the README call them.
CREATE OR REPLACE FUNCTION delivery_replay(dest text DEFAULT NULL, ord bigint DEFAULT NULL,
                                           since timestamptz DEFAULT NULL,
                                           until timestamptz DEFAULT NULL,
                                           dead_only boolean DEFAULT true,
                                           actor text DEFAULT session_user)
RETURNS integer
LANGUAGE sql AS $$
    SELECT delivery_act('replay', dest => dest, ord => ord, since => since, until => until,
                        states => '{dead}', settled => NOT dead_only, actor => actor)
$$;

CREATE OR REPLACE FUNCTION delivery_skip(dest text DEFAULT NULL, ord bigint DEFAULT NULL,
                                         since timestamptz DEFAULT NULL,
                                         until timestamptz DEFAULT NULL,
                                         states text[] DEFAULT '{dead}',
                                         actor text DEFAULT session_user)
RETURNS integer
LANGUAGE sql AS $$
    SELECT delivery_act('skip', dest => dest, ord => ord, since => since, until => until,
                        states => states, actor => actor)
$$;

CREATE OR REPLACE FUNCTION delivery_replay_events(dests text[], positions bigint[], actor text)
RETURNS integer
LANGUAGE sql AS $$
    SELECT delivery_act('replay', dests => dests, positions => positions, states => '{dead}',
                        actor => actor)
$$;

CREATE OR REPLACE FUNCTION delivery_skip_events(dests text[], positions bigint[], actor text,
                                                states text[] DEFAULT '{dead,blocked}')
RETURNS integer
LANGUAGE sql AS $$
    SELECT delivery_act('skip', dests => dests, positions => positions, states => states,
                        actor => actor)
$$;

-- ---------------------------------------------------------------- where a destination starts

-- Chosen when the destination is created (changing it later does nothing):
--   NULL (the default), or a time at or after the INSERT: now, the events
--       committed from then on;
--   '-infinity': from the beginning of what is retained;
--   an earlier time: the retained events committed from then on.
-- The same rule for push destinations (the relay delivers from there) and
-- feeds (a read without `after` starts there).
ALTER TABLE destinations ADD COLUMN start_from timestamptz;

CREATE OR REPLACE FUNCTION destination_stream_start() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
BEGIN
    SELECT coalesce(max(position), 0) INTO p FROM events;
    IF NEW.start_from IS NOT NULL AND NEW.start_from < now() THEN
        -- the position before the first event committed from start_from on:
        -- partitions wholly before it are pruned, and in the first one left
        -- the position index meets it at once (positions follow commit time)
        SELECT coalesce((SELECT e.position - 1 FROM events e
                          WHERE e.created_at >= NEW.start_from
                          ORDER BY e.position LIMIT 1), p)
          INTO p;
    END IF;
    INSERT INTO delivery_streams (destination_id, position, start_position)
    VALUES (NEW.id, p, p);
    RETURN NULL;
END;
$$;

-- ---------------------------------------------------------------- feeds

-- 011's feed_read, and: (1) a read that moves the cursor records the events
-- it acknowledged in delivery_log (one row per 4096 positions), so a feed's
-- deliveries count in the console's chart and show in an order's journey
-- like the relay's; (2) reading starts after the destination's start
-- position at the earliest, so a feed read without `after` gives the events
-- from where the destination started, not everything retained.
CREATE OR REPLACE FUNCTION feed_read(dest text, after bigint, types text[], lim integer)
RETURNS TABLE (horizon bigint, acked bigint, event_position bigint, event_id text, payload text)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
#variable_conflict use_column
DECLARE
    h         bigint;
    cur       bigint;
    first_pos bigint;
    moved     bigint := 0;
BEGIN
    -- events up to h are all committed and nothing commits below it later
    -- (005): reading up to it in later statements misses nothing
    SELECT coalesce(max(e.position), 0) INTO h FROM events e;
    SELECT s.position, s.start_position INTO cur, first_pos
      FROM delivery_streams s WHERE s.destination_id = dest;
    IF cur IS NOT NULL AND after > cur AND after <= h THEN
        -- again under the row's lock: two readers of one feed log each
        -- acknowledged event once
        SELECT s.position INTO cur FROM delivery_streams s
         WHERE s.destination_id = dest FOR UPDATE;
        IF after > cur THEN
            UPDATE delivery_streams s SET position = after, updated_at = now()
             WHERE s.destination_id = dest;
            moved := 1;
            PERFORM event_store_ensure();
            INSERT INTO delivery_log (destination_id, first_position, last_position, delivered,
                                      positions, statuses, durations_ms)
            SELECT dest, min(a.position), max(a.position), count(*),
                   array_agg(a.position ORDER BY a.position), array_agg(200::smallint),
                   array_agg(0)
              FROM (SELECT e.position, (row_number() OVER (ORDER BY e.position) - 1) / 4096 AS g
                      FROM events e
                     WHERE e.position > greatest(cur, first_pos) AND e.position <= after
                       AND (types IS NULL OR e.type = ANY (types))) a
             GROUP BY a.g;
        END IF;
    END IF;
    RETURN QUERY
    SELECT h, moved, e.position, e.event_id, e.payload
      FROM (SELECT 1) one LEFT JOIN LATERAL (
           SELECT e.position, replace(e.id::text, '-', '') AS event_id, e.payload FROM events e
            WHERE e.position > greatest(after, coalesce(first_pos, 0)) AND e.position <= h
              AND (types IS NULL OR e.type = ANY (types))
            ORDER BY e.position LIMIT lim) e ON true;
END;
$$;

-- ---------------------------------------------------------------- views

-- One row per (event, destination it is for): its state from the evidence
-- (see the top), every attempt on record, and when it was delivered or
-- skipped (by whom), all from delivery_state(). Columns up to last_error are
-- those of 007.
CREATE OR REPLACE VIEW event_deliveries AS
SELECT e.position,
       e.id AS event_id,
       e.order_id,
       e.type AS event_type,
       e.created_at,
       s.destination_id,
       v.state,
       v.attempts,
       v.next_at,
       v.blocked_by,
       v.last_status,
       v.last_error,
       v.delivered_at,
       v.skipped_at,
       v.skipped_by
  FROM events e
  JOIN delivery_streams s ON e.position > s.start_position
 CROSS JOIN LATERAL delivery_state(s.destination_id, s.position, e.position) v
 WHERE NOT EXISTS (SELECT 1 FROM subscriptions u WHERE u.destination_id = s.destination_id)
    OR EXISTS (SELECT 1 FROM subscriptions u
                WHERE u.destination_id = s.destination_id AND u.event_type = e.type);

-- One row per order and destination. The state, most urgent first: blocked,
-- dead, delivering, retrying, pending, then for an order with nothing open:
-- unrecorded, skipped, synced (every event delivered). `delivered` counts
-- deliveries only; `skipped` (new, at the end) the skipped ones.
CREATE OR REPLACE VIEW sync_state AS
SELECT o.id AS order_id,
       o.source_id,
       o.external_id,
       ed.destination_id,
       CASE
           WHEN bool_or(ed.state = 'blocked') THEN 'blocked'
           WHEN bool_or(ed.state = 'dead') THEN 'dead'
           WHEN bool_or(ed.state = 'delivering') THEN 'delivering'
           WHEN bool_or(ed.state = 'pending' AND ed.attempts > 0) THEN 'retrying'
           WHEN bool_or(ed.state = 'pending') THEN 'pending'
           WHEN bool_or(ed.state = 'unrecorded') THEN 'unrecorded'
           WHEN bool_or(ed.state = 'skipped') THEN 'skipped'
           ELSE 'synced'
       END AS state,
       count(*) AS events,
       count(*) FILTER (WHERE ed.state = 'delivered') AS delivered,
       count(*) FILTER (WHERE ed.state IN ('pending', 'delivering', 'blocked')) AS pending,
       count(*) FILTER (WHERE ed.state = 'dead') AS dead,
       coalesce(sum(ed.attempts), 0)::integer AS attempts,
       (array_agg(ed.last_status ORDER BY ed.position DESC)
            FILTER (WHERE ed.last_status IS NOT NULL))[1] AS last_status,
       (array_agg(ed.last_error ORDER BY ed.position DESC)
            FILTER (WHERE ed.last_error IS NOT NULL))[1] AS last_error,
       max(ed.delivered_at) AS last_delivered_at,
       coalesce(now() - min(ed.created_at)
                            FILTER (WHERE ed.state IN ('pending', 'delivering', 'blocked', 'dead')),
                interval '0') AS lag,
       count(*) FILTER (WHERE ed.state = 'blocked') AS blocked,
       (array_agg('waits for event ' || ed.blocked_by || ' (' || coalesce(b.state, 'settled')
                  || ') of the same order' ORDER BY ed.position)
            FILTER (WHERE ed.state = 'blocked'))[1] AS blocked_reason,
       count(*) FILTER (WHERE ed.state = 'skipped') AS skipped
  FROM orders o
  JOIN event_deliveries ed ON ed.order_id = o.id
  LEFT JOIN deliveries b ON b.destination_id = ed.destination_id AND b.position = ed.blocked_by
 GROUP BY o.id, ed.destination_id;

-- One row per order: fully_synced only when every (event, destination) was
-- delivered (a skipped event was not: it is counted in `skipped`, new at
-- the end, and the order is not fully synced).
CREATE OR REPLACE VIEW order_sync AS
SELECT o.id AS order_id,
       o.source_id,
       o.external_id,
       o.status,
       o.financial_status,
       count(ed.position) AS events,
       count(ed.position) FILTER (WHERE ed.state = 'delivered') AS delivered,
       count(ed.position) FILTER (WHERE ed.state IN ('pending', 'delivering', 'blocked'))
           AS pending,
       count(ed.position) FILTER (WHERE ed.state = 'dead') AS dead,
       coalesce(bool_and(ed.state = 'delivered'), true) AS fully_synced,
       o.updated_at,
       count(ed.position) FILTER (WHERE ed.state = 'skipped') AS skipped
  FROM orders o
  LEFT JOIN event_deliveries ed ON ed.order_id = o.id
 GROUP BY o.id;

-- ---------------------------------------------------------------- the console's reads

-- What the console shows of one order's deliveries, read through
-- event_deliveries. Functions with JIT off: planned in the console's
-- statements, the view's estimate on tables not analyzed yet (a new
-- install) is high enough to switch on JIT compilation, which cost seconds
-- per page of orders for a few rows each; in here the plan is small and
-- cached.

-- {state: count} of the order's (event, destination) pairs (the Orders list).
CREATE FUNCTION order_delivery_states(ord bigint) RETURNS json
LANGUAGE plpgsql STABLE SET jit = off AS $$
BEGIN
    RETURN (SELECT coalesce(json_object_agg(z.state, z.n), '{}')
              FROM (SELECT ed.state, count(*) AS n FROM event_deliveries ed
                     WHERE ed.order_id = ord GROUP BY ed.state) z);
END;
$$;

-- Every (event, destination) of the order from position `from_pos` on, as
-- the order page shows them: state, every attempt on record, when delivered
-- or skipped and by whom, the destination's mode (a feed's delivery is the
-- read that acknowledged it), and for one delivered at the first attempt
-- (or by a feed read) that round's status, duration and time.
CREATE FUNCTION order_deliveries_doc(ord bigint, from_pos bigint) RETURNS json
LANGUAGE plpgsql STABLE SET jit = off AS $$
BEGIN
    RETURN (
    SELECT coalesce(json_agg(json_build_object(
               'destination', ed.destination_id, 'position', ed.position, 'state', ed.state,
               'attempts', ed.attempts, 'next_at', ed.next_at, 'blocked_by', ed.blocked_by,
               'last_status', ed.last_status, 'last_error', left(ed.last_error, 300),
               'delivered_at', ed.delivered_at, 'skipped_at', ed.skipped_at,
               'skipped_by', ed.skipped_by, 'mode', dm.mode, 'first', f.first)
             ORDER BY ed.position, ed.destination_id), '[]')
      FROM event_deliveries ed
      LEFT JOIN destinations dm ON dm.id = ed.destination_id
      LEFT JOIN LATERAL (
           SELECT json_build_object('completed_at', l.completed_at, 'status', l.statuses[k.i],
                                    'duration_ms', l.durations_ms[k.i]) AS first
             FROM (SELECT l.* FROM delivery_log l
                    WHERE l.destination_id = ed.destination_id
                      AND l.last_position >= ed.position
                    ORDER BY l.last_position LIMIT 4) l
            CROSS JOIN LATERAL (SELECT array_position(l.positions, ed.position) AS i) k
            WHERE ed.state = 'delivered' AND l.first_position <= ed.position
              AND k.i IS NOT NULL
            ORDER BY l.completed_at LIMIT 1) f ON true
     WHERE ed.order_id = ord AND ed.position >= from_pos);
END;
$$;

-- ---------------------------------------------------------------- ignored webhooks

-- 006's ingest_batch, changed in one place: an ignored element may carry
-- "x", the external id of the order its signed body names (ordersync sends
-- it for a topic that contradicts the body: the body is still about that
-- order). The webhook is then stored with that order's id, so it shows in
-- the order's journey. An element without "x" (the previous release's, or a
-- topic not about orders) is stored as before, with no order.
CREATE OR REPLACE FUNCTION ingest_batch(batch jsonb, payloads text[] DEFAULT NULL)
RETURNS TABLE (idx integer, outcome text, order_id bigint, emitted integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n        integer := jsonb_array_length(batch);
    -- per element, 1-based
    r_out    text[] := array_fill(NULL::text, ARRAY[n]);
    r_order  bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    new_keys integer[];
    -- events to write, in the order they happened
    ev_i     integer[] := '{}';
    ev_order bigint[] := '{}';
    ev_type  text[] := '{}';
    ev_body  text[] := '{}'; -- the envelope every destination receives, printed
    ev_id    uuid[] := '{}';
    ev_trace uuid[] := '{}';
    -- the one-at-a-time path
    el       record;
    cur      orders%ROWTYPE;
    o        jsonb;
    merged   jsonb;
    hash     uuid;
    typ      text;
    ev_at    timestamptz;
    derived  boolean;
    fresh    boolean;
    found_id bigint;
    found_trace uuid; -- the element's trace id (its own, or a new one)
    j        integer;
    stamp    text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    PERFORM event_store_ensure();

    -- 1. Dedupe keys, sorted so that two batches with common keys take them in
    --    one order. A key twice in one batch (a pipelined retry): the first wins.
    WITH el AS (
        SELECT a.ord::integer AS i, a.value->>'s' AS s, a.value->>'k' AS k
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS a(value, ord)
    ), keys AS (
        INSERT INTO inbound_keys (source_id, dedupe_key)
        SELECT DISTINCT s, k FROM el ORDER BY s, k
        ON CONFLICT DO NOTHING
        RETURNING source_id, dedupe_key
    )
    SELECT coalesce(array_agg(f.i), '{}') INTO new_keys
      FROM (SELECT DISTINCT ON (el.s, el.k) el.i
              FROM el JOIN keys ON keys.source_id = el.s AND keys.dedupe_key = el.k
             ORDER BY el.s, el.k, el.i) f;

    -- 2. New orders alone in the batch: one INSERT each into orders and
    --    inbound_events for all of them.
    WITH el AS (
        SELECT a.ord::integer AS i, a.value AS v, a.value->>'s' AS s,
               a.value->'o'->>'external_id' AS x,
               count(*) OVER (PARTITION BY a.value->>'s', a.value->'o'->>'external_id') AS same
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS a(value, ord)
    ), cand AS (
        SELECT el.i, el.s, el.x, el.v->>'k' AS k, el.v->>'t' AS t, el.v->'o' AS o,
               coalesce((el.v->>'tr')::uuid, gen_random_uuid()) AS tr,
               CASE WHEN payloads IS NULL THEN (el.v->'p')::text ELSE payloads[el.i] END AS p,
               CASE WHEN el.v->>'e' <> 'order.sync' THEN el.v->>'e'
                    WHEN el.v->'o'->>'status' = 'cancelled' THEN 'order.cancelled'
                    ELSE 'order.created' END AS typ
          FROM el
         WHERE el.i = ANY (new_keys) AND el.v->>'e' IS NOT NULL AND el.same = 1
    ), doc AS (
        -- a cancel may be the first we hear of an order
        SELECT cand.*, CASE WHEN typ = 'order.cancelled'
                            THEN (o - 'partial') || '{"status": "cancelled"}'
                            ELSE o - 'partial' END AS m
          FROM cand
    ), ins AS (
        -- sorted: the lock order of the one-at-a-time path too
        INSERT INTO orders AS t (source_id, external_id, number, status, financial_status,
                                 fulfillment_status, currency, total, subtotal, tax, shipping,
                                 refunded, customer_email, shipping_address, sender_created_at,
                                 sender_updated_at, last_event_type, content_hash, lines)
        SELECT s, x, m->>'number', coalesce(m->>'status', 'open'), m->>'financial_status',
               m->>'fulfillment_status', m->>'currency', (m->>'total')::numeric,
               (m->>'subtotal')::numeric, (m->>'tax')::numeric, (m->>'shipping')::numeric,
               coalesce((m->>'refunded')::numeric, 0), m->>'customer_email',
               CASE WHEN jsonb_typeof(m->'shipping_address') = 'object'
                    THEN m->'shipping_address' END,
               (m->>'created_at')::timestamptz, (o->>'updated_at')::timestamptz, typ,
               md5((o - 'partial')::text)::uuid,
               CASE WHEN jsonb_typeof(m->'lines') = 'array' THEN m->'lines' END
          FROM doc ORDER BY s, x
        ON CONFLICT (source_id, external_id) DO NOTHING
        RETURNING t.id, t.source_id, t.external_id
    ), done AS (
        SELECT doc.i, doc.s, doc.k, doc.t, doc.typ, doc.p, doc.tr, ins.id, doc.m AS doc
          FROM doc JOIN ins ON ins.source_id = doc.s AND ins.external_id = doc.x
    ), inb AS (
        INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome, order_id,
                                    trace_id, payload)
        SELECT s, k, t, typ, 'applied', id, tr, p FROM done
    )
    SELECT coalesce(array_agg(i ORDER BY i), '{}'), coalesce(array_agg(id ORDER BY i), '{}'),
           coalesce(array_agg(typ ORDER BY i), '{}'),
           coalesce(array_agg('{"type": "' || typ || '", "timestamp": "' || stamp || '", "data": '
                              || (doc || jsonb_build_object('id', id::text))::text || '}'
                              ORDER BY i), '{}'),
           coalesce(array_agg(gen_random_uuid() ORDER BY i), '{}'),
           coalesce(array_agg(tr ORDER BY i), '{}')
      INTO ev_i, ev_order, ev_type, ev_body, ev_id, ev_trace
      FROM done;
    FOR j IN 1 .. coalesce(array_length(ev_i, 1), 0) LOOP
        r_out[ev_i[j]] := 'applied';
        r_order[ev_i[j]] := ev_order[j];
    END LOOP;

    -- 3. Everything else, one at a time, in lock order.
    FOR el IN SELECT a.ord::integer AS i, a.value AS v, a.value->>'s' AS s,
                     a.value->'o'->>'external_id' AS x
                FROM jsonb_array_elements(batch) WITH ORDINALITY AS a(value, ord)
               WHERE r_out[a.ord] IS NULL
               ORDER BY a.value->>'s', a.value->'o'->>'external_id', a.ord LOOP
        IF NOT el.i = ANY (new_keys) THEN
            r_out[el.i] := 'duplicate';
            IF el.x IS NOT NULL THEN
                SELECT id INTO found_id FROM orders WHERE source_id = el.s AND external_id = el.x;
                r_order[el.i] := found_id;
            END IF;
            CONTINUE;
        END IF;
        typ := el.v->>'e';
        IF typ IS NULL THEN
            -- not about orders (or a topic the body does not support): keep a
            -- record so the sender stops retrying, emit nothing; linked to
            -- the order the signed body names ("x"), when there is one
            found_id := NULL;
            IF el.v->>'x' IS NOT NULL THEN
                SELECT id INTO found_id FROM orders
                 WHERE source_id = el.s AND external_id = el.v->>'x';
            END IF;
            INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome, order_id,
                                        trace_id, payload)
            VALUES (el.s, el.v->>'k', el.v->>'t', NULL, 'ignored', found_id, (el.v->>'tr')::uuid,
                    CASE WHEN payloads IS NULL THEN (el.v->'p')::text ELSE payloads[el.i] END);
            -- (the sender's answer stays {"status": "ignored", "reason"}: no order id)
            r_out[el.i] := 'ignored';
            CONTINUE;
        END IF;

        o := el.v->'o';
        ev_at := (o->>'updated_at')::timestamptz;
        found_trace := coalesce((el.v->>'tr')::uuid, gen_random_uuid());
        derived := typ = 'order.sync';
        hash := md5((o - 'partial')::text)::uuid;
        fresh := false;

        -- The order's row lock serializes every event of one order, across
        -- batches and instances, until this transaction commits.
        <<find_order>>
        LOOP
            SELECT * INTO cur FROM orders
             WHERE source_id = el.s AND external_id = el.x
               FOR UPDATE;
            EXIT find_order WHEN FOUND;
            merged := o - 'partial';
            IF derived THEN
                typ := CASE WHEN merged->>'status' = 'cancelled' THEN 'order.cancelled'
                            ELSE 'order.created' END;
            END IF;
            IF typ = 'order.cancelled' THEN
                merged := merged || '{"status": "cancelled"}';
            END IF;
            INSERT INTO orders AS t (source_id, external_id, number, status, financial_status,
                                     fulfillment_status, currency, total, subtotal, tax, shipping,
                                     refunded, customer_email, shipping_address,
                                     sender_created_at, sender_updated_at, last_event_type,
                                     content_hash, lines)
            VALUES (el.s, el.x, merged->>'number', coalesce(merged->>'status', 'open'),
                    merged->>'financial_status', merged->>'fulfillment_status',
                    merged->>'currency', (merged->>'total')::numeric,
                    (merged->>'subtotal')::numeric, (merged->>'tax')::numeric,
                    (merged->>'shipping')::numeric, coalesce((merged->>'refunded')::numeric, 0),
                    merged->>'customer_email',
                    CASE WHEN jsonb_typeof(merged->'shipping_address') = 'object'
                         THEN merged->'shipping_address' END,
                    (merged->>'created_at')::timestamptz, ev_at, typ, hash,
                    CASE WHEN jsonb_typeof(merged->'lines') = 'array' THEN merged->'lines' END)
            ON CONFLICT (source_id, external_id) DO NOTHING
            RETURNING * INTO cur;
            fresh := FOUND;
            EXIT find_order WHEN FOUND;
            -- another transaction created it meanwhile: lock that one
        END LOOP;

        IF derived AND NOT fresh THEN
            typ := CASE
                WHEN o->>'status' = 'cancelled' AND cur.status <> 'cancelled' THEN 'order.cancelled'
                WHEN o->>'financial_status' = 'paid'
                     AND cur.financial_status IS DISTINCT FROM 'paid' THEN 'order.paid'
                WHEN o->>'financial_status' IN ('refunded', 'partially_refunded')
                     AND cur.financial_status IS DISTINCT FROM o->>'financial_status'
                     THEN 'order.refunded'
                WHEN o->>'fulfillment_status' = 'fulfilled'
                     AND cur.fulfillment_status IS DISTINCT FROM 'fulfilled' THEN 'order.fulfilled'
                ELSE 'order.updated' END;
        END IF;

        -- Never backwards: an older state is recorded, not applied. At the same
        -- sender time (Shopify's has 1-second resolution) the content decides:
        -- different content is a newer state (last received wins); the same
        -- content is the same state again, whatever topic it comes under (an
        -- unsigned topic header must not make a replayed body emit again).
        -- Orders written before content hashes existed fall back to the event type.
        IF NOT fresh AND (cur.sender_updated_at > ev_at
           OR (cur.sender_updated_at = ev_at
               AND (cur.content_hash = hash
                    OR (cur.content_hash IS NULL
                        AND (derived OR cur.last_event_type IS NOT DISTINCT FROM typ))))) THEN
            INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome,
                                        order_id, trace_id, payload)
            VALUES (el.s, el.v->>'k', el.v->>'t', typ, 'stale', cur.id, found_trace,
                    CASE WHEN payloads IS NULL THEN (el.v->'p')::text ELSE payloads[el.i] END);
            r_out[el.i] := 'stale';
            r_order[el.i] := cur.id;
            CONTINUE;
        END IF;

        IF NOT fresh THEN
            IF (o->>'partial')::boolean THEN
                merged := order_doc(cur) || (o - 'partial');
            ELSE
                merged := o - 'partial';
                -- an event without lines keeps the lines we have (Stripe
                -- Checkout Sessions carry none)
                IF NOT merged ? 'lines' AND cur.lines IS NOT NULL THEN
                    merged := merged || jsonb_build_object('lines', cur.lines);
                END IF;
            END IF;
            IF typ = 'order.cancelled' THEN
                merged := merged || '{"status": "cancelled"}';
            END IF;
            -- the same columns as the INSERT, from the merged document
            UPDATE orders SET
                number             = merged->>'number',
                status             = coalesce(merged->>'status', 'open'),
                financial_status   = merged->>'financial_status',
                fulfillment_status = merged->>'fulfillment_status',
                currency           = merged->>'currency',
                total              = (merged->>'total')::numeric,
                subtotal           = (merged->>'subtotal')::numeric,
                tax                = (merged->>'tax')::numeric,
                shipping           = (merged->>'shipping')::numeric,
                refunded           = coalesce((merged->>'refunded')::numeric, 0),
                customer_email     = merged->>'customer_email',
                shipping_address   = CASE WHEN jsonb_typeof(merged->'shipping_address') = 'object'
                                          THEN merged->'shipping_address' END,
                sender_created_at  = (merged->>'created_at')::timestamptz,
                sender_updated_at  = ev_at,
                last_event_type    = typ,
                content_hash       = hash,
                lines              = CASE WHEN jsonb_typeof(merged->'lines') = 'array'
                                          THEN merged->'lines' END,
                updated_at         = now()
            WHERE id = cur.id;
        END IF;

        INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome, order_id,
                                    trace_id, payload)
        VALUES (el.s, el.v->>'k', el.v->>'t', typ, 'applied', cur.id, found_trace,
                CASE WHEN payloads IS NULL THEN (el.v->'p')::text ELSE payloads[el.i] END);
        r_out[el.i] := 'applied';
        r_order[el.i] := cur.id;
        ev_i := ev_i || el.i;
        ev_order := ev_order || cur.id;
        ev_type := ev_type || typ;
        ev_body := ev_body || ('{"type": "' || typ || '", "timestamp": "' || stamp || '", "data": '
                               || (merged || jsonb_build_object('id', cur.id::text))::text || '}');
        ev_id := ev_id || gen_random_uuid();
        ev_trace := ev_trace || found_trace;
    END LOOP;

    -- 4. Events, in commit order. Positions are drawn in event order; each
    --    order's row lock is still held, so one order's events never cross.
    --    Everything but the rows themselves was made before the lock: the
    --    lock is held until commit, and other batches wait for it.
    IF cardinality(ev_i) > 0 THEN
        PERFORM pg_advisory_xact_lock(event_store_position_lock());
        INSERT INTO events (position, id, order_id, type, created_at, trace_id, payload)
        SELECT nextval('event_position'), u.id, u.oid, u.typ, now(), u.tr, u.body
          FROM unnest(ev_order, ev_type, ev_body, ev_id, ev_trace) WITH ORDINALITY
               AS u(oid, typ, body, id, tr, n)
         ORDER BY u.n;
        -- other instances' relays and feeds learn of new events here (the
        -- local ones are woken in-process); once per batch: NOTIFY serializes
        -- commits
        PERFORM pg_notify('ordersync_events', '');
    END IF;

    RETURN QUERY
        SELECT (g - 1)::integer, r_out[g], r_order[g],
               CASE WHEN g = ANY (ev_i) THEN 1 ELSE 0 END
          FROM generate_series(1, n) g;
END;
$$;
ALTER FUNCTION ingest_batch(jsonb, text[]) SET jit = off;
-- (CREATE OR REPLACE resets a function's settings: 011's again)
ALTER FUNCTION ingest_batch(jsonb, text[]) SET enable_seqscan = off;
