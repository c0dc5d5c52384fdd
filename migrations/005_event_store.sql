-- 005_event_store: events in commit order, each payload stored once, narrow
-- delivery state, retention by partition.
--
-- What it replaces and why (measured on the first design):
--   * `outbox` had one wide row per (event, destination), numbered at INSERT.
--     Two ingest connections commit out of id order, so a reader that had
--     passed id N skipped rows committed later below N (feeds lost events).
--     Events now get their position when their transaction is about to
--     commit, under one lock: positions follow commit order.
--   * Each destination got its own copy of the ~1 KB envelope and every claim
--     and completion rewrote that row (15 KB of WAL per order). An event is
--     now one immutable row; a destination's progress is a cursor (one narrow
--     HOT update per round of deliveries), and only deliveries that did not
--     go through at once get a row (`deliveries`).
--   * Claims walked pending rows with a NOT EXISTS per row, slowing 6x with a
--     backlog. A stream reads forward from its cursor; retries come from a
--     small partial index of due rows only.
--   * Pruning deleted 10,000 rows every 20th sweep. Events, inbound webhooks,
--     attempts and the delivery log are now partitioned by time and dropped a
--     partition at a time (event_store_retire).
--
-- Terms used below:
--   position   an event's place in commit order (bigint, gaps allowed)
--   stream     a destination's cursor over the events (`delivery_streams`):
--              every event at or below `position` is delivered, or has a row
--              in `deliveries`
--   deliveries the exceptions: events of a destination that failed, wait
--              behind a failed event of their order (blocked), are dead, or
--              are in flight under a lease; a row leaves when it is delivered

-- ---------------------------------------------------------------- settings

-- Written by ordersync at start from ORDERSYNC_PARTITION_INTERVAL and
-- ORDERSYNC_RETENTION; the functions below read them.
CREATE TABLE event_store_settings (
    id                 boolean PRIMARY KEY DEFAULT true CHECK (id),
    partition_interval interval NOT NULL DEFAULT '1 day' CHECK (partition_interval >= '1 minute'),
    retention          interval NOT NULL DEFAULT '30 days' CHECK (retention >= '1 minute'),
    -- webhooks' dedupe keys outlive the senders' retry windows (Stripe retries
    -- for 3 days), whatever the retention
    dedupe_horizon     interval NOT NULL DEFAULT '7 days' CHECK (dedupe_horizon >= '7 days'),
    -- every managed table has partitions up to here (ingest checks it per batch)
    partitioned_until  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO event_store_settings DEFAULT VALUES;

-- Every partition ordersync made, so that bounds need not be parsed out of the catalog.
CREATE TABLE event_store_partitions (
    parent text NOT NULL,
    name   text NOT NULL UNIQUE,
    lo     timestamptz NOT NULL,
    hi     timestamptz NOT NULL,
    PRIMARY KEY (parent, lo),
    CHECK (lo < hi)
);

-- ---------------------------------------------------------------- events

-- Positions are drawn under pg_advisory_xact_lock(event_store_position_lock())
-- at the very end of the writing transaction, which holds the lock until it
-- has committed (and become visible): a transaction that draws positions
-- after another one commits after it too. CACHE 1 (the default) matters: a
-- cache per backend would hand out interleaved ranges.
CREATE SEQUENCE event_position AS bigint;

CREATE FUNCTION event_store_position_lock() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT 8030591472429660527::bigint $$;  -- "ordersyo"

CREATE TABLE events (
    position   bigint NOT NULL,
    -- sent as webhook-id ("msg_" + hex): receivers dedupe on it
    id         uuid NOT NULL,
    order_id   bigint NOT NULL,
    type       text NOT NULL CHECK (type IN ('order.created', 'order.updated', 'order.paid',
                                             'order.cancelled', 'order.refunded',
                                             'order.fulfilled')),
    created_at timestamptz NOT NULL,
    -- W3C trace id: the shop's, when its webhook carried a traceparent; every
    -- delivery sends it with a span of its own
    trace_id   uuid,
    -- the exact envelope sent, {"type", "timestamp", "data"}: text, not
    -- jsonb, because it is only ever sent as it is
    payload    text NOT NULL
) PARTITION BY RANGE (created_at);
-- MAIN + a low toast_tuple_target (set per partition): compressed inline
-- (lz4, about half the size of the envelope) rather than moved out of line
ALTER TABLE events ALTER COLUMN payload SET STORAGE MAIN;
ALTER TABLE events ALTER COLUMN payload SET COMPRESSION lz4;
CREATE INDEX events_position ON events (position);
CREATE INDEX events_order ON events (order_id);

-- ---------------------------------------------------------------- delivery state

ALTER TABLE destinations ADD COLUMN on_dead text NOT NULL DEFAULT 'block'
    CHECK (on_dead IN ('block', 'skip'));

CREATE TABLE delivery_streams (
    destination_id text PRIMARY KEY REFERENCES destinations (id) ON DELETE CASCADE
                                                                ON UPDATE CASCADE,
    position       bigint NOT NULL,
    -- where the destination started: events at or below were never for it
    start_position bigint NOT NULL,
    -- push destinations: the instance delivering this stream
    lease_owner    text,
    lease_until    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (position >= start_position)
-- no index on position and room on the page: every advance is a HOT update
) WITH (fillfactor = 20);

CREATE TABLE deliveries (
    destination_id   text NOT NULL REFERENCES destinations (id) ON DELETE CASCADE
                                                                ON UPDATE CASCADE,
    position         bigint NOT NULL,
    order_id         bigint NOT NULL,
    -- the event's partition key: lets a claim read the event in one partition
    event_created_at timestamptz NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'delivering', 'blocked', 'dead')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_at          timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_until      timestamptz,
    -- blocked: the position of the earlier event of the same order it waits for
    blocked_by       bigint,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination_id, position),
    CHECK (state <> 'delivering' OR lease_until IS NOT NULL),
    CHECK (state <> 'blocked' OR blocked_by IS NOT NULL)
);
-- is an earlier event of this order still open? (stream reads, promotion)
CREATE INDEX deliveries_order ON deliveries (destination_id, order_id, position);
-- claims read only due rows: backoff and blocked rows cost nothing
CREATE INDEX deliveries_due ON deliveries (destination_id, next_at) WHERE state = 'pending';
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'delivering';
CREATE INDEX deliveries_dead ON deliveries (destination_id) WHERE state = 'dead';

