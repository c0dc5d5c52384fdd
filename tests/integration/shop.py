"""A shop that cannot push: it serves a Shopify-style paginated orders list
(GET /admin/api/orders.json?updated_at_min=...&limit=..., Link: rel="next",
ETag + 304, 429 with Retry-After when told) for poller tests. Real HTTP."""
import hashlib
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Shop:
    def __init__(self, token="shpat_test_token", page_size=2):
        self.orders = {}  # id -> order dict
        self.lock = threading.Lock()
        self.token = token
        self.page_size = page_size
        self.requests = []  # (path, headers, status)
        self.throttle = 0   # answer the next N requests with 429
        self.fail = 0       # answer the next N requests with 500
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/admin/api/orders.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

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
        if self.throttle > 0:
            self.throttle -= 1
            rec["status"] = 429
            return 429, {"Retry-After": "1"}, b'{"errors":"Exceeded 2 calls per second"}'
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
            nxt = f"http://127.0.0.1:{self.port}{u.path}?{urllib.parse.urlencode(base)}"
            out["Link"] = f'<{nxt}>; rel="next"'
        rec["status"] = 200
        return 200, out, body

    def close(self):
        self.server.shutdown()
        self.server.server_close()
