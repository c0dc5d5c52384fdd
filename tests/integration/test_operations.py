"""Operations (README: Upgrading, Retention, Dedupe keys): migrations that give
up a lock they cannot have at once and try again, a release that serves the
next one's schema, dedupe keys kept per source for as long as its platform
retries, partitions detached before they are dropped, and sync_backlog's
figures. The rolling upgrade itself is tests/upgrade/run (CI)."""
import json
import os
import subprocess
import threading
import time

import psycopg
import pytest

import webhooks as wh
from conftest import BIN, FIXTURES, Process, request, run_ordersync


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def post(p, source, body, headers):
    st, _, b = request(p.port, "POST", "/webhooks/" + source, body=body, headers=headers)
    return st, json.loads(b) if b else None


def shopify_order(oid, updated="2026-01-02T04:04:07+01:00"):
    o = json.loads(fixture("shopify_order_create.json"))
    o["id"] = oid
    o["updated_at"] = updated
    return wh.dumps(o)


def wait_until(pred, timeout=30, what="condition", interval=0.1):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class Reader:
    """A child process's stderr, line by line, collected by a thread."""

    def __init__(self, proc):
        self.lines = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for line in proc.stderr:
            self.lines.append(line)

    def has(self, text):
        return any(text in l for l in list(self.lines))


# ----------------------------------------------------------------------------- migrations

def test_migrate_gives_up_a_lock_it_cannot_have_at_once_and_tries_again(empty_db):
    """A long transaction holds `sources`, which the next migration alters. The
    migration waits for it at most ORDERSYNC_MIGRATE_LOCK_TIMEOUT_MS at a time,
    so a writer that comes after it is not held behind it for as long as the
    long transaction lasts; once that transaction ends the migration goes
    through."""
    db = empty_db
    run_ordersync(["migrate", "--to", "11"], db.url, check=True)
    blocker = psycopg.connect(db.url)
    blocker.execute("SELECT count(*) FROM sources")  # ACCESS SHARE until it commits
    env = dict(os.environ, DATABASE_URL=db.url, ORDERSYNC_MIGRATE_LOCK_TIMEOUT_MS="200",
               ORDERSYNC_MIGRATE_RETRIES="1000")
    p = subprocess.Popen([BIN, "migrate"], env=env, stderr=subprocess.PIPE, text=True)
    log = Reader(p)
    try:
        wait_until(lambda: log.has("migration waited too long for a lock"), what="a retry")
        # a writer after the migration goes through while the long transaction is open
        with psycopg.connect(db.url, autocommit=True) as w:
            w.execute("SET statement_timeout = '10s'")
            w.execute("INSERT INTO sources (id, kind, secret) VALUES ('s1', 'shopify', 'x')")
        assert p.poll() is None  # still trying
        retry = json.loads([l for l in log.lines if "waited too long" in l][0])
        assert retry["lock_timeout_ms"] == 200 and retry["migration"].endswith(".sql")
    finally:
        blocker.rollback()
        blocker.close()
    assert p.wait(60) == 0, "".join(log.lines[-5:])
    # every migration applied: another run has nothing to do
    again = run_ordersync(["migrate"], db.url, check=True)
    assert "0 migration(s) applied" in again.stderr
    assert db.scalar("SELECT count(*) FROM sources WHERE id = 's1'") == 1


def test_migrate_without_retries_fails_and_says_why(empty_db):
    db = empty_db
    run_ordersync(["migrate", "--to", "11"], db.url, check=True)
    with psycopg.connect(db.url) as blocker:
        blocker.execute("SELECT count(*) FROM sources")
        p = run_ordersync(["migrate"], db.url, env={"ORDERSYNC_MIGRATE_LOCK_TIMEOUT_MS": "100",
                                                   "ORDERSYNC_MIGRATE_RETRIES": "0"})
        blocker.rollback()
    assert p.returncode != 0
    failed = [json.loads(l) for l in p.stderr.splitlines() if '"migration failed"' in l][0]
    assert "lock timeout" in failed["detail"] and "gave up after 1 attempts" in failed["detail"]
    # the migration that needed the lock was rolled back whole (those before it, which
    # did not, stay applied)
    assert db.scalar("SELECT to_regclass('dedupe_keys')") is None
    assert db.scalar("SELECT count(*) FROM information_schema.columns"
                     " WHERE table_name = 'sources' AND column_name = 'dedupe_window'") == 0


