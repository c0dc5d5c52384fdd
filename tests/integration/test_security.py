"""Security, black box, as an attacker or an auditor would try it (issue 19,
README "Security"): guessing the admin token, sessions that outlive their
logout, the admin listener reached through DNS rebinding, what the public
port tells, the database roles and what each may read, feed tokens at rest,
secrets in webhook URLs, and the reason phrases on the wire."""
import copy
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid

import psycopg
import pytest

import webhooks as wh
from conftest import FIXTURES, REPO, Process, free_port, request, run_ordersync, with_dbname
from receiver import Receiver, wait_for

sys.path.insert(0, os.path.join(REPO, "services", "shopsim"))
from shopsim import Shop  # noqa: E402

TOKEN = "security-test-token-Zq8vR2mK7xW4"
FEED_TOKEN = "feed-token-0123456789abcdef"
TEMPLATE = json.load(open(os.path.join(FIXTURES, "shopify_order_create.json")))


class Admin:
    """An ordersync with an admin listener (and the console, given a token)."""

    def __init__(self, db_url, env=None, token=TOKEN):
        self.port = free_port()
        self.token = token
        e = {"ORDERSYNC_ADMIN_LISTEN": f"127.0.0.1:{self.port}", "ORDERSYNC_SWEEP_INTERVAL_S": "1"}
        if token:
            e["ORDERSYNC_ADMIN_TOKEN"] = token
        e.update(env or {})
        self.proc = Process(db_url, env=e)

    def start(self):
        self.proc.start()
        self.proc.wait_ready()
        return self

    def get(self, path, headers=None):
        return request(self.port, "GET", path, headers=headers)

    def api(self, path, token=None, headers=None):
        h = {"Authorization": f"Bearer {token or self.token}", **(headers or {})}
        return request(self.port, "GET", path, headers=h)

    def login(self, token=None, name="tester", headers=None):
        body = urllib.parse.urlencode({"token": token or self.token, "name": name})
        h = {"Content-Type": "application/x-www-form-urlencoded",
             "Origin": f"http://127.0.0.1:{self.port}", "Host": f"127.0.0.1:{self.port}"}
        h.update(headers or {})
        return request(self.port, "POST", "/console/login", body=body, headers=h)

    def session(self, name="tester", headers=None):
        """The Cookie header of a fresh login and its CSRF token."""
        st, hd, body = self.login(name=name, headers=headers)
        assert st == 303, (st, body)
        cookie = hd["set-cookie"].split(";")[0]
        st, _, body = self.get("/api/session", {"Cookie": cookie})
        assert st == 200, body
        return cookie, json.loads(body)["csrf"]

    def logout(self, cookie, csrf):
        return request(self.port, "POST", "/console/logout", body=f"csrf={csrf}",
                       headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{self.port}",
                                "Host": f"127.0.0.1:{self.port}",
                                "Content-Type": "application/x-www-form-urlencoded"})

    def wait_console(self):
        wait_for(lambda: self.api("/api/overview")[0] == 200, what="the console's connection")
        return self


@pytest.fixture
def admins(db):
    started = []

    def start(env=None, token=TOKEN, database=None):
        a = Admin(database or db.url, env, token).start()
        started.append(a)
        if token:
            a.wait_console()
        return a

    yield start
    for a in started:
        a.proc.stop()


def raw_status_line(port, method, path, headers=None, body=b""):
    """The status line exactly as sent (http.client would hide the reason phrase's text)."""
    h = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)), "Connection": "close"}
    h.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items()]
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.split(b"\r\n", 1)[0].decode()
    finally:
        s.close()


def read_feed(port, dest, token, query=""):
    """GET /feeds/dest; the feed's own database connection comes up a moment after /readyz."""
    def once():
        r = request(port, "GET", f"/feeds/{dest}{query}", headers={"Authorization": f"Bearer {token}"})
        return r if r[0] != 503 else None
    return wait_for(once, what="the feed's connection")


def send_order(port, oid, secret=wh.SHOPIFY_SECRET):
    o = copy.deepcopy(TEMPLATE)
    o["id"] = oid
    b = wh.dumps(o)
    st, _, resp = request(port, "POST", "/webhooks/shop", body=b, headers=wh.shopify(b, secret=secret))
    assert st == 200, resp
    return json.loads(resp)


# ---------------------------------------------------------------- 2: guessing the admin token

