-- downstream shipping: one shipment per order to ship. Run by
-- `downstream --role shipping` at every start (embedded in the binary, see
-- role.c), so every statement is idempotent.
--
-- Order key: "<source>:<external_id>", as in ordersync.
-- pending --(order.fulfilled)--> shipped;  pending --(order.cancelled)--> cancelled.
-- A shipped parcel cannot be recalled by a cancel; a cancelled shipment is
-- never re-created (the primary key on the order: never two shipments).

CREATE SCHEMA IF NOT EXISTS shipping;

-- Every webhook-id applied: the dedupe key of Standard Webhooks redeliveries.
CREATE TABLE IF NOT EXISTS shipping.messages (
    msg_id      text PRIMARY KEY,
    event_type  text NOT NULL,
    order_key   text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS shipping.shipments (
    order_key    text PRIMARY KEY,
    shipment_no  bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    order_id     text,
    status       text NOT NULL CHECK (status IN ('pending', 'shipped', 'cancelled')),
    address      jsonb,
    lines        jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    shipped_at   timestamptz,
    cancelled_at timestamptz
);

CREATE OR REPLACE FUNCTION shipping.apply(p_msg_id text, p_event jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    ev_type text := p_event->>'type';
    d jsonb := p_event->'data';
    k text := (d->>'source') || ':' || (d->>'external_id');
    cur text;
BEGIN
    IF k IS NULL THEN
        RAISE EXCEPTION 'data.source and data.external_id are required' USING ERRCODE = '22023';
    END IF;
    INSERT INTO shipping.messages (msg_id, event_type, order_key) VALUES (p_msg_id, ev_type, k)
    ON CONFLICT (msg_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    SELECT status INTO cur FROM shipping.shipments WHERE order_key = k FOR UPDATE;

    IF ev_type = 'order.cancelled' OR d->>'status' = 'cancelled' THEN
        UPDATE shipping.shipments SET status = 'cancelled', cancelled_at = now()
         WHERE order_key = k AND status = 'pending';
        RETURN 'applied';
    END IF;

    -- Paid, not cancelled (checked above) and something to put in a parcel.
    -- ON CONFLICT covers a concurrent creator; the row lock above covers the rest.
    IF cur IS NULL AND d->>'financial_status' = 'paid'
       AND jsonb_typeof(d->'lines') = 'array' AND jsonb_array_length(d->'lines') > 0 THEN
        INSERT INTO shipping.shipments (order_key, order_id, status, address, lines)
        VALUES (k, d->>'id', 'pending',
                CASE WHEN jsonb_typeof(d->'shipping_address') = 'object'
                     THEN d->'shipping_address' END,
                d->'lines')
        ON CONFLICT (order_key) DO NOTHING;
    END IF;

    -- The event, or an update that shows the order fulfilled (a destination
    -- may not be subscribed to order.fulfilled).
    IF ev_type = 'order.fulfilled' OR d->>'fulfillment_status' = 'fulfilled' THEN
        UPDATE shipping.shipments SET status = 'shipped', shipped_at = now()
         WHERE order_key = k AND status = 'pending';
    END IF;
    RETURN 'applied';
END;
$$;

-- GET /state: {"orders": {key: {"status": "pending"|"shipped"|"cancelled"}}}.
CREATE OR REPLACE FUNCTION shipping.state() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'orders', coalesce((SELECT jsonb_object_agg(s.order_key,
                                                    jsonb_build_object('status', s.status))
                              FROM shipping.shipments s), '{}'));
$$;
