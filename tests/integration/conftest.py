"""Fixtures for black-box tests: a real PostgreSQL, the real ordersync binary,
real sockets. Nothing here mocks the system under test.

- `cluster`: the PostgreSQL server (DATABASE_URL of the test run, or a
  throwaway one started with scripts/pg for this session).
- `db`: a fresh database per test, migrated from a template built once.
- `ordersync`: a running ordersync process on a free port, with helpers to
  sign and send webhooks.
- `receivers`: recording HTTP receivers (receiver.py), a dict by name. The
  names are inventory, invoicing and shipping unless the test or its module
  says otherwise with `@pytest.mark.receivers(*names)`.
- `stack`: a source `shop` (Shopify), one destination per receiver and a
  function that starts ordersync against them (as often as called; every
  process is killed after the test). The destinations' other columns come
  from `@pytest.mark.stack(**destination_columns)` on the test or its module.
"""
import concurrent.futures
import json
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import psycopg
import pytest

import webhooks as wh
from receiver import Receiver

REPO = os.environ.get("ORDERSYNC_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("ORDERSYNC_BIN") or os.path.join(REPO, "build", "bin", "ordersync")
FIXTURES = os.path.join(REPO, "tests", "fixtures")


DESTS = ("inventory", "invoicing", "shipping")


def pytest_addoption(parser):
    parser.addoption("--shard", metavar="K/N",
                     help="run only the K-th of N parts of the collected tests (every N-th"
                          " one): CMakeLists.txt runs its longest files in parts, in parallel")


def pytest_collection_modifyitems(config, items):
    shard = config.getoption("--shard")
    if not shard:
        return
    k, n = (int(x) for x in shard.split("/"))
    if not 1 <= k <= n:
        raise pytest.UsageError(f"--shard {shard}: K must be in 1..N")
    keep = [t for i, t in enumerate(items) if i % n == k - 1]
    config.hook.pytest_deselected(items=[t for t in items if t not in keep])
    items[:] = keep


NEXT_TEST = {}  # test -> the test that runs after it in this session (None for the last)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    NEXT_TEST[item] = nextitem


def pytest_configure(config):
    config.addinivalue_line("markers", "receivers(*names): the names of the `receivers` fixture")
    config.addinivalue_line("markers", "stack(**destination_columns): the destinations' columns"
                                       " in the `stack` fixture")


def with_dbname(url, name):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


class Cluster:
    """A PostgreSQL server; `own_dir` is set when this session started it.

    Test runs share it (scripts/test runs test files in parallel), so every
    name a session makes is its own: its template is named by its process id
    and each test's database is random."""

    def __init__(self, url, own_dir=None, shared_template=None):
        self.url = url
        self.own_dir = own_dir
        self.shared_template = shared_template  # migrated by scripts/test, not dropped here
        self._template = None
        self._ready = None  # a migrated database made ahead for the next test (a Future)
        self._work = None  # one thread: creating ahead and dropping behind

    def admin(self):
        return psycopg.connect(with_dbname(self.url, "postgres"), autocommit=True)

    def template(self):
        """A database with the schema applied, copied for each test (CREATE DATABASE ... TEMPLATE).

        scripts/test migrates one before ctest starts and names it in
        ORDERSYNC_TEST_TEMPLATE: every file (every part) copies that one, and
        does not drop it, instead of migrating its own, which cost each of the
        suite's ~50 pytest runs 1-3 s of a loaded machine before its first test."""
        if self.shared_template:
            return self.shared_template
        if self._template is None:
            name = "ordersync_tpl_%d" % os.getpid()
            with self.admin() as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}"')
                c.execute(f'CREATE DATABASE "{name}"')
            run_ordersync(["migrate"], with_dbname(self.url, name), check=True)
            self._template = name
        return self._template

    def _create(self, migrated):
        name = "t_" + uuid.uuid4().hex[:12]
        with self.admin() as c:
            if migrated:
                # FILE_COPY: the template's files copied as they are, where
                # PostgreSQL 15's default (WAL_LOG) writes each of its pages
                # through the WAL: 0.05 s of the server's time a copy rather
                # than 0.3 s, for the ~230 databases of a run. The checkpoint
                # it takes first costs little without fsync (TEST_PG_OPTS).
                strategy = " STRATEGY FILE_COPY" if c.info.server_version >= 150000 else ""
                c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template()}"{strategy}')
            else:
                c.execute(f'CREATE DATABASE "{name}"')
            # No JIT: on these small, unanalysed tables the views' estimates pass
            # jit_above_cost, and every read of one (a test polls them) spent
            # 0.5-3 s compiling. Results are the same with or without it.
            c.execute(f'ALTER DATABASE "{name}" SET jit = off')
        return name

    def _drop(self, name):
        try:
            with self.admin() as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass  # the cluster went away (a test's own cluster): nothing is left to drop

    def _worker(self):
        if self._work is None:
            self._work = concurrent.futures.ThreadPoolExecutor(1, "ordersync-db")
        return self._work

    def new_db(self, migrated=True, ahead=False):
        """A new database. CREATE DATABASE and DROP DATABASE take seconds on a
        busy machine (a copy of the template written through the WAL; a
        checkpoint), so with `ahead` (the next test needs one too) the next
        migrated one is made while this test runs, and drop_db drops behind."""
        if not migrated:
            return self._create(False)
        ready, self._ready = self._ready, None
        name = ready.result() if ready is not None else self._create(True)
        if ahead:
            self._ready = self._worker().submit(self._create, True)
        return name

    def drop_db(self, name):
        self._worker().submit(self._drop, name)

    def finish(self):
        """At the end of the session: the database made ahead, the pending
        drops, then the template."""
        if self._ready is not None:
            self.drop_db(self._ready.result())
            self._ready = None
        if self._work is not None:
            self._work.shutdown(wait=True)
            self._work = None
        if self._template is not None:
            self._drop(self._template)
            self._template = None


