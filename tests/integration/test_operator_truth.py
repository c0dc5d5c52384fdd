"""What operators see must be true: the SQL views, the console's API and the
CLI against what really happened (issue "what operators see must be true",
points 1, 2, 4, 5, 9, 10, 11, 13 and 14; the page itself is read in
test_console_browser.py, the README's SQL in test_readme_sql.py).

Each test sets up what happened with real HTTP (signed webhooks in, real
receivers answering out) and compares what the views, the API and the CLI
say with the records: the receivers' own logs of 2xx answers, the attempts
they saw, the feed reads made."""
import copy
import json
import os
import re
import subprocess
import time
import urllib.parse

import pytest

import webhooks as wh
from conftest import BIN, FIXTURES, REPO, free_port, request, run_ordersync
from receiver import Receiver

TOKEN = "truth-test-token-0123456789"
TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


def wait_for(pred, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def always(status):
    return lambda rec: (status, {}, b'{"error": "down"}' if status >= 300 else b'{"ok": true}')


class Stack:
    def __init__(self, db, proc, admin, receivers):
        self.db = db
        self.proc = proc
        self.admin = admin
        self.receivers = receivers

    def api(self, path):
        st, _, body = request(self.admin, "GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert st == 200, (path, st, body)
        return json.loads(body)

    def post(self, path, body):
        st, _, out = request(self.admin, "POST", path, body=json.dumps(body),
                             headers={"Authorization": f"Bearer {TOKEN}",
                                      "Content-Type": "application/json"})
        return st, json.loads(out)

    def order(self, oid, topic="orders/create", email="buyer@example.com", **fields):
        o = copy.deepcopy(TEMPLATE)
        o["id"] = oid
        o["email"] = email
        o["contact_email"] = email
        o.update(fields)
        b = wh.dumps(o)
        st, _, resp = request(self.proc.port, "POST", "/webhooks/shop", body=b,
                              headers=wh.shopify(b, topic))
        assert st == 200, resp
        return json.loads(resp)

    def order_id(self, external_id):
        return self.db.scalar("SELECT id FROM orders WHERE external_id = %s", (str(external_id),))

    def cells(self, order_id):
        """(destination, position) -> (state, attempts) from the view."""
        return {(d, p): (s, a) for d, p, s, a in self.db.query(
            "SELECT destination_id, position, state, attempts FROM event_deliveries"
            " WHERE order_id = %s", (order_id,))}

    def api_cells(self, order_id):
        doc = self.api(f"/api/orders/{order_id}")
        return {(d["destination"], d["position"]): (d["state"], d["attempts"])
                for d in doc["deliveries"]}


# the shared stack's destinations (conftest.py): 2 attempts, 0.2 s apart
pytestmark = pytest.mark.stack(retry_schedule="{0.2 seconds}", max_attempts=2, timeout_ms=2000)


@pytest.fixture
def stack(stack, db, receivers):
    """The shared stack (a shop, three push destinations on real receivers)
    with the console on. Nothing started yet: each test says how its
    receivers answer first."""
    def start(**env):
        admin = free_port()
        e = {"ORDERSYNC_ADMIN_LISTEN": f"127.0.0.1:{admin}", "ORDERSYNC_ADMIN_TOKEN": TOKEN}
        e.update(env)
        s = Stack(db, stack(e), admin, receivers)
        wait_for(lambda: request(admin, "GET", "/api/overview",
                                 headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200,
                 what="the console's connection")
        return s
    return start


def accepted_positions(receiver, db):
    """Event positions a receiver answered 2xx, from its own record."""
    ids = {r["headers"]["webhook-id"] for r in receiver.accepted()}
    return {p for p, i in db.query("SELECT position, 'msg_' || replace(id::text, '-', '')"
                                   " FROM events") if i in ids}


# ---------------------------------------------------------------- 1. skipped is not delivered

def test_a_skipped_event_is_skipped_everywhere_not_delivered(stack, db):
    s = stack()
    s.receivers["shipping"].behaviour = always(500)
    s.order(1001)
    oid = s.order_id(1001)
    # the order's second event waits behind the dead first one (blocked, never sent)
    s.order(1001, "orders/updated", updated_at="2030-01-01T00:00:00Z")
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE destination_id = 'shipping'"
                               " AND state = 'dead'") == 1
             and db.scalar("SELECT count(*) FROM deliveries WHERE state = 'blocked'") == 1,
             what="a dead event and one blocked behind it")
    dead_pos = db.scalar("SELECT position FROM deliveries WHERE state = 'dead'")
    blocked_pos = db.scalar("SELECT position FROM deliveries WHERE state = 'blocked'")

    # the ticked dead event, as the console's Skip does it
    st, r = s.post("/api/deliveries/skip",
                   {"items": [{"destination": "shipping", "position": dead_pos}]})
    assert st == 200 and r["skipped"] == 1
    # its blocked follower was promoted and fails too; skip everything matching, blocked or dead
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE destination_id = 'shipping'"
                               " AND position = %s AND state = 'dead'", (blocked_pos,)) == 1,
             what="the second event dead too")
    st, r = s.post("/api/deliveries/skip", {"matching": {"destination": "shipping", "state": "dead"}})
    assert st == 200 and r["skipped"] == 1

    # shipping never answered 2xx: nothing of it may read as delivered
    assert accepted_positions(s.receivers["shipping"], db) == set()
    view = s.cells(oid)
    assert view[("shipping", dead_pos)] == ("skipped", 2)
    assert view[("shipping", blocked_pos)] == ("skipped", 2)
    assert s.api_cells(oid)[("shipping", dead_pos)] == ("skipped", 2)
    assert db.query("SELECT state, delivered, skipped FROM sync_state"
                    " WHERE order_id = %s AND destination_id = 'shipping'", (oid,)) == \
        [("skipped", 0, 2)]
    assert db.query("SELECT fully_synced, delivered, skipped FROM order_sync WHERE order_id = %s",
                    (oid,)) == [(False, 4, 2)]
    assert db.scalar("SELECT skipped_by FROM event_deliveries WHERE destination_id = 'shipping'"
                     " AND position = %s", (dead_pos,)) == "api:token"
    # the orders list counts by state from the same evidence
    hit = s.api(f"/api/orders?q=1001")["orders"][0]
    assert hit["sync"] == {"delivered": 4, "skipped": 2}
    # and what is delivered is exactly what the receivers acknowledged
    for name, rec in s.receivers.items():
        delivered = {p for (p,) in db.query("SELECT position FROM event_deliveries"
                                            " WHERE destination_id = %s AND state = 'delivered'",
                                            (name,))}
        assert delivered == accepted_positions(rec, db), name


