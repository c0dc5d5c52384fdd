-- 008_destination_options: extra request headers and a rate limit per
-- destination, as webhook services let an operator set per endpoint (a 3PL
-- or ERP that wants `Authorization: Bearer ...` or an API-key header besides
-- the signature; an invoicing API that allows 5 requests/s).
--
--   destinations.headers           JSON object, header name -> value, sent
--                                  with every delivery to a push destination.
--                                  The values are secrets: the views show the
--                                  names only (sync_backlog.header_names), and
--                                  ordersync never logs them.
--   destinations.rate_limit_per_s  requests per second at most, for the
--                                  destination as a whole however many
--                                  instances run (NULL: no limit). Only the
--                                  instance holding the destination's stream
--                                  sends to it (007); relay_rate.h says how
--                                  the limit survives a hand-over.
--   delivery_streams.limited_until the stream's owner had deliveries ready
--                                  and waited for the rate limit; it writes
--                                  a few seconds ahead while that lasts, so
--                                  the flag lapses by itself when it stops
--                                  (or dies). sync_backlog.rate_limited.

ALTER TABLE destinations ADD COLUMN headers jsonb NOT NULL DEFAULT '{}';
ALTER TABLE destinations ADD COLUMN rate_limit_per_s numeric;
ALTER TABLE delivery_streams ADD COLUMN limited_until timestamptz;

