-- 014_security: least privilege in the database (README "Security"), feed
-- tokens stored as hashes, and the console's sessions.
--
-- Two roles, NOLOGIN: people and processes log in as roles of their own that
-- are members of them (CREATE ROLE ... LOGIN IN ROLE ordersync_runtime).
--   ordersync_runtime  what `ordersync serve` needs: read and write the event
--                      store and delivery state, read the configuration (the
--                      secrets with it: it signs, verifies and polls with
--                      them), write back only the columns it keeps (poll
--                      cursors and leases, breaker state, disabling). It owns
--                      the four time-partitioned tables and their partitions:
--                      making, detaching and dropping partitions needs the
--                      parent's ownership, and DETACH ... CONCURRENTLY cannot
--                      run inside a function that could lend it.
--   ordersync_reader   the sync state for people: the views, orders, the
--                      event store's reads, and sources and destinations
--                      without a secret column.
-- The role that applies the migrations (the owner) owns everything else and
-- alone may change the schema, the configuration rows or the migrations'
-- record.
--
-- Roles are cluster-wide: another database of the cluster may have made them
-- already, or be making them right now, so each is made only when missing.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ordersync_runtime', 'ordersync_reader'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION
            -- made meanwhile by the migration of another database
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist, and % may not create roles', r, current_user
                    USING HINT = format('As a superuser: CREATE ROLE %I NOLOGIN; then migrate again.',
                                        r);
        END;
    END LOOP;
END;
$$;

-- The owner acts as the runtime too: it hands the event store over below
-- (ALTER ... OWNER TO needs it), and the previous release, connected as the
-- owner during a rolling upgrade, keeps every right it had over those tables.
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT pg_has_role(current_user, 'ordersync_runtime', 'USAGE') THEN
        BEGIN
            EXECUTE format('GRANT ordersync_runtime TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION '% may not grant itself ordersync_runtime', current_user
                USING HINT = format('As a superuser: GRANT ordersync_runtime TO %I; then migrate again.',
                                    current_user);
        END;
    END IF;
END;
$$;

-- ---------------------------------------------------------------- console sessions

-- One row per console login (api_console.c): a signed cookie alone cannot be
-- taken back, so the cookie names its row and every request checks it.
-- Logout ends it for every instance and across restarts; last_seen_at is the
-- idle timeout's (ORDERSYNC_CONSOLE_IDLE_TIMEOUT_S). A row is useless once
-- its cookie has expired (12 hours), and each login deletes those: the table
-- holds the sessions of about the last 12 hours, however long it runs.
CREATE TABLE console_sessions (
    id           text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),  -- the cookie's nonce
    operator     text NOT NULL,
    peer         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz
);
-- not last_seen_at: every request updates it, and stays a HOT update
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- ---------------------------------------------------------------- feed tokens

-- A feed token is only ever compared, so the row keeps its SHA-256
-- ("sha256:" + 64 hex digits) and ordersync hashes what a reader presents
-- (feed_token.c). A token written in plain text, as the README shows, is
-- replaced before the row is stored; a digest written as such is kept, so
-- an operator can set a token without it ever reaching the database. The
-- length rule of 001 is checked on the plain token here (the CHECK sees
-- only the digest, which is always long enough).
CREATE FUNCTION feed_token_hash() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.feed_token IS NOT NULL AND NEW.feed_token !~ '^sha256:[0-9a-f]{64}$' THEN
        IF length(NEW.feed_token) < 16 THEN
            RAISE EXCEPTION 'a feed token has at least 16 characters'
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.feed_token := 'sha256:' || encode(sha256(convert_to(NEW.feed_token, 'UTF8')), 'hex');
    END IF;
    RETURN NEW;
END;
$$;
-- named to run before destinations_secret_changed (009): that one then sees
-- digests on both sides, and a token set again to itself is no change
CREATE TRIGGER destinations_feed_token_hash BEFORE INSERT OR UPDATE OF feed_token
    ON destinations FOR EACH ROW EXECUTE FUNCTION feed_token_hash();

