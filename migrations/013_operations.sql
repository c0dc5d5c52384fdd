-- 013_operations: dedupe keys kept only as long as each sender retries, and
-- 16 bytes each; retention that detaches a partition before dropping it;
-- sync_backlog.pending at a cost that does not grow with the backlog.
--
-- Written for rolling upgrades (README: Upgrading): the previous release
-- keeps running beside this schema. It calls ingest_batch(jsonb, text[]),
-- event_store_retire() and event_store_prune(integer) with the signatures of
-- 006 and 005; they keep them. Nothing it reads is renamed or dropped:
-- inbound_keys stays (read for the keys written before this migration, then
-- empty once they expire) and goes in a later release. Every statement below
-- that takes a lock writers wait for comes last, in the order ingest takes
-- the same locks (inbound_keys, then events), so that the migration holds
-- ingest for the few milliseconds before its COMMIT and cannot deadlock with
-- a batch; `ordersync migrate` runs it under a lock_timeout and retries.

-- ---------------------------------------------------------------- dedupe windows

-- How long a source's dedupe keys are kept: NULL = the default of its kind.
ALTER TABLE sources ADD COLUMN dedupe_window interval
    CHECK (dedupe_window IS NULL OR dedupe_window BETWEEN '1 minute' AND '400 days');

-- A key must outlive every retry of its webhook. From each platform's
-- documented retry policy, with margin:
--   shopify      "Webhooks will now be retried a total of 8 times over 4 hours
--                using an exponential backoff schedule" (shopify.dev changelog,
--                "Updates to webhook retry mechanism", 2024-09-10). 1 day.
--   stripe       "In live mode, Stripe attempts to deliver a given event to your
--                webhook endpoint for up to 3 days with an exponential back off"
--                (docs.stripe.com/webhooks, "Retry behavior"; sandbox: three
--                times over a few hours). 4 days.
--   standard     the Standard Webhooks specification's example schedule ends
--                75 h 35 min after the first attempt (spec/standard-webhooks.md,
--                "Deliverability and reliability"); Svix, which wrote it, retries
--                the same way. 4 days.
--   woocommerce  never retries a failed delivery: after 5 failures in a row it
--                disables the webhook (woocommerce docs, "Working with Webhooks
--                in WooCommerce"). Its key is the order's id and modification
--                time (or the body's hash), so a copy that comes later anyway (a
--                reconciliation poll) carries a state the order already has and
--                is answered "stale" without a key. 1 day covers a daily
--                reconcile_interval.
-- A sender's manual resend (a dashboard's "Resend") after the window is the
-- same: its order's timestamp and content hash make it "stale", not a new event.
CREATE FUNCTION dedupe_window_default(kind text) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE kind WHEN 'shopify' THEN interval '1 day'
                     WHEN 'stripe' THEN interval '4 days'
                     WHEN 'standard' THEN interval '4 days'
                     WHEN 'woocommerce' THEN interval '1 day'
                     ELSE interval '7 days' END
$$;

-- A dedupe key as stored: the first 16 bytes of SHA-256 over the source id
-- (length-prefixed, so that no two (source, key) pairs make the same text)
-- and the sender's key. 2^-128 per pair: a false duplicate is not expected
-- in the life of the universe, so idempotency stays exact.
CREATE FUNCTION dedupe_digest(source_id text, dedupe_key text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(substring(sha256(convert_to(length(source_id) || ':' || source_id
                                              || dedupe_key, 'UTF8')) FROM 1 FOR 16),
                  'hex')::uuid
$$;

-- One row per key seen: 16 bytes of digest and when it may go. Measured at
-- about 94 bytes per key with its index (BENCHMARKS.md), against 173 for
-- inbound_keys (source id and key as text). No row may be smaller: 24 bytes
-- of tuple header and 4 of line pointer come with any row, and a unique index
-- entry takes 28 more before page slack. Only many keys per row would go
-- lower, and the two ways measured (scripts/bench-operations --only designs)
-- are not kept: under a GIN index (58 bytes a key) the index never removes
-- an entry, so it grows by a window's keys every window (84 bytes after
-- one); buckets of keys rewritten in place (38 bytes, twice the WAL per key)
-- need a bucket count that grows with the volume, and lock their rows in an
-- order the previous release's trigger (below) does not follow, so old and
-- new batches could deadlock during a rolling upgrade. The unique index
-- also leaves "exactly one of two concurrent copies wins" to PostgreSQL.
CREATE TABLE dedupe_keys (
    digest     uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL
) WITH (fillfactor = 100);
-- rows arrive in time order and go in time order (event_store_prune)
CREATE INDEX dedupe_keys_expires ON dedupe_keys USING brin (expires_at);

