"""The relay: events reach inventory, invoicing and shipping as Standard
Webhooks, retried, in order, through receiver faults, crashes and restarts.
Receivers are real HTTP servers (receiver.py); signatures are checked with the
tests' own implementation of the Standard Webhooks spec (webhooks.py)."""
import copy
import json
import os
import random
import re
import subprocess
import tempfile
import threading
import time

import pytest

import webhooks as wh
from conftest import FIXTURES, Cluster, Database, Process, pg_script, request, run_ordersync
from receiver import wait_for

DESTS = ("inventory", "invoicing", "shipping")
TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


pytestmark = [pytest.mark.receivers(*DESTS),
              pytest.mark.stack(retry_schedule="{0.2 seconds, 0.4 seconds}", timeout_ms=2000)]


def order_body(oid, topic="orders/create", updated="2026-01-02T03:04:05Z", **kw):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    o["updated_at"] = updated
    if topic == "orders/cancelled":
        o["cancelled_at"] = updated
        o["cancel_reason"] = "customer"
    o.update(kw)
    return wh.dumps(o)


def send(p, oid, topic="orders/create", updated="2026-01-02T03:04:05Z", webhook_id=None):
    b = order_body(oid, topic, updated)
    st, _, resp = request(p.port, "POST", "/webhooks/shop", body=b,
                          headers=wh.shopify(b, topic, webhook_id=webhook_id))
    return st, json.loads(resp) if resp else None


def all_delivered(db):
    return db.scalar("SELECT count(*) = count(*) FILTER (WHERE state = 'delivered')"
                     " AND count(*) > 0 FROM event_deliveries")


def state_of(db, dest):
    """The state of the first event of `dest`."""
    return db.scalar("SELECT state FROM event_deliveries WHERE destination_id = %s"
                     " ORDER BY position LIMIT 1", (dest,))


def test_happy_path_to_all_three(stack, db, receivers):
    p = stack()
    for i in range(5):
        assert send(p, 100 + i)[0] == 200
    wait_for(lambda: all_delivered(db), what="delivery")
    for n, r in receivers.items():
        got = r.accepted()
        assert len(got) == 5
        for rec in got:
            h = rec["headers"]
            assert rec["valid"], "signature must verify with an independent implementation"
            assert h["content-type"] == "application/json"
            assert h["user-agent"].startswith("ordersync/")
            assert h["webhook-id"].startswith("msg_")
            body = rec["json"]
            assert body["type"] == "order.created"
            assert body["timestamp"].endswith("Z")
            assert body["data"]["source"] == "shop"
            assert body["data"]["currency"] == TEMPLATE["currency"]
        ids = {r["headers"]["webhook-id"] for r in got}
        assert ids == {"msg_" + e.replace("-", "") for (e,) in db.query(
            "SELECT event_id::text FROM event_deliveries WHERE destination_id = %s", (n,))}
    # first-attempt successes cost no row each: the delivery log has them, compactly
    assert db.scalar("SELECT sum(delivered) FROM delivery_log") == 15
    assert db.scalar("SELECT count(*) FROM delivery_attempts") == 0
    assert db.scalar("SELECT count(*) FROM deliveries") == 0
    assert {r[0] for r in db.query("SELECT state FROM sync_state")} == {"synced"}
    assert db.scalar("SELECT bool_and(fully_synced) FROM order_sync")
    text = request(p.port, "GET", "/metrics")[2].decode()
    assert 'ordersync_deliveries_total{destination="inventory",outcome="delivered"} 5' in text
    assert "ordersync_delivery_lag_seconds_bucket" in text


