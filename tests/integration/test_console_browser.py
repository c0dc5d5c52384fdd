"""The operator console in a real browser: Debian's headless Chromium, driven
over the DevTools protocol (cdp.py). It logs in, finds an order that
scripts/simulate-orders sent, sees its three deliveries, replays the event a
failing receiver left dead and sees it delivered, checks that a hostile
customer email shows as text and runs nothing, and saves a screenshot of
each page under $ORDERSYNC_TEST_OUTPUT/console/ (the build's test-output/)."""
import copy
import re
import json
import os
import subprocess
import tempfile
import time

import pytest

import cdp
import webhooks as wh
from conftest import FIXTURES, REPO, Process, free_port, request

TOKEN = "browser-test-token-0123456789"
HOSTILE = "<img src=x onerror=alert(1)>"

ok, why = cdp.available()
pytestmark = [pytest.mark.skipif(not ok, reason=f"headless Chromium cannot run here: {why}"),
              # the shared stack's destinations (conftest.py): 2 attempts, 0.2 s apart
              pytest.mark.stack(retry_schedule="{0.2 seconds}", max_attempts=2, timeout_ms=2000)]


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
def stack(stack, receivers):
    """The shared stack (a shop, three destinations on real receivers) with
    the console on, shipping failing for good, and a browser."""
    receivers["shipping"].behaviour = lambda rec: (500, {}, b'{"error": "label printer on fire"}')
    admin = free_port()
    p = stack({"ORDERSYNC_ADMIN_LISTEN": f"127.0.0.1:{admin}", "ORDERSYNC_ADMIN_TOKEN": TOKEN})
    b = cdp.Browser()
    yield p, admin, receivers, b
    b.close()


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


# ---------------------------------------------------------------- what the pages say is true

LONG_ID = "LONG-" + "x" * 238          # 243 characters, as a shop once sent
OPERATOR = "Zoë Ñúñez"


def fails(rs_name, ext_id, n=None):
    """A receiver behaviour: requests about order ext_id fail (the first n, or all)."""
    seen = {"n": 0}

    def behaviour(rec):
        if rec.get("json", {}).get("data", {}).get("external_id") == ext_id:
            seen["n"] += 1
            if n is None or seen["n"] <= n:
                return 500, {}, f'{{"error": "{rs_name} refuses {ext_id}"}}'.encode()
        return 200, {}, b'{"ok": true}'
    return behaviour


def sql_cells(db, order_id):
    """(destination, position) -> (state as the page words it, attempts), from event_deliveries."""
    out = {}
    for d, p, st, n in db.query("SELECT destination_id, position, state, attempts"
                                " FROM event_deliveries WHERE order_id = %s", (order_id,)):
        out[(d, p)] = ("retrying" if st == "pending" and n > 0 else st, n)
    return out


def page_cells(b):
    """The same, read from the rendered order page: each cell's text as a person reads it
    ("delivered 3 attempts"), and which column and row it stands in."""
    rows = b.eval("""[...document.querySelectorAll('#deliveries tbody tr')].map(tr => {
        const heads = [...document.querySelectorAll('#deliveries thead th')].map(th => th.innerText);
        const pos = /#(\\d+)/.exec(tr.cells[0].innerText)[1];
        return [...tr.cells].slice(1).map((td, i) => [heads[i + 1], Number(pos), td.innerText]);
      }).flat()""")
    out = {}
    for dest, pos, text in rows:
        # "delivered 3 attempts", or for a feed "delivered 1 read from its feed"
        m = re.match(r"(\w+) (\d+) (?:attempts?|reads? from its feed)", text)
        assert m, f"{dest} #{pos}: {text!r}"
        out[(dest, pos)] = (m.group(1), int(m.group(2)))
    return out