def test_a_release_serves_the_next_ones_schema(db):
    """During a rolling upgrade the next release migrates first: an instance of
    this one that starts (or reconnects) then must serve, and be ready, on it."""
    db.query("INSERT INTO schema_migrations VALUES (999, '999_next_release.sql', repeat('a', 64))")
    p = Process(db.url).start()
    try:
        p.wait_ready()
        warn = p.log_lines("database schema is newer than this ordersync: serving on it")
        assert warn and "999_next_release.sql" in warn[0]["detail"], p.logs[:10]
    finally:
        assert p.stop() == 0
    # but it never migrates a database a newer release has migrated
    m = run_ordersync(["migrate"], db.url)
    assert m.returncode != 0 and "999_next_release.sql" in m.stderr


# ----------------------------------------------------------------------------- dedupe keys

def seed_sources(db):
    db.query("""INSERT INTO sources (id, kind, secret) VALUES
        ('shop', 'shopify', %(shop)s), ('woo', 'woocommerce', %(woo)s),
        ('stripe', 'stripe', %(stripe)s), ('erp', 'standard', %(std)s)""",
             {"shop": wh.SHOPIFY_SECRET, "woo": wh.WOO_SECRET, "stripe": wh.STRIPE_SECRET,
              "std": wh.STANDARD_SECRET})
    db.query("INSERT INTO sources (id, kind, secret, dedupe_window) VALUES"
             " ('shop-slow', 'shopify', %s, '9 days')", (wh.SHOPIFY_SECRET,))


def key_window(db, source):
    """How long the key of `source`'s one webhook is kept: its expiry less the
    time it was received (the same transaction's now())."""
    return db.scalar("SELECT k.expires_at - i.received_at FROM inbound_events i"
                     " JOIN dedupe_keys k ON k.digest = dedupe_digest(i.source_id, i.dedupe_key)"
                     " WHERE i.source_id = %s", (source,))


def test_dedupe_keys_are_kept_for_their_senders_retry_window(db, ordersync):
    seed_sources(db)
    p = ordersync()
    shop = shopify_order(4100001)
    shop_h = wh.shopify(shop, webhook_id="wh-4100001")
    slow = shopify_order(4100002)
    slow_h = wh.shopify(slow, webhook_id="wh-4100002")
    stripe = fixture("stripe_checkout_session_completed.json")
    woo = fixture("woocommerce_order_created.json")
    std = fixture("standard_order_created.json")
    std_h = wh.standard(std, msg_id="msg_dedupe_window_1")
    sent = [("shop", shop, shop_h), ("shop-slow", slow, slow_h),
            ("stripe", stripe, wh.stripe(stripe)), ("woo", woo, wh.woocommerce(woo)),
            ("erp", std, std_h)]
    for source, body, headers in sent:
        st, resp = post(p, source, body, headers)
        assert st == 200 and resp["status"] == "accepted", (source, resp)
    # each platform's documented retry span, with margin; a source's own setting first
    import datetime as dt
    day = dt.timedelta(days=1)
    assert {s: key_window(db, s) for s, _, _ in sent} == {
        "shop": day, "shop-slow": 9 * day, "stripe": 4 * day, "woo": day, "erp": 4 * day}
    # a key is 16 bytes, whatever the sender's id
    assert db.scalar("SELECT count(*) FROM dedupe_keys") == 5
    # within the window every copy is a duplicate (Stripe and Standard Webhooks
    # sign a fresh timestamp on each retry)
    for source, body, headers in [("shop", shop, shop_h), ("shop-slow", slow, slow_h),
                                  ("stripe", stripe, wh.stripe(stripe)),
                                  ("woo", woo, wh.woocommerce(woo)),
                                  ("erp", std, wh.standard(std, msg_id="msg_dedupe_window_1"))]:
        st, resp = post(p, source, body, headers)
        assert st == 200 and resp["status"] == "duplicate", (source, resp)
    # a day later the shopify and woocommerce keys are gone, the others not
    assert db.scalar("SELECT event_store_prune(10000, now() + interval '1 day 1 minute')") == 2
    assert db.scalar("SELECT count(*) FROM dedupe_keys") == 3
    events = db.scalar("SELECT count(*) FROM events")
    # a copy that comes anyway (a dashboard's resend) carries a state the order has:
    # recorded, nothing emitted
    st, resp = post(p, "shop", shop, shop_h)
    assert st == 200 and resp["status"] == "stale", resp
    st, resp = post(p, "shop-slow", slow, slow_h)
    assert st == 200 and resp["status"] == "duplicate", resp
    assert db.scalar("SELECT count(*) FROM events") == events


