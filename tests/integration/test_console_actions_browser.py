"""A destination's actions in the console, in a real browser (headless
Chromium over cdp.py, as test_console_browser.py): an operator pauses a
destination, sends it a test event and reads the receiver's answer on the
page, sees events wait while paused, resumes it and sees them arrive, and
reads every action in the destination's timeline. Screenshots go under
$ORDERSYNC_TEST_OUTPUT/console/."""
import json
import os

import pytest

import cdp
import webhooks as wh
from conftest import FIXTURES, request
from test_console_browser import out_dir, stack, wait_for  # noqa: F401

TOKEN = "browser-test-token-0123456789"

ok, why = cdp.available()
pytestmark = pytest.mark.skipif(not ok, reason=f"headless Chromium cannot run here: {why}")


def test_an_operator_pauses_a_destination_tests_it_and_resumes_it(stack, db):
    proc, admin, receivers, b = stack
    shots = out_dir()
    receivers["invoicing"].behaviour = lambda rec: (
        (202, {}, b'{"hello": "from invoicing", "queue": "ok"}') if rec["json"]["type"] == "ping"
        else (200, {}, b'{"ok": true}'))
    base = f"http://127.0.0.1:{admin}"
    b.goto(f"{base}/console")
    b.wait("location.pathname === '/console/login'")
    b.fill("#token", TOKEN)
    b.fill("#name", "tester")
    b.click("#login")
    b.wait("location.pathname === '/console' && document.querySelector('#overview')",
           what="the overview")

    # from the destinations list to invoicing's page
    b.click("nav a[data-nav=config]")
    b.wait("document.querySelector('#destinations a[href=\"#/destination/invoicing\"]')",
           what="the destinations list")
    b.click("#destinations a[href=\"#/destination/invoicing\"]")
    b.wait("document.querySelector('#pause') && !document.querySelector('#pause').hidden",
           what="the destination's page")

    b.click("#pause")
    b.wait("document.querySelector('#resume') && !document.querySelector('#resume').hidden",
           what="paused")
    assert "paused" in b.text("h1")
    assert "Paused by console:tester" in b.text("main")

    # a test event while paused: it goes, and the receiver's answer is on the page
    b.click("#send-test")
    b.wait("document.querySelector('#test-answer')", what="the receiver's answer")
    answer = b.text("#test-answer")
    assert "HTTP 202" in answer and '{"hello": "from invoicing", "queue": "ok"}' in answer
    pings = [r for r in receivers["invoicing"].requests if r["json"]["type"] == "ping"]
    assert len(pings) == 1 and pings[0]["valid"]
    assert pings[0]["json"]["data"]["by"] == "console:tester"
    b.screenshot(os.path.join(shots, "destination-test.png"))

    # an order while paused: the others get it, invoicing does not
    order = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))
    order["id"] = 424242
    body = wh.dumps(order)
    assert request(proc.port, "POST", "/webhooks/shop", body=body,
                   headers=wh.shopify(body))[0] == 200
    wait_for(lambda: len(receivers["inventory"].requests) == 1, what="inventory")
    assert [r for r in receivers["invoicing"].requests if r["json"]["type"] != "ping"] == []
    assert db.scalar("SELECT pending FROM sync_backlog WHERE destination_id = 'invoicing'") == 1

    b.click("#resume")
    b.wait("document.querySelector('#pause') && !document.querySelector('#pause').hidden",
           what="resumed")
    wait_for(lambda: [r for r in receivers["invoicing"].requests if r["json"]["type"] != "ping"],
             what="invoicing gets the order after the resume")

    # the timeline says who did what, the test's answer included
    b.eval("location.hash = '#/destination/invoicing?t=' + Date.now()")
    b.wait("document.querySelectorAll('#dest-actions tbody tr').length === 3",
           what="three actions in the timeline")
    rows = b.eval("[...document.querySelectorAll('#dest-actions tbody tr')]"
                  ".map(tr => [tr.dataset.action, tr.textContent])")
    assert [a for a, _ in rows] == ["resume", "test", "pause"]
    assert all("console:tester" in t for _, t in rows)
    assert "test event answered HTTP 202" in rows[1][1]
    b.screenshot(os.path.join(shots, "destination-timeline.png"))
    assert b.console_errors == []
