-- 001_init: the first schema of ordersync (DESIGN.md §3).
-- Applied by `ordersync migrate` in one transaction; never edit an applied
-- migration (its checksum is recorded): add a new numbered file instead.

-- Shops and other senders. `id` is the path segment in POST /webhooks/{id}.
CREATE TABLE sources (
    id                 text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    kind               text NOT NULL CHECK (kind IN ('shopify', 'woocommerce', 'stripe', 'standard')),
    secret             text,
    -- during a rotation both secrets verify; clear it when the sender has switched
    previous_secret    text,
    tolerance_s        integer NOT NULL DEFAULT 300 CHECK (tolerance_s BETWEEN 1 AND 86400),
    mode               text NOT NULL DEFAULT 'push' CHECK (mode IN ('push', 'poll')),
    poll_url           text,
    poll_interval      interval NOT NULL DEFAULT '60 seconds' CHECK (poll_interval >= '1 second'),
    poll_auth_header   text,  -- e.g. 'X-Shopify-Access-Token: shpat_...'
    poll_cursor        text,
    poll_etag          text,
    poll_last_modified text,
    -- a push source may also be polled now and then to catch webhooks the sender never retried
    reconcile_interval interval,
    enabled            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (mode = 'poll' OR secret IS NOT NULL),
    CHECK (mode = 'push' OR poll_url IS NOT NULL),
    CHECK (reconcile_interval IS NULL OR poll_url IS NOT NULL)
);

-- Downstream systems: inventory, invoicing, shipping, ...
CREATE TABLE destinations (
    id                   text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    mode                 text NOT NULL DEFAULT 'push' CHECK (mode IN ('push', 'poll')),
    url                  text CHECK (url ~ '^https?://'),
    -- Standard Webhooks signing secret: 'whsec_' + base64 of 24..64 random bytes
    secret               text CHECK (secret ~ '^whsec_[A-Za-z0-9+/=]{16,}$'),
    previous_secret      text CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/=]{16,}$'),
    feed_token           text CHECK (length(feed_token) >= 16),
    timeout_ms           integer NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 100 AND 300000),
    max_in_flight        integer NOT NULL DEFAULT 64 CHECK (max_in_flight BETWEEN 1 AND 4096),
    retry_schedule       interval[] NOT NULL
                         DEFAULT '{5 seconds,5 minutes,30 minutes,2 hours,5 hours,10 hours,10 hours}'
                         CHECK (cardinality(retry_schedule) >= 1),
    max_attempts         integer NOT NULL DEFAULT 8 CHECK (max_attempts >= 1),
    retry_window         interval NOT NULL DEFAULT '3 days',
    breaker_threshold    integer NOT NULL DEFAULT 20 CHECK (breaker_threshold >= 1),
    consecutive_failures integer NOT NULL DEFAULT 0,
    paused_until         timestamptz,
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (mode = 'poll' OR (url IS NOT NULL AND secret IS NOT NULL)),
    CHECK (mode = 'push' OR feed_token IS NOT NULL)
);

-- Which event types go where. A destination without rows here gets every type.
CREATE TABLE subscriptions (
    destination_id text NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    event_type     text NOT NULL CHECK (event_type IN ('order.created', 'order.updated', 'order.paid',
                                                       'order.cancelled', 'order.refunded',
                                                       'order.fulfilled')),
    PRIMARY KEY (destination_id, event_type)
);

