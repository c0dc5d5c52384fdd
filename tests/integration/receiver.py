"""A real HTTP server that plays a downstream system in tests: it records every
request it receives and answers as told (200, 500, 429 + Retry-After, 410,
hang, close the connection). Part of the tests, not a mock of ordersync."""
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import webhooks as wh


# close() waits for serve_forever to see the shutdown, which it looks for
# every poll interval: socketserver's default of 0.5 s cost each test ~0.25 s
# a receiver, most of its teardown
POLL_S = 0.05


class Receiver:
    def __init__(self, name, secret=wh.DEST_SECRET):
        self.name = name
        self.secret = secret
        self.requests = []  # dicts: time, headers, body, json, status, valid
        self.lock = threading.Lock()
        self.behaviour = lambda rec: (200, {}, b'{"ok":true}')
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                headers = {k.lower(): v for k, v in self.headers.items()}
                rec = {"time": time.time(), "headers": headers, "body": body,
                       "valid": False, "status": None}
                try:
                    rec["valid"] = wh.verify_standard(headers, body, outer.secret)
                    rec["json"] = json.loads(body)
                except Exception as e:  # recorded, never raised into the server
                    rec["error"] = repr(e)
                status, extra, payload = outer.behaviour(rec)
                rec["status"] = status
                with outer.lock:
                    outer.requests.append(rec)
                if status == "hang":
                    time.sleep(extra.get("seconds", 5))
                    return
                if status == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class Server(ThreadingHTTPServer):
            # socketserver's default backlog of 5 drops connections when the
            # relay opens dozens at once (one per request in flight)
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/{name}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": POLL_S},
                         daemon=True).start()

    def fail_first(self, n, status, headers=None, body=b""):
        """Answers the first n requests with `status` and `headers` (429 and a
        Retry-After, say, or "hang" / "close"), every later one 200."""
        count = itertools.count()

        def behaviour(rec):
            if next(count) < n:
                return status, dict(headers or {}), body
            return 200, {}, b'{"ok":true}'
        self.behaviour = behaviour
        return self

    def accepted(self):
        """Requests answered 2xx, in arrival order."""
        with self.lock:
            return [r for r in self.requests if isinstance(r["status"], int) and 200 <= r["status"] < 300]

    def all(self):
        with self.lock:
            return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for(pred, timeout=20, interval=0.05, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
