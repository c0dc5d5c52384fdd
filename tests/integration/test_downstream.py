"""The downstream helper service (services/downstream): the inventory,
invoicing and shipping systems ordersync is demoed with, and a sink. Black
box: the real binary, a real PostgreSQL (the test's fresh database holds the
role's schema), requests signed with the tests' own Standard Webhooks
implementation (webhooks.py), faults injected through flags and POST /control,
a database outage made real by cutting a TCP proxy."""
import json
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest

import webhooks as wh
from conftest import BIN, FIXTURES, Process, request
from receiver import wait_for

DS_BIN = os.path.join(os.path.dirname(BIN), "downstream")
SECRET = wh.DEST_SECRET


class Downstream:
    """A running downstream; its JSON log lines are collected in `logs`."""

    def __init__(self, role, database_url=None, env=None, args=()):
        self.env = dict(os.environ)
        self.env.pop("DATABASE_URL", None)
        self.env.update({"DOWNSTREAM_LISTEN": "127.0.0.1:0", "DOWNSTREAM_SECRET": SECRET,
                         "DOWNSTREAM_LOG_LEVEL": "debug"})
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.env.update(env or {})
        self.args = ["--role", role, *args]
        self.logs = []
        self.port = None
        self._listening = threading.Event()
        self.proc = subprocess.Popen([DS_BIN, *self.args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(15):
            self.stop()
            raise AssertionError("downstream did not start:\n" + "\n".join(map(str, self.logs)))

    def wait_ready(self, timeout=10):
        """The database is connected (GET /readyz)."""
        wait_for(lambda: request(self.port, "GET", "/readyz")[0] == 200, timeout=timeout,
                 what="downstream ready")
        return self

    def _read(self):
        for line in self.proc.stderr:
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {"raw": line.rstrip()}
            self.logs.append(rec)
            if rec.get("msg") == "listening":
                self.port = rec["port"]
                self._listening.set()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hooks"

    def stop(self, timeout=15):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def state(self):
        st, _, body = request(self.port, "GET", "/state")
        assert st == 200, body
        return json.loads(body)

    def control(self, **knobs):
        st, _, body = request(self.port, "POST", "/control", body=knobs)
        return st, json.loads(body)

    def send(self, type_, order, msg_id=None, secret=SECRET, headers=None, raw=None):
        """POSTs one signed event; returns (status, headers, parsed JSON body)."""
        body = raw if raw is not None else wh.dumps(
            {"type": type_, "timestamp": "2026-01-02T03:04:05Z", "data": order})
        h = wh.standard(body, secret=secret, msg_id=msg_id)
        h.update(headers or {})
        st, rh, resp = request(self.port, "POST", "/hooks/test", body=body, headers=h)
        return st, rh, json.loads(resp) if resp else None


@pytest.fixture
def downstream(db):
    procs = []

    def start(role, env=None, args=(), database_url=None, ready=True):
        p = Downstream(role, database_url or db.url, env=env, args=args)
        procs.append(p)
        return p.wait_ready() if ready else p

    yield start
    for p in procs:
        assert p.stop() == 0, "downstream did not exit cleanly:\n" + "\n".join(
            map(str, p.logs[-20:]))


def order(ext="1001", status="open", fs="paid", lines=None, total="86.46", refunded="0.00",
          fulfillment="unfulfilled", source="shop"):
    if lines is None:
        lines = [{"sku": "SOCK", "title": "Socks", "quantity": 2, "unit_price": "9.99"},
                 {"sku": "JKT", "title": "Jacket", "quantity": 1, "unit_price": "59.00"}]
    return {"id": ext, "source": source, "external_id": ext, "number": "#" + ext,
            "status": status, "financial_status": fs, "fulfillment_status": fulfillment,
            "currency": "USD", "total": total, "subtotal": total, "tax": "0.00",
            "shipping": "0.00", "refunded": refunded, "customer_email": "a@example.com",
            "shipping_address": None, "lines": lines, "created_at": "2026-01-02T03:04:05Z",
            "updated_at": "2026-01-02T03:04:05Z"}


# -- signatures and input ---------------------------------------------------------------


def test_missing_or_bad_signature_is_401_and_applies_nothing(downstream):
    ds = downstream("inventory")
    body = wh.dumps({"type": "order.created", "timestamp": "x", "data": order()})
    st, _, resp = request(ds.port, "POST", "/hooks/inventory", body=body,
                          headers={"Content-Type": "application/json"})
    assert st == 401 and json.loads(resp)["error"] == "invalid_signature"
    st, _, resp = ds.send("order.created", order(), secret="whsec_" + "A" * 32)
    assert st == 401 and resp["error"] == "invalid_signature"
    # a valid signature over other bytes
    h = wh.standard(body, secret=SECRET)
    st, _, _ = request(ds.port, "POST", "/hooks/inventory", body=body.replace(b"1001", b"1002"),
                       headers=h)
    assert st == 401
    # a signature older than the 300 s tolerance
    h = wh.standard(body, secret=SECRET, ts=int(time.time()) - 600)
    st, _, _ = request(ds.port, "POST", "/hooks/inventory", body=body, headers=h)
    assert st == 401
    s = ds.state()
    assert s["orders"] == {} and s["skus"] == {}
    assert s["received"] == 4 and s["invalid"] == 4 and s["valid"] == 0 and s["applied"] == 0


def test_several_signatures_and_previous_secret(downstream):
    old = "whsec_" + "b2xkLXNlY3JldC0xMjM0NTY3ODkwMTIzNDU2"
    ds = downstream("sink", env={"DOWNSTREAM_PREVIOUS_SECRET": old})
    body = wh.dumps({"type": "order.created", "timestamp": "x", "data": order()})
    h = wh.standard(body, secret=old)
    assert request(ds.port, "POST", "/x", body=body, headers=h)[0] == 200
    # several space-separated signatures: one matching is enough
    h = wh.standard(body, secret=SECRET)
    bogus = wh.standard_signature("whsec_" + "C" * 32, h["webhook-id"], h["webhook-timestamp"],
                                  body)
    h["webhook-signature"] = bogus + " " + h["webhook-signature"]
    assert request(ds.port, "POST", "/x", body=body, headers=h)[0] == 200


def test_malformed_events_are_400(downstream):
    ds = downstream("inventory")
    assert ds.send(None, None, raw=b"{not json")[0] == 400
    assert ds.send(None, None, raw=b'{"type": "order.created"}')[0] == 400
    assert ds.send("order.created", {"external_id": "1"})[0] == 400
    assert ds.send("order.exploded", order())[0] == 400
    assert ds.send("order.created", order(), headers={"Content-Type": "text/plain"})[0] == 415
    # well-formed envelope, bad data: rejected by the database, nothing half-applied
    bad = order(lines=[{"sku": "X", "title": "X", "quantity": "lots", "unit_price": "1"}])
    st, _, resp = ds.send("order.created", bad)
    assert st == 400 and resp["error"] == "invalid_event"
    s = ds.state()
    assert s["orders"] == {} and s["malformed"] == 6 and s["valid"] == 6


# -- inventory ----------------------------------------------------------------------------


def test_inventory_created_reserves_cancelled_releases(downstream):
    ds = downstream("inventory")
    st, _, resp = ds.send("order.created", order("1"))
    assert (st, resp) == (200, {"outcome": "applied"})
    assert ds.send("order.created", order("2", lines=[
        {"sku": "SOCK", "title": "Socks", "quantity": 3, "unit_price": "9.99"},
        {"sku": None, "title": "Gift card", "quantity": 1, "unit_price": "5.00"}]))[0] == 200
    s = ds.state()
    assert s["orders"] == {
        "shop:1": {"status": "reserved", "lines": {"SOCK": 2, "JKT": 1}},
        "shop:2": {"status": "reserved", "lines": {"SOCK": 3, "title:Gift card": 1}}}
    assert s["skus"] == {"SOCK": 5, "JKT": 1, "title:Gift card": 1}

    assert ds.send("order.cancelled", order("1", status="cancelled"))[0] == 200
    s = ds.state()
    assert s["orders"]["shop:1"]["status"] == "released"
    assert s["orders"]["shop:2"]["status"] == "reserved"
    assert s["skus"] == {"SOCK": 3, "title:Gift card": 1}
    # paid / fulfilled change no reservation
    assert ds.send("order.paid", order("2"))[0] == 200
    assert ds.state()["skus"] == {"SOCK": 3, "title:Gift card": 1}
    assert ds.state()["applied"] == 4


def test_inventory_is_idempotent_by_webhook_id_and_by_order(downstream):
    ds = downstream("inventory")
    mid = "msg_" + uuid.uuid4().hex
    assert ds.send("order.created", order("1"), msg_id=mid)[2] == {"outcome": "applied"}
    st, _, resp = ds.send("order.created", order("1"), msg_id=mid)
    assert (st, resp) == (200, {"outcome": "duplicate"})
    assert ds.state()["skus"] == {"SOCK": 2, "JKT": 1}
    # another created for the same order replaces, never doubles
    assert ds.send("order.created", order("1"))[2] == {"outcome": "applied"}
    assert ds.state()["skus"] == {"SOCK": 2, "JKT": 1}
    # an update replaces the lines
    assert ds.send("order.updated", order("1", lines=[
        {"sku": "SOCK", "title": "Socks", "quantity": 1, "unit_price": "9.99"},
        {"sku": "SOCK", "title": "Socks", "quantity": 4, "unit_price": "9.99"}]))[0] == 200
    s = ds.state()
    assert s["orders"]["shop:1"]["lines"] == {"SOCK": 5} and s["skus"] == {"SOCK": 5}
    # a cancel twice (two ids) releases once; its redelivery is a duplicate
    cid = "msg_" + uuid.uuid4().hex
    assert ds.send("order.cancelled", order("1", status="cancelled"), msg_id=cid)[0] == 200
    assert ds.send("order.cancelled", order("1", status="cancelled"))[0] == 200
    assert ds.send("order.cancelled", order("1", status="cancelled"), msg_id=cid)[2] == {
        "outcome": "duplicate"}
    s = ds.state()
    assert s["skus"] == {} and s["orders"]["shop:1"]["status"] == "released"
    assert (s["received"], s["applied"], s["duplicates"]) == (7, 5, 2)


def test_inventory_update_of_cancelled_order_releases(downstream):
    ds = downstream("inventory")
    ds.send("order.created", order("1"))
    assert ds.send("order.updated", order("1", status="cancelled"))[0] == 200
    assert ds.state()["orders"]["shop:1"]["status"] == "released"
    # a cancel for an order never seen is recorded as released
    assert ds.send("order.cancelled", order("9", status="cancelled"))[0] == 200
    assert ds.state()["orders"]["shop:9"]["status"] == "released"
    assert ds.state()["skus"] == {}


# -- invoicing ----------------------------------------------------------------------------


def test_invoice_once_when_paid_credit_notes_on_refund_and_cancel(downstream):
    ds = downstream("invoicing")
    assert ds.send("order.created", order("1", fs="pending"))[0] == 200
    assert ds.state()["orders"] == {}
    assert ds.send("order.paid", order("1"))[0] == 200
    assert ds.send("order.updated", order("1"))[0] == 200  # still paid: no second invoice
    s = ds.state()
    inv = s["orders"]["shop:1"]
    assert {k: inv["invoice"][k] for k in ("number", "total", "currency")} == {
        "number": "#1", "total": "86.46", "currency": "USD"}
    assert inv["invoice"]["id"].startswith("INV-") and inv["credit_notes"] == []

    rid = "msg_" + uuid.uuid4().hex
    refund = order("1", fs="partially_refunded", refunded="10.00")
    assert ds.send("order.refunded", refund, msg_id=rid)[0] == 200
    assert ds.send("order.refunded", refund, msg_id=rid)[2] == {"outcome": "duplicate"}
    # the same running total under a new id credits nothing new
    assert ds.send("order.refunded", refund)[0] == 200
    assert ds.state()["orders"]["shop:1"]["credit_notes"] == ["10.00"]
    assert ds.send("order.cancelled", order("1", status="cancelled", fs="partially_refunded",
                                            refunded="10.00"))[0] == 200
    assert ds.state()["orders"]["shop:1"]["credit_notes"] == ["10.00", "76.46"]
    # a later full refund has nothing left to credit
    assert ds.send("order.refunded", order("1", status="cancelled", fs="refunded",
                                           refunded="86.46"))[0] == 200
    assert ds.state()["orders"]["shop:1"]["credit_notes"] == ["10.00", "76.46"]


def test_invoicing_first_event_already_refunded_and_unpaid_cancel(downstream):
    ds = downstream("invoicing")
    # an order whose first event is its refund is invoiced, then credited
    assert ds.send("order.refunded", order("1", fs="refunded", refunded="86.46"))[0] == 200
    o = ds.state()["orders"]["shop:1"]
    assert o["invoice"]["total"] == "86.46" and o["credit_notes"] == ["86.46"]
    # never paid, cancelled: no invoice, no credit note
    ds.send("order.created", order("2", fs="pending"))
    ds.send("order.cancelled", order("2", status="cancelled", fs="voided"))
    assert "shop:2" not in ds.state()["orders"]
    # paid without a total cannot be invoiced correctly: 400, not a wrong invoice
    bad = order("3")
    del bad["total"]
    assert ds.send("order.paid", bad)[0] == 400


# -- shipping -----------------------------------------------------------------------------


def test_shipment_once_shipped_on_fulfil_cancelled_on_cancel(downstream):
    ds = downstream("shipping")
    assert ds.send("order.created", order("1", fs="pending"))[0] == 200
    assert ds.state()["orders"] == {}
    assert ds.send("order.paid", order("1"))[0] == 200
    assert ds.send("order.updated", order("1"))[0] == 200
    assert ds.state()["orders"] == {"shop:1": {"status": "pending"}}
    assert ds.send("order.cancelled", order("1", status="cancelled"))[0] == 200
    assert ds.state()["orders"]["shop:1"] == {"status": "cancelled"}
    # never re-created once cancelled
    assert ds.send("order.paid", order("1"))[0] == 200
    assert ds.state()["orders"]["shop:1"] == {"status": "cancelled"}

    ds.send("order.created", order("2"))
    assert ds.send("order.fulfilled", order("2", fulfillment="fulfilled"))[0] == 200
    assert ds.state()["orders"]["shop:2"] == {"status": "shipped"}
    ds.send("order.cancelled", order("2", status="cancelled", fulfillment="fulfilled"))
    assert ds.state()["orders"]["shop:2"] == {"status": "shipped"}  # a parcel is not recalled

    # paid but nothing to ship (Stripe checkout without lines): no shipment
    ds.send("order.paid", order("3", lines=[]))
    # cancelled before it was paid: no shipment
    ds.send("order.cancelled", order("4", status="cancelled", fs="pending"))
    assert set(ds.state()["orders"]) == {"shop:1", "shop:2"}


# -- faults -------------------------------------------------------------------------------


def test_control_fail_rate_500_applies_nothing(downstream):
    ds = downstream("inventory")
    st, knobs = ds.control(fail_rate=1)
    assert st == 200 and knobs["fail_rate"] == 1
    st, rh, resp = ds.send("order.created", order("1"))
    assert st == 500 and resp["error"] == "injected_failure"
    assert ds.state()["orders"] == {}
    assert ds.control(fail_rate=0)[0] == 200
    assert ds.send("order.created", order("1"))[0] == 200
    s = ds.state()
    assert s["injected"]["fail"] == 1 and "shop:1" in s["orders"]
    # bad knobs change nothing
    assert ds.control(fail_rate=2)[0] == 400
    assert ds.control(fail_rate=0.5, nonsense=1)[0] == 400
    st, _, body = request(ds.port, "GET", "/control")
    assert st == 200 and json.loads(body)["fail_rate"] == 0


def test_a_seed_makes_faults_reproducible_not_rigged(downstream):
    # the same seed, the same answers
    runs = []
    for _ in range(2):
        ds = downstream("sink", env={"DOWNSTREAM_SEED": "7", "DOWNSTREAM_FAIL_RATE": "0.5"})
        runs.append([ds.send("order.created", order())[0] for _ in range(12)])
    assert runs[0] == runs[1] and set(runs[0]) == {200, 500}, runs
    # small seeds do not make the first webhooks fail: at 5%, the first of
    # receivers seeded 1, 2 and 3 failed every time when the generator started
    # from the bare seed
    first = [downstream("sink", env={"DOWNSTREAM_SEED": seed, "DOWNSTREAM_FAIL_RATE": "0.05"})
             .send("order.created", order())[0] for seed in ("1", "2", "3")]
    assert first == [200, 200, 200], first


def test_fail_after_apply_then_redelivery_is_a_duplicate(downstream):
    ds = downstream("invoicing", args=("--fail-after-apply-rate", "1"))
    mid = "msg_" + uuid.uuid4().hex
    assert ds.send("order.paid", order("1"), msg_id=mid)[0] == 500
    assert "shop:1" in ds.state()["orders"]  # committed before the 500
    ds.control(fail_after_apply_rate=0)
    assert ds.send("order.paid", order("1"), msg_id=mid)[2] == {"outcome": "duplicate"}
    assert len(ds.state()["orders"]) == 1


def test_throttle_429_with_retry_after(downstream):
    ds = downstream("sink", env={"DOWNSTREAM_THROTTLE_RATE": "1", "DOWNSTREAM_RETRY_AFTER_S": "7"})
    st, rh, resp = ds.send("order.created", order())
    assert st == 429 and rh["retry-after"] == "7" and resp["error"] == "throttled"
    ds.control(throttle_rate=0)
    assert ds.send("order.created", order())[0] == 200
    s = ds.state()
    assert s["injected"]["throttle"] == 1 and s["applied"] == 1


def test_down_window_503_from_env_and_control(downstream):
    ds = downstream("sink", env={"DOWNSTREAM_DOWN_AFTER_S": "0", "DOWNSTREAM_DOWN_FOR_S": "30"})
    st, rh, _ = ds.send("order.created", order())
    assert st == 503 and 1 <= int(rh["retry-after"]) <= 30
    # health, state and control are not subject to faults
    assert request(ds.port, "GET", "/healthz")[0] == 200
    assert ds.state()["injected"]["down"] == 1
    ds.control(down_for_s=0)
    assert ds.send("order.created", order())[0] == 200
    # a short window starting now, then back
    st, knobs = ds.control(down_after_s=0, down_for_s=1)
    assert knobs["down_now"] is True
    assert ds.send("order.created", order())[0] == 503
    wait_for(lambda: ds.send("order.created", order())[0] == 200, timeout=5, what="window end")


def test_latency_delays_without_blocking(downstream):
    ds = downstream("sink", env={"DOWNSTREAM_LATENCY_MS": "400"})
    results = []

    def one():
        t = time.time()
        st = ds.send("order.created", order())[0]
        results.append((st, t, time.time()))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200] * 4
    assert all(end - start >= 0.39 for _, start, end in results)
    # concurrent, not one after another: every request was still waiting when the last one began
    # (a proof that needs no bound on how fast a shared machine is)
    assert max(start for _, start, _ in results) < min(end for _, _, end in results)
    # and health is not held up behind a delayed request
    slow = threading.Thread(target=one)
    slow.start()
    time.sleep(0.05)
    assert request(ds.port, "GET", "/healthz")[0] == 200
    assert slow.is_alive(), "/healthz waited for the delayed request"
    slow.join()


# -- sink, state, lifecycle ---------------------------------------------------------------


def test_sink_counts_without_database(downstream):
    ds = downstream("sink", database_url="postgresql://nobody@127.0.0.1:1/none")
    assert request(ds.port, "GET", "/readyz")[0] == 200
    for _ in range(3):
        assert ds.send("order.created", order())[0] == 200
    assert ds.send("order.created", order(), secret="whsec_" + "D" * 32)[0] == 401
    s = ds.state()
    assert s["role"] == "sink"
    assert {k: s[k] for k in ("received", "valid", "invalid", "applied", "duplicates")} == {
        "received": 4, "valid": 3, "invalid": 1, "applied": 3, "duplicates": 0}


def test_routes_and_methods(downstream):
    ds = downstream("shipping")
    st, _, body = request(ds.port, "GET", "/healthz")
    assert st == 200 and json.loads(body) == {"status": "ok"}
    st, h, _ = request(ds.port, "GET", "/hooks/shipping")
    assert st == 405 and h["allow"] == "POST"
    assert request(ds.port, "POST", "/state", body=b"{}")[0] == 405
    assert request(ds.port, "PUT", "/control", body=b"{}")[0] == 405
    s = ds.state()
    assert s["role"] == "shipping" and s["orders"] == {}
    for k in ("received", "applied", "duplicates", "valid", "invalid"):
        assert s[k] == 0


def test_state_survives_restart_and_schema_install_is_idempotent(downstream, db):
    ds = downstream("inventory")
    ds.send("order.created", order("1"))
    assert ds.stop() == 0
    # two at once on the same schema: the install is serialized
    a, b = downstream("inventory"), downstream("inventory")
    assert a.state()["skus"] == {"SOCK": 2, "JKT": 1}
    assert b.state()["orders"]["shop:1"]["status"] == "reserved"
    assert a.state()["received"] == 0  # counters are per process
    assert db.scalar("SELECT count(*) FROM inventory.messages") == 1


def test_missing_secret_or_role_refuses_to_start(db):
    env = dict(os.environ, DOWNSTREAM_LISTEN="127.0.0.1:0")
    env.pop("DOWNSTREAM_SECRET", None)
    p = subprocess.run([DS_BIN, "--role", "sink"], env=env, capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 2 and "DOWNSTREAM_SECRET" in p.stderr
    env["DOWNSTREAM_SECRET"] = SECRET
    p = subprocess.run([DS_BIN, "--role", "warehouse"], env=env, capture_output=True, text=True,
                       timeout=10)
    assert p.returncode == 2 and "unknown role" in p.stderr
    p = subprocess.run([DS_BIN, "--role", "sink", "--fail-rate", "1.5"], env=env,
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "fail-rate" in p.stderr
    p = subprocess.run([DS_BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    for s in ("DOWNSTREAM_FAIL_RATE", "DOWNSTREAM_LATENCY_MS", "DOWNSTREAM_THROTTLE_RATE",
              "DOWNSTREAM_RETRY_AFTER_S", "DOWNSTREAM_DOWN_AFTER_S", "DOWNSTREAM_DOWN_FOR_S",
              "--fail-rate", "POST /control"):
        assert s in p.stdout


# -- database outage ----------------------------------------------------------------------


class Proxy:
    """A TCP proxy to Postgres that can be cut (every connection closed, new
    ones refused) and restored on the same port: a real outage for one client."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.port = None
        self.conns = []
        self.lsock = None
        self.up()

    def up(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port or 0))
        self.port = self.lsock.getsockname()[1]
        self.lsock.listen(16)
        threading.Thread(target=self._accept, args=(self.lsock,), daemon=True).start()

    def _accept(self, lsock):
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            self.conns += [c, s]
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        # shutdown wakes the thread blocked in accept(); close alone would not
        self.lsock.shutdown(socket.SHUT_RDWR)
        self.lsock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns = []


def test_database_down_is_503_with_retry_after_then_recovers(downstream, db):
    import urllib.parse
    parts = urllib.parse.urlsplit(db.url)
    proxy = Proxy(parts.port)
    via = urllib.parse.urlunsplit(parts._replace(
        netloc=f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username
        else f"127.0.0.1:{proxy.port}"))
    ds = downstream("inventory", database_url=via)
    assert ds.send("order.created", order("1"))[0] == 200
    proxy.cut()
    wait_for(lambda: request(ds.port, "GET", "/readyz")[0] == 503, timeout=5,
             what="connection loss noticed")
    st, rh, resp = ds.send("order.created", order("2"))
    assert st == 503 and rh["retry-after"] == "1" and resp["error"] == "database_unavailable"
    st, rh, _ = request(ds.port, "GET", "/state")
    assert st == 503 and "retry-after" in rh
    proxy.up()
    wait_for(lambda: ds.send("order.created", order("2"))[0] == 200, timeout=10,
             what="database reconnected")
    s = ds.state()
    assert set(s["orders"]) == {"shop:1", "shop:2"} and s["unavailable"] >= 1
    proxy.cut()


# -- end to end: ordersync's relay into the three systems ---------------------------------


def test_ordersync_relay_into_inventory_invoicing_shipping(downstream, db):
    shop = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))
    dss = {r: downstream(r) for r in ("inventory", "invoicing", "shipping")}
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    for r, d in dss.items():
        # many attempts: the random failures below must not make a row dead
        db.query("INSERT INTO destinations (id, url, secret, retry_schedule, timeout_ms,"
                 " max_attempts) VALUES (%s, %s, %s, '{0.1 seconds, 0.2 seconds}', 2000, 100)",
                 (r, d.url + "/" + r, SECRET))
    # 500s and 500-after-commit: retried by the relay, applied once
    dss["inventory"].control(fail_rate=0.3, fail_after_apply_rate=0.3)
    p = Process(db.url, env={"ORDERSYNC_SWEEP_INTERVAL_S": "1"}).start()
    try:
        p.wait_ready()
        b = wh.dumps(shop)
        assert request(p.port, "POST", "/webhooks/shop", body=b, headers=wh.shopify(b))[0] == 200
        key = f"shop:{shop['id']}"
        wait_for(lambda: key in dss["shipping"].state()["orders"], what="shipment")
        wait_for(lambda: key in dss["invoicing"].state()["orders"], what="invoice")
        wait_for(lambda: key in dss["inventory"].state()["orders"], what="reservation")
        assert dss["invoicing"].state()["orders"][key]["invoice"]["total"] == "86.46"
        assert dss["shipping"].state()["orders"][key] == {"status": "pending"}
        dss["inventory"].control(fail_rate=0, fail_after_apply_rate=0)

        shop.update(cancelled_at="2026-01-03T00:00:00Z", updated_at="2026-01-03T00:00:00Z",
                    cancel_reason="customer")
        b = wh.dumps(shop)
        h = wh.shopify(b, topic="orders/cancelled")
        assert request(p.port, "POST", "/webhooks/shop", body=b, headers=h)[0] == 200
        wait_for(lambda: dss["inventory"].state()["orders"][key]["status"] == "released",
                 what="release")
        wait_for(lambda: dss["shipping"].state()["orders"][key] == {"status": "cancelled"},
                 what="shipment cancelled")
        wait_for(lambda: dss["invoicing"].state()["orders"][key]["credit_notes"] == ["86.46"],
                 what="credit note")
        inv = dss["inventory"].state()
        assert inv["skus"] == {} and inv["applied"] == 2  # redeliveries were duplicates
        assert inv["received"] == inv["applied"] + inv["duplicates"] + inv["injected"]["fail"]
    finally:
        p.stop()
