"""ordersync across a network partition from its database.

ordersync runs in a network namespace of its own, PostgreSQL and the test's
senders in another, joined by a veth pair on a private /30 that exists only
inside those two namespaces. While orders arrive at ~200/s, iptables rules
inside ordersync's namespace silently drop every packet to and from
PostgreSQL for 20 s (no RST, no ICMP: a dead switch, a yanked cable), then go
away. What is proven:
- no 2xx while the database is unreachable: every answer is 2xx only for a
  commit, else 503 + Retry-After (never a hang past the client's patience);
- the dead peer is detected within 10 s on every connection, by the TCP
  keepalive / tcp_user_timeout defaults surfacing as a socket error
  ("Connection timed out"), and /readyz turns 503;
- acks resume soon after healing (5 s promised; 15 s allowed a busy machine);
- nothing acknowledged is lost.
Needs root (namespaces, veth, iptables); everything it creates is removed
however it ends."""
import os
import shutil
import threading
import time

import pytest

import pgha
from conftest import Process, run_ordersync
from receiver import wait_for

PARTITION_S = 20
DETECT_S = 10  # promise: a dead peer is noticed within 10 s
RESUME_S = 15  # promise: 5 s after healing; the bound leaves a busy machine room (pgha.ACK_RESUME_S)
# answers read within this long after the cut may be commits that completed just before it
IN_FLIGHT_S = 0.5

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: creates network namespaces, veth devices and "
                              "iptables rules"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("iptables") is None,
                       reason="needs ip (iproute2) and iptables: scripts/install-deps"),
    pytest.mark.skipif(pgha.BINDIR is None, reason="PostgreSQL server binaries missing"),
]