-- The operator's record of HTTP attempts that did not go through at once, and
-- of every retry. A first attempt that succeeded is in delivery_log instead.
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_v4;
CREATE TABLE delivery_attempts (
    destination_id   text NOT NULL,
    position         bigint NOT NULL,
    order_id         bigint NOT NULL,
    attempt          integer NOT NULL CHECK (attempt >= 1),
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL CHECK (duration_ms >= 0),
    http_status      integer,
    error            text,
    response_excerpt text,
    CHECK (http_status IS NOT NULL OR error IS NOT NULL)
) PARTITION BY RANGE (started_at);
CREATE INDEX delivery_attempts_event ON delivery_attempts (destination_id, position);
CREATE INDEX delivery_attempts_order ON delivery_attempts (order_id);

-- Deliveries that succeeded at the first attempt, one row per destination
-- and round: the positions the cursor passed with their status and duration
-- (about 14 bytes each instead of a row each).
CREATE TABLE delivery_log (
    destination_id text NOT NULL,
    first_position bigint NOT NULL,
    last_position  bigint NOT NULL,
    completed_at   timestamptz NOT NULL DEFAULT now(),
    delivered      integer NOT NULL CHECK (delivered > 0),
    positions      bigint[] NOT NULL,
    statuses       smallint[] NOT NULL,
    durations_ms   integer[] NOT NULL,
    CHECK (first_position <= last_position)
) PARTITION BY RANGE (completed_at);
ALTER TABLE delivery_log ALTER COLUMN positions SET STORAGE MAIN;
ALTER TABLE delivery_log ALTER COLUMN positions SET COMPRESSION lz4;
CREATE INDEX delivery_log_position ON delivery_log (destination_id, last_position);

