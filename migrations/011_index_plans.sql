-- The hot paths of ingest, the relay and the feeds always go by index.
--
-- Their statements are planned once per connection and the plan is kept
-- (PL/pgSQL and prepared statements). Planned while the tables looked empty
-- (a fresh install after its first VACUUM, or a TRUNCATE followed by
-- ANALYZE), max(position) over events and the reads after a cursor became
-- sequential scans, and stayed so while the table grew until the next
-- ANALYZE replaced the plan: at 1,000 orders/s, commit -> last destination
-- went from 4 to 18 ms in 25 s, and a batch of 32 updates read the whole of
-- orders 64 times. Every one of these reads has an index that
-- is right at any size (position, the due-rows partial index, the primary
-- keys), so sequential scans are ruled out for them.

ALTER FUNCTION ingest_batch(jsonb, text[]) SET enable_seqscan = off;
ALTER FUNCTION stream_read(text[], bigint[], text[], integer[], boolean[]) SET enable_seqscan = off;
ALTER FUNCTION delivery_claim(text[], integer[], interval, text) SET enable_seqscan = off;
ALTER FUNCTION relay_complete(text, jsonb) SET enable_seqscan = off;

-- A feed page: acknowledge up to `after` (only if it is a position already
-- committed: not beyond the horizon) and read the events after it of the
-- destination's types, at most `lim`, in one snapshot. The first row carries
-- the horizon and whether the cursor moved even when there is no event.
CREATE FUNCTION feed_read(dest text, after bigint, types text[], lim integer)
RETURNS TABLE (horizon bigint, acked bigint, event_position bigint, event_id text, payload text)
LANGUAGE plpgsql SET enable_seqscan = off SET jit = off AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH h AS (SELECT coalesce(max(e.position), 0) AS horizon FROM events e),
    ack AS (
        UPDATE delivery_streams s SET position = after, updated_at = now() FROM h
         WHERE s.destination_id = dest AND s.position < after AND after <= h.horizon
        RETURNING 1
    )
    SELECT h.horizon, (SELECT count(*) FROM ack), e.position, e.event_id, e.payload
      FROM h LEFT JOIN LATERAL (
           SELECT e.position, replace(e.id::text, '-', '') AS event_id, e.payload FROM events e
            WHERE e.position > after AND (types IS NULL OR e.type = ANY (types))
            ORDER BY e.position LIMIT lim) e ON true;
END;
$$;
