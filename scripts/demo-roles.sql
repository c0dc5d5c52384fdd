-- Login roles of the demo (scripts/demo) and compose.yaml, none of them a
-- superuser (README "Security"):
--   ordersync_app   ordersync serve: a member of ordersync_runtime
--   ordersync_ops   a person reading the sync state: a member of ordersync_reader
--   inventory, invoicing, shipping
--                   each downstream service, in a schema of its own that only it
--                   may use (it reads nothing of ordersync's)
-- Run as the database's owner after `ordersync migrate` (which makes
-- ordersync_runtime and ordersync_reader); running it again changes nothing.
-- The passwords are demo values, like every secret of the demo: never use
-- them for a real shop.
\set ON_ERROR_STOP on

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['ordersync_app', 'ordersync_ops', 'inventory', 'invoicing',
                             'shipping'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I LOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- made meanwhile (the cluster's roles are shared)
            END;
        END IF;
        EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', r, r);
    END LOOP;
END;
$$;

GRANT ordersync_runtime TO ordersync_app;
GRANT ordersync_reader TO ordersync_ops;

-- Each downstream service makes its schema at start (CREATE SCHEMA IF NOT
-- EXISTS, which asks for CREATE on the database even when the schema is
-- there) and owns what is in it. A schema made before by another role (a
-- database of an earlier demo, where everything ran as the superuser) is
-- handed over with its tables and functions.
DO $$
DECLARE
    r text;
    o record;
BEGIN
    FOREACH r IN ARRAY ARRAY['inventory', 'invoicing', 'shipping'] LOOP
        EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', current_database(), r);
        IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = r) THEN
            EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', r, r);
            CONTINUE;
        END IF;
        EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r, r);
        -- tables (their own sequences and indexes follow them) and views
        FOR o IN SELECT c.oid::regclass AS rel FROM pg_class c
                  WHERE c.relnamespace = r::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
                    AND c.relowner <> r::regrole LOOP
            EXECUTE format('ALTER TABLE %s OWNER TO %I', o.rel, r);
        END LOOP;
        FOR o IN SELECT c.oid::regclass AS rel FROM pg_class c
                  WHERE c.relnamespace = r::regnamespace AND c.relkind = 'S'
                    AND c.relowner <> r::regrole
                    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                     WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')) LOOP
            EXECUTE format('ALTER SEQUENCE %s OWNER TO %I', o.rel, r);
        END LOOP;
        FOR o IN SELECT p.oid::regprocedure AS fn FROM pg_proc p
                  WHERE p.pronamespace = r::regnamespace AND p.proowner <> r::regrole LOOP
            EXECUTE format('ALTER ROUTINE %s OWNER TO %I', o.fn, r);
        END LOOP;
    END LOOP;
END;
$$;