def test_skipping_blocked_events_never_sent_says_skipped_with_no_attempt(stack, db):
    s = stack()
    s.receivers["shipping"].behaviour = always(500)
    s.order(1002)
    s.order(1002, "orders/updated", updated_at="2030-01-01T00:00:00Z")
    oid = s.order_id(1002)
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE state = 'blocked'") == 1,
             what="a blocked event")
    blocked_pos = db.scalar("SELECT position FROM deliveries WHERE state = 'blocked'")
    st, r = s.post("/api/deliveries/skip",
                   {"matching": {"destination": "shipping", "state": "blocked"}})
    assert st == 200 and r["skipped"] == 1
    assert s.cells(oid)[("shipping", blocked_pos)] == ("skipped", 0)
    # the same through the CLI and SQL function the previous release calls,
    # once the order's first event has used its attempts up
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'"
                               " AND destination_id = 'shipping'") == 1, what="a dead event")
    assert db.scalar("SELECT delivery_skip(dest => 'shipping', states => '{dead}')") == 1
    assert {st for (st,) in db.query("SELECT state FROM event_deliveries"
                                     " WHERE destination_id = 'shipping'")} == {"skipped"}


# ---------------------------------------------------------------- 2. true attempt counts

def test_attempts_are_every_attempt_on_record_across_retries_and_replays(stack, db):
    s = stack()
    db.query("UPDATE destinations SET max_attempts = 8 WHERE id = 'inventory'")
    s.receivers["inventory"].fail_first(2, 500, body=b'{"error": "not yet"}')  # 3rd attempt: 2xx
    s.receivers["shipping"].behaviour = always(500)  # dead after 2
    s.order(2001)
    oid = s.order_id(2001)
    pos = db.scalar("SELECT position FROM events WHERE order_id = %s", (oid,))
    # (the receiver's 2xx comes before the relay has recorded it: wait for the record)
    wait_for(lambda: len(s.receivers["inventory"].accepted()) == 1
             and s.cells(oid)[("inventory", pos)][0] == "delivered"
             and s.cells(oid)[("invoicing", pos)][0] == "delivered"
             and db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 1,
             what="inventory delivered at the 3rd attempt, shipping dead")
    assert len(s.receivers["inventory"].all()) == 3
    assert s.cells(oid)[("inventory", pos)] == ("delivered", 3)
    assert s.api_cells(oid)[("inventory", pos)] == ("delivered", 3)
    assert s.cells(oid)[("invoicing", pos)] == ("delivered", 1)

    # shipping: replayed, dies again: 4 attempts on record, not 2
    st, r = s.post("/api/deliveries/replay", {"items": [{"destination": "shipping", "position": pos}]})
    assert st == 200 and r["replayed"] == 1
    wait_for(lambda: len(s.receivers["shipping"].all()) == 4
             and db.scalar("SELECT state FROM deliveries WHERE destination_id = 'shipping'") == "dead",
             what="shipping dead again after its replay")
    assert s.cells(oid)[("shipping", pos)] == ("dead", 4)
    assert s.api_cells(oid)[("shipping", pos)] == ("dead", 4)
    dead = s.api("/api/deliveries?state=dead&destination=shipping")["items"]
    assert [(d["position"], d["attempts"], d["round_attempts"]) for d in dead] == [(pos, 4, 2)]
    assert db.scalar("SELECT attempts FROM sync_state WHERE order_id = %s"
                     " AND destination_id = 'shipping'", (oid,)) == 4

    # fixed, replayed again, delivered: 5 attempts in 3 rounds
    s.receivers["shipping"].behaviour = always(200)
    assert db.scalar("SELECT delivery_replay(dest => 'shipping')") == 1
    wait_for(lambda: s.cells(oid)[("shipping", pos)][0] == "delivered", what="shipping delivered")
    assert s.cells(oid)[("shipping", pos)] == ("delivered", 5)
    assert len(s.receivers["shipping"].all()) == 5


