-- 003_relay: what the relay needs beyond the first schema.

-- Circuit breaker: after breaker_threshold consecutive failures a destination
-- is paused for breaker_pause, then probed with one delivery.
ALTER TABLE destinations ADD COLUMN breaker_pause interval NOT NULL DEFAULT '30 seconds'
    CHECK (breaker_pause >= '1 second');
-- Retry-After hints are honoured up to this much.
ALTER TABLE destinations ADD COLUMN max_retry_after interval NOT NULL DEFAULT '1 hour';

-- Claims: due rows of one destination in commit order, skipping rows whose earlier
-- events for the same order are not delivered yet (ordering per order and
-- destination), and rows another instance holds (SKIP LOCKED).
-- Called once per claim round with every destination that has room.
CREATE FUNCTION outbox_claim(dest_ids text[], limits integer[], lease interval, owner text)
RETURNS TABLE (id bigint, event_id uuid, destination_id text, order_id bigint, attempts integer,
               payload text, age_s double precision)
LANGUAGE sql AS $$
    WITH due AS (
        SELECT c.id
          FROM unnest(dest_ids, limits) AS d(id, lim)
          CROSS JOIN LATERAL (
              SELECT o.id
                FROM outbox o
               WHERE o.destination_id = d.id
                 AND o.state = 'pending'
                 AND o.next_attempt_at <= now()
                 AND NOT EXISTS (SELECT 1 FROM outbox p
                                  WHERE p.order_id = o.order_id
                                    AND p.destination_id = o.destination_id
                                    AND p.id < o.id
                                    AND p.state <> 'delivered')
               ORDER BY o.id
               LIMIT d.lim
               FOR UPDATE SKIP LOCKED) c
    )
    -- = ANY(ARRAY(...)), not a join: the planner cannot see the LIMITs through
    -- the CTE, guesses thousands of rows and would hash-join the whole table
    UPDATE outbox o
       SET state = 'delivering', lease_until = now() + lease, lease_owner = owner,
           attempts = o.attempts + 1
     WHERE o.id = ANY (ARRAY(SELECT id FROM due))
 RETURNING o.id, o.event_id, o.destination_id, o.order_id, o.attempts, o.payload::text,
           extract(epoch FROM now() - o.created_at)::double precision
$$;

-- Results of a round of deliveries, in one statement: the outbox rows move on
-- and every attempt is recorded. Rows whose lease this process lost (it
-- expired and another instance claimed them) are left alone.
CREATE FUNCTION outbox_complete(owner text, ids bigint[], states text[], statuses integer[],
                                errors text[], delays double precision[],
                                started double precision[], durations integer[], excerpts text[],
                                attempt_nos integer[])
RETURNS integer
LANGUAGE sql AS $$
    WITH r AS (
        SELECT * FROM unnest(ids, states, statuses, errors, delays, started, durations, excerpts,
                             attempt_nos)
                 AS r(id, state, status, error, delay, started, duration, excerpt, attempt)
    ), upd AS (
        UPDATE outbox o
           SET state = r.state,
               lease_until = NULL,
               lease_owner = NULL,
               last_status = r.status,
               last_error = r.error,
               delivered_at = CASE WHEN r.state = 'delivered' THEN now() END,
               next_attempt_at = CASE WHEN r.state = 'pending'
                                      THEN now() + make_interval(secs => r.delay)
                                      ELSE o.next_attempt_at END
          FROM r
         -- o.id = ANY(ids) gives the planner an index condition; joined only
         -- on r it may hash the whole outbox (its row estimate for r is a guess)
         WHERE o.id = ANY (ids) AND o.id = r.id AND o.state = 'delivering'
           AND o.lease_owner = owner
     RETURNING o.id, o.destination_id
    ), ins AS (
        INSERT INTO delivery_attempts (outbox_id, destination_id, attempt, started_at, duration_ms,
                                       http_status, error, response_excerpt)
        SELECT r.id, upd.destination_id, r.attempt, to_timestamp(r.started), r.duration, r.status,
               CASE WHEN r.status IS NULL THEN coalesce(r.error, 'unknown error') ELSE r.error END,
               r.excerpt
          FROM r JOIN upd ON upd.id = r.id
        RETURNING 1
    )
    SELECT count(*)::integer FROM ins
$$;

-- Replay: make rows deliverable again, keeping their event id (webhook-id).
-- Every argument is an optional filter (NULL: any).
CREATE FUNCTION outbox_replay(dest text DEFAULT NULL, ord bigint DEFAULT NULL,
                              since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL,
                              dead_only boolean DEFAULT true)
RETURNS integer
LANGUAGE sql AS $$
    WITH r AS (
        UPDATE outbox
           SET state = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL,
               lease_owner = NULL, last_error = NULL, delivered_at = NULL
         WHERE (dest IS NULL OR destination_id = dest)
           AND (ord IS NULL OR order_id = ord)
           AND (since IS NULL OR created_at >= since)
           AND (until IS NULL OR created_at < until)
           AND (CASE WHEN dead_only THEN state = 'dead' ELSE state IN ('dead', 'delivered') END)
        RETURNING 1
    )
    SELECT count(*)::integer FROM r
$$;

-- See ingest_batch: small statements never gain from JIT.
ALTER FUNCTION outbox_claim(text[], integer[], interval, text) SET jit = off;
ALTER FUNCTION outbox_complete(text, bigint[], text[], integer[], text[], double precision[],
                               double precision[], integer[], text[], integer[]) SET jit = off;
