"""Content filters (issue "delivery beyond the anchors", part 2):
destinations.filter, a jsonpath predicate over the envelope a destination is
sent. Checked from the outside: what the receivers got (their own records),
what sync_backlog, event_deliveries, the console's API and /metrics say."""
import json
import re
import subprocess

import psycopg
import pytest

from conftest import BIN, request
from test_operator_truth import TOKEN, accepted_positions, stack, wait_for  # noqa: F401

# test_operator_truth's stack, with its destinations' settings (the shared stack fixture reads
# them from this marker): fast retries, 2 attempts, 2 s timeouts
pytestmark = pytest.mark.stack(retry_schedule="{0.2 seconds}", max_attempts=2, timeout_ms=2000)


def positions_where(db, cond, params=()):
    return {p for (p,) in db.query(f"SELECT position FROM events WHERE {cond}", params)}


def metric(port, name, dest):
    """A counter from /metrics at port (the admin listener: with one, only it serves /metrics)."""
    st, _, body = request(port, "GET", "/metrics")
    assert st == 200
    m = re.search(rf'^{name}{{destination="{dest}"}} (\d+)', body.decode(), re.M)
    return int(m.group(1)) if m else 0


def test_a_filtered_destination_gets_exactly_the_matching_events(stack, db):
    # invoicing: euro orders only; shipping: euro orders' creations only (filter and
    # subscription together); inventory: everything
    db.query("""UPDATE destinations SET filter = '$.data.currency == "EUR"'
                WHERE id IN ('invoicing', 'shipping')""")
    db.query("INSERT INTO subscriptions (destination_id, event_type)"
             " VALUES ('shipping', 'order.created')")
    s = stack()
    for i in range(12):
        s.order(7000 + i, currency="EUR" if i % 3 == 0 else "USD")
        s.order(7000 + i, "orders/updated", updated_at="2030-01-01T00:00:00Z",
                currency="EUR" if i % 3 == 0 else "USD")
    total = db.scalar("SELECT count(*) FROM events")
    wait_for(lambda: len(accepted_positions(s.receivers["inventory"], db)) == total,
             what="inventory has every event")
    eur = positions_where(db, "payload::jsonb #>> '{data,currency}' = 'EUR'")
    eur_created = positions_where(db, "payload::jsonb #>> '{data,currency}' = 'EUR'"
                                      " AND type = 'order.created'")
    assert len(eur) == 8 and len(eur_created) == 4
    wait_for(lambda: accepted_positions(s.receivers["invoicing"], db) == eur,
             what="invoicing has the euro events")
    wait_for(lambda: accepted_positions(s.receivers["shipping"], db) == eur_created,
             what="shipping has the euro creations")
    # the backlog drains to 0: the cursor moved past what was left out
    wait_for(lambda: db.query("SELECT destination_id, pending FROM sync_backlog ORDER BY 1")
             == [("inventory", 0), ("invoicing", 0), ("shipping", 0)], what="backlogs at 0")
    # and nothing else arrives afterwards (no event was only late)
    assert len(s.receivers["invoicing"].requests) == 8
    assert all(r["valid"] for r in s.receivers["invoicing"].requests)
    # counted: invoicing left out the 16 dollar events; shipping the 8 dollar
    # creations (its 12 updates are not its type, so not "filtered")
    assert metric(s.admin, "ordersync_events_filtered_total", "invoicing") == 16
    assert metric(s.admin, "ordersync_events_filtered_total", "shipping") == 8

    # the views and the console say "filtered", never "delivered" or "unrecorded"
    usd_order = s.order_id(7001)
    cells = s.cells(usd_order)
    assert {st for (d, _), (st, _) in cells.items() if d == "invoicing"} == {"filtered"}
    assert {st for (d, _), (st, _) in cells.items() if d == "inventory"} == {"delivered"}
    api = s.api_cells(usd_order)
    assert {st for (d, _), (st, _) in api.items() if d == "invoicing"} == {"filtered"}
    eur_order = s.order_id(7000)
    assert {st for (d, _), (st, _) in s.cells(eur_order).items() if d == "invoicing"} == \
        {"delivered"}
    assert db.scalar("SELECT count(*) FROM event_deliveries WHERE state = 'filtered'"
                     " AND destination_id = 'invoicing'") == 16
    # nothing was to be sent: the order is fully synced, its filtered events not "delivered"
    assert db.query("SELECT fully_synced, delivered FROM order_sync WHERE order_id = %s",
                    (usd_order,)) == [(True, 2)]
    assert db.query("SELECT state, delivered FROM sync_state WHERE order_id = %s"
                    " AND destination_id = 'invoicing'", (usd_order,)) == [("synced", 0)]


def test_an_invalid_filter_is_refused_with_the_parsers_message(stack, db):
    with pytest.raises(psycopg.Error) as e:
        db.query("""UPDATE destinations SET filter = '$.data.currency == ' WHERE id = 'invoicing'""")
    assert "syntax error" in str(e.value) and "jsonpath" in str(e.value)
    # a path that is not a predicate would answer no true or false
    with pytest.raises(psycopg.Error) as e:
        db.query("UPDATE destinations SET filter = '$.data.currency' WHERE id = 'invoicing'")
    assert "destinations_filter_is_predicate" in str(e.value)
    assert db.scalar("SELECT filter FROM destinations WHERE id = 'invoicing'") is None