# ---------------------------------------------------------------- 4. ignored webhooks

def test_an_ignored_webhook_shows_in_the_journey_of_the_order_its_body_names(stack, db):
    s = stack()
    s.order(4001)
    oid = s.order_id(4001)
    # a cancel topic over a body that is not cancelled: ignored, but about order 4001
    r = s.order(4001, "orders/cancelled", updated_at="2030-01-01T00:00:00Z")
    assert r["status"] == "ignored" and r.get("reason") == "topic_mismatch"
    assert db.query("SELECT outcome, order_id FROM inbound_events ORDER BY id") == \
        [("applied", oid), ("ignored", oid)]
    inbound = s.api(f"/api/orders/{oid}")["inbound"]
    assert [(i["outcome"], i["topic"]) for i in inbound] == \
        [("applied", "orders/create"), ("ignored", "orders/cancelled")]
    # a refund body under an order topic names its order through order_id
    refund = {"id": 77, "order_id": 4001, "created_at": "2030-01-02T00:00:00Z",
              "refund_line_items": [], "transactions": []}
    b = wh.dumps(refund)
    st, _, resp = request(s.proc.port, "POST", "/webhooks/shop", body=b,
                          headers=wh.shopify(b, "orders/paid"))
    assert st == 200 and json.loads(resp)["status"] == "ignored"
    assert db.scalar("SELECT order_id FROM inbound_events WHERE topic = 'orders/paid'") == oid


# ---------------------------------------------------------------- 5. feeds are deliveries