def test_wrong_logins_are_throttled_with_a_growing_wait(admins):
    a = admins()
    t0 = time.time()
    answers = [a.login(token=f"wrong-guess-number-{i:04d}") for i in range(40)]
    elapsed = time.time() - t0
    statuses = [st for st, _, _ in answers]
    # a few mistakes are a person's; then 429, and a guess is compared only once per wait
    # (1 s, 2 s, 4 s...: in t seconds about log2(t) more)
    assert statuses[:7] == [401] * 6 + [429], statuses
    assert statuses.count(401) <= 7 + int(elapsed).bit_length(), (statuses, elapsed)
    assert statuses.count(429) >= 40 - 7 - int(elapsed).bit_length()
    st, hd, body = answers[6]
    assert int(hd["retry-after"]) >= 1 and b"Too many wrong tokens" in body
    # the right token is not even looked at while the address waits
    st, hd, _ = a.login()
    assert st == 429 and "set-cookie" not in hd
    # after the wait one more guess is compared, and the next wait is longer
    first = int(hd["retry-after"])
    time.sleep(first + 0.2)
    assert a.login(token="wrong-guess-after-the-wait")[0] == 401
    st, hd, _ = a.login(token="wrong-guess-right-after")
    assert st == 429 and int(hd["retry-after"]) > first
    # (the log is read by a thread: wait for the second wait's line, not just any)
    a.proc.wait_log(lambda r: r.get("msg") == "console token guesses throttled"
                    and r.get("failures") == 7)
    throttled = a.proc.log_lines("console token guesses throttled")
    assert throttled and throttled[0]["peer"] == "127.0.0.1" and throttled[0]["retry_after_s"] >= 1
    assert [r["failures"] for r in throttled][:2] == [6, 7]
    assert TOKEN not in json.dumps(a.proc.logs)
    metrics = a.get("/metrics")[2].decode()
    assert re.search(r'ordersync_console_auth_refused_total\{reason="throttled"\} [1-9]', metrics)


def test_wrong_bearer_tokens_are_throttled_and_the_right_one_then_opens(admins):
    a = admins()
    statuses = [a.api("/api/overview", token=f"guess-{i:02d}-of-the-admin-token")[0] for i in range(7)]
    assert statuses == [401] * 6 + [429], statuses
    # the right token too, while the address waits: it is not compared
    st, hd, body = a.api("/api/overview")
    assert st == 429 and json.loads(body)["error"] == "too_many_attempts"
    time.sleep(int(hd["retry-after"]) + 0.2)
    # the right token, once the wait is over, opens and forgives
    assert a.api("/api/overview")[0] == 200
    assert [a.api("/api/session", token="one-more-wrong-guess-here")[0] for _ in range(5)] == [401] * 5