-- Step 1 of ingest_batch: which elements of a batch (1-based indexes) carry a
-- key not seen before. A key twice in one batch: the first wins. Keys are
-- taken in digest order, so two batches with common keys never deadlock; a
-- batch waits for one in flight with the same key and then sees it. Keys
-- written before this migration (inbound_keys, source and key in clear) count
-- until they expire.
CREATE FUNCTION ingest_dedupe(batch jsonb) RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    fresh integer[];
BEGIN
    WITH el AS (
        SELECT a.ord::integer AS i, a.value->>'s' AS s, a.value->>'k' AS k,
               dedupe_digest(a.value->>'s', a.value->>'k') AS dg
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS a(value, ord)
    ), keys AS (
        INSERT INTO dedupe_keys (digest, expires_at)
        SELECT DISTINCT ON (el.dg) el.dg,
               now() + coalesce(src.dedupe_window, dedupe_window_default(src.kind))
          FROM el LEFT JOIN sources src ON src.id = el.s
         ORDER BY el.dg
        ON CONFLICT DO NOTHING
        RETURNING digest
    )
    SELECT coalesce(array_agg(f.i), '{}') INTO fresh
      FROM (SELECT DISTINCT ON (el.dg) el.i, el.s, el.k
              FROM el JOIN keys ON keys.digest = el.dg
             ORDER BY el.dg, el.i) f
     WHERE NOT EXISTS (SELECT 1 FROM inbound_keys l
                        WHERE l.source_id = f.s AND l.dedupe_key = f.k);
    RETURN fresh;
END;
$$;
-- by index whatever the plan was made on (011), and so no JIT: the cost
-- enable_seqscan = off adds would have every statement compiled (250-450 ms)
ALTER FUNCTION ingest_dedupe(jsonb) SET enable_seqscan = off SET jit = off;

