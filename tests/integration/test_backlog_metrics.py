"""The backlog gauges of /metrics: per destination, how far its stream's cursor
is behind the last event, and its open delivery rows by state, as an operator's
dashboard reads them from the exposition text."""
import json
import os
import re
import time

import webhooks as wh
from conftest import FIXTURES, request

TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


def gauges(port):
    """{(name, labels): value} of every ordersync_stream_lag_positions and
    ordersync_deliveries_open sample in /metrics."""
    text = request(port, "GET", "/metrics")[2].decode()
    out = {}
    for m in re.finditer(r"^(ordersync_stream_lag_positions|ordersync_deliveries_open)"
                         r"\{([^}]*)\} (\S+)$", text, re.M):
        out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def test_lag_and_open_rows_per_destination(db, ordersync):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('erp', 'http://127.0.0.1:9/',"
             " %s)", (wh.DEST_SECRET,))
    # ingest only: nothing moves the stream's cursor, so every event is lag
    p = ordersync(env={"ORDERSYNC_RELAY": "0"})
    for oid in (1, 2, 3):
        o = dict(TEMPLATE, id=oid)
        body = wh.dumps(o)
        st, _, _ = request(p.port, "POST", "/webhooks/shop", body=body,
                           headers=wh.shopify(body, "orders/create"))
        assert st == 200
    events = db.scalar("SELECT count(*) FROM events")
    assert events == 3
    # the gauges are read a second after start, then every 15 s: a fresh
    # process shows the backlog within seconds
    p.stop()
    p = ordersync(env={"ORDERSYNC_RELAY": "0"})
    deadline = time.time() + 10
    want = ("ordersync_stream_lag_positions", 'destination="erp"')
    g = gauges(p.port)
    while g.get(want) != events and time.time() < deadline:
        time.sleep(0.2)
        g = gauges(p.port)
    assert g.get(want) == events
    for state in ("pending", "delivering", "blocked", "dead"):
        assert g[("ordersync_deliveries_open", f'destination="erp",state="{state}"')] == 0
