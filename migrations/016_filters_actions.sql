-- 016_filters_actions: content filters on destinations, and the operator's
-- actions on a destination (pause and resume, a test event, recorded).
--
-- Content filters. destinations.filter is a jsonpath predicate over the
-- envelope a destination is sent ({"type", "timestamp", "data"}: the event's
-- payload). The column's type refuses what PostgreSQL cannot parse, with the
-- parser's message, when it is written; a CHECK refuses a path that is not a
-- predicate (`$.data.currency` instead of `$.data.currency == "EUR"`). The
-- relay reads through stream_read_filtered(), which evaluates the filter in
-- the read: of an event that does not match only its position leaves the
-- database (never its payload), and the stream's cursor moves past it as it
-- does past events of types the destination does not take. Nothing is
-- written per filtered event: what the views call "filtered" is worked out
-- when asked, from the filter that was in force where the event stands
-- (destination_filters, one row per change of a destination's filter) and
-- the event's payload.
--
-- Operator actions. destinations.paused_at/paused_by: a destination an
-- operator paused (not the breaker's paused_until): the relay sends nothing
-- to it, its cursor and rows stay where they are, and it goes on in order
-- when resumed; a column, so a restart keeps it. operator_actions takes the
-- new actions ('pause', 'resume', 'test', 'replay_range', 'filter') with a
-- `detail`
-- (the receiver's answer to a test, a replay's window); those rows have no
-- event, so position and order_id become nullable.
--
-- Expand-only: new nullable columns, a new table, new functions; the
-- previous release keeps calling stream_read(), unchanged (it does not know
-- filters: set none during a rolling upgrade), and never reads the new
-- operator_actions rows through a join on an order. Redefined with the same
-- signatures: delivery_state (012: 'filtered' instead of 'unrecorded' for a
-- filtered event), sync_backlog_rows (013: pending and its age leave out
-- what the filter leaves out) and the view order_sync (012: a filtered event
-- does not stop an order being fully synced).

-- ---------------------------------------------------------------- filters

ALTER TABLE destinations ADD COLUMN filter jsonpath;
ALTER TABLE destinations ADD COLUMN paused_at timestamptz;
ALTER TABLE destinations ADD COLUMN paused_by text;
-- a predicate: on an envelope with nothing in it, a predicate answers true
-- or false; a plain path (`$.type`) answers no boolean (NULL when silent).
-- NOT VALID: existing rows are all NULL, and validating would scan.
ALTER TABLE destinations ADD CONSTRAINT destinations_filter_is_predicate
    CHECK (filter IS NULL OR jsonb_path_match('{"type": "", "timestamp": "", "data": {}}',
                                              filter, '{}', true) IS NOT NULL) NOT VALID;

-- The filter a destination had from one position of its stream on: a row
-- each time it is set or changed (from_position: where the stream stood
-- then; the events after it are read with this filter). Read only to tell
-- a filtered event from an unrecorded one; a few rows per destination.
CREATE TABLE destination_filters (
    destination_id text NOT NULL REFERENCES destinations (id) ON DELETE CASCADE
                                                                ON UPDATE CASCADE,
    from_position  bigint NOT NULL,
    filter         jsonpath,
    set_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (destination_id, from_position)
);

CREATE FUNCTION destination_filter_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    p bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.filter::text IS NOT DISTINCT FROM OLD.filter::text THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.filter IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT s.position INTO p FROM delivery_streams s WHERE s.destination_id = NEW.id;
    IF p IS NULL THEN
        -- a new destination: its stream (created after the row) starts at the horizon or after
        p := coalesce((SELECT max(e.position) FROM events e), 0);
    END IF;
    INSERT INTO destination_filters (destination_id, from_position, filter)
    VALUES (NEW.id, p, NEW.filter)
    ON CONFLICT (destination_id, from_position)
    DO UPDATE SET filter = excluded.filter, set_at = now();
    RETURN NULL;
END;
$$;

CREATE TRIGGER destinations_filter_recorded
    AFTER INSERT OR UPDATE OF filter ON destinations
    FOR EACH ROW EXECUTE FUNCTION destination_filter_record();

-- a changed filter or pause is a changed setting: the instances reload
-- (a trigger of its own, so that 008's list of columns stays as it is)
CREATE TRIGGER destinations_actions_changed
    AFTER UPDATE OF filter, paused_at ON destinations
    FOR EACH STATEMENT EXECUTE FUNCTION notify_config_changed();

-- Does destination `dest`'s filter, as it was where position `pos` stands,
-- leave out this envelope? False when no filter was in force. An envelope a
-- filter cannot judge (a comparison of a string with a number) is left out,
-- as stream_read_filtered does.
CREATE FUNCTION destination_filtered(dest text, pos bigint, payload text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    f jsonpath;
BEGIN
    SELECT k.filter INTO f FROM destination_filters k
     WHERE k.destination_id = dest AND k.from_position < pos
     ORDER BY k.from_position DESC LIMIT 1;
    IF f IS NULL THEN
        RETURN false;
    END IF;
    RETURN NOT coalesce(jsonb_path_match(payload::jsonb, f, '{}', true), false);
END;
$$;

-- stream_read (007) with each destination's filter applied in the read.
-- The same columns and two more: `ord`, the destination's place in `dests`
-- (1-based), and `matched`. Every event a destination's read looks at
-- (events of its types, up to its limit: the limit counts events looked at,
-- so a filter that leaves everything out still moves the stream a page a
-- read) comes back, each destination's in position order; one its filter
-- leaves out has matched = false and only its position, never its payload,
-- so that the reader moves the stream's read position past it and counts
-- it. A destination without a filter reads as stream_read reads (matched
-- true, nothing parsed). With one filtered destination in the read, each
-- of its events is parsed into jsonb in the same pass, and every
-- destination's rows come together, in the order of `dests`. With several,
-- their events are read once, in position order, over the union of their
-- pages, and each is parsed once for all of them: their rows interleave
-- (hence `ord`). No summary rows, no sort of the events. The filters are
-- read from the table once per read (a reload that reset a stream reads
-- with the new one). The first row (destination_id NULL) holds the horizon.
-- A destination its operator paused (paused_at) is not read: it gets one
-- row with its `ord` and no event (event_position NULL), and its reader
-- keeps its read position. The pause is read in the read's snapshot, so no
-- event committed after the pause is judged by a filter while the relay
-- has not yet heard of the pause (a filter changed before the resume then
-- judges it).
-- Generic plans: the relay reads many small pages (what deliveries freed
-- since the last read), where planning each query anew for its arrays cost
-- a filtered read more than its events did (3 x 32 events: 5.5 ms of
-- backend CPU, 3.7 ms with generic plans, median of 5); the laterals fix
-- the join order whatever the estimates.
CREATE FUNCTION stream_read_filtered(dests text[], afters bigint[], types text[],
                                     limits integer[], dead_blocks boolean[])
RETURNS TABLE (destination_id text, horizon bigint, event_position bigint, event_id text,
               order_id bigint, created_at text, payload text, age_s double precision,
               held boolean, trace_id text, ord integer, matched boolean)
LANGUAGE plpgsql SET jit = off SET enable_seqscan = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    h bigint;
    filters jsonpath[];
    held boolean[];
    n_filtered integer;
BEGIN
    SELECT coalesce(max(e.position), 0) INTO h FROM events e;
    RETURN QUERY SELECT NULL::text, h, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
                        NULL::text, NULL::double precision, NULL::boolean, NULL::text,
                        NULL::integer, NULL::boolean;
    -- each destination's filter and pause, once (the queries below all read these)
    SELECT array_agg(f.filter ORDER BY u.ord), array_agg(f.paused_at IS NOT NULL ORDER BY u.ord),
           count(f.filter) FILTER (WHERE f.paused_at IS NULL)
      INTO filters, held, n_filtered
      FROM unnest(dests) WITH ORDINALITY AS u(id, ord)
      LEFT JOIN destinations f ON f.id = u.id;
    RETURN QUERY SELECT d.id, h, NULL::bigint, NULL::text, NULL::bigint, NULL::text,
                        NULL::text, NULL::double precision, NULL::boolean, NULL::text,
                        d.ord::integer, NULL::boolean
                   FROM unnest(dests, held) WITH ORDINALITY AS d(id, held, ord)
                  WHERE d.held;
    -- At most one filtered destination: one pass, destination by destination
    -- in the order asked (the nested loops keep the order of unnest). m: the
    -- verdict, once per event and destination (OFFSET 0: a plan node of its
    -- own, not an expression copied into each column that reads it).
    -- With several, the destinations without a filter the same way.
    RETURN QUERY
    SELECT d.id, h, e.position,
           CASE WHEN m.m THEN replace(e.id::text, '-', '') END,
           CASE WHEN m.m THEN e.order_id END,
           CASE WHEN m.m THEN e.created_at::text END,
           CASE WHEN m.m THEN e.payload END,
           CASE WHEN m.m THEN extract(epoch FROM now() - e.created_at)::double precision END,
           CASE WHEN m.m THEN EXISTS (SELECT 1 FROM deliveries x
                                       WHERE x.destination_id = d.id AND x.order_id = e.order_id
                                         AND x.position < e.position
                                         AND (x.state <> 'dead' OR d.db)) END,
           CASE WHEN m.m THEN replace(e.trace_id::text, '-', '') END,
           d.ord::integer, m.m
      FROM unnest(dests, afters, types, limits, dead_blocks, filters, held) WITH ORDINALITY
           AS d(id, after, types, lim, db, filter, held, ord)
     CROSS JOIN LATERAL (
           SELECT e.position, e.id, e.order_id, e.created_at, e.payload, e.trace_id
             FROM events e
            WHERE e.position > d.after AND e.position <= h
              AND (d.types IS NULL OR e.type = ANY (d.types::text[]))
            ORDER BY e.position LIMIT d.lim) e
     CROSS JOIN LATERAL (
           SELECT d.filter IS NULL
                  OR coalesce(jsonb_path_match(e.payload::jsonb, d.filter, '{}', true), false)
                  AS m
           OFFSET 0) m
     WHERE NOT d.held AND (n_filtered < 2 OR d.filter IS NULL);
    IF n_filtered < 2 THEN
        RETURN;
    END IF;
    -- Several filtered destinations. f: each one's page, (after, page_end];
    -- r: the pages' union as disjoint ranges (lo, hi], in order. Each event
    -- in them that one of the pages takes is read and parsed once (e), then
    -- judged for each destination whose page takes it (in the order asked).
    -- OFFSET 0 keeps e and its destinations apart: the events are the outer
    -- loop, so an event is parsed once whatever the number of destinations.
    RETURN QUERY
    WITH f AS MATERIALIZED (
        SELECT u.ord::integer AS ord, u.id, u.after, u.types, u.db, u.filter, p.page_end
          FROM unnest(dests, afters, types, limits, dead_blocks, filters, held) WITH ORDINALITY
               AS u(id, after, types, lim, db, filter, held, ord)
         CROSS JOIN LATERAL (
               SELECT max(e.position) AS page_end
                 FROM (SELECT e.position FROM events e
                        WHERE e.position > u.after AND e.position <= h
                          AND (u.types IS NULL OR e.type = ANY (u.types::text[]))
                        ORDER BY e.position LIMIT u.lim) e) p
         WHERE u.filter IS NOT NULL AND NOT u.held AND p.page_end IS NOT NULL
    ), r AS (
        SELECT min(g.after) AS lo, max(g.page_end) AS hi
          FROM (SELECT c.after, c.page_end,
                       sum(c.starts) OVER (ORDER BY c.after, c.page_end) AS grp
                  FROM (SELECT x.after, x.page_end,
                               CASE WHEN x.after < max(x.page_end) OVER (
                                                       ORDER BY x.after, x.page_end ROWS
                                                       BETWEEN UNBOUNDED PRECEDING
                                                           AND 1 PRECEDING)
                                    THEN 0 ELSE 1 END AS starts
                          FROM f x) c) g
         GROUP BY g.grp
         ORDER BY 1
    )
    SELECT d.id, h, e.position,
           CASE WHEN m.m THEN replace(e.id::text, '-', '') END,
           CASE WHEN m.m THEN e.order_id END,
           CASE WHEN m.m THEN e.created_at::text END,
           CASE WHEN m.m THEN e.payload END,
           CASE WHEN m.m THEN extract(epoch FROM now() - e.created_at)::double precision END,
           CASE WHEN m.m THEN EXISTS (SELECT 1 FROM deliveries x
                                       WHERE x.destination_id = d.id AND x.order_id = e.order_id
                                         AND x.position < e.position
                                         AND (x.state <> 'dead' OR d.db)) END,
           CASE WHEN m.m THEN replace(e.trace_id::text, '-', '') END,
           d.ord, m.m
      FROM r
     CROSS JOIN LATERAL (
           SELECT e.position, e.id, e.order_id, e.type, e.created_at, e.payload, e.trace_id,
                  e.payload::jsonb AS doc
             FROM events e
            WHERE e.position > r.lo AND e.position <= r.hi
              AND EXISTS (SELECT 1 FROM f
                           WHERE e.position > f.after AND e.position <= f.page_end
                             AND (f.types IS NULL OR e.type = ANY (f.types::text[])))
            ORDER BY e.position OFFSET 0) e
     CROSS JOIN LATERAL (
           SELECT f.* FROM f
            WHERE e.position > f.after AND e.position <= f.page_end
              AND (f.types IS NULL OR e.type = ANY (f.types::text[]))
            ORDER BY f.ord OFFSET 0) d
     CROSS JOIN LATERAL (
           SELECT coalesce(jsonb_path_match(e.doc, d.filter, '{}', true), false) AS m
           OFFSET 0) m;
END;
$$;

-- Unread events of a destination that its filter lets through (the filter
-- of now: what is unread will be read with it). Counted one by one: a
-- filtered destination's pending costs O(its backlog), unlike stream_unread.
CREATE FUNCTION stream_unread_filtered(after bigint, types text[], f jsonpath,
                                       OUT n bigint, OUT first_at timestamptz)
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET jit = off AS $$
BEGIN
    SELECT count(*), min(e.created_at) INTO n, first_at FROM events e
     WHERE e.position > after AND (types IS NULL OR e.type = ANY (types))
       AND coalesce(jsonb_path_match(e.payload::jsonb, f, '{}', true), false);
END;
$$;

-- ---------------------------------------------------------------- sync_backlog, filters aside

-- 013's sync_backlog_rows, same columns; pending and oldest_pending_age of a
-- destination with a filter count only the unread events it lets through.
CREATE OR REPLACE FUNCTION sync_backlog_rows()
RETURNS TABLE (destination_id text, mode text, enabled boolean, paused_until timestamptz,
               pending bigint, retrying bigint, delivering bigint, dead bigint,
               oldest_pending_age interval, delivered_last_minute bigint, blocked bigint,
               on_dead text, stream_position bigint, delivered_by text,
               rate_limit_per_s numeric, rate_limited boolean, header_names text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER ROWS 10 AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT d.id,
           d.mode,
           d.enabled,
           d.paused_until,
           (CASE WHEN d.filter IS NULL THEN stream_unread(s.position, t.types)
                 ELSE (stream_unread_filtered(s.position, t.types, d.filter)).n END)
           + (SELECT count(*) FROM deliveries x
               WHERE x.destination_id = d.id AND x.state = 'pending'),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'pending' AND x.attempts > 0),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'delivering'),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'dead'),
           now() - least(CASE WHEN d.filter IS NULL
                              THEN stream_first_unread(s.position, t.types)
                              ELSE (stream_unread_filtered(s.position, t.types, d.filter)).first_at
                         END,
                         (SELECT x.event_created_at FROM deliveries x
                           WHERE x.destination_id = d.id AND x.state = 'pending'
                           ORDER BY x.position LIMIT 1)),
           coalesce((SELECT sum(l.delivered) FROM delivery_log l
                      WHERE l.destination_id = d.id
                        AND l.completed_at > now() - interval '1 minute'), 0)
           + (SELECT count(*) FROM delivery_attempts a
               WHERE a.destination_id = d.id AND a.started_at > now() - interval '1 minute'
                 AND a.http_status BETWEEN 200 AND 299),
           (SELECT count(*) FROM deliveries x
             WHERE x.destination_id = d.id AND x.state = 'blocked'),
           d.on_dead,
           s.position,
           s.lease_owner,
           d.rate_limit_per_s,
           coalesce(d.rate_limit_per_s IS NOT NULL AND s.limited_until > now(), false),
           ARRAY(SELECT k FROM jsonb_object_keys(d.headers) k ORDER BY k)
      FROM destinations d
      JOIN delivery_streams s ON s.destination_id = d.id
     CROSS JOIN LATERAL (SELECT array_agg(u.event_type) AS types FROM subscriptions u
                          WHERE u.destination_id = d.id) t
     ORDER BY d.id;
END;
$$;
-- CREATE OR REPLACE resets a function's settings: pinned again as 014 pins
-- them (the schema, then pg_temp: a caller's temporary table never stands in)
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sync_backlog_rows() SET search_path = %I, pg_temp',
                   current_schema());
END;
$$;
ALTER FUNCTION sync_backlog_rows() SET jit = off;

-- ---------------------------------------------------------------- delivery_state: filtered

-- 012's delivery_state, same signature: an event the stream passed with no
-- 2xx and no skip on record is 'filtered' when the destination's filter (as
-- it was there) left it out, else 'unrecorded' as before. The extra probe
-- (the filter history, the event's payload) runs only for such events.
CREATE OR REPLACE FUNCTION delivery_state(dest text, cursor_pos bigint, pos bigint,
                                          OUT state text, OUT attempts integer,
                                          OUT next_at timestamptz, OUT blocked_by bigint,
                                          OUT last_status integer, OUT last_error text,
                                          OUT delivered_at timestamptz,
                                          OUT skipped_at timestamptz, OUT skipped_by text)
LANGUAGE plpgsql STABLE COST 20 AS $$
DECLARE
    x  record;
    ev record;
    body text;
BEGIN
    SELECT d.state AS st, d.attempts AS n, d.next_at AS due, d.blocked_by AS behind,
           d.last_status AS status, d.last_error AS error
      INTO x
      FROM deliveries d WHERE d.destination_id = dest AND d.position = pos;
    IF x.st IS NULL AND pos > cursor_pos THEN
        state := 'pending';   -- not read by its stream yet: nothing can be on record
        attempts := 0;
        RETURN;
    END IF;
    SELECT * INTO ev FROM delivery_evidence(dest, pos);
    delivered_at := ev.delivered_at;
    SELECT k.skipped_at, k.actor INTO skipped_at, skipped_by
      FROM delivery_skips k WHERE k.destination_id = dest AND k.position = pos;
    IF x.st IS NOT NULL THEN
        state := x.st;
        next_at := x.due;
        blocked_by := x.behind;
        last_status := x.status;
        last_error := x.error;
    ELSIF skipped_at IS NOT NULL AND (delivered_at IS NULL OR skipped_at > delivered_at) THEN
        state := 'skipped';
    ELSIF delivered_at IS NOT NULL THEN
        state := 'delivered';
    ELSE
        state := 'unrecorded';
        IF ev.attempts = 0
           AND EXISTS (SELECT 1 FROM destination_filters k WHERE k.destination_id = dest) THEN
            SELECT e.payload INTO body FROM events e WHERE e.position = pos;
            IF body IS NOT NULL AND destination_filtered(dest, pos, body) THEN
                state := 'filtered';
            END IF;
        END IF;
    END IF;
    attempts := greatest(ev.attempts + CASE WHEN x.st = 'delivering' THEN 1 ELSE 0 END,
                         coalesce(x.n, 0));
END;
$$;

-- 012's order_sync, same columns, one change: an event a destination's
-- filter left out counts as done for that destination (nothing was to be
-- sent), so an order can be fully synced with filtered events. `delivered`
-- still counts deliveries only.
CREATE OR REPLACE VIEW order_sync AS
SELECT o.id AS order_id,
       o.source_id,
       o.external_id,
       o.status,
       o.financial_status,
       count(ed.position) AS events,
       count(ed.position) FILTER (WHERE ed.state = 'delivered') AS delivered,
       count(ed.position) FILTER (WHERE ed.state IN ('pending', 'delivering', 'blocked'))
           AS pending,
       count(ed.position) FILTER (WHERE ed.state = 'dead') AS dead,
       coalesce(bool_and(ed.state IN ('delivered', 'filtered')), true) AS fully_synced,
       o.updated_at,
       count(ed.position) FILTER (WHERE ed.state = 'skipped') AS skipped
  FROM orders o
  LEFT JOIN event_deliveries ed ON ed.order_id = o.id
 GROUP BY o.id;

-- ---------------------------------------------------------------- operator actions

ALTER TABLE operator_actions ALTER COLUMN position DROP NOT NULL;
ALTER TABLE operator_actions ALTER COLUMN order_id DROP NOT NULL;
ALTER TABLE operator_actions ADD COLUMN detail jsonb;
-- the constraint of 005, widened (the previous release writes replay and skip only)
ALTER TABLE operator_actions DROP CONSTRAINT operator_actions_action_check;
ALTER TABLE operator_actions ADD CONSTRAINT operator_actions_action_check
    CHECK (action IN ('replay', 'skip', 'pause', 'resume', 'test', 'replay_range', 'filter'))
    NOT VALID;
CREATE INDEX operator_actions_destination ON operator_actions (destination_id, at)
    WHERE order_id IS NULL;

-- Pauses (pause = true) or resumes a destination an operator chose to hold.
-- Returns true when it changed something (pausing a paused one does not).
-- Recorded in operator_actions; the instances reload (destinations trigger).
CREATE FUNCTION destination_pause(dest text, pause boolean, actor text DEFAULT session_user)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    done boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM destinations d WHERE d.id = dest) THEN
        RAISE EXCEPTION 'no destination "%"', dest USING ERRCODE = '22023';
    END IF;
    UPDATE destinations d
       SET paused_at = CASE WHEN pause THEN now() END,
           paused_by = CASE WHEN pause THEN destination_pause.actor END
     WHERE d.id = dest AND (d.paused_at IS NOT NULL) <> pause;
    done := FOUND;
    IF done THEN
        INSERT INTO operator_actions (actor, action, destination_id)
        VALUES (destination_pause.actor, CASE WHEN pause THEN 'pause' ELSE 'resume' END, dest);
        PERFORM pg_notify('ordersync_deliveries', '');
    END IF;
    RETURN done;
END;
$$;

-- Replays every dead or blocked event of a destination whose event time is
-- in [since, until), as one recorded action (plus delivery_act's row per
-- event). Returns how many (or would, with preview).
CREATE FUNCTION destination_replay_range(dest text, since timestamptz, until timestamptz,
                                         actor text DEFAULT session_user,
                                         preview boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    IF dest IS NULL OR since IS NULL OR until IS NULL THEN
        RAISE EXCEPTION 'a destination, since and until are needed' USING ERRCODE = '22023';
    END IF;
    IF until <= since THEN
        RAISE EXCEPTION 'until must be after since' USING ERRCODE = '22023';
    END IF;
    n := delivery_act('replay', dest => dest, since => since, until => until,
                      states => '{dead,blocked}', actor => actor, preview => preview);
    IF NOT preview THEN
        INSERT INTO operator_actions (actor, action, destination_id, detail)
        VALUES (actor, 'replay_range', dest,
                jsonb_build_object('since', since, 'until', until, 'events', n));
    END IF;
    RETURN n;
END;
$$;

-- Records a test event sent to a destination and the receiver's answer
-- (the instance that sent it calls this once the answer came).
CREATE FUNCTION destination_test_record(dest text, actor text, webhook_id text,
                                        http_status integer, body text, error text,
                                        ms integer)
RETURNS bigint
LANGUAGE sql AS $$
    INSERT INTO operator_actions (actor, action, destination_id, detail)
    VALUES (actor, 'test', dest,
            jsonb_build_object('webhook_id', webhook_id, 'status', http_status,
                               'body', left(body, 256), 'error', error, 'ms', ms))
    RETURNING id
$$;

-- Sets (or with NULL removes) a destination's filter, recorded. A filter
-- PostgreSQL cannot parse, or one that is not a predicate, is refused with
-- the parser's message under SQLSTATE 22023 (the console and the CLI show
-- it as the operator's mistake). Returns the filter as PostgreSQL reads it.
CREATE FUNCTION destination_set_filter(dest text, filter text, actor text DEFAULT session_user)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    f jsonpath;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM destinations d WHERE d.id = dest) THEN
        RAISE EXCEPTION 'no destination "%"', dest USING ERRCODE = '22023';
    END IF;
    BEGIN
        f := filter::jsonpath;
    EXCEPTION WHEN syntax_error OR invalid_text_representation THEN
        RAISE EXCEPTION '%', SQLERRM USING ERRCODE = '22023';
    END;
    BEGIN
        UPDATE destinations d SET filter = f WHERE d.id = dest;
    EXCEPTION WHEN check_violation THEN
        RAISE EXCEPTION 'the filter % is not a predicate: it must answer true or false, as'
                        ' $.data.currency == "EUR" does', f::text USING ERRCODE = '22023';
    END;
    INSERT INTO operator_actions (actor, action, destination_id, detail)
    VALUES (actor, 'filter', dest, jsonb_build_object('filter', f::text));
    RETURN f::text;
END;
$$;

-- What an operator did to a destination as a whole, newest first.
CREATE VIEW destination_actions AS
SELECT a.id, a.at, a.actor, a.action, a.destination_id, a.detail
  FROM operator_actions a
 WHERE a.order_id IS NULL;
-- a view is never written through by the runtime (014's rule)
REVOKE INSERT, UPDATE, DELETE ON destination_actions FROM ordersync_runtime;
-- event_deliveries reads delivery_state() with the caller's rights, and that
-- now reads the filter history: the reader may read it, and a destination's
-- filter and pause (none of them secret)
GRANT SELECT ON destination_filters TO ordersync_reader;
GRANT SELECT (filter, paused_at, paused_by) ON destinations TO ordersync_reader;
