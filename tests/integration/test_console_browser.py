"""The operator console in a real browser: Debian's headless Chromium, driven
over the DevTools protocol (cdp.py). It logs in, finds an order that
scripts/simulate-orders sent, sees its three deliveries, replays the event a
failing receiver left dead and sees it delivered, checks that a hostile
customer email shows as text and runs nothing, and saves a screenshot of
each page under $ORDERSYNC_TEST_OUTPUT/console/ (the build's test-output/)."""
import copy
import json
import os
import subprocess
import tempfile
import time

import pytest

import cdp
import webhooks as wh
from conftest import FIXTURES, REPO, Process, free_port, request
from receiver import Receiver

TOKEN = "browser-test-token-0123456789"
HOSTILE = "<img src=x onerror=alert(1)>"

ok, why = cdp.available()
pytestmark = pytest.mark.skipif(not ok, reason=f"headless Chromium cannot run here: {why}")


def out_dir():
    d = os.path.join(os.environ.get("ORDERSYNC_TEST_OUTPUT") or tempfile.gettempdir(), "console")
    os.makedirs(d, exist_ok=True)
    return d


def wait_for(pred, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def stack(db):
    rs = {n: Receiver(n) for n in ("inventory", "invoicing", "shipping")}
    rs["shipping"].behaviour = lambda rec: (500, {}, b'{"error": "label printer on fire"}')
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    for n, r in rs.items():
        db.query("INSERT INTO destinations (id, url, secret, retry_schedule, max_attempts,"
                 " timeout_ms) VALUES (%s, %s, %s, '{0.2 seconds}', 2, 2000)",
                 (n, r.url, wh.DEST_SECRET))
    admin = free_port()
    p = Process(db.url, env={"ORDERSYNC_ADMIN_LISTEN": f"127.0.0.1:{admin}",
                             "ORDERSYNC_ADMIN_TOKEN": TOKEN,
                             "ORDERSYNC_SWEEP_INTERVAL_S": "1"}).start()
    p.wait_ready()
    b = cdp.Browser()
    yield p, admin, rs, b
    b.close()
    p.stop()
    for r in rs.values():
        r.close()


def test_an_operator_finds_an_order_and_replays_its_dead_delivery(stack, db):
    proc, admin, receivers, b = stack
    shots = out_dir()
    # three orders as a shop sends them (one event each), and one whose email is an attack
    sim = subprocess.run(
        ["/usr/bin/python3", os.path.join(REPO, "scripts", "simulate-orders"),
         "--url", proc.base, "--source", "shopify=shop", "--secret", f"shop={wh.SHOPIFY_SECRET}",
         "--count", "3", "--concurrency", "1", "--updates", "0", "--payments", "0",
         "--cancellations", "0", "--refunds", "0", "--duplicates", "0", "--out-of-order", "0",
         "--quiet"], capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    hostile = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))
    hostile["id"] = 990001
    hostile["email"] = HOSTILE
    body = wh.dumps(hostile)
    assert request(proc.port, "POST", "/webhooks/shop", body=body, headers=wh.shopify(body))[0] == 200
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'") == 4,
             what="shipping's four dead events")
    wait_for(lambda: db.scalar("SELECT count(*) FROM event_deliveries"
                               " WHERE destination_id <> 'shipping' AND state = 'delivered'") == 8,
             what="inventory and invoicing up to date")
    order_id, external_id = db.query("SELECT id, external_id FROM orders WHERE id <> "
                                     "(SELECT id FROM orders WHERE external_id = '990001')"
                                     " ORDER BY id LIMIT 1")[0]
    base = f"http://127.0.0.1:{admin}"

    # log in
    b.goto(f"{base}/console")
    b.wait("location.pathname === '/console/login'")
    b.screenshot(os.path.join(shots, "login.png"))
    b.fill("#token", TOKEN)
    b.fill("#name", "tester")
    b.click("#login")
    b.wait("location.pathname === '/console' && document.querySelector('#overview tbody tr')",
           what="the overview")
    b.wait("document.querySelector('#overview tr[data-destination=shipping] .deadlink')",
           what="shipping's dead count")
    assert b.text("#overview tr[data-destination=shipping] .deadlink") == "4"
    assert "logged in as tester" in b.text("#who")
    b.screenshot(os.path.join(shots, "overview.png"))

    # find the order, see its three deliveries
    b.click("nav a[data-nav=orders]")
    b.wait("document.querySelector('#search')")
    b.fill("#search", external_id)
    b.click("form.searchbar button")
    b.wait(f"document.querySelector('#orders tr[data-order=\"{order_id}\"]')", what="the search hit")
    b.screenshot(os.path.join(shots, "orders.png"))
    b.click(f"#orders tr[data-order=\"{order_id}\"] a")
    b.wait("document.querySelector('#deliveries td.delivery')", what="the order's deliveries")
    cells = b.eval("[...document.querySelectorAll('#deliveries td.delivery')]"
                   ".map(td => [td.dataset.destination, td.dataset.state])")
    assert sorted(map(tuple, cells)) == [("inventory", "delivered"), ("invoicing", "delivered"),
                                         ("shipping", "dead")]
    assert "label printer on fire" in b.text("#timeline")
    b.screenshot(os.path.join(shots, "order-dead.png"))

    # shipping is fixed; replay that order's dead event from the dead letters page
    receivers["shipping"].behaviour = lambda rec: (200, {}, b'{"ok": true}')
    b.eval("location.hash = '#/dead?state=dead&destination=shipping'")
    row = f"#dead tr[data-order=\"{order_id}\"]"
    b.wait(f"document.querySelector('{row}')", what="the dead letter")
    assert b.eval("document.querySelectorAll('#dead tbody tr').length") == 4
    b.click(f"{row} input[type=checkbox]")
    b.click("#replay-selected")
    b.wait("document.getElementById('confirm').open", what="the confirmation")
    assert "Replay 1 dead event" in b.text("#confirm-text")
    b.screenshot(os.path.join(shots, "dead-confirm.png"))
    b.click("#confirm-ok")
    b.wait("document.querySelector('#action-result') && !document.querySelector('#action-result').hidden",
           what="the replay's result")
    assert b.text("#action-result") == "Replayed 1 event."
    b.wait("document.querySelectorAll('#dead tbody tr').length === 3", what="one row fewer")
    b.screenshot(os.path.join(shots, "dead.png"))

    # the order shows it delivered, and who replayed it
    def delivered():
        b.eval(f"location.hash = '#/order/{order_id}?t=' + Date.now()")
        try:
            b.wait("document.querySelector('#deliveries td[data-destination=shipping]')", timeout=5)
        except cdp.CDPError:
            return False
        return b.eval("document.querySelector('#deliveries td[data-destination=shipping]')"
                      ".dataset.state") == "delivered"
    wait_for(delivered, what="shipping delivered after the replay")
    timeline = b.text("#timeline")
    assert "console:tester replayed" in timeline
    assert "shipping, attempt 1" in timeline and "200" in timeline
    b.screenshot(os.path.join(shots, "order-replayed.png"))
    assert db.query("SELECT actor, action, destination_id FROM operator_actions") == \
        [("console:tester", "replay", "shipping")]

    # a hostile customer email is shown as text, and nothing of it runs
    b.eval("location.hash = '#/orders?q=' + encodeURIComponent(" + json.dumps(HOSTILE) + ")")
    b.wait("document.querySelector('#orders tbody tr')", what="the hostile order")
    assert HOSTILE in b.text("#orders")
    b.click("#orders tbody tr a")
    b.wait("document.querySelector('dd[data-field=\"customer email\"]')")
    assert b.eval("document.querySelector('dd[data-field=\"customer email\"]').textContent") == HOSTILE
    time.sleep(0.5)  # an injected onerror would have fired by now
    assert b.eval("document.querySelectorAll('main img').length") == 0
    assert b.dialogs == []
    b.screenshot(os.path.join(shots, "order-hostile.png"))

    # sources and destinations: whether a secret is set, never the secret
    b.click("nav a[data-nav=config]")
    b.wait("document.querySelector('#destinations tbody tr')")
    page = b.eval("document.documentElement.outerHTML")
    assert wh.SHOPIFY_SECRET not in page and wh.DEST_SECRET not in page
    b.screenshot(os.path.join(shots, "config.png"))
    assert b.console_errors == []
