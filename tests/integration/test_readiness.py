"""GET /readyz: 200 only once the instance can do its whole job, not just
take webhooks. Whoever acts on 200 (a test, a load balancer, the next step
of a rolling upgrade) must find the relay with its destinations loaded and
its streams taken, and the feeds readable.

The database is made slow or unreachable at chosen points from a test
session: a lock on `destinations` keeps them from loading at start-up, and a
database that refuses new connections keeps the feed's connection down once
it is cut.
"""
import json
import os

import psycopg
import pytest

import webhooks as wh
from conftest import FIXTURES, Process, request, with_dbname
from receiver import wait_for

TOKEN = "feed-token-readiness-0123456789"
TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


def readyz(p):
    st, _, body = request(p.port, "GET", "/readyz")
    return st, json.loads(body)


def send(p, oid):
    o = dict(TEMPLATE, id=oid)
    b = wh.dumps(o)
    st, _, _ = request(p.port, "POST", "/webhooks/shop", body=b,
                       headers=wh.shopify(b, "orders/create"))
    assert st == 200


def read_feed(p, after=0):
    return request(p.port, "GET", f"/feeds/erp?after={after}",
                   headers={"Authorization": "Bearer " + TOKEN})


def session(db):
    c = psycopg.connect(db.url, autocommit=True)
    c.execute("SET lock_timeout = '30s'")
    return c


def add_source_and_destinations(db, receiver):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('shipping', %s, %s)",
             (receiver.url, wh.DEST_SECRET))
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
             (TOKEN,))


# the shared receivers fixture (conftest.py), one receiver
pytestmark = pytest.mark.receivers("shipping")


def test_not_ready_until_the_destinations_are_loaded(db, receivers):
    shipping = receivers["shipping"]
    add_source_and_destinations(db, shipping)
    lock = session(db)
    lock.execute("BEGIN")
    lock.execute("LOCK TABLE destinations IN ACCESS EXCLUSIVE MODE")
    p = Process(db.url).start()
    try:
        # everything /readyz used to look at is there: connected, schema
        # current, sources loaded; the destinations are not
        wait_for(lambda: readyz(p)[1].get("sources") == 1, what="sources loaded")
        st, body = readyz(p)
        assert body["database"] == "connected" and body["schema"] == "current"
        assert st == 503, body
        assert body["status"] == "unavailable"
        assert body["relay"] == "not ready" and body["feeds"] == "not ready"
        # what a client that believed a 200 would meet now
        assert read_feed(p)[0] == 503

        lock.execute("ROLLBACK")
        p.wait_ready()
        # acted on at once: the feed answers, and a webhook is delivered
        st, _, body = read_feed(p)
        assert st == 200, body
        assert readyz(p)[1] == {"status": "ready", "database": "connected", "schema": "current",
                                "sources": 1, "relay": "ready", "feeds": "ready"}
        send(p, 5001)
        wait_for(lambda: any(x.get("json", {}).get("data", {}).get("external_id") == "5001"
                             for x in shipping.accepted()), what="the delivery")
        wait_for(lambda: json.loads(read_feed(p)[2])["events"], what="the event in the feed")
    finally:
        lock.close()
        p.stop()


def test_the_relay_switched_off_is_not_waited_for(db, receivers):
    shipping = receivers["shipping"]
    add_source_and_destinations(db, shipping)
    p = Process(db.url, env={"ORDERSYNC_RELAY": "0"}).start()
    try:
        p.wait_ready()
        st, body = readyz(p)
        assert st == 200 and body["relay"] == "off" and body["feeds"] == "ready"
    finally:
        p.stop()


def feed_backends(c, name):
    """The feed's connection: the one that prepared (or last ran) feed_read."""
    return [r[0] for r in c.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE '%%feed_read(%%'",
        (name,)).fetchall()]


def test_not_ready_while_the_feeds_connection_is_down(db, receivers):
    shipping = receivers["shipping"]
    add_source_and_destinations(db, shipping)
    p = Process(db.url).start()
    name = db.scalar("SELECT current_database()")
    # from another database: a database cannot refuse connections from inside
    c = psycopg.connect(with_dbname(db.url, "postgres"), autocommit=True)
    try:
        p.wait_ready()
        wait_for(lambda: feed_backends(c, name), what="the feed's connection")
        # the feed's connection is cut and cannot come back
        c.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        for pid in feed_backends(c, name):
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_for(lambda: readyz(p)[0] == 503, timeout=5, what="/readyz turning 503")
        st, body = readyz(p)
        assert body["database"] == "connected" and body["relay"] == "ready", body
        assert body["feeds"] == "not ready"
        assert read_feed(p)[0] == 503

        c.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        p.wait_ready()
        assert read_feed(p)[0] == 200
    finally:
        c.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        c.close()
        p.stop()
