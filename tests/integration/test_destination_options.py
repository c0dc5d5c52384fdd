"""Per-destination options (migrations/008), black-box against the real
binary, a real PostgreSQL and receivers that record what arrives
(receiver.py).

1. headers: sent with every delivery, changed without a restart, refused by
   the table when they are not valid HTTP fields or are ordersync's own;
   their values never appear in a log line, a view or a command's output;
"""
import collections
import copy
import json
import os
import subprocess
import time
import uuid

import psycopg
import pytest

import webhooks as wh
from conftest import FIXTURES, REPO, Process, free_port, request, run_ordersync
from receiver import Receiver, wait_for

TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


@pytest.fixture
def receivers():
    rs = {n: Receiver(n) for n in ("inventory", "invoicing")}
    yield rs
    for r in rs.values():
        r.close()


@pytest.fixture
def stack(db, receivers):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    for n, r in receivers.items():
        db.query("INSERT INTO destinations (id, url, secret, retry_schedule, timeout_ms)"
                 " VALUES (%s, %s, %s, '{0.5 seconds}', 2000)", (n, r.url, wh.DEST_SECRET))
    procs = []

    def start(env=None):
        e = {"ORDERSYNC_SWEEP_INTERVAL_S": "1", "ORDERSYNC_LEASE_S": "5"}
        e.update(env or {})
        p = Process(db.url, env=e).start()
        p.wait_ready()
        procs.append(p)
        return p

    start.procs = procs
    yield start
    for p in procs:
        p.stop(sig=9)


def order_body(oid):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    o["updated_at"] = "2026-01-02T03:04:05Z"
    return wh.dumps(o)


def send(p, oid):
    b = order_body(oid)
    st, _, _ = request(p.port, "POST", "/webhooks/shop", body=b, headers=wh.shopify(b))
    assert st == 200
    return st


def delivered_headers(p, receiver, oid):
    """Sends order `oid` and returns the headers its delivery arrived with."""
    send(p, oid)

    def got():
        return next((r["headers"] for r in receiver.accepted()
                     if r["json"]["data"]["external_id"] == str(oid)), None)
    return wait_for(got, what=f"delivery of order {oid}")


def until_headers(p, receiver, pred, first_oid, what):
    """New orders until one arrives with headers that satisfy pred (a reload
    is asynchronous: the first ones may still go out with the old headers)."""
    oid = [first_oid]

    def attempt():
        oid[0] += 1
        return pred(delivered_headers(p, receiver, oid[0]))
    wait_for(attempt, timeout=10, interval=0.1, what=what)
    return oid[0]


def event_ids(db, dest):
    return {"msg_" + e.replace("-", "") for (e,) in db.query(
        "SELECT event_id::text FROM event_deliveries WHERE destination_id = %s", (dest,))}


# ------------------------------------------------------------------ headers


def test_headers_are_sent_and_a_change_applies_without_a_restart(stack, db, receivers):
    db.query("UPDATE destinations SET headers = %s WHERE id = 'inventory'",
             (json.dumps({"Authorization": "Bearer first-token", "X-Api-Key": "k1",
                          "X-Empty": ""}),))
    inv = receivers["inventory"]
    p = stack()
    send(p, 1)
    wait_for(lambda: len(inv.accepted()) == 1, what="first delivery")
    h = inv.accepted()[0]["headers"]
    assert h["authorization"] == "Bearer first-token"
    assert h["x-api-key"] == "k1"
    assert h["x-empty"] == ""
    # ordersync's own headers are untouched and the signature still verifies
    assert inv.accepted()[0]["valid"]
    assert h["content-type"] == "application/json" and h["user-agent"].startswith("ordersync/")
    # the other destination gets none of them
    wait_for(lambda: len(receivers["invoicing"].accepted()) == 1, what="other destination")
    assert "authorization" not in receivers["invoicing"].accepted()[0]["headers"]

    # a change reaches the running process (NOTIFY), no restart
    db.query("UPDATE destinations SET headers = %s WHERE id = 'inventory'",
             (json.dumps({"authorization": "Bearer second-token"}),))
    oid = until_headers(p, inv, lambda h: h.get("authorization") == "Bearer second-token", 100,
                        "the new headers in use")
    last = delivered_headers(p, inv, oid + 1)
    assert "x-api-key" not in last and "x-empty" not in last
    # and clearing them sends none
    db.query("UPDATE destinations SET headers = '{}' WHERE id = 'inventory'")
    until_headers(p, inv, lambda h: "authorization" not in h, 200, "headers cleared")