-- The normalized order: the latest state the sender told us, never moved backwards.
CREATE TABLE orders (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id          text NOT NULL REFERENCES sources (id),
    external_id        text NOT NULL,
    number             text,
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'cancelled', 'closed')),
    financial_status   text CHECK (financial_status IN ('pending', 'authorized', 'paid',
                                   'partially_paid', 'partially_refunded', 'refunded', 'voided',
                                   'unpaid')),
    fulfillment_status text CHECK (fulfillment_status IN ('unfulfilled', 'partial', 'fulfilled')),
    -- an order known only from a thin or partial event may not have these yet
    currency           text CHECK (currency ~ '^[A-Z]{3}$'),
    total              numeric,
    subtotal           numeric,
    tax                numeric,
    shipping           numeric,
    refunded           numeric NOT NULL DEFAULT 0,
    customer_email     text,
    shipping_address   jsonb,
    sender_created_at  timestamptz,
    sender_updated_at  timestamptz NOT NULL,
    -- with sender_updated_at, tells a redelivery of the same state through
    -- another path (webhook after poll, or the reverse) from a new event
    last_event_type    text,
    -- the canonical order (schema/order.schema.json); the raw payloads, as the
    -- sender sent them, are stored once, in inbound_events (by order_id)
    doc                jsonb NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, external_id)
);

CREATE TABLE order_lines (
    order_id   bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no    integer NOT NULL,
    sku        text,
    title      text NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price numeric NOT NULL,
    PRIMARY KEY (order_id, line_no)
);

-- Every accepted webhook: the audit trail and the dedupe key.
CREATE TABLE inbound_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   text NOT NULL REFERENCES sources (id),
    dedupe_key  text NOT NULL,
    topic       text NOT NULL,
    event_type  text,  -- NULL when the topic is not about orders
    outcome     text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored')),
    order_id    bigint REFERENCES orders (id) ON DELETE SET NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL,
    UNIQUE (source_id, dedupe_key),
    CHECK (outcome = 'ignored' OR event_type IS NOT NULL)
);
CREATE INDEX inbound_events_order ON inbound_events (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX inbound_events_received ON inbound_events USING brin (received_at);

-- One row per (event, destination). `id` orders the events of one order: the
-- order row is locked while its events are inserted, so ids follow commit order.
CREATE TABLE outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- sent as webhook-id ('msg_' + hex); stable across retries; one per event,
    -- shared by its destinations (gen_random_uuid: no unique index to maintain)
    event_id        uuid NOT NULL,
    order_id        bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    destination_id  text NOT NULL REFERENCES destinations (id) ON DELETE CASCADE,
    event_type      text NOT NULL CHECK (event_type IN ('order.created', 'order.updated',
                                         'order.paid', 'order.cancelled', 'order.refunded',
                                         'order.fulfilled')),
    payload         jsonb NOT NULL,  -- the exact envelope sent: {"type", "timestamp", "data"}
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'delivering', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    lease_owner     text,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CHECK (state <> 'delivering' OR lease_until IS NOT NULL),
    CHECK (state <> 'delivered' OR delivered_at IS NOT NULL)
);
-- Hot paths stay small however many rows are delivered: partial indexes only.
-- claims and feeds read a destination's pending rows in commit (id) order
CREATE INDEX outbox_pending ON outbox (destination_id, id) WHERE state = 'pending';
CREATE INDEX outbox_leased ON outbox (lease_until) WHERE state = 'delivering';
CREATE INDEX outbox_dead ON outbox (destination_id) WHERE state = 'dead';
-- Per-order lookups (ordering check, views, pruning cascades).
CREATE INDEX outbox_order ON outbox (order_id, destination_id, id);
CREATE INDEX outbox_created ON outbox USING brin (created_at);
-- Claims read a destination's pending rows in id order; whether the planner
-- walks outbox_pending or the primary key depends on how many rows it thinks
-- are pending for that destination: give it the joint distribution.
CREATE STATISTICS outbox_dest_state (mcv) ON destination_id, state FROM outbox;

CREATE TABLE delivery_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbox_id        bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    destination_id   text NOT NULL,
    attempt          integer NOT NULL CHECK (attempt >= 1),
    started_at       timestamptz NOT NULL,
    duration_ms      integer NOT NULL CHECK (duration_ms >= 0),
    http_status      integer,
    error            text,
    response_excerpt text,  -- at most a few hundred bytes
    CHECK (http_status IS NOT NULL OR error IS NOT NULL)
);
CREATE INDEX delivery_attempts_outbox ON delivery_attempts (outbox_id);
CREATE INDEX delivery_attempts_started ON delivery_attempts USING brin (started_at);

