"""Helpers for the high-availability tests (test_failover.py,
test_partition.py): real PostgreSQL servers made with the system's binaries
(a primary with a synchronous streaming standby, a pg_auto_failover
formation), network namespaces, and a load generator that sends signed
orders at a steady rate and records every answer. Nothing here mocks
ordersync or PostgreSQL."""
import ctypes
import datetime
import glob
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

import webhooks as wh
from conftest import FIXTURES, Process, free_port
from receiver import wait_for

IS_ROOT = os.geteuid() == 0
TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))
DESTS = ("inventory", "invoicing", "shipping")


def pg_bindir():
    """The newest installed PostgreSQL server binaries (like scripts/pg)."""
    dirs = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(d + "/pg_ctl")]
    dirs.sort(key=lambda d: int(d.split("/")[4]), reverse=True)
    return dirs[0] if dirs else None


BINDIR = pg_bindir()


def run(cmd, netns=None, as_postgres=False, env=None, timeout=120, check=True):
    """Runs a command, as the postgres user when root (initdb refuses root),
    inside a network namespace when asked."""
    if as_postgres and IS_ROOT:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def make_base_dir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    if IS_ROOT:
        shutil.chown(d, "postgres", "postgres")
    return d


def log_time(rec):
    """A log line's own timestamp (ordersync writes UTC with milliseconds), as epoch seconds."""
    t = datetime.datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