def test_a_weak_admin_token_is_warned_about_at_start(admins):
    weak = admins(token="aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
    warn = weak.proc.wait_log(lambda r: r.get("msg") == "ORDERSYNC_ADMIN_TOKEN looks weak", timeout=5)
    assert warn and warn[0]["level"] == "warn" and "distinct" in warn[0]["detail"]
    assert "aaaaaaaaaaaaaaaa" not in json.dumps(weak.proc.logs)
    short = admins(token="0123456789abcdefXYZ")
    warn = short.proc.wait_log(lambda r: r.get("msg") == "ORDERSYNC_ADMIN_TOKEN looks weak", timeout=5)
    assert warn and "shorter" in warn[0]["detail"]
    strong = admins()
    assert not strong.proc.log_lines("ORDERSYNC_ADMIN_TOKEN looks weak")


# ---------------------------------------------------------------- 3: sessions

def test_logout_ends_the_session_on_every_instance_and_after_a_restart(admins, db):
    a, b = admins(), admins()
    cookie, csrf = a.session("ada")
    # one login is good on every instance of the database
    assert b.get("/api/session", {"Cookie": cookie})[0] == 200
    st, hd, _ = a.logout(cookie, csrf)
    assert st == 303 and hd["location"] == "/console/login" and "Max-Age=0" in hd["set-cookie"]
    # a copy of the cookie kept from before the logout opens nothing, anywhere
    for inst in (a, b):
        st, _, body = inst.get("/api/session", {"Cookie": cookie})
        assert st == 401 and json.loads(body)["error"] == "session_invalid"
        st, hd, _ = inst.get("/console", {"Cookie": cookie})
        assert st == 303 and hd["location"] == "/console/login"
    b.proc.stop()
    b.proc.start()
    b.proc.wait_ready()
    b.wait_console()
    assert b.get("/api/session", {"Cookie": cookie})[0] == 401
    # another session of the same operator lives on
    other, _ = a.session("ada")
    assert b.get("/api/session", {"Cookie": other})[0] == 200


def test_an_idle_session_ends(admins):
    a = admins(env={"ORDERSYNC_CONSOLE_IDLE_TIMEOUT_S": "2"})
    cookie, _ = a.session()
    for _ in range(3):
        time.sleep(1)
        # used within the timeout: alive (each use counts)
        assert a.get("/api/overview", {"Cookie": cookie})[0] == 200
    time.sleep(3)
    st, _, body = a.get("/api/overview", {"Cookie": cookie})
    assert st == 401 and json.loads(body)["error"] == "session_expired" and b"idle" in body
    # a bearer token has no session to idle
    assert a.api("/api/overview")[0] == 200


def test_a_secure_console_sets_a_host_prefixed_secure_cookie(admins):
    a = admins(env={"ORDERSYNC_CONSOLE_SECURE": "1"})
    st, hd, _ = a.login()
    assert st == 303
    cookie = hd["set-cookie"]
    assert cookie.startswith("__Host-ordersync_console=")
    attrs = [x.strip() for x in cookie.split(";")[1:]]
    assert "Secure" in attrs and "Path=/" in attrs and "HttpOnly" in attrs
    assert "SameSite=Strict" in attrs and not any(x.startswith("Domain") for x in attrs)
    value = cookie.split(";")[0].split("=", 1)[1]
    assert a.get("/api/session", {"Cookie": f"__Host-ordersync_console={value}"})[0] == 200
    # the plain name could have been planted over HTTP: not taken
    assert a.get("/api/session", {"Cookie": f"ordersync_console={value}"})[0] == 401
    # without the setting, behind a TLS proxy, the same
    b = admins()
    st, hd, _ = b.login(headers={"X-Forwarded-Proto": "https"})
    assert hd["set-cookie"].startswith("__Host-ordersync_console=") and "; Secure" in hd["set-cookie"]
    st, hd, _ = b.login()
    assert hd["set-cookie"].startswith("ordersync_console=") and "Secure" not in hd["set-cookie"]


def test_a_month_of_logins_leaves_only_the_live_sessions(admins, db):
    a = admins()
    # what 30 days of logins would have left, had nothing pruned them
    db.query("INSERT INTO console_sessions (id, operator, created_at, expires_at, last_seen_at)"
             " SELECT md5(i::text), 'someone', now() - i * interval '1 hour',"
             "        now() - i * interval '1 hour' + interval '12 hours',"
             "        now() - i * interval '1 hour'"
             "   FROM generate_series(1, 720) i")
    cookie, _ = a.session("ada")
    # the login deleted every row whose cookie has expired: 11 of the last 12 hours are left
    assert db.scalar("SELECT count(*) FROM console_sessions") == 12
    assert db.scalar("SELECT count(*) FROM console_sessions WHERE expires_at < now()") == 0
    assert a.get("/api/session", {"Cookie": cookie})[0] == 200


# ---------------------------------------------------------------- 4: the admin listener and the public port

def test_the_admin_listener_answers_only_its_own_names(admins):
    a = admins(env={"ORDERSYNC_ADMIN_HOSTS": "ops.example.com, metrics.internal"})
    for path in ("/metrics", "/healthz", "/readyz", "/console/login", "/api/session"):
        st, _, body = a.api(path, headers={"Host": f"attacker.example:{a.port}"})
        assert st == 421, path
        assert json.loads(body)["error"] == "misdirected_request"
        assert b"ordersync_" not in body
    assert raw_status_line(a.port, "GET", "/metrics", {"Host": "rebound.example"}) == \
        "HTTP/1.1 421 Misdirected Request"
    for host in (f"localhost:{a.port}", "localhost", f"127.0.0.1:{a.port}", f"[::1]:{a.port}",
                 f"ops.example.com:{a.port}", "METRICS.internal"):
        st, _, _ = a.api("/api/session", headers={"Host": host})
        assert st == 200, host
    st, _, _ = a.api("/api/session", headers={"Host": f"example.com:{a.port}"})
    assert st == 421


def test_metrics_are_served_only_by_the_admin_listener_when_there_is_one(admins, ordersync):
    a = admins(token=None)
    st, _, body = request(a.proc.port, "GET", "/metrics")
    assert st == 404
    st, _, body = a.get("/metrics")
    assert st == 200 and b"ordersync_http_requests_total" in body
    # the probes stay on the public port
    assert request(a.proc.port, "GET", "/healthz")[0] == 200
    assert request(a.proc.port, "GET", "/readyz")[0] == 200
    # without an admin listener the public port is where Prometheus scrapes
    p = ordersync()
    st, _, body = request(p.port, "GET", "/metrics")
    assert st == 200 and b"ordersync_http_requests_total" in body


def test_the_public_readyz_does_not_show_the_database_error(admins, db, cluster):
    a = admins(token=None)
    port = urllib.parse.urlsplit(db.url).port
    with cluster.admin() as c:
        c.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS false')
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                  (db.name,))
    try:
        # (the relay's and the feed's connections may be missed first: readyz
        # is 503 then too, with the ingest connection not yet known lost)
        def ingest_lost():
            st, _, body = request(a.proc.port, "GET", "/readyz")
            return st == 503 and json.loads(body)["database"] == "disconnected"
        wait_for(ingest_lost, what="readyz 503, database disconnected")
        st, _, body = request(a.proc.port, "GET", "/readyz")
        doc = json.loads(body)
        assert st == 503 and doc["database"] == "disconnected"
        # the operator's listener says why, in libpq's words
        st, _, admin_body = a.get("/readyz")
        detail = json.loads(admin_body)["detail"]
        assert st == 503 and detail and detail != doc["detail"]
        # the public port does not: no host, port, database, user or libpq wording
        for leak in (detail, db.name, str(port), "127.0.0.1", "ordersync@", "server", "FATAL"):
            assert leak not in body.decode(), leak
    finally:
        with cluster.admin() as c:
            c.execute(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS true')
    a.proc.wait_ready()


# ---------------------------------------------------------------- 5: roles, secrets at rest

def priv(db, kind, *args):
    return db.scalar(f"SELECT has_{kind}_privilege({', '.join(['%s'] * len(args))})", args)


def test_the_reader_reads_the_sync_state_and_no_secret(db):
    for view in ("sync_state", "sync_backlog", "order_sync", "event_deliveries", "poll_state",
                 "orders", "order_lines", "delivery_attempts"):
        assert priv(db, "table", "ordersync_reader", view, "SELECT"), view
        assert not priv(db, "table", "ordersync_reader", view, "INSERT, UPDATE, DELETE"), view
    for table in ("inbound_events", "inbound_keys", "console_sessions", "schema_migrations"):
        assert not priv(db, "table", "ordersync_reader", table, "SELECT"), table
    secret = {"sources": ("secret", "previous_secret", "poll_auth_header", "poll_url"),
              "destinations": ("secret", "previous_secret", "headers", "feed_token", "url")}
    for table, cols in secret.items():
        assert not priv(db, "table", "ordersync_reader", table, "SELECT")
        for col in cols:
            assert not priv(db, "column", "ordersync_reader", table, col, "SELECT"), (table, col)
        assert priv(db, "column", "ordersync_reader", table, "id", "SELECT")
        assert priv(db, "column", "ordersync_reader", table, "enabled", "SELECT")
    assert not db.scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'ordersync_reader'")
    # and for real, as a person holding the role would
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', 'the-shop-secret')")
    with db.connect() as c:
        c.execute("SET ROLE ordersync_reader")
        assert c.execute("SELECT id, kind FROM sources").fetchall() == [("shop", "shopify")]
        c.execute("SELECT * FROM sync_backlog").fetchall()
        c.execute("SELECT * FROM order_sync").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT secret FROM sources")
    with db.connect() as c:
        c.execute("SET ROLE ordersync_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT delivery_replay()")


def test_the_runtime_writes_its_state_not_the_configuration(db):
    rt = "ordersync_runtime"
    assert not db.scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (rt,))
    for table in ("orders", "deliveries", "delivery_streams", "inbound_keys", "console_sessions",
                  "source_polls", "relay_instances", "event_store_partitions"):
        assert priv(db, "table", rt, table, "SELECT, INSERT, UPDATE, DELETE"), table
    # it signs, verifies and polls with the secrets, so it reads them
    assert priv(db, "column", rt, "destinations", "secret", "SELECT")
    for col in ("url", "secret", "feed_token", "headers", "mode"):
        assert not priv(db, "column", rt, "destinations", col, "UPDATE"), col
    for col in ("paused_until", "consecutive_failures", "enabled", "disabled_reason"):
        assert priv(db, "column", rt, "destinations", col, "UPDATE"), col
    for col in ("secret", "poll_url", "poll_auth_header"):
        assert not priv(db, "column", rt, "sources", col, "UPDATE"), col
    assert priv(db, "column", rt, "sources", "poll_cursor", "UPDATE")
    for table in ("sources", "destinations", "subscriptions", "schema_migrations"):
        assert not priv(db, "table", rt, table, "INSERT"), table
        assert not priv(db, "table", rt, table, "DELETE"), table
    # the audit trail is appended to, never rewritten
    assert priv(db, "table", rt, "operator_actions", "INSERT")
    assert not priv(db, "table", rt, "operator_actions", "UPDATE")
    assert not priv(db, "table", rt, "operator_actions", "DELETE")
    # the event store is its own: partitions are made, detached and dropped by it
    owners = db.query("SELECT DISTINCT c.relowner::regrole::text FROM pg_class c"
                      " WHERE c.oid IN ('events'::regclass, 'inbound_events'::regclass,"
                      " 'delivery_attempts'::regclass, 'delivery_log'::regclass)"
                      " OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent IN"
                      " ('events'::regclass, 'inbound_events'::regclass,"
                      " 'delivery_attempts'::regclass, 'delivery_log'::regclass))")
    assert owners == [(rt,)]
    assert priv(db, "function", rt, "event_store_extend(timestamptz, timestamptz)", "EXECUTE")
    assert not priv(db, "function", "ordersync_reader",
                    "event_store_extend(timestamptz, timestamptz)", "EXECUTE")


