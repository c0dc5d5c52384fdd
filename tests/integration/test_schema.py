"""schema/ordersync.sql is the schema the migrations make: a migration that
changes the schema without the file being regenerated (scripts/schema) fails
here, with the difference and what to run."""
import os
import subprocess

from conftest import BIN, REPO

SCRIPT = os.path.join(REPO, "scripts", "schema")
COMMITTED = os.path.join(REPO, "schema", "ordersync.sql")


def check(cluster, path=COMMITTED):
    env = dict(os.environ, DATABASE_URL=cluster.url, ORDERSYNC_BIN=BIN)
    return subprocess.run([SCRIPT, "--check", "--file", path], env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_committed_schema_is_what_the_migrations_make(cluster):
    r = check(cluster)
    assert r.returncode == 0, (
        "schema/ordersync.sql is not what the migrations make: run scripts/schema and commit"
        " the file\n" + r.stdout[-6000:] + r.stderr)


def test_a_schema_that_differs_is_caught_and_says_what_to_run(cluster, tmp_path):
    """The check is not vacuous: the committed file with a column taken out
    of a table fails it."""
    text = open(COMMITTED).read()
    assert "CREATE TABLE public.destinations (" in text
    edited = text.replace("    rate_limit_per_s numeric,\n", "", 1)
    assert edited != text
    stale = tmp_path / "stale.sql"
    stale.write_text(edited)
    r = check(cluster, str(stale))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "+    rate_limit_per_s numeric," in r.stdout  # the difference is shown
    assert "run scripts/schema" in r.stderr

