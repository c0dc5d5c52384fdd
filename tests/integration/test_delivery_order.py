"""Order per (order, destination) when the relay's two database connections
race: stream reads on one, completions (the rows of failed events) on the
other.

A stream read that ran before a completion committed cannot see the rows it
wrote, so the relay keeps the orders of those rows "tainted" (held back)
until that completion is committed and no read that could have missed it is
out. Here the database is made slow at chosen points by a test session
holding table locks, so that the interleaving seen in a loaded end-to-end run
(an order.cancelled delivered to shipping before its order.created, which
then made a shipment for a cancelled order) happens every time:

  1. completion K (an event delivered) waits while a read R1 is out;
  2. K commits with R1 still out: its taints may only be lifted after R1;
  3. the next completion K+1 carries the failed order.created of order X
     (X is tainted) and waits before it commits;
  4. R1 comes back: K's taints are lifted, X's must not be (K+1 is not
     committed);
  5. order.cancelled of X is read by a read that cannot see K+1's row: it
     must wait behind order.created, not go out.
"""
import copy
import json
import os

import psycopg
import pytest

import webhooks as wh
from conftest import FIXTURES, Process, request
from receiver import wait_for

TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


def send(p, oid, topic="orders/create", updated="2026-01-02T03:04:05Z"):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    o["updated_at"] = updated
    if topic == "orders/cancelled":
        o["cancelled_at"] = updated
        o["cancel_reason"] = "customer"
    b = wh.dumps(o)
    st, _, _ = request(p.port, "POST", "/webhooks/shop", body=b, headers=wh.shopify(b, topic))
    assert st == 200


def waits_for_lock(db, relation, statement):
    """Is an ordersync statement (text LIKE `statement`) waiting for a lock on `relation`?"""
    return db.scalar(
        "SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND l.relation = %s::regclass AND a.datname = current_database()"
        " AND a.query LIKE %s", (relation, statement))


def lock(db, sql):
    """A session holding `sql`'s lock until it is rolled back."""
    c = psycopg.connect(db.url)
    c.execute("SET lock_timeout = '30s'")
    c.execute(sql)
    return c


def release(c):
    c.rollback()
    c.close()


def received(r, ext, etype=None, ok=False):
    return [x for x in (r.accepted() if ok else r.all())
            if x.get("json", {}).get("data", {}).get("external_id") == str(ext)
            and (etype is None or x["json"]["type"] == etype)]


def retries(p):
    text = request(p.port, "GET", "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith('ordersync_deliveries_total{destination="shipping",outcome="retry"}'):
            return int(float(line.split()[-1]))
    return 0


# the shared receivers fixture (conftest.py), one receiver
pytestmark = pytest.mark.receivers("shipping")


@pytest.fixture
def shipping(receivers):
    return receivers["shipping"]


def test_cancel_waits_for_a_failed_create_whose_row_is_not_committed(db, shipping):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    db.query("INSERT INTO destinations (id, url, secret, retry_schedule, timeout_ms)"
             " VALUES ('shipping', %s, %s, '{0.2 seconds}', 5000)",
             (shipping.url, wh.DEST_SECRET))
    X = 4101  # the order whose created event fails once
    created_x = []

    def behaviour(rec):
        data = rec.get("json", {})
        if data.get("type") == "order.created" and data["data"]["external_id"] == str(X):
            created_x.append(rec)
            if len(created_x) == 1:
                return 500, {}, b'{"error":"once"}'
        return 200, {}, b'{"ok":true}'
    shipping.behaviour = behaviour

    # no sweep in the way; leases long enough not to be renewed meanwhile
    p = Process(db.url, env={"ORDERSYNC_SWEEP_INTERVAL_S": "3600"}).start()
    held = []
    try:
        p.wait_ready()
        send(p, 4100)
        wait_for(lambda: received(shipping, 4100, ok=True), what="a first delivery")

        # completions wait (they move the stream), and so will K+1 before it commits
        # (it records the failed attempt); reads do not touch these tables
        held.append(lock(db, "LOCK TABLE delivery_streams IN EXCLUSIVE MODE"))
        held.append(lock(db, "LOCK TABLE delivery_attempts IN SHARE MODE"))

        # 1. completion K (an event delivered) waits...
        send(p, 4102)
        wait_for(lambda: received(shipping, 4102, ok=True), what="event of K")
        wait_for(lambda: waits_for_lock(db, "delivery_streams", "%relay_complete%")
                 or waits_for_lock(db, "delivery_streams", "%relay_acquire%"),
                 what="completion K waiting")
        # ...while order.created of X fails; it waits in the window for K
        send(p, X)
        wait_for(lambda: retries(p) >= 1, what="the failure of X's order.created")
        # ...and a read R1 is out (it waits for the rows table)
        held.append(lock(db, "LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE"))
        send(p, 4103)
        wait_for(lambda: waits_for_lock(db, "deliveries", "%stream_read%"), what="read R1 waiting")

        # 2-3. K commits with R1 out; K+1 (the row of X's order.created) waits
        release(held.pop(0))
        wait_for(lambda: waits_for_lock(db, "deliveries", "%relay_complete%"),
                 what="completion K+1 waiting")

        # 4. R1 comes back; K+1 wrote its rows but has not committed
        release(held.pop())
        wait_for(lambda: received(shipping, 4103, ok=True), what="the event R1 read")
        wait_for(lambda: waits_for_lock(db, "delivery_attempts", "%relay_complete%"),
                 what="completion K+1 waiting to commit")

        # 5. order.cancelled of X, read by reads that cannot see K+1's row; a
        # later event of another order shows when they have been acted on
        send(p, X, "orders/cancelled", "2026-01-03T00:00:00Z")
        send(p, 4104)
        wait_for(lambda: received(shipping, 4104, ok=True), what="the event after the cancel")
        early = received(shipping, X, "order.cancelled")

        release(held.pop())
        wait_for(lambda: db.scalar("SELECT count(*) > 0 AND bool_and(state = 'delivered')"
                                   " FROM event_deliveries"), what="everything delivered")
    finally:
        for c in held:
            c.close()
        p.stop()

    assert not early, "order.cancelled went out while order.created had only failed"
    got = [x["json"]["type"] for x in received(shipping, X, ok=True)]
    assert got == ["order.created", "order.cancelled"]
    first_ok = min(x["time"] for x in received(shipping, X, "order.created", ok=True))
    assert all(x["time"] > first_ok for x in received(shipping, X, "order.cancelled"))