@pytest.fixture
def login_role(cluster):
    """A login role of its own for this test, member of `role`."""
    made = []

    def make(role):
        name = "t_" + uuid.uuid4().hex[:10]
        with cluster.admin() as c:
            c.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {role}')
        made.append(name)
        return name

    yield make
    with cluster.admin() as c:
        for name in made:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                      (name,))
            c.execute(f'DROP ROLE IF EXISTS "{name}"')


def as_user(url, user):
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port}"))


# What each role may do with every object of the schema, whichever migration made it: a table
# or view added later without its grants fails here before it fails in production.
READER_VIEWS = {"sync_state", "sync_backlog", "order_sync", "event_deliveries", "poll_state",
                "order_lines"}
# (destination_filters: event_deliveries' delivery_state() reads the filter history with the
# caller's rights, 016)
READER_TABLES = {"orders", "delivery_attempts", "delivery_log", "delivery_skips", "events",
                 "deliveries", "delivery_streams", "subscriptions", "destination_filters"}
# what the runtime may not do to a table (the configuration is the operator's; sources and
# destinations get UPDATE on the runtime's own columns only, tested above)
RUNTIME_DENIED = {"schema_migrations": "INSERT UPDATE DELETE", "subscriptions": "INSERT UPDATE DELETE",
                  "sources": "INSERT UPDATE DELETE", "destinations": "INSERT UPDATE DELETE",
                  "event_store_settings": "INSERT DELETE", "operator_actions": "UPDATE DELETE"}


