#!/usr/bin/env python3
"""A webhook receiver that answers the way common web frameworks do (Express
on Node, and most others, by default): HTTP/1.1 keep-alive announced with
"Connection: keep-alive" and "Keep-Alive: timeout=5", a Date header, a small
JSON body sent with chunked transfer encoding, and idle connections closed
by the server after 5 seconds. scripts/bench sends deliveries to three of
these to check that what ordersync spends per delivery does not depend on
how a receiver answers.

    framework_receiver.py PORT STATE_FILE

It answers every POST 200 and counts connections and requests; on SIGTERM
it writes {"connections": N, "requests": M, "idle_closes": K} to STATE_FILE.
"""
import asyncio
import json
import signal
import sys
from email.utils import formatdate

IDLE_S = 5.0
BODY = b'{"received":true}'
CHUNKED = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)

stats = {"connections": 0, "requests": 0, "idle_closes": 0}
date = {"value": formatdate(usegmt=True).encode()}


class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        stats["connections"] += 1
        self.t = transport
        self.buf = b""
        self.idle = None
        self.arm()

    def arm(self):
        if self.idle is not None:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(IDLE_S, self.expire)

    def expire(self):
        stats["idle_closes"] += 1
        self.t.close()

    def connection_lost(self, exc):
        if self.idle is not None:
            self.idle.cancel()

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buf[:end].lower()
            n = 0
            i = head.find(b"\ncontent-length:")
            if i >= 0:
                n = int(head[i + 16:head.find(b"\r", i + 1) if head.find(b"\r", i + 1) > 0 else None])
            if len(self.buf) < end + 4 + n:
                break
            self.buf = self.buf[end + 4 + n:]
            stats["requests"] += 1
            out.append(b"HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\n"
                       b"Content-Type: application/json; charset=utf-8\r\n"
                       b"Date: " + date["value"] + b"\r\nConnection: keep-alive\r\n"
                       b"Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n" + CHUNKED)
        if out:
            self.t.write(b"".join(out))
            self.arm()


async def main(port, state_file):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    loop.add_signal_handler(signal.SIGINT, stop.set_result, None)

    async def tick():
        while True:
            await asyncio.sleep(1)
            date["value"] = formatdate(usegmt=True).encode()

    ticker = loop.create_task(tick())
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=1024)
    await stop
    ticker.cancel()
    server.close()
    with open(state_file, "w") as f:
        json.dump(stats, f)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
