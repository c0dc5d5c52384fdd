"""The relay's read with content filters, stream_read_filtered (016), checked in
SQL: what it returns for each destination, the guarantee that an event a
filter leaves out never comes back with its content, that the limit counts
what was looked at (a filter that leaves everything out still moves the
stream a page a read), and that it agrees with stream_read (007) for a
destination without a filter and with destination_filtered() for one with."""
import json

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
COLS = ("destination_id, horizon, event_position, event_id, order_id, created_at, payload,"
        " held, trace_id")


def make_events(db, n=12):
    """Destinations a, b, c; n events: order.created and order.updated in turn, every
    third one in EUR, the others in USD; total as a string ("86.46"), as orders have it."""
    for d in ("a", "b", "c"):
        db.query("INSERT INTO destinations (id, url, secret)"
                 " VALUES (%s, 'http://127.0.0.1:9/x', %s)", (d, SECRET))
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', 'x')")
    db.query("INSERT INTO orders (source_id, external_id, sender_updated_at)"
             " SELECT 'shop', g::text, now() FROM generate_series(1, %s) g", (n,))
    ids = [i for (i,) in db.query("SELECT id FROM orders ORDER BY id")]
    for k, oid in enumerate(ids):
        typ = "order.created" if k % 2 == 0 else "order.updated"
        env = {"type": typ, "timestamp": "2030-01-01T00:00:00Z",
               "data": {"id": str(oid), "currency": "EUR" if k % 3 == 0 else "USD",
                        "total": "86.46"}}
        db.query("INSERT INTO events (position, id, order_id, type, created_at, payload, trace_id)"
                 " VALUES (nextval('event_position'), gen_random_uuid(), %s, %s, now(), %s,"
                 " gen_random_uuid())", (oid, typ, json.dumps(env)))
    return db.query("SELECT position, type, payload FROM events ORDER BY position")


def read(db, dests, afters, types, limits, fn="stream_read_filtered",
         cols=COLS + ", ord, matched"):
    return db.query(f"SELECT {cols} FROM {fn}(%s::text[], %s::bigint[], %s::text[],"
                    " %s::integer[], %s::boolean[])",
                    (dests, afters, types, limits, [False] * len(dests)))


def eur(payload):
    return json.loads(payload)["data"]["currency"] == "EUR"


def test_each_destination_gets_every_event_it_looked_at_in_order_with_a_verdict(db):
    events = make_events(db)
    db.query("""UPDATE destinations SET filter = '$.data.currency == "EUR"' WHERE id = 'b'""")
    first = events[0][0]
    # asked in an order that is not the destinations' own: the rows follow the order asked
    rows = read(db, ["c", "b", "a"], [first - 1, first - 1, first + 3], [None, None, None],
                [5, 100, 4])
    head, rows = rows[0], rows[1:]
    assert head[0] is None and head[1] == events[-1][0]
    by = {}
    for r in rows:
        by.setdefault(r[0], []).append(r)
    assert [r[0] for r in rows] == ["c"] * 5 + ["b"] * len(events) + ["a"] * 4
    assert [r[2] for r in by["c"]] == [p for p, _, _ in events[:5]]
    assert [r[2] for r in by["a"]] == [p for p, _, _ in events[4:8]]
    # b: every event looked at comes back, in order; those its filter left out with
    # nothing but their position
    assert [r[2] for r in by["b"]] == [p for p, _, _ in events]
    for r, (p, _, payload) in zip(by["b"], events):
        if eur(payload):
            assert r[-1] is True and r[6] == payload and r[3] and r[4] and r[5] and r[8]
            assert r[7] is False
        else:
            assert r[-1] is False and r[3:9] == (None,) * 6
    assert all(r[-1] is True for r in by["a"] + by["c"])
    assert {r[0]: r[-2] for r in rows} == {"c": 1, "b": 2, "a": 3}


def test_several_filtered_destinations_each_get_their_page_judged_by_their_own_filter(db):
    """With several filtered destinations their events are read once for all: their rows
    may interleave, each destination's in position order, and each has its own page,
    types and verdicts, whether the pages overlap or lie apart."""
    events = make_events(db, 40)
    db.query("""UPDATE destinations SET filter = '$.data.currency == "EUR"' WHERE id = 'a'""")
    db.query("""UPDATE destinations SET filter = '$.data.currency == "USD"' WHERE id = 'b'""")
    db.query("""UPDATE destinations SET filter = '$.type == "order.updated"' WHERE id = 'c'""")
    pos = [p for p, _, _ in events]
    kind = {p: t for p, t, _ in events}
    body = {p: pl for p, _, pl in events}
    judge = {"a": lambda p: eur(body[p]), "b": lambda p: not eur(body[p]),
             "c": lambda p: kind[p] == "order.updated"}
    cases = [  # afters (as indexes into the events: -1 before the first), types, limits
        ([-1, -1, -1], [None, None, None], [10, 10, 10]),          # the same page
        ([-1, 3, 30], [None, None, None], [10, 5, 100]),           # overlapping, apart, short
        ([-1, 2, 8], ['{order.created}', None, '{order.created}'], [6, 7, 3]),
        ([39, -1, 20], [None, None, None], [5, 3, 4]),             # one with nothing left
    ]
    for c_filtered in (True, False):  # then with c unfiltered: read apart, as stream_read
        if not c_filtered:
            db.query("UPDATE destinations SET filter = NULL WHERE id = 'c'")
            judge["c"] = lambda p: True
        for afters, types, limits in cases:
            after_pos = [pos[i] if i >= 0 else pos[0] - 1 for i in afters]
            rows = read(db, ["b", "c", "a"], after_pos, types, limits)
            assert rows[0][0] is None
            for ord_, dest, after, t, lim in zip((1, 2, 3), ("b", "c", "a"), after_pos, types,
                                                 limits):
                mine = [r for r in rows[1:] if r[-2] == ord_]
                assert all(r[0] == dest for r in mine)
                want = [p for p in pos if p > after
                        and (t is None or kind[p] == t.strip("{}"))][:lim]
                assert [r[2] for r in mine] == want, (dest, afters, types, limits)
                for r in mine:
                    assert r[-1] is judge[dest](r[2]), (dest, r[2])
                    if r[-1]:
                        assert r[6] == body[r[2]] and r[3] is not None
                    else:
                        assert r[3:9] == (None,) * 6
            assert all(r[-2] in (1, 2, 3) for r in rows[1:])