-- Replays and skips by an operator: who, when, what.
CREATE TABLE operator_actions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    action         text NOT NULL CHECK (action IN ('replay', 'skip')),
    destination_id text NOT NULL,
    position       bigint NOT NULL,
    order_id       bigint NOT NULL
);
CREATE INDEX operator_actions_order ON operator_actions (order_id);

-- ---------------------------------------------------------------- inbound

-- Dedupe keys, apart from the payloads: they must outlive the senders' retry
-- windows whatever the retention, and a key must be unique across all of time
-- (a unique index on a partitioned table would have to include the time).
-- Narrow; event_store_prune() deletes old keys in bounded batches.
CREATE TABLE inbound_keys (
    source_id   text NOT NULL,
    dedupe_key  text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, dedupe_key)
);
CREATE INDEX inbound_keys_received ON inbound_keys USING brin (received_at);

ALTER TABLE inbound_events RENAME TO inbound_events_v4;
ALTER INDEX inbound_events_order RENAME TO inbound_events_v4_order;
CREATE SEQUENCE inbound_event_id AS bigint;
CREATE TABLE inbound_events (
    id          bigint NOT NULL DEFAULT nextval('inbound_event_id'),
    source_id   text NOT NULL,
    dedupe_key  text NOT NULL,
    topic       text NOT NULL,
    event_type  text,  -- NULL when the topic is not about orders or the body does not support it
    outcome     text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored')),
    order_id    bigint,
    received_at timestamptz NOT NULL DEFAULT now(),
    trace_id    uuid,
    -- the body as the sender sent it: an audit copy, never parsed again
    payload     text NOT NULL,
    CHECK (outcome = 'ignored' OR event_type IS NOT NULL)
) PARTITION BY RANGE (received_at);
ALTER SEQUENCE inbound_event_id OWNED BY inbound_events.id;
ALTER TABLE inbound_events ALTER COLUMN payload SET STORAGE MAIN;
ALTER TABLE inbound_events ALTER COLUMN payload SET COMPRESSION lz4;
CREATE INDEX inbound_events_order ON inbound_events (order_id) WHERE order_id IS NOT NULL;

-- ---------------------------------------------------------------- orders