# The test clusters' servers write without fsync: an fsync makes a commit wait
# for the disk, which on a machine running tests side by side (and other work)
# queued behind everyone's writes, and CREATE DATABASE, checkpoints and initdb
# the same. What ordersync sees is unchanged: a commit still returns only once
# its WAL is written, and a PostgreSQL crash or `pg_ctl stop -m immediate` (the
# failover tests) loses nothing the kernel holds; only a crash of the machine
# itself would, which no test makes. Not synchronous_commit = off: that would
# lose acknowledged commits in exactly those tests. scripts/test starts its
# cluster so too.
TEST_PG_OPTS = "-c fsync=off -c full_page_writes=off"


def pg_script(*args, env=None):
    """scripts/pg; a cluster it starts runs with TEST_PG_OPTS."""
    e = dict(env or os.environ)
    e.setdefault("ORDERSYNC_PG_OPTS", TEST_PG_OPTS)
    return subprocess.run([os.path.join(REPO, "scripts", "pg"), *args], check=True,
                          capture_output=True, text=True, env=e).stdout.strip()


@pytest.fixture(scope="session")
def cluster():
    url = os.environ.get("DATABASE_URL")
    if url:
        # the template scripts/test migrated in that cluster, if any
        c = Cluster(url, shared_template=os.environ.get("ORDERSYNC_TEST_TEMPLATE"))
        yield c
        c.finish()
        return
    d = tempfile.mkdtemp(prefix="ordersync-pg-")
    os.chmod(d, 0o755)
    url = pg_script("start", d)
    c = Cluster(url, own_dir=d)
    yield c
    c.finish()
    pg_script("destroy", d)