-- A batch of the previous release that was already running when this
-- migration committed still writes its key into inbound_keys: the key goes
-- into dedupe_keys too, through the same unique index as every new batch, so
-- that a copy of that webhook in a batch of this release is a duplicate (and
-- the other way round: a key this release has already taken makes the old
-- batch's insert a no-op, which it reports as a duplicate).
CREATE FUNCTION inbound_keys_digest() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dedupe_keys (digest, expires_at)
    SELECT dedupe_digest(NEW.source_id, NEW.dedupe_key),
           now() + coalesce((SELECT coalesce(s.dedupe_window, dedupe_window_default(s.kind))
                               FROM sources s WHERE s.id = NEW.source_id), interval '7 days')
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END;
$$;

-- ---------------------------------------------------------------- pending, counted cheaply

-- The event types, in the order of event_counts.counts.
CREATE FUNCTION event_store_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['order.created', 'order.updated', 'order.paid', 'order.cancelled',
                 'order.refunded', 'order.fulfilled']
$$;

-- Checkpoints of how many events of each type there are up to a position,
-- every 1,024 positions or so: counting the events between two positions is
-- then the difference of two checkpoints, corrected by the few events between
-- each position and its nearest checkpoint (at most about one spacing plus
-- one batch). Counts are relative (the first checkpoint is 0 at the position
-- where counting began), so only differences mean anything.
CREATE TABLE event_counts (
    position bigint PRIMARY KEY,
    counts   bigint[] NOT NULL
);

-- Events per type in (lo, hi], in event_store_types() order. Bounded ranges
-- only (see event_counts_at). PL/pgSQL for its cached plan: a SQL function
-- called this way is planned at each call, ten times the cost of the count.
CREATE FUNCTION event_counts_between(lo bigint, hi bigint) RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    out bigint[];
BEGIN
    SELECT array_agg(coalesce(n.n, 0) ORDER BY t.i) INTO out
      FROM generate_series(1, cardinality(event_store_types())) t(i)
      LEFT JOIN (SELECT array_position(event_store_types(), e.type) AS i, count(*) AS n
                   FROM events e WHERE e.position > lo AND e.position <= hi
                  GROUP BY 1) n ON n.i = t.i;
    RETURN out;
END;
$$;
ALTER FUNCTION event_counts_between(bigint, bigint) SET enable_seqscan = off SET jit = off;

-- The (relative) count of events of each type at or below position p, NULL
-- before the first checkpoint. From the checkpoint just above p when there is
-- one: the events counted between are above p, and retention drops only
-- events below every destination's cursor, so none of them is gone. Else
-- (p past the last checkpoint) from the last one.
CREATE FUNCTION event_counts_at(p bigint) RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    c   record;
    d   bigint[];
    out bigint[] := '{}';
    i   integer;
BEGIN
    SELECT k.position, k.counts INTO c FROM event_counts k
     WHERE k.position >= p ORDER BY k.position LIMIT 1;
    IF FOUND THEN
        d := event_counts_between(p, c.position);
        FOR i IN 1 .. cardinality(d) LOOP
            out := out || (coalesce(c.counts[i], 0) - d[i]);
        END LOOP;
        RETURN out;
    END IF;
    SELECT k.position, k.counts INTO c FROM event_counts k ORDER BY k.position DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    d := event_counts_between(c.position, p);
    FOR i IN 1 .. cardinality(d) LOOP
        out := out || (coalesce(c.counts[i], 0) + d[i]);
    END LOOP;
    RETURN out;
END;
$$;
ALTER FUNCTION event_counts_at(bigint) SET enable_seqscan = off SET jit = off;

-- Events committed after position `after` of the given types (NULL: every
-- type): a destination's unread events. A few index reads, whatever the
-- number (sync_backlog.pending; 1M pending read in about 1 ms instead of a
-- second, BENCHMARKS.md).
CREATE FUNCTION stream_unread(after bigint, types text[] DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    h     bigint;
    a     bigint[];
    b     bigint[];
    known text[] := event_store_types();
    n     bigint := 0;
    i     integer;
BEGIN
    SELECT max(e.position) INTO h FROM events e;
    IF h IS NULL OR h <= after THEN
        RETURN 0;
    END IF;
    a := event_counts_at(after);
    b := event_counts_at(h);
    IF a IS NULL OR b IS NULL THEN
        RETURN (SELECT count(*) FROM events e
                 WHERE e.position > after AND (types IS NULL OR e.type = ANY (types)));
    END IF;
    FOR i IN 1 .. cardinality(known) LOOP
        IF types IS NULL OR known[i] = ANY (types) THEN
            n := n + b[i] - a[i];
        END IF;
    END LOOP;
    RETURN n;
END;
$$;
ALTER FUNCTION stream_unread(bigint, text[]) SET enable_seqscan = off SET jit = off;

-- When the first event after position `after` of the given types (NULL:
-- every type) was committed; NULL when there is none. A function, like
-- stream_unread, so that sync_backlog's plan is small: planned inline, the
-- estimate of this read over every partition put the view above
-- jit_above_cost, and compiling it took 200-400 ms of every read.
CREATE FUNCTION stream_first_unread(after bigint, types text[] DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t timestamptz;
BEGIN
    SELECT e.created_at INTO t FROM events e
     WHERE e.position > after AND (types IS NULL OR e.type = ANY (types))
     ORDER BY e.position LIMIT 1;
    RETURN t;
END;
$$;
ALTER FUNCTION stream_first_unread(bigint, text[]) SET enable_seqscan = off SET jit = off;

-- After each INSERT into events: a new checkpoint once 1,024 positions have
-- passed since the last. It runs in the writing transaction, under the
-- position lock (006), so every position below the new one has committed and
-- the count is final; about a millisecond once per thousand events. The
-- rest of the time it costs two reads of a page each, inside the lock that
-- orders every commit: the sequence's last value (under the lock, the last
-- position this transaction drew) rather than max(position), which reads
-- every partition's index.
CREATE FUNCTION event_counts_checkpoint() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    hi   bigint;
    last bigint;
BEGIN
    hi := pg_sequence_last_value('event_position');
    SELECT max(k.position) INTO last FROM event_counts k;
    IF hi IS NOT NULL AND last IS NULL THEN
        -- none (the table was emptied): counting starts again here
        INSERT INTO event_counts (position, counts)
        VALUES (hi, array_fill(0::bigint, ARRAY[cardinality(event_store_types())]))
        ON CONFLICT DO NOTHING;
    ELSIF hi >= last + 1024 THEN
        INSERT INTO event_counts (position, counts)
        VALUES (hi, event_counts_at(hi))
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;
ALTER FUNCTION event_counts_checkpoint() SET enable_seqscan = off SET jit = off;

-- ---------------------------------------------------------------- retention without a lock on the parent

-- What a maintenance round does with each partition past the retention
-- (maintain.c runs the statements: DETACH ... CONCURRENTLY cannot run in a
-- function or a transaction). The rules of event_store_retire (005) decide
-- which may go; then, instead of DROP TABLE, which takes an ACCESS EXCLUSIVE
-- lock on the parent and stalled ingest for 100-250 ms at each drop in the
-- soak, the partition is detached concurrently (SHARE UPDATE EXCLUSIVE on the
-- parent: writers and readers go on) and dropped once it is a table of its
-- own (event_store_drop_detached). `action`:
--   detach    run `statement` (DETACH CONCURRENTLY), then event_store_drop_detached(name)
--   finalize  a detach was interrupted (a crash, a lock_timeout): the partition
--             is "detach pending" and takes no rows; run `statement`
--             (DETACH ... FINALIZE), then event_store_drop_detached(name)
--   drop      already detached, not dropped yet: event_store_drop_detached(name)
--   kept: ... not yet, and why
CREATE FUNCTION event_store_retirable(at timestamptz DEFAULT now())
RETURNS TABLE (parent text, name text, lo timestamptz, hi timestamptz, action text,
               statement text)
LANGUAGE plpgsql AS $$
DECLARE
    keep_after timestamptz;
    p          record;
    slowest    bigint;
    last_pos   bigint;
BEGIN
    SELECT at - s.retention INTO keep_after FROM event_store_settings s;
    SELECT min(s.position) INTO slowest FROM delivery_streams s;
    FOR p IN SELECT e.parent, e.name, e.lo, e.hi, i.inhdetachpending AS pending,
                    i.inhrelid IS NOT NULL AS attached
               FROM event_store_partitions e
               LEFT JOIN pg_inherits i ON i.inhrelid = to_regclass(quote_ident(e.name))
              ORDER BY e.parent, e.lo LOOP
        parent := p.parent;
        name := p.name;
        lo := p.lo;
        hi := p.hi;
        statement := NULL;
        IF p.attached AND p.pending THEN
            -- whatever its age: nothing can be written to it any more
            action := 'finalize';
            statement := format('ALTER TABLE %I DETACH PARTITION %I FINALIZE', p.parent, p.name);
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF NOT p.attached THEN
            action := 'drop';
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF p.hi > keep_after THEN
            CONTINUE;
        END IF;
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
        action := 'detach';
        statement := format('ALTER TABLE %I DETACH PARTITION %I CONCURRENTLY', p.parent, p.name);
        RETURN NEXT;
    END LOOP;
END;
$$;

-- Drops a partition that has been detached (a table of its own now: only it
-- is locked). An events partition that got an open delivery between the
-- check and the detach (an operator's replay of delivered events) is
-- attached again instead: nothing undelivered is ever dropped. One row, with
-- `action` 'dropped', 'attached again: it holds undelivered events', 'busy:
-- tried again later' (someone reads the table), or 'still a partition' (the
-- detach did not happen).
CREATE FUNCTION event_store_drop_detached(pname text)
RETURNS TABLE (parent text, name text, lo timestamptz, hi timestamptz, action text)
LANGUAGE plpgsql AS $$
DECLARE
    p record;
BEGIN
    SELECT * INTO p FROM event_store_partitions e WHERE e.name = pname;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    parent := p.parent;
    name := p.name;
    lo := p.lo;
    hi := p.hi;
    IF to_regclass(quote_ident(p.name)) IS NULL THEN
        -- dropped by another instance's (or the previous release's) round
        DELETE FROM event_store_partitions e WHERE e.name = p.name;
        action := 'dropped';
        RETURN NEXT;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = to_regclass(quote_ident(p.name))) THEN
        action := 'still a partition';
        RETURN NEXT;
        RETURN;
    END IF;
    BEGIN
        SET LOCAL lock_timeout = '1s';
        IF p.parent = 'events'
           AND EXISTS (SELECT 1 FROM deliveries d
                        WHERE d.event_created_at >= p.lo AND d.event_created_at < p.hi) THEN
            -- the CHECK constraint the detach left spares the attach a scan
            EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           p.name, p.lo, p.hi);
            action := 'attached again: it holds undelivered events';
        ELSE
            EXECUTE format('DROP TABLE %I', p.name);
            DELETE FROM event_store_partitions e WHERE e.name = p.name;
            action := 'dropped';
        END IF;
    EXCEPTION WHEN lock_not_available THEN
        action := 'busy: tried again later';
    END;
    SET LOCAL lock_timeout = 0;
    RETURN NEXT;