def test_outage_then_recovery_preserves_order(stack, db, receivers):
    down = {"on": True}
    inv = receivers["inventory"]
    inv.behaviour = lambda rec: (503, {}, b"down") if down["on"] else (200, {}, b"ok")
    p = stack()
    for i in range(4):
        assert send(p, 200 + i)[0] == 200
        assert send(p, 200 + i, "orders/cancelled", "2026-01-03T00:00:00Z")[0] == 200
    # the others are not held back by inventory
    wait_for(lambda: len(receivers["invoicing"].accepted()) == 8, what="invoicing")
    wait_for(lambda: len(receivers["shipping"].accepted()) == 8, what="shipping")
    wait_for(lambda: db.scalar("SELECT count(*) FROM delivery_attempts WHERE destination_id ="
                               " 'inventory' AND http_status = 503") >= 8, what="failed attempts")
    assert db.scalar("SELECT count(*) FROM event_deliveries WHERE destination_id = 'inventory'"
                     " AND state = 'delivered'") == 0
    down["on"] = False
    wait_for(lambda: all_delivered(db), timeout=30, what="recovery")
    got = inv.accepted()
    assert len(got) == 8
    for i in range(4):
        types = [r["json"]["type"] for r in got
                 if r["json"]["data"]["external_id"] == str(200 + i)]
        assert types == ["order.created", "order.cancelled"]
    # every attempt recorded, last_error kept until success
    assert db.scalar("SELECT count(*) FROM delivery_attempts WHERE destination_id = 'inventory'"
                     " AND http_status = 503") >= 8


def test_retry_after_is_honoured(stack, db, receivers):
    inv = receivers["inventory"].fail_first(1, 429, {"Retry-After": "2"}, b"slow down")
    p = stack()
    send(p, 300)
    wait_for(lambda: len(inv.accepted()) == 1, timeout=15, what="retry")
    reqs = inv.all()
    assert [r["status"] for r in reqs] == [429, 200]
    gap = reqs[1]["time"] - reqs[0]["time"]
    assert gap >= 1.9, gap  # the schedule alone would retry after 0.2 s
    assert reqs[0]["headers"]["webhook-id"] == reqs[1]["headers"]["webhook-id"]


def test_timeout_is_a_retry(stack, db, receivers):
    inv = receivers["inventory"]
    calls = {"n": 0}

    def behaviour(rec):
        calls["n"] += 1
        return ("hang", {"seconds": 2}, b"") if calls["n"] == 1 else (200, {}, b"ok")
    inv.behaviour = behaviour
    db.query("UPDATE destinations SET timeout_ms = 300 WHERE id = 'inventory'")
    p = stack()
    send(p, 400)
    wait_for(lambda: len(inv.accepted()) == 1, timeout=15, what="delivery after timeout")
    err = db.scalar("SELECT error FROM delivery_attempts WHERE destination_id = 'inventory'"
                    " AND http_status IS NULL")
    assert err and "timeout" in err.lower(), err


def test_410_disables_the_destination_only(stack, db, receivers):
    receivers["shipping"].behaviour = lambda rec: (410, {}, b"gone")
    p = stack()
    send(p, 500)
    wait_for(lambda: db.scalar("SELECT NOT enabled FROM destinations WHERE id = 'shipping'"),
             what="disable")
    assert "410" in db.scalar("SELECT disabled_reason FROM destinations WHERE id = 'shipping'")
    send(p, 501)
    wait_for(lambda: len(receivers["inventory"].accepted()) == 2, what="others continue")
    time.sleep(0.5)
    assert len(receivers["shipping"].all()) == 1
    assert state_of(db, "shipping") == "pending"


def test_dead_after_the_cap_and_replay_revives(stack, db, receivers):
    inv = receivers["inventory"]
    failing = {"on": True}
    inv.behaviour = lambda rec: (500, {}, b"boom") if failing["on"] else (200, {}, b"ok")
    db.query("UPDATE destinations SET max_attempts = 3 WHERE id = 'inventory'")
    p = stack()
    send(p, 600)
    wait_for(lambda: state_of(db, "inventory") == "dead", what="dead")
    assert db.scalar("SELECT attempts FROM deliveries WHERE destination_id = 'inventory'") == 3
    assert db.scalar("SELECT dead FROM sync_backlog WHERE destination_id = 'inventory'") == 1
    first_id = inv.all()[0]["headers"]["webhook-id"]
    failing["on"] = False
    r = run_ordersync(["replay", "--destination", "inventory"], db.url)
    assert r.returncode == 0 and "1 delivery(ies)" in r.stdout, r.stderr
    wait_for(lambda: len(inv.accepted()) == 1, what="replayed delivery")
    assert inv.accepted()[0]["headers"]["webhook-id"] == first_id
    # the receiver records a request before it answers: the outcome is written after that
    wait_for(lambda: state_of(db, "inventory") == "delivered", what="the outcome recorded")
    assert db.query("SELECT action, destination_id FROM operator_actions") == [
        ("replay", "inventory")]


