"""Every SQL block of the README runs as pasted, in order, on a freshly
migrated database: through psql, as an operator pastes it, stopping at the
first error; and no UPDATE or DELETE in them silently touches nothing (a
statement that updates 0 rows tells the reader it configured something it
did not)."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO

PSQL = shutil.which("psql")


def readme_sql_blocks():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    return re.findall(r"^```sql\n(.*?)^```", text, re.M | re.S)


def test_the_readme_has_sql_blocks():
    assert len(readme_sql_blocks()) >= 2


@pytest.mark.skipif(PSQL is None, reason="psql is not installed")
def test_every_readme_sql_block_runs_as_pasted_in_order(db):
    for i, block in enumerate(readme_sql_blocks(), 1):
        p = subprocess.run([PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-d", db.url],
                           input=block, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"README SQL block {i} failed:\n{p.stderr}\n--- block ---\n{block}"
        assert "ERROR" not in p.stderr, f"block {i}: {p.stderr}"
        # psql's command tags: "UPDATE 0" is a statement that changed nothing
        empty = re.findall(r"^(UPDATE|DELETE) 0$", p.stdout, re.M)
        assert not empty, f"README SQL block {i}: {len(empty)} statement(s) touched no row\n{p.stdout}"
    # what the configuration block describes is there afterwards
    dests = {r[0] for r in db.query("SELECT id FROM destinations")}
    subscribed = {r[0] for r in db.query("SELECT DISTINCT destination_id FROM subscriptions")}
    assert subscribed <= dests