REFUSED = [
    ({"Content-Type": "text/plain"}, "set by ordersync"),
    ({"content-length": "1"}, "set by ordersync"),
    ({"User-Agent": "x"}, "set by ordersync"),
    ({"HOST": "evil.example"}, "set by ordersync"),
    ({"webhook-id": "msg_x"}, "set by ordersync"),
    ({"Webhook-Signature": "v1,forged"}, "set by ordersync"),
    ({"Transfer-Encoding": "chunked"}, "set by ordersync"),
    ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
     "set by ordersync"),
    ({"X-Token": "a\r\nX-Injected: 1"}, "not a valid HTTP field value"),
    ({"X-Token": "a\nb"}, "not a valid HTTP field value"),
    ({"X-Token": "caf\u00e9"}, "not a valid HTTP field value"),
    ({"X-Token": " padded"}, "not a valid HTTP field value"),
    ({"X-Token": "x" * 4097}, "not a valid HTTP field value"),
    ({"X Token": "v"}, "not a valid HTTP field name"),
    ({"X-Token:": "v"}, "not a valid HTTP field name"),
    ({"": "v"}, "not a valid HTTP field name"),
    ({"X-Token": 42}, "must be a JSON string"),
    ({"X-Token": None}, "must be a JSON string"),
    ({"X-Token": "a", "x-token": "b"}, "given twice"),
    ({"X-H%d" % i: "v" for i in range(33)}, "at most 32 headers"),
    (["Authorization: Bearer x"], "must be a JSON object"),
]


@pytest.mark.parametrize("headers,why", REFUSED, ids=[w + ":" + json.dumps(h)[:30]
                                                        for h, w in REFUSED])
def test_the_table_refuses_headers_it_cannot_send(db, headers, why):
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('inventory', 'http://x.invalid/',"
             " %s)", (wh.DEST_SECRET,))
    with pytest.raises(psycopg.errors.CheckViolation) as e:
        db.query("UPDATE destinations SET headers = %s WHERE id = 'inventory'",
                 (json.dumps(headers),))
    msg = str(e.value) + repr(e.value.diag.message_detail) + repr(e.value.diag.message_hint)
    assert why in msg, msg
    # the message names a header at most, never its value
    for v in (headers.values() if isinstance(headers, dict) else headers):
        if isinstance(v, str) and len(v) > 2:
            assert v not in msg, msg
    assert db.scalar("SELECT headers FROM destinations WHERE id = 'inventory'") == {}
    # on insert too
    with pytest.raises(psycopg.errors.CheckViolation):
        db.query("INSERT INTO destinations (id, url, secret, headers) VALUES ('crm',"
                 " 'http://x.invalid/', %s, %s)", (wh.DEST_SECRET, json.dumps(headers)))


def test_the_table_accepts_ordinary_api_headers(db):
    ok = {"Authorization": "Bearer eyJhbGciOi.J9-x_y~z+/=", "X-Api-Key": "k" * 4096,
          "Ocp-Apim-Subscription-Key": "abc", "X-Tenant": "a b\tc", "X-Empty": "",
          "!#$%&'*+-.^_`|~0-9": "tokens may be odd"}
    db.query("INSERT INTO destinations (id, url, secret, headers) VALUES ('inventory',"
             " 'http://x.invalid/', %s, %s)", (wh.DEST_SECRET, json.dumps(ok)))
    assert sorted(db.scalar("SELECT header_names FROM sync_backlog")) == sorted(ok)