def test_circuit_breaker_pauses_then_probes(stack, db, receivers):
    inv = receivers["inventory"]
    failing = {"on": True}
    inv.behaviour = lambda rec: (500, {}, b"boom") if failing["on"] else (200, {}, b"ok")
    db.query("UPDATE destinations SET breaker_threshold = 3, breaker_pause = '1 second',"
             " retry_schedule = '{0.1 seconds}', max_attempts = 100 WHERE id = 'inventory'")
    p = stack()
    for i in range(5):
        send(p, 700 + i)
    wait_for(lambda: db.scalar("SELECT paused_until IS NOT NULL FROM destinations"
                               " WHERE id = 'inventory'"), what="pause")
    text = request(p.port, "GET", "/metrics")[2].decode()
    assert 'ordersync_destination_paused{destination="inventory"} 1' in text
    # the others are not slowed down
    wait_for(lambda: len(receivers["invoicing"].accepted()) == 5, what="invoicing")
    failing["on"] = False
    wait_for(lambda: all_delivered(db), timeout=30, what="resume")
    assert db.scalar("SELECT paused_until IS NULL AND consecutive_failures = 0 FROM destinations"
                     " WHERE id = 'inventory'")


def test_created_then_cancelled_never_reversed_under_failures(stack, db, receivers):
    rnd = random.Random(7)
    for r in receivers.values():
        r.behaviour = lambda rec: (500, {}, b"flaky") if rnd.random() < 0.4 else (200, {}, b"ok")
    db.query("UPDATE destinations SET retry_schedule = '{0.05 seconds}', max_attempts = 1000")
    p = stack()
    for i in range(20):
        assert send(p, 800 + i)[0] == 200
        assert send(p, 800 + i, "orders/cancelled", "2026-01-03T00:00:00Z")[0] == 200
    wait_for(lambda: all_delivered(db), timeout=60, what="all delivered")
    for n, r in receivers.items():
        seen = {}
        for rec in r.accepted():
            ext = rec["json"]["data"]["external_id"]
            seen.setdefault(ext, []).append(rec["json"]["type"])
        assert all(v == ["order.created", "order.cancelled"] for v in seen.values()), (n, seen)
        assert len(seen) == 20


def test_graceful_shutdown_exits_0(stack, db, receivers):
    receivers["inventory"].behaviour = lambda rec: (time.sleep(0.5), (200, {}, b"ok"))[1]
    p = stack()
    for i in range(5):
        send(p, 900 + i)
    time.sleep(0.2)
    assert p.stop(sig=15) == 0
    # nothing left leased by the stopped process
    assert db.scalar("SELECT count(*) FROM deliveries WHERE state = 'delivering'") == 0


def test_kill_9_under_load_loses_nothing(stack, db, receivers):
    """kill -9 at random moments while webhooks flow; every acknowledged order
    reaches every destination; a duplicate is only a redelivery with the same id."""
    acked = set()
    rnd = random.Random(11)
    p = stack()
    stop = {"flag": False}

    def sender():
        i = 0
        while not stop["flag"]:
            i += 1
            oid = 10000 + i
            try:
                st, resp = send(p_holder["p"], oid)
                if st == 200:
                    acked.add(str(oid))
            except OSError:
                time.sleep(0.02)

    p_holder = {"p": p}
    t = threading.Thread(target=sender)
    t.start()
    for _ in range(4):
        time.sleep(rnd.uniform(0.3, 1.0))
        p_holder["p"].stop(sig=9)
        p_holder["p"] = stack()
    time.sleep(0.5)
    # a busy machine restarts slowly: keep sending to the last one until enough were acknowledged
    wait_for(lambda: len(acked) > 20, timeout=30, what="more than 20 acknowledged webhooks")
    stop["flag"] = True
    t.join()
    assert len(acked) > 20
    wait_for(lambda: all_delivered(db), timeout=60, what="all delivered after crashes")
    for n, r in receivers.items():
        got = r.accepted()
        exts = {rec["json"]["data"]["external_id"] for rec in got}
        assert acked <= exts, (n, len(acked - exts))
        by_ext = {}
        for rec in got:
            by_ext.setdefault(rec["json"]["data"]["external_id"], set()).add(
                rec["headers"]["webhook-id"])
        assert all(len(ids) == 1 for ids in by_ext.values()), "a duplicate must reuse its webhook-id"


