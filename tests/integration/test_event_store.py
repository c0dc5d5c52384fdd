"""The event store (migrations 005-007), property by property:

1. positions in commit order: no reader ever skips an event committed late;
2. each payload stored once; a successful delivery writes no row of its own,
   and the stream cursor moves by HOT updates;
3. a claim costs the same however many rows wait in backoff or blocked;
4. retention by partition: made ahead, dropped when past the retention and
   delivered, kept while anything in them is not; dedupe keys outlive a
   short retention;
5. dead events are visible and governed (on_dead block/skip, skip, replay);
6. the upgrade from the outbox schema keeps every undelivered event.
"""
import copy
import datetime
import json
import os
import re
import subprocess
import tempfile
import threading
import time

import pytest

import webhooks as wh
from conftest import BIN, FIXTURES, Process, free_port, request, run_ordersync
from receiver import wait_for

TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))
TOKEN = "feed-token-0123456789abcdef"
BIN_DIR = os.path.dirname(BIN)
SANITIZED = os.environ.get("ORDERSYNC_SANITIZED") == "1"


def order_body(oid, topic="orders/create", updated="2026-01-02T03:04:05Z"):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    o["updated_at"] = updated
    if topic == "orders/cancelled":
        o["cancelled_at"] = updated
        o["cancel_reason"] = "customer"
    return wh.dumps(o)


def send(p, oid, topic="orders/create", updated="2026-01-02T03:04:05Z", webhook_id=None):
    b = order_body(oid, topic, updated)
    st, _, resp = request(p.port, "POST", "/webhooks/shop", body=b,
                          headers=wh.shopify(b, topic, webhook_id=webhook_id))
    return st, json.loads(resp) if resp else None


def read_feed(port, after, limit=1000, wait=1):
    """One page of the feed. A 503 (the feed's database connection is not up
    yet just after a start: it comes with Retry-After) is tried again for up
    to 10 s, as a consumer does."""
    deadline = time.time() + 10
    while True:
        st, _, body = request(port, "GET", "/feeds/erp?after=%s&limit=%d&wait=%d"
                              % (after, limit, wait),
                              headers={"Authorization": "Bearer " + TOKEN}, timeout=30)
        if st != 503 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert st == 200, body
    return json.loads(body)


def add_source(db):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))


# ----------------------------------------------------------------------------- 1. commit order

def test_a_feed_never_skips_an_event_that_committed_late(db, ordersync):
    """Two batches on two connections: the first to start commits last. With
    positions taken at insert, the reader passes the second's events and never
    sees the first's; with positions in commit order it sees both."""
    add_source(db)
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)", (TOKEN,))
    # order 1's transaction stays open 1.5 s after its last statement (a
    # deferred constraint trigger runs at COMMIT): a slow fsync, a busy disk
    db.query("""CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$""")
    db.query("""CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON orders
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.external_id = '1')
                EXECUTE FUNCTION slow_commit()""")
    p = ordersync(env={"ORDERSYNC_INGEST_CONNECTIONS": "2", "ORDERSYNC_RELAY": "0"})
    slow = threading.Thread(target=lambda: send(p, 1))
    slow.start()
    time.sleep(0.3)
    assert send(p, 2)[0] == 200
    seen, cursor = [], 0
    deadline = time.time() + 10
    while time.time() < deadline and len(seen) < 2:
        page = read_feed(p.port, cursor)
        seen += [e["data"]["external_id"] for e in page["events"]]
        cursor = page["next"]
    slow.join()
    # what a reader that kept going would still get
    seen += [e["data"]["external_id"] for e in read_feed(p.port, cursor, wait=0)["events"]]
    assert sorted(seen) == ["1", "2"], seen