def test_keys_the_previous_release_stored_still_count(db, ordersync):
    """The previous release stored (source, key) in inbound_keys; a batch of it
    that was already running when the migration committed still does."""
    seed_sources(db)
    p = ordersync()
    # stored before the migration
    db.query("INSERT INTO inbound_keys (source_id, dedupe_key) VALUES ('shop', 'old-1')")
    body = shopify_order(4200001)
    st, resp = post(p, "shop", body, wh.shopify(body, webhook_id="old-1"))
    assert st == 200 and resp["status"] == "duplicate", resp
    # a key this release stored: an old batch's insert of it is a no-op, which the
    # old batch reports as a duplicate
    body = shopify_order(4200002)
    st, resp = post(p, "shop", body, wh.shopify(body, webhook_id="new-2"))
    assert st == 200 and resp["status"] == "accepted", resp
    assert db.query("INSERT INTO inbound_keys (source_id, dedupe_key) VALUES ('shop', 'new-2')"
                    " ON CONFLICT DO NOTHING RETURNING dedupe_key") == []
    # an old batch's key, stored after the migration: this release sees it too
    assert db.query("INSERT INTO inbound_keys (source_id, dedupe_key) VALUES ('shop', 'old-3')"
                    " ON CONFLICT DO NOTHING RETURNING dedupe_key") == [("old-3",)]
    body = shopify_order(4200003)
    st, resp = post(p, "shop", body, wh.shopify(body, webhook_id="old-3"))
    assert st == 200 and resp["status"] == "duplicate", resp


def batch(*elements):
    """An ingest_batch argument: (source, sender's key, order id) per webhook,
    as ordersync's ingest builds it."""
    return json.dumps([{"s": s, "k": k, "t": "orders/create", "e": "order.created",
                        "o": {"source": s, "external_id": x, "status": "open", "currency": "EUR",
                              "total": "10.00", "updated_at": "2026-01-01T00:00:00Z",
                              "lines": [], "partial": False},
                        "p": "{}"} for s, k, x in elements])


def outcomes(conn, *elements):
    return [o for _, o in conn.execute("SELECT idx, outcome FROM ingest_batch(%s::jsonb)"
                                       " ORDER BY idx", (batch(*elements),)).fetchall()]


def test_a_key_is_taken_once_within_a_batch_and_across_batches(db):
    seed_sources(db)
    with db.connect() as c:
        # the same webhook twice in one batch (a retry that came while the first
        # copy waited for its commit): the first copy wins
        assert outcomes(c, ("shop", "k-1", "5100001"), ("shop", "k-1", "5100001"),
                        ("shop", "k-2", "5100002")) == ["applied", "duplicate", "applied"]
        # in a later batch, whatever comes with it; the same key from another
        # source is another key
        assert outcomes(c, ("shop", "k-3", "5100003"), ("shop", "k-2", "5100002"),
                        ("shop-slow", "k-2", "5100002")) == ["applied", "duplicate", "applied"]
    assert db.scalar("SELECT count(*) FROM dedupe_keys") == 4
    assert db.scalar("SELECT count(*) FROM events") == 4


