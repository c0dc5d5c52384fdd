"""`ordersync migrate` and the first schema, against a real PostgreSQL."""
import json

import pytest

from conftest import Process, run_ordersync


def applied(db):
    return db.query("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY 1")


def test_fresh_apply_creates_schema(empty_db):
    p = run_ordersync(["migrate"], empty_db.url)
    assert p.returncode == 0, p.stderr
    rows = applied(empty_db)
    assert [r[1] for r in rows][:2] == ["001_init.sql", "002_ingest.sql"]
    assert all(len(r[2]) == 64 for r in rows)
    tables = {r[0] for r in empty_db.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    for t in ("sources", "destinations", "subscriptions", "inbound_events", "inbound_keys",
              "orders", "order_lines", "events", "delivery_streams", "deliveries",
              "delivery_attempts", "delivery_log", "event_deliveries", "sync_state",
              "sync_backlog", "order_sync", "schema_migrations"):
        assert t in tables


def test_second_run_is_a_no_op(empty_db):
    run_ordersync(["migrate"], empty_db.url, check=True)
    before = applied(empty_db)
    p = run_ordersync(["migrate"], empty_db.url)
    assert p.returncode == 0, p.stderr
    assert applied(empty_db) == before
    assert not [l for l in p.stderr.splitlines() if "migration applied" in l]


def test_changed_checksum_is_refused(db):
    db.query("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1")
    p = run_ordersync(["migrate"], db.url)
    assert p.returncode != 0
    assert "001_init.sql was changed after it was applied" in p.stderr
    # and the service refuses to start on it
    p = run_ordersync(["serve"], db.url, env={"ORDERSYNC_LISTEN": "127.0.0.1:0"})
    assert p.returncode != 0
    assert "schema is not current" in p.stderr


def test_unknown_newer_migration_is_refused(db):
    db.query("INSERT INTO schema_migrations VALUES (999, '999_future.sql', repeat('a', 64))")
    p = run_ordersync(["migrate"], db.url)
    assert p.returncode != 0
    assert "999_future.sql" in p.stderr


def test_unreachable_database_exits_non_zero(cluster):
    p = run_ordersync(["migrate"], "postgresql://nobody@127.0.0.1:1/none",
                      env={"ORDERSYNC_DB_CONNECT_TIMEOUT_S": "2"})
    assert p.returncode != 0
    line = json.loads(p.stderr.strip().splitlines()[-1])
    assert line["msg"] == "could not connect to the database"
    assert "127.0.0.1" in line["detail"] or "refused" in line["detail"]


def test_serve_refuses_pending_schema_unless_opted_in(empty_db):
    p = run_ordersync(["serve"], empty_db.url, env={"ORDERSYNC_LISTEN": "127.0.0.1:0"})
    assert p.returncode != 0
    assert "migration(s) pending" in p.stderr or "no schema yet" in p.stderr
    proc = Process(empty_db.url, env={"ORDERSYNC_MIGRATE_ON_START": "1"}).start()
    try:
        proc.wait_ready()
        assert len(applied(empty_db)) >= 2
    finally:
        assert proc.stop() == 0


def test_constraints_reject_bad_rows(db):
    import psycopg
    bad = [
        "INSERT INTO sources (id, kind, secret) VALUES ('s', 'magento', 'x')",
        "INSERT INTO sources (id, kind) VALUES ('s', 'shopify')",  # push needs a secret
        "INSERT INTO destinations (id, url, secret) VALUES ('d', 'ftp://x', 'whsec_AAAAAAAAAAAAAAAAAAAA')",
        "INSERT INTO destinations (id, url, secret) VALUES ('d', 'http://x', 'plain')",
        "INSERT INTO subscriptions VALUES ('nope', 'order.created')",
    ]
    for sql in bad:
        with pytest.raises(psycopg.Error):
            db.query(sql)


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def seed(db):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', 's3cret')")
    db.query("INSERT INTO destinations (id, url, secret) VALUES"
             " ('inventory', 'http://127.0.0.1:9/i', %s),"
             " ('invoicing', 'http://127.0.0.1:9/v', %s),"
             " ('shipping', 'http://127.0.0.1:9/s', %s)", (SECRET, SECRET, SECRET))


def test_views_for_a_hand_inserted_order(db):
    seed(db)
    oid = db.scalar("INSERT INTO orders (source_id, external_id, status, currency, total,"
                    " sender_updated_at, lines) VALUES ('shop', '1001', 'open', 'EUR', 25.00, now(),"
                    " '[{\"sku\": \"SKU-1\", \"title\": \"Mug\", \"quantity\": 2,"
                    " \"unit_price\": \"12.50\"}]') RETURNING id")
    assert db.query("SELECT order_id, line_no, sku, title, quantity, unit_price::text"
                    " FROM order_lines") == [(oid, 1, "SKU-1", "Mug", 2, "12.50")]
    pos = db.scalar("INSERT INTO events (position, id, order_id, type, created_at, payload)"
                    " VALUES (nextval('event_position'), gen_random_uuid(), %s, 'order.created',"
                    " now(), '{}') RETURNING position", (oid,))
    # inventory: delivered at the first attempt (its stream passed the event and
    # delivery_log has the 2xx: a passed cursor alone is no delivery); invoicing:
    # pending after a failed attempt; shipping: dead
    db.query("UPDATE delivery_streams SET position = %s", (pos,))
    db.query("INSERT INTO delivery_log (destination_id, first_position, last_position, delivered,"
             " positions, statuses, durations_ms) VALUES ('inventory', %(p)s, %(p)s, 1,"
             " ARRAY[%(p)s]::bigint[], '{200}', '{12}')", {"p": pos})
    db.query("""INSERT INTO deliveries (destination_id, position, order_id, event_created_at,
                state, attempts, last_status, last_error)
        SELECT 'invoicing', %(p)s, %(o)s, now(), 'pending', 2, 503, 'HTTP 503'
        UNION ALL SELECT 'shipping', %(p)s, %(o)s, now(), 'dead', 8, 400, 'HTTP 400'
    """, {"o": oid, "p": pos})
    rows = db.query("SELECT destination_id, state, events, delivered, pending, dead, attempts,"
                    " last_status, last_error FROM sync_state ORDER BY destination_id")
    assert rows == [
        ("inventory", "synced", 1, 1, 0, 0, 1, None, None),
        ("invoicing", "retrying", 1, 0, 1, 0, 2, 503, "HTTP 503"),
        ("shipping", "dead", 1, 0, 0, 1, 8, 400, "HTTP 400"),
    ]
    backlog = db.query("SELECT destination_id, pending, retrying, delivering, dead,"
                       " oldest_pending_age IS NOT NULL FROM sync_backlog ORDER BY 1")
    assert backlog == [("inventory", 0, 0, 0, 0, False), ("invoicing", 1, 1, 0, 0, True),
                       ("shipping", 0, 0, 0, 1, False)]
    assert db.query("SELECT external_id, events, delivered, pending, dead, fully_synced"
                    " FROM order_sync") == [("1001", 3, 1, 1, 1, False)]
    # invoicing's retry went through; shipping's dead event was given up (012)
    db.query("INSERT INTO delivery_attempts (destination_id, position, order_id, attempt,"
             " started_at, duration_ms, http_status) VALUES ('invoicing', %s, %s, 3, now(), 5, 200)",
             (pos, oid))
    db.query("DELETE FROM deliveries WHERE destination_id = 'invoicing'")
    assert db.scalar("SELECT delivery_skip(dest => 'shipping')") == 1
    assert dict(db.query("SELECT destination_id, state FROM sync_state")) == \
        {"inventory": "synced", "invoicing": "synced", "shipping": "skipped"}
    assert db.query("SELECT fully_synced, delivered, skipped FROM order_sync") == [(False, 2, 1)]


def ingest(db, elements):
    import json as _json
    return db.query("SELECT idx, outcome, emitted FROM ingest_batch(%s::jsonb)",
                    (_json.dumps(elements),))


def per_destination(db):
    return db.query("SELECT destination_id, array_agg(event_type ORDER BY position)"
                    " FROM event_deliveries GROUP BY 1 ORDER BY 1")


def order(ext, updated, **kw):
    o = {"source": "shop", "external_id": ext, "status": "open", "currency": "EUR",
         "total": "10.00", "updated_at": updated, "lines": []}
    o.update(kw)
    return o


def test_destination_without_subscriptions_gets_every_type(db):
    seed(db)
    db.query("INSERT INTO subscriptions VALUES ('invoicing', 'order.paid'),"
             " ('invoicing', 'order.refunded')")
    res = ingest(db, [
        {"s": "shop", "k": "e1", "t": "orders/create", "e": "order.created",
         "o": order("1", "2026-01-01T00:00:00Z"), "p": {}},
        {"s": "shop", "k": "e2", "t": "orders/paid", "e": "order.paid",
         "o": order("1", "2026-01-01T00:01:00Z", financial_status="paid"), "p": {}},
    ])
    assert res == [(0, "applied", 1), (1, "applied", 1)]
    assert per_destination(db) == [("inventory", ["order.created", "order.paid"]),
                        ("invoicing", ["order.paid"]),
                        ("shipping", ["order.created", "order.paid"])]
    # a new destination starts syncing with one INSERT
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('crm', 'http://127.0.0.1:9/c', %s)",
             (SECRET,))
    ingest(db, [{"s": "shop", "k": "e3", "t": "orders/updated", "e": "order.updated",
                 "o": order("1", "2026-01-01T00:02:00Z"), "p": {}}])
    assert db.scalar("SELECT count(*) FROM event_deliveries WHERE destination_id = 'crm'") == 1