def run_loadgen(port, n, id_base, concurrency=32):
    out = subprocess.run(
        [os.path.join(BIN_DIR, "loadgen"), "--target", "127.0.0.1:%d" % port, "--secret",
         wh.SHOPIFY_SECRET, "--template", os.path.join(FIXTURES, "shopify_order_create.json"),
         "--path", "/webhooks/shop", "--concurrency", str(concurrency), "--duration", "600",
         "--requests", str(n), "--id-base", str(id_base), "--drain-timeout", "60"],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class Sink:
    """A `downstream --role sink` that records every event it accepts."""

    def __init__(self, name, tmp):
        self.port = free_port()
        self.url = "http://127.0.0.1:%d/hooks" % self.port
        self.path = os.path.join(tmp, name + ".log")
        env = dict(os.environ, DOWNSTREAM_SECRET=wh.DEST_SECRET, DOWNSTREAM_ROLE="sink",
                   DOWNSTREAM_LISTEN="127.0.0.1:%d" % self.port, DOWNSTREAM_RECORD=self.path,
                   DOWNSTREAM_LOG_LEVEL="warn")
        self.proc = subprocess.Popen([os.path.join(BIN_DIR, "downstream")], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._up(), timeout=10, what="sink up")

    def _up(self):
        try:
            return request(self.port, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    def external_ids(self):
        with open(self.path) as f:
            return {line.rstrip("\n").split("\t")[2].split(":", 1)[1] for line in f if line.strip()}

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def test_every_acknowledged_order_reaches_every_reader_under_concurrency(db, tmp_path):
    """Two instances with four ingest connections each, the relay and a feed
    consumer running throughout: every acknowledged order reaches every push
    destination and the feed (6,000 orders; 3,000 in the sanitizer build).

    What can go wrong is an event committed late (a connection's batch
    committing after a later position's) being passed over by a reader that
    read in between. The eight connections commit a batch at a time while
    the relay and the feed read, so the chances for that come with every
    commit that overlaps a read, not with the length of the run: 6,000 orders
    from 64 concurrent senders go through the same instances, connections,
    relay and consumer, side by side at the same rate, as 20,000 (60 s of a
    loaded 2-core machine) or 50,000 did; only the number of commits is
    smaller. The test checks that the readers did read while the orders were
    still arriving, so that the race it is about was run.
    test_a_feed_never_skips_an_event_that_committed_late makes the late commit
    on purpose; CI's scripts/soak keeps a load going for minutes."""
    total = 3000 if SANITIZED else 6000
    add_source(db)
    sinks = {n: Sink(n, str(tmp_path)) for n in ("inventory", "invoicing", "shipping")}
    procs = []
    try:
        for n, s in sinks.items():
            db.query("INSERT INTO destinations (id, url, secret, max_in_flight) VALUES"
                     " (%s, %s, %s, 32)", (n, s.url, wh.DEST_SECRET))
        db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
                 (TOKEN,))
        env = {"ORDERSYNC_INGEST_CONNECTIONS": "4", "ORDERSYNC_LEASE_S": "5",
               "ORDERSYNC_LOG_LEVEL": "info"}
        for _ in range(2):
            p = Process(db.url, env=env).start()
            p.wait_ready()
            procs.append(p)
        feed_seen = set()
        state = {"cursor": 0, "stop": False, "loading": True, "read_while_loading": 0}

        def consumer():
            while not state["stop"]:
                asked_while_loading = state["loading"]
                page = read_feed(procs[0].port, state["cursor"], wait=1)
                feed_seen.update(e["data"]["external_id"] for e in page["events"])
                state["cursor"] = page["next"]
                if asked_while_loading:
                    state["read_while_loading"] += len(page["events"])

        c = threading.Thread(target=consumer)
        c.start()
        half = total // 2
        bases = (3000000000000000000, 3000000000001000000)
        results = [None, None]
        loads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, run_loadgen(procs[i].port, half, bases[i]))) for i in range(2)]
        for t in loads:
            t.start()
        for t in loads:
            t.join()
        state["loading"] = False
        # the readers ran beside the load: by the last acknowledgement the relay
        # had sent to every destination, and the consumer had read events with
        # requests made while the orders were arriving
        for n, s in sinks.items():
            assert os.path.getsize(s.path) > 0, "%s got nothing while the orders arrived" % n
        assert state["read_while_loading"] > 0, "the feed was not read while the orders arrived"
        for r in results:
            assert r["ok"] == half, r  # every request acknowledged: the expected set is exact
        acked = {str(b + i) for b in bases for i in range(half)}
        wait_for(lambda: db.scalar("SELECT count(*) FROM event_deliveries"
                                   " WHERE state <> 'delivered'") == 0,
                 timeout=300, interval=1, what="every event delivered and read")
        state["stop"] = True
        c.join(30)
        for n, s in sinks.items():
            got = s.external_ids()
            assert not acked - got, "%s misses %d orders" % (n, len(acked - got))
        assert not acked - feed_seen, "the feed missed %d orders" % len(acked - feed_seen)
    finally:
        state_stop = locals().get("state")
        if state_stop:
            state_stop["stop"] = True
        for p in procs:
            p.stop()
        for s in sinks.values():
            s.stop()