def test_a_poll_destinations_feed_reads_show_as_deliveries(stack, db):
    feed_token = "feed-token-0123456789abcdef"
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
             (feed_token,))
    s = stack()
    for i in range(5):
        s.order(5000 + i)
    oid = s.order_id(5000)
    h = {"Authorization": f"Bearer {feed_token}"}
    st, _, body = request(s.proc.port, "GET", "/feeds/erp?limit=100", headers=h)
    page = json.loads(body)
    assert st == 200 and len(page["events"]) == 5
    # nothing is acknowledged until the next read passes it
    assert db.scalar("SELECT count(*) FROM event_deliveries WHERE destination_id = 'erp'"
                     " AND state = 'delivered'") == 0
    st, _, _ = request(s.proc.port, "GET", f"/feeds/erp?after={page['next']}", headers=h)
    assert st == 200
    assert db.scalar("SELECT count(*) FROM event_deliveries WHERE destination_id = 'erp'"
                     " AND state = 'delivered'") == 5
    erp = [d for d in s.api("/api/overview")["destinations"] if d["id"] == "erp"][0]
    assert sum(m[1] for m in erp["minutes"]) == 5
    cells = [d for d in s.api(f"/api/orders/{oid}")["deliveries"] if d["destination"] == "erp"]
    assert len(cells) == 1 and cells[0]["state"] == "delivered" and cells[0]["mode"] == "poll"
    assert cells[0]["first"] is not None and cells[0]["first"]["completed_at"]
    # reading the same cursor again logs nothing twice
    request(s.proc.port, "GET", f"/feeds/erp?after={page['next']}", headers=h)
    assert db.scalar("SELECT sum(delivered) FROM delivery_log WHERE destination_id = 'erp'") == 5


# ---------------------------------------------------------------- 9. ended sessions say why

def test_an_ended_session_is_told_why(stack, db):
    s = stack()
    body = urllib.parse.urlencode({"token": TOKEN, "name": "ops"})
    origin = {"Origin": f"http://127.0.0.1:{s.admin}", "Host": f"127.0.0.1:{s.admin}",
              "Content-Type": "application/x-www-form-urlencoded"}
    st, hd, _ = request(s.admin, "POST", "/console/login", body=body, headers=origin)
    assert st == 303
    cookie = hd["set-cookie"].split(";")[0]
    name, value = cookie.split("=", 1)
    # the same cookie with its expiry moved into the past (its MAC no longer holds either)
    fields = value.split(".")
    fields[1] = str(int(time.time()) - 60)
    st, _, out = request(s.admin, "GET", "/api/overview",
                         headers={"Cookie": f"{name}={'.'.join(fields)}"})
    assert st == 401 and json.loads(out)["error"] == "session_expired"
    st, _, out = request(s.admin, "GET", "/api/overview",
                         headers={"Cookie": f"{name}={value[:-4]}beef"})
    assert st == 401 and json.loads(out)["error"] == "session_invalid"
    st, _, page = request(s.admin, "GET", "/console/login?why=expired")
    assert st == 200 and b"Your session expired" in page
    st, _, page = request(s.admin, "GET", "/console/login?why=invalid")
    assert b"no longer valid" in page
    # anything else shows no message: nothing of the request is echoed
    st, _, page = request(s.admin, "GET", "/console/login?why=%3Cscript%3E")
    assert st == 200 and b'<p class="message"></p>' in page


# ---------------------------------------------------------------- 10. other points

