"""Poll runs that end on a later page: whatever a polled server answers for
page 2 or later (a 429, a 503, an error), the pages before it are stored, the
answer is counted in poll_state, its wait is honoured, and the next run picks
up from the cursor those pages moved."""
import copy
import json
import os
import sys

import pytest

from conftest import FIXTURES, REPO, Process
from receiver import wait_for

sys.path.insert(0, os.path.join(REPO, "services", "shopsim"))
from shopsim import Shop  # noqa: E402

TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


def order(oid, updated):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    o["updated_at"] = updated
    return o


@pytest.fixture
def shop():
    s = Shop()
    yield s
    s.close()


@pytest.fixture
def source(db, shop):
    db.query("INSERT INTO sources (id, kind, mode, poll_url, poll_interval, poll_auth_header)"
             " VALUES ('legacy', 'shopify', 'poll', %s, '1 second',"
             " 'X-Shopify-Access-Token: shpat_test_token')", (shop.url,))


@pytest.mark.parametrize("status", [429, 503, 500])
def test_a_later_page_that_fails_is_counted_and_the_run_resumes(db, shop, source, status):
    for i in range(5):
        shop.put(order(8000 + i, f"2026-01-0{i + 1}T00:00:00Z"))
    shop.later_pages_status = status
    shop.later_pages_fail = 1
    p = Process(db.url).start()
    try:
        p.wait_ready()
        column = "errors" if status == 500 else "rate_limited"
        wait_for(lambda: (db.scalar(f"SELECT {column} FROM poll_state") or 0) == 1, timeout=15,
                 what=f"the HTTP {status} of page 2 counted")
        expected = "HTTP 500" if status == 500 else f"HTTP {status} (retry after 1 s)"
        assert db.scalar("SELECT last_error FROM poll_state") == expected
        # page 1 was stored and moved the cursor; the next run takes the rest from there
        wait_for(lambda: db.scalar("SELECT count(*) FROM orders") == 5, timeout=15,
                 what="all orders")
        assert db.scalar("SELECT poll_cursor FROM sources") == "2026-01-05T00:00:00Z"
        failed = [r for r in shop.requests if r.get("status") == status][0]
        resumed = shop.requests[shop.requests.index(failed) + 1]["path"]
        assert "updated_at_min=2026-01-02T00%3A00%3A00Z" in resumed, resumed
        assert not p.log_lines("poll results not stored; the run is retried from the same cursor")
    finally:
        p.stop(sig=9)