# ----------------------------------------------------------------------------- 2. storage

# the `stack` fixture's destinations (conftest.py)
pytestmark = pytest.mark.stack(retry_schedule="{0.2 seconds, 0.4 seconds}", timeout_ms=2000,
                               breaker_threshold=1000)


def all_delivered(db):
    return db.scalar("SELECT count(*) > 0 AND bool_and(state = 'delivered')"
                     " FROM event_deliveries")


def test_each_payload_once_and_success_writes_no_row(stack, db, receivers):
    p = stack()
    for i in range(40):
        assert send(p, 100 + i)[0] == 200
    wait_for(lambda: all_delivered(db), what="delivery")
    # one event row per event, whatever the number of destinations
    assert db.scalar("SELECT count(*) FROM events") == 40
    assert db.scalar("SELECT count(*) FROM event_deliveries") == 120
    # successes left no per-delivery row: only the compact log and the cursors
    assert db.scalar("SELECT count(*) FROM deliveries") == 0
    assert db.query("SELECT destination_id, http_status, error FROM delivery_attempts") == []
    assert db.scalar("SELECT sum(delivered) FROM delivery_log") == 120
    # the delivery state carries no payload: fixed-width columns and short text
    cols = dict(db.query("SELECT column_name, data_type FROM information_schema.columns"
                         " WHERE table_name = 'deliveries'"))
    assert "payload" not in cols and all(t != "jsonb" for t in cols.values())
    # the cursor moved by HOT updates only (no index changes on the success path);
    # backends report their statistics within a second or so of going idle
    def stats():
        return db.query("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                        " WHERE relname = 'delivery_streams'")[0]
    wait_for(lambda: stats()[0] > 0, timeout=10, what="statistics")
    upd, hot = stats()
    # An update that changes no indexed column is HOT unless the row's page is
    # full: on a busy machine other statements keep the old versions alive a
    # while, the page fills, and each row moves to a new page once, which is
    # then not HOT. An indexed column changed would make every update non-HOT.
    pages = db.scalar("SELECT pg_relation_size('delivery_streams')"
                      " / current_setting('block_size')::int")
    rows = db.scalar("SELECT count(*) FROM delivery_streams")
    assert upd - hot <= rows * (pages - 1), (upd, hot, pages)


# ----------------------------------------------------------------------------- 3. claims

def claim_buffers(db, due):
    """Buffers one claim of `due` due rows touches (plans warmed, in a rolled-back transaction)."""
    with db.connect() as c:
        c.autocommit = False
        for _ in range(2):
            c.execute("SELECT count(*) FROM delivery_claim('{inventory}', %s, '60 seconds', 'me')",
                      ("{%d}" % due,))
            c.rollback()
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT * FROM"
            " delivery_claim('{inventory}', %s, '60 seconds', 'me')", ("{%d}" % due,)))
        c.rollback()
    m = re.search(r"shared hit=(\d+)(?: read=(\d+))?", plan)
    return int(m.group(1)) + int(m.group(2) or 0)


def test_a_claim_costs_the_same_with_a_large_backlog(db):
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('inventory',"
             " 'http://127.0.0.1:9/i', %s)", (wh.DEST_SECRET,))
    db.query("INSERT INTO events (position, id, order_id, type, created_at, payload)"
             " SELECT nextval('event_position'), gen_random_uuid(), g, 'order.created', now(),"
             " repeat('x', 900) FROM generate_series(1, 40100) g")
    # 100 rows due now
    db.query("INSERT INTO deliveries (destination_id, position, order_id, event_created_at,"
             " state, attempts) SELECT 'inventory', position, order_id, created_at, 'pending', 1"
             " FROM events WHERE order_id > 40000")
    db.query("ANALYZE deliveries")
    small = claim_buffers(db, 20)
    # 20,000 rows in backoff and 20,000 blocked behind an earlier event
    db.query("INSERT INTO deliveries (destination_id, position, order_id, event_created_at,"
             " state, attempts, next_at) SELECT 'inventory', position, order_id, created_at,"
             " 'pending', 1, now() + interval '1 hour' FROM events WHERE order_id <= 20000")
    db.query("INSERT INTO deliveries (destination_id, position, order_id, event_created_at,"
             " state, blocked_by) SELECT 'inventory', position, order_id, created_at,"
             " 'blocked', 1 FROM events WHERE order_id > 20000 AND order_id <= 40000")
    db.query("ANALYZE deliveries")
    large = claim_buffers(db, 20)
    # the same rows are claimed; only the index depth may add a page or two per row
    assert large <= small * 1.5 + 20, (small, large)