def test_every_state_and_attempt_count_on_the_pages_matches_sql(db, receivers):
    shots = out_dir()
    rs = receivers
    rs["inventory"].behaviour = fails("inventory", "6001", n=2)  # delivered at the 3rd attempt
    inv_b = fails("invoicing", "6002")                           # dead, replayed, dead again
    ship_c = fails("shipping", "6003")                           # dead, replayed, delivered
    ship_de = [fails("shipping", "6004"), fails("shipping", "6005")]
    rs["invoicing"].behaviour = inv_b
    rs["shipping"].behaviour = lambda rec: min((f(rec) for f in [ship_c] + ship_de),
                                               key=lambda r: -r[0])
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s),"
             " ('erp', 'standard', %s)", (wh.SHOPIFY_SECRET, wh.STANDARD_SECRET))
    for n, r in rs.items():
        db.query("INSERT INTO destinations (id, url, secret, retry_schedule, max_attempts,"
                 " timeout_ms) VALUES (%s, %s, %s, '{0.2 seconds}', 3, 2000)",
                 (n, r.url, wh.DEST_SECRET))
    # shipping's content filter leaves the standard order (the long id) out: filtered, never sent
    db.query("UPDATE destinations SET filter = %s WHERE id = 'shipping'",
             (f'$.data.external_id != "{LONG_ID}"',))
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp-feed', 'poll',"
             " 'feed-token-0123456789abcdef')")
    admin = free_port()
    p = Process(db.url, env={"ORDERSYNC_ADMIN_LISTEN": f"127.0.0.1:{admin}",
                             "ORDERSYNC_ADMIN_TOKEN": TOKEN,
                             "ORDERSYNC_SWEEP_INTERVAL_S": "1"}).start()
    p.wait_ready()
    b = cdp.Browser()
    try:
        template = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))

        def shop(oid, topic="orders/create", **fields):
            o = copy.deepcopy(template)
            o["id"] = oid
            o.update(fields)
            body = wh.dumps(o)
            assert request(p.port, "POST", "/webhooks/shop", body=body,
                           headers=wh.shopify(body, topic))[0] == 200

        for oid in (6001, 6002, 6003, 6004, 6005):
            shop(oid)
        shop(6004, "orders/updated", updated_at="2030-01-01T00:00:00Z")  # blocked behind the dead one
        std = json.load(open(os.path.join(FIXTURES, "standard_order_created.json")))
        std["data"]["external_id"] = LONG_ID
        std["data"]["number"] = LONG_ID
        std["timestamp"] = std["data"].get("updated_at", std["timestamp"])
        body = wh.dumps(std)
        st, _, out = request(p.port, "POST", "/webhooks/erp", body=body, headers=wh.standard(body))
        assert st == 200, out
        oids = {x: db.scalar("SELECT id FROM orders WHERE external_id = %s", (x,))
                for x in ("6001", "6002", "6003", "6004", "6005", LONG_ID)}

        def dead(dest, ext):
            return db.scalar("SELECT count(*) FROM deliveries x JOIN orders o ON o.id = x.order_id"
                             " WHERE x.destination_id = %s AND o.external_id = %s"
                             " AND x.state = 'dead'", (dest, ext)) == 1
        wait_for(lambda: dead("invoicing", "6002") and dead("shipping", "6003")
                 and dead("shipping", "6004") and dead("shipping", "6005")
                 and len([r for r in rs["inventory"].accepted()]) == 7, timeout=60,
                 what="the first round settled")

        def act(verb, dest, ext):
            pos = db.scalar("SELECT x.position FROM deliveries x JOIN orders o ON o.id = x.order_id"
                            " WHERE x.destination_id = %s AND o.external_id = %s AND x.state = 'dead'",
                            (dest, ext))
            st, _, out = request(admin, "POST", f"/api/deliveries/{verb}",
                                 body=json.dumps({"items": [{"destination": dest, "position": pos}],
                                                  "actor": "setup"}),
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
            assert st == 200, out
        act("replay", "invoicing", "6002")
        ship_c_fixed = ship_de  # 6003 is fixed: only 6004 and 6005 still fail
        rs["shipping"].behaviour = lambda rec: min((f(rec) for f in ship_c_fixed),
                                                   key=lambda r: -r[0])
        act("replay", "shipping", "6003")
        act("skip", "shipping", "6005")
        wait_for(lambda: dead("invoicing", "6002")
                 and db.scalar("SELECT attempts FROM event_deliveries e JOIN orders o"
                               " ON o.id = e.order_id WHERE o.external_id = '6002'"
                               " AND e.destination_id = 'invoicing'") == 6
                 and db.scalar("SELECT state FROM event_deliveries e JOIN orders o"
                               " ON o.id = e.order_id WHERE o.external_id = '6003'"
                               " AND e.destination_id = 'shipping'") == "delivered",
                 timeout=60, what="the replays settled")
        # the feed reads what it has: 7 events, acknowledged by the next read
        h = {"Authorization": "Bearer feed-token-0123456789abcdef"}
        nxt = json.loads(request(p.port, "GET", "/feeds/erp-feed?limit=100", headers=h)[2])["next"]
        request(p.port, "GET", f"/feeds/erp-feed?after={nxt}", headers=h)

        base = f"http://127.0.0.1:{admin}"
        b.goto(f"{base}/console/login")
        b.fill("#token", TOKEN)
        b.fill("#name", OPERATOR)
        b.click("#login")
        b.wait("document.querySelector('#overview tbody tr')", what="the overview")
        assert f"logged in as {OPERATOR}" in b.text("#who")

        # Overview: one scale for every chart, and it says so; the feed's reads count
        b.wait("document.querySelector('#overview tr[data-destination=\"erp-feed\"]')")
        top = max(m[1] + m[2] for d in json.loads(request(
            admin, "GET", "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"})[2])
            ["destinations"] for m in d["minutes"])
        assert f"one scale: 0–{top}/min" in b.text("#overview thead")
        assert "7/h delivered" in b.text("#overview tr[data-destination=\"erp-feed\"]")
        assert b.eval("getComputedStyle(document.querySelector('#overview th.num')).textAlign") \
            == "right"
        b.screenshot(os.path.join(shots, "truth-overview.png"))

        # leaving the Overview stops its polling
        b.eval("window.__calls = []; const f0 = window.fetch;"
               " window.fetch = (...a) => { window.__calls.push(String(a[0])); return f0(...a); }")
        b.eval("location.hash = '#/orders'")
        b.wait("document.querySelector('#orders tbody tr')", what="the orders list")
        time.sleep(6.5)
        assert [c for c in b.eval("window.__calls") if "/api/overview" in c] == []

        # Orders list: every order's deliveries column says what SQL says, no markup leaked
        text = b.text("#orders")
        assert "[object" not in text
        for ext, oid in oids.items():
            cell = b.text(f"#orders tr[data-order=\"{oid}\"] td:last-child")
            shown = {st: int(n) for n, st in re.findall(r"(\d+) (\w+)", cell)}
            want = dict(db.query("SELECT state, count(*) FROM event_deliveries WHERE order_id = %s"
                                 " GROUP BY state", (oid,)))
            assert shown == want, (ext, cell, want)
        assert LONG_ID in text.replace("\n", "")
        w, win = b.width()
        assert w <= win, f"the orders list is {w} px wide in a {win} px window"
        b.screenshot(os.path.join(shots, "truth-orders.png"))

        # each order's page: every cell's state and attempt count as SQL has them
        for ext, oid in oids.items():
            b.eval(f"location.hash = '#/order/{oid}'")
            b.wait(f"document.querySelector('#deliveries td.delivery') &&"
                   f" (document.querySelector('dd[data-field=\"external id\"]') || {{}})"
                   f".textContent === {json.dumps(ext)}", what=f"order {ext[:10]}")
            assert page_cells(b) == sql_cells(db, oid), ext[:20]
            w, win = b.width()
            assert w <= win, f"order {ext[:20]}: {w} px wide in a {win} px window"
            assert re.search(r"\d\d:\d\d:\d\d UTC([+-]\d\d:\d\d)?", b.text("#timeline"))
            b.screenshot(os.path.join(shots, f"truth-order-{oid}.png"))
        # the filtered-out event reads as such, in SQL and on its order's page
        assert sql_cells(db, oids[LONG_ID])[("shipping", db.scalar(
            "SELECT position FROM events WHERE order_id = %s", (oids[LONG_ID],)))] == ("filtered", 0)
        b.eval(f"location.hash = '#/order/{oids[LONG_ID]}'")
        b.wait("document.querySelector('#deliveries td.delivery[data-destination=\"shipping\"]')")
        assert "left out by the destination's filter: never sent" in b.text("#deliveries")
        assert not [r for r in rs["shipping"].requests
                    if r.get("json", {}).get("data", {}).get("external_id") == LONG_ID]
        # the journey shows the rounds and who skipped
        b.eval(f"location.hash = '#/order/{oids['6005']}'")
        b.wait("document.querySelector('#deliveries td.delivery')")
        assert "skipped by api:setup" in b.text("#deliveries")
        b.eval(f"location.hash = '#/order/{oids['6003']}'")
        b.wait("document.querySelector('#deliveries td.delivery')")
        assert "in 2 rounds" in b.text("#deliveries")
        assert "read #" in b.text("#timeline") and "from its feed" in b.text("#timeline")

        # dead letters, dead and blocked: states and attempts as SQL has them
        for state in ("dead", "blocked"):
            b.eval(f"location.hash = '#/dead?state={state}'")
            b.wait("document.querySelector('#dead tbody tr') || document.querySelector('#none')")
            rows = b.eval("[...document.querySelectorAll('#dead tbody tr')].map(tr =>"
                          " [tr.cells[1].innerText, Number(/#(\\d+)/.exec(tr.cells[3].innerText)[1]),"
                          "  tr.cells[4].innerText.split('\\n')[0], Number(tr.cells[5].innerText.split('\\n')[0])])")
            want = db.query("SELECT x.destination_id, x.position, e.state, e.attempts"
                            " FROM deliveries x JOIN event_deliveries e"
                            " ON e.destination_id = x.destination_id AND e.position = x.position"
                            " WHERE x.state = %s ORDER BY x.position DESC, x.destination_id DESC",
                            (state,))
            assert [tuple(r) for r in rows] == [tuple(r) for r in want], state
            assert b.eval("getComputedStyle([...document.querySelectorAll('#dead th')]"
                          ".find(th => th.innerText === 'attempts')).textAlign") == "right"
            b.screenshot(os.path.join(shots, f"truth-{state}.png"))

        # "Replay selected" with nothing ticked says so; "Replay all matching" says how many
        b.eval("location.hash = '#/dead?state=dead'")
        b.wait("document.querySelector('#dead tbody tr')")
        b.click("#replay-selected")
        b.wait("!document.querySelector('#action-result').hidden")
        assert "Tick the events to replay first" in b.text("#action-result")
        b.click("#replay-all")
        b.wait("document.getElementById('confirm').open", what="the confirmation")
        n_dead = db.scalar("SELECT count(*) FROM deliveries WHERE state = 'dead'")
        assert f"Replay {n_dead} dead event" in b.text("#confirm-text")
        b.click("#confirm-cancel")

        # a poll destination shows what applies to a feed, nothing of a push destination's
        b.eval("location.hash = '#/config'")
        b.wait("document.querySelector('#destinations tbody tr')")
        feed_row = b.eval("[...document.querySelectorAll('#destinations tbody tr')]"
                          ".find(tr => tr.cells[0].innerText === 'erp-feed').innerText")
        assert "timeout" not in feed_row and "attempts" not in feed_row and "/feeds/erp-feed" in feed_row

        # the session ends while the operator is on a filtered page: told why, and back there
        b.eval("location.hash = '#/dead?state=blocked&destination=shipping'")
        b.wait("document.querySelector('#dead tbody tr')")
        cookie = [c for c in b.cookies(base) if c["name"].endswith("session") or "ordersync" in c["name"]][0]
        fields = cookie["value"].split(".")
        fields[1] = str(int(time.time()) - 60)
        b.set_cookie(base, cookie["name"], ".".join(fields))
        # the next thing the operator does is tick an event and ask to skip it
        b.click("#dead tbody tr input[type=checkbox]")
        b.click("#skip-selected")
        b.wait("location.pathname === '/console/login' && document.readyState === 'complete'"
               " && document.querySelector('.message')", what="the login page")
        assert "Your session expired" in b.text(".message"), b.eval("location.href")
        b.screenshot(os.path.join(shots, "truth-expired.png"))
        b.fill("#token", TOKEN)
        b.fill("#name", "Dan O'Brien")
        b.click("#login")
        b.wait("document.querySelector('#dead tbody tr')", what="back on the dead letters page")
        assert b.eval("location.hash") == "#/dead?state=blocked&destination=shipping"
        assert b.eval("document.querySelector('#f-state').value") == "blocked"
        assert b.console_errors == [] and b.dialogs == []
    finally:
        b.close()
        p.stop()
