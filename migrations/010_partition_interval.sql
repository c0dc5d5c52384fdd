-- 010_partition_interval: partitions made ahead follow the interval in force.
--
-- ordersync writes partition_interval at start (ORDERSYNC_PARTITION_INTERVAL),
-- but partitions already made ahead kept their span: the ones 005 makes at
-- the default 1 day, three days ahead, or those made before the interval was
-- changed. With a shorter interval the next days' rows went into day-long
-- partitions, which retention drops only whole: with ORDERSYNC_RETENTION =
-- '2 minutes' on a new database nothing was dropped for four days (found by
-- scripts/soak). event_store_respan() replaces the latest partitions of each
-- table that hold no row yet, when one of them is not at the interval; the
-- current partition too while it is empty, so a new database gets the
-- interval from its first row. A partition that holds rows stays as it is.
-- ordersync calls it at start and in every maintenance round (a no-op, a few
-- reads of empty partitions, when everything is at the interval).

-- Per table, the partitions not ended at `at` that hold no row, latest first
-- down to the first one that holds a row; those of a table where one of them
-- is not at `step` (ranges from event_store_extend end at the next multiple
-- of the interval, so a partition is at the interval when its end is where
-- the interval puts it).
CREATE FUNCTION event_store_respan_candidates(at timestamptz, step interval) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    tbl   text;
    p     record;
    empty boolean;
    run   text[];
    off   boolean;
    names text[] := '{}';
BEGIN
    FOREACH tbl IN ARRAY ARRAY['events', 'inbound_events', 'delivery_attempts',
                                  'delivery_log'] LOOP
        run := '{}';
        off := false;
        FOR p IN SELECT e.name, e.lo, e.hi FROM event_store_partitions e
                  WHERE e.parent = tbl AND e.hi > at ORDER BY e.lo DESC LOOP
            EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I)', p.name) INTO empty;
            EXIT WHEN NOT empty;
            run := run || p.name;
            off := off OR p.hi <> event_store_floor(p.lo, step) + step;
        END LOOP;
        IF off THEN
            names := names || run;
        END IF;
    END LOOP;
    RETURN names;
END;
$$;

-- Drops the candidates and makes partitions ahead again at the interval, in
-- one transaction: a writer waits for the locks, then finds the new ones.
-- Returns how many partitions it replaced; -1 when a lock was not had within
-- 200 ms (nothing changed: the next maintenance round tries again). The
-- first look takes no lock, so the usual call costs a few reads.
CREATE FUNCTION event_store_respan(at timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    step  interval;
    names text[];
    pname text;
BEGIN
    SELECT partition_interval INTO step FROM event_store_settings;
    IF cardinality(event_store_respan_candidates(at, step)) = 0 THEN
        RETURN 0;
    END IF;
    BEGIN
        SET LOCAL lock_timeout = '200ms';
        -- event_store_extend's lock, then the tables in one order
        PERFORM pg_advisory_xact_lock(event_store_position_lock() + 1);
        LOCK TABLE events, inbound_events, delivery_attempts, delivery_log
            IN ACCESS EXCLUSIVE MODE;
        -- again under the locks: a writer may have filled one meanwhile
        names := event_store_respan_candidates(at, step);
        FOREACH pname IN ARRAY names LOOP
            EXECUTE format('DROP TABLE %I', pname);
            DELETE FROM event_store_partitions e WHERE e.name = pname;
        END LOOP;
        SET LOCAL lock_timeout = 0;
        PERFORM event_store_extend(at + 3 * step, at);
        RETURN cardinality(names);
    EXCEPTION WHEN lock_not_available THEN
        RETURN -1;
    END;
END;
$$;
