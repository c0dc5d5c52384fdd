"""The operator console's JSON API and pages, black-box over HTTP: where it is
served (admin listener only), who may use it (token, session cookie), CSRF
and cross-origin refusals, pagination, escaping of hostile order fields,
replay and skip recorded with their actor, and secrets never shown."""
import copy
import http.client
import json
import os
import re
import time
import urllib.parse

import pytest

import webhooks as wh
from conftest import FIXTURES, Process, free_port, request

TOKEN = "console-test-token-0123456789"
HOSTILE = "<img src=x onerror=alert(1)>"
TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


def wait_for(pred, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Console:
    """An ordersync with the console on, and HTTP helpers for its admin port."""

    def __init__(self, proc, admin_port):
        self.proc = proc
        self.port = admin_port

    def get(self, path, token=TOKEN, headers=None):
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        st, hd, body = request(self.port, "GET", path, headers=h)
        return st, hd, body

    def api(self, path, token=TOKEN):
        st, hd, body = self.get(path, token)
        assert st == 200, (path, st, body)
        return json.loads(body)

    def post(self, path, body, headers=None, token=TOKEN):
        h = {"Content-Type": "application/json"}
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return request(self.port, "POST", path, body=data, headers=h)

    def login(self, name="tester", token=TOKEN, headers=None):
        body = urllib.parse.urlencode({"token": token, "name": name})
        h = {"Content-Type": "application/x-www-form-urlencoded",
             "Origin": f"http://127.0.0.1:{self.port}", "Host": f"127.0.0.1:{self.port}"}
        h.update(headers or {})
        return request(self.port, "POST", "/console/login", body=body, headers=h)

    def session(self, name="tester"):
        """(cookie header value, csrf token) of a fresh login."""
        st, hd, _ = self.login(name)
        assert st == 303, st
        cookie = hd["set-cookie"].split(";")[0]
        st, _, body = request(self.port, "GET", "/api/session", headers={"Cookie": cookie})
        assert st == 200
        return cookie, json.loads(body)["csrf"]


@pytest.fixture
def console(db, receivers):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    for n, r in receivers.items():
        db.query("INSERT INTO destinations (id, url, secret, retry_schedule, max_attempts,"
                 " timeout_ms) VALUES (%s, %s, %s, '{0.1 seconds}', 2, 2000)",
                 (n, r.url, wh.DEST_SECRET))
    procs = []

    def start(token=TOKEN, admin=True):
        port = free_port()
        env = {"ORDERSYNC_SWEEP_INTERVAL_S": "1"}
        if admin:
            env["ORDERSYNC_ADMIN_LISTEN"] = f"127.0.0.1:{port}"
        if token:
            env["ORDERSYNC_ADMIN_TOKEN"] = token
        p = Process(db.url, env=env).start()
        procs.append(p)
        p.wait_ready()
        c = Console(p, port)
        if admin and token:
            # the console's own connection comes up on its own time
            wait_for(lambda: c.get("/api/overview")[0] == 200, what="the console's connection")
        return c

    yield start
    for p in procs:
        p.stop()


def send_order(proc, oid, email="buyer@example.com", number=None):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    o["email"] = email
    o["contact_email"] = email
    if number is not None:
        o["name"] = number
        o["order_number"] = int(number.lstrip("#"))
    b = wh.dumps(o)
    st, _, resp = request(proc.port, "POST", "/webhooks/shop", body=b, headers=wh.shopify(b))
    assert st == 200, resp
    return json.loads(resp)


def test_the_console_is_off_without_a_token_and_says_so(console):
    c = console(token=None)
    st, hd, body = c.get("/console", token=None)
    assert st == 404 and b"ORDERSYNC_ADMIN_TOKEN" in body
    assert hd["content-type"].startswith("text/html")
    st, _, body = c.get("/api/overview", token=None)
    assert st == 404 and json.loads(body)["error"] == "console_off"


def test_the_console_is_never_on_the_public_port(console):
    c = console()
    for path in ("/console", "/console/login", "/api/overview", "/api/orders"):
        st, _, _ = request(c.proc.port, "GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert st == 404, path


def test_a_short_token_stops_the_start(db):
    p = Process(db.url, env={"ORDERSYNC_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
                             "ORDERSYNC_ADMIN_TOKEN": "short"})
    with pytest.raises(AssertionError):
        p.start(timeout=5)
    assert any(r.get("msg") == "ORDERSYNC_ADMIN_TOKEN is too short" for r in p.logs)


def test_every_api_route_needs_the_token_or_a_session(console):
    c = console()
    for path in ("/api/session", "/api/overview", "/api/orders", "/api/orders/1",
                 "/api/deliveries", "/api/sources", "/api/destinations"):
        st, hd, _ = c.get(path, token=None)
        assert st == 401, path
        assert hd["www-authenticate"].startswith("Bearer")
        assert c.get(path, token="wrong-token-of-some-length")[0] == 401, path
        # the right token forgets the wrong ones (more in a row are throttled: test_security.py)
        assert c.get("/api/session")[0] == 200
    st, hd, _ = c.post("/api/deliveries/replay", {"items": []}, token=None)
    assert st == 401
    # the page itself sends a stranger to the login form
    st, hd, _ = c.get("/console", token=None)
    assert st == 303 and hd["location"] == "/console/login"
    assert c.get("/api/overview")[0] == 200


def test_login_sets_a_strict_http_only_cookie_that_is_not_the_token(console):
    c = console()
    st, hd, body = c.login(token="not the token at all")
    assert st == 401 and "set-cookie" not in hd
    st, hd, _ = c.login(name="<script>")
    assert st == 400 and "set-cookie" not in hd
    st, hd, _ = c.login(name="Ada")
    assert st == 303 and hd["location"] == "/console"
    cookie = hd["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert TOKEN not in value
    st, _, body = request(c.port, "GET", "/api/session", headers={"Cookie": f"ordersync_console={value}"})
    doc = json.loads(body)
    assert st == 200 and doc["operator"] == "Ada" and len(doc["csrf"]) == 64
    # a tampered cookie is nobody's
    forged = value[:-1] + ("0" if value[-1] != "0" else "1")
    st, _, _ = request(c.port, "GET", "/api/session", headers={"Cookie": f"ordersync_console={forged}"})
    assert st == 401
    # a login posted from another site is refused
    st, hd, _ = c.login(headers={"Origin": "http://evil.example"})
    assert st == 403 and "set-cookie" not in hd


def test_pages_forbid_framing_sniffing_and_foreign_scripts(console):
    c = console()
    cookie, _ = c.session()
    st, hd, body = request(c.port, "GET", "/console", headers={"Cookie": cookie})
    assert st == 200 and b"/console/app.js" in body
    csp = hd["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert hd["x-frame-options"] == "DENY" and hd["x-content-type-options"] == "nosniff"
    assert hd["cache-control"] == "no-store"
    st, hd, body = request(c.port, "GET", "/console/app.js")
    assert st == 200 and hd["content-type"].startswith("text/javascript")
    # the page builds text nodes, never markup from data
    assert b"innerHTML" not in body


def test_csrf_and_cross_origin_requests_are_refused(console, receivers, db):
    receivers["shipping"].behaviour = lambda rec: (500, {}, b"down")
    c = console()
    send_order(c.proc, 5001)
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 1,
             what="a dead event")
    pos = db.scalar("SELECT position FROM deliveries WHERE state = 'dead'")
    body = {"items": [{"destination": "shipping", "position": pos}]}
    cookie, csrf = c.session()
    same = {"Origin": f"http://127.0.0.1:{c.port}", "Host": f"127.0.0.1:{c.port}"}
    # a cookie alone does not do it: no CSRF token, a wrong one, another site
    st, _, resp = c.post("/api/deliveries/replay", body, token=None,
                         headers={"Cookie": cookie, **same})
    assert st == 403 and json.loads(resp)["error"] == "csrf"
    st, _, _ = c.post("/api/deliveries/replay", body, token=None,
                      headers={"Cookie": cookie, "X-CSRF-Token": "0" * 64, **same})
    assert st == 403
    st, _, resp = c.post("/api/deliveries/replay", body, token=None,
                         headers={"Cookie": cookie, "X-CSRF-Token": csrf,
                                  "Origin": "http://evil.example", "Host": f"127.0.0.1:{c.port}"})
    assert st == 403 and json.loads(resp)["error"] == "cross_origin"
    st, _, _ = c.post("/api/deliveries/replay", body, token=None,
                      headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"})
    assert st == 403
    # another user's CSRF token does not fit this session
    _, other_csrf = c.session("someone-else")
    st, _, _ = c.post("/api/deliveries/replay", body, token=None,
                      headers={"Cookie": cookie, "X-CSRF-Token": other_csrf, **same})
    assert st == 403
    # a form post (what a foreign page can send without asking) is not JSON
    st, _, _ = c.post("/api/deliveries/replay", "items=1", token=None,
                      headers={"Cookie": cookie, "X-CSRF-Token": csrf,
                               "Content-Type": "application/x-www-form-urlencoded", **same})
    assert st == 415
    assert c.get("/api/deliveries/replay")[0] == 405
    assert db.scalar("SELECT count(*) FROM operator_actions") == 0
    st, _, resp = c.post("/api/deliveries/replay", body, token=None,
                         headers={"Cookie": cookie, "X-CSRF-Token": csrf, **same})
    assert st == 200 and json.loads(resp) == {"replayed": 1}
    assert db.query("SELECT actor, action FROM operator_actions") == [("console:tester", "replay")]


def test_orders_are_found_and_paged(console, db):
    c = console()
    for i in range(7):
        send_order(c.proc, 6000 + i, email=f"Buyer{i % 2}@Example.com", number=f"#{3100 + i}")
    pages, before = [], None
    while True:
        doc = c.api("/api/orders?limit=3" + (f"&before={before}" if before else ""))
        pages.append([o["id"] for o in doc["orders"]])
        before = doc["next"]
        if before is None:
            break
    ids = [i for p in pages for i in p]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7
    # by external id, by order number with or without '#', by email in any case, by our id
    assert [o["external_id"] for o in c.api("/api/orders?q=6003")["orders"]] == ["6003"]
    assert [o["number"] for o in c.api("/api/orders?q=%233104")["orders"]] == ["#3104"]
    assert [o["number"] for o in c.api("/api/orders?q=3104")["orders"]] == ["#3104"]
    by_email = c.api("/api/orders?q=buyer1%40example.com&limit=2")
    assert len(by_email["orders"]) == 2 and by_email["next"] is not None
    rest = c.api(f"/api/orders?q=buyer1%40example.com&limit=2&before={by_email['next']}")
    assert len(rest["orders"]) == 1 and rest["next"] is None
    assert c.api(f"/api/orders?q={ids[0]}")["orders"][0]["id"] == ids[0]
    assert c.api("/api/orders?q=nothing-like-this")["orders"] == []
    for bad in ("limit=0", "limit=201", "before=abc", "q=" + "x" * 1100):
        assert c.get("/api/orders?" + bad)[0] == 400, bad
    assert c.get("/api/orders/99999999")[0] == 404


def test_dead_letters_are_paged_replayed_and_skipped_with_their_actor(console, receivers, db):
    receivers["shipping"].behaviour = lambda rec: (503, {}, b"shipping is down")
    c = console()
    for i in range(5):
        send_order(c.proc, 7000 + i)
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 5,
             what="five dead events")
    seen, before = [], None
    while True:
        doc = c.api("/api/deliveries?state=dead&destination=shipping&limit=2"
                    + (f"&before={before}" if before else ""))
        seen += [(it["destination"], it["position"]) for it in doc["items"]]
        assert all(it["last_status"] == 503 and it["state"] == "dead" for it in doc["items"])
        if not doc["next"]:
            break
        before = f"{doc['next']['position']}:{doc['next']['destination']}"
    assert len(seen) == 5 and len(set(seen)) == 5
    assert [p for _, p in seen] == sorted((p for _, p in seen), reverse=True)
    assert c.api("/api/deliveries?state=dead&destination=inventory")["items"] == []
    assert c.get("/api/deliveries?state=delivered")[0] == 400
    assert c.get("/api/deliveries?since=not-a-date")[0] == 400

    receivers["shipping"].behaviour = lambda rec: (200, {}, b"{}")
    first = seen[0]
    st, _, resp = c.post("/api/deliveries/replay",
                         {"items": [{"destination": first[0], "position": first[1]}],
                          "actor": "ci-bot"})
    assert st == 200 and json.loads(resp) == {"replayed": 1}
    order_id = db.scalar("SELECT order_id FROM events WHERE position = %s", (first[1],))
    wait_for(lambda: [d["state"] for d in c.api(f"/api/orders/{order_id}")["deliveries"]
                      if d["destination"] == "shipping"] == ["delivered"], what="the replay")
    doc = c.api(f"/api/orders/{order_id}")
    assert [(a["actor"], a["action"], a["position"]) for a in doc["actions"]] == \
        [("api:ci-bot", "replay", first[1])]
    shipping = [a for a in doc["attempts"] if a["destination"] == "shipping"]
    assert [a["http_status"] for a in shipping] == [503, 503, 200]
    assert "shipping is down" in shipping[0]["excerpt"]
    # replaying it again does nothing: it is no longer dead
    st, _, resp = c.post("/api/deliveries/replay",
                         {"items": [{"destination": first[0], "position": first[1]}]})
    assert json.loads(resp) == {"replayed": 0}

    # skip one by hand, then every other matching one
    second = seen[1]
    st, _, resp = c.post("/api/deliveries/skip",
                         {"items": [{"destination": second[0], "position": second[1]}]})
    assert json.loads(resp) == {"skipped": 1}
    st, _, resp = c.post("/api/deliveries/skip",
                         {"matching": {"destination": "shipping", "state": "dead"}})
    assert json.loads(resp) == {"skipped": 3}
    assert db.scalar("SELECT count(*) FROM deliveries") == 0
    assert db.query("SELECT actor, action, count(*) FROM operator_actions"
                    " GROUP BY 1, 2 ORDER BY 2") == [("api:ci-bot", "replay", 1),
                                                      ("api:token", "skip", 4)]
    for bad in ({}, {"items": []}, {"items": [{"destination": "Bad Id", "position": 1}]},
                {"items": [{"destination": "shipping", "position": "1"}]},
                {"matching": {"state": "blocked"}}, {"items": [], "matching": {}}):
        st, _, _ = c.post("/api/deliveries/replay", bad)
        assert st == 400, bad
    assert c.post("/api/deliveries/replay", "{not json")[0] == 400


def test_an_order_timeline_has_webhooks_events_and_first_attempts(console, db):
    c = console()
    o = copy.deepcopy(TEMPLATE)
    o["id"] = 8001
    b = wh.dumps(o)
    hdrs = wh.shopify(b)
    for h in (hdrs, wh.shopify(b), hdrs):  # applied; the same state again: stale; duplicate
        st, _, _ = request(c.proc.port, "POST", "/webhooks/shop", body=b, headers=h)
        assert st == 200
    oid = c.api("/api/orders?q=8001")["orders"][0]["id"]
    wait_for(lambda: all(d["state"] == "delivered" for d in c.api(f"/api/orders/{oid}")["deliveries"])
             and len(c.api(f"/api/orders/{oid}")["deliveries"]) == 3, what="three deliveries")
    doc = c.api(f"/api/orders/{oid}")
    assert [i["outcome"] for i in doc["inbound"]] == ["applied", "stale"]
    assert [e["type"] for e in doc["events"]] == ["order.created"]
    assert doc["events"][0]["webhook_id"].startswith("msg_")
    assert sorted(d["destination"] for d in doc["deliveries"]) == ["inventory", "invoicing", "shipping"]
    # first-attempt successes come from delivery_log, with status and duration
    assert all(d["first"] and d["first"]["status"] == 200 and d["first"]["duration_ms"] >= 0
               for d in doc["deliveries"])
    raw = c.api(f"/api/orders/{oid}/inbound/{doc['inbound'][0]['id']}")
    assert json.loads(raw["payload"])["id"] == 8001
    env = c.api(f"/api/orders/{oid}/events/{doc['events'][0]['position']}")
    assert json.loads(env["payload"])["type"] == "order.created"
    assert c.get(f"/api/orders/{oid}/inbound/1234567")[0] == 404


def test_a_hostile_customer_email_is_never_markup(console, db):
    c = console()
    send_order(c.proc, 9001, email=HOSTILE)
    q = urllib.parse.quote(HOSTILE)
    st, hd, body = c.get(f"/api/orders?q={q}")
    assert st == 200 and hd["content-type"] == "application/json"
    assert hd["x-content-type-options"] == "nosniff"
    # not even inside a JSON string does a browser get '<' to read as a tag
    assert b"<" not in body and b">" not in body and b"\\u003cimg" in body
    doc = json.loads(body)
    assert doc["orders"][0]["customer_email"] == HOSTILE
    oid = doc["orders"][0]["id"]
    st, _, body = c.get(f"/api/orders/{oid}")
    assert b"<img" not in body and json.loads(body)["order"]["customer_email"] == HOSTILE


def test_sources_and_destinations_show_that_a_secret_is_set_never_its_value(console, db):
    c = console()
    db.query("UPDATE destinations SET url = 'https://user:pw@ship.example/hook?key=abc123'"
             " WHERE id = 'shipping'")
    text = c.get("/api/sources")[2] + c.get("/api/destinations")[2]
    for secret in (wh.SHOPIFY_SECRET, wh.DEST_SECRET, "abc123", "user:pw"):
        assert secret.encode() not in text, secret
    src = c.api("/api/sources")[0]
    assert src["secret_set"] and not src["rotating"] and src["secret_changed_at"]
    dests = {d["id"]: d for d in c.api("/api/destinations")}
    assert dests["shipping"]["url"] == "https://ship.example" and dests["shipping"]["url_redacted"]
    before = dests["inventory"]["secret_changed_at"]
    time.sleep(0.01)
    db.query("UPDATE destinations SET previous_secret = secret,"
             " secret = 'whsec_bmV3LXNlY3JldC1mb3ItaW52ZW50b3J5' WHERE id = 'inventory'")
    inv = {d["id"]: d for d in c.api("/api/destinations")}["inventory"]
    assert inv["rotating"] and inv["secret_changed_at"] > before
    # the relay's own writes (failure counters) are no secret change
    db.query("UPDATE destinations SET consecutive_failures = 3 WHERE id = 'inventory'")
    assert {d["id"]: d for d in c.api("/api/destinations")}["inventory"]["secret_changed_at"] == \
        inv["secret_changed_at"]


def test_the_overview_counts_the_backlog_and_tolerates_a_rate_limit_column(console, receivers, db):
    receivers["shipping"].behaviour = lambda rec: (429, {"Retry-After": "1"}, b"slow down")
    c = console()
    send_order(c.proc, 9101)
    send_order(c.proc, 9102)
    wait_for(lambda: {d["id"]: d for d in c.api("/api/overview")["destinations"]}["shipping"]["dead"] == 2,
             what="two dead events")
    doc = {d["id"]: d for d in c.api("/api/overview")["destinations"]}
    assert doc["inventory"]["dead"] == 0 and doc["inventory"]["pending"] == 0
    assert sum(m[1] for m in doc["inventory"]["minutes"]) == 2
    assert sum(m[3] for m in doc["shipping"]["minutes"]) == 4  # two attempts each, all 429
    assert doc["shipping"]["rate_limit_per_s"] is None
    # the column is migrations/008's (numeric); the console reads it from the row's JSON
    db.query("UPDATE destinations SET rate_limit_per_s = 50 WHERE id = 'shipping'")
    doc = {d["id"]: d for d in c.api("/api/overview")["destinations"]}
    assert doc["shipping"]["rate_limit_per_s"] == 50