def test_every_object_of_the_schema_has_the_rights_its_roles_need(db):
    rt, rd = "ordersync_runtime", "ordersync_reader"
    rels = db.query("SELECT c.relname, c.relkind, c.relowner::regrole::text = %s FROM pg_class c"
                    " WHERE c.relnamespace = current_schema()::regnamespace"
                    " AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND NOT c.relispartition", (rt,))
    kinds = {k for _, k, _ in rels}
    assert {"r", "p", "v", "S"} <= kinds
    # the event store (and its sequence) is the runtime's own: it makes and drops partitions
    assert {n for n, _, owned in rels if owned} == {"events", "inbound_events", "delivery_attempts",
                                                    "delivery_log", "inbound_event_id"}
    for name, kind, owned in rels:
        if kind == "S":
            assert priv(db, "sequence", rt, name, "USAGE"), name
            assert not priv(db, "sequence", rd, name, "USAGE"), name
            continue
        assert priv(db, "table", rt, name, "SELECT"), name
        assert priv(db, "table", rt, name, "TRUNCATE, REFERENCES, TRIGGER") == owned, name
        for p in ("INSERT", "UPDATE", "DELETE"):
            # views are never written through: that would be with their owner's rights
            may = kind in ("r", "p") and p not in RUNTIME_DENIED.get(name, "")
            assert priv(db, "table", rt, name, p) == may, (name, p)
            assert not priv(db, "table", rd, name, p), (name, p)
        reads = name in (READER_VIEWS if kind in ("v", "m") else READER_TABLES)
        assert priv(db, "table", rd, name, "SELECT") == reads, name
    # every function is the runtime's to call; one that runs with its owner's rights is
    # nobody else's (PUBLIC is every role of the cluster) and resolves names in the schema
    # alone, never first in the caller's temporary tables
    funcs = db.query("SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig,"
                     " EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a"
                     "          WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')"
                     " FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace"
                     " AND p.prokind = 'f'")
    definers = set()
    for sig, definer, config, public in funcs:
        assert priv(db, "function", rt, sig, "EXECUTE"), sig
        if definer:
            definers.add(sig.split("(")[0])
            assert not public, sig
            path = [c for c in (config or []) if c.startswith("search_path=")]
            assert path and path[0].endswith(", pg_temp"), (sig, config)
    assert definers == {"event_store_extend", "sync_backlog_rows"}
    assert priv(db, "function", rd, "sync_backlog_rows()", "EXECUTE")
    # and what a later migration makes, applied by the same owner, is the runtime's too
    db.query("CREATE TABLE later_t (id bigserial PRIMARY KEY, v text)")
    db.query("CREATE FUNCTION later_f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    db.query("REVOKE EXECUTE ON FUNCTION later_f() FROM PUBLIC")
    assert priv(db, "table", rt, "later_t", "SELECT, INSERT, UPDATE, DELETE")
    assert priv(db, "sequence", rt, "later_t_id_seq", "USAGE")
    assert priv(db, "function", rt, "later_f()", "EXECUTE")
    assert not priv(db, "table", rd, "later_t", "SELECT")
    assert not priv(db, "function", rd, "later_f()", "EXECUTE")


def test_ordersync_serves_everything_as_the_runtime_role(db, login_role):
    """ingest, relay (with a breaker, a dead event and a 410), a feed, a poller,
    partition maintenance and the console, with nothing but the runtime's rights."""
    user = login_role("ordersync_runtime")
    url = as_user(db.url, user)
    inventory, flaky, gone = Receiver("inventory"), Receiver("flaky"), Receiver("gone")
    flaky.behaviour = lambda rec: (500, {}, b"down")
    gone.behaviour = lambda rec: (410, {}, b"gone")
    shop = Shop()
    a = None
    try:
        db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
                 (wh.SHOPIFY_SECRET,))
        db.query("INSERT INTO sources (id, kind, mode, poll_url, poll_interval, poll_auth_header)"
                 " VALUES ('legacy', 'shopify', 'poll', %s, '1 second',"
                 " 'X-Shopify-Access-Token: shpat_test_token')", (shop.url,))
        db.query("INSERT INTO destinations (id, url, secret) VALUES ('inventory', %s, %s)",
                 (inventory.url, wh.DEST_SECRET))
        db.query("INSERT INTO destinations (id, url, secret, max_attempts, breaker_threshold,"
                 " retry_schedule) VALUES ('flaky', %s, %s, 1, 1, '{1 second}')",
                 (flaky.url, wh.DEST_SECRET))
        db.query("INSERT INTO destinations (id, url, secret) VALUES ('gone', %s, %s)",
                 (gone.url, wh.DEST_SECRET))
        db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
                 (FEED_TOKEN,))
        shop.put(dict(copy.deepcopy(TEMPLATE), id=777001, updated_at="2026-01-02T03:04:05Z"))
        a = Admin(url, env={"ORDERSYNC_PARTITION_INTERVAL": "1 minute"}).start()
        a.wait_console()
        assert a.proc.wait_log(lambda r: r.get("msg") == "partitions made ahead at another interval"
                               " replaced", timeout=10)
        # ingest, and delivery to a receiver
        assert send_order(a.proc.port, 1001)["status"] == "accepted"
        wait_for(lambda: inventory.accepted(), what="the delivery to inventory")
        # the poller: its cursor and counters are the runtime's to write
        wait_for(lambda: db.scalar("SELECT count(*) FROM orders WHERE source_id = 'legacy'") == 1,
                 what="the polled order")
        wait_for(lambda: db.scalar("SELECT polls FROM poll_state WHERE source_id = 'legacy'"),
                 what="a finished poll")
        # the feed, with the token as the README writes it
        st, _, body = read_feed(a.proc.port, "erp", FEED_TOKEN, "?limit=10")
        assert st == 200 and len(json.loads(body)["events"]) == 2
        # the relay's own columns: a breaker pause and a dead event, a 410 disabling
        wait_for(lambda: db.scalar("SELECT count(*) FROM deliveries WHERE destination_id = 'flaky'"
                                   " AND state = 'dead'") >= 1, what="a dead event", timeout=30)
        wait_for(lambda: db.scalar("SELECT paused_until IS NOT NULL OR consecutive_failures > 0"
                                   " FROM destinations WHERE id = 'flaky'"), what="the breaker")
        wait_for(lambda: db.scalar("SELECT NOT enabled FROM destinations WHERE id = 'gone'"),
                 what="the 410 to disable its destination")
        # the console: a login, its pages of data, and a replay recorded with its actor
        cookie, csrf = a.session("ada")
        for path in ("/api/overview", "/api/orders?q=1001", "/api/sources", "/api/destinations",
                     "/api/deliveries?state=dead"):
            assert a.get(path, {"Cookie": cookie})[0] == 200, path
        st, _, body = request(a.port, "POST", "/api/deliveries/replay",
                              body=json.dumps({"matching": {"destination": "flaky"}}),
                              headers={"Authorization": f"Bearer {TOKEN}",
                                       "Content-Type": "application/json"})
        assert st == 200 and json.loads(body)["replayed"] >= 1, body
        assert db.scalar("SELECT count(*) FROM operator_actions WHERE actor = 'api:token'") >= 1
        assert a.logout(cookie, csrf)[0] == 303
        # partitions: made at start at the new interval by the runtime (respan dropped the old
        # ones), and the next maintenance rounds keep making them
        assert db.scalar("SELECT count(*) FROM event_store_partitions"
                         " WHERE lo > '-infinity' AND hi - lo = interval '1 minute'") >= 4
        owners = db.query("SELECT DISTINCT c.relowner::regrole::text FROM event_store_partitions p"
                          " JOIN pg_class c ON c.oid = to_regclass(p.name)")
        assert owners == [("ordersync_runtime",)]
        # what the maintenance is changing to (DETACH ... CONCURRENTLY, then DROP) works for
        # this role: it cannot run in a function, so the role itself must be allowed to
        name = db.scalar("SELECT name FROM event_store_partitions WHERE parent = 'events'"
                         " ORDER BY lo DESC LIMIT 1")
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f'ALTER TABLE events DETACH PARTITION "{name}" CONCURRENTLY')
            c.execute(f'DROP TABLE "{name}"')
            c.execute("DELETE FROM event_store_partitions WHERE name = %s", (name,))
            c.execute("SELECT event_store_extend(now() + interval '5 minutes')")
            # (made again by this call, or by a maintenance round of the runtime meanwhile)
            assert c.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]
            # and dropping what is past the retention, as each maintenance round does (one
            # may do it first: it runs as this role too)
            c.execute("UPDATE event_store_settings SET retention = '1 minute'")
            c.execute("SELECT name, action FROM event_store_retire(now() + interval '1 minute')").fetchall()
            assert c.execute("SELECT to_regclass('events_p_before_v5')").fetchone()[0] is None
        # a person holding the reader role reads what the service produced: every view of the
        # README, with rows in it (their functions run with the reader's rights), and
        # scripts/sync-status
        reader = as_user(db.url, login_role("ordersync_reader"))
        with psycopg.connect(reader, autocommit=True) as c:
            for view in ("sync_state", "sync_backlog", "order_sync", "event_deliveries",
                         "poll_state", "order_lines"):
                assert c.execute(f"SELECT count(*) FROM {view}").fetchone()[0] > 0, view
            # the console's functions for an order page: no secret column among what they read
            docs = c.execute("SELECT order_delivery_states(id)::text, order_deliveries_doc(id, 0)::text"
                             " FROM orders").fetchall()
            assert docs and all("inventory" in d for _, d in docs), docs
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT url FROM destinations")
        st = subprocess.run([os.path.join(REPO, "scripts", "sync-status")], capture_output=True,
                            text=True, env=dict(os.environ, DATABASE_URL=reader), timeout=60)
        assert st.returncode == 0 and "flaky" in st.stdout, st.stderr
        # nothing anywhere was refused for want of a right
        text = json.dumps(a.proc.logs)
        for refusal in ("permission denied", "must be owner", "could not make partitions",
                        "dropping old partitions failed", "pruning failed", "LISTEN failed"):
            assert refusal not in text, refusal
    finally:
        if a is not None:
            assert a.proc.stop() == 0
        for r in (inventory, flaky, gone):
            r.close()
        shop.close()


