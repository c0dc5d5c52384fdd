"""ordersync survives a database failover: ordersync on a primary-standby
pair's multi-host URL with target_session_attrs=read-write, orders arriving
at ~200/s while the primary goes away and the standby is promoted.

Here a pg_auto_failover formation (a monitor and two nodes under pg_autoctl
run, synchronous by its defaults) performs the failover; test_failover.py
does it by hand. The promises checked are the same (pgha.ride_through):
acks soon after the promotion (5 s promised, 15 s allowed a busy machine),
nothing acknowledged that is not on the new primary, every acknowledged
order at every receiver."""
import os
import shutil
import signal
import subprocess
import threading
import time

import psycopg
import pytest

import pgha
from conftest import free_port, run_ordersync
from pgha import base, cleanup  # noqa: F401 (fixtures)
from receiver import wait_for

pytestmark = pytest.mark.skipif(pgha.BINDIR is None, reason="PostgreSQL server binaries missing")

PG_AUTOCTL = shutil.which("pg_autoctl")


class Formation:
    """A pg_auto_failover monitor and its nodes, each under `pg_autoctl run`."""

    def __init__(self, base):
        self.base = base
        self.env = dict(os.environ)
        # pg_autoctl keeps its state under XDG dirs: keep them in the test's directory
        self.env.update({"PATH": pgha.BINDIR + ":" + os.environ.get("PATH", ""),
                         "XDG_CONFIG_HOME": os.path.join(base, "config"),
                         "XDG_DATA_HOME": os.path.join(base, "share"),
                         "XDG_RUNTIME_DIR": os.path.join(base, "run")})
        self.monitor_port = free_port()
        self.procs = []
        self.nodes = []

    def _cmd(self, args):
        cmd = [PG_AUTOCTL, *args]
        if pgha.IS_ROOT:
            cmd = ["runuser", "-u", "postgres", "--", "env",
                   *[f"{k}={self.env[k]}" for k in ("PATH", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                                                     "XDG_RUNTIME_DIR")], *cmd]
        return cmd

    def _spawn(self, name, args):
        log = open(os.path.join(self.base, name + ".log"), "w")
        p = subprocess.Popen(self._cmd(args), stdout=log, stderr=subprocess.STDOUT,
                             env=self.env, start_new_session=True)
        self.procs.append((name, p))
        return p

    def log(self, name):
        try:
            return open(os.path.join(self.base, name + ".log")).read()[-3000:]
        except OSError:
            return ""

    def start_monitor(self):
        mon = os.path.join(self.base, "monitor")
        subprocess.run(self._cmd(["create", "monitor", "--pgdata", mon, "--pgport",
                                  str(self.monitor_port), "--hostname", "127.0.0.1", "--auth",
                                  "trust", "--no-ssl"]), env=self.env, check=True,
                       capture_output=True, timeout=60)
        self._spawn("monitor", ["run", "--pgdata", mon])
        wait_for(lambda: self._monitor_up(), timeout=30, what="the monitor")

    def _monitor_up(self):
        try:
            self.states()
            return True
        except psycopg.Error:
            return False

    def monitor_url(self):
        return f"postgresql://autoctl_node@127.0.0.1:{self.monitor_port}/pg_auto_failover"

    def states(self):
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.monitor_port}/"
                             "pg_auto_failover", connect_timeout=2) as c:
            return {port: (rep, goal) for port, rep, goal in c.execute(
                "SELECT nodeport, reportedstate::text, goalstate::text FROM pgautofailover.node")}

    def add_node(self, name):
        node = pgha.Node(self.base, name, managed=False)
        self._spawn(name, ["create", "postgres", "--pgdata", node.data, "--pgport",
                           str(node.port), "--hostname", "127.0.0.1", "--auth", "trust",
                           "--no-ssl", "--monitor", self.monitor_url(), "--dbname", "ordersync",
                           "--username", "ordersync", "--pgctl", pgha.BINDIR + "/pg_ctl",
                           "--run"])
        self.nodes.append(node)
        return node

    def wait_state(self, node, state, timeout=60, while_waiting=None):
        def reached():
            if while_waiting:
                while_waiting()
            try:
                return self.states().get(node.port) == (state, state)
            except psycopg.Error:
                return False
        try:
            wait_for(reached, timeout=timeout, interval=0.5, what=f"{node.port} {state}")
        except AssertionError:
            raise AssertionError(f"node {node.port} never became {state}: {self._safe_states()}\n"
                                 + "\n".join(self.log(n) for n, _ in self.procs))

    def _safe_states(self):
        try:
            return self.states()
        except psycopg.Error as e:
            return repr(e)

    def failover(self):
        subprocess.run(self._cmd(["perform", "failover", "--pgdata",
                                  os.path.join(self.base, "monitor")]),
                       env=self.env, check=True, capture_output=True, timeout=60)

    def stop(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                # the pg_autoctl process group: SIGQUIT is its immediate shutdown
                # (its Postgres too): the test is over and the directory goes, so
                # nothing waits for a transition or a checkpoint to finish (SIGTERM
                # took 9 s)
                try:
                    os.killpg(p.pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
        for name, p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for d in [n.data for n in self.nodes] + [os.path.join(self.base, "monitor")]:
            if os.path.exists(os.path.join(d, "postmaster.pid")):
                pgha.run([pgha.BINDIR + "/pg_ctl", "-D", d, "-m", "immediate", "-w", "stop"],
                         as_postgres=True, check=False)


def writable(node):
    """True once `node` accepts a read-write session (what ordersync waits for)."""
    try:
        with psycopg.connect(f"postgresql://ordersync@127.0.0.1:{node.port}/ordersync"
                             "?target_session_attrs=read-write", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


@pytest.mark.skipif(PG_AUTOCTL is None,
                    reason="pg_autoctl not installed (scripts/install-deps installs "
                           "postgresql-15-auto-failover and pg-auto-failover-cli)")
def test_pg_auto_failover_takes_over(base, receivers, cleanup):
    f = Formation(base)
    cleanup.append(f.stop)
    f.start_monitor()
    n1 = f.add_node("node1")
    f.wait_state(n1, "single")
    run_ordersync(["migrate"], n1.url(), check=True)
    pgha.seed(n1, receivers)
    n2 = f.add_node("node2")

    # pg_autoctl's pg_basebackup waits for a checkpoint; without a push that
    # is the next timed one, minutes away
    def checkpoint():
        try:
            n1.query("CHECKPOINT")
        except psycopg.Error:
            pass
    f.wait_state(n2, "secondary", timeout=90, while_waiting=checkpoint)
    f.wait_state(n1, "primary")
    assert n1.query("SHOW synchronous_standby_names")[0][0] != "", \
        "pg_auto_failover runs the pair with a synchronous standby"

    p = pgha.start_ordersync(pgha.ha_url(n1, n2), cleanup)
    load = pgha.Load("127.0.0.1", p.port, rate=200)
    cleanup.append(load.stop)

    done = threading.Event()
    err = []

    def promote():
        def run():
            try:
                f.failover()
            except Exception as e:
                err.append(e)
            done.set()
        threading.Thread(target=run, daemon=True).start()
        # promotion, for ordersync, is the moment node 2 takes read-write sessions
        wait_for(lambda: writable(n2), timeout=60, interval=0.05, what="node 2 promoted")
        return time.time()
    pgha.ride_through(p, load, promote, n2, receivers)
    # `perform failover` returns once node 1 has rejoined as the secondary: that
    # runs while ordersync rides through, not before
    assert done.wait(60), "pg_autoctl perform failover did not finish"
    assert not err, err