-- ---------------------------------------------------------------------------
-- Views for humans in psql.

-- One row per order and destination: where that order stands for that system.
CREATE VIEW sync_state AS
SELECT o.id AS order_id,
       o.source_id,
       o.external_id,
       ob.destination_id,
       CASE
           WHEN bool_or(ob.state = 'dead') THEN 'dead'
           WHEN bool_or(ob.state = 'delivering') THEN 'delivering'
           WHEN bool_or(ob.state = 'pending' AND ob.attempts > 0) THEN 'retrying'
           WHEN bool_or(ob.state = 'pending') THEN 'pending'
           ELSE 'synced'
       END AS state,
       count(*) AS events,
       count(*) FILTER (WHERE ob.state = 'delivered') AS delivered,
       count(*) FILTER (WHERE ob.state IN ('pending', 'delivering')) AS pending,
       count(*) FILTER (WHERE ob.state = 'dead') AS dead,
       coalesce(sum(ob.attempts), 0)::integer AS attempts,
       (array_agg(ob.last_status ORDER BY ob.id DESC)
            FILTER (WHERE ob.last_status IS NOT NULL))[1] AS last_status,
       (array_agg(ob.last_error ORDER BY ob.id DESC)
            FILTER (WHERE ob.last_error IS NOT NULL))[1] AS last_error,
       max(ob.delivered_at) AS last_delivered_at,
       -- how far behind this destination is on this order: age of the oldest
       -- undelivered event, or zero once all are delivered
       coalesce(now() - min(ob.created_at) FILTER (WHERE ob.state <> 'delivered'),
                interval '0') AS lag
FROM outbox ob
JOIN orders o ON o.id = ob.order_id
GROUP BY o.id, ob.destination_id;

-- One row per destination: the backlog an operator watches. Each figure is a
-- subquery on its own partial index, so a table of millions of delivered rows
-- costs nothing here.
CREATE VIEW sync_backlog AS
SELECT d.id AS destination_id,
       d.mode,
       d.enabled,
       d.paused_until,
       (SELECT count(*) FROM outbox o
         WHERE o.destination_id = d.id AND o.state = 'pending') AS pending,
       (SELECT count(*) FROM outbox o
         WHERE o.destination_id = d.id AND o.state = 'pending' AND o.attempts > 0) AS retrying,
       (SELECT count(*) FROM outbox o
         WHERE o.destination_id = d.id AND o.state = 'delivering') AS delivering,
       (SELECT count(*) FROM outbox o
         WHERE o.destination_id = d.id AND o.state = 'dead') AS dead,
       now() - (SELECT min(o.created_at) FROM outbox o
                 WHERE o.destination_id = d.id AND o.state IN ('pending', 'delivering'))
           AS oldest_pending_age,
       (SELECT count(*) FROM delivery_attempts a
         WHERE a.destination_id = d.id
           AND a.started_at > now() - interval '1 minute'
           AND a.http_status BETWEEN 200 AND 299) AS delivered_last_minute
FROM destinations d;

-- One row per order: is every destination in sync with it?
CREATE VIEW order_sync AS
SELECT o.id AS order_id,
       o.source_id,
       o.external_id,
       o.status,
       o.financial_status,
       count(ob.id) AS events,
       count(ob.id) FILTER (WHERE ob.state = 'delivered') AS delivered,
       count(ob.id) FILTER (WHERE ob.state IN ('pending', 'delivering')) AS pending,
       count(ob.id) FILTER (WHERE ob.state = 'dead') AS dead,
       coalesce(bool_and(ob.state = 'delivered'), true) AS fully_synced,
       o.updated_at
FROM orders o
LEFT JOIN outbox ob ON ob.order_id = o.id
GROUP BY o.id;

-- Payloads are a few KB of JSON: lz4 compresses them several times faster
-- than the default pglz, which profiles showed as a fifth of ingest's CPU.
ALTER TABLE inbound_events ALTER COLUMN payload SET COMPRESSION lz4;
ALTER TABLE orders ALTER COLUMN doc SET COMPRESSION lz4;
ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4;