def test_migrating_again_and_in_another_database_is_harmless(empty_db, cluster):
    # the roles are the cluster's: made once, then found
    run_ordersync(["migrate"], empty_db.url, check=True)
    other = cluster.new_db(migrated=False)
    try:
        run_ordersync(["migrate"], with_dbname(cluster.url, other), check=True)
    finally:
        cluster.drop_db(other)
    assert empty_db.scalar("SELECT count(*) FROM pg_roles WHERE rolname IN"
                           " ('ordersync_runtime', 'ordersync_reader')") == 2


def digest(token):
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_feed_tokens_are_stored_as_hashes_and_compared_by_digest(db, ordersync):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'shopify', %s)",
             (wh.SHOPIFY_SECRET,))
    # as the README writes it: plain text, replaced by its SHA-256 before it is stored
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
             (FEED_TOKEN,))
    assert db.scalar("SELECT feed_token FROM destinations WHERE id = 'erp'") == digest(FEED_TOKEN)
    # a digest written as such is kept: the token itself never reaches the database
    other = "another-token-for-the-crm-feed"
    db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('crm', 'poll', %s)",
             (digest(other),))
    assert db.scalar("SELECT feed_token FROM destinations WHERE id = 'crm'") == digest(other)
    with pytest.raises(psycopg.errors.CheckViolation):
        db.query("UPDATE destinations SET feed_token = 'short' WHERE id = 'erp'")
    p = ordersync()
    send_order(p.port, 2001)

    def read(dest, token):
        return read_feed(p.port, dest, token, "?limit=5")[0]

    assert read("erp", FEED_TOKEN) == 200
    assert read("crm", other) == 200
    # what the table holds opens nothing; nor does a token of the right or of another length
    assert read("erp", digest(FEED_TOKEN)) == 403
    assert read("erp", FEED_TOKEN[:-1] + "g") == 403
    assert read("erp", FEED_TOKEN + "x") == 403
    assert read("erp", "x") == 403