def test_a_stream_read_costs_the_same_with_a_large_backlog(db):
    def read_buffers():
        with db.connect() as c:
            plan = "\n".join(r[0] for r in c.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT e.position, e.payload"
                " FROM events e WHERE e.position > 0 ORDER BY e.position LIMIT 256"))
        return sum(int(x) for x in re.findall(r"shared hit=(\d+)", plan.split("Planning")[0])[:1])

    db.query("INSERT INTO events (position, id, order_id, type, created_at, payload)"
             " SELECT nextval('event_position'), gen_random_uuid(), g, 'order.created', now(),"
             " repeat('x', 900) FROM generate_series(1, 1000) g")
    small = read_buffers()
    db.query("INSERT INTO events (position, id, order_id, type, created_at, payload)"
             " SELECT nextval('event_position'), gen_random_uuid(), g, 'order.created', now(),"
             " repeat('x', 900) FROM generate_series(1, 100000) g")
    large = read_buffers()
    assert large <= small + 10, (small, large)


def test_reads_stay_index_scans_when_planned_on_empty_tables(db):
    """Ingest's, the relay's and the feeds' statements keep the plan made at
    their first call on a connection. Made on tables that ANALYZE found empty,
    a plan that scanned them whole would grow with every order until the next
    ANALYZE."""
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', 'x')")
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('inventory',"
             " 'http://127.0.0.1:9/i', %s)", (wh.DEST_SECRET,))
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', 'a long enough feed token 0123456789')")
    db.query("VACUUM ANALYZE events, deliveries, delivery_streams, orders, inbound_keys,"
             " inbound_events")

    def orders(lo, n, updated, topic="orders/create", event="order.created"):
        return json.dumps([{"s": "shop", "k": "k%d-%s" % (i, updated), "t": topic, "e": event,
                            "o": canonical(str(i), updated), "p": "{}"} for i in range(lo, lo + n)])

    updates = orders(0, 32, "2026-03-01T00:00:00Z", "orders/updated", "order.updated")
    reads = {
        "stream_read": "SELECT count(*) FROM stream_read('{inventory}', '{0}', '{NULL}',"
                       " '{256}', '{true}')",
        "feed_read": "SELECT count(*) FROM feed_read('erp', 0, NULL, 256)",
        "delivery_claim": "SELECT count(*) FROM delivery_claim('{inventory}', '{64}',"
                          " '60 seconds', 'me')",
    }
    with db.connect() as c:
        c.autocommit = False
        for sql in reads.values():  # planned now, on empty tables
            for _ in range(6):  # past the calls a parameterized plan is made custom
                c.execute(sql)
                c.rollback()
        for i in range(6):
            c.execute("SELECT count(*) FROM ingest_batch(%s::jsonb)",
                      (orders(100000 + i, 1, "2026-01-01T00:00:00Z"),))
            c.execute("SELECT count(*) FROM ingest_batch(%s::jsonb)",
                      (orders(100000 + i, 1, "2026-02-01T00:00:00Z", "orders/updated",
                              "order.updated"),))
            c.rollback()
        db.query("SELECT count(*) FROM ingest_batch(%s::jsonb)",
                 (orders(0, 5000, "2026-01-01T00:00:00Z"),))
        reads["ingest_batch"] = "SELECT count(*) FROM ingest_batch('%s'::jsonb)" % updates
        db.query("INSERT INTO events (position, id, order_id, type, created_at, payload)"
                 " SELECT nextval('event_position'), gen_random_uuid(), g, 'order.created',"
                 " now(), repeat('x', 900) FROM generate_series(1, 20000) g")
        db.query("INSERT INTO deliveries (destination_id, position, order_id, event_created_at,"
                 " state, attempts, next_at) SELECT 'inventory', position, order_id, created_at,"
                 " 'pending', 1, now() + interval '1 hour' FROM events")

        def scanned():  # this session's counts not yet flushed, so: a difference
            return c.execute(
                "SELECT coalesce(sum(seq_scan), 0), coalesce(sum(seq_tup_read), 0)"
                " FROM pg_stat_xact_user_tables"
                " WHERE relname LIKE 'events%' OR relname LIKE 'deliveries%'"
                " OR relname LIKE 'orders%' OR relname LIKE 'inbound%'").fetchone()

        for name, sql in reads.items():
            before = scanned()
            c.execute(sql)
            after = scanned()
            c.rollback()
            assert after == before, (name, before, after)