-- The tokens already there, keeping when each was last changed (009's
-- trigger would take this for a change). Running instances reload at once
-- (NOTIFY): the previous release, which compares plain text, refuses every
-- feed token from here on (403; a refused read acknowledges nothing), the
-- new one accepts the same tokens. README "Security" says what to do.
DO $$
DECLARE
    d record;
BEGIN
    FOR d IN SELECT id, feed_token_changed_at FROM destinations
              WHERE feed_token IS NOT NULL AND feed_token !~ '^sha256:[0-9a-f]{64}$' LOOP
        UPDATE destinations SET feed_token = feed_token WHERE id = d.id;
        UPDATE destinations SET feed_token_changed_at = d.feed_token_changed_at WHERE id = d.id;
    END LOOP;
END;
$$;

-- ---------------------------------------------------------------- the runtime

DO $$
DECLARE
    s text := current_schema();
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO ordersync_runtime',
                   current_database());
    -- CREATE: partitions (event_store_extend, below, makes them as the runtime)
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO ordersync_runtime', s);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I'
                   ' TO ordersync_runtime', s);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO ordersync_runtime', s);
    -- tables and views of later migrations (applied by this same owner) get the same
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
                   ' GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ordersync_runtime', s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
                   ' GRANT USAGE, SELECT ON SEQUENCES TO ordersync_runtime', s);
    -- every function the service calls, by name rather than through PUBLIC:
    -- a function whose EXECUTE is taken from PUBLIC (a SECURITY DEFINER one,
    -- below) stays the runtime's, now and in later migrations
    EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO ordersync_runtime', s);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I'
                   ' GRANT EXECUTE ON FUNCTIONS TO ordersync_runtime', s);
    -- PostgreSQL before 15 lets every role create objects in public: a reader
    -- could plant a function or an operator for the owner's migrations to
    -- call (CVE-2018-1058)
    IF EXISTS (SELECT 1 FROM pg_namespace n,
                      aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
                WHERE n.nspname = s AND a.grantee = 0 AND a.privilege_type = 'CREATE') THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', s);
    END IF;
END;
$$;

-- Views are read, never written through: a write through a simple
-- (auto-updatable) view is checked against the view owner's rights, not the
-- writer's, and would reach the configuration the runtime may not change.
-- ALL TABLES above granted them like tables; so do the default privileges,
-- which cannot tell a view from a table: a later migration that makes a view
-- revokes the same (test_security checks every view of the schema).
DO $$
DECLARE
    v regclass;
BEGIN
    FOR v IN SELECT c.oid::regclass FROM pg_class c
              WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('v', 'm')
              ORDER BY c.oid LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON %s FROM ordersync_runtime', v);
    END LOOP;
END;
$$;

-- What the service only reads, or only appends to.
REVOKE INSERT, UPDATE, DELETE ON schema_migrations, subscriptions FROM ordersync_runtime;
REVOKE INSERT, DELETE ON event_store_settings FROM ordersync_runtime;
-- the audit trail of replays and skips: written, never rewritten
REVOKE UPDATE, DELETE ON operator_actions FROM ordersync_runtime;
-- Configuration rows are the operator's: the runtime writes back only its
-- own state. Whoever holds its password cannot point a destination at
-- another URL, set a feed token or a poll URL of their own, or rotate a
-- secret, and so keep a way in after the password is changed.
REVOKE INSERT, UPDATE, DELETE ON sources, destinations FROM ordersync_runtime;
GRANT UPDATE (poll_cursor, poll_etag, poll_last_modified, poll_lease_until, poll_lease_owner)
    ON sources TO ordersync_runtime;
GRANT UPDATE (paused_until, consecutive_failures, enabled, disabled_reason)
    ON destinations TO ordersync_runtime;

-- ---------------------------------------------------------------- the reader

DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO ordersync_reader', current_database());
END;
$$;
-- the views of the README's "Sync state in SQL", and what scripts/sync-status
-- and scripts/check-consistency read; never inbound_events (webhooks exactly
-- as sent) nor console_sessions. A function a view calls runs with the
-- reader's rights, not the view owner's: event_deliveries' delivery_state()
-- (012) reads delivery_log and delivery_skips, so those are granted too.
GRANT SELECT ON sync_state, sync_backlog, order_sync, event_deliveries, poll_state,
                orders, order_lines, delivery_attempts, delivery_log, delivery_skips, events,
                deliveries, delivery_streams, subscriptions
    TO ordersync_reader;
-- sync_backlog's rows come from a SECURITY DEFINER function (013), so
-- that its readers need no right on destinations or events: callable by
-- those who may read the view, not by PUBLIC (any role of the cluster that
-- may connect). Its search_path is pinned with pg_temp last: first (the
-- default when unnamed), a temporary table of the caller's would stand in
-- for one of the schema's in the owner's function.
REVOKE EXECUTE ON FUNCTION sync_backlog_rows() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sync_backlog_rows() TO ordersync_runtime, ordersync_reader;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION sync_backlog_rows() SET search_path = %I, pg_temp',
                   current_schema());
END;
$$;
-- Sources and destinations without their secrets: not secret, previous_secret,
-- poll_auth_header, headers, feed_token, and not the URLs either: a poll
-- URL may carry a key in its query, a webhook URL one in its path (Slack,
-- Zapier). Columns added later are not readable until granted here.
GRANT SELECT (id, kind, tolerance_s, mode, poll_interval, poll_cursor, poll_etag,
              poll_last_modified, reconcile_interval, enabled, created_at, updated_at,
              poll_lease_until, poll_lease_owner, secret_changed_at)
    ON sources TO ordersync_reader;
GRANT SELECT (id, mode, timeout_ms, max_in_flight, retry_schedule, max_attempts, retry_window,
              breaker_threshold, consecutive_failures, paused_until, enabled, disabled_reason,
              created_at, updated_at, breaker_pause, max_retry_after, on_dead, rate_limit_per_s,
              secret_changed_at, feed_token_changed_at)
    ON destinations TO ordersync_reader;

-- ---------------------------------------------------------------- the event store

-- Last, because it locks: the partitioned tables and every partition pass
-- to the runtime (ALTER ... OWNER does not recurse into partitions). Each
-- takes an ACCESS EXCLUSIVE lock until this transaction commits, a few
-- milliseconds later. The four tables first, in event_store_respan's order,
-- then their partitions: a writer locks a table before its partition, so
-- neither it nor a maintenance round can hold one of them and wait for us.
LOCK TABLE events, inbound_events, delivery_attempts, delivery_log IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT c.oid::regclass FROM pg_class c
              WHERE c.oid IN (SELECT to_regclass(n) FROM unnest(ARRAY['events', 'inbound_events',
                                                     'delivery_attempts', 'delivery_log']) n)
                 OR c.oid IN (SELECT i.inhrelid FROM pg_inherits i
                               WHERE i.inhparent IN (SELECT to_regclass(n) FROM unnest(ARRAY[
                                     'events', 'inbound_events', 'delivery_attempts',
                                     'delivery_log']) n))
              ORDER BY c.relkind = 'p' DESC, c.oid LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO ordersync_runtime', t);
    END LOOP;
END;
$$;

-- Partitions are made by whoever calls event_store_extend (maintenance,
-- a writer that found none, a migration, the previous release during a
-- rolling upgrade); made as the runtime, every later instance can detach and
-- drop them, whatever role it logs in as. Fixed search_path: a definer's
-- function must not resolve names through its caller's.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION event_store_extend(timestamptz, timestamptz)'
                   ' SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END;
$$;
ALTER FUNCTION event_store_extend(timestamptz, timestamptz) OWNER TO ordersync_runtime;
REVOKE EXECUTE ON FUNCTION event_store_extend(timestamptz, timestamptz) FROM PUBLIC;
