"""Standard Webhooks v1a (Ed25519) signatures on deliveries. Keys come from
`ordersync keygen`; receivers verify with code that is not ordersync's: the
openssl command line (`pkeyutl -verify -rawin`) and Node's crypto.verify.
Covered: a destination that signs with a key only, both schemes in one
header, a key rotation applied without a restart, keys refused when written
or when loaded, `ordersync destination-key`, and the console's public key."""
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

import webhooks as wh
from conftest import FIXTURES, Process, free_port, request, run_ordersync
from receiver import Receiver, wait_for

# SubjectPublicKeyInfo of an Ed25519 key (RFC 8410) is this prefix and the 32 raw bytes
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
TOKEN = "console-token-0123456789abcdef"
TEMPLATE = json.load(open(os.path.join(FIXTURES, "standard_order_created.json")))


def keygen(db):
    p = run_ordersync(["keygen"], db.url, check=True)
    kv = dict(line.split("=", 1) for line in p.stdout.split())
    assert kv["signing_key"].startswith("whsk_") and kv["public_key"].startswith("whpk_")
    return kv["signing_key"], kv["public_key"]


def signed_content(rec):
    h = rec["headers"]
    return f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + rec["body"]


def v1a_sigs(rec):
    return [s[4:] for s in rec["headers"]["webhook-signature"].split(" ") if s.startswith("v1a,")]


def openssl_verifies(public_key, content, sig_b64):
    """openssl pkeyutl, from the whpk_ text: exit status 0 when the signature is good."""
    raw = base64.b64decode(public_key[len("whpk_"):], validate=True)
    assert len(raw) == 32
    with tempfile.TemporaryDirectory() as d:
        paths = {n: os.path.join(d, n) for n in ("pub.der", "msg", "sig")}
        for n, data in (("pub.der", SPKI_PREFIX + raw), ("msg", content),
                        ("sig", base64.b64decode(sig_b64, validate=True))):
            with open(paths[n], "wb") as f:
                f.write(data)
        p = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", paths["pub.der"],
                            "-keyform", "DER", "-rawin", "-in", paths["msg"], "-sigfile", paths["sig"]],
                           capture_output=True, text=True)
    return p.returncode == 0 and "Signature Verified Successfully" in p.stdout


NODE_VERIFY = r"""
const crypto = require('crypto');
const [pk, content, sig] = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const raw = Buffer.from(pk.slice(5), 'base64');
const key = crypto.createPublicKey({key: {kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url')}, format: 'jwk'});
process.stdout.write(crypto.verify(null, Buffer.from(content, 'base64'), key, Buffer.from(sig, 'base64')) ? 'ok' : 'bad');
"""


def node_verifies(public_key, content, sig_b64):
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "Node.js is needed (scripts/install-deps installs nodejs)"
    p = subprocess.run([node, "-e", NODE_VERIFY], capture_output=True, text=True,
                       input=json.dumps([public_key, base64.b64encode(content).decode(), sig_b64]))
    assert p.returncode == 0, p.stderr
    return p.stdout == "ok"


@pytest.fixture
def rcv():
    r = Receiver("erp")
    yield r
    r.close()


@pytest.fixture
def stack(db, rcv):
    db.query("INSERT INTO sources (id, kind, secret) VALUES ('shop', 'standard', %s)",
             (wh.STANDARD_SECRET,))
    procs = []

    def start(env=None):
        e = {"ORDERSYNC_SWEEP_INTERVAL_S": "1", "ORDERSYNC_RELOAD_INTERVAL_S": "1"}
        e.update(env or {})
        p = Process(db.url, env=e).start()
        p.wait_ready()
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


ORDER_IDS = itertools.count(1000)


def send_order(p):
    """A new order (ids never repeat: the same one again would be stale)."""
    o = json.loads(json.dumps(TEMPLATE))
    o["data"]["external_id"] = o["data"]["number"] = f"SO-{next(ORDER_IDS)}"
    body = wh.dumps(o)
    st, _, resp = request(p.port, "POST", "/webhooks/shop", body=body, headers=wh.standard(body))
    assert st == 200, resp


def test_a_key_only_destination_signs_v1a_that_openssl_verifies(db, rcv, stack):
    sk, pk = keygen(db)
    db.query("INSERT INTO destinations (id, url, signing_key) VALUES ('erp', %s, %s)", (rcv.url, sk))
    p = stack()
    send_order(p)
    recs = wait_for(rcv.accepted, what="a delivery")
    rec = recs[0]
    sig_header = rec["headers"]["webhook-signature"]
    # no secret: v1a alone, one entry
    assert re.fullmatch(r"v1a,[A-Za-z0-9+/]{86}==", sig_header), sig_header
    content = signed_content(rec)
    assert openssl_verifies(pk, content, v1a_sigs(rec)[0])
    assert not openssl_verifies(pk, content + b" ", v1a_sigs(rec)[0])
    _, other = keygen(db)
    assert not openssl_verifies(other, content, v1a_sigs(rec)[0])
    # the receiver learns the public key from the CLI, never the private one
    out = run_ordersync(["destination-key", "erp"], db.url, check=True).stdout
    assert out == f"public_key={pk}\n"
    assert "whsk_" not in out
    assert not any(sk in json.dumps(r) for r in p.logs)


