-- 007_delivery: how the relay and the feeds read the event store (005), how
-- operators replay and skip, and the views for humans.
--
-- A push destination's stream is delivered by one instance at a time (it
-- holds the stream's lease, renewed by relay_acquire): it reads events after
-- its cursor in position order, posts them, and advances the cursor past the
-- ones that are settled, writing a `deliveries` row for each one that is not
-- delivered yet (failed: pending with a retry time; waiting behind an earlier
-- event of its order: blocked; still in flight after a while: delivering
-- under a lease). Rows are claimed with FOR UPDATE SKIP LOCKED and a lease,
-- and leave the table when delivered. Per (order, destination), at most the
-- earliest open row is pending or delivering; the others are blocked and
-- become pending when the one before them is settled (deliveries_promote).

-- Is a row an open predecessor: does it hold back later events of its order?
-- A dead one does, unless the destination says on_dead = 'skip'.
CREATE FUNCTION delivery_holds(state text, on_dead text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT state IN ('pending', 'delivering', 'blocked') OR (state = 'dead' AND on_dead = 'block')
$$;

-- Makes the earliest blocked row of (dest, ord) pending when nothing before it
-- holds it back any more. (PL/pgSQL, like every function on a hot path here:
-- its plans are cached per session; a SQL function is planned at every call.)
CREATE FUNCTION deliveries_promote(dest text, ord bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE deliveries x
       SET state = 'pending', next_at = now(), blocked_by = NULL, updated_at = now()
     WHERE x.destination_id = dest
       AND x.position = (SELECT b.position FROM deliveries b
                          WHERE b.destination_id = dest AND b.order_id = ord
                            AND b.state = 'blocked'
                          ORDER BY b.position LIMIT 1)
       AND NOT EXISTS (SELECT 1 FROM deliveries p JOIN destinations d ON d.id = p.destination_id
                        WHERE p.destination_id = dest AND p.order_id = ord
                          AND p.position < x.position AND delivery_holds(p.state, d.on_dead));
END;
$$;

-- Restores the rule "only the earliest open row of (dest, ord) goes out"
-- after an operator changed rows (replay, skip).
CREATE FUNCTION deliveries_reorder(dest text, ord bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r       record;
    od      text;
    blocker bigint;
BEGIN
    SELECT on_dead INTO od FROM destinations WHERE id = dest;
    FOR r IN SELECT position, state FROM deliveries
              WHERE destination_id = dest AND order_id = ord ORDER BY position FOR UPDATE LOOP
        IF blocker IS NOT NULL AND r.state IN ('pending', 'blocked') THEN
            UPDATE deliveries SET state = 'blocked', blocked_by = blocker, updated_at = now()
             WHERE destination_id = dest AND position = r.position;
        ELSIF blocker IS NULL AND r.state = 'blocked' THEN
            UPDATE deliveries SET state = 'pending', blocked_by = NULL, next_at = now(),
                                  updated_at = now()
             WHERE destination_id = dest AND position = r.position;
        END IF;
        IF delivery_holds(CASE WHEN blocker IS NOT NULL AND r.state = 'pending' THEN 'blocked'
                               ELSE r.state END, od) THEN
            blocker := coalesce(blocker, r.position);
        END IF;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------- stream leases

-- Instances that deliver, so that streams can be shared out between them.
CREATE TABLE relay_instances (
    name    text PRIMARY KEY,
    seen_at timestamptz NOT NULL
) WITH (fillfactor = 50);

-- Called by each instance every lease/4: renews its streams, lets go of the
-- ones beyond its share (ceil(destinations / live instances)) and takes free
-- ones up to it (FOR UPDATE SKIP LOCKED: two instances never wait for each
-- other). `dests` are the push destinations the caller can deliver to.
-- Returns the streams it holds, with their cursors.
CREATE FUNCTION relay_acquire(owner text, lease interval, dests text[])
RETURNS TABLE (destination_id text, stream_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    live   integer;
    share  integer;
    mine   integer;
BEGIN
    INSERT INTO relay_instances AS r (name, seen_at) VALUES (owner, now())
    ON CONFLICT (name) DO UPDATE SET seen_at = now();
    DELETE FROM relay_instances r WHERE r.seen_at < now() - 10 * lease;
    -- live: renewed within half a lease (instances renew every quarter); one
    -- that stopped cleanly left at once (relay_leave)
    SELECT count(*) INTO live FROM relay_instances r WHERE r.seen_at >= now() - lease / 2;
    share := ceil(coalesce(cardinality(dests), 0)::numeric / greatest(live, 1));

    UPDATE delivery_streams s SET lease_owner = NULL, lease_until = NULL
     WHERE s.lease_owner = owner AND NOT (s.destination_id = ANY (coalesce(dests, '{}')));
    UPDATE delivery_streams s SET lease_until = now() + lease WHERE s.lease_owner = owner;
    GET DIAGNOSTICS mine = ROW_COUNT;
    IF mine > share THEN
        UPDATE delivery_streams s SET lease_owner = NULL, lease_until = NULL
         WHERE s.destination_id IN (SELECT x.destination_id FROM delivery_streams x
                                     WHERE x.lease_owner = owner
                                     ORDER BY x.destination_id DESC LIMIT mine - share);
    ELSIF mine < share THEN
        UPDATE delivery_streams s SET lease_owner = owner, lease_until = now() + lease
         WHERE s.destination_id IN (SELECT x.destination_id FROM delivery_streams x
                                     WHERE x.destination_id = ANY (dests)
                                       AND (x.lease_owner IS NULL OR x.lease_until < now())
                                     ORDER BY x.destination_id
                                     LIMIT share - mine
                                     FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN QUERY SELECT s.destination_id, s.position FROM delivery_streams s
                  WHERE s.lease_owner = owner ORDER BY s.destination_id;
END;
$$;

-- A clean stop: this instance's streams are free for the others at once, and
-- it no longer counts when they share streams out.
CREATE FUNCTION relay_leave(owner text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM relay_instances WHERE name = owner;
    UPDATE delivery_streams SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = owner;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END;
$$;

-- ---------------------------------------------------------------- reading streams

-- The next events of several streams at once (one round trip per wake-up,
-- whatever the number of destinations): for each destination, events after
-- its cursor of the types it takes (types[i]: a text[] literal, NULL: all),
-- at most limits[i], each with `held`: does an earlier event of its order
-- have an open row (a dead one counts when dead_blocks[i])? The first row
-- carries only the horizon: the last position committed when the read began.
-- Events are read up to it only, so a reader that got fewer than its limit
-- has seen everything up to the horizon (nothing can commit below it later).
CREATE FUNCTION stream_read(dests text[], afters bigint[], types text[], limits integer[],
                            dead_blocks boolean[])
RETURNS TABLE (destination_id text, horizon bigint, event_position bigint, event_id text,
               order_id bigint, created_at text, payload text, age_s double precision,
               held boolean, trace_id text)
LANGUAGE plpgsql AS $$
DECLARE
    h bigint;
BEGIN
    SELECT coalesce(max(e.position), 0) INTO h FROM events e;
    RETURN QUERY SELECT NULL::text, h, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
                        NULL::text, NULL::double precision, NULL::boolean, NULL::text;
    RETURN QUERY
    SELECT d.id, h, e.position, replace(e.id::text, '-', ''), e.order_id, e.created_at::text,
           e.payload, extract(epoch FROM now() - e.created_at)::double precision,
           EXISTS (SELECT 1 FROM deliveries x
                    WHERE x.destination_id = d.id AND x.order_id = e.order_id
                      AND x.position < e.position AND (x.state <> 'dead' OR d.db)),
           replace(e.trace_id::text, '-', '')
      FROM unnest(dests, afters, types, limits, dead_blocks) AS d(id, after, types, lim, db)
     CROSS JOIN LATERAL (
           SELECT e.position, e.id, e.order_id, e.created_at, e.payload, e.trace_id FROM events e
            WHERE e.position > d.after AND e.position <= h
              AND (d.types IS NULL OR e.type = ANY (d.types::text[]))
            ORDER BY e.position LIMIT d.lim) e;
END;
$$;
ALTER FUNCTION stream_read(text[], bigint[], text[], integer[], boolean[]) SET jit = off;

-- ---------------------------------------------------------------- claims and completion

-- Due rows of each destination, oldest due first, as many as it has room
-- for; leased to `owner`. Reads only the partial index of due rows: rows in
-- backoff or blocked cost nothing, however many there are. The locked rows
-- are updated by ctid: joined on the CTE instead, the planner guesses its
-- size and may hash the whole table.
CREATE FUNCTION delivery_claim(dest_ids text[], limits integer[], lease interval, owner text)
RETURNS TABLE (destination_id text, event_position bigint, event_id uuid, order_id bigint,
               attempts integer, payload text, age_s double precision, trace_id text)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT c.ctid
          FROM unnest(dest_ids, limits) AS d(id, lim)
          CROSS JOIN LATERAL (
              SELECT x.ctid FROM deliveries x
               WHERE x.destination_id = d.id AND x.state = 'pending' AND x.next_at <= now()
               ORDER BY x.next_at
               LIMIT d.lim
               FOR UPDATE SKIP LOCKED) c
    ), upd AS (
        UPDATE deliveries x
           SET state = 'delivering', lease_owner = owner, lease_until = now() + lease,
               attempts = x.attempts + 1, updated_at = now()
         WHERE x.ctid = ANY (ARRAY(SELECT due.ctid FROM due))
        RETURNING x.destination_id, x.position, x.order_id, x.attempts, x.event_created_at
    )
    SELECT upd.destination_id, upd.position, e.id, upd.order_id, upd.attempts, e.payload,
           extract(epoch FROM now() - e.created_at)::double precision,
           replace(e.trace_id::text, '-', '')
      FROM upd
      JOIN events e ON e.position = upd.position AND e.created_at = upd.event_created_at;
END;
$$;

-- Everything a round of deliveries settled, in one transaction. `doc`:
--   {"streams": [{"d": destination, "from": cursor read, "to": new cursor,
--                 "ok": [[position, http status, ms], ...],
--                 "rows": [{"p": position, "o": order id, "c": event created_at,
--                           "k": "failed" | "dead" | "blocked" | "leased",
--                           "n": attempt, "st": status, "er": error, "ex": excerpt,
--                           "dl": retry in s, "t0": started (epoch s), "ms": duration,
--                           "lease": s}, ...]}],
--    "results": [{"d": destination, "p": position, "r": "ok" | "retry" | "dead" | "released",
--                 "n", "st", "er", "ex", "dl", "t0", "ms"}, ...]}
-- A stream moves only if `owner` still holds it and it is where the caller
-- read it ("from"); a row is settled only if `owner` still holds its lease.
-- Returns the destinations whose stream was not moved (the caller lost it).
CREATE FUNCTION relay_complete(owner text, doc jsonb)
RETURNS TABLE (lost text)
LANGUAGE plpgsql AS $$
DECLARE
    s     jsonb;
    r     jsonb;
    dest  text;
    od    text;
    ord   bigint;
BEGIN
    PERFORM event_store_ensure();
    FOR s IN SELECT * FROM jsonb_array_elements(coalesce(doc->'streams', '[]')) LOOP
        dest := s->>'d';
        UPDATE delivery_streams
           SET position = (s->>'to')::bigint, updated_at = now()
         WHERE destination_id = dest AND lease_owner = owner
           AND position = (s->>'from')::bigint;
        IF NOT FOUND THEN
            lost := dest;
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT on_dead INTO od FROM destinations WHERE id = dest;
        -- events the cursor passed that are not delivered: one row each, in
        -- position order so that each sees the ones before it
        FOR r IN SELECT x.value FROM jsonb_array_elements(coalesce(s->'rows', '[]')) x
                  ORDER BY (x.value->>'p')::bigint LOOP
            INSERT INTO deliveries AS x (destination_id, position, order_id, event_created_at,
                                         state, attempts, next_at, lease_owner, lease_until,
                                         blocked_by, last_status, last_error)
            SELECT dest, (r->>'p')::bigint, (r->>'o')::bigint, (r->>'c')::timestamptz,
                   CASE WHEN r->>'k' = 'leased' THEN 'delivering'
                        WHEN r->>'k' = 'dead' THEN 'dead'
                        WHEN prev.position IS NOT NULL THEN 'blocked'
                        ELSE 'pending' END,
                   CASE WHEN r->>'k' = 'blocked' THEN 0 ELSE coalesce((r->>'n')::integer, 1) END,
                   now() + make_interval(secs => coalesce((r->>'dl')::float8, 0)),
                   CASE WHEN r->>'k' = 'leased' THEN owner END,
                   CASE WHEN r->>'k' = 'leased'
                        THEN now() + make_interval(secs => (r->>'lease')::float8) END,
                   CASE WHEN r->>'k' NOT IN ('leased', 'dead') THEN prev.position END,
                   (r->>'st')::integer, r->>'er'
              FROM (SELECT max(p.position) AS position FROM deliveries p
                     WHERE p.destination_id = dest AND p.order_id = (r->>'o')::bigint
                       AND p.position < (r->>'p')::bigint AND delivery_holds(p.state, od)) prev
            ON CONFLICT (destination_id, position) DO NOTHING;
            -- (n = 0: it could not even be sent, so it was no attempt)
            IF r->>'k' IN ('failed', 'dead') AND coalesce((r->>'n')::integer, 1) > 0 THEN
                INSERT INTO delivery_attempts (destination_id, position, order_id, attempt,
                                               started_at, duration_ms, http_status, error,
                                               response_excerpt)
                VALUES (dest, (r->>'p')::bigint, (r->>'o')::bigint, 1,
                        to_timestamp((r->>'t0')::float8), (r->>'ms')::integer,
                        (r->>'st')::integer,
                        CASE WHEN r->>'st' IS NULL THEN coalesce(r->>'er', 'unknown error')
                             ELSE r->>'er' END,
                        r->>'ex');
            END IF;
            IF r->>'k' = 'dead' AND od = 'skip' THEN
                PERFORM deliveries_promote(dest, (r->>'o')::bigint);
            END IF;
        END LOOP;
        IF jsonb_array_length(coalesce(s->'ok', '[]')) > 0 THEN
            INSERT INTO delivery_log (destination_id, first_position, last_position, delivered,
                                      positions, statuses, durations_ms)
            SELECT dest, min((x.value->>0)::bigint), max((x.value->>0)::bigint), count(*),
                   array_agg((x.value->>0)::bigint ORDER BY (x.value->>0)::bigint),
                   array_agg((x.value->>1)::smallint ORDER BY (x.value->>0)::bigint),
                   array_agg((x.value->>2)::integer ORDER BY (x.value->>0)::bigint)
              FROM jsonb_array_elements(s->'ok') x;
        END IF;
    END LOOP;

    FOR r IN SELECT * FROM jsonb_array_elements(coalesce(doc->'results', '[]')) LOOP
        dest := r->>'d';
        IF r->>'r' = 'released' THEN
            -- never attempted (shutdown, a bad secret, out of memory): not an attempt
            UPDATE deliveries
               SET state = 'pending', lease_owner = NULL, lease_until = NULL,
                   attempts = greatest(attempts - 1, 0),
                   next_at = now() + make_interval(secs => coalesce((r->>'dl')::float8, 0)),
                   last_error = coalesce(r->>'er', last_error), updated_at = now()
             WHERE destination_id = dest AND position = (r->>'p')::bigint
               AND lease_owner = owner AND state = 'delivering';
            CONTINUE;
        END IF;
        IF r->>'r' = 'ok' THEN
            DELETE FROM deliveries
             WHERE destination_id = dest AND position = (r->>'p')::bigint
               AND lease_owner = owner AND state = 'delivering'
            RETURNING order_id INTO ord;
        ELSE
            UPDATE deliveries
               SET state = CASE WHEN r->>'r' = 'dead' THEN 'dead' ELSE 'pending' END,
                   next_at = now() + make_interval(secs => coalesce((r->>'dl')::float8, 0)),
                   lease_owner = NULL, lease_until = NULL,
                   last_status = (r->>'st')::integer, last_error = r->>'er', updated_at = now()
             WHERE destination_id = dest AND position = (r->>'p')::bigint
               AND lease_owner = owner AND state = 'delivering'
            RETURNING order_id INTO ord;
        END IF;
        IF NOT FOUND THEN
            CONTINUE;  -- the lease was lost: another instance has it now
        END IF;
        INSERT INTO delivery_attempts (destination_id, position, order_id, attempt, started_at,
                                       duration_ms, http_status, error, response_excerpt)
        VALUES (dest, (r->>'p')::bigint, ord, (r->>'n')::integer,
                to_timestamp((r->>'t0')::float8), (r->>'ms')::integer, (r->>'st')::integer,
                CASE WHEN r->>'st' IS NULL THEN coalesce(r->>'er', 'unknown error')
                     ELSE r->>'er' END,
                r->>'ex');
        IF r->>'r' = 'ok'
           OR (r->>'r' = 'dead' AND (SELECT on_dead FROM destinations WHERE id = dest) = 'skip') THEN
            PERFORM deliveries_promote(dest, ord);
        END IF;
    END LOOP;
END;
$$;

-- Periodic repair, by any instance: rows whose lease ran out (their process
-- died) are due again, and a blocked row whose predecessors are all settled
-- (a race during a hand-over of a stream) is made pending.
CREATE FUNCTION relay_sweep() RETURNS TABLE (released integer, unblocked integer)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE deliveries
       SET state = 'pending', lease_owner = NULL, lease_until = NULL, next_at = now(),
           updated_at = now()
     WHERE state = 'delivering' AND lease_until < now();
    GET DIAGNOSTICS released = ROW_COUNT;
    UPDATE deliveries x
       SET state = 'pending', blocked_by = NULL, next_at = now(), updated_at = now()
     WHERE x.state = 'blocked'
       AND NOT EXISTS (SELECT 1 FROM deliveries p JOIN destinations d ON d.id = p.destination_id
                        WHERE p.destination_id = x.destination_id AND p.order_id = x.order_id
                          AND p.position < x.position AND delivery_holds(p.state, d.on_dead));
    GET DIAGNOSTICS unblocked = ROW_COUNT;
    RETURN NEXT;
END;
$$;

-- After a reconnect: this process's leases on rows it is not delivering any
-- more are released at once instead of waiting out the lease.
CREATE FUNCTION relay_release_own(owner text, keep_dests text[], keep_positions bigint[])
RETURNS integer
LANGUAGE sql AS $$
    WITH r AS (
        UPDATE deliveries x
           SET state = 'pending', lease_owner = NULL, lease_until = NULL, next_at = now(),
               attempts = greatest(x.attempts - 1, 0), updated_at = now()
         WHERE x.lease_owner = owner AND x.state = 'delivering'
           AND NOT EXISTS (SELECT 1 FROM unnest(keep_dests, keep_positions) k(d, p)
                            WHERE k.d = x.destination_id AND k.p = x.position)
        RETURNING 1
    )
    SELECT count(*)::integer FROM r
$$;

-- ---------------------------------------------------------------- operators

-- Makes events deliverable again, with their webhook-id unchanged. Every
-- filter is optional (NULL: any). dead_only = false also re-sends events that
-- were delivered (push destinations). Returns how many (event, destination)
-- pairs were scheduled.
CREATE FUNCTION delivery_replay(dest text DEFAULT NULL, ord bigint DEFAULT NULL,
                                since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                                dead_only boolean DEFAULT true,
                                actor text DEFAULT session_user)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer := 0;
    m integer;
    g record;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS replayed (destination_id text, position bigint,
                                              order_id bigint) ON COMMIT DROP;
    WITH r AS (
        UPDATE deliveries x
           SET state = 'pending', attempts = 0, next_at = now(), blocked_by = NULL,
               updated_at = now()
         WHERE x.state = 'dead'
           AND (dest IS NULL OR x.destination_id = dest)
           AND (ord IS NULL OR x.order_id = ord)
           AND (since IS NULL OR x.event_created_at >= since)
           AND (until IS NULL OR x.event_created_at < until)
        RETURNING x.destination_id, x.position, x.order_id
    )
    INSERT INTO replayed SELECT * FROM r;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF NOT dead_only THEN
        WITH r AS (
            INSERT INTO deliveries (destination_id, position, order_id, event_created_at, state)
            SELECT s.destination_id, e.position, e.order_id, e.created_at, 'pending'
              FROM delivery_streams s
              JOIN destinations d ON d.id = s.destination_id AND d.mode = 'push'
              JOIN events e ON e.position > s.start_position AND e.position <= s.position
             WHERE (dest IS NULL OR s.destination_id = dest)
               AND (ord IS NULL OR e.order_id = ord)
               AND (since IS NULL OR e.created_at >= since)
               AND (until IS NULL OR e.created_at < until)
               AND (NOT EXISTS (SELECT 1 FROM subscriptions u WHERE u.destination_id = d.id)
                    OR EXISTS (SELECT 1 FROM subscriptions u
                                WHERE u.destination_id = d.id AND u.event_type = e.type))
            ON CONFLICT (destination_id, position) DO NOTHING
            RETURNING destination_id, position, order_id
        )
        INSERT INTO replayed SELECT * FROM r;
        GET DIAGNOSTICS m = ROW_COUNT;
        n := n + m;
    END IF;
    FOR g IN SELECT DISTINCT destination_id, order_id FROM replayed LOOP
        PERFORM deliveries_reorder(g.destination_id, g.order_id);
    END LOOP;
    INSERT INTO operator_actions (actor, action, destination_id, position, order_id)
    SELECT actor, 'replay', destination_id, position, order_id FROM replayed;
    DROP TABLE replayed;
    IF n > 0 THEN
        PERFORM pg_notify('ordersync_deliveries', '');
    END IF;
    RETURN n;
END;
$$;

-- Gives up on undelivered events (by default the dead ones; `states` may
-- add 'blocked' and 'pending'): they will not be delivered, and the events
-- after them for the same order go on.
CREATE FUNCTION delivery_skip(dest text DEFAULT NULL, ord bigint DEFAULT NULL,
                              since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                              states text[] DEFAULT '{dead}',
                              actor text DEFAULT session_user)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    g record;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS skipped (destination_id text, position bigint,
                                             order_id bigint) ON COMMIT DROP;
    WITH r AS (
        DELETE FROM deliveries x
         WHERE x.state = ANY (states) AND x.state <> 'delivering'
           AND (dest IS NULL OR x.destination_id = dest)
           AND (ord IS NULL OR x.order_id = ord)
           AND (since IS NULL OR x.event_created_at >= since)
           AND (until IS NULL OR x.event_created_at < until)
        RETURNING x.destination_id, x.position, x.order_id
    )
    INSERT INTO skipped SELECT * FROM r;
    GET DIAGNOSTICS n = ROW_COUNT;
    FOR g IN SELECT DISTINCT destination_id, order_id FROM skipped LOOP
        PERFORM deliveries_reorder(g.destination_id, g.order_id);
    END LOOP;
    INSERT INTO operator_actions (actor, action, destination_id, position, order_id)
    SELECT actor, 'skip', destination_id, position, order_id FROM skipped;
    DROP TABLE skipped;
    IF n > 0 THEN
        PERFORM pg_notify('ordersync_deliveries', '');
    END IF;
    RETURN n;
END;
$$;

-- ---------------------------------------------------------------- views

-- One row per (event, destination it is for): the building block of the
-- views below. An event is for a destination when it came after the
-- destination's start and the destination takes its type.
CREATE VIEW event_deliveries AS
SELECT e.position,
       e.id AS event_id,
       e.order_id,
       e.type AS event_type,
       e.created_at,
       s.destination_id,
       CASE WHEN x.state IS NOT NULL THEN x.state
            WHEN e.position <= s.position THEN 'delivered'
            ELSE 'pending' END AS state,
       coalesce(x.attempts, CASE WHEN e.position <= s.position THEN 1 ELSE 0 END) AS attempts,
       x.next_at,
       x.blocked_by,
       x.last_status,
       x.last_error
  FROM events e
  JOIN delivery_streams s ON e.position > s.start_position
  LEFT JOIN deliveries x ON x.destination_id = s.destination_id AND x.position = e.position
 WHERE NOT EXISTS (SELECT 1 FROM subscriptions u WHERE u.destination_id = s.destination_id)
    OR EXISTS (SELECT 1 FROM subscriptions u
                WHERE u.destination_id = s.destination_id AND u.event_type = e.type);

-- One row per order and destination: where that order stands for that system.
-- (Columns up to lag are those of the first version; blocked and
-- blocked_reason were added with the event store.)
CREATE VIEW sync_state AS
SELECT o.id AS order_id,
       o.source_id,
       o.external_id,
       ed.destination_id,
       -- blocked first: the order cannot progress, and blocked_reason says
       -- which event (dead, or still failing) holds it
       CASE
           WHEN bool_or(ed.state = 'blocked') THEN 'blocked'
           WHEN bool_or(ed.state = 'dead') THEN 'dead'
           WHEN bool_or(ed.state = 'delivering') THEN 'delivering'
           WHEN bool_or(ed.state = 'pending' AND ed.attempts > 0) THEN 'retrying'
           WHEN bool_or(ed.state = 'pending') THEN 'pending'
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
       (SELECT max(l.completed_at) FROM delivery_log l
         WHERE l.destination_id = ed.destination_id
           AND l.last_position >= min(ed.position) AND l.first_position <= max(ed.position)
           AND l.positions && array_agg(ed.position)) AS last_delivered_at,
       coalesce(now() - min(ed.created_at) FILTER (WHERE ed.state <> 'delivered'),
                interval '0') AS lag,
       count(*) FILTER (WHERE ed.state = 'blocked') AS blocked,
       (array_agg('waits for event ' || ed.blocked_by || ' (' || coalesce(b.state, 'settled')
                  || ') of the same order' ORDER BY ed.position)
            FILTER (WHERE ed.state = 'blocked'))[1] AS blocked_reason
  FROM orders o
  JOIN event_deliveries ed ON ed.order_id = o.id
  LEFT JOIN deliveries b ON b.destination_id = ed.destination_id AND b.position = ed.blocked_by
 GROUP BY o.id, ed.destination_id;

-- One row per destination: the backlog an operator watches. (Columns up to
-- delivered_last_minute are those of the first version.)
CREATE VIEW sync_backlog AS
SELECT d.id AS destination_id,
       d.mode,
       d.enabled,
       d.paused_until,
       (SELECT count(*) FROM events e
         WHERE e.position > s.position
           AND (NOT EXISTS (SELECT 1 FROM subscriptions u WHERE u.destination_id = d.id)
                OR e.type IN (SELECT u.event_type FROM subscriptions u
                               WHERE u.destination_id = d.id)))
       + (SELECT count(*) FROM deliveries x
           WHERE x.destination_id = d.id AND x.state = 'pending') AS pending,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'pending' AND x.attempts > 0) AS retrying,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'delivering') AS delivering,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'dead') AS dead,
       now() - least((SELECT e.created_at FROM events e
                       WHERE e.position > s.position
                         AND (NOT EXISTS (SELECT 1 FROM subscriptions u
                                           WHERE u.destination_id = d.id)
                              OR e.type IN (SELECT u.event_type FROM subscriptions u
                                             WHERE u.destination_id = d.id))
                       ORDER BY e.position LIMIT 1),
                     (SELECT min(x.event_created_at) FROM deliveries x
                       WHERE x.destination_id = d.id AND x.state <> 'dead'))
           AS oldest_pending_age,
       coalesce((SELECT sum(l.delivered) FROM delivery_log l
                  WHERE l.destination_id = d.id AND l.completed_at > now() - interval '1 minute'),
                0)
       + (SELECT count(*) FROM delivery_attempts a
           WHERE a.destination_id = d.id AND a.started_at > now() - interval '1 minute'
             AND a.http_status BETWEEN 200 AND 299) AS delivered_last_minute,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'blocked') AS blocked,
       d.on_dead,
       s.position AS stream_position,
       s.lease_owner AS delivered_by
  FROM destinations d
  JOIN delivery_streams s ON s.destination_id = d.id;

-- One row per order: is every destination in sync with it?
CREATE VIEW order_sync AS
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
       o.updated_at
  FROM orders o
  LEFT JOIN event_deliveries ed ON ed.order_id = o.id
 GROUP BY o.id;

ALTER FUNCTION delivery_claim(text[], integer[], interval, text) SET jit = off;
ALTER FUNCTION relay_complete(text, jsonb) SET jit = off;
ALTER FUNCTION relay_acquire(text, interval, text[]) SET jit = off;