# ----------------------------------------------------------------------------- 4. retention

def ingest(db, elements):
    return db.query("SELECT idx, outcome, emitted FROM ingest_batch(%s::jsonb)",
                    (json.dumps(elements),))


def canonical(ext, updated="2026-01-01T00:00:00Z"):
    return {"source": "shop", "external_id": ext, "status": "open", "currency": "EUR",
            "total": "10.00", "updated_at": updated, "lines": [], "partial": False}


def partitions(db, parent):
    return db.query("SELECT name, lo::text, hi FROM event_store_partitions WHERE parent = %s"
                    " ORDER BY lo", (parent,))


def test_retention_drops_delivered_partitions_and_keeps_undelivered_ones(db):
    add_source(db)
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)", (TOKEN,))
    db.query("UPDATE event_store_settings SET retention = '1 hour', partition_interval = '1 hour'")
    db.query("SELECT event_store_extend(now() + interval '3 hours')")
    for parent in ("events", "inbound_events", "delivery_attempts", "delivery_log"):
        assert partitions(db, parent)[-1][2] >= db.scalar(
            "SELECT now() + interval '3 hours'"), parent
    ingest(db, [{"s": "shop", "k": "k%d" % i, "t": "orders/create", "e": "order.created",
                 "o": canonical(str(i)), "p": {}} for i in range(5)])
    now_part = db.scalar("SELECT name FROM event_store_partitions WHERE parent = 'events'"
                         " AND lo <= now() AND hi > now()")
    # a moment past the retention of the partition holding these events
    later = "'%s'::timestamptz" % db.scalar(
        "SELECT (hi + interval '2 hours')::text FROM event_store_partitions WHERE name = %s",
        (now_part,))
    # the feed's reader has not read them: the events stay, the inbound copies go
    res = {r[1]: r[4] for r in db.query("SELECT parent, name, lo::text, hi::text, action FROM event_store_retire(%s)" % later)}
    assert res[now_part].startswith("kept"), res
    assert db.scalar("SELECT count(*) FROM events") == 5
    assert db.scalar("SELECT count(*) FROM inbound_events") == 0
    # read (and acknowledged) but one event has an open delivery: still kept
    db.query("UPDATE delivery_streams SET position = (SELECT max(position) FROM events)")
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('inv', 'http://127.0.0.1:9/',"
             " %s)", (wh.DEST_SECRET,))
    db.query("UPDATE delivery_streams SET position = (SELECT max(position) FROM events),"
             " start_position = 0")
    db.query("INSERT INTO deliveries (destination_id, position, order_id, event_created_at,"
             " state, attempts) SELECT 'inv', position, order_id, created_at, 'dead', 8"
             " FROM events ORDER BY position LIMIT 1")
    res = {r[1]: r[4] for r in db.query("SELECT parent, name, lo::text, hi::text, action FROM event_store_retire(%s)" % later)}
    assert res[now_part] == "kept: it holds undelivered events", res
    # settled (skipped): the partition goes, a whole partition at a time
    assert db.scalar("SELECT delivery_skip('inv')") == 1
    res = {r[1]: r[4] for r in db.query("SELECT parent, name, lo::text, hi::text, action FROM event_store_retire(%s)" % later)}
    assert res[now_part] == "dropped", res
    assert db.scalar("SELECT count(*) FROM events") == 0
    assert db.scalar("SELECT count(*) FROM pg_class WHERE relname = %s", (now_part,)) == 0
    # forgotten orders go after the retention; dedupe keys stay for their source's
    # window, whatever the retention (a shopify source's: 1 day)
    assert db.scalar("SELECT event_store_prune(10000, %s)" % later) == 5
    assert db.scalar("SELECT count(*) FROM orders") == 0
    assert db.scalar("SELECT count(*) FROM dedupe_keys") == 5
    assert ingest(db, [{"s": "shop", "k": "k0", "t": "orders/create", "e": "order.created",
                        "o": canonical("0"), "p": {}}]) == [(0, "duplicate", 0)]
    assert db.scalar("SELECT event_store_prune(10000, now() + interval '1 day 1 minute')") == 5
    assert db.scalar("SELECT count(*) FROM dedupe_keys") == 0


