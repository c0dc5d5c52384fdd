-- downstream invoicing: one invoice per paid order, credit notes for refunds
-- and cancellations. Run by `downstream --role invoicing` at every start
-- (embedded in the binary, see role.c), so every statement is idempotent.
--
-- Order key: "<source>:<external_id>", as in ordersync. Amounts stay numeric
-- end to end (never float): money is compared to the cent by the checker.

CREATE SCHEMA IF NOT EXISTS invoicing;

-- Every webhook-id applied: the dedupe key of Standard Webhooks redeliveries.
CREATE TABLE IF NOT EXISTS invoicing.messages (
    msg_id      text PRIMARY KEY,
    event_type  text NOT NULL,
    order_key   text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

-- The primary key on the order is what makes "never two invoices" hold, even
-- for two different events (paid, then updated) both showing the order paid.
CREATE TABLE IF NOT EXISTS invoicing.invoices (
    order_key  text PRIMARY KEY,
    invoice_no bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    order_id   text,
    number     text,
    total      numeric NOT NULL,
    currency   text NOT NULL,
    msg_id     text NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS invoicing.credit_notes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_key  text NOT NULL REFERENCES invoicing.invoices,
    amount     numeric NOT NULL CHECK (amount > 0),
    reason     text NOT NULL CHECK (reason IN ('refund', 'cancel')),
    msg_id     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION invoicing.apply(p_msg_id text, p_event jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    ev_type text := p_event->>'type';
    d jsonb := p_event->'data';
    k text := (d->>'source') || ':' || (d->>'external_id');
    inv invoicing.invoices;
    credited numeric;
    amt numeric;
BEGIN
    IF k IS NULL THEN
        RAISE EXCEPTION 'data.source and data.external_id are required' USING ERRCODE = '22023';
    END IF;
    INSERT INTO invoicing.messages (msg_id, event_type, order_key) VALUES (p_msg_id, ev_type, k)
    ON CONFLICT (msg_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'duplicate';
    END IF;

    -- Any event showing the order paid invoices it once. A refunded order was
    -- paid first, so it is invoiced too (then credited below): the books show
    -- both the sale and its reversal. A missing total or currency fails the
    -- event (400) rather than issuing a wrong invoice.
    IF d->>'financial_status' IN ('paid', 'partially_refunded', 'refunded') THEN
        INSERT INTO invoicing.invoices (order_key, order_id, number, total, currency, msg_id)
        VALUES (k, d->>'id', d->>'number', (d->>'total')::numeric, d->>'currency', p_msg_id)
        ON CONFLICT (order_key) DO NOTHING;
    END IF;

    IF ev_type NOT IN ('order.refunded', 'order.cancelled')
       AND d->>'status' IS DISTINCT FROM 'cancelled'
       AND coalesce((d->>'refunded')::numeric, 0) = 0 THEN
        RETURN 'applied';
    END IF;
    SELECT * INTO inv FROM invoicing.invoices WHERE order_key = k FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'applied'; -- nothing invoiced, nothing to credit
    END IF;
    SELECT coalesce(sum(c.amount), 0) INTO credited
      FROM invoicing.credit_notes c WHERE c.order_key = k;
    -- data.refunded is the running total of refunds: credit only what is new,
    -- and never more than the invoice (a cancel may already have credited all).
    IF ev_type = 'order.cancelled' OR d->>'status' = 'cancelled' THEN
        amt := inv.total - credited;
    ELSE
        amt := least(coalesce((d->>'refunded')::numeric, 0), inv.total) - credited;
    END IF;
    IF amt > 0 THEN
        INSERT INTO invoicing.credit_notes (order_key, amount, reason, msg_id)
        VALUES (k, amt,
                CASE WHEN ev_type = 'order.cancelled' OR d->>'status' = 'cancelled'
                     THEN 'cancel' ELSE 'refund' END, p_msg_id);
    END IF;
    RETURN 'applied';
END;
$$;

-- GET /state: {"orders": {key: {"invoice": {"id", "number", "total", "currency"},
-- "credit_notes": ["10.00", ...]}}}; amounts as decimal strings, notes in issue order.
CREATE OR REPLACE FUNCTION invoicing.state() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'orders', coalesce((
            SELECT jsonb_object_agg(i.order_key, jsonb_build_object(
                       'invoice', jsonb_build_object(
                           'id', 'INV-' || lpad(i.invoice_no::text, 6, '0'),
                           'number', i.number,
                           'total', i.total::text,
                           'currency', i.currency),
                       'credit_notes', coalesce((SELECT jsonb_agg(c.amount::text ORDER BY c.id)
                                                   FROM invoicing.credit_notes c
                                                  WHERE c.order_key = i.order_key), '[]')))
              FROM invoicing.invoices i), '{}'));
$$;