def test_a_claimed_retry_passes_to_another_instance_after_its_lease(stack, db, receivers):
    """A retry claimed by a process that then dies is taken by another once
    its lease runs out: the destination's timeout (2 s) plus ORDERSYNC_LEASE_S
    (5 s) here, not a fixed 30 s margin, and delivered with the same id."""
    inv = receivers["inventory"]
    calls = {"n": 0}

    def behaviour(rec):
        calls["n"] += 1
        if calls["n"] == 1:
            return 500, {}, b"try again"  # the event gets a row and a retry
        if calls["n"] == 2:
            return "hang", {"seconds": 3}, b""  # the retry, in flight when its process dies
        return 200, {}, b"ok"
    inv.behaviour = behaviour
    a = stack()
    send(a, 32000)
    wait_for(lambda: calls["n"] >= 2, what="the retry in flight")
    lease = db.scalar("SELECT extract(epoch FROM lease_until - updated_at) FROM deliveries"
                      " WHERE destination_id = 'inventory' AND state = 'delivering'")
    a.stop(sig=9)
    killed = time.time()
    assert lease == 7, lease
    stack()
    wait_for(lambda: len(inv.accepted()) == 1, timeout=30, what="the retry taken over")
    taken = inv.accepted()[0]["time"] - killed
    assert taken < 30, taken  # well before a 30 s margin would have let it go
    ids = {rec["headers"]["webhook-id"] for rec in inv.all()}
    assert len(ids) == 1, ids
    wait_for(lambda: state_of(db, "inventory") == "delivered", what="the outcome recorded")


def test_two_processes_share_the_work_without_double_delivery(stack, db, receivers):
    a = stack()
    b = stack()
    # the streams are shared out between the live instances
    wait_for(lambda: db.scalar("SELECT count(DISTINCT lease_owner) FROM delivery_streams") == 2,
             timeout=15, what="streams shared by both instances")
    for i in range(30):
        send(a if i % 2 else b, 20000 + i)
    wait_for(lambda: all_delivered(db), timeout=30, what="delivery")
    for r in receivers.values():
        ids = [rec["headers"]["webhook-id"] for rec in r.accepted()]
        assert len(ids) == 30 and len(set(ids)) == 30
    # each event delivered once, at its first attempt
    assert db.scalar("SELECT count(*) FROM delivery_attempts") == 0
    assert db.scalar("SELECT sum(delivered) FROM delivery_log") == 90


def test_streams_change_hands_at_once_when_an_instance_joins_or_leaves(stack, db, receivers):
    # A lease of 10 minutes: the rounds in which instances renew, take and let go come every
    # 150 s, far beyond the waits below. A joining instance and a leaving one tell the others
    # (NOTIFY ordersync_streams), so the streams change hands now, not at the next round.
    owners = "SELECT count(DISTINCT lease_owner) FROM delivery_streams WHERE lease_owner IS NOT NULL"
    a = stack({"ORDERSYNC_LEASE_S": "600"})
    wait_for(lambda: db.scalar(owners) == 1
             and db.scalar("SELECT count(*) FROM delivery_streams WHERE lease_owner IS NULL") == 0,
             what="the first instance holds every stream")
    b = stack({"ORDERSYNC_LEASE_S": "600"})
    wait_for(lambda: db.scalar(owners) == 2, what="the second instance given its share on joining")
    for i in range(6):
        send(a if i % 2 else b, 21000 + i)
    wait_for(lambda: all(len(r.accepted()) == 6 for r in receivers.values()), what="delivery")
    # a clean stop hands its streams back; the other takes them at once and delivers
    assert b.stop(sig=15) == 0
    wait_for(lambda: db.scalar(owners) == 1
             and db.scalar("SELECT count(*) FROM delivery_streams WHERE lease_owner IS NULL") == 0,
             what="the remaining instance took the streams let go")
    send(a, 21006)
    wait_for(lambda: all(len(r.accepted()) == 7 for r in receivers.values()),
             what="delivery by the remaining instance")


