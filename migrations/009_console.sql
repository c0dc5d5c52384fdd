-- 009_console: what the operator console (services/ordersync/console.c) needs
-- beyond the event store: when secrets last changed, replay and skip of chosen
-- events, and time indexes for its per-minute chart.

-- ---------------------------------------------------------------- secrets

-- The console shows whether a secret is set and when it last changed, never
-- its value. A trigger keeps the time, so that a rotation done with plain
-- SQL (README: "Rotate a secret") is recorded too. NULL: the secret has not
-- changed since this migration (its age is not known).
ALTER TABLE sources ADD COLUMN secret_changed_at timestamptz;
ALTER TABLE destinations ADD COLUMN secret_changed_at timestamptz;
ALTER TABLE destinations ADD COLUMN feed_token_changed_at timestamptz;

CREATE FUNCTION secrets_changed_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.secret_changed_at := CASE WHEN NEW.secret IS NOT NULL THEN now() END;
    ELSIF NEW.secret IS DISTINCT FROM OLD.secret
          OR NEW.previous_secret IS DISTINCT FROM OLD.previous_secret THEN
        NEW.secret_changed_at := now();
    END IF;
    IF TG_TABLE_NAME = 'destinations' THEN
        IF TG_OP = 'INSERT' THEN
            NEW.feed_token_changed_at := CASE WHEN NEW.feed_token IS NOT NULL THEN now() END;
        ELSIF NEW.feed_token IS DISTINCT FROM OLD.feed_token THEN
            NEW.feed_token_changed_at := now();
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
-- UPDATE OF: pollers and the relay update these rows all the time (cursors,
-- leases, failure counters); the trigger runs only when a secret is written.
CREATE TRIGGER sources_secret_changed
    BEFORE INSERT OR UPDATE OF secret, previous_secret ON sources
    FOR EACH ROW EXECUTE FUNCTION secrets_changed_at();
CREATE TRIGGER destinations_secret_changed
    BEFORE INSERT OR UPDATE OF secret, previous_secret, feed_token ON destinations
    FOR EACH ROW EXECUTE FUNCTION secrets_changed_at();

-- ---------------------------------------------------------------- replay and skip of chosen events

-- delivery_replay/delivery_skip (007) select by destination, order and event
-- time; an operator who ticks three rows in the console means exactly those
-- three (two events of one order committed in one transaction share their
-- created_at, so no time window can pick one of them). These take the
-- (destination, position) pairs and otherwise do what those do: the same
-- reordering, the same operator_actions rows, the same wake-up.

-- Makes the listed dead events deliverable again (webhook-id unchanged).
-- Rows that are no longer dead (delivered, replayed or skipped meanwhile)
-- are left alone. Returns how many were scheduled.
CREATE FUNCTION delivery_replay_events(dests text[], positions bigint[], actor text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    g record;
BEGIN
    IF cardinality(dests) IS DISTINCT FROM cardinality(positions) THEN
        RAISE EXCEPTION 'dests and positions differ in length' USING ERRCODE = '22023';
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS replayed (destination_id text, position bigint,
                                              order_id bigint) ON COMMIT DROP;
    WITH r AS (
        UPDATE deliveries x
           SET state = 'pending', attempts = 0, next_at = now(), blocked_by = NULL,
               updated_at = now()
          FROM unnest(dests, positions) AS k(d, p)
         WHERE x.destination_id = k.d AND x.position = k.p AND x.state = 'dead'
        RETURNING x.destination_id, x.position, x.order_id
    )
    INSERT INTO replayed SELECT * FROM r;
    GET DIAGNOSTICS n = ROW_COUNT;
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

-- Gives up on the listed events if they are in one of `states` (never one
-- in flight): they will not be delivered, and the events after them for the
-- same order go on. Returns how many were skipped.
CREATE FUNCTION delivery_skip_events(dests text[], positions bigint[], actor text,
                                     states text[] DEFAULT '{dead,blocked}')
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
    g record;
BEGIN
    IF cardinality(dests) IS DISTINCT FROM cardinality(positions) THEN
        RAISE EXCEPTION 'dests and positions differ in length' USING ERRCODE = '22023';
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS skipped (destination_id text, position bigint,
                                             order_id bigint) ON COMMIT DROP;
    WITH r AS (
        DELETE FROM deliveries x
         USING unnest(dests, positions) AS k(d, p)
         WHERE x.destination_id = k.d AND x.position = k.p
           AND x.state = ANY (states) AND x.state <> 'delivering'
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

-- ---------------------------------------------------------------- the last hour

-- The console's chart counts one destination's deliveries per minute over
-- the last hour. Partition pruning leaves one or two partitions of a day;
-- inside them only these find the last hour's rows without reading the
-- day. BRIN: both tables are appended in time order, so a few pages of
-- index cover millions of rows, and appending costs next to nothing.
CREATE INDEX delivery_log_completed ON delivery_log USING brin (completed_at);
CREATE INDEX delivery_attempts_started ON delivery_attempts USING brin (started_at);
