"""Senders for tests: sign a payload the way each platform does, from the
platforms' public docs (an implementation independent of ordersync's C code)."""
import base64
import hashlib
import hmac
import json
import time
import uuid

SHOPIFY_SECRET = "shpss_test_secret_0123456789"
WOO_SECRET = "woo-secret-abcdef"
STRIPE_SECRET = "whsec_stripe_test_secret_9876543210"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def b64hmac(secret, body):
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify(body, topic="orders/create", secret=SHOPIFY_SECRET, webhook_id=None):
    return {"Content-Type": "application/json", "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": b64hmac(secret, body),
            "X-Shopify-Shop-Domain": "example.myshopify.com",
            "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()), "X-Shopify-API-Version": "2024-07"}


def woocommerce(body, topic="order.created", secret=WOO_SECRET):
    return {"Content-Type": "application/json", "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": topic.split(".")[0],
            "X-WC-Webhook-Event": topic.split(".")[-1],
            "X-WC-Webhook-Signature": b64hmac(secret, body),
            "X-WC-Webhook-Source": "https://shop.example/", "X-WC-Webhook-ID": "7",
            "X-WC-Webhook-Delivery-ID": str(int(time.time()))}


def stripe(body, secret=STRIPE_SECRET, t=None, extra_v1=()):
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    parts = [f"t={t}"] + [f"v1={s}" for s in extra_v1] + [f"v1={sig}"]
    return {"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": ",".join(parts)}


def standard_signature(secret, msg_id, ts, body):
    key = base64.b64decode(secret.split("_", 1)[1] if secret.startswith("whsec_") else secret)
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def standard(body, secret=STANDARD_SECRET, msg_id=None, ts=None):
    msg_id = msg_id or "msg_" + uuid.uuid4().hex
    ts = int(time.time()) if ts is None else ts
    return {"Content-Type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": standard_signature(secret, msg_id, ts, body)}


def verify_standard(headers, body, secret=DEST_SECRET, tolerance=300):
    """Checks an outbound delivery the way a receiver following the spec does."""
    msg_id = headers["webhook-id"]
    ts = int(headers["webhook-timestamp"])
    if abs(time.time() - ts) > tolerance:
        return False
    expected = standard_signature(secret, msg_id, ts, body).split(",", 1)[1]
    for sig in headers["webhook-signature"].split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


def dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()
