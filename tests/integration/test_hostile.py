"""Hostile and broken clients against the real binary, a real PostgreSQL and
real sockets: forged topics, failures that are ours and not the sender's,
drip-fed requests, connection floods."""
import copy
import json
import os
import resource
import socket
import time

import pytest

import webhooks as wh
from conftest import FIXTURES, Process, pipeline, request


def fixture(name):
    with open(os.path.join(FIXTURES, name), "rb") as f:
        return f.read()


def seed(db):
    db.query("""INSERT INTO sources (id, kind, secret) VALUES
        ('shop', 'shopify', %(shop)s), ('woo', 'woocommerce', %(woo)s)""",
             {"shop": wh.SHOPIFY_SECRET, "woo": wh.WOO_SECRET})
    db.query("""INSERT INTO destinations (id, url, secret) VALUES
        ('inventory', 'http://127.0.0.1:9/inventory', %(s)s),
        ('invoicing', 'http://127.0.0.1:9/invoicing', %(s)s)""", {"s": wh.DEST_SECRET})


@pytest.fixture
def svc(db, ordersync):
    seed(db)
    # no relay: the events stay pending for their destinations
    return ordersync(env={"ORDERSYNC_RELAY": "0"})


def post(svc, source, body, headers):
    st, h, b = request(svc.port, "POST", f"/webhooks/{source}", body=body, headers=headers)
    return st, h, json.loads(b) if b else None


def counts(db):
    return db.query("SELECT (SELECT count(*) FROM inbound_events), (SELECT count(*) FROM orders),"
                    " (SELECT count(*) FROM order_lines), (SELECT count(*) FROM events)")[0]