PARENTS = ("events", "inbound_events", "delivery_attempts", "delivery_log")


def longest_ahead(db, parent):
    """The longest span among the partitions of `parent` not ended yet."""
    return db.scalar("SELECT max(hi - lo) FROM event_store_partitions WHERE parent = %s"
                     " AND hi > now()", (parent,))


def test_ordersync_makes_partitions_ahead_at_start(db, ordersync):
    # the migration made day-long partitions ahead, at the default interval
    assert longest_ahead(db, "events") > datetime.timedelta(hours=2)
    add_source(db)
    p = ordersync(env={"ORDERSYNC_PARTITION_INTERVAL": "2 minutes",
                       "ORDERSYNC_RETENTION": "10 minutes"})
    assert db.query("SELECT retention, partition_interval FROM event_store_settings") == [
        (datetime.timedelta(minutes=10), datetime.timedelta(minutes=2))]
    for parent in PARENTS:
        assert db.scalar("SELECT max(hi) >= now() + interval '5 minutes' FROM"
                         " event_store_partitions WHERE parent = %s", (parent,)), parent
        # they held nothing yet: replaced, so retention can drop 2 minutes at a time
        assert longest_ahead(db, parent) <= datetime.timedelta(minutes=2), parent
    # the first order's event lands in a 2-minute partition
    assert send(p, 1)[0] == 200
    assert db.scalar("SELECT p.hi - p.lo FROM events e JOIN event_store_partitions p"
                     " ON p.name = e.tableoid::regclass::text") <= datetime.timedelta(minutes=2)


def test_respan_keeps_a_partition_that_holds_rows(db):
    add_source(db)
    ingest(db, [{"s": "shop", "k": "k1", "t": "orders/create", "e": "order.created",
                 "o": canonical("1"), "p": {}}])
    current = db.scalar("SELECT e.tableoid::regclass::text FROM events e")
    db.query("UPDATE event_store_settings SET partition_interval = '1 hour'")
    assert db.scalar("SELECT event_store_respan()") > 0
    # the day-long partition holding the event stays; the empty ones after it go
    assert db.scalar("SELECT e.tableoid::regclass::text FROM events e") == current
    assert db.scalar("SELECT count(*) FROM events") == 1
    hour = datetime.timedelta(hours=1)
    ahead = db.query("SELECT name, hi - lo FROM event_store_partitions WHERE parent = 'events'"
                     " AND hi > now() ORDER BY lo")
    assert ahead[0][0] == current and all(span == hour for _, span in ahead[1:]), ahead
    # nothing more to do: the next call only looks
    assert db.scalar("SELECT event_store_respan()") == 0
    # the partitions after the current one, made when needed, are an hour long
    db.query("SELECT event_store_extend((SELECT hi FROM event_store_partitions WHERE name = %s)"
             " + interval '3 hours')", (current,))
    assert db.query("SELECT DISTINCT hi - lo FROM event_store_partitions WHERE parent = 'events'"
                    " AND lo >= (SELECT hi FROM event_store_partitions WHERE name = %s)",
                    (current,)) == [(hour,)]