-- Refuses headers that are not valid HTTP fields, or that ordersync sets
-- itself, and a rate limit that is not a positive number. A trigger rather
-- than CHECKs: a failed CHECK reports the whole row ("Failing row contains
-- ..."), header values included, to the client and the server log; these
-- messages name the header, never its value. A name that is not a valid
-- token is not repeated either: it may be a value pasted into the wrong
-- place. services/ordersync/destinations.c checks the header rules again
-- before it sends anything (keep the two in step).
CREATE FUNCTION destination_options_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    h     record;
    seen  text[] := '{}';
    name  text;
    val   text;
    total integer := 0;
BEGIN
    -- (numeric's NaN sorts above every number: refused by the upper bound)
    IF NEW.rate_limit_per_s IS NOT NULL
       AND NOT (NEW.rate_limit_per_s > 0 AND NEW.rate_limit_per_s <= 100000) THEN
        RAISE EXCEPTION 'destination %: rate_limit_per_s must be above 0 and at most 100000'
                        ' (NULL: no limit)', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF jsonb_typeof(NEW.headers) <> 'object' THEN
        RAISE EXCEPTION 'destination %: headers must be a JSON object of header name to value',
                        NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    FOR h IN SELECT key, value FROM jsonb_each(NEW.headers) LOOP
        -- RFC 9110 5.1: a field name is a token
        IF h.key !~ '^[-!#$%&''*+.^_`|~0-9A-Za-z]{1,128}$' THEN
            RAISE EXCEPTION 'destination %: a header name is not a valid HTTP field name', NEW.id
                USING ERRCODE = 'check_violation',
                      HINT = 'Names are 1 to 128 letters, digits or !#$%&''*+-.^_`|~'
                             ' (the name is not shown: it may hold a value put there by mistake).';
        END IF;
        name := lower(h.key);
        -- ordersync's own fields (the signature, what the body is, the trace
        -- context of each delivery), and the ones that frame the request or
        -- the connection, which libcurl owns
        IF name IN ('content-type', 'content-length', 'user-agent', 'host', 'traceparent',
                    'tracestate', 'expect', 'transfer-encoding', 'connection', 'keep-alive', 'te',
                    'trailer', 'upgrade')
           OR name LIKE 'webhook-%' THEN
            RAISE EXCEPTION 'destination %: header "%" is set by ordersync', NEW.id, h.key
                USING ERRCODE = 'check_violation';
        END IF;
        IF name = ANY (seen) THEN
            RAISE EXCEPTION 'destination %: header "%" is given twice (names ignore case)',
                            NEW.id, h.key
                USING ERRCODE = 'check_violation';
        END IF;
        seen := seen || name;
        IF jsonb_typeof(h.value) <> 'string' THEN
            RAISE EXCEPTION 'destination %: the value of header "%" must be a JSON string',
                            NEW.id, h.key
                USING ERRCODE = 'check_violation';
        END IF;
        val := h.value #>> '{}';
        -- RFC 9110 5.5: visible characters, with spaces and tabs inside
        -- only; no CR or LF (that would start another header), no other
        -- control characters, and ASCII only (receivers disagree on the rest)
        IF val ~ '[^\x20-\x7e\t]' OR val ~ '^[ \t]|[ \t]$' OR length(val) > 4096 THEN
            RAISE EXCEPTION 'destination %: the value of header "%" is not a valid HTTP field value',
                            NEW.id, h.key
                USING ERRCODE = 'check_violation',
                      HINT = 'At most 4096 printable ASCII characters, no line breaks or other'
                             ' control characters, no space at either end.';
        END IF;
        total := total + length(h.key) + length(val) + 4;
    END LOOP;
    IF cardinality(seen) > 32 OR total > 8192 THEN
        RAISE EXCEPTION 'destination %: at most 32 headers of 8192 bytes in all', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER destinations_options BEFORE INSERT OR UPDATE OF headers, rate_limit_per_s
    ON destinations FOR EACH ROW EXECUTE FUNCTION destination_options_check();

-- Running instances reload destinations when these columns change (002's
-- list, the new columns, and breaker_pause, max_retry_after and on_dead,
-- which came later without being added). The relay itself updates failure
-- counters, pauses and limited_until: those columns do not notify.
DROP TRIGGER destinations_changed ON destinations;
CREATE TRIGGER destinations_changed
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF id, mode, url, secret, previous_secret, feed_token, timeout_ms, max_in_flight,
                    retry_schedule, max_attempts, retry_window, breaker_threshold, enabled,
                    breaker_pause, max_retry_after, on_dead, headers, rate_limit_per_s
    ON destinations
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();

-- sync_backlog as in 007, with three columns at the end: the limit, whether
-- the relay is holding deliveries back for it right now, and the names (only)
-- of the extra headers.
CREATE OR REPLACE VIEW sync_backlog AS
SELECT d.id AS destination_id,
       d.mode,
       d.enabled,
       d.paused_until,
       (SELECT count(*) FROM events e
         WHERE e.position > s.position
           AND (NOT EXISTS (SELECT 1 FROM subscriptions u WHERE u.destination_id = d.id)
                OR e.type IN (SELECT u.event_type FROM subscriptions u
                               WHERE u.destination_id = d.id)))
       + (SELECT count(*) FROM deliveries x
           WHERE x.destination_id = d.id AND x.state = 'pending') AS pending,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'pending' AND x.attempts > 0) AS retrying,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'delivering') AS delivering,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'dead') AS dead,
       now() - least((SELECT e.created_at FROM events e
                       WHERE e.position > s.position
                         AND (NOT EXISTS (SELECT 1 FROM subscriptions u
                                           WHERE u.destination_id = d.id)
                              OR e.type IN (SELECT u.event_type FROM subscriptions u
                                             WHERE u.destination_id = d.id))
                       ORDER BY e.position LIMIT 1),
                     (SELECT min(x.event_created_at) FROM deliveries x
                       WHERE x.destination_id = d.id AND x.state <> 'dead'))
           AS oldest_pending_age,
       coalesce((SELECT sum(l.delivered) FROM delivery_log l
                  WHERE l.destination_id = d.id AND l.completed_at > now() - interval '1 minute'),
                0)
       + (SELECT count(*) FROM delivery_attempts a
           WHERE a.destination_id = d.id AND a.started_at > now() - interval '1 minute'
             AND a.http_status BETWEEN 200 AND 299) AS delivered_last_minute,
       (SELECT count(*) FROM deliveries x
         WHERE x.destination_id = d.id AND x.state = 'blocked') AS blocked,
       d.on_dead,
       s.position AS stream_position,
       s.lease_owner AS delivered_by,
       d.rate_limit_per_s,
       coalesce(d.rate_limit_per_s IS NOT NULL AND s.limited_until > now(), false)
           AS rate_limited,
       ARRAY(SELECT k FROM jsonb_object_keys(d.headers) k ORDER BY k) AS header_names
  FROM destinations d
  JOIN delivery_streams s ON s.destination_id = d.id;