END;
$$;

-- 005's, plus: dedupe keys past their source's window, and checkpoints of
-- event_counts no cursor needs (below every destination's cursor but the
-- last one). inbound_keys goes as before (keys of the previous release).
CREATE OR REPLACE FUNCTION event_store_prune(max_rows integer DEFAULT 10000,
                                             at timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    s     event_store_settings%ROWTYPE;
    n     integer;
    total integer := 0;
BEGIN
    SELECT * INTO s FROM event_store_settings;
    DELETE FROM dedupe_keys k
     WHERE k.ctid = ANY (ARRAY(SELECT x.ctid FROM dedupe_keys x
                                WHERE x.expires_at < at LIMIT max_rows));
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
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
    total := total + n;
    DELETE FROM event_counts k
     WHERE k.position < (SELECT min(st.position) FROM delivery_streams st)
       AND k.position < (SELECT max(x.position) FROM event_counts x);
    RETURN total;
END;
$$;

-- ---------------------------------------------------------------- sync_backlog

-- 008's columns, same names, types and order. Changed:
--   pending             unread events counted with event_counts (stream_unread),
--                       not one by one: a few milliseconds at 1M pending
--   oldest_pending_age  the age of the oldest of what `pending` counts: unread
--                       events and rows waiting for a first or next attempt.
--                       Blocked rows (and rows in flight) no longer count: it read
--                       4 s with pending 0 and blocked 1. NULL when pending is 0.
-- The rows come from a function, planned without JIT: planned inline, the
-- view's estimate (per destination, a dozen reads over every partition,
-- times the default row count of a table never analyzed, as `destinations`
-- with three rows is) was above jit_above_cost, and compiling it cost
-- 200-400 ms of every read. SECURITY DEFINER, as a view reads its tables
-- with its owner's rights: whoever may read the view needs no right on the
-- tables behind it (`destinations` holds secrets, `events` payloads).
CREATE FUNCTION sync_backlog_rows()
RETURNS TABLE (destination_id text, mode text, enabled boolean, paused_until timestamptz,
               pending bigint, retrying bigint, delivering bigint, dead bigint,
               oldest_pending_age interval, delivered_last_minute bigint, blocked bigint,
               on_dead text, stream_position bigint, delivered_by text,
               rate_limit_per_s numeric, rate_limited boolean, header_names text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10 AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT d.id,
           d.mode,
           d.enabled,
           d.paused_until,
           stream_unread(s.position, t.types)
           + (SELECT count(*) FROM deliveries x
               WHERE x.destination_id = d.id AND x.state = 'pending'),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'pending' AND x.attempts > 0),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'delivering'),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'dead'),
           now() - least(stream_first_unread(s.position, t.types),
                         (SELECT x.event_created_at FROM deliveries x
                           WHERE x.destination_id = d.id AND x.state = 'pending'
                           ORDER BY x.position LIMIT 1)),
           coalesce((SELECT sum(l.delivered) FROM delivery_log l
                      WHERE l.destination_id = d.id
                        AND l.completed_at > now() - interval '1 minute'), 0)
           + (SELECT count(*) FROM delivery_attempts a
               WHERE a.destination_id = d.id AND a.started_at > now() - interval '1 minute'
                 AND a.http_status BETWEEN 200 AND 299),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'blocked'),
           d.on_dead,
           s.position,
           s.lease_owner,
           d.rate_limit_per_s,
           coalesce(d.rate_limit_per_s IS NOT NULL AND s.limited_until > now(), false),
           ARRAY(SELECT k FROM jsonb_object_keys(d.headers) k ORDER BY k)
      FROM destinations d
      JOIN delivery_streams s ON s.destination_id = d.id
     CROSS JOIN LATERAL (SELECT array_agg(u.event_type) AS types FROM subscriptions u
                          WHERE u.destination_id = d.id) t
     ORDER BY d.id;
