#!/usr/bin/env python3
"""shopsim: a shop that cannot push webhooks, for demos and poller tests.

It serves a Shopify-style paginated orders list over real HTTP:
  GET /admin/api/orders.json?updated_at_min=<RFC 3339>&page_info=<n>
  X-Shopify-Access-Token: <token>
-> {"orders": [...]} sorted by updated_at, `Link: <...>; rel="next"` while more
pages remain, an ETag (304 on a matching If-None-Match), and 429 with
Retry-After when a client exceeds the rate limit (a token bucket, like
Shopify's REST leaky bucket) or when told to throttle.

Run standalone (scripts/demo does): services/shopsim/shopsim.py --port 8094
--orders 20 --new-every 2 creates 20 orders and a new or updated one every 2 s.
Tests import the Shop class and drive it directly.
"""
import argparse
import copy
import hashlib
import os
import random
import signal
import sys
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Shop:
    def __init__(self, token="shpat_test_token", page_size=2, port=0, rate=0.0, burst=40,
                 host="127.0.0.1"):
        self.orders = {}  # id -> order dict
        self.rate = rate  # requests/s allowed (0: unlimited); bucket of `burst`
        self.burst = burst
        self.tokens = float(burst)
        self.refilled = time.monotonic()
        self.lock = threading.Lock()
        self.token = token
        self.page_size = page_size
        self.requests = []  # (path, headers, status)
        self.throttle = 0   # answer the next N requests with 429
        self.fail = 0       # answer the next N requests with 500
        self.retry_after = "1"  # the Retry-After of a 429
        self.later_pages_fail = 0  # answer the next N requests for a later page (page_info)...
        self.later_pages_status = 429  # ...with this status (a 429 or 503 with Retry-After)
        self.link_origin = None  # e.g. "http://127.0.0.2:9": next links point there (hostile)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                status, headers, body = outer.handle(self.path, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.origin = f"http://{host}:{self.port}"
        self.url = f"{self.origin}/admin/api/orders.json"
        # close() waits for serve_forever to see the shutdown, which it looks
        # for every poll_interval (socketserver's default: 0.5 s)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def put(self, order):
        with self.lock:
            self.orders[order["id"]] = order

    def handle(self, path, headers):
        u = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(u.query))
        rec = {"path": path, "headers": headers}
        self.requests.append(rec)
        if headers.get("x-shopify-access-token") != self.token:
            rec["status"] = 401
            return 401, {}, b'{"errors":"[API] Invalid API key or access token"}'
        if self.rate > 0:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
            self.refilled = now
            if self.tokens < 1:
                self.throttle += 1
            else:
                self.tokens -= 1
        if self.later_pages_fail > 0 and "page_info" in q:
            self.later_pages_fail -= 1
            st = rec["status"] = self.later_pages_status
            headers = {"Retry-After": self.retry_after} if st in (429, 503) else {}
            return st, headers, b'{"errors":"not now"}'
        if self.throttle > 0:
            self.throttle -= 1
            rec["status"] = 429
            return 429, {"Retry-After": self.retry_after}, b'{"errors":"Exceeded 2 calls per second"}'
        if self.fail > 0:
            self.fail -= 1
            rec["status"] = 500
            return 500, {}, b"oops"
        with self.lock:
            items = sorted(self.orders.values(), key=lambda o: (o["updated_at"], o["id"]))
        if "updated_at_min" in q:
            items = [o for o in items if o["updated_at"] >= q["updated_at_min"]]
        start = int(q.get("page_info", "0"))
        page = items[start:start + self.page_size]
        body = json.dumps({"orders": page}).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        out = {"Content-Type": "application/json", "ETag": etag}
        if start == 0 and headers.get("if-none-match") == etag:
            rec["status"] = 304
            return 304, {"ETag": etag}, b""
        if start + self.page_size < len(items):
            base = dict(q)
            base["page_info"] = str(start + self.page_size)
            nxt = f"{self.link_origin or self.origin}{u.path}?{urllib.parse.urlencode(base)}"
            out["Link"] = f'<{nxt}>; rel="next"'
        rec["status"] = 200
        return 200, out, body

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def main():
    ap = argparse.ArgumentParser(description="A shop whose orders must be polled.")
    ap.add_argument("--port", type=int, default=8094)
    ap.add_argument("--token", default="shpat_demo_token")
    ap.add_argument("--page-size", type=int, default=10)
    ap.add_argument("--rate", type=float, default=2.0, help="requests/s before 429 (2, as Shopify)")
    ap.add_argument("--orders", type=int, default=20, help="orders present at start")
    ap.add_argument("--new-every", type=float, default=0, help="add or update an order every N s")
    ap.add_argument("--template", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                       "tests", "fixtures",
                                                       "shopify_order_create.json"))
    a = ap.parse_args()
    # scripts/demo stops its services with SIGTERM: leave as cleanly as on Ctrl-C
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with open(a.template) as f:
        template = json.load(f)
    shop = Shop(token=a.token, page_size=a.page_size, port=a.port, rate=a.rate)
    rnd = random.Random(7)
    next_id = 7_000_000_000_000

    def new_order():
        nonlocal next_id
        next_id += 1
        o = copy.deepcopy(template)
        o["id"] = next_id
        o["name"] = "#L%d" % (next_id % 100000)
        o["updated_at"] = _iso(time.time())
        o["financial_status"] = rnd.choice(["paid", "pending"])
        shop.put(o)

    for _ in range(a.orders):
        new_order()
    print(f"shopsim: {shop.url} token {a.token}", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(a.new_every or 3600)
            if a.new_every:
                if shop.orders and rnd.random() < 0.3:
                    o = copy.deepcopy(rnd.choice(list(shop.orders.values())))
                    o["updated_at"] = _iso(time.time())
                    o["financial_status"] = "paid"
                    shop.put(o)
                else:
                    new_order()
    except KeyboardInterrupt:
        pass
    finally:
        shop.close()


if __name__ == "__main__":
    main()