def test_respan_gives_way_to_a_busy_table(db):
    db.query("UPDATE event_store_settings SET partition_interval = '1 hour'")
    before = db.query("SELECT name FROM event_store_partitions ORDER BY name")
    with db.connect() as c:
        c.execute("BEGIN")
        c.execute("LOCK TABLE delivery_log IN ACCESS SHARE MODE")
        assert db.scalar("SELECT event_store_respan()") == -1
        c.execute("ROLLBACK")
    assert db.query("SELECT name FROM event_store_partitions ORDER BY name") == before
    assert db.scalar("SELECT event_store_respan()") > 0
    for parent in PARENTS:
        assert longest_ahead(db, parent) <= datetime.timedelta(hours=1), parent
        assert db.scalar("SELECT max(hi) >= now() + interval '3 hours' FROM"
                         " event_store_partitions WHERE parent = %s", (parent,)), parent


def test_a_bad_retention_setting_stops_the_start_with_a_reason(db):
    p = run_ordersync(["serve"], db.url, env={"ORDERSYNC_RETENTION": "a fortnight"}, timeout=30)
    assert p.returncode != 0
    assert "ORDERSYNC_RETENTION" in p.stderr


# ----------------------------------------------------------------------------- 5. dead events

def test_a_dead_event_blocks_its_order_visibly_until_skipped(stack, db, receivers):
    inv = receivers["inventory"]
    # inventory refuses order 700's creation for good
    inv.behaviour = lambda rec: ((500, {}, b"no") if rec.get("json", {}).get("type") ==
                                 "order.created" and rec["json"]["data"]["external_id"] == "700"
                                 else (200, {}, b"ok"))
    db.query("UPDATE destinations SET max_attempts = 2")
    p = stack()
    assert send(p, 700)[0] == 200
    wait_for(lambda: db.scalar("SELECT state FROM sync_state WHERE external_id = '700'"
                               " AND destination_id = 'inventory'") == "dead", what="dead")
    assert send(p, 700, "orders/cancelled", "2026-01-03T00:00:00Z")[0] == 200
    assert send(p, 701)[0] == 200
    # other orders and other destinations go on
    wait_for(lambda: len(receivers["shipping"].accepted()) == 3, what="shipping")
    wait_for(lambda: any(r["json"]["data"]["external_id"] == "701" for r in inv.accepted()),
             what="701 to inventory")
    row = db.query("SELECT state, blocked, blocked_reason FROM sync_state"
                   " WHERE external_id = '700' AND destination_id = 'inventory'")[0]
    assert row[0] == "blocked" and row[1] == 1 and "(dead)" in row[2], row
    assert db.scalar("SELECT blocked FROM sync_backlog WHERE destination_id = 'inventory'") == 1
    assert not any(r["json"]["type"] == "order.cancelled" for r in inv.accepted())
    # the operator gives up on the dead creation: the cancellation goes out
    r = run_ordersync(["skip", "--destination", "inventory"], db.url)
    assert r.returncode == 0 and "1 delivery(ies) skipped" in r.stdout, r.stderr
    wait_for(lambda: any(r["json"]["type"] == "order.cancelled" for r in inv.accepted()),
             what="the cancellation after the skip")
    # settled, but not synced: the creation was skipped, never delivered (012).
    # The receiver records a request before it answers: the outcome is written after that
    wait_for(lambda: db.scalar("SELECT state FROM sync_state WHERE external_id = '700'"
                               " AND destination_id = 'inventory'") == "skipped",
             what="order 700 settled at inventory")
    assert db.query("SELECT action FROM operator_actions") == [("skip",)]


def test_on_dead_skip_lets_the_next_events_go(stack, db, receivers):
    inv = receivers["inventory"]
    inv.behaviour = lambda rec: ((500, {}, b"no") if rec.get("json", {}).get("type") ==
                                 "order.created" else (200, {}, b"ok"))
    db.query("UPDATE destinations SET max_attempts = 2, on_dead = 'skip' WHERE id = 'inventory'")
    p = stack()
    assert send(p, 800)[0] == 200
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 1,
             what="dead")
    assert send(p, 800, "orders/cancelled", "2026-01-03T00:00:00Z")[0] == 200
    wait_for(lambda: any(r["json"]["type"] == "order.cancelled" for r in inv.accepted()),
             what="the cancellation despite the dead creation")
    assert db.scalar("SELECT state FROM sync_state WHERE destination_id = 'inventory'") == "dead"


# ----------------------------------------------------------------------------- 6. upgrade

