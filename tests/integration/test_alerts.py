"""Operational alerts (ORDERSYNC_ALERT_DESTINATION): when a destination answers
410, is blocked by a dead event, or trips its circuit breaker, a signed event
about it reaches the alert destination, delivered like any event; and
"recovered" once deliveries go through again. At most one alert per
destination and kind per ORDERSYNC_ALERT_INTERVAL_S, and none about the alert
destination itself. Receivers are real HTTP servers that check signatures."""
import itertools
import json
import os
import time

import pytest

import webhooks as wh
from conftest import FIXTURES, Process, request
from receiver import Receiver, wait_for

TEMPLATE = json.load(open(os.path.join(FIXTURES, "standard_order_created.json")))
ORDER_IDS = itertools.count(5000)
ALERT_TYPES = ("destination.disabled", "destination.blocked", "destination.breaker_opened",
               "destination.recovered")


@pytest.fixture
def rcv():
    rs = {n: Receiver(n) for n in ("alerts", "erp")}
    yield rs
    for r in rs.values():
        r.close()


@pytest.fixture
def stack(db, rcv):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'standard', %s)",
             (wh.STANDARD_SECRET,))
    for n, r in rcv.items():
        db.query("INSERT INTO destinations (id, url, secret, retry_schedule, timeout_ms)"
                 " VALUES (%s, %s, %s, '{0.2 seconds}', 2000)", (n, r.url, wh.DEST_SECRET))
    # a destination made for alerts takes no order events
    for t in ALERT_TYPES:
        db.query("INSERT INTO subscriptions VALUES ('alerts', %s)", (t,))
    procs = []

    def start(env=None):
        e = {"ORDERSYNC_SWEEP_INTERVAL_S": "1", "ORDERSYNC_RELOAD_INTERVAL_S": "1",
             "ORDERSYNC_ALERT_DESTINATION": "alerts", "ORDERSYNC_ALERT_INTERVAL_S": "3600"}
        e.update(env or {})
        p = Process(db.url, env=e).start()
        p.wait_ready()
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


def send_order(p):
    o = json.loads(json.dumps(TEMPLATE))
    o["data"]["external_id"] = o["data"]["number"] = f"SO-{next(ORDER_IDS)}"
    body = wh.dumps(o)
    st, _, resp = request(p.port, "POST", "/webhooks/shop", body=body, headers=wh.standard(body))
    assert st == 200, resp


def alerts(r, kind=None):
    """The alerts the alert receiver accepted, checked: signed, one of the alert types."""
    out = []
    for rec in r.accepted():
        assert rec["valid"], rec["headers"]
        assert rec["json"]["type"] in ALERT_TYPES, rec["json"]  # never an order event
        if kind is None or rec["json"]["type"] == kind:
            out.append(rec["json"])
    return out


def test_an_alert_arrives_when_a_destination_answers_410_then_recovered_once(db, rcv, stack):
    rcv["erp"].behaviour = lambda rec: (410, {}, b"gone")
    p = stack()
    send_order(p)
    (a,) = wait_for(lambda: alerts(rcv["alerts"], "destination.disabled"), what="the 410 alert")
    assert set(a) == {"type", "timestamp", "data"}
    d = a["data"]
    assert d["destination"] == "erp" and d["status"] == 410
    assert "410" in d["reason"] and d["position"] > 0 and d["at"] == a["timestamp"]
    assert db.scalar("SELECT enabled FROM destinations WHERE id = 'erp'") is False
    # an operator fixes the receiver and enables it again: "recovered"
    rcv["erp"].behaviour = lambda rec: (200, {}, b"ok")
    db.query("UPDATE destinations SET enabled = true, disabled_reason = NULL WHERE id = 'erp'")
    (rec,) = wait_for(lambda: alerts(rcv["alerts"], "destination.recovered"),
                      what="the recovered alert")
    assert rec["data"]["destination"] == "erp"
    # it fails again at once: disabled again, but the alert of that kind was
    # sent less than ORDERSYNC_ALERT_INTERVAL_S ago, so none is sent
    rcv["erp"].behaviour = lambda rec: (410, {}, b"gone")
    send_order(p)
    wait_for(lambda: db.scalar("SELECT NOT enabled FROM destinations WHERE id = 'erp'"),
             what="erp disabled again")
    time.sleep(2)  # room for an alert that should not come
    assert len(alerts(rcv["alerts"], "destination.disabled")) == 1
    assert p.log_lines("alert raised") and len(p.log_lines("alert raised")) == 2
    # every alert was delivered as an event: nothing left for the alert destination
    assert db.scalar("SELECT count(*) FROM deliveries WHERE destination_id = 'alerts'") == 0


