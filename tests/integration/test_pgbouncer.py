"""ordersync behind Debian's pgbouncer (README: Connection poolers).

In session mode a client keeps its server connection: everything ordersync
does (LISTEN, prepared statements, advisory locks) works as with PostgreSQL
itself. In transaction mode each transaction may run on another server
connection: ordersync refuses DATABASE_URL alone there, with the reason, and
works when ORDERSYNC_SESSION_DATABASE_URL gives it a session of its own for
LISTEN, maintenance and migrations.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

import pytest

import webhooks as wh
from conftest import FIXTURES, Process, free_port, request, run_ordersync

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PgBouncer:
    """A pgbouncer in front of the test cluster, with every database passed through."""

    def __init__(self, cluster_url, mode, pool_size=20):
        if not os.path.exists(PGBOUNCER):
            pytest.skip("pgbouncer is not installed (scripts/install-deps installs it)")
        u = urllib.parse.urlsplit(cluster_url)
        self.user = u.username
        self.dir = tempfile.mkdtemp(prefix="ordersync-pgbouncer-")
        os.chmod(self.dir, 0o777)  # run as postgres when the tests run as root
        self.port = free_port()
        with open(os.path.join(self.dir, "users.txt"), "w") as f:
            f.write('"%s" ""\n' % self.user)
        ini = os.path.join(self.dir, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write(f"""[databases]
