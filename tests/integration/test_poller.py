"""Source pollers: orders fetched from a shop that cannot push go through the
same normalization, dedupe and transaction as webhooks; the cursor advances
with them."""
import copy
import re
import json
import os
import sys
import time

import pytest

import webhooks as wh
from conftest import FIXTURES, REPO, Process, request
from receiver import wait_for

sys.path.insert(0, os.path.join(REPO, "services", "shopsim"))
from shopsim import Shop  # noqa: E402

TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


def order(oid, updated, **kw):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    o["updated_at"] = updated
    o.update(kw)
    return o


@pytest.fixture
def shop():
    s = Shop()
    yield s
    s.close()


@pytest.fixture
def setup(db, shop):
    db.query("INSERT INTO sources (id, kind, mode, poll_url, poll_interval, poll_auth_header)"
             " VALUES ('legacy', 'shopify', 'poll', %s, '1 second',"
             " 'X-Shopify-Access-Token: shpat_test_token')", (shop.url,))
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
             ("feed-token-0123456789abcdef",))
    procs = []

    def start():
        p = Process(db.url).start()
        p.wait_ready()
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop(sig=9)


def events(db):
    return db.query("SELECT o.external_id, e.type FROM events e JOIN orders o"
                    " ON o.id = e.order_id ORDER BY e.position")


def test_imports_new_orders_following_pagination(setup, db, shop):
    for i in range(5):
        shop.put(order(1000 + i, f"2026-01-0{i + 1}T00:00:00Z"))
    setup()
    wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 5, what="import")
    assert [e[1] for e in events(db)] == ["order.created"] * 5
    assert db.scalar("SELECT poll_cursor FROM sources") == "2026-01-05T00:00:00Z"
    pages = [r for r in shop.requests if "page_info" in r["path"]]
    assert len(pages) >= 2  # 5 orders, 2 per page
    st = db.query("SELECT polls, orders_found, orders_new, requests FROM poll_state")[0]
    assert st[0] >= 1 and st[2] == 5 and st[3] >= 3


def test_no_duplicates_across_polls_and_304(setup, db, shop):
    shop.put(order(2000, "2026-01-01T00:00:00Z", financial_status="pending"))
    setup()
    wait_for(lambda: db.scalar("SELECT count(*) FROM poll_state WHERE polls >= 3"), timeout=15,
             what="several polls")
    assert len(events(db)) == 1
    assert db.scalar("SELECT not_modified FROM poll_state") >= 1
    assert any(r.get("status") == 304 for r in shop.requests)
    assert any("if-none-match" in r["headers"] for r in shop.requests)
    # an update with a later updated_at becomes one event with the right type
    shop.put(order(2000, "2026-01-02T00:00:00Z", financial_status="paid"))
    wait_for(lambda: len(events(db)) == 2, what="update")
    assert events(db)[1] == ("2000", "order.paid")
    shop.put(order(2000, "2026-01-03T00:00:00Z", cancelled_at="2026-01-03T00:00:00Z"))
    wait_for(lambda: len(events(db)) == 3, what="cancel")
    assert events(db)[2] == ("2000", "order.cancelled")
    polls = db.scalar("SELECT polls FROM poll_state")
    wait_for(lambda: db.scalar("SELECT polls FROM poll_state") >= polls + 2,
             what="two more polls")
    assert len(events(db)) == 3


def test_429_is_honoured_and_counted(setup, db, shop):
    shop.throttle = 1
    shop.put(order(3000, "2026-01-01T00:00:00Z"))
    setup()
    wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 1, timeout=15, what="import")
    assert db.scalar("SELECT rate_limited FROM poll_state") == 1
    throttled = [r for r in shop.requests if r.get("status") == 429][0]
    after = shop.requests[shop.requests.index(throttled) + 1]
    assert after is not None


def test_errors_back_off_and_are_visible(setup, db, shop):
    shop.fail = 2
    shop.put(order(3500, "2026-01-01T00:00:00Z"))
    setup()
    wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 1, timeout=20, what="import")
    assert db.scalar("SELECT errors FROM poll_state") == 2
    assert "HTTP 500" in db.scalar("SELECT last_error FROM poll_state")


def test_resumes_after_restart_from_its_cursor(setup, db, shop):
    for i in range(3):
        shop.put(order(4000 + i, f"2026-01-0{i + 1}T00:00:00Z"))
    p = setup()
    wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 3, what="import")
    p.stop(sig=9)
    before = len(shop.requests)
    shop.put(order(4003, "2026-01-09T00:00:00Z"))
    # the lease of the killed process may still hold for up to a minute: release it as an operator would
    db.query("UPDATE sources SET poll_lease_until = NULL")
    setup()
    wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 4, what="resume")
    first = shop.requests[before]["path"]
    assert "updated_at_min=2026-01-03T00%3A00%3A00Z" in first, first
    assert len(events(db)) == 4