class Net:
    """Two namespaces, `app` (ordersync) and `db` (PostgreSQL, the senders),
    and a veth pair between them on 10.x.y.0/30."""

    def __init__(self):
        tag = os.getpid() % 100000
        self.app, self.db = f"ordersync-app-{tag}", f"ordersync-db-{tag}"
        self.app_if, self.db_if = f"osapp{tag}", f"osdb{tag}"
        # any /30 will do: it exists only inside the two namespaces
        net = f"10.{200 + tag % 50}.{tag // 50 % 250}"
        self.db_addr, self.app_addr = f"{net}.1", f"{net}.2"
        self.rules = []
        self.created = []

    def up(self):
        for ns in (self.app, self.db):
            r = pgha.run(["ip", "netns", "add", ns], check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {r.stderr.strip()}")
            self.created.append(ns)
        pgha.run(["ip", "link", "add", self.app_if, "type", "veth", "peer", "name", self.db_if])
        pgha.run(["ip", "link", "set", self.app_if, "netns", self.app])
        pgha.run(["ip", "link", "set", self.db_if, "netns", self.db])
        for ns, dev, addr in ((self.app, self.app_if, self.app_addr),
                              (self.db, self.db_if, self.db_addr)):
            pgha.run(["ip", "-n", ns, "addr", "add", addr + "/30", "dev", dev])
            pgha.run(["ip", "-n", ns, "link", "set", dev, "up"])
            pgha.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return self

    def cut(self, port):
        """Drops ordersync's traffic with PostgreSQL, both ways, without a word."""
        self.rules = [["OUTPUT", "-d", self.db_addr, "-p", "tcp", "--dport", str(port)],
                      ["INPUT", "-s", self.db_addr, "-p", "tcp", "--sport", str(port)]]
        for rule in self.rules:
            pgha.run(["iptables", "-I", *rule, "-j", "DROP"], netns=self.app)

    def heal(self):
        for rule in self.rules:
            pgha.run(["iptables", "-D", *rule, "-j", "DROP"], netns=self.app, check=False)
        self.rules = []

    def down(self):
        self.heal()
        # deleting a namespace deletes its veth end (and so the pair) and its rules
        for ns in self.created:
            pgha.run(["ip", "netns", "del", ns], check=False)
        self.created = []


@pytest.fixture
def net():
    n = Net()
    try:
        yield n.up()
    finally:
        n.down()


@pytest.fixture
def base():
    d = pgha.make_base_dir("ordersync-partition-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class ReadyProbe:
    """GET /readyz every 0.2 s from the senders' side; records (time, status)."""

    def __init__(self, net, port):
        self.seen = []
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, args=(net, port), daemon=True)
        self.t.start()

    def _run(self, net, port):
        pgha.enter_netns(net.db)
        while not self.stop.is_set():
            try:
                st, _ = pgha.get(net.app_addr, port, "/readyz", timeout=2)
            except OSError:
                st = None
            self.seen.append((time.time(), st))
            time.sleep(0.2)

    def first(self, status, after):
        return next((t for t, st in self.seen if st == status and t >= after), None)


def test_partition_from_the_database(net, base):
    node = pgha.Node(base, "db", listen=net.db_addr, netns=net.db)
    procs = []
    try:
        node.init(hba=[f"host all all {net.app_addr}/32 trust"]).start()
        node.query("CREATE DATABASE ordersync", db="postgres")
        run_ordersync(["migrate"], node.local_url(), check=True)  # the Unix socket crosses namespaces
        pgha.seed(node)
        p = Process(node.url(), env={"ORDERSYNC_LISTEN": f"{net.app_addr}:0",
                                     "ORDERSYNC_LOG_LEVEL": "info",
                                     "ORDERSYNC_SWEEP_INTERVAL_S": "1"},
                    wrapper=["ip", "netns", "exec", net.app])
        procs.append(p)
        p.start()
        wait_for(lambda: pgha.in_netns(net.db, ready, net.app_addr, p.port), timeout=20,
                 what="ordersync ready")
        probe = ReadyProbe(net, p.port)
        load = pgha.Load(net.app_addr, p.port, rate=200, threads=16, netns=net.db, timeout=20)
        load.start()
        try:
            load.wait_acks(200, after=load.t0, timeout=20)
            t_cut = time.time()
            net.cut(node.port)
            # the rules are in place once iptables returns (a second or so on a busy machine)
            t_cut_done = time.time()
            time.sleep(PARTITION_S)
            net.heal()
            t_heal = time.time()
            wait_for(lambda: load.first_ack_after(t_heal), timeout=30, what="an ack after healing")
            load.wait_acks(200, after=t_heal, timeout=20)
        finally:
            load.stop()
            probe.stop.set()

        lost = [r for r in p.log_lines("database connection lost")
                if t_cut <= pgha.log_time(r) < t_heal]
        first_lost = {}
        for r in lost:
            first_lost.setdefault(r["db"], r)
        detect = {n: round(pgha.log_time(r) - t_cut, 2) for n, r in first_lost.items()}
        t_503 = probe.first(503, t_cut)
        resume_s = load.first_ack_after(t_heal) - t_heal
        stats = {"sent": len(load.snapshot()), "acked": len(load.acked()),
                 "answers": load.summary(), "detect_s": detect,
                 "readyz_503_s": round(t_503 - t_cut, 2) if t_503 else None,
                 "resume_s": round(resume_s, 2),
                 "details": sorted({r["detail"] for r in lost})}
        print("partition:", stats)

        # never a 2xx for what could not have been committed
        during = [r for r in load.snapshot() if r["status"] and 200 <= r["status"] < 300
                  and t_cut_done + IN_FLIGHT_S <= r["answered"] < t_heal]
        assert not during, f"{len(during)} acks while the database was unreachable: {during[:3]}"
        pgha.assert_only_acks_or_retry_later(load)
        pgha.assert_acked_orders_committed(node, load.acked())
        # every connection that was up noticed, in time, through the socket timing out
        was_up = {r["db"] for r in p.log_lines("database connected") if pgha.log_time(r) < t_cut}
        assert len(was_up) >= 3 and set(detect) >= was_up, (was_up, stats)
        assert max(detect.values()) <= DETECT_S, stats
        for r in first_lost.values():
            assert "timed out" in r["detail"].lower(), r
        assert t_503 is not None and t_503 - t_cut <= DETECT_S, stats
        assert resume_s <= RESUME_S, stats
        assert p.stop(sig=15) == 0  # and it still shuts down cleanly (leak-checked under ASan)
    finally:
        for pr in procs:
            pr.stop(sig=9)
        node.stop("immediate")


def ready(host, port):
    try:
        return pgha.get(host, port, "/readyz", timeout=2)[0] == 200
    except OSError:
        return False