* = host={u.hostname} port={u.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 500
logfile = {self.dir}/pgbouncer.log
pidfile = {self.dir}/pgbouncer.pid
""")
        os.chmod(ini, 0o644)
        argv = [PGBOUNCER, ini]
        if os.getuid() == 0:  # pgbouncer refuses to run as root
            argv = [PGBOUNCER, "-u", "postgres", ini]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise AssertionError("pgbouncer did not start: %s"
                                         % self.proc.stderr.read().decode(errors="replace"))
                time.sleep(0.05)

    def url(self, dbname):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def bouncer(cluster):
    started = []

    def start(mode, pool_size=20):
        b = PgBouncer(cluster.url, mode, pool_size)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


# the shared receivers fixture (conftest.py), as a dict by name
pytestmark = pytest.mark.receivers("inventory", "shipping")


def seed(db, receivers):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    for r in receivers.values():
        db.query("INSERT INTO destinations (id, url, secret) VALUES (%s, %s, %s)",
                 (r.name, r.url, wh.DEST_SECRET))


def order_body(oid):
    with open(os.path.join(FIXTURES, "shopify_order_create.json")) as f:
        o = json.load(f)
    o["id"] = oid
    return wh.dumps(o)


def post(p, source, oid, secret=wh.SHOPIFY_SECRET):
    b = order_body(oid)
    st, _, body = request(p.port, "POST", "/webhooks/" + source, body=b,
                          headers=wh.shopify(b, secret=secret))
    return st, json.loads(body) if body else None


def wait_until(pred, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.1)


def delivered_orders(r):
    return {x["json"]["data"]["external_id"] for x in r.accepted() if x.get("json")}


def exercise(db, procs, receivers, first_id):
    """What needs a session, through whichever connections ordersync has:
    group commits on several connections, delivery by the instance holding
    each stream, NOTIFY from one instance's commit waking the other's relay, and
    a configuration change reaching every instance by LISTEN (the periodic
    reload is an hour away). Returns the order ids acknowledged."""
    acked = set()
    for i in range(30):
        p = procs[i % len(procs)]
        oid = first_id + i
        st, body = post(p, "shop", oid)
        assert st == 200 and body["status"] == "accepted", body
        acked.add(str(oid))
    for r in receivers.values():
        wait_until(lambda r=r: acked <= delivered_orders(r), what="delivery to " + r.name)
    # a new source, in SQL: each instance hears of it within a moment
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop2', 'shopify', 'another secret')")
    for p in procs:
        oid = first_id + 1000 + procs.index(p)
        wait_until(lambda p=p, oid=oid: post(p, "shop2", oid, secret="another secret")[0] == 200,
                   timeout=10, what="the new source on every instance (LISTEN)")
        acked.add(str(oid))
    for r in receivers.values():
        wait_until(lambda r=r: acked <= delivered_orders(r), what="delivery to " + r.name)
    return acked


# The streams are shared out between the two instances again when the
# configuration changes (the new source): the one an instance lets go is taken
# by the other at its next lease round, a quarter of the lease, 15 s with the
# default lease of 60 s. The least lease (5 s, as the `stack` fixture's) makes
# that a second; what goes through the pooler is the same.
LEASE_S = "5"


def no_errors(p):
    bad = [r for r in p.logs if r.get("level") == "error"]
    assert not bad, bad


def test_session_mode_works_as_postgresql_does(empty_db, bouncer, receivers):
    """Migrations (a session advisory lock), two instances (LISTEN/NOTIFY,
    prepared statements, the maintenance's session lock), all through one
    session-mode pgbouncer."""
    b = bouncer("session")
    url = b.url(empty_db.name)
    p = run_ordersync(["migrate"], url)
    assert p.returncode == 0, p.stderr
    seed(empty_db, receivers)
    env = {"ORDERSYNC_RELOAD_INTERVAL_S": "3600", "ORDERSYNC_SWEEP_INTERVAL_S": "1",
           "ORDERSYNC_LEASE_S": LEASE_S}
    procs = [Process(url, env=dict(env, ORDERSYNC_INSTANCE="a")).start(),
             Process(url, env=dict(env, ORDERSYNC_INSTANCE="b")).start()]
    try:
        for p in procs:
            p.wait_ready()
        exercise(empty_db, procs, receivers, 7100000)
        # the maintenance rounds ran through it too (partitions made ahead at start)
        assert empty_db.scalar("SELECT count(*) FROM event_store_partitions WHERE hi > now()") > 0
    finally:
        for p in procs:
            assert p.stop() == 0
    for p in procs:
        no_errors(p)


def test_transaction_mode_alone_is_refused_with_the_reason(db, bouncer):
    b = bouncer("transaction")
    for args in (["serve"], ["migrate"]):
        p = run_ordersync(args, b.url(db.name), env={"ORDERSYNC_LISTEN": "127.0.0.1:0"})
        assert p.returncode != 0, (args, p.stderr)
        lines = [json.loads(l) for l in p.stderr.splitlines() if l.startswith("{")]
        refusal = [l for l in lines
                   if l["msg"] == "DATABASE_URL goes through a connection pooler in transaction mode"]
        assert refusal, p.stderr
        assert "ORDERSYNC_SESSION_DATABASE_URL" in refusal[0]["hint"]
        assert "server process" in refusal[0]["detail"]


def test_transaction_mode_works_with_a_session_url(db, cluster, bouncer, receivers):
    """Two instances' pooled connections (2 ingest, relay, relay-read, feed
    each) share 2 server connections: a prepared statement would be missing on
    the next server connection now and then. LISTEN and maintenance go to
    PostgreSQL itself."""
    b = bouncer("transaction", pool_size=2)
    seed(db, receivers)
    env = {"ORDERSYNC_SESSION_DATABASE_URL": db.url, "ORDERSYNC_RELOAD_INTERVAL_S": "3600",
           "ORDERSYNC_SWEEP_INTERVAL_S": "1", "ORDERSYNC_LEASE_S": LEASE_S}
    p = run_ordersync(["migrate"], b.url(db.name), env=env)
    assert p.returncode == 0, p.stderr
    procs = [Process(b.url(db.name), env=dict(env, ORDERSYNC_INSTANCE="a")).start(),
             Process(b.url(db.name), env=dict(env, ORDERSYNC_INSTANCE="b")).start()]
    try:
        for p in procs:
            p.wait_ready()
        exercise(db, procs, receivers, 7200000)
    finally:
        for p in procs:
            assert p.stop() == 0
    for p in procs:
        no_errors(p)
    # every pooled connection (2 instances x 2 ingest, relay, relay-read, feed) went
    # through pgbouncer, which had 2 server connections for them
    log = open(os.path.join(b.dir, "pgbouncer.log")).read()
    assert log.count("login attempt: db=%s" % db.name) >= 10, log[-2000:]
