"""Console actions on a destination through /api/... and the CLI (issue
"delivery beyond the anchors", part 4): pause and resume, a test event with
the receiver's answer, replay of every dead or blocked event between two
times. Each is recorded with its actor. The page itself is driven in
test_console_actions_browser.py."""
import json
import subprocess
import time

import pytest

from conftest import BIN, request
from test_operator_truth import TOKEN, accepted_positions, always, stack, wait_for  # noqa: F401

# test_operator_truth's stack, with its destinations' settings (the shared stack fixture reads
# them from this marker): fast retries, 2 attempts, 2 s timeouts
pytestmark = pytest.mark.stack(retry_schedule="{0.2 seconds}", max_attempts=2, timeout_ms=2000)


def cli(db, *args):
    return subprocess.run([BIN, *args], env={"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin",
                                             "USER": "ops"},
                          capture_output=True, text=True, timeout=60)


def actions(db, dest):
    return [(a, act) for a, act in db.query(
        "SELECT actor, action FROM destination_actions WHERE destination_id = %s ORDER BY id",
        (dest,))]


def test_a_paused_destination_keeps_its_backlog_and_resumes_in_order(stack, db):
    s = stack()
    st, doc = s.post("/api/destinations/shipping/pause", {})
    assert st == 200 and doc == {"destination": "shipping", "paused": True, "changed": True}
    # one order's events (ordered per order), and other orders
    s.order(8000)
    for i in range(1, 3):
        s.order(8000, "orders/updated", updated_at=f"2030-01-0{i}T00:00:00Z")
    s.order(8001)
    s.order(8002)
    wait_for(lambda: len(accepted_positions(s.receivers["inventory"], db)) == 5, what="inventory")
    time.sleep(1)
    assert s.receivers["shipping"].requests == []
    assert db.scalar("SELECT pending FROM sync_backlog WHERE destination_id = 'shipping'") == 5
    # the page's list says it is paused, and by whom
    d = {x["id"]: x for x in s.api("/api/destinations")}["shipping"]
    assert d["paused_by"] == "api:token" and d["paused_at"] is not None
    assert d["actions"][0]["action"] == "pause"

    # a restart keeps it paused
    s.proc.stop()
    s = stack()
    s.order(8000, "orders/updated", updated_at="2030-01-05T00:00:00Z")
    wait_for(lambda: len(accepted_positions(s.receivers["inventory"], db)) == 6, what="inventory")
    time.sleep(1)
    assert s.receivers["shipping"].requests == []

    st, doc = s.post("/api/destinations/shipping/resume", {"actor": "alice"})
    assert st == 200 and doc["changed"] is True
    wait_for(lambda: len(s.receivers["shipping"].requests) == 6, what="shipping catches up")
    got = [(r["json"]["data"]["external_id"], r["json"]["data"]["updated_at"])
           for r in s.receivers["shipping"].requests]
    assert sorted(got) == sorted((str(x), u) for x, u in db.query(
        "SELECT payload::jsonb #>> '{data,external_id}', payload::jsonb #>> '{data,updated_at}'"
        " FROM events"))
    # the order's four events in their order
    assert [u for x, u in got if x == "8000"] == sorted(u for x, u in got if x == "8000")
    wait_for(lambda: db.scalar("SELECT pending FROM sync_backlog"
                               " WHERE destination_id = 'shipping'") == 0, what="drained")
    assert actions(db, "shipping") == [("api:token", "pause"), ("api:alice", "resume")]
    # resuming what runs changes nothing and records nothing
    st, doc = s.post("/api/destinations/shipping/resume", {})
    assert st == 200 and doc["changed"] is False
    assert len(actions(db, "shipping")) == 2


