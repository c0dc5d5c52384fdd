-- 002_ingest: the server side of group commit.
--
-- ordersync sends every webhook that became ready in one loop turn as one JSON
-- array to ingest_batch(), in one statement and so in one transaction: one
-- round trip and one fsync for the whole batch. Each element:
--   {"s": source id, "k": dedupe key, "t": sender topic, "e": event type or null
--    (topic not about orders), "o": canonical order or null, "p": raw payload}
-- The result has one row per element, with its index in the array: its outcome ('applied',
-- 'stale', 'ignored', 'duplicate'), the order id and how many outbox rows it made.
--
-- "e" may also be 'order.sync': an order state read by a poller rather than
-- pushed. Its event type is derived here (created for a new order, cancelled
-- or paid when that changed, else updated), and a state we already hold is
-- never emitted again, whichever path brought it first.
--
-- Nothing here catches errors: when one element fails (it should not: C
-- validated it against the schema), the whole batch rolls back and ordersync
-- re-runs each element alone, so one bad request never fails the others.

CREATE FUNCTION ingest_batch(batch jsonb)
RETURNS TABLE (idx integer, outcome text, order_id bigint, emitted integer)
LANGUAGE plpgsql AS $$
DECLARE
    e        jsonb;
    o        jsonb;
    merged   jsonb;
    cur      orders%ROWTYPE;
    src      text;
    ev_type  text;
    ev_at    timestamptz;
    derived  boolean;
    fresh    boolean;
    total    integer := 0;
    -- the enabled destinations and the types each takes ('' = all), read once
    dests    jsonb;
    per_type jsonb;  -- event type -> number of destinations it goes to
    -- outbox rows and order lines are written once per batch, at the end
    ev_orders bigint[] := '{}';
    ev_types  text[] := '{}';
    ev_docs   jsonb[] := '{}';
    lines_of  jsonb := '{}';  -- order id -> its lines (the latest event's)
    stamp    text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
BEGIN
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', d.id,
               'types', coalesce((SELECT string_agg(s.event_type, ',') FROM subscriptions s
                                   WHERE s.destination_id = d.id), ''))), '[]')
      INTO dests FROM destinations d WHERE d.enabled;
    SELECT coalesce(jsonb_object_agg(t.type, t.n), '{}') INTO per_type
      FROM (SELECT ty.type, count(*) AS n
              FROM jsonb_to_recordset(dests) AS d(id text, types text)
              CROSS JOIN unnest(ARRAY['order.created', 'order.updated', 'order.paid',
                                      'order.cancelled', 'order.refunded', 'order.fulfilled'])
                         AS ty(type)
             WHERE d.types = '' OR ty.type = ANY (string_to_array(d.types, ','))
             GROUP BY ty.type) t;

    -- Elements run in lock order (source, order id), so two batches committing
    -- in parallel on two connections never wait for each other in a cycle; the
    -- events of one order keep their arrival order. idx says which is which.
    FOR e, idx IN SELECT a.value, (a.ord - 1)::integer
                    FROM jsonb_array_elements(batch) WITH ORDINALITY AS a(value, ord)
                   ORDER BY a.value->>'s', a.value->'o'->>'external_id', a.ord LOOP
        order_id := NULL;
        emitted := 0;
        src := e->>'s';
        ev_type := e->>'e';
        derived := ev_type = 'order.sync';
        fresh := false;

        IF ev_type IS NULL THEN
            -- not about orders: record it so the sender stops retrying, emit nothing
            INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome, payload)
            VALUES (src, e->>'k', e->>'t', NULL, 'ignored', e->'p')
            ON CONFLICT (source_id, dedupe_key) DO NOTHING;
            outcome := CASE WHEN FOUND THEN 'ignored' ELSE 'duplicate' END;
            RETURN NEXT;
            CONTINUE;
        END IF;

        o := e->'o';
        ev_at := (o->>'updated_at')::timestamptz;

        -- The order row lock serializes every event of one order, across
        -- batches and instances: outbox ids then follow commit order.
        <<find_order>>
        LOOP
            SELECT * INTO cur FROM orders
             WHERE source_id = src AND external_id = o->>'external_id'
               FOR UPDATE;
            EXIT find_order WHEN FOUND;
            IF EXISTS (SELECT 1 FROM inbound_events
                        WHERE source_id = src AND dedupe_key = e->>'k') THEN
                EXIT find_order;  -- a duplicate of an event whose order is gone
            END IF;
            merged := o - 'partial';
            IF ev_type = 'order.cancelled' THEN
                merged := merged || '{"status": "cancelled"}';  -- a cancel may come first
            END IF;
            IF derived THEN
                ev_type := CASE WHEN merged->>'status' = 'cancelled' THEN 'order.cancelled'
                                ELSE 'order.created' END;
            END IF;
            -- a new order is written whole here (one write, not insert + update)
            INSERT INTO orders AS t (source_id, external_id, number, status, financial_status,
                                     fulfillment_status, currency, total, subtotal, tax, shipping,
                                     refunded, customer_email, shipping_address,
                                     sender_created_at, sender_updated_at, last_event_type, doc)
            VALUES (src, o->>'external_id', merged->>'number',
                    coalesce(merged->>'status', 'open'), merged->>'financial_status',
                    merged->>'fulfillment_status', merged->>'currency',
                    (merged->>'total')::numeric, (merged->>'subtotal')::numeric,
                    (merged->>'tax')::numeric, (merged->>'shipping')::numeric,
                    coalesce((merged->>'refunded')::numeric, 0), merged->>'customer_email',
                    CASE WHEN jsonb_typeof(merged->'shipping_address') = 'object'
                         THEN merged->'shipping_address' END,
                    (merged->>'created_at')::timestamptz, ev_at, ev_type, merged)
            ON CONFLICT (source_id, external_id) DO NOTHING
            RETURNING * INTO cur;
            fresh := FOUND;
            EXIT find_order WHEN FOUND;
            -- another transaction created it meanwhile: lock that one
        END LOOP;

        IF derived AND NOT fresh THEN
            ev_type := CASE
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

        INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome, order_id,
                                    payload)
        VALUES (src, e->>'k', e->>'t', ev_type,
                CASE WHEN fresh THEN 'applied'
                     WHEN cur.sender_updated_at > ev_at THEN 'stale'
                     WHEN cur.sender_updated_at = ev_at
                          AND (derived OR cur.last_event_type IS NOT DISTINCT FROM ev_type)
                          THEN 'stale'
                     ELSE 'applied' END,
                cur.id, e->'p')
        ON CONFLICT (source_id, dedupe_key) DO NOTHING;
        IF NOT FOUND THEN
            outcome := 'duplicate';
            order_id := cur.id;
            RETURN NEXT;
            CONTINUE;
        END IF;
        order_id := cur.id;

        -- Never backwards: an event older than what we hold is recorded, not applied.
        -- Equal times apply (Shopify sends orders/paid and orders/updated with one
        -- updated_at), unless it is the same event again through another path.
        IF NOT fresh AND (cur.sender_updated_at > ev_at
           OR (cur.sender_updated_at = ev_at
               AND (derived OR cur.last_event_type IS NOT DISTINCT FROM ev_type))) THEN
            outcome := 'stale';
            RETURN NEXT;
            CONTINUE;
        END IF;

        IF fresh THEN
            merged := cur.doc;
        ELSIF cur.doc IS NOT NULL AND cur.doc ? 'external_id' AND (o->>'partial')::boolean THEN
            merged := cur.doc || (o - 'partial');
        ELSE
            merged := o - 'partial';
        END IF;
        IF ev_type = 'order.cancelled' THEN
            merged := merged || '{"status": "cancelled"}';
        END IF;

        IF NOT fresh THEN
            -- the same columns as the INSERT above, from the merged document
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
                last_event_type    = ev_type,
                doc                = merged,
                updated_at         = now()
            WHERE id = cur.id;
        END IF;

        -- a partial event without lines keeps the lines we have
        IF o ? 'lines' THEN
            IF NOT fresh THEN
                DELETE FROM order_lines WHERE order_lines.order_id = cur.id;
            END IF;
            lines_of := lines_of || jsonb_build_object(cur.id::text, o->'lines');
        END IF;

        ev_orders := ev_orders || cur.id;
        ev_types := ev_types || ev_type;
        ev_docs := ev_docs || (merged || jsonb_build_object('id', cur.id::text));
        emitted := coalesce((per_type->>ev_type)::integer, 0);
        total := total + emitted;
        outcome := 'applied';
        RETURN NEXT;
    END LOOP;

    -- Set-based tail: one INSERT for every line and one for every outbox row of
    -- the batch (per-row statements cost more than the rows). Outbox ids are
    -- drawn in event order, and each order's row lock is held until commit, so
    -- ids still follow commit order per order.
    INSERT INTO order_lines (order_id, line_no, sku, title, quantity, unit_price)
    SELECT o.key::bigint, l.ord::integer, l.value->>'sku', l.value->>'title',
           (l.value->>'quantity')::integer, (l.value->>'unit_price')::numeric
      FROM jsonb_each(lines_of) AS o(key, value)
      CROSS JOIN LATERAL jsonb_array_elements(o.value) WITH ORDINALITY AS l(value, ord);

    INSERT INTO outbox (event_id, order_id, destination_id, event_type, payload)
    SELECT ev.eid, ev.oid, d.id, ev.typ,
           jsonb_build_object('type', ev.typ, 'timestamp', stamp, 'data', ev.doc)
      FROM (SELECT u.oid, u.typ, u.doc, u.n, gen_random_uuid() AS eid
              FROM unnest(ev_orders, ev_types, ev_docs) WITH ORDINALITY AS u(oid, typ, doc, n)) ev
      JOIN jsonb_to_recordset(dests) AS d(id text, types text)
        ON d.types = '' OR ev.typ = ANY (string_to_array(d.types, ','))
     ORDER BY ev.n, d.id;

    -- Other instances' relays learn about new rows here; the local relay is
    -- woken in-process. One NOTIFY per batch: NOTIFY serializes commits.
    IF total > 0 THEN
        PERFORM pg_notify('ordersync_outbox', '');
    END IF;
END;
$$;

-- Sources and destinations are edited with SQL; running instances reload them
-- when told (and on a timer, should a notification be missed).
CREATE FUNCTION notify_config_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ordersync_config', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER sources_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sources
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();
-- the relay itself updates failure counters and pauses: those columns don't notify
CREATE TRIGGER destinations_changed
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF id, mode, url, secret, previous_secret, feed_token, timeout_ms, max_in_flight,
                    retry_schedule, max_attempts, retry_window, breaker_threshold, enabled
    ON destinations
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();
CREATE TRIGGER subscriptions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();

-- JIT compiles a plan in tens of milliseconds: a loss for statements that
-- touch a few rows, which the planner cannot always tell from its estimates.
ALTER FUNCTION ingest_batch(jsonb) SET jit = off;
