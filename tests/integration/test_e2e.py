"""The whole stack, end to end: shops → ordersync → inventory, invoicing and
shipping, with faults on the way, then a consistency check of every system
against ordersync's orders.

- a fresh database (conftest `db`), ordersync with a fast sweep and short leases;
- three real `downstream` processes (built next to ordersync), each with its own
  fault: inventory fails 20% of deliveries, invoicing answers late, shipping is
  down (503) for 3 seconds shortly after start;
- scripts/simulate-orders sends 1000 orders from four kinds of shops with edits,
  payments, cancellations, refunds, duplicate deliveries and out-of-order updates,
  and checks every answer;
- once every event is delivered, scripts/check-consistency compares each
  downstream's GET /state with ordersync's orders (and ordersync's orders with
  what the simulator meant), and must find nothing.
"""
import json
import os
import subprocess
import threading
import time

import pytest

import webhooks as wh
from conftest import BIN, REPO, Process, free_port, request

DOWNSTREAM_BIN = os.path.join(os.path.dirname(BIN), "downstream")
SCRIPTS = os.path.join(REPO, "scripts")
SOURCES = (("shop", "shopify", wh.SHOPIFY_SECRET), ("woo", "woocommerce", wh.WOO_SECRET),
           ("stripe", "stripe", wh.STRIPE_SECRET), ("erp", "standard", wh.STANDARD_SECRET))
FAULTS = {
    "inventory": {"DOWNSTREAM_FAIL_RATE": "0.2"},
    "invoicing": {"DOWNSTREAM_LATENCY_MS": "20"},
    "shipping": {"DOWNSTREAM_DOWN_AFTER_S": "1", "DOWNSTREAM_DOWN_FOR_S": "3"},
}
DELIVERY_TIMEOUT_S = 120