def test_an_invalid_filter_is_refused_through_the_api_and_the_cli(stack, db):
    # through the API: the same message, as a 400
    s = stack()
    st, doc = s.post("/api/destinations/invoicing/filter", {"filter": '$.data.currency == '})
    assert st == 400, doc
    assert "syntax error" in doc["detail"] and "jsonpath" in doc["detail"]
    st, doc = s.post("/api/destinations/invoicing/filter", {"filter": '$.data.currency == "EUR"'})
    assert st == 200 and doc["filter"] == '($."data"."currency" == "EUR")'
    # a path that is not a predicate, in a sentence that says what is wanted
    st, doc = s.post("/api/destinations/invoicing/filter", {"filter": '$.data.currency'})
    assert st == 400 and "not a predicate" in doc["detail"], doc
    assert db.query("SELECT actor, action, detail->>'filter' FROM operator_actions") == \
        [("api:token", "filter", '($."data"."currency" == "EUR")')]
    # through the CLI: the message on stderr, exit 1
    out = subprocess.run([BIN, "destination", "filter", "invoicing", "$.data.total >"],
                         env={"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1, out
    assert "syntax error" in out.stderr and "jsonpath" in out.stderr
    out = subprocess.run([BIN, "destination", "filter", "invoicing", "--none"],
                         env={"DATABASE_URL": db.url, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
    assert db.scalar("SELECT filter FROM destinations WHERE id = 'invoicing'") is None


def test_a_changed_filter_applies_to_what_is_not_sent_yet_without_a_restart(stack, db):
    db.query("""UPDATE destinations SET filter = '$.data.currency == "EUR"'
                WHERE id = 'invoicing'""")
    s = stack()
    s.order(7100, currency="USD")
    s.order(7101, currency="EUR")
    p7101 = positions_where(db, "payload::jsonb #>> '{data,external_id}' = '7101'")
    wait_for(lambda: accepted_positions(s.receivers["invoicing"], db) == p7101,
             what="the euro order")
    # held by its operator, invoicing reads nothing: what comes now is not sent yet. The relay
    # applies the pause when its NOTIFY arrives; an order committed before that would be read
    # with the euro filter, so wait until the relay says it holds
    assert db.scalar("SELECT destination_pause('invoicing', true, 'tester')") is True
    wait_for(lambda: metric(s.admin, "ordersync_destination_held", "invoicing") == 1,
             what="the relay holds invoicing")
    s.order(7102, currency="USD")
    s.order(7103, currency="EUR")
    wait_for(lambda: len(accepted_positions(s.receivers["inventory"], db)) == 4,
             what="inventory has all four")
    db.query("""UPDATE destinations SET filter = '$.data.currency == "USD"'
                WHERE id = 'invoicing'""")
    assert db.scalar("SELECT destination_pause('invoicing', false, 'tester')") is True
    p7102 = positions_where(db, "payload::jsonb #>> '{data,external_id}' = '7102'")
    wait_for(lambda: accepted_positions(s.receivers["invoicing"], db) == p7101 | p7102,
             what="the dollar order sent after the change")
    wait_for(lambda: db.scalar("SELECT pending FROM sync_backlog"
                               " WHERE destination_id = 'invoicing'") == 0, what="drained")
    # each event judged by the filter that was in force when its stream passed it
    states = {p: st for p, st in db.query(
        "SELECT position, state FROM event_deliveries WHERE destination_id = 'invoicing'")}
    p7100 = positions_where(db, "payload::jsonb #>> '{data,external_id}' = '7100'")
    p7103 = positions_where(db, "payload::jsonb #>> '{data,external_id}' = '7103'")
    assert {states[p] for p in p7100} == {"filtered"}
    assert {states[p] for p in p7103} == {"filtered"}
    assert {states[p] for p in p7101 | p7102} == {"delivered"}
    assert db.query("SELECT count(*) FROM destination_filters WHERE destination_id = 'invoicing'")\
        == [(2,)]


def test_a_filter_that_cannot_judge_an_event_leaves_it_out(stack, db):
    # comparing a string (total is "86.46") with a number is unknown in jsonpath
    db.query("UPDATE destinations SET filter = '$.data.total > 10' WHERE id = 'invoicing'")
    s = stack()
    s.order(7200)
    wait_for(lambda: len(accepted_positions(s.receivers["inventory"], db)) == 1, what="inventory")
    wait_for(lambda: db.scalar("SELECT pending FROM sync_backlog"
                               " WHERE destination_id = 'invoicing'") == 0, what="drained")
    assert s.receivers["invoicing"].requests == []
    assert db.scalar("SELECT state FROM event_deliveries WHERE destination_id = 'invoicing'") == \
        "filtered"


def test_the_last_of_quick_changes_is_the_one_in_force(stack, db):
    # Changes that follow each other faster than a reload answers: a NOTIFY that arrives while
    # a reload is out must not be dropped (that reload may have read the table before it), or
    # the instance would run on a stale setting until its periodic reload (an hour here).
    s = stack(ORDERSYNC_RELOAD_INTERVAL_S="3600")
    for round_ in range(10):
        for i in range(40):
            db.query("SELECT destination_pause('invoicing', %s, 'tester')", (i % 2 == 0,))
        # ended resumed: an order now reaches invoicing
        s.order(7600 + round_, currency="EUR")
        p = positions_where(db, "payload::jsonb #>> '{data,external_id}' = %s",
                            (str(7600 + round_),))
        wait_for(lambda: p <= accepted_positions(s.receivers["invoicing"], db),
                 what=f"invoicing resumed after round {round_}")
        assert metric(s.admin, "ordersync_destination_held", "invoicing") == 0
        # and ended paused: the relay holds it
        for i in range(41):
            db.query("SELECT destination_pause('invoicing', %s, 'tester')", (i % 2 == 0,))
        wait_for(lambda: metric(s.admin, "ordersync_destination_held", "invoicing") == 1,
                 what=f"invoicing held after round {round_}")
        db.query("SELECT destination_pause('invoicing', false, 'tester')")