def test_breaker_opened_and_recovered(db, rcv, stack):
    db.query("UPDATE destinations SET breaker_threshold = 2, breaker_pause = '1 second'"
             " WHERE id = 'erp'")
    failing = {"on": True}
    rcv["erp"].behaviour = lambda rec: (503, {}, b"busy") if failing["on"] else (200, {}, b"ok")
    p = stack()
    send_order(p)
    (a,) = wait_for(lambda: alerts(rcv["alerts"], "destination.breaker_opened"),
                    what="the breaker alert")
    assert a["data"]["destination"] == "erp"
    assert a["data"]["consecutive_failures"] >= 2 and a["data"]["breaker_threshold"] == 2
    failing["on"] = False
    wait_for(lambda: alerts(rcv["alerts"], "destination.recovered"), what="the recovered alert")
    types = [x["type"] for x in alerts(rcv["alerts"])]
    assert types == ["destination.breaker_opened", "destination.recovered"]


def test_a_dead_event_that_blocks_raises_blocked(db, rcv, stack):
    db.query("UPDATE destinations SET max_attempts = 1 WHERE id = 'erp'")  # on_dead = block
    rcv["erp"].behaviour = lambda rec: (422, {}, b"no")
    p = stack()
    send_order(p)
    (a,) = wait_for(lambda: alerts(rcv["alerts"], "destination.blocked"), what="the blocked alert")
    sent = rcv["erp"].all()[0]
    assert a["data"]["destination"] == "erp"
    assert a["data"]["webhook_id"] == sent["headers"]["webhook-id"]
    assert a["data"]["attempts"] == 1 and a["data"]["last_error"] == "HTTP 422"
    assert db.scalar("SELECT state FROM deliveries WHERE destination_id = 'erp'") == "dead"


def test_alerts_about_the_alert_destination_do_not_loop(db, rcv, stack):
    # the alert destination itself is gone, and so is erp
    for r in rcv.values():
        r.behaviour = lambda rec: (410, {}, b"gone")
    db.query("DELETE FROM subscriptions WHERE destination_id = 'alerts'")  # it takes orders too
    p = stack()
    send_order(p)
    wait_for(lambda: db.scalar("SELECT count(*) FROM destinations WHERE NOT enabled") == 2,
             what="both destinations disabled")
    time.sleep(2)
    # erp's alert was raised (and waits: its destination is disabled); none about "alerts"
    rows = db.query("SELECT type, payload::jsonb -> 'data' ->> 'destination' FROM events"
                    " WHERE position < 0")
    assert rows == [("destination.disabled", "erp")]
    assert [x["type"] for x in (r.get("json") or {} for r in rcv["alerts"].all())
            if x.get("type") in ALERT_TYPES] in ([], ["destination.disabled"])
    assert p.proc.poll() is None


def test_no_alert_destination_no_alerts(db, rcv, stack):
    rcv["erp"].behaviour = lambda rec: (410, {}, b"gone")
    p = stack({"ORDERSYNC_ALERT_DESTINATION": ""})
    send_order(p)
    wait_for(lambda: db.scalar("SELECT NOT enabled FROM destinations WHERE id = 'erp'"),
             what="erp disabled")
    time.sleep(1)
    assert db.scalar("SELECT count(*) FROM events WHERE position < 0") == 0
    assert rcv["alerts"].all() == []