class Downstream:
    """One `downstream --role ROLE` process; its stderr is kept for failures."""

    def __init__(self, role, database_url, env):
        self.role = role
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        e = dict(os.environ)
        e.update({"DOWNSTREAM_ROLE": role, "DOWNSTREAM_LISTEN": "127.0.0.1:%d" % self.port,
                  "DATABASE_URL": database_url, "DOWNSTREAM_SECRET": wh.DEST_SECRET,
                  "DOWNSTREAM_SEED": "42"})
        e.update(env)
        self.logs = []
        self.started = time.time()
        self.proc = subprocess.Popen([DOWNSTREAM_BIN], env=e, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.logs.append(line.rstrip())

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if request(self.port, "GET", "/readyz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("downstream %s did not get ready:\n%s"
                             % (self.role, "\n".join(self.logs[-30:])))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_script(name, *args, timeout=300):
    return subprocess.run([os.path.join(SCRIPTS, name), *args], capture_output=True, text=True,
                          timeout=timeout)


def undelivered(db):
    return db.query("SELECT destination_id, state, count(*) FROM event_deliveries"
                    " WHERE state <> 'delivered' GROUP BY 1, 2 ORDER BY 1, 2")


@pytest.fixture
def stack(db):
    if not os.access(DOWNSTREAM_BIN, os.X_OK):
        pytest.skip("the downstream service is not built (%s): build the `downstream` target"
                    % DOWNSTREAM_BIN)
    for sid, kind, secret in SOURCES:
        db.query("INSERT INTO sources (id, kind, secret) VALUES (%s, %s, %s)", (sid, kind, secret))
    started = []
    try:
        downs = {}
        for role, env in FAULTS.items():
            d = Downstream(role, db.url, env)
            started.append(d)
            downs[role] = d
        for d in downs.values():
            d.wait_ready()
        # Short retries and a breaker that pauses for a second, not thirty: the
        # faults above must cost seconds, not minutes.
        for role, d in downs.items():
            db.query("INSERT INTO destinations (id, url, secret, retry_schedule, max_attempts,"
                     " timeout_ms, breaker_pause)"
                     " VALUES (%s, %s, %s, '{0.2 seconds,0.5 seconds,1 second}', 50, 5000,"
                     " '1 second')", (role, d.url + "/webhooks/ordersync", wh.DEST_SECRET))
        p = Process(db.url, env={"ORDERSYNC_SWEEP_INTERVAL_S": "1", "ORDERSYNC_LEASE_S": "5",
                                 "ORDERSYNC_LOG_LEVEL": "info"}).start()
        started.append(p)
        p.wait_ready()
        yield p, downs
    finally:
        for s in started:
            s.stop()


def test_thousand_orders_reach_every_system_consistently(stack, db, tmp_path):
    ordersync, downs = stack
    expect = str(tmp_path / "expected.json")
    t0 = time.time()
    sim = run_script("simulate-orders", "--url", ordersync.base,
                     *[a for sid, kind, _ in SOURCES for a in ("--source", "%s=%s" % (kind, sid))],
                     *[a for sid, _, secret in SOURCES for a in ("--secret", "%s=%s" % (sid, secret))],
                     "--count", "1000", "--concurrency", "16", "--seed", "e2e",
                     "--updates", "0.25", "--payments", "0.3", "--cancellations", "0.15",
                     "--refunds", "0.15", "--duplicates", "0.1", "--out-of-order", "0.1",
                     "--expect", expect)
    print(sim.stdout)
    assert sim.returncode == 0, "simulate-orders failed:\n%s\n%s" % (sim.stdout, sim.stderr[-3000:])
    exp = json.load(open(expect))["orders"]
    assert len(exp) == 1000
    kinds = {e["kind"] for e in exp}
    assert kinds == {"shopify", "woocommerce", "stripe", "standard"}
    assert "duplicate:" in sim.stdout and "stale:" in sim.stdout

    # Every event reaches every destination despite the faults.
    deadline = time.time() + DELIVERY_TIMEOUT_S
    while undelivered(db) and time.time() < deadline:
        time.sleep(0.5)
    left = undelivered(db)
    status = run_script("sync-status", db.url)
    print(status.stdout)
    assert not left, "not delivered after %d s: %s\n%s\n%s" % (
        DELIVERY_TIMEOUT_S, left, status.stdout,
        "\n".join(map(str, ordersync.logs[-20:])))
    print("simulated and delivered in %.1f s" % (time.time() - t0))
    assert status.returncode == 0 and "Every order is fully synced." in status.stdout

    # The faults really happened (else this test proves less than it claims).
    fails = dict(db.query("SELECT destination_id, count(*) FROM delivery_attempts"
                          " WHERE http_status IS DISTINCT FROM 200 GROUP BY 1"))
    assert fails.get("inventory", 0) > 0, "inventory never failed: DOWNSTREAM_FAIL_RATE unused?"
    # shipping's 503 window is 1..4 s after its start: only a slow start-up can
    # have the first delivery miss it
    # (a failed attempt has a row in delivery_attempts; a first-time success
    # only its completion's line in delivery_log)
    first = db.scalar("SELECT extract(epoch FROM least("
                      " (SELECT min(started_at) FROM delivery_attempts"
                      "   WHERE destination_id = 'shipping'),"
                      " (SELECT min(completed_at) FROM delivery_log"
                      "   WHERE destination_id = 'shipping')))")
    assert first is not None, "shipping got nothing"
    if first < downs["shipping"].started + 3.5:
        assert fails.get("shipping", 0) > 0, "shipping was never down"
    assert db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 0
    events = db.scalar("SELECT count(*) FROM event_deliveries")
    assert events >= 3 * 1000

    check = run_script("check-consistency", "--database-url", db.url,
                       "--inventory", downs["inventory"].url,
                       "--invoicing", downs["invoicing"].url,
                       "--shipping", downs["shipping"].url,
                       "--expect", expect, "--strict")
    print(check.stdout[-5000:])
    assert check.returncode == 0, "check-consistency found differences:\n%s%s" % (
        check.stdout[-8000:], check.stderr[-2000:])
    assert "1000 checked" in check.stdout

    # A second look through each service's own eyes: nothing is reserved twice.
    st = json.loads(request(downs["inventory"].port, "GET", "/state")[2])
    open_orders = sum(1 for e in exp if not e["cancelled"] and e["lines"])
    assert sum(1 for o in st["orders"].values() if o["status"] == "reserved" and o["lines"]) \
        == open_orders