END;
$$;
-- the schema's objects whatever the caller's search_path (a SECURITY DEFINER rule)
ALTER FUNCTION sync_backlog_rows() SET search_path FROM CURRENT;
ALTER FUNCTION sync_backlog_rows() SET jit = off;

CREATE OR REPLACE VIEW sync_backlog AS
SELECT * FROM sync_backlog_rows();

-- ---------------------------------------------------------------- ingest_batch

-- 012's (006's, with ignored webhooks linked to their order), with step 1
-- (dedupe keys) done by ingest_dedupe(): 16-byte digests in dedupe_keys, kept
-- for the source's window. Nothing else changes.
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

    -- 1. Dedupe keys (ingest_dedupe, above).
    new_keys := ingest_dedupe(batch);

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
-- (CREATE OR REPLACE resets a function's settings: 006's and 011's again)
ALTER FUNCTION ingest_batch(jsonb, text[]) SET jit = off;
ALTER FUNCTION ingest_batch(jsonb, text[]) SET enable_seqscan = off;

-- ---------------------------------------------------------------- last: the locks writers wait for

-- Ingest's order: inbound_keys (step 1), then events (step 4). CREATE TRIGGER
-- waits for the batches in flight that wrote to the table and holds new ones
-- until COMMIT, a few milliseconds from here.
CREATE TRIGGER inbound_keys_digest BEFORE INSERT ON inbound_keys
    FOR EACH ROW EXECUTE FUNCTION inbound_keys_digest();
CREATE TRIGGER events_counts AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION event_counts_checkpoint();
-- Counting starts here. With writers to events held by the trigger's lock,
-- every position up to the last one drawn has committed.
INSERT INTO event_counts (position, counts)
SELECT coalesce(max(position), 0), array_fill(0::bigint, ARRAY[cardinality(event_store_types())])
  FROM events;