def test_plain_feed_tokens_of_the_previous_release_are_hashed_by_the_migration(empty_db, ordersync):
    run_ordersync(["migrate", "--to", "11"], empty_db.url, check=True)
    empty_db.query("INSERT INTO destinations (id, mode, feed_token) VALUES ('erp', 'poll', %s)",
                   (FEED_TOKEN,))
    before = empty_db.scalar("SELECT feed_token_changed_at FROM destinations")
    assert empty_db.scalar("SELECT feed_token FROM destinations") == FEED_TOKEN
    run_ordersync(["migrate"], empty_db.url, check=True)
    assert empty_db.scalar("SELECT feed_token FROM destinations") == digest(FEED_TOKEN)
    # not a change of token: the console still shows when it was set
    assert empty_db.scalar("SELECT feed_token_changed_at FROM destinations") == before
    p = ordersync(database=empty_db)
    assert read_feed(p.port, "erp", FEED_TOKEN)[0] == 200


def test_the_console_shows_only_the_scheme_and_host_of_urls(admins, db):
    slack = "https://hooks.slack.com/services/T0001/B0002/XXsecretXXslackXXkey"
    zapier = "https://hooks.zapier.com/hooks/catch/123456/abcdefsecret/"
    db.query("INSERT INTO destinations (id, url, secret) VALUES ('slack', %s, %s),"
             " ('zapier', %s, %s), ('plain', 'https://erp.example:8443/', %s),"
             " ('odd', 'https://user:pa/ss@erp.example/x', %s)",
             (slack, wh.DEST_SECRET, zapier, wh.DEST_SECRET, wh.DEST_SECRET, wh.DEST_SECRET))
    db.query("INSERT INTO sources (id, kind, mode, poll_url) VALUES ('legacy', 'shopify', 'poll',"
             " 'https://shop.example/wp-json/wc/v3/orders?consumer_key=ck_secret&consumer_secret=cs_x')")
    a = admins(env={"ORDERSYNC_RELAY": "0"})  # nothing is sent to these hosts
    st, _, body = a.api("/api/destinations")
    assert st == 200
    for secret in (b"XXsecretXX", b"services", b"abcdefsecret", b"catch", b"pa/ss", b"user"):
        assert secret not in body, secret
    dests = {d["id"]: d for d in json.loads(body)}
    assert dests["slack"]["url"] == "https://hooks.slack.com" and dests["slack"]["url_redacted"]
    assert dests["zapier"]["url"] == "https://hooks.zapier.com" and dests["zapier"]["url_redacted"]
    assert dests["plain"]["url"] == "https://erp.example:8443" and not dests["plain"]["url_redacted"]
    # a URL whose host cannot be told apart from its password shows nothing
    assert dests["odd"]["url"] is None and dests["odd"]["url_redacted"]
    st, _, body = a.api("/api/sources")
    assert b"ck_secret" not in body and b"wp-json" not in body
    src = json.loads(body)[0]
    assert src["poll_url"] == "https://shop.example" and src["poll_url_redacted"]


# ---------------------------------------------------------------- 6: reason phrases

def test_status_lines_carry_their_reason_phrases(admins):
    a = admins()
    body = urllib.parse.urlencode({"token": TOKEN, "name": "ada"}).encode()
    form = {"Content-Type": "application/x-www-form-urlencoded",
            "Origin": f"http://127.0.0.1:{a.port}"}
    assert raw_status_line(a.port, "POST", "/console/login", form, body) == "HTTP/1.1 303 See Other"
    assert raw_status_line(a.port, "GET", "/api/session") == "HTTP/1.1 401 Unauthorized"
    assert raw_status_line(a.proc.port, "GET", "/nothing-here") == "HTTP/1.1 404 Not Found"
    assert raw_status_line(a.proc.port, "POST", "/readyz") == "HTTP/1.1 405 Method Not Allowed"
    wrong = urllib.parse.urlencode({"token": "not-the-admin-token-at-all", "name": "x"}).encode()
    lines = [raw_status_line(a.port, "POST", "/console/login", form, wrong) for _ in range(7)]
    assert lines[-1] == "HTTP/1.1 429 Too Many Requests"