def test_a_test_event_reaches_the_receiver_signed_and_its_answer_comes_back(stack, db):
    s = stack()
    s.receivers["invoicing"].behaviour = lambda rec: (202, {}, b'{"accepted": "ping ok"}')
    s.post("/api/destinations/invoicing/pause", {})
    st, doc = s.post("/api/destinations/invoicing/test", {"actor": "bob"})
    assert st == 200, doc
    assert doc["status"] == 202 and doc["body"] == '{"accepted": "ping ok"}'
    assert doc["error"] is None and doc["webhook_id"].startswith("msg_test_")
    # exactly one request, a signed ping, to that destination only, even paused
    reqs = s.receivers["invoicing"].requests
    assert len(reqs) == 1 and reqs[0]["valid"]
    assert reqs[0]["json"]["type"] == "ping"
    assert reqs[0]["json"]["data"]["destination"] == "invoicing"
    assert reqs[0]["headers"]["webhook-id"] == doc["webhook_id"]
    assert s.receivers["shipping"].requests == [] and s.receivers["inventory"].requests == []
    # never an order event: no events row, nothing in any backlog
    assert db.scalar("SELECT count(*) FROM events") == 0
    assert db.scalar("SELECT sum(pending) FROM sync_backlog") == 0
    # recorded with the answer
    row = db.query("SELECT actor, action, detail FROM destination_actions"
                   " WHERE action = 'test'")
    assert row[0][0] == "api:bob" and row[0][2]["status"] == 202
    assert row[0][2]["body"] == '{"accepted": "ping ok"}'

    # a receiver that fails: its status and body come back as they are
    s.receivers["shipping"].behaviour = always(503)
    st, doc = s.post("/api/destinations/shipping/test", {})
    assert st == 200 and doc["status"] == 503 and "down" in doc["body"]
    # a destination that does not answer at all
    db.query("UPDATE destinations SET url = 'http://127.0.0.1:9/' WHERE id = 'inventory'")
    wait_for(lambda: request(s.admin, "GET", "/api/destinations",
                             headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200)
    time.sleep(0.5)
    st, doc = s.post("/api/destinations/inventory/test", {})
    assert st == 200 and doc["status"] is None and doc["error"], doc
    st, doc = s.post("/api/destinations/nosuch/test", {})
    assert st == 404

    # the CLI: the same, with the answer printed
    out = cli(db, "destination", "test", "invoicing")
    assert out.returncode == 0, out
    assert "invoicing answered HTTP 202" in out.stdout and "ping ok" in out.stdout
    assert db.scalar("SELECT actor FROM destination_actions ORDER BY id DESC LIMIT 1") == "cli:ops"
    out = cli(db, "destination", "test", "shipping")
    assert out.returncode == 1 and "HTTP 503" in out.stdout


def test_replay_of_a_destination_between_two_times(stack, db):
    # on_dead = block: the update stays blocked behind its dead creation (with
    # the default it would be sent, and die too, once the creation died)
    db.query("UPDATE destinations SET on_dead = 'block' WHERE id = 'shipping'")
    s = stack()
    s.receivers["shipping"].behaviour = always(500)
    s.order(8100)
    s.order(8100, "orders/updated", updated_at="2030-01-01T00:00:00Z")  # blocked behind
    s.order(8101)
    try:
        wait_for(lambda: db.query("SELECT state, count(*) FROM deliveries"
                                  " WHERE destination_id = 'shipping' GROUP BY 1 ORDER BY 1")
                 == [("blocked", 1), ("dead", 2)], what="two dead, one blocked")
    except AssertionError as e:
        raise AssertionError("%s: %s" % (e, db.query(
            "SELECT position, state, attempts FROM deliveries WHERE destination_id = 'shipping'")))
    t_mid = db.scalar("SELECT now()")
    s.order(8102)
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE destination_id = 'shipping'"
                               " AND state = 'dead'") == 3, what="a third dead")
    s.receivers["shipping"].behaviour = always(200)
    since = db.scalar("SELECT min(created_at) FROM events").isoformat()
    # preview counts; nothing moves
    st, doc = s.post("/api/destinations/shipping/replay",
                     {"since": since, "until": t_mid.isoformat(), "preview": True})
    assert st == 200 and doc["replayed"] == 3 and doc["preview"] is True
    assert len(s.receivers["shipping"].requests) == 0 + db.scalar(
        "SELECT count(*) FROM delivery_attempts WHERE destination_id = 'shipping'")
    # the window takes the first two orders' dead and blocked events, not the last order's
    st, doc = s.post("/api/destinations/shipping/replay",
                     {"since": since, "until": t_mid.isoformat()})
    assert st == 200 and doc["replayed"] == 3
    first_three = {p for (p,) in db.query("SELECT position FROM events WHERE created_at < %s",
                                          (t_mid,))}
    wait_for(lambda: accepted_positions(s.receivers["shipping"], db) == first_three,
             what="the three delivered")
    # (the receiver's 2xx comes before the relay's record of it: wait for the record) and
    # only the last order's dead event is left
    wait_for(lambda: db.query("SELECT state FROM deliveries WHERE destination_id = 'shipping'")
             == [("dead",)], what="the three recorded delivered, the fourth still dead")
    assert ("api:token", "replay_range") in actions(db, "shipping")
    # each event's replay is in its order's timeline too
    oid = s.order_id(8100)
    doc = s.api(f"/api/orders/{oid}")
    assert [a["action"] for a in doc["actions"]].count("replay") == 2

    # the CLI: the rest, then a window with nothing in it
    out = cli(db, "destination", "replay", "shipping", "--since", since, "--until", "2100-01-01")
    assert out.returncode == 0 and "1 event(s) scheduled again" in out.stdout, out
    wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries") == 0, what="all delivered")
    out = cli(db, "destination", "replay", "shipping", "--since", "2100-01-01", "--until", "2000-01-01")
    assert out.returncode == 1 and "until must be after since" in out.stderr
    st, doc = s.post("/api/destinations/shipping/replay", {"since": "yesterday-ish", "until": "x"})
    assert st == 400 and "timestamp" in doc["detail"]


def test_pause_and_resume_from_the_cli_and_bad_requests(stack, db):
    s = stack()
    out = cli(db, "destination", "pause", "inventory")
    assert out.returncode == 0 and "paused: done" in out.stdout, out
    assert db.scalar("SELECT paused_by FROM destinations WHERE id = 'inventory'") == "cli:ops"
    s.order(8200)
    wait_for(lambda: len(s.receivers["shipping"].requests) == 1, what="shipping")
    time.sleep(1)
    assert s.receivers["inventory"].requests == []
    out = cli(db, "destination", "resume", "inventory")
    assert out.returncode == 0 and "resumed: done" in out.stdout
    wait_for(lambda: len(s.receivers["inventory"].requests) == 1, what="inventory after resume")
    out = cli(db, "destination", "pause", "nosuch")
    assert out.returncode == 1 and 'no destination "nosuch"' in out.stderr
    out = cli(db, "destination", "jump", "inventory")
    assert out.returncode == 2 and "not an action" in out.stderr
    # the API: unknown actions and a browser without the CSRF token are refused
    st, doc = s.post("/api/destinations/inventory/jump", {})
    assert st == 404
    st, _, body = request(s.admin, "POST", "/api/destinations/inventory/pause", body="{}",
                          headers={"Content-Type": "application/json"})
    assert st == 401
    assert actions(db, "inventory") == [("cli:ops", "pause"), ("cli:ops", "resume")]
    assert json.loads(body)["error"] == "unauthorized"