def metric(svc, series):
    text = request(svc.port, "GET", "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def shopify_orders(n, first_id=7000):
    template = json.loads(fixture("shopify_order_create.json"))
    out = []
    for i in range(n):
        o = copy.deepcopy(template)
        o["id"] = first_id + i
        out.append(wh.dumps(o))
    return out


# ---------------------------------------------------------------------------
# database errors: only a data error is the sender's fault

def refuse_orders(db, errcode, when="true"):
    db.query(f"""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN RAISE EXCEPTION 'refused by test' USING ERRCODE = '{errcode}'; END $$""")
    db.query(f"""CREATE TRIGGER refuse BEFORE INSERT ON orders FOR EACH ROW
                 WHEN ({when}) EXECUTE FUNCTION refuse()""")


def test_internal_database_error_is_503_for_the_whole_batch(svc, db):
    refuse_orders(db, "XX000")
    bodies = shopify_orders(6)
    # pipelined: one loop turn, one batch
    res = pipeline(svc.port, [("POST", "/webhooks/shop", wh.shopify(b), b) for b in bodies])
    for st, h, body in res:
        assert st == 503, body
        assert int(h["retry-after"]) > 0
        assert json.loads(body)["error"] == "database_unavailable"
    assert counts(db) == (0, 0, 0, 0)
    # not split to hunt for a culprit: there is none
    assert metric(svc, 'ordersync_ingest_transactions_total{result="split"}') == 0
    errors = svc.wait_log(lambda l: l.get("msg") == "ingest transaction failed"
                          and l.get("sqlstate") == "XX000")
    assert errors and all(l["level"] == "error" for l in errors), svc.logs[-10:]
    # the sender's retry succeeds once the database is fixed
    db.query("DROP TRIGGER refuse ON orders")
    st, _, resp = post(svc, "shop", bodies[0], wh.shopify(bodies[0]))
    assert st == 200 and resp["status"] == "accepted", resp


def test_constraint_violation_is_422_for_the_culprit_only(svc, db):
    refuse_orders(db, "23505", "NEW.external_id = '7002'")
    bodies = shopify_orders(5)
    res = pipeline(svc.port, [("POST", "/webhooks/shop", wh.shopify(b), b) for b in bodies])
    assert [r[0] for r in res] == [200, 200, 422, 200, 200]
    assert json.loads(res[2][2])["error"] == "rejected_by_database"
    assert db.scalar("SELECT count(*) FROM orders WHERE external_id = '7002'") == 0
    assert db.scalar("SELECT count(*) FROM inbound_events") == 4
    assert db.scalar("SELECT count(*) FROM orders") == 4


def raw_pipeline(port, reqs, timeout=10):
    """Like conftest.pipeline, but header values go out as the bytes given."""
    raw = b""
    for headers, body in reqs:
        lines = [b"POST /webhooks/shop HTTP/1.1", b"Host: x", b"Content-Length: %d" % len(body)]
        lines += [k.encode() + b": " + (v if isinstance(v, bytes) else v.encode())
                  for k, v in headers.items()]
        raw += b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        f = s.makefile("rb")
        out = []
        for _ in reqs:
            status = int(f.readline().split()[1])
            n = 0
            while True:
                line = f.readline().strip()
                if not line:
                    break
                k, _, v = line.partition(b":")
                if k.lower() == b"content-length":
                    n = int(v)
            out.append((status, json.loads(f.read(n))))
        return out


def test_unusable_unsigned_ids_fail_alone_not_their_batch(svc, db):
    """A webhook id or topic the database cannot index or encode is the sender's 400,
    not a failed transaction for every webhook that shared its batch."""
    bodies = shopify_orders(5)
    hs = [wh.shopify(b) for b in bodies]
    hs[1]["X-Shopify-Topic"] = b"orders/\xffcreate"
    hs[3]["X-Shopify-Webhook-Id"] = os.urandom(4000).hex()  # does not compress under 2.7 kB
    res = raw_pipeline(svc.port, list(zip(hs, bodies)))
    assert [r[0] for r in res] == [200, 400, 200, 400, 200], res
    assert res[1][1]["error"] == res[3][1]["error"] == "invalid_header"
    assert db.scalar("SELECT count(*) FROM orders") == 3


# ---------------------------------------------------------------------------
# forged topics: Shopify and WooCommerce do not sign their topic headers

def test_replayed_body_with_forged_topic_cannot_cancel(svc, db):
    body = fixture("shopify_order_create.json")
    assert json.loads(body)["cancelled_at"] is None
    st, _, resp = post(svc, "shop", body, wh.shopify(body, "orders/create", webhook_id="wh-1"))
    assert st == 200 and resp["status"] == "accepted", resp
    before = db.scalar("SELECT count(*) FROM events")

    # the attacker's replay: the same signed bytes, a new webhook id, another topic
    st, _, resp = post(svc, "shop", body, wh.shopify(body, "orders/cancelled", webhook_id="wh-2"))
    assert st == 200, resp
    assert resp == {"status": "ignored", "reason": "topic_mismatch"}
    assert db.scalar("SELECT status FROM orders") == "open"
    assert db.scalar("SELECT count(*) FROM events") == before
    assert db.scalar("SELECT count(*) FROM events WHERE type = 'order.cancelled'") == 0
    assert db.query("SELECT dedupe_key, topic, event_type, outcome FROM inbound_events"
                    " ORDER BY id") == [("wh-1", "orders/create", "order.created", "applied"),
                                        ("wh-2", "orders/cancelled", None, "ignored")]
    assert metric(svc, 'ordersync_webhooks_total{outcome="ignored",reason="topic_mismatch"}') == 1
    lines = svc.wait_log(lambda l: l.get("msg") == "webhook topic contradicts its signed body")
    assert lines and lines[-1]["topic"] == "orders/cancelled" and lines[-1]["source"] == "shop"
    assert "cancelled" in lines[-1]["detail"]

    # the same forgery for the other state-changing topics
    for topic in ("orders/fulfilled", "refunds/create"):
        st, _, resp = post(svc, "shop", body, wh.shopify(body, topic))
        assert (st, resp["status"]) == (200, "ignored"), (topic, resp)
    assert db.scalar("SELECT count(*) FROM events") == before

    # a genuine cancellation is signed content, and cancels
    cancelled = json.loads(body)
    cancelled["cancelled_at"] = "2026-01-03T10:00:00-05:00"
    cancelled["updated_at"] = "2026-01-03T10:00:00-05:00"
    b2 = wh.dumps(cancelled)
    st, _, resp = post(svc, "shop", b2, wh.shopify(b2, "orders/cancelled"))
    assert st == 200 and resp["status"] == "accepted", resp
    assert db.scalar("SELECT status FROM orders") == "cancelled"
    assert db.scalar("SELECT count(*) FROM events WHERE type = 'order.cancelled'") == 1


def test_woocommerce_live_order_sent_as_deleted_is_ignored(svc, db):
    body = fixture("woocommerce_order_created.json")
    st, _, resp = post(svc, "woo", body, wh.woocommerce(body, "order.deleted"))
    assert st == 200 and resp == {"status": "ignored", "reason": "topic_mismatch"}, resp
    assert counts(db)[1:] == (0, 0, 0)
    # a deletion notice under order.updated is no update either
    thin = b'{"id":727}'
    st, _, resp = post(svc, "woo", thin, wh.woocommerce(thin, "order.updated"))
    assert st == 200 and resp["status"] == "ignored", resp
    assert counts(db)[1:] == (0, 0, 0)


# ---------------------------------------------------------------------------
# slow clients: a body drip-fed a byte at a time

def test_drip_fed_body_gets_408_at_the_request_deadline(db, ordersync):
    seed(db)
    # the header timeout (10 s) also bounds pauses inside a body: a byte every
    # 0.5 s never trips it; only the whole-request deadline can end this
    svc = ordersync(env={"ORDERSYNC_RELAY": "0", "ORDERSYNC_REQUEST_TIMEOUT_S": "2"})
    s = socket.create_connection(("127.0.0.1", svc.port))
    s.sendall(b"POST /webhooks/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Shopify-Topic: orders/create\r\nContent-Length: 100000\r\n\r\n{")
    s.setblocking(False)
    got = b""
    give_up = time.monotonic() + 20  # a drip of 100 kB would take 14 hours
    try:
        while time.monotonic() < give_up:
            try:
                chunk = s.recv(4096)
                if not chunk:
                    break  # answered and closed
                got += chunk
                continue
            except BlockingIOError:
                pass
            try:
                s.send(b" ")
            except OSError:
                break
            time.sleep(0.5)
        # what is still in flight after our last byte
        s.setblocking(True)
        s.settimeout(5)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 408 "), got
    assert b"Connection: close" in got
    assert json.loads(got.split(b"\r\n\r\n", 1)[1]) == {
        "error": "request_timeout", "detail": "request not received whole within 2 s"}
    closes = svc.wait_log(lambda l: l.get("msg") == "closing connection"
                          and l.get("reason") == "request_timeout")
    assert closes and "request not received whole" in closes[-1]["detail"]
    # the server is fine for everyone else
    assert request(svc.port, "GET", "/healthz")[0] == 200


# ---------------------------------------------------------------------------
# a connection flood: health checks go through the admin listener

def admin_port(proc):
    lines = proc.log_lines("admin listening")
    assert lines, proc.logs[-20:]
    return lines[-1]["port"]


def soft_nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                v = line.split()[3]
                return -1 if v == "unlimited" else int(v)
    raise AssertionError("no open files limit")


def test_health_checks_answer_on_the_admin_port_through_a_connection_flood(db):
    seed(db)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4000:
        pytest.skip(f"needs a hard open file limit of 4000, not {hard}")
    # ordersync starts with the common default soft limit; it must take the hard one itself
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))
    try:
        proc = Process(db.url, env={
            "ORDERSYNC_RELAY": "0", "ORDERSYNC_ADMIN_LISTEN": "127.0.0.1:0",
            # the flood holds its connections idle for the whole test
            "ORDERSYNC_HEADER_TIMEOUT_MS": "300000", "ORDERSYNC_REQUEST_TIMEOUT_S": "300"})
        proc.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    flood = []
    try:
        proc.wait_ready()
        port = admin_port(proc)
        assert soft_nofile(proc.proc.pid) == (-1 if hard == resource.RLIM_INFINITY else hard)
        assert proc.log_lines("open file limit")[-1]["soft"] == soft_nofile(proc.proc.pid)

        for _ in range(3000):
            try:
                flood.append(socket.create_connection(("127.0.0.1", proc.port), timeout=5))
            except OSError:
                pass  # past twice the cap the server drops connections: that is the point
        # the public port is saturated: over the cap a new connection gets 503 or nothing
        try:
            st, _, _ = request(proc.port, "GET", "/healthz", timeout=5)
        except OSError:
            st = None
        assert st != 200
        # refused with a 503 (detail), or past twice the cap dropped (reason); a slow
        # server (a sanitizer build) may accept too few of the flood for the second
        assert proc.wait_log(lambda l: l.get("msg") == "closing connection" and "too many connections"
                             in (l.get("reason"), l.get("detail"))), proc.logs[-20:]
        # the probes do not care
        for path in ("/healthz", "/readyz", "/metrics"):
            st, _, body = request(port, "GET", path, timeout=5)
            assert st == 200, (path, body)
        st, _, _ = request(port, "POST", "/webhooks/shop", body=b"{}", timeout=5)
        assert st == 404  # the admin port serves operations only
    finally:
        for s in flood:
            s.close()
        proc.stop()
    assert proc.proc.returncode == 0