def test_rotation_signs_with_both_secrets(stack, db, receivers):
    new = "whsec_" + __import__("base64").b64encode(b"a brand new destination secret!").decode()
    db.query("UPDATE destinations SET previous_secret = secret, secret = %s WHERE id = 'inventory'",
             (new,))
    inv = receivers["inventory"]
    p = stack()
    send(p, 30000)
    wait_for(lambda: len(inv.accepted()) == 1, what="delivery")
    rec = inv.accepted()[0]
    sigs = rec["headers"]["webhook-signature"].split(" ")
    assert len(sigs) == 2
    # a receiver on the old secret and one on the new both accept it
    assert wh.verify_standard(rec["headers"], rec["body"], wh.DEST_SECRET)
    assert wh.verify_standard(rec["headers"], rec["body"], new)


def test_connection_closed_by_receiver_is_retried(stack, db, receivers):
    inv = receivers["inventory"]
    calls = {"n": 0}

    def behaviour(rec):
        calls["n"] += 1
        return ("close", {}, b"") if calls["n"] == 1 else (200, {}, b"ok")
    inv.behaviour = behaviour
    p = stack()
    send(p, 31000)
    wait_for(lambda: len(inv.accepted()) == 1, what="delivery after a dropped connection")
    err = db.scalar("SELECT error FROM delivery_attempts WHERE destination_id = 'inventory'"
                    " AND http_status IS NULL")
    assert err, "the failed attempt is recorded with its transport error"


def test_an_event_that_cannot_be_sent_is_released_at_once_with_the_reason(stack, db, receivers):
    """A destination secret that is not valid base64: nothing can be signed, so
    nothing is sent. The event waits in a row, not under a lease, with the
    reason, and no attempt is counted; fixing the secret delivers it."""
    bad = "whsec_" + "A" * 17  # passes the column's CHECK, is not base64
    db.query("UPDATE destinations SET secret = %s WHERE id = 'inventory'", (bad,))
    p = stack()
    send(p, 40000)
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE destination_id ="
                               " 'inventory'") == 1, what="a row for the unsent event")
    state, attempts, err = db.query("SELECT state, attempts, last_error FROM deliveries")[0]
    assert state == "pending" and attempts == 0, (state, attempts)
    assert "secret" in err, err
    assert db.scalar("SELECT count(*) FROM delivery_attempts") == 0
    assert receivers["inventory"].all() == []
    db.query("UPDATE destinations SET secret = %s WHERE id = 'inventory'", (wh.DEST_SECRET,))
    wait_for(lambda: len(receivers["inventory"].accepted()) == 1, timeout=20,
             what="delivery once the secret is fixed")


def test_a_postgres_restart_leaves_no_row_waiting_for_its_lease(tmp_path, receivers):
    """A Postgres restart under load: whatever this process had claimed is
    released when it reconnects, not after its lease (60 s here)."""
    d = tempfile.mkdtemp(prefix="ordersync-restart-")
    os.chmod(d, 0o755)
    url = pg_script("start", d)
    try:
        c = Cluster(url)
        db = Database(c, c.new_db())
        db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
                 (wh.SHOPIFY_SECRET,))
        for n, r in receivers.items():
            db.query("INSERT INTO destinations (id, url, secret, retry_schedule, timeout_ms)"
                     " VALUES (%s, %s, %s, '{0.2 seconds}', 2000)", (n, r.url, wh.DEST_SECRET))
        # slow answers: at any moment many deliveries are in flight
        for r in receivers.values():
            r.behaviour = lambda rec: (time.sleep(0.3), (200, {}, b"ok"))[1]
        p = Process(db.url, env={"ORDERSYNC_LEASE_S": "60", "ORDERSYNC_SWEEP_INTERVAL_S": "60"})
        p.start()
        p.wait_ready()
        acked = []
        for i in range(60):
            if send(p, 50000 + i)[0] == 200:
                acked.append(str(50000 + i))
        time.sleep(0.5)
        pg_script("stop", d)
        time.sleep(1)
        pg_script("start", d)
        t0 = time.time()
        wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries") == 0 and
                 db.scalar("SELECT count(*) FROM event_deliveries WHERE state <> 'delivered'")
                 == 0, timeout=30, interval=0.2, what="everything delivered after the restart")
        assert time.time() - t0 < 20  # well inside the 60 s lease
        for n, r in receivers.items():
            got = {rec["json"]["data"]["external_id"] for rec in r.accepted()}
            assert set(acked) <= got, (n, len(set(acked) - got))
        p.stop()
    finally:
        pg_script("destroy", d)


TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-01$")


def send_traced(p, oid, traceparent):
    b = order_body(oid)
    h = wh.shopify(b, "orders/create")
    if traceparent is not None:
        h["traceparent"] = traceparent
    st, _, resp = request(p.port, "POST", "/webhooks/shop", body=b, headers=h)
    return st, json.loads(resp)


def test_trace_context_from_the_shop_to_every_destination(stack, db, receivers):
    inv = receivers["inventory"]
    first = {"seen": set()}

    def fail_once(rec):  # one failed attempt per event, so the retry log line is there too
        wid = rec["headers"]["webhook-id"]
        if wid not in first["seen"]:
            first["seen"].add(wid)
            return 500, {}, b"try again"
        return 200, {}, b"ok"
    inv.behaviour = fail_once
    p = stack()
    shop_trace, shop_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    invalid = ["00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace
               "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
               "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span
               "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
               "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # v00 with a tail
               "garbage", ""]
    assert send_traced(p, 900, f"00-{shop_trace}-{shop_span}-01")[0] == 200
    # a later version may carry more fields: its trace id is still taken
    assert send_traced(p, 901, "cc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01-more")[0] == 200
    for i, v in enumerate(invalid):
        st, resp = send_traced(p, 910 + i, v)
        assert st == 200 and resp["status"] == "accepted", (v, resp)  # ignored, never refused
    assert send_traced(p, 920, None)[0] == 200
    n = 3 + len(invalid)
    wait_for(lambda: all(len(r.accepted()) == n for r in receivers.values()), what="delivery")

    def traces(oid):
        """The trace and span ids each destination got for one order."""
        out = {}
        for name, r in receivers.items():
            for rec in r.accepted():
                if rec["json"]["data"]["external_id"] == str(oid):
                    m = TRACEPARENT.match(rec["headers"].get("traceparent", ""))
                    assert m, rec["headers"].get("traceparent")
                    out[name] = m.groups()
        return out

    kept = traces(900)
    assert {t for t, _ in kept.values()} == {shop_trace}
    spans = [s for _, s in kept.values()]
    assert len(set(spans)) == 3 and shop_span not in spans, "each delivery is a new span"
    assert {t for t, _ in traces(901).values()} == {"a" * 32}
    started = set()
    for oid in [910 + i for i in range(len(invalid))] + [920]:
        ts = {t for t, _ in traces(oid).values()}
        assert len(ts) == 1, "one trace per order across destinations"
        started |= ts
    assert len(started) == len(invalid) + 1 and shop_trace not in started
    # the retry of a failed attempt carries the same trace with yet another span
    inv_900 = [rec for rec in inv.all() if rec["json"]["data"]["external_id"] == "900"]
    assert [rec["status"] for rec in inv_900] == [500, 200]
    a, b = (TRACEPARENT.match(rec["headers"]["traceparent"]).groups() for rec in inv_900)
    assert a[0] == b[0] == shop_trace and a[1] != b[1]
    # the database keeps it with the event
    assert db.scalar("SELECT replace(e.trace_id::text, '-', '') FROM events e JOIN orders o"
                     " ON o.id = e.order_id WHERE o.external_id = '900'") == shop_trace
    assert db.scalar("SELECT count(DISTINCT trace_id) FROM inbound_events") == n
    # log lines name it: the webhook's request, and the failed delivery attempt
    assert any(r.get("trace_id") == shop_trace and r.get("status") == 200
               for r in p.log_lines("request"))
    retry = [r for r in p.log_lines("delivery failed, will retry")
             if r.get("trace_id") == shop_trace]
    assert retry and retry[0]["destination"] == "inventory"
