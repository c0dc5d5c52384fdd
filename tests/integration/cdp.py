"""A small Chrome DevTools Protocol client for browser tests: Debian's headless
Chromium driven over --remote-debugging-pipe (NUL-separated JSON messages on
file descriptors 3 and 4), so no WebSocket library and no npm package is
needed. Enough for tests: navigate, evaluate JavaScript, click, wait for a
condition, take screenshots, and record JavaScript dialogs (an alert() means
injected script ran)."""
import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The brief's flags: headless, no sandbox (CI runs as root), nothing that
# reaches the network on its own, and a fresh profile per run.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--window-size=1280,900", "--remote-debugging-pipe"]


def available():
    """(True, "") when Chromium can start here, else (False, why)."""
    if not os.access(CHROMIUM, os.X_OK):
        return False, "chromium is not installed (scripts/install-deps installs it)"
    try:
        p = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--version"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"chromium cannot run: {e}"
    if p.returncode != 0:
        return False, f"chromium cannot run: {p.stderr.strip()[:200]}"
    return True, ""


class CDPError(Exception):
    pass


class Browser:
    def __init__(self, timeout=30):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="ordersync-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # the child's ends move above 9, so that making them 3 and 4 cannot
        # overwrite one with the other (pipes may get any free number); bash,
        # not sh: dash takes only one-digit descriptors in redirections
        for name in ("to_child_r", "from_child_w"):
            fd = locals()[name]
            high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
            os.close(fd)
            if name == "to_child_r":
                to_child_r = high
            else:
                from_child_w = high
        # the child must see the pipes as fds 3 (commands in) and 4 (replies out)
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w}',
             CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            pass_fds=(to_child_r, from_child_w), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._next = 0
        self._lock = threading.Lock()
        self._waiting = {}
        self.events = queue.Queue()
        self.dialogs = []  # messages of JavaScript dialogs that opened
        self.console_errors = []
        threading.Thread(target=self._read, daemon=True).start()
        self.session = None
        self._attach()

    # ------------------------------------------------------------ protocol

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                for q in list(self._waiting.values()):
                    q.put({"error": {"message": "browser closed"}})
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    q = self._waiting.pop(msg["id"], None)
                    if q is not None:
                        q.put(msg)
                else:
                    self._on_event(msg)

    def _on_event(self, msg):
        method = msg.get("method")
        params = msg.get("params", {})
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(params.get("message"))
            # answered from another thread: this one must keep reading
            threading.Thread(target=self.send, args=("Page.handleJavaScriptDialog",
                                                     {"accept": False}), daemon=True).start()
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(params.get("exceptionDetails", {}).get("text"))
        self.events.put(msg)

    def send(self, method, params=None, session=True, timeout=None):
        with self._lock:
            self._next += 1
            mid = self._next
            q = queue.Queue()
            self._waiting[mid] = q
            msg = {"id": mid, "method": method, "params": params or {}}
            if session and self.session:
                msg["sessionId"] = self.session
            os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise CDPError(f"{method}: no answer within {timeout or self.timeout} s")
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def _attach(self):
        deadline = time.time() + self.timeout
        while True:
            targets = self.send("Target.getTargets", session=False)["targetInfos"]
            pages = [t for t in targets if t["type"] == "page"]
            if pages:
                break
            if time.time() > deadline:
                raise CDPError("no page target")
            time.sleep(0.1)
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": pages[0]["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Network.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})

    # ------------------------------------------------------------ what tests use

    def goto(self, url):
        self.send("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete' && location.href !== 'about:blank'")

    def eval(self, expression):
        """The value of a JavaScript expression (awaited if it is a promise)."""
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                           "awaitPromise": True})
        if "exceptionDetails" in r:
            raise CDPError(f"{expression[:80]}: {r['exceptionDetails'].get('text')} "
                           f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r["result"].get("value")

    def wait(self, expression, timeout=None, what=None):
        """Waits until the expression is truthy; returns its value (True for an element)."""
        deadline = time.time() + (timeout or self.timeout)
        last = None
        # an element does not travel by value (it would arrive as {}, falsy)
        probe = f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()"
        while time.time() < deadline:
            try:
                v = self.eval(probe)
                if v:
                    return v
            except CDPError as e:  # e.g. while a navigation replaces the document
                last = e
            time.sleep(0.1)
        raise CDPError(f"timed out waiting for {what or expression} ({last})")

    def click(self, selector):
        self.wait(f"document.querySelector({json.dumps(selector)}) !== null", what=selector)
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")

    def fill(self, selector, value):
        self.wait(f"document.querySelector({json.dumps(selector)}) !== null", what=selector)
        self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                  f" e.value = {json.dumps(value)};"
                  f" e.dispatchEvent(new Event('input', {{bubbles: true}})); }})()")

    def text(self, selector="body"):
        return self.eval(f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''")

    def cookies(self, url):
        """The cookies the browser would send to url (HttpOnly ones too)."""
        return self.send("Network.getCookies", {"urls": [url]})["cookies"]

    def set_cookie(self, url, name, value):
        """Sets a cookie for url as a server would (HttpOnly), e.g. to stand in
        for a session that expired while the page was open."""
        ok = self.send("Network.setCookie", {"url": url, "name": name, "value": value,
                                             "httpOnly": True, "sameSite": "Strict"})
        if not ok.get("success", True):
            raise CDPError(f"could not set cookie {name}")

    def width(self):
        """(document width, window width) in CSS pixels: a page wider than its
        window scrolls sideways."""
        return tuple(self.eval("[document.documentElement.scrollWidth, window.innerWidth]"))

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))
        return path

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except CDPError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)
