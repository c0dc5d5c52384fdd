-- 015_signing_alerts: Ed25519 signing keys for destinations (Standard
-- Webhooks "v1a"), and operational alerts delivered as signed events.
--
-- Expand-only: new nullable columns, new tables and functions, and two
-- CHECKs replaced by wider ones. The previous release keeps working beside
-- it: it never writes the new types, and it skips a push destination that
-- has a signing key and no secret (its loader wants a secret), so such a
-- destination waits for the new release; it delivers alert rows (below) like
-- any retry, signed v1 only.

-- ---------------------------------------------------------------- signing keys

-- SECRETS, like `secret`: never shown, logged or granted to a reader role.
-- 'whsk_' + base64 of a 32-byte Ed25519 seed (`ordersync keygen`), or of the
-- seed and its 32-byte public key (Svix's layout; ordersync checks at load
-- that the second half is the first half's public key, which SQL cannot, and
-- does not deliver to the destination until it is). Rotation as with
-- `secret`: the new key in signing_key, the old one in previous_signing_key
-- until every receiver has the new public key; both sign meanwhile.
ALTER TABLE destinations
    ADD COLUMN signing_key text
        CONSTRAINT destinations_signing_key_check
        CHECK (signing_key ~ '^whsk_([A-Za-z0-9+/]{43}=|[A-Za-z0-9+/]{86}==)$'),
    ADD COLUMN previous_signing_key text
        CONSTRAINT destinations_previous_signing_key_check
        CHECK (previous_signing_key ~ '^whsk_([A-Za-z0-9+/]{43}=|[A-Za-z0-9+/]{86}==)$');

-- The CHECKs above name the rule only; this says what is wrong, as
-- destination_options_check (008) does for headers. The value is never
-- quoted: it is a secret.
CREATE FUNCTION destination_signing_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.signing_key !~ '^whsk_([A-Za-z0-9+/]{43}=|[A-Za-z0-9+/]{86}==)$'
       OR NEW.previous_signing_key !~ '^whsk_([A-Za-z0-9+/]{43}=|[A-Za-z0-9+/]{86}==)$' THEN
        RAISE EXCEPTION 'destination %: a signing key is whsk_ followed by the base64 of a 32-byte'
                        ' Ed25519 seed (ordersync keygen makes one), or of the seed and its'
                        ' public key (64 bytes)', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER destinations_signing BEFORE INSERT OR UPDATE OF signing_key, previous_signing_key
    ON destinations FOR EACH ROW EXECUTE FUNCTION destination_signing_check();

-- A push destination signs with a secret (v1), a signing key (v1a) or both.
-- destinations is small: checking the new constraint is a short scan.
ALTER TABLE destinations
    DROP CONSTRAINT destinations_check,
    ADD CONSTRAINT destinations_push_signed
        CHECK (mode = 'poll' OR (url IS NOT NULL AND (secret IS NOT NULL OR signing_key IS NOT NULL)));

-- Running instances reload destinations when these columns change: 008's
-- list and the two keys.
DROP TRIGGER destinations_changed ON destinations;
CREATE TRIGGER destinations_changed
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF id, mode, url, secret, previous_secret, feed_token, timeout_ms, max_in_flight,
                    retry_schedule, max_attempts, retry_window, breaker_threshold, enabled,
                    breaker_pause, max_retry_after, on_dead, headers, rate_limit_per_s,
                    signing_key, previous_signing_key
    ON destinations
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();

-- ---------------------------------------------------------------- operational alerts

-- The event types of operational alerts (README: "Operational alerts").
CREATE FUNCTION alert_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['destination.disabled', 'destination.blocked', 'destination.breaker_opened',
                 'destination.recovered']
$$;

-- Alerts are events like the others (stored once, webhook-id from their id,
-- the same envelope) so that the relay delivers them as it delivers any
-- event: signed, retried on the destination's schedule, at least once. The
-- CHECK widens to their types; NOT VALID because every row already passed
-- the narrower one, and validating would read the whole event store under
-- the lock this statement takes.
ALTER TABLE events DROP CONSTRAINT events_type_check;
ALTER TABLE events ADD CONSTRAINT events_type_check
    CHECK (type IN ('order.created', 'order.updated', 'order.paid', 'order.cancelled',
                    'order.refunded', 'order.fulfilled', 'destination.disabled',
                    'destination.blocked', 'destination.breaker_opened',
                    'destination.recovered')) NOT VALID;