-- Inserting an order took a FOR KEY SHARE lock on its `sources` row: with
-- several ingest connections, every order of a shop became a MultiXact on
-- one row. Deleting a source keeps its orders.
ALTER TABLE orders DROP CONSTRAINT orders_source_id_fkey;
-- Hash of the last canonical order applied (without "partial"): an update
-- with the same sender timestamp applies only if its content differs
-- (Shopify's updated_at has 1-second resolution).
ALTER TABLE orders ADD COLUMN content_hash uuid;
-- The canonical document was stored whole in orders.doc and again in every
-- event's envelope. Every field of it has a column but the lines: the lines
-- get one, and order_doc() puts the document together when it is needed (a
-- partial update is merged into it). ~550 bytes less to write per order.
ALTER TABLE orders ADD COLUMN lines jsonb CHECK (lines IS NULL OR jsonb_typeof(lines) = 'array');
CREATE INDEX orders_updated ON orders USING brin (updated_at);
CREATE INDEX orders_email ON orders (lower(customer_email)) WHERE customer_email IS NOT NULL;
CREATE INDEX orders_number ON orders (number) WHERE number IS NOT NULL;

-- ---------------------------------------------------------------- partitions

CREATE FUNCTION event_store_floor(t timestamptz, step interval) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(floor(extract(epoch FROM t) / extract(epoch FROM step))
                        * extract(epoch FROM step))
$$;

-- Creates partitions of every time-partitioned table so that each reaches at
-- least `upto`. Ranges are aligned to the interval (UTC) except a first or a
-- catch-up one. CREATE TABLE (LIKE ...) + ATTACH PARTITION takes only SHARE
-- UPDATE EXCLUSIVE on the parent, so ingest and the relay keep writing.
CREATE FUNCTION event_store_extend(upto timestamptz, at timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    step    interval;
    tbl     text;
    opts    text;
    lo      timestamptz;
    nxt     timestamptz;
    pname   text;
    made    integer := 0;
BEGIN
    -- one creator at a time; the others find the work done
    PERFORM pg_advisory_xact_lock(event_store_position_lock() + 1);
    SELECT partition_interval INTO step FROM event_store_settings;
    FOREACH tbl IN ARRAY ARRAY['events', 'inbound_events', 'delivery_attempts',
                                  'delivery_log'] LOOP
        opts := CASE WHEN tbl = 'delivery_attempts' THEN 'fillfactor = 100'
                     ELSE 'toast_tuple_target = 128' END;
        SELECT max(p.hi) INTO lo FROM event_store_partitions p WHERE p.parent = tbl;
        IF lo IS NULL THEN
            lo := event_store_floor(least(at, upto), step);
        END IF;
        WHILE lo < upto LOOP
            nxt := event_store_floor(lo, step) + step;
            -- after a long stop: one partition for the gap, not one per interval
            IF nxt < event_store_floor(at, step) THEN
                nxt := event_store_floor(at, step);
            END IF;
            pname := format('%s_p%s', tbl, to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MISS'));
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                           ' INCLUDING STORAGE INCLUDING COMPRESSION) WITH (%s)',
                           pname, tbl, opts);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           tbl, pname, lo, nxt);
            INSERT INTO event_store_partitions (parent, name, lo, hi)
            VALUES (tbl, pname, lo, nxt);
            made := made + 1;
            lo := nxt;
        END LOOP;
    END LOOP;
    UPDATE event_store_settings
       SET partitioned_until = (SELECT min(m.hi) FROM (SELECT max(p.hi) AS hi
                                                         FROM event_store_partitions p
                                                        GROUP BY p.parent) m);
    RETURN made;
END;
$$;

-- Called by every writer before it writes (one single-row read): partitions
-- are made ahead by ordersync's maintenance, this only covers a late one.
CREATE FUNCTION event_store_ensure() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    until timestamptz;
    step  interval;
BEGIN
    SELECT partitioned_until, partition_interval INTO until, step FROM event_store_settings;
    IF until <= now() + interval '1 second' THEN
        PERFORM event_store_extend(now() + 3 * step);
    END IF;
END;
$$;

-- Drops partitions past the retention. A partition of `events` goes only
-- when every destination's stream is past its last event and none of its
-- events has an open delivery (pending, delivering, blocked or dead): nothing
-- undelivered is ever dropped. Logs (inbound_events, delivery_attempts,
-- delivery_log) go by age alone. Each drop waits at most 200 ms for its lock
-- (DROP takes ACCESS EXCLUSIVE on the parent, which would stall writers
-- queued behind it); one that times out is tried again next time.
-- Returns one row per partition it looked at.
CREATE FUNCTION event_store_retire(at timestamptz DEFAULT now())
RETURNS TABLE (parent text, name text, lo timestamptz, hi timestamptz, action text)
LANGUAGE plpgsql AS $$
DECLARE
    keep_after timestamptz;
    p          record;
    slowest    bigint;
    last_pos   bigint;
BEGIN
    SELECT at - s.retention INTO keep_after FROM event_store_settings s;
    SELECT min(s.position) INTO slowest FROM delivery_streams s;
    FOR p IN SELECT * FROM event_store_partitions e WHERE e.hi <= keep_after
              ORDER BY e.parent, e.lo LOOP
        parent := p.parent;
        name := p.name;
        lo := p.lo;
        hi := p.hi;
        IF p.parent = 'events' THEN
            EXECUTE format('SELECT max(position) FROM %I', p.name) INTO last_pos;
            IF last_pos IS NOT NULL AND slowest IS NOT NULL AND last_pos > slowest THEN
                action := 'kept: not every destination has read it';
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF EXISTS (SELECT 1 FROM deliveries d
                        WHERE d.event_created_at >= p.lo AND d.event_created_at < p.hi) THEN
                action := 'kept: it holds undelivered events';
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        BEGIN
            SET LOCAL lock_timeout = '200ms';
            EXECUTE format('DROP TABLE %I', p.name);
            DELETE FROM event_store_partitions e WHERE e.name = p.name;
            action := 'dropped';
        EXCEPTION WHEN lock_not_available THEN
            action := 'busy: tried again later';
        END;
        SET LOCAL lock_timeout = 0;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Rows that are not partitioned: dedupe keys past the dedupe horizon, and
-- orders untouched for the retention whose events are all gone. At most
-- `max_rows` of each per call (each call is one short transaction; the
-- maintenance calls it until it returns less). Returns rows deleted.
CREATE FUNCTION event_store_prune(max_rows integer DEFAULT 10000, at timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    s     event_store_settings%ROWTYPE;
    n     integer;
    total integer := 0;
BEGIN
    SELECT * INTO s FROM event_store_settings;
    DELETE FROM inbound_keys k
     WHERE k.ctid = ANY (ARRAY(SELECT ctid FROM inbound_keys
                                WHERE received_at < at - greatest(s.retention, s.dedupe_horizon)
                                LIMIT max_rows));
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM orders o
     WHERE o.id = ANY (ARRAY(SELECT x.id FROM orders x
                              WHERE x.updated_at < at - s.retention
                                AND NOT EXISTS (SELECT 1 FROM events e WHERE e.order_id = x.id)
                              LIMIT max_rows));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN total + n;
END;
$$;

-- ---------------------------------------------------------------- conversion of 004 data

-- Everything before this moment goes into one partition per table; ordersync
-- makes the regular ones from here on.
DO $$
DECLARE
    cut timestamptz := now();
    t   text;
BEGIN
    FOREACH t IN ARRAY ARRAY['events', 'inbound_events', 'delivery_attempts', 'delivery_log'] LOOP
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS'
                       ' INCLUDING STORAGE INCLUDING COMPRESSION)', t || '_p_before_v5', t);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
                       t, t || '_p_before_v5', cut);
        INSERT INTO event_store_partitions (parent, name, lo, hi)
        VALUES (t, t || '_p_before_v5', '-infinity', cut);
    END LOOP;
    UPDATE event_store_settings SET partitioned_until = cut;