def test_a_secret_and_a_key_sign_in_one_header(db, rcv, stack):
    sk, pk = keygen(db)
    db.query("INSERT INTO destinations (id, url, secret, signing_key) VALUES ('erp', %s, %s, %s)",
             (rcv.url, wh.DEST_SECRET, sk))
    p = stack()
    send_order(p)
    rec = wait_for(rcv.accepted, what="a delivery")[0]
    entries = rec["headers"]["webhook-signature"].split(" ")
    assert [e.split(",")[0] for e in entries] == ["v1", "v1a"]
    # a receiver still on v1 verifies as before (the v1a entry is skipped) ...
    assert rec["valid"] and wh.verify_standard(rec["headers"], rec["body"], wh.DEST_SECRET)
    # ... and one that moved to v1a verifies the other entry, here with Node
    assert node_verifies(pk, signed_content(rec), v1a_sigs(rec)[0])
    assert not node_verifies(pk, signed_content(rec)[:-1], v1a_sigs(rec)[0])


def test_a_key_rotation_signs_with_both_keys_until_the_previous_is_cleared(db, rcv, stack):
    old_sk, old_pk = keygen(db)
    new_sk, new_pk = keygen(db)
    db.query("INSERT INTO destinations (id, url, signing_key) VALUES ('erp', %s, %s)",
             (rcv.url, old_sk))
    p = stack()
    send_order(p)
    wait_for(lambda: len(rcv.accepted()) >= 1, what="the first delivery")
    # rotate without a restart: the new key signs, the previous one still does
    db.query("UPDATE destinations SET signing_key = %s, previous_signing_key = signing_key"
             " WHERE id = 'erp'", (new_sk,))
    out = run_ordersync(["destination-key", "erp"], db.url, check=True).stdout
    assert out == f"public_key={new_pk}\nprevious_public_key={old_pk}\n"

    def two_sigs():
        send_order(p)
        return [r for r in rcv.accepted() if len(v1a_sigs(r)) == 2]
    rec = wait_for(two_sigs, interval=0.5, what="a delivery signed with both keys")[0]
    content = signed_content(rec)
    new_sig, old_sig = v1a_sigs(rec)
    assert openssl_verifies(new_pk, content, new_sig)
    assert openssl_verifies(old_pk, content, old_sig)
    assert not openssl_verifies(old_pk, content, new_sig)
    # every receiver has the new public key: the previous one is cleared
    db.query("UPDATE destinations SET previous_signing_key = NULL WHERE id = 'erp'")
    n = len(rcv.all())

    def new_only():
        send_order(p)
        return [r for r in rcv.accepted()[n:] if len(v1a_sigs(r)) == 1]
    rec = wait_for(new_only, interval=0.5, what="a delivery signed with the new key only")[-1]
    assert openssl_verifies(new_pk, signed_content(rec), v1a_sigs(rec)[0])


def test_keys_are_refused_when_written_or_when_loaded(db, rcv, stack):
    import psycopg
    # neither a secret nor a key: refused as before
    with pytest.raises(psycopg.errors.CheckViolation):
        db.query("INSERT INTO destinations (id, url) VALUES ('erp', %s)", (rcv.url,))
    # not a key: refused with a sentence that says what a key is
    for bad in ("whsk_short", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "whsk_" + base64.b64encode(b"x" * 48).decode()):
        with pytest.raises(psycopg.errors.CheckViolation) as e:
            db.query("INSERT INTO destinations (id, url, signing_key) VALUES ('erp', %s, %s)",
                     (rcv.url, bad))
        assert "32-byte Ed25519 seed" in str(e.value) and bad not in str(e.value)
    # Svix's 64-byte layout whose public half is not the seed's: SQL cannot
    # tell; ordersync refuses it at load, says so, and does not deliver
    sk, pk = keygen(db)
    _, other_pk = keygen(db)
    seed = base64.b64decode(sk[5:])
    mismatched = "whsk_" + base64.b64encode(seed + base64.b64decode(other_pk[5:])).decode()
    db.query("INSERT INTO destinations (id, url, signing_key) VALUES ('erp', %s, %s)",
             (rcv.url, mismatched))
    p = stack()
    refused = p.wait_log(lambda r: r.get("msg") == "destination signing key refused; nothing is"
                         " sent to it until it is fixed")
    assert refused and refused[0]["destination"] == "erp"
    assert "not the public key" in refused[0]["detail"]
    assert not any(mismatched in json.dumps(r) for r in p.logs)
    cli = run_ordersync(["destination-key", "erp"], db.url)
    assert cli.returncode == 1 and "not the public key" in cli.stderr and "whsk_" not in cli.stderr
    send_order(p)
    # the event waits (nothing is sent while the key is refused) ...
    with pytest.raises(AssertionError):
        wait_for(rcv.all, timeout=2, what="no delivery")
    # ... and goes once the key is right: the same key in Svix's layout, checked
    svix = "whsk_" + base64.b64encode(seed + base64.b64decode(pk[5:])).decode()
    db.query("UPDATE destinations SET signing_key = %s WHERE id = 'erp'", (svix,))
    rec = wait_for(rcv.accepted, what="the delivery after the fix")[0]
    assert openssl_verifies(pk, signed_content(rec), v1a_sigs(rec)[0])
    assert p.proc.poll() is None


def test_the_console_shows_the_public_key_never_the_private_one(db, rcv, stack):
    sk, pk = keygen(db)
    db.query("INSERT INTO destinations (id, url, secret, signing_key) VALUES ('erp', %s, %s, %s)",
             (rcv.url, wh.DEST_SECRET, sk))
    port = free_port()
    stack({"ORDERSYNC_ADMIN_LISTEN": f"127.0.0.1:{port}", "ORDERSYNC_ADMIN_TOKEN": TOKEN})

    def get():
        st, _, body = request(port, "GET", "/api/destinations",
                              headers={"Authorization": f"Bearer {TOKEN}"})
        return body if st == 200 else None
    body = wait_for(get, what="the console's destinations")
    (d,) = json.loads(body)
    assert d["id"] == "erp" and d["signing_public_key"] == pk
    assert "previous_signing_public_key" not in d
    assert b"whsk_" not in body and sk.encode() not in body