def test_push_source_with_reconciliation_never_emits_twice(db, shop):
    """A webhook and the reconciliation poll see the same order: one event."""
    db.query("INSERT INTO sources (id, kind, secret, poll_url, reconcile_interval, poll_auth_header)"
             " VALUES ('shop', 'shopify', %s, %s, '1 second',"
             " 'X-Shopify-Access-Token: shpat_test_token')", (wh.SHOPIFY_SECRET, shop.url))
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
             ("feed-token-0123456789abcdef",))
    o1 = order(5000, "2026-01-01T00:00:00Z")
    o2 = order(5001, "2026-01-01T00:00:00Z")
    shop.put(o1)
    shop.put(o2)
    p = Process(db.url).start()
    try:
        p.wait_ready()
        # o1 arrives by webhook; o2's webhook was lost (WooCommerce-style)
        b = wh.dumps(o1)
        st, _, _ = request(p.port, "POST", "/webhooks/shop", body=b, headers=wh.shopify(b))
        assert st == 200
        wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 2, what="reconcile")
        polls = db.scalar("SELECT polls FROM poll_state")
        wait_for(lambda: db.scalar("SELECT polls FROM poll_state") >= polls + 2,
                 what="more reconciliation polls")
        # and a late webhook for o2 after the poll found it
        b = wh.dumps(o2)
        st, _, resp = request(p.port, "POST", "/webhooks/shop", body=b, headers=wh.shopify(b))
        assert st == 200 and json.loads(resp)["status"] == "stale"
        assert sorted(events(db)) == [("5000", "order.created"), ("5001", "order.created")]
    finally:
        p.stop()


@pytest.fixture
def thief():
    """A second loopback host that must never hear from ordersync."""
    t = Shop(host="127.0.0.2")
    yield t
    t.close()


def test_next_link_to_another_origin_is_refused(setup, db, shop, thief):
    """A polled server (or a man in the middle) names another host as the next
    page: ordersync keeps the page it got, stops the run there, logs and
    counts it, and never sends the source's credentials to that host."""
    for i in range(5):
        shop.put(order(6000 + i, f"2026-01-0{i + 1}T00:00:00Z"))
    shop.link_origin = thief.origin
    p = setup()
    wait_for(lambda: (db.scalar("SELECT errors FROM poll_state") or 0) >= 2, timeout=15,
             what="two runs stopped at the link")
    assert thief.requests == []
    assert "next page link refused" in db.scalar("SELECT last_error FROM poll_state")
    # each run keeps the page from the configured origin and moves on from it
    assert db.scalar("SELECT count(*) FROM orders") >= 3  # pages of 2, updated_at_min inclusive
    assert p.wait_log(lambda r: r.get("msg") == "poll stopped at a next page link"
                      and r.get("source") == "legacy")
    st, _, body = request(p.port, "GET", "/metrics")
    m = re.search(r'ordersync_poll_links_refused_total\{source="legacy"\} (\d+)', body.decode())
    assert m and int(m.group(1)) >= 2, body.decode()
    # the same host on another port is another origin too
    other = Shop()
    try:
        shop.link_origin = other.origin
        n = db.scalar("SELECT errors FROM poll_state")
        wait_for(lambda: db.scalar("SELECT errors FROM poll_state") > n, timeout=15,
                 what="a run stopped at a link to another port")
        assert other.requests == []
    finally:
        other.close()
    # a link to the same origin is followed again
    shop.link_origin = None
    wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 5, timeout=15, what="all pages")
    assert thief.requests == []


def test_retry_after_beyond_reason_is_clamped(setup, db, shop):
    """Retry-After: 1e308 is not a number of seconds (RFC 9110: 1*DIGIT); a
    huge one waits at most the poller's longest backoff. Either way the
    process keeps running and keeps serving."""
    shop.retry_after = "1e308"
    shop.throttle = 1
    shop.put(order(7000, "2026-01-01T00:00:00Z"))
    p = setup()
    # not a delay: the source's interval (1 s) applies
    wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 1, timeout=15, what="import")
    shop.retry_after = "99999999999999999999999999"
    shop.throttle = 1
    shop.put(order(7001, "2026-01-02T00:00:00Z"))
    wait_for(lambda: db.scalar("SELECT rate_limited FROM poll_state") == 2, timeout=15,
             what="the second 429")
    assert p.proc.poll() is None
    st, _, _ = request(p.port, "GET", "/healthz")
    assert st == 200
    # the wait is logged: at most an hour
    lines = p.wait_log(lambda r: r.get("msg") == "poll rate-limited")
    assert lines and max(r["retry_after_s"] for r in lines) <= 3600