END;
$$;

-- An event is the set of outbox rows sharing an event_id; its position is
-- the largest of their ids, so a feed consumer's cursor (an outbox id it was
-- given as "next") keeps its meaning: an event whose row it had not read has
-- a row id above the cursor, hence a position above it too; one it had read
-- may come again (its other destinations' rows came after: at least once,
-- never skipped). The smallest id would put unread events below the cursor.
INSERT INTO events (position, id, order_id, type, created_at, payload)
SELECT max(o.id), o.event_id, min(o.order_id), min(o.event_type), min(o.created_at),
       (array_agg(o.payload::text))[1]
  FROM outbox o
 GROUP BY o.event_id;
SELECT setval('event_position', greatest((SELECT max(id) FROM outbox), 1),
              (SELECT max(id) FROM outbox) IS NOT NULL);

-- Every destination's stream starts past every converted event; what each
-- had not received becomes a row in `deliveries`.
INSERT INTO delivery_streams (destination_id, position, start_position)
SELECT d.id, coalesce((SELECT max(position) FROM events), 0), 0 FROM destinations d;

-- The first undelivered event of an (order, destination) keeps its state;
-- the ones after it wait behind it, as the old claim made them wait.
INSERT INTO deliveries (destination_id, position, order_id, event_created_at, state, attempts,
                        next_at, blocked_by, last_status, last_error)
SELECT r.destination_id, r.position, r.order_id, r.created_at,
       CASE WHEN r.state = 'dead' THEN 'dead'
            WHEN r.prev IS NOT NULL THEN 'blocked'
            ELSE 'pending' END,
       r.attempts, r.next_attempt_at,
       CASE WHEN r.state <> 'dead' THEN r.prev END,
       r.last_status, r.last_error
  FROM (SELECT o.destination_id, e.position, o.order_id, e.created_at, o.state, o.attempts,
               o.next_attempt_at, o.last_status, o.last_error,
               lag(e.position) OVER (PARTITION BY o.destination_id, o.order_id
                                         ORDER BY e.position) AS prev
          FROM outbox o JOIN events e ON e.id = o.event_id
         WHERE o.state <> 'delivered') r;

INSERT INTO delivery_attempts (destination_id, position, order_id, attempt, started_at,
                               duration_ms, http_status, error, response_excerpt)