def test_upgrade_from_the_outbox_keeps_every_undelivered_event(empty_db, receivers):
    db = empty_db
    run_ordersync(["migrate", "--to", "4"], db.url, check=True)
    add_source(db)
    db.query("INSERT INTO destinations (id, url, secret, retry_schedule) VALUES"
             " ('inventory', %s, %s, '{0.2 seconds}')", (receivers["inventory"].url, wh.DEST_SECRET))
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)", (TOKEN,))
    o1 = db.scalar("INSERT INTO orders (source_id, external_id, status, sender_updated_at, doc)"
                   " VALUES ('shop', '1', 'open', now(), '{\"external_id\": \"1\"}') RETURNING id")
    o2 = db.scalar("INSERT INTO orders (source_id, external_id, status, sender_updated_at, doc)"
                   " VALUES ('shop', '2', 'cancelled', now(), '{\"external_id\": \"2\"}')"
                   " RETURNING id")
    db.query("INSERT INTO order_lines VALUES (%s, 1, 'SKU-1', 'Mug', 2, 12.50)", (o1,))
    db.query("INSERT INTO inbound_events (source_id, dedupe_key, topic, event_type, outcome,"
             " order_id, payload) VALUES ('shop', 'wh-1', 'orders/create', 'order.created',"
             " 'applied', %s, '{\"id\": 1}')", (o1,))

    def outbox(event, order, typ, dest, state, attempts=0):
        body = json.dumps({"type": typ, "timestamp": "2026-01-01T00:00:00Z",
                           "data": {"source": "shop", "external_id": str(order[1]),
                                    "id": str(order[0])}})
        return db.scalar("INSERT INTO outbox (event_id, order_id, destination_id, event_type,"
                         " payload, state, attempts, lease_until, delivered_at) VALUES"
                         " (%s, %s, %s, %s, %s, %s, %s, CASE WHEN %s = 'delivering'"
                         " THEN now() END, CASE WHEN %s = 'delivered' THEN now() END)"
                         " RETURNING id", (event, order[0], dest, typ, body, state, attempts,
                                           state, state))

    import uuid
    e1, e2, e3 = (str(uuid.uuid4()) for _ in range(3))
    outbox(e1, (o1, 1), "order.created", "inventory", "delivered", 1)
    # the feed consumer has read e1: its cursor is that row's id
    erp_cursor = outbox(e1, (o1, 1), "order.created", "erp", "delivered")
    outbox(e2, (o2, 2), "order.created", "inventory", "dead", 8)
    outbox(e2, (o2, 2), "order.created", "erp", "pending")
    outbox(e3, (o2, 2), "order.cancelled", "inventory", "delivering", 1)
    outbox(e3, (o2, 2), "order.cancelled", "erp", "pending")

    run_ordersync(["migrate"], db.url, check=True)
    assert db.scalar("SELECT max(version) FROM schema_migrations") >= 7
    # one event per event id, its position the largest of its rows' ids
    assert db.query("SELECT id::text, type FROM events ORDER BY position") == [
        (e1, "order.created"), (e2, "order.created"), (e3, "order.cancelled")]
    # what inventory had not received: the dead one, and the one behind it, blocked
    assert db.query("SELECT x.state, e.id::text, x.attempts FROM deliveries x JOIN events e"
                    " ON e.position = x.position WHERE x.destination_id = 'inventory'"
                    " ORDER BY x.position") == [("dead", e2, 8), ("blocked", e3, 1)]
    assert db.query("SELECT order_id, sku, quantity FROM order_lines") == [(o1, "SKU-1", 2)]
    assert db.scalar("SELECT count(*) FROM inbound_keys") == 1
    # the feed consumer's old cursor keeps its meaning: what it had not read, and only that
    p = Process(db.url, env={"ORDERSYNC_SWEEP_INTERVAL_S": "1"}).start()
    try:
        p.wait_ready()
        page = read_feed(p.port, erp_cursor, wait=0)
        assert [e["id"] for e in page["events"]] == ["msg_" + e.replace("-", "") for e in (e2, e3)]
        # replaying the dead event delivers it, then the cancellation behind it, in order
        r = run_ordersync(["replay", "--destination", "inventory"], db.url)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: len(receivers["inventory"].accepted()) == 2, what="replay after upgrade")
        assert [rec["json"]["type"] for rec in receivers["inventory"].accepted()] == [
            "order.created", "order.cancelled"]
    finally:
        p.stop()
