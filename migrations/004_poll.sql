-- 004_poll: sources that are polled (mode 'poll', or a push source with a
-- reconcile_interval) and what polling costs.

-- One instance at a time polls a source: a run holds this lease.
ALTER TABLE sources ADD COLUMN poll_lease_until timestamptz;
ALTER TABLE sources ADD COLUMN poll_lease_owner text;

-- Pollers write cursors and leases on every run: only configuration columns
-- make running instances reload.
DROP TRIGGER sources_changed ON sources;
CREATE TRIGGER sources_changed
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF id, kind, secret, previous_secret, tolerance_s, mode, poll_url, poll_interval,
                    poll_auth_header, reconcile_interval, enabled
    ON sources
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();

-- Counters per source, the numbers to choose between polling and webhooks with.
CREATE TABLE source_polls (
    source_id      text PRIMARY KEY REFERENCES sources (id) ON DELETE CASCADE,
    polls          bigint NOT NULL DEFAULT 0,
    empty_polls    bigint NOT NULL DEFAULT 0,  -- answered, but nothing new
    orders_found   bigint NOT NULL DEFAULT 0,  -- orders in the answers (new or not)
    orders_new     bigint NOT NULL DEFAULT 0,  -- of which became events
    not_modified   bigint NOT NULL DEFAULT 0,  -- 304 answers
    rate_limited   bigint NOT NULL DEFAULT 0,  -- 429/503 answers
    errors         bigint NOT NULL DEFAULT 0,
    requests       bigint NOT NULL DEFAULT 0,  -- HTTP requests, pages included
    last_error     text,
    last_poll_at   timestamptz,
    last_success_at timestamptz
);

CREATE VIEW poll_state AS
SELECT s.id AS source_id, s.kind, s.mode, s.enabled,
       coalesce(s.reconcile_interval, s.poll_interval) AS every,
       s.poll_cursor AS cursor,
       p.polls, p.empty_polls, p.orders_found, p.orders_new, p.not_modified, p.rate_limited,
       p.errors, p.requests, p.last_error, p.last_poll_at, p.last_success_at
FROM sources s
LEFT JOIN source_polls p ON p.source_id = s.id
WHERE s.mode = 'poll' OR s.reconcile_interval IS NOT NULL;

-- Takes the poll lease of a source if it is free; returns its cursor state.
CREATE FUNCTION poll_claim(src text, owner text, lease interval)
RETURNS TABLE (poll_cursor text, poll_etag text, poll_last_modified text)
LANGUAGE sql AS $$
    UPDATE sources
       SET poll_lease_until = now() + lease, poll_lease_owner = owner
     WHERE id = src AND enabled
       AND (poll_lease_until IS NULL OR poll_lease_until < now() OR poll_lease_owner = owner)
 RETURNING poll_cursor, poll_etag, poll_last_modified
$$;

-- One page of a poll run in one transaction: its orders go through the same
-- ingest_batch() as pushed webhooks, and on the last page the cursor advances
-- in that same transaction, so a crash never skips or double-emits.
-- p_last false: orders only (the cursor moves once every page is in).
CREATE FUNCTION ingest_poll(src text, owner text, batch jsonb, p_last boolean, p_cursor text,
                            p_etag text, p_last_modified text, p_requests integer, p_result text,
                            p_error text, p_run_new integer DEFAULT 0)
RETURNS TABLE (n_orders integer, n_emitted integer)
LANGUAGE plpgsql AS $$
DECLARE
    n_found integer := jsonb_array_length(batch);
    n_new   integer := 0;
BEGIN
    SELECT count(*) FILTER (WHERE b.outcome = 'applied') INTO n_new
      FROM ingest_batch(batch) b;
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
            -- "found nothing": no new event in the whole run, whatever was listed
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

ALTER FUNCTION ingest_poll(text, text, jsonb, boolean, text, text, text, integer, text, text,
                           integer) SET jit = off;