SELECT a.destination_id, e.position, o.order_id, a.attempt, a.started_at, a.duration_ms,
       a.http_status, a.error, a.response_excerpt
  FROM delivery_attempts_v4 a
  JOIN outbox o ON o.id = a.outbox_id
  JOIN events e ON e.id = o.event_id;

INSERT INTO inbound_keys (source_id, dedupe_key, received_at)
SELECT source_id, dedupe_key, received_at FROM inbound_events_v4;
INSERT INTO inbound_events (id, source_id, dedupe_key, topic, event_type, outcome, order_id,
                            received_at, payload)
SELECT id, source_id, dedupe_key, topic, event_type, outcome, order_id, received_at, payload::text
  FROM inbound_events_v4;
SELECT setval('inbound_event_id', greatest((SELECT max(id) FROM inbound_events_v4), 1),
              (SELECT max(id) FROM inbound_events_v4) IS NOT NULL);

-- The lines were kept twice, as rows and in the document: they move to
-- orders.lines (the document's, else the rows'), and order_lines becomes a
-- view over them with the same name and columns.
UPDATE orders o
   SET lines = CASE WHEN jsonb_typeof(o.doc->'lines') = 'array' THEN o.doc->'lines' ELSE
           (SELECT jsonb_agg(jsonb_build_object('sku', l.sku, 'title', l.title,
                                                'quantity', l.quantity,
                                                'unit_price', l.unit_price::text)
                             ORDER BY l.line_no)
              FROM order_lines l WHERE l.order_id = o.id) END;

DROP VIEW sync_state;
DROP VIEW sync_backlog;
DROP VIEW order_sync;
DROP FUNCTION outbox_claim(text[], integer[], interval, text);
DROP FUNCTION outbox_complete(text, bigint[], text[], integer[], text[], double precision[],
                              double precision[], integer[], text[], integer[]);
DROP FUNCTION outbox_replay(text, bigint, timestamptz, timestamptz, boolean);
DROP TABLE delivery_attempts_v4;
DROP TABLE outbox;
DROP TABLE inbound_events_v4;
DROP TABLE order_lines;
ALTER TABLE orders DROP COLUMN doc;

-- The canonical order (schema/order.schema.json) from its columns.
CREATE FUNCTION order_doc(o orders) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'source', o.source_id, 'external_id', o.external_id, 'number', o.number,
        'status', o.status, 'financial_status', o.financial_status,
        'fulfillment_status', o.fulfillment_status, 'currency', o.currency,
        'total', o.total::text, 'subtotal', o.subtotal::text, 'tax', o.tax::text,
        'shipping', o.shipping::text, 'refunded', o.refunded::text,
        'customer_email', o.customer_email, 'shipping_address', o.shipping_address,
        'lines', coalesce(o.lines, '[]'),
        'created_at', to_char(o.sender_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'updated_at', to_char(o.sender_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
$$;

CREATE VIEW order_lines AS
SELECT o.id AS order_id,
       l.ord::integer AS line_no,
       l.value->>'sku' AS sku,
       l.value->>'title' AS title,
       (l.value->>'quantity')::integer AS quantity,
       (l.value->>'unit_price')::numeric AS unit_price
  FROM orders o
 CROSS JOIN LATERAL jsonb_array_elements(coalesce(o.lines, '[]'))
       WITH ORDINALITY AS l(value, ord);

-- A new destination starts at the current end of the stream: it gets the
-- events committed from now on, as a new outbox row set did.
CREATE FUNCTION destination_stream_start() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_streams (destination_id, position, start_position)
    SELECT NEW.id, p, p FROM (SELECT coalesce(max(position), 0) AS p FROM events) m;
    RETURN NULL;
END;
$$;
CREATE TRIGGER destinations_stream AFTER INSERT ON destinations
    FOR EACH ROW EXECUTE FUNCTION destination_stream_start();

-- Partitions for the next days at the default interval, so that the schema
-- works as soon as it is migrated; ordersync keeps making them ahead.
SELECT event_store_extend(now() + 3 * partition_interval) FROM event_store_settings;