class Node:
    """One PostgreSQL server in its own directory under `base`. With
    managed=False another tool (pg_autoctl) makes and runs it there: only
    the address is known, and there is no socket directory of ours."""

    def __init__(self, base, name, listen="127.0.0.1", netns=None, managed=True):
        self.dir = os.path.join(base, name)
        self.data = os.path.join(self.dir, "data") if managed else self.dir
        self.log = os.path.join(self.dir, "server.log")
        self.host = listen.split(",")[0]
        self.listen = listen
        self.netns = netns
        self.port = free_port()
        self.socket_dir = self.dir if managed else None
        if managed:
            os.makedirs(self.dir)
            if IS_ROOT:
                shutil.chown(self.dir, "postgres", "postgres")

    def _conf(self, settings):
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            for k, v in settings.items():
                f.write(f"{k} = '{v}'\n")

    def init(self, settings=None, hba=()):
        # --no-sync and fsync off: see TEST_PG_OPTS in conftest.py
        run([BINDIR + "/initdb", "-D", self.data, "-U", "ordersync", "--auth=trust", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync"], as_postgres=True)
        # jit off: see Cluster.new_db in conftest.py
        conf = {"listen_addresses": self.listen, "port": self.port,
                "unix_socket_directories": self.dir, "max_connections": 60,
                "shared_buffers": "64MB", "log_min_messages": "warning", "jit": "off",
                "log_line_prefix": "%m [%p] ", "fsync": "off", "full_page_writes": "off"}
        conf.update(settings or {})
        self._conf(conf)
        if hba:
            with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
                f.write("".join(line + "\n" for line in hba))
        return self

    def init_standby(self, primary, settings=None):
        """A streaming replica of `primary` (pg_basebackup -R writes its primary_conninfo)."""
        run([BINDIR + "/pg_basebackup", "-h", primary.host, "-p", str(primary.port), "-U",
             "ordersync", "-D", self.data, "-R", "-X", "stream", "--checkpoint=fast",
             "--no-sync"],
            as_postgres=True)
        conf = {"port": self.port, "unix_socket_directories": self.dir}
        conf.update(settings or {})
        self._conf(conf)
        return self

    def start(self):
        run([BINDIR + "/pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start"],
            netns=self.netns, as_postgres=True)
        return self

    def stop(self, mode="fast"):
        run([BINDIR + "/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], as_postgres=True,
            check=False)

    def promote(self):
        run([BINDIR + "/pg_ctl", "-D", self.data, "-w", "-t", "60", "promote"], as_postgres=True)

    def url(self, db="ordersync"):
        return f"postgresql://ordersync@{self.host}:{self.port}/{db}"

    def local_url(self, db="ordersync"):
        """Over the Unix socket when there is one: reachable from any network namespace."""
        if self.socket_dir is None:
            return self.url(db)
        return f"postgresql://ordersync@/{db}?host={self.socket_dir}&port={self.port}"

    def connect(self, db="ordersync", **kw):
        return psycopg.connect(self.local_url(db), autocommit=True, **kw)

    def query(self, sql, params=None, db="ordersync"):
        with self.connect(db) as c:
            cur = c.execute(sql, params)
            return cur.fetchall() if cur.description else None

    def server_log(self):
        try:
            return open(self.log).read()[-4000:]
        except OSError:
            return ""


def seed(node, receivers=None, db="ordersync"):
    """A Shopify source and the receivers as destinations, on a fresh migrated database."""
    node.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
               (wh.SHOPIFY_SECRET,), db=db)
    for n, r in (receivers or {}).items():
        node.query("INSERT INTO destinations (id, url, secret, retry_schedule, timeout_ms)"
                   " VALUES (%s, %s, %s, '{0.2 seconds, 0.5 seconds, 1 second}', 1000)",
                   (n, r.url, wh.DEST_SECRET), db=db)


# ------------------------------------------------------------------ network namespaces

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def enter_netns(name):
    """Moves the calling thread (only it: network namespaces are per thread)
    into a namespace made with `ip netns add`."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({name}): {os.strerror(e)}")
    finally:
        os.close(fd)


def in_netns(name, fn, *args):
    """Runs fn(*args) on a thread inside namespace `name`; returns its result."""
    out = {}

    def body():
        try:
            if name:
                enter_netns(name)
            out["value"] = fn(*args)
        except BaseException as e:  # handed to the caller
            out["error"] = e
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


# ------------------------------------------------------------------ load

def order_body(oid):
    o = dict(TEMPLATE)
    o["id"] = oid
    o["updated_at"] = "2026-01-02T03:04:05Z"
    return wh.dumps(o)


def post_order(host, port, oid, timeout):
    body = order_body(oid)
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("POST", "/webhooks/shop", body=body, headers=wh.shopify(body))
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("Retry-After")
    finally:
        c.close()


def get(host, port, path, timeout=5):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Load:
    """Sends one new signed Shopify order every 1/rate s from `threads`
    senders (each order once: the assertions are about what was acknowledged)
    and records (oid, sent, answered, status, Retry-After or error) for each."""

    def __init__(self, host, port, rate=200, threads=8, first_oid=1_000_000, timeout=20,
                 netns=None):
        self.host, self.port, self.rate, self.timeout = host, port, rate, timeout
        self.netns = netns
        self.results = []
        self.lock = threading.Lock()
        self.next = 0
        self.first_oid = first_oid
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def start(self):
        self.t0 = time.time()
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    def _run(self):
        if self.netns:
            enter_netns(self.netns)
        while not self.stopping.is_set():
            with self.lock:
                n = self.next
                self.next += 1
            delay = self.t0 + n / self.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            oid = self.first_oid + n
            rec = {"oid": str(oid), "sent": time.time()}
            try:
                rec["status"], rec["retry_after"] = post_order(self.host, self.port, oid,
                                                               self.timeout)
            except OSError as e:
                rec["status"], rec["error"] = None, repr(e)
            rec["answered"] = time.time()
            with self.lock:
                self.results.append(rec)

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def acked(self):
        return {r["oid"] for r in self.snapshot() if r["status"] and 200 <= r["status"] < 300}

    def count_acked_since(self, t):
        return sum(1 for r in self.snapshot()
                   if r["status"] and 200 <= r["status"] < 300 and r["answered"] >= t)

    def first_ack_after(self, t):
        times = [r["answered"] for r in self.snapshot()
                 if r["status"] and 200 <= r["status"] < 300 and r["answered"] >= t]
        return min(times) if times else None

    def wait_acks(self, n, after, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.count_acked_since(after) >= n:
                return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {n} acks in {timeout} s: {self.summary()}")

    def summary(self):
        by = {}
        for r in self.snapshot():
            k = r["status"] if r["status"] else r.get("error", "?")[:40]
            by[k] = by.get(k, 0) + 1
        return by


def assert_only_acks_or_retry_later(load):
    """Every answer is a 2xx or a 503 that tells the sender when to come back."""
    for r in load.snapshot():
        assert r["status"] is not None, r
        assert r["status"] == 200 or (r["status"] == 503 and r["retry_after"]), r


def assert_acked_orders_committed(node, acked, db="ordersync"):
    stored = {x for (x,) in node.query("SELECT external_id FROM orders WHERE source_id = 'shop'",
                                       db=db)}
    lost = acked - stored
    assert not lost, f"{len(lost)} acknowledged orders are missing, e.g. {sorted(lost)[:5]}"


def delivered(receiver):
    return {r["json"]["data"]["external_id"] for r in receiver.accepted()
            if r.get("json", {}).get("type") == "order.created"}


def warnings(p):
    """What ordersync warned about, counted (for the test's own output)."""
    seen = {}
    for r in p.logs:
        if r.get("level") in ("warn", "error"):
            k = (r.get("msg"), r.get("sqlstate") or (r.get("detail") or "")[:70])
            seen[k] = seen.get(k, 0) + 1
    return seen


# ------------------------------------------------------------------ failover scenarios

# The promise is acks within 5 s of the promotion (a reconnect backoff of at most 1 s, lib/db.c);
# on a quiet machine they resume in 1-3 s. A test asserts no timing it cannot keep on a busy shared
# machine: 15 s still tells a reconnect that waits for something (a TCP timeout, a growing backoff,
# a stale address) from a slow one, and the figure is printed with the others.
ACK_RESUME_S = 15
DELIVERY_TIMEOUT_S = 90  # a lease of 6 s plus the sweep, with a lot of room for a busy machine


@pytest.fixture
def base():
    """A directory for the servers of one test, removed after it."""
    d = make_base_dir("ordersync-failover-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cleanup():
    """Things to undo however the test ends, last first."""
    todo = []
    yield todo
    for fn in reversed(todo):
        try:
            fn()
        except Exception as e:  # keep cleaning up
            print("cleanup:", repr(e))


def ha_url(*nodes, host=None):
    """The pair's multi-host URL; `host` names every node by that name instead of its address."""
    hosts = ",".join(f"{host or n.host}:{n.port}" for n in nodes)
    return f"postgresql://ordersync@{hosts}/ordersync?target_session_attrs=read-write"


def start_ordersync(url, cleanup):
    # ORDERSYNC_LEASE_S is the shortest allowed; a claimed row's lease is a
    # destination's timeout (1 s) + that: rows claimed on the old primary just
    # before it died wait 6 s on the new one
    p = Process(url, env={"ORDERSYNC_SWEEP_INTERVAL_S": "1", "ORDERSYNC_LEASE_S": "5",
                          "ORDERSYNC_LOG_LEVEL": "info"})
    cleanup.append(lambda: p.stop(sig=9))
    p.start()
    p.wait_ready(timeout=20)
    return p


def ride_through(p, load, promote, new_primary, receivers):
    """Runs the load across `promote()`, which returns the time the promotion
    counts from, and checks every promise; returns the numbers."""
    load.start()
    load.wait_acks(200, after=load.t0, timeout=20)  # steady state first
    t_promoted = promote()
    wait_for(lambda: load.first_ack_after(t_promoted), timeout=30, what="an ack after promotion")
    resume_s = load.first_ack_after(t_promoted) - t_promoted
    load.wait_acks(200, after=t_promoted, timeout=20)  # and it keeps acking
    load.stop()
    assert resume_s <= ACK_RESUME_S, f"first ack {resume_s:.2f} s after the promotion"

    assert_only_acks_or_retry_later(load)
    acked = load.acked()
    assert_acked_orders_committed(new_primary, acked)
    assert [r for r in p.log_lines("database connected") if r.get("port") == str(new_primary.port)], \
        "ordersync never logged a connection to the new primary"

    def all_delivered():
        return all(acked <= delivered(r) for r in receivers.values())
    t0 = time.time()
    wait_for(all_delivered, timeout=DELIVERY_TIMEOUT_S, interval=0.5,
             what="every acknowledged order at every receiver")
    t1 = time.time()
    # and the new primary knows it: nothing stays claimed by the dead server's leases
    wait_for(lambda: new_primary.query("SELECT bool_and(fully_synced) FROM order_sync")[0][0],
             timeout=DELIVERY_TIMEOUT_S, interval=0.5, what="every order synced on the new primary")
    stats = {"sent": len(load.snapshot()), "acked": len(acked), "answers": load.summary(),
             "resume_s": round(resume_s, 2), "delivered_after_s": round(t1 - t0, 1),
             "synced_after_s": round(time.time() - t0, 1)}
    print("failover:", stats)
    print("warnings:", warnings(p))
    # connections that moved between servers still close cleanly (leak-checked under ASan)
    assert p.stop(sig=15) == 0
    return stats