def blocked_on_a_lock(db, pid):
    return db.scalar("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                     (pid,))


@pytest.mark.parametrize("first_ends", ["commit", "rollback"])
def test_concurrent_batches_with_the_same_key_one_wins(db, first_ends):
    """Two instances (two connections) ingest the same webhook at once: the
    second waits for the first's transaction, then is a duplicate if it
    committed, and takes the key if it rolled back."""
    seed_sources(db)
    first = psycopg.connect(db.url)
    second = psycopg.connect(db.url, autocommit=True)
    try:
        assert outcomes(first, ("shop", "same", "5200001")) == ["applied"]
        got = {}
        t = threading.Thread(target=lambda: got.update(
            out=outcomes(second, ("shop", "other", "5200002"), ("shop", "same", "5200001"))))
        t.start()
        wait_until(lambda: blocked_on_a_lock(db, second.info.backend_pid), timeout=30,
                   what="the second batch to wait for the first")
        assert t.is_alive()
        getattr(first, first_ends)()
        t.join(30)
        assert not t.is_alive()
        if first_ends == "commit":
            assert got["out"] == ["applied", "duplicate"]
        else:
            assert got["out"] == ["applied", "applied"]
    finally:
        first.close()
        second.close()
    # one order, one event, one key, whichever connection won it
    assert db.scalar("SELECT count(*) FROM events e JOIN orders o ON o.id = e.order_id"
                     " WHERE o.external_id = '5200001'") == 1
    assert db.scalar("SELECT count(*) FROM dedupe_keys") == 2


def test_a_key_taken_by_the_previous_release_in_flight_makes_this_ones_copy_wait(db):
    """The previous release writes inbound_keys (the trigger puts the digest in
    dedupe_keys): a batch of this release with the same key waits for it and is
    a duplicate once it commits."""
    seed_sources(db)
    old = psycopg.connect(db.url)
    new = psycopg.connect(db.url, autocommit=True)
    try:
        assert old.execute("INSERT INTO inbound_keys (source_id, dedupe_key) VALUES"
                           " ('shop', 'both') ON CONFLICT DO NOTHING RETURNING dedupe_key"
                           ).fetchall() == [("both",)]
        got = {}
        t = threading.Thread(target=lambda: got.update(
            out=outcomes(new, ("shop", "both", "5300001"))))
        t.start()
        wait_until(lambda: blocked_on_a_lock(db, new.info.backend_pid), timeout=30,
                   what="this release's batch to wait for the previous one's")
        old.commit()
        t.join(30)
        assert not t.is_alive()
        assert got["out"] == ["duplicate"]
    finally:
        old.close()
        new.close()


def test_a_key_goes_once_its_window_has_passed_and_not_before(db):
    seed_sources(db)
    with db.connect() as c:
        assert outcomes(c, ("stripe", "evt_1", "5400001")) == ["applied"]
        # the legacy table too: a key the previous release stored just now
        c.execute("INSERT INTO inbound_keys (source_id, dedupe_key) VALUES ('stripe', 'evt_old')")
        # a minute before the end of Stripe's 4 days: nothing goes, both still count
        assert c.execute("SELECT event_store_prune(10000, now() + interval '4 days'"
                         " - interval '1 minute')").fetchone()[0] == 0
        assert outcomes(c, ("stripe", "evt_1", "5400001"), ("stripe", "evt_old", "5400002")) == [
            "duplicate", "duplicate"]
        # a minute after: the new table's key goes (the legacy one is kept the
        # previous release's way, 7 days or the retention)
        assert c.execute("SELECT event_store_prune(10000, now() + interval '4 days'"
                         " + interval '1 minute')").fetchone()[0] == 2
        assert c.execute("SELECT count(*) FROM dedupe_keys").fetchone()[0] == 0
        # (the key in inbound_keys and its digest: the digest went, the legacy row counts)
        assert outcomes(c, ("stripe", "evt_old", "5400002")) == ["duplicate"]
        # the key that went is new again: the same order's state, so stale, not emitted
        assert outcomes(c, ("stripe", "evt_1", "5400001")) == ["stale"]


# ----------------------------------------------------------------------------- retention

def migrated_earlier(db, ago):
    """Moves the end of the migration's first partitions (`*_p_before_v5`, up
    to the moment of the migration) and the start of the next ones back to
    `ago` before now, bounds and bookkeeping alike, as if the database had been
    migrated then. Both are empty: nothing moves from one to the other."""
    db.query("""
        DO $$
        DECLARE
            t       text;
            cut     timestamptz;
            new_cut timestamptz := now() - interval '%s';
            nxt     record;
        BEGIN
            FOREACH t IN ARRAY ARRAY['events', 'inbound_events', 'delivery_attempts',
                                     'delivery_log'] LOOP
                SELECT hi INTO cut FROM event_store_partitions WHERE name = t || '_p_before_v5';
                CONTINUE WHEN cut <= new_cut;
                SELECT * INTO nxt FROM event_store_partitions WHERE parent = t AND lo = cut;
                EXECUTE format('ALTER TABLE %%I DETACH PARTITION %%I', t, t || '_p_before_v5');
                EXECUTE format('ALTER TABLE %%I DETACH PARTITION %%I', t, nxt.name);
                EXECUTE format('ALTER TABLE %%I ATTACH PARTITION %%I'
                               ' FOR VALUES FROM (MINVALUE) TO (%%L)', t, t || '_p_before_v5',
                               new_cut);
                EXECUTE format('ALTER TABLE %%I ATTACH PARTITION %%I FOR VALUES FROM (%%L) TO (%%L)',
                               t, nxt.name, new_cut, nxt.hi);
                UPDATE event_store_partitions SET hi = new_cut WHERE name = t || '_p_before_v5';
                UPDATE event_store_partitions SET lo = new_cut WHERE name = nxt.name;
            END LOOP;
        END $$""" % ago.replace("'", ""))


def test_partitions_are_detached_without_holding_ingest_and_finished_after_a_crash(db):
    """A reader holds `events` (a long report): DROP TABLE of a partition would
    take an ACCESS EXCLUSIVE lock on `events` and make every ingest batch wait
    behind it. The partition is detached concurrently instead: ingest goes on,
    the detach waits, gives up after its lock_timeout and leaves the partition
    "detach pending"; ordersync dies; the next start finishes the detach and
    drops the partition."""
    # the migration's first partitions end when the template was migrated, maybe
    # a moment ago: make this database as if it had been migrated two minutes ago,
    # its first partitions past the retention (1 minute, the least), rather than
    # wait for that in real time (CI's scripts/soak waits for its partitions to
    # pass a 1-2 minute retention, and drops them, in real time)
    migrated_earlier(db, "2 minutes")
    assert db.scalar("SELECT hi < now() - interval '1 minute' FROM"
                     " event_store_partitions WHERE name = 'events_p_before_v5'")
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    env = {"ORDERSYNC_RETENTION": "1 minute", "ORDERSYNC_PARTITION_INTERVAL": "1 minute",
           "ORDERSYNC_RELAY": "0"}
    reader = psycopg.connect(db.url)
    reader.execute("SELECT count(*) FROM events")  # locks events and its partitions until it ends
    p = Process(db.url, env=env).start()
    try:
        p.wait_ready()
        pending = ("SELECT i.inhdetachpending FROM pg_inherits i"
                   " WHERE i.inhrelid = 'events_p_before_v5'::regclass")
        wait_until(lambda: db.scalar(pending), what="the detach to start")
        # ingest goes on while the detach waits for the reader
        for i in range(20):
            body = shopify_order(4300000 + i)
            st, resp = post(p, "shop", body, wh.shopify(body))
            assert st == 200 and resp["status"] == "accepted", resp
        assert db.scalar("SELECT count(*) FROM events") == 20
        wait_until(lambda: p.log_lines("detaching a partition failed"), timeout=30,
                   what="the detach to give up")
        assert db.scalar(pending) is True
        # the other parents' first partitions, which nobody reads, go in the same round
        for parent in ("inbound_events", "delivery_attempts", "delivery_log"):
            wait_until(lambda: db.scalar("SELECT to_regclass(%s)", (parent + "_p_before_v5",))
                       is None, what=parent + "'s first partition to go")
    finally:
        p.stop(sig=9)
        reader.rollback()
        reader.close()
    p = Process(db.url, env=env).start()
    try:
        p.wait_ready()
        dropped = p.wait_log(lambda r: r.get("msg") == "partition dropped"
                             and r.get("partition") == "events_p_before_v5")
        assert dropped, p.logs
        assert db.scalar("SELECT to_regclass('events_p_before_v5')") is None
        assert db.scalar("SELECT count(*) FROM event_store_partitions"
                         " WHERE name = 'events_p_before_v5'") == 0
        assert db.scalar("SELECT count(*) FROM events") == 20
    finally:
        assert p.stop() == 0


# ----------------------------------------------------------------------------- sync_backlog

def add_events(conn, types):
    """Commits events the way ingest does: under the position lock, one INSERT."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(event_store_position_lock())")
        conn.execute("INSERT INTO events (position, id, order_id, type, created_at, payload)"
                     " SELECT nextval('event_position'), gen_random_uuid(), 1, t, now(), '{}'"
                     " FROM unnest(%s::text[]) WITH ORDINALITY u(t, n) ORDER BY n", (types,))


TYPES = ["order.created", "order.updated", "order.paid", "order.cancelled", "order.refunded",
         "order.fulfilled"]


def backlog(db):
    return {r[0]: r[1] for r in db.query("SELECT destination_id, pending FROM sync_backlog")}


def counted(db, dest, types):
    """The plain count sync_backlog.pending stands for."""
    return db.scalar("SELECT count(*) FROM events e, delivery_streams s"
                     " WHERE s.destination_id = %s AND e.position > s.position"
                     " AND (%s::text[] IS NULL OR e.type = ANY (%s::text[]))",
                     (dest, types, types))


def test_pending_counts_exactly_across_checkpoints_and_subscriptions(empty_db):
    db = empty_db
    # events written before counting began (the previous release's) count too
    run_ordersync(["migrate", "--to", "11"], db.url, check=True)
    with db.connect() as c:
        add_events(c, [TYPES[i % 6] for i in range(700)])
    run_ordersync(["migrate"], db.url, check=True)
    for d in ("all", "paid", "late"):
        db.query("INSERT INTO destinations (id, mode, feed_token) VALUES (%s, 'poll', %s)",
                 (d, "a long feed token for " + d))
    db.query("INSERT INTO subscriptions VALUES ('paid', 'order.paid'), ('paid', 'order.refunded')")
    db.query("UPDATE delivery_streams SET position = 0, start_position = 0")
    with db.connect() as c:
        for k in range(12):  # 12 batches of 250: several checkpoints
            add_events(c, [TYPES[(k * 7 + i) % 5] for i in range(250)])
    assert db.scalar("SELECT count(*) FROM event_counts") >= 3
    subs = {"all": None, "paid": ["order.paid", "order.refunded"], "late": None}
    for cursor_all, cursor_paid in ((0, 0), (350, 1701), (2100, 3200), (3700, 3700)):
        db.query("UPDATE delivery_streams SET position = %s WHERE destination_id = 'all'",
                 (cursor_all,))
        db.query("UPDATE delivery_streams SET position = %s WHERE destination_id IN"
                 " ('paid', 'late')", (cursor_paid,))
        assert backlog(db) == {d: counted(db, d, t) for d, t in subs.items()}, (cursor_all,
                                                                               cursor_paid)
    assert backlog(db)["all"] == 0
    # checkpoints lost (a TRUNCATE by hand): counted one by one until counting starts again
    db.query("TRUNCATE event_counts")
    db.query("UPDATE delivery_streams SET position = 100")
    assert backlog(db) == {d: counted(db, d, t) for d, t in subs.items()}
    with db.connect() as c:
        for k in range(6):
            add_events(c, [TYPES[k % 6]] * 300)
    assert db.scalar("SELECT count(*) FROM event_counts") >= 2
    assert backlog(db) == {d: counted(db, d, t) for d, t in subs.items()}


def test_oldest_pending_age_is_that_of_what_pending_counts(db):
    """Issue 23, 3: a destination with nothing pending and one row blocked behind
    a dead one had an oldest pending age."""
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('inv', 'http://127.0.0.1:9/', %s)",
             (wh.DEST_SECRET,))
    with db.connect() as c:
        add_events(c, ["order.created", "order.updated"])
    db.query("UPDATE events SET created_at = created_at - interval '1 hour'")
    db.query("UPDATE delivery_streams SET position = (SELECT max(position) FROM events),"
             " start_position = 0")
    first, second = [r[0] for r in db.query("SELECT position FROM events ORDER BY position")]
    db.query("INSERT INTO deliveries (destination_id, position, order_id, event_created_at, state,"
             " attempts, blocked_by) SELECT 'inv', position, order_id, created_at,"
             " CASE WHEN position = %s THEN 'dead' ELSE 'blocked' END, 1,"
             " CASE WHEN position = %s THEN NULL ELSE %s END FROM events",
             (first, first, first))
    row = db.query("SELECT pending, dead, blocked, oldest_pending_age FROM sync_backlog")[0]
    assert row == (0, 1, 1, None)
    # a replay makes the dead one pending again: now it is pending, and as old as its event
    db.query("SELECT delivery_replay('inv')")
    pending, age = db.query("SELECT pending, extract(epoch FROM oldest_pending_age)"
                            " FROM sync_backlog")[0]
    assert pending == 1 and 3590 < age < 3700, (pending, age)