class Database:
    """A test's database. query() and scalar() run each statement on their own
    (autocommit) on one connection kept for the test: tests poll the views
    every 50 ms, and a new connection for each poll cost PostgreSQL ~60 ms of
    CPU (a backend, then its caches for the views' tables and partitions),
    more than a core for each waiting test. Statements are not prepared,
    so a schema change between two runs of one is seen as before."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.url = with_dbname(cluster.url, name)
        self._conn = None
        self._lock = threading.Lock()

    def connect(self):
        return psycopg.connect(self.url, autocommit=True)

    def _run(self, sql, params):
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=None)
        cur = self._conn.execute(sql, params)
        return cur.fetchall() if cur.description else None

    def query(self, sql, params=None):
        with self._lock:
            try:
                return self._run(sql, params)
            except psycopg.OperationalError:
                # the connection broke: a test stopped and started the server
                # since the last statement. Once more, on a new connection, as
                # when every statement had one (no test writes through it while
                # it stops the server)
                if self._conn is None or not self._conn.broken:
                    raise
                self._conn.close()
                return self._run(sql, params)

    def close(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def scalar(self, sql, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None


@pytest.fixture
def db(request, cluster):
    following = NEXT_TEST.get(request.node)
    name = cluster.new_db(ahead=following is not None and "db" in following.fixturenames)
    d = Database(cluster, name)
    yield d
    d.close()
    cluster.drop_db(name)


@pytest.fixture
def empty_db(cluster):
    name = cluster.new_db(migrated=False)
    d = Database(cluster, name)
    yield d
    d.close()
    cluster.drop_db(name)


def run_ordersync(args, database_url, check=False, env=None, timeout=60):
    e = dict(os.environ)
    e["DATABASE_URL"] = database_url
    e.update(env or {})
    p = subprocess.run([BIN, *args], env=e, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"ordersync {args} failed ({p.returncode}): {p.stderr}")
    return p


# Ports for servers a test starts itself (PostgreSQL nodes, admin listeners):
# below the kernel's ephemeral range (32768-60999 by default), so that no
# outgoing connection of a test running beside this one can take the port
# between the moment it is picked and the moment the server binds it.
FREE_PORTS = (20000, 32000)


def free_port():
    """A port nothing listens on now, from FREE_PORTS, picked at random: tests
    run in parallel, and a random pick makes two runs asking at the same
    moment unlikely to get the same one."""
    for _ in range(200):
        port = random.randint(*FREE_PORTS)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise AssertionError("no free port in %d-%d" % FREE_PORTS)


class Process:
    """A running ordersync; its JSON log lines are collected in `logs`."""

    def __init__(self, database_url, env=None, args=("serve",), wrapper=()):
        self.database_url = database_url
        self.wrapper = list(wrapper)  # e.g. ["ip", "netns", "exec", NAME]: it execs the binary
        self.env = dict(os.environ)
        self.env.update({"DATABASE_URL": database_url, "ORDERSYNC_LISTEN": "127.0.0.1:0",
                         "ORDERSYNC_LOG_LEVEL": "debug"})
        self.env.update(env or {})
        self.args = args
        self.logs = []
        self.port = None
        self.proc = None
        self._listening = threading.Event()

    def start(self, timeout=15):
        self.logs = []
        self._listening.clear()
        self.proc = subprocess.Popen([*self.wrapper, BIN, *self.args], env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        reader.start()
        deadline = time.time() + timeout
        while not self._listening.wait(0.05):
            # a process that exited will not listen: say so now, not at the timeout
            # (its last lines are read once its stderr ends)
            if self.proc.poll() is not None:
                reader.join(5)
            if self.proc.poll() is not None or time.time() >= deadline:
                self.stop()
                raise AssertionError("ordersync did not start:\n"
                                     + "\n".join(map(str, self.logs)))
        return self

    def _read(self, proc):
        for line in proc.stderr:
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {"raw": line.rstrip()}
            self.logs.append(rec)
            if rec.get("msg") == "listening":
                self.port = rec["port"]
                self._listening.set()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                st, _, _ = request(self.port, "GET", "/readyz")
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("ordersync not ready:\n" + "\n".join(map(str, self.logs[-20:])))

    def stop(self, sig=15, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def log_lines(self, msg):
        return [r for r in self.logs if r.get("msg") == msg]

    def wait_log(self, pred, timeout=30):
        """The log lines for which pred is true, once there is one: the log is
        read by a thread, so a line may come a moment after what caused it."""
        deadline = time.time() + timeout
        while True:
            found = [r for r in list(self.logs) if pred(r)]
            if found or time.time() >= deadline:
                return found
            time.sleep(0.05)


def request(port, method, path, body=None, headers=None, timeout=10):
    """One HTTP request on a new connection; returns (status, headers, body bytes)."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


@pytest.fixture
def ordersync(db):
    procs = []

    def start(env=None, database=None):
        p = Process((database or db).url, env=env).start()
        procs.append(p)
        p.wait_ready()
        return p

    yield start
    for p in procs:
        p.stop()


def marker_args(request, name, default=()):
    m = request.node.get_closest_marker(name)
    return (m.args, m.kwargs) if m else (default, {})


@pytest.fixture
def receivers(request):
    names, _ = marker_args(request, "receivers", DESTS)
    rs = {n: Receiver(n) for n in names}
    yield rs
    for r in rs.values():
        r.close()


@pytest.fixture
def stack(request, db, receivers):
    """stack(env=None) starts one more ordersync (a 1 s sweep and a 5 s lease
    unless env says otherwise) and returns it; stack.procs lists them."""
    _, columns = marker_args(request, "stack")
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    names = ", ".join(columns)
    values = "".join(", %s" for _ in columns)
    for n, r in receivers.items():
        db.query(f"INSERT INTO destinations (id, url, secret{', ' + names if names else ''})"
                 f" VALUES (%s, %s, %s{values})", (n, r.url, wh.DEST_SECRET, *columns.values()))
    procs = []

    def start(env=None):
        e = {"ORDERSYNC_SWEEP_INTERVAL_S": "1", "ORDERSYNC_LEASE_S": "5"}
        e.update(env or {})
        p = Process(db.url, env=e).start()
        p.wait_ready()
        procs.append(p)
        return p

    start.procs = procs
    yield start
    for p in procs:
        p.stop(sig=9)


def pipeline(port, reqs, timeout=30):
    """Sends every (method, path, headers, body) in one write on one connection
    (HTTP/1.1 pipelining) and returns [(status, headers, body)] in order."""
    raw = b""
    for method, path, headers, body in reqs:
        body = body or b""
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw += ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(raw)
    buf = b""
    out = []
    while len(out) < len(reqs):
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed after {len(out)} responses")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(buf) < n:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError("connection closed mid-body")
            buf += chunk
        out.append((status, headers, buf[:n]))
        buf = buf[n:]
    s.close()
    return out
