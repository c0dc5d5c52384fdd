-- 006_ingest: group commit into the event store (005).
--
-- ingest_batch(batch, payloads): every webhook ready in one loop turn, in one
-- statement and so one transaction. `batch` is a JSON array of
--   {"s": source id, "k": dedupe key, "t": sender topic,
--    "e": event type, 'order.sync' (a state read by a poller: the type is
--         derived from what changed) or null (not about orders, or a topic the
--         signed body does not support: recorded, emits nothing),
--    "o": canonical order or null, "tr": W3C trace id (32 hex; absent: a new trace),
--    "p": raw payload (only when `payloads` is NULL)}
-- and payloads[i] is element i's body exactly as received: it is kept as
-- text and never parsed here (it is an audit copy; parsing 5 KB of JSON per
-- order into jsonb and printing it back was a large part of the old
-- function's time).
--
-- Result, one row per element with its index (0-based): outcome ('applied',
-- 'stale', 'ignored', 'duplicate'), the order id, and the events it emitted (0 or 1).
--
-- How it runs:
--  1. every dedupe key in one INSERT: duplicates drop out here;
--  2. the common case set-based: an element that is the only one of its
--     order in the batch and whose order does not exist yet becomes one row
--     of one INSERT into orders and one of inbound_events (an order that
--     exists after all falls through to 3);
--  3. the rest one at a time, in lock order (source, external id, arrival),
--     under the order's row lock: never backwards; equal sender times compare
--     content;
--  4. events last: take the position lock, draw positions, insert. The lock
--     is held until this transaction has committed, so positions follow
--     commit order (see 005). Nothing waits for another lock after it.
-- Nothing here catches errors: when one element fails (it should not: C
-- validated it against the schema), the batch rolls back and ordersync re-runs
-- the elements one per transaction, so one bad request never fails the others.

DROP FUNCTION ingest_batch(jsonb);

CREATE FUNCTION ingest_batch(batch jsonb, payloads text[] DEFAULT NULL)
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
            -- record so the sender stops retrying, emit nothing
            INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome, trace_id,
                                        payload)
            VALUES (el.s, el.v->>'k', el.v->>'t', NULL, 'ignored', (el.v->>'tr')::uuid,
                    CASE WHEN payloads IS NULL THEN (el.v->'p')::text ELSE payloads[el.i] END);
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

-- The poller's pages go through the same function (its elements carry "p").
CREATE OR REPLACE FUNCTION ingest_poll(src text, owner text, batch jsonb, p_last boolean,
                                       p_cursor text, p_etag text, p_last_modified text,
                                       p_requests integer, p_result text, p_error text,
                                       p_run_new integer DEFAULT 0)
RETURNS TABLE (n_orders integer, n_emitted integer)
LANGUAGE plpgsql AS $$
DECLARE
    n_found integer := jsonb_array_length(batch);
    n_new   integer := 0;
BEGIN
    IF n_found > 0 THEN
        SELECT count(*) FILTER (WHERE b.outcome = 'applied') INTO n_new
          FROM ingest_batch(batch) b;
    END IF;
    INSERT INTO source_polls AS p (source_id) VALUES (src) ON CONFLICT DO NOTHING;
    UPDATE source_polls p SET
        orders_found = p.orders_found + n_found,
        orders_new = p.orders_new + n_new,
        requests = p.requests + p_requests
     WHERE p.source_id = src;
    IF p_last THEN
        UPDATE sources
           SET poll_cursor = coalesce(p_cursor, poll_cursor),
               poll_etag = coalesce(p_etag, poll_etag),
               poll_last_modified = coalesce(p_last_modified, poll_last_modified),
               poll_lease_until = NULL, poll_lease_owner = NULL
         WHERE id = src AND poll_lease_owner = owner;
        UPDATE source_polls p SET
            polls = p.polls + 1,
            empty_polls = p.empty_polls + CASE WHEN p_result = 'ok' AND p_run_new + n_new = 0
                                               THEN 1 ELSE 0 END,
            not_modified = p.not_modified + CASE WHEN p_result = 'not_modified' THEN 1 ELSE 0 END,
            rate_limited = p.rate_limited + CASE WHEN p_result = 'rate_limited' THEN 1 ELSE 0 END,
            errors = p.errors + CASE WHEN p_result = 'error' THEN 1 ELSE 0 END,
            last_error = CASE WHEN p_result IN ('error', 'rate_limited') THEN p_error
                              ELSE p.last_error END,
            last_poll_at = now(),
            last_success_at = CASE WHEN p_result IN ('ok', 'not_modified') THEN now()
                                   ELSE p.last_success_at END
         WHERE p.source_id = src;
    END IF;
    n_orders := n_found;
    n_emitted := n_new;
    RETURN NEXT;
END;
$$;
