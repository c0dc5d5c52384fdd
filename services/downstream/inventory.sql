-- downstream inventory: reservations per order and SKU, reserved stock per SKU.
-- Run by `downstream --role inventory` at every start (embedded in the binary,
-- see role.c), so every statement is idempotent: IF NOT EXISTS / OR REPLACE.
--
-- Order key: "<source>:<external_id>", the identity ordersync itself uses
-- (orders are unique by source and external id), so a checker can compare.
-- A line without SKU is reserved as "title:<title>".

CREATE SCHEMA IF NOT EXISTS inventory;

-- Every webhook-id applied: the dedupe key of Standard Webhooks redeliveries.
CREATE TABLE IF NOT EXISTS inventory.messages (
    msg_id      text PRIMARY KEY,
    event_type  text NOT NULL,
    order_key   text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- An order starts 'released' with no lines: reserving from there and from a
-- re-delivered created event is the same code path, so nothing is doubled.
CREATE TABLE IF NOT EXISTS inventory.orders (
    order_key  text PRIMARY KEY,
    order_id   text,
    status     text NOT NULL CHECK (status IN ('reserved', 'released')),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The order's lines by SKU, kept after a release so /state shows what was held.
CREATE TABLE IF NOT EXISTS inventory.reservations (
    order_key text NOT NULL REFERENCES inventory.orders ON DELETE CASCADE,
    sku       text NOT NULL,
    quantity  integer NOT NULL,
    PRIMARY KEY (order_key, sku)
);

-- Sum of the reservations of 'reserved' orders, maintained incrementally as an
-- inventory system keeps its stock levels; /state exposes it as "skus".
CREATE TABLE IF NOT EXISTS inventory.stock (
    sku      text PRIMARY KEY,
    reserved bigint NOT NULL DEFAULT 0
);

-- Adds (sign 1) or removes (sign -1) an order's reservations to/from stock.
-- Rows are upserted in SKU order so two transactions touching the same SKUs
-- lock them in the same order and cannot deadlock.
CREATE OR REPLACE FUNCTION inventory.adjust_stock(k text, sign integer) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO inventory.stock AS s (sku, reserved)
    SELECT r.sku, sign * r.quantity FROM inventory.reservations r
     WHERE r.order_key = k ORDER BY r.sku
    ON CONFLICT (sku) DO UPDATE SET reserved = s.reserved + EXCLUDED.reserved;
$$;

-- Locks the order's row, creating it (released, no lines) when new; returns its status.
CREATE OR REPLACE FUNCTION inventory.lock_order(k text, id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    INSERT INTO inventory.orders (order_key, order_id, status) VALUES (k, id, 'released')
    ON CONFLICT (order_key) DO NOTHING;
    SELECT status INTO STRICT st FROM inventory.orders WHERE order_key = k FOR UPDATE;
    RETURN st;
END;
$$;

CREATE OR REPLACE FUNCTION inventory.apply(p_msg_id text, p_event jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    ev_type text := p_event->>'type';
    d jsonb := p_event->'data';
    k text := (d->>'source') || ':' || (d->>'external_id');
    old_status text;
BEGIN
    IF k IS NULL THEN
        RAISE EXCEPTION 'data.source and data.external_id are required' USING ERRCODE = '22023';
    END IF;
    INSERT INTO inventory.messages (msg_id, event_type, order_key) VALUES (p_msg_id, ev_type, k)
    ON CONFLICT (msg_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    -- An update showing the order cancelled releases as the cancel event would.
    IF ev_type = 'order.cancelled' OR d->>'status' = 'cancelled' THEN
        old_status := inventory.lock_order(k, d->>'id');
        IF old_status = 'reserved' THEN
            PERFORM inventory.adjust_stock(k, -1);
            UPDATE inventory.orders SET status = 'released', updated_at = now()
             WHERE order_key = k;
        END IF;
        RETURN 'applied';
    END IF;

    IF ev_type NOT IN ('order.created', 'order.updated') THEN
        RETURN 'applied'; -- paid, refunded, fulfilled: nothing to reserve or release
    END IF;

    old_status := inventory.lock_order(k, d->>'id');
    IF old_status = 'reserved' THEN
        PERFORM inventory.adjust_stock(k, -1);
    END IF;
    -- A partial order (a thin webhook) may carry no lines: keep the ones we have.
    IF d ? 'lines' AND jsonb_typeof(d->'lines') <> 'null' THEN
        DELETE FROM inventory.reservations WHERE order_key = k;
        INSERT INTO inventory.reservations (order_key, sku, quantity)
        SELECT k, coalesce(nullif(l->>'sku', ''), 'title:' || coalesce(l->>'title', '')),
               sum((l->>'quantity')::integer)
          FROM jsonb_array_elements(d->'lines') AS l
         GROUP BY 2;
    END IF;
    UPDATE inventory.orders SET status = 'reserved', order_id = coalesce(d->>'id', order_id),
                                updated_at = now()
     WHERE order_key = k;
    PERFORM inventory.adjust_stock(k, 1);
    RETURN 'applied';
END;
$$;

-- GET /state: {"orders": {key: {"status", "lines": {sku: qty}}}, "skus": {sku: reserved}}.
-- SKUs whose reservations all went away (0) are left out.
CREATE OR REPLACE FUNCTION inventory.state() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'orders', coalesce((
            SELECT jsonb_object_agg(o.order_key, jsonb_build_object(
                       'status', o.status,
                       'lines', coalesce((SELECT jsonb_object_agg(r.sku, r.quantity)
                                            FROM inventory.reservations r
                                           WHERE r.order_key = o.order_key), '{}')))
              FROM inventory.orders o), '{}'),
        'skus', coalesce((SELECT jsonb_object_agg(s.sku, s.reserved)
                            FROM inventory.stock s WHERE s.reserved <> 0), '{}'));
$$;