def test_without_a_filter_the_read_is_stream_reads(db):
    events = make_events(db)
    first = events[0][0]
    args = (["a", "b"], [first - 1, first + 2], [None, '{order.updated}'], [7, 3])
    old = read(db, *args, fn="stream_read", cols=COLS)
    new = read(db, *args)
    assert [r[:-2] for r in new] == old
    assert new[0][-1] is None and all(r[-1] is True for r in new[1:])
    assert [r[-2] for r in new[1:]] == [1] * 7 + [2] * 3


def test_the_limit_counts_what_was_looked_at_so_a_filter_leaving_everything_out_moves_a_page(db):
    events = make_events(db)
    db.query("""UPDATE destinations SET filter = '$.data.currency == "CHF"' WHERE id = 'a'""")
    first = events[0][0]
    rows = read(db, ["a"], [first - 1], [None], [5])[1:]
    assert [r[2] for r in rows] == [p for p, _, _ in events[:5]]
    assert all(r[-1] is False and r[6] is None for r in rows)
    # the next page starts after the last one looked at
    rows = read(db, ["a"], [rows[-1][2]], [None], [5])[1:]
    assert [r[2] for r in rows] == [p for p, _, _ in events[5:10]]


def test_filters_and_subscriptions_combine(db):
    events = make_events(db)
    db.query("""UPDATE destinations SET filter = '$.data.currency == "EUR"' WHERE id = 'a'""")
    first = events[0][0]
    rows = read(db, ["a"], [first - 1], ['{order.created}'], [100])[1:]
    # only events of its type are looked at; of those, the euro ones are sent
    assert [r[2] for r in rows] == [p for p, t, _ in events if t == "order.created"]
    assert {r[2] for r in rows if r[-1]} == \
        {p for p, t, pl in events if t == "order.created" and eur(pl)}


def test_a_filter_that_cannot_judge_leaves_the_event_out_and_a_change_applies_to_the_next_read(db):
    events = make_events(db)
    first = events[0][0]
    # "86.46" > 10 compares a string with a number: no verdict, left out
    db.query("UPDATE destinations SET filter = '$.data.total > 10' WHERE id = 'a'")
    rows = read(db, ["a"], [first - 1], [None], [100])[1:]
    assert len(rows) == len(events) and not any(r[-1] for r in rows)
    db.query("""UPDATE destinations SET filter = '$.data.total == "86.46"' WHERE id = 'a'""")
    rows = read(db, ["a"], [first - 1], [None], [100])[1:]
    assert len(rows) == len(events) and all(r[-1] for r in rows)


def test_the_read_agrees_with_destination_filtered(db):
    events = make_events(db)
    for f in ('$.data.currency == "EUR"', '$.data.total > 10', '$.type starts with "order.c"'):
        db.query("UPDATE destinations SET filter = %s WHERE id = 'a'", (f,))
        rows = read(db, ["a"], [events[0][0] - 1], [None], [100])[1:]
        filtered = dict(db.query("SELECT position, destination_filtered('a', position, payload)"
                                 " FROM events"))
        assert len(rows) == len(events)
        assert all(r[-1] is not filtered[r[2]] for r in rows), f


def test_a_paused_destination_is_not_read_in_the_snapshot_that_sees_its_pause(db):
    """An operator's pause is read in the read's own snapshot: a read that sees an event
    committed after the pause also sees the pause, so no such event is judged by the filter
    in force before a change the operator makes while paused, even when the relay has not yet
    heard of the pause. The paused destination gets one row with its ord and no event (its
    reader keeps its position); the others are read as before, filtered or not."""
    events = make_events(db)
    db.query("""UPDATE destinations SET filter = '$.data.currency == "EUR"' WHERE id IN ('a', 'c')""")
    first = events[0][0]
    for paused in (["a"], ["b"], ["a", "b"], ["a", "c"]):
        db.query("UPDATE destinations SET paused_at = CASE WHEN id = ANY (%s) THEN now() END",
                 (paused,))
        rows = read(db, ["a", "b", "c"], [first - 1] * 3, [None] * 3, [100] * 3)
        assert rows[0][0] is None
        for ord_, dest in ((1, "a"), (2, "b"), (3, "c")):
            mine = [r for r in rows[1:] if r[-2] == ord_]
            if dest in paused:
                assert [(r[0], r[2], r[-1]) for r in mine] == [(dest, None, None)], (paused, dest)
            else:
                assert [r[2] for r in mine] == [p for p, _, _ in events], (paused, dest)
                assert all(r[-1] is (dest == "b" or eur(pl))
                           for r, (_, _, pl) in zip(mine, events)), (paused, dest)