def test_a_long_email_that_ingest_accepted_can_be_searched(stack, db):
    s = stack()
    email = ("x" * 300) + "@example.com"   # 312 characters
    s.order(10001, email=email)
    st, _, out = request(s.admin, "GET", "/api/orders?q=" + urllib.parse.quote(email),
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert st == 200, out
    assert [o["external_id"] for o in json.loads(out)["orders"]] == ["10001"]
    st, _, out = request(s.admin, "GET", "/api/orders?q=" + "y" * 1100,
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert st == 400 and "1024 bytes" in json.loads(out)["detail"]


def test_operators_log_in_with_the_names_they_have(stack, db):
    s = stack()
    origin = {"Origin": f"http://127.0.0.1:{s.admin}", "Host": f"127.0.0.1:{s.admin}",
              "Content-Type": "application/x-www-form-urlencoded"}
    for who in ("Zoë Ñúñez", "Dan O'Brien"):
        body = urllib.parse.urlencode({"token": TOKEN, "name": who})
        st, hd, _ = request(s.admin, "POST", "/console/login", body=body, headers=origin)
        assert st == 303, who
        cookie = hd["set-cookie"].split(";")[0]
        st, _, out = request(s.admin, "GET", "/api/session", headers={"Cookie": cookie})
        assert json.loads(out)["operator"] == who


def test_replay_and_skip_can_say_how_many_they_would_touch(stack, db):
    s = stack()
    s.receivers["shipping"].behaviour = always(500)
    for i in range(3):
        s.order(10100 + i)
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 3,
             what="three dead events")
    st, r = s.post("/api/deliveries/replay",
                   {"matching": {"destination": "shipping"}, "preview": True})
    assert st == 200 and r == {"replayed": 3, "preview": True}
    st, r = s.post("/api/deliveries/skip", {"matching": {"state": "dead"}, "preview": True})
    assert st == 200 and r["skipped"] == 3
    # nothing changed, nothing recorded
    assert db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 3
    assert db.scalar("SELECT count(*) FROM operator_actions") == 0
    st, r = s.post("/api/deliveries/replay", {"matching": {"destination": "nosuch"}})
    assert st == 400 and "nosuch" in r["detail"]


# ---------------------------------------------------------------- 11. where destinations start

def test_destinations_start_where_they_are_told_push_and_poll_alike(stack, db):
    s = stack()
    for i in range(3):
        s.order(11000 + i)
    wait_for(lambda: db.scalar("SELECT count(*) FROM event_deliveries WHERE state = 'delivered'")
             == 9, what="the first events delivered")
    cut = db.scalar("SELECT now()")
    time.sleep(0.05)
    s.order(11003)
    late = Receiver("late")
    old = Receiver("old")
    try:
        # now (the default), from the beginning of what is retained, from a time
        db.query("INSERT INTO destinations (id, url, secret) VALUES ('late', %s, %s)",
                 (late.url, wh.DEST_SECRET))
        db.query("INSERT INTO destinations (id, url, secret, start_from)"
                 " VALUES ('old', %s, %s, '-infinity')", (old.url, wh.DEST_SECRET))
        db.query("INSERT INTO destinations (id, mode, feed_token, start_from)"
                 " VALUES ('feed-now', 'poll', 'feed-token-0123456789abcdef', NULL),"
                 "        ('feed-cut', 'poll', 'feed-token-0123456789abcdef', %s)", (cut,))
        s.order(11004)
        wait_for(lambda: len(old.accepted()) == 5 and len(late.accepted()) == 1,
                 what="the new destinations' deliveries")
        assert [r["json"]["data"]["external_id"] for r in late.accepted()] == ["11004"]
        assert sorted(r["json"]["data"]["external_id"] for r in old.accepted()) == \
            ["11000", "11001", "11002", "11003", "11004"]
        h = {"Authorization": "Bearer feed-token-0123456789abcdef"}
        for feed, want in (("feed-now", ["11004"]), ("feed-cut", ["11003", "11004"])):
            st, _, out = request(s.proc.port, "GET", f"/feeds/{feed}", headers=h)
            assert st == 200
            assert [e["data"]["external_id"] for e in json.loads(out)["events"]] == want, feed
    finally:
        late.close()
        old.close()


# ---------------------------------------------------------------- 13. the README and the service

def readme():
    with open(os.path.join(REPO, "README.md")) as f:
        return f.read()


def test_the_readme_lists_what_the_service_does(stack, db):
    s = stack()
    text = readme()
    # every metric the service exposes is documented
    st, _, out = request(s.admin, "GET", "/metrics")
    names = set(re.findall(r"^# TYPE (ordersync_\w+)", out.decode(), re.M))
    documented = set(re.findall(r"`(ordersync_\w+?)(?:_\*)?(?:\{[^`]*\})?`", text))
    prefixes = [d for d in re.findall(r"`(ordersync_\w+?)_\*`", text)]
    missing = [n for n in names if n not in documented
               and not any(n.startswith(p + "_") for p in prefixes)]
    assert missing == [], missing
    # what GET /api/session answers a bearer token is what the README says it answers
    session = s.api("/api/session")
    assert session == {"auth": "bearer"}
    assert '`{"auth": "bearer"}`' in text
    # WooCommerce's ping, 403, re-enabling a destination disabled by a 410
    assert '"ping"' in text
    assert re.search(r"403 \(", text)
    assert "disabled_reason" in text and re.search(r"enabled = true", text)
    # every option of the downstream helper is in the README
    out = subprocess.run([os.path.join(os.path.dirname(BIN), "downstream"), "--help"],
                         capture_output=True, text=True).stdout
    for flag, env in re.findall(r"^\s+(--[a-z][a-z-]+), ([A-Z_]+)", out, re.M):
        assert flag in text or f"`{env}`" in text, flag


def test_a_woocommerce_ping_answers_what_the_readme_says(stack, db):
    s = stack()
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('woo', 'woocommerce', %s)",
             (wh.WOO_SECRET,))
    wait_for(lambda: request(s.proc.port, "POST", "/webhooks/woo", body="webhook_id=7",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})[0]
             == 200, what="the woo source loaded")
    st, _, out = request(s.proc.port, "POST", "/webhooks/woo", body="webhook_id=7",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    status = json.loads(out)["status"]
    assert f'`"{status}"`' in readme() or f'"{status}"' in readme()


# ---------------------------------------------------------------- 14. the CLI

def cli(db, *args, env=None):
    return run_ordersync(list(args), db.url, env=env)


def one_line_error(p, *words):
    assert p.returncode != 0, p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def test_cli_refuses_unknown_names_and_bad_values_in_one_line(db):
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('inventory',"
             " 'http://127.0.0.1:9/x', %s)", (wh.DEST_SECRET,))
    one_line_error(cli(db, "replay", "--destination", "nosuch"), "nosuch")
    one_line_error(cli(db, "skip", "--destination", "nosuch"), "nosuch")
    one_line_error(cli(db, "replay", "--since", "garbage"), "--since", "garbage")
    one_line_error(cli(db, "skip", "--until", "soon"), "--until", "soon")
    one_line_error(cli(db, "replay", "--order", "x42"), "--order", "x42")
    one_line_error(cli(db, "bogus"), "bogus")
    one_line_error(cli(db, "replay", "--frobnicate"), "--frobnicate")
    one_line_error(cli(db, "settings", "--html"), "--html")
    latest = max(int(f[:3]) for f in os.listdir(os.path.join(REPO, "migrations")) if f[:3].isdigit())
    one_line_error(cli(db, "migrate", "--to", "3"), f"version {latest}", "past 3")
    one_line_error(cli(db, "migrate", "--to", "nine"), "nine")
    # a known destination still works, as before
    p = cli(db, "replay", "--destination", "inventory")
    assert p.returncode == 0 and "0 delivery(ies) scheduled again" in p.stdout, p.stderr


def test_cli_help_of_each_command(db):
    for cmd in ("replay", "skip", "migrate"):
        p = cli(db, cmd, "--help")
        assert p.returncode == 0 and p.stdout.startswith(f"usage: ordersync {cmd}"), p.stderr
    p = subprocess.run([BIN, "--help"], capture_output=True, text=True)
    assert "(default: hostname:pid) (default: unset)" not in p.stdout
    assert "hostname:pid" in p.stdout


def test_cli_actor_is_the_login_name_when_user_is_unset(db):
    import pwd
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('inventory',"
             " 'http://127.0.0.1:9/x', %s)", (wh.DEST_SECRET,))
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', 'x')")
    db.query("INSERT INTO orders (source_id, external_id, sender_updated_at)"
             " VALUES ('shop', '1', now())")
    db.query("INSERT INTO events (position, id, order_id, type, created_at, payload)"
             " SELECT 1, gen_random_uuid(), id, 'order.created', now(), '{}' FROM orders")
    db.query("INSERT INTO deliveries (destination_id, position, order_id, event_created_at,"
             " state, attempts) SELECT 'inventory', 1, order_id, created_at, 'dead', 2 FROM events")
    env = {k: v for k, v in os.environ.items() if k not in ("USER", "LOGNAME")}
    env["DATABASE_URL"] = db.url
    p = subprocess.run([BIN, "skip", "--destination", "inventory"], env=env, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert db.scalar("SELECT actor FROM operator_actions") == \
        "cli:" + pwd.getpwuid(os.geteuid()).pw_name