-- A destination made for alerts subscribes to their types, and so gets no
-- order event (a destination without subscriptions gets every order event).
-- Alerts themselves go to ORDERSYNC_ALERT_DESTINATION whatever it subscribes to.
ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_event_type_check,
    ADD CONSTRAINT subscriptions_event_type_check
        CHECK (event_type IN ('order.created', 'order.updated', 'order.paid', 'order.cancelled',
                              'order.refunded', 'order.fulfilled', 'destination.disabled',
                              'destination.blocked', 'destination.breaker_opened',
                              'destination.recovered'));

-- An alert's position is negative, from a sequence of its own: below every
-- stream's cursor, so no stream ever reads it, no backlog, feed, count or
-- order view sees it. Its one delivery is a `deliveries` row of the alert
-- destination, claimed like a retry. Its order_id is 0 (no order is 0).
CREATE SEQUENCE alert_position AS bigint;

-- When an alert of each kind about each destination was last raised: at
-- most one per (destination, kind) per interval, whichever instance saw it.
CREATE TABLE alert_state (
    destination_id text NOT NULL,
    kind           text NOT NULL,
    last_at        timestamptz NOT NULL,
    PRIMARY KEY (destination_id, kind)
);

-- Raises an alert of type `kind` about destination `about`, to be delivered
-- to `alert_dest`, unless:
--   - `about` is the alert destination itself (alerts about it could only
--     queue behind the trouble they report, and each would raise another);
--   - the alert destination is not a push destination;
--   - one of this kind about it was raised less than `min_interval` ago;
--   - it is 'destination.recovered' and no other alert about it was raised
--     since the last 'destination.recovered' (nothing to recover from).
-- `detail`: the kind's fields (README); destination, kind and time are added.
-- Returns the alert's position, or NULL when none was raised.
CREATE FUNCTION alert_raise(alert_dest text, about text, kind text, detail jsonb,
                            min_interval interval)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    at    timestamptz := now();
    stamp text := to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    pos   bigint;
BEGIN
    IF alert_dest IS NULL OR about = alert_dest OR NOT kind = ANY (alert_types())
       OR NOT EXISTS (SELECT 1 FROM destinations d WHERE d.id = alert_dest AND d.mode = 'push') THEN
        RETURN NULL;
    END IF;
    IF kind = 'destination.recovered' AND NOT EXISTS (
           SELECT 1 FROM alert_state a
            WHERE a.destination_id = about AND a.kind <> 'destination.recovered'
              AND a.last_at > coalesce((SELECT r.last_at FROM alert_state r
                                         WHERE r.destination_id = about
                                           AND r.kind = 'destination.recovered'),
                                       '-infinity')) THEN
        RETURN NULL;
    END IF;
    INSERT INTO alert_state AS a (destination_id, kind, last_at) VALUES (about, kind, at)
    ON CONFLICT ON CONSTRAINT alert_state_pkey DO UPDATE SET last_at = excluded.last_at
     WHERE a.last_at <= excluded.last_at - min_interval;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    pos := -nextval('alert_position');
    PERFORM event_store_ensure();
    INSERT INTO events (position, id, order_id, type, created_at, payload)
    VALUES (pos, gen_random_uuid(), 0, kind, at,
            jsonb_build_object('type', kind, 'timestamp', stamp,
                               'data', coalesce(detail, '{}')
                                       || jsonb_build_object('destination', about,
                                                             'at', stamp))::text);
    INSERT INTO deliveries (destination_id, position, order_id, event_created_at, state, next_at)
    VALUES (alert_dest, pos, 0, at, 'pending', at);
    -- every relay claims due rows on this (as after a replay)
    PERFORM pg_notify('ordersync_deliveries', '');
    RETURN pos;
END;
$$;