def test_header_values_are_never_logged_nor_shown(stack, db, receivers):
    """Values are secrets: after deliveries, failures, retries, reloads and a
    refused configuration, no JSON log line, no view, no command's output and
    no answer of the operator console holds one. Only the names are shown
    (sync_backlog.header_names)."""
    secrets = {"Authorization": "Bearer tok_" + uuid.uuid4().hex,
               "X-Api-Key": "key_" + uuid.uuid4().hex}
    db.query("UPDATE destinations SET headers = %s WHERE id = 'inventory'",
             (json.dumps(secrets),))
    inv = receivers["inventory"]
    calls = collections.Counter()

    def flaky(rec):
        calls[rec["headers"]["webhook-id"]] += 1
        return (500, {}, b"try again") if calls[rec["headers"]["webhook-id"]] == 1 else \
            (200, {}, b"ok")
    inv.behaviour = flaky
    admin, token = free_port(), "console-token-" + uuid.uuid4().hex
    p = stack({"ORDERSYNC_ADMIN_LISTEN": "127.0.0.1:%d" % admin, "ORDERSYNC_ADMIN_TOKEN": token})
    for i in range(5):
        send(p, 200 + i)
    wait_for(lambda: len(inv.accepted()) == 5, timeout=20, what="deliveries after a retry")
    assert all(r["headers"]["authorization"] == secrets["Authorization"] for r in inv.all())
    assert db.scalar("SELECT count(*) FROM delivery_attempts WHERE destination_id = 'inventory'"
                     " AND http_status = 500") == 5

    # a reload with new values
    secrets["X-Api-Key"] = "key_" + uuid.uuid4().hex
    db.query("UPDATE destinations SET headers = %s WHERE id = 'inventory'",
             (json.dumps(secrets),))
    # a value the table would refuse, slipped past its trigger: ordersync
    # refuses it too, sends nothing to that destination, and says so without it
    injected = "Bearer inj_" + uuid.uuid4().hex + "\r\nX-Injected: yes"
    db.query("ALTER TABLE destinations DISABLE TRIGGER destinations_options")
    db.query("UPDATE destinations SET headers = %s WHERE id = 'invoicing'",
             (json.dumps({"Authorization": injected}),))
    db.query("ALTER TABLE destinations ENABLE TRIGGER destinations_options")
    wait_for(lambda: p.log_lines("destination headers refused; nothing is sent to it until they"
                                 " are fixed"), what="the refusal logged")
    n_invoicing = len(receivers["invoicing"].all())
    until_headers(p, inv, lambda h: h.get("x-api-key") == secrets["X-Api-Key"], 300,
                  "the new value in use")
    time.sleep(1)
    assert len(receivers["invoicing"].all()) == n_invoicing, "nothing goes out with bad headers"
    assert not any("x-injected" in r["headers"] for r in receivers["invoicing"].all())
    db.query("UPDATE destinations SET headers = '{}' WHERE id = 'invoicing'")
    wait_for(lambda: {r["headers"]["webhook-id"] for r in receivers["invoicing"].accepted()}
             == event_ids(db, "invoicing"), what="invoicing after the fix")

    values = list(secrets.values()) + [injected, injected.split("\r")[0],
                                       "Bearer tok_", "key_", "inj_"]
    # the logs: every line, as collected from stderr
    lines = [json.dumps(rec) for rec in p.logs]
    assert len(lines) > 20
    for v in values:
        assert not [l for l in lines if v in l], v
    # every view of the schema
    views = [v for (v,) in db.query("SELECT table_name FROM information_schema.views"
                                     " WHERE table_schema = 'public'")]
    assert "sync_backlog" in views and "sync_state" in views
    for view in views:
        shown = repr(db.query(f'SELECT * FROM "{view}"'))
        for v in values:
            assert v not in shown, (view, v)
    assert db.query("SELECT destination_id, header_names FROM sync_backlog ORDER BY 1") == [
        ("inventory", ["Authorization", "X-Api-Key"]), ("invoicing", [])]
    assert len(inv.all()) > 5
    # the commands, the status script and the console's API
    outputs = []
    order = db.scalar("SELECT min(id) FROM orders")
    for path in ("/api/overview", "/api/destinations", "/api/orders",
                 "/api/orders/%d" % order, "/api/deliveries?state=pending"):
        st, _, body = request(admin, "GET", path, headers={"Authorization": "Bearer " + token})
        assert st == 200, (path, body)
        outputs.append(body.decode())
    for args in (["replay", "--destination", "inventory"], ["skip", "--destination", "inventory"],
                 ["settings"]):
        r = run_ordersync(args, db.url)
        outputs.append(r.stdout + r.stderr)
    r = subprocess.run([os.path.join(REPO, "scripts", "sync-status"), db.url],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    outputs.append(r.stdout + r.stderr)
    for out in outputs:
        for v in values:
            assert v not in out, v
