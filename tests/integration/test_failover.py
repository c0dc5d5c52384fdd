"""ordersync survives a database failover: ordersync on a primary-standby
pair's multi-host URL with target_session_attrs=read-write, orders arriving
at ~200/s while the primary goes away and the standby is promoted.

Here the pair is made by hand (initdb, pg_basebackup -R, synchronous
replication): the primary crashes (pg_ctl stop -m immediate) and the standby
is promoted; or the primary stays up but stops taking writes (fenced) and the
standby is promoted. test_auto_failover.py has pg_auto_failover do it. A
last test gives ordersync a first host that accepts connections and never
answers, which must not hide the second.

What is proven, with the real binary, real servers and real receivers:
- acks resume soon after the promotion (the promise is 5 s; the test allows
  a busy machine 15 s, pgha.ACK_RESUME_S, and prints the figure);
- nothing is acknowledged that is not committed: every order that got a 2xx,
  before or after the failover, is on the new primary, and every other answer
  is 503 + Retry-After (the sender's retry is the recovery path);
- the relay carries on from the new primary: every acknowledged order reaches
  all three receivers, and every order ends fully synced in order_sync on the
  new primary. Rows claimed on the old primary just before it died come back
  when their lease runs out (at least 30 s today, see the relay's lease
  floor), so the test allows for that."""
import socket
import time

import pytest

import pgha
from conftest import run_ordersync
from pgha import base, cleanup  # noqa: F401 (fixtures)
from receiver import wait_for

pytestmark = pytest.mark.skipif(pgha.BINDIR is None, reason="PostgreSQL server binaries missing")


def sync_pair(base, receivers, cleanup):
    """A primary with the schema and a synchronous streaming standby."""
    primary = pgha.Node(base, "primary").init().start()
    cleanup.append(lambda: primary.stop("immediate"))
    primary.query("CREATE DATABASE ordersync", db="postgres")
    run_ordersync(["migrate"], primary.url(), check=True)
    pgha.seed(primary, receivers)
    # once promoted it is alone: it must not wait for a standby of its own
    standby = pgha.Node(base, "standby").init_standby(primary, {"synchronous_standby_names": ""})
    standby.start()
    cleanup.append(lambda: standby.stop("immediate"))
    # synchronous from now on (before, CREATE DATABASE would have waited for a standby)
    primary.query("ALTER SYSTEM SET synchronous_standby_names = '*'")
    primary.query("SELECT pg_reload_conf()")
    wait_for(lambda: primary.query("SELECT 1 FROM pg_stat_replication WHERE sync_state = 'sync'"),
             what="a synchronous standby")
    return primary, standby


def test_promoted_standby_takes_over(base, receivers, cleanup):
    primary, standby = sync_pair(base, receivers, cleanup)
    # by name: each attempt resolves both hosts off the loop (localhost may also give ::1,
    # where nothing listens: libpq moves on to the next address)
    p = pgha.start_ordersync(pgha.ha_url(primary, standby, host="localhost"), cleanup)
    load = pgha.Load("127.0.0.1", p.port, rate=200)
    cleanup.append(load.stop)

    def promote():
        primary.stop("immediate")  # a crash: no shutdown checkpoint, connections cut
        t = time.time()  # counted from the request: pg_ctl -w polls, and is late by up to 0.1 s
        standby.promote()
        return t
    pgha.ride_through(p, load, promote, standby, receivers)


def test_fenced_primary_is_left_for_the_promoted_standby(base, receivers, cleanup):
    """A switchover where the old primary stays up but stops taking writes
    (fenced with default_transaction_read_only, as pg_auto_failover does, or
    demoted in place): ordersync's open connections to it must not stay
    there answering every order with an error."""
    primary, standby = sync_pair(base, receivers, cleanup)
    p = pgha.start_ordersync(pgha.ha_url(primary, standby), cleanup)
    load = pgha.Load("127.0.0.1", p.port, rate=200)
    cleanup.append(load.stop)

    def promote():
        primary.query("ALTER SYSTEM SET default_transaction_read_only = on")
        primary.query("SELECT pg_reload_conf()")
        # commits already waiting for the standby finish before it stops replicating
        wait_for(lambda: [r for r in load.snapshot() if r["status"] == 503
                          and r["sent"] > time.time() - 1], timeout=10, what="writes refused")
        t = time.time()
        standby.promote()
        return t
    stats = pgha.ride_through(p, load, promote, standby, receivers)
    assert stats["answers"].get(503), "the fence was noticed"


def test_a_hung_first_host_is_passed_over(base, receivers, cleanup):
    """The first host of the list accepts TCP connections and then says
    nothing (a hung server, a half-dead machine): the kernel never times the
    attempt out, libpq's connect_timeout does not apply to PQconnectPoll(),
    so ordersync's own per-address timeout must end it and the next attempt
    must start with the other host."""
    primary = pgha.Node(base, "primary").init().start()
    cleanup.append(lambda: primary.stop("immediate"))
    primary.query("CREATE DATABASE ordersync", db="postgres")
    run_ordersync(["migrate"], primary.url(), check=True)
    pgha.seed(primary, receivers)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # never accepted: the kernel completes handshakes and acknowledges data
    cleanup.append(hole.close)
    url = (f"postgresql://ordersync@127.0.0.1:{hole.getsockname()[1]},127.0.0.1:{primary.port}"
           "/ordersync?target_session_attrs=read-write&connect_timeout=2")
    p = pgha.Process(url, env={"ORDERSYNC_DB_CONNECT_TIMEOUT_S": "2",
                               "ORDERSYNC_LOG_LEVEL": "info"})
    cleanup.append(lambda: p.stop(sig=9))
    t0 = time.time()
    p.start(timeout=20)  # the start-up connection: libpq's own per-host timeout
    p.wait_ready(timeout=20)
    ready_s = time.time() - t0
    timeouts = [r for r in p.logs if "timeout expired while connecting" in r.get("detail", "")]
    print("hung first host:", {"ready_s": round(ready_s, 2), "timeouts": len(timeouts)})
    assert timeouts, "the hung host was given up by the timeout"
    assert {r["port"] for r in p.log_lines("database connected")} == {str(primary.port)}
    assert pgha.post_order("127.0.0.1", p.port, 424242, timeout=10)[0] == 200
    assert p.stop(sig=15) == 0
