"""Measures what delayed ACKs cost the agent's forwarder against apps that write a response's
headers and body in two small writes with Nagle on (Python's ``http.server``, and many others),
and what ``TCP_QUICKACK`` on the agent's socket to the app saves. Loopback only, bounded.

    .venv/bin/python scripts/quickack_probe.py [--requests 200]

It runs the agent's real ``Forwarder`` twice against the same app: with its quick ACKs turned
off, and as it is, with ``TCP_QUICKACK`` set on its connection once each request is sent (Linux
re-arms delayed ACKs after each exchange, so the forwarder sets it per request).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from hatchway.protocol import Request
from hatchway.serving.forward import Forwarder, Target
from hatchway.transport import http1

BODY = b"x" * 270
"""The size the issue saw in the inspector: a small JSON answer."""


class NagleApp(BaseHTTPRequestHandler):
    """What `python -m http.server` and similar apps do: headers, then the body, Nagle on."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()  # one write
        self.wfile.write(BODY)  # a second small write: held by Nagle until the first is ACKed

    def log_message(self, format: str, *args: object) -> None:
        pass


class ClosingNagleApp(NagleApp):
    """`python -m http.server` itself: HTTP/1.0, one connection per request."""

    protocol_version = "HTTP/1.0"


@contextmanager
def without_quick_acks() -> Iterator[None]:
    """The forwarder as it was before it asked for quick ACKs."""
    kept = http1._QUICKACK
    http1._QUICKACK = None
    try:
        yield
    finally:
        http1._QUICKACK = kept


@contextmanager
def running_app(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def timings(make: Callable[[Target], Forwarder], port: int, count: int) -> list[float]:
    forwarder = make(Target("127.0.0.1", port))
    try:
        spent = []
        for i in range(count):
            request = Request(f"r{i}", "probe", "GET", "/", headers=(("Host", "probe"),))
            started = time.perf_counter()
            response = forwarder.handle(request)
            spent.append((time.perf_counter() - started) * 1000)
            assert response.status == 200 and response.body == BODY, response
        return spent
    finally:
        forwarder.close()


def describe(name: str, spent: list[float]) -> str:
    ordered = sorted(spent)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return (
        f"{name:<26} median {statistics.median(spent):7.2f} ms   p90 {p90:7.2f} ms   "
        f"total {sum(spent) / 1000:6.2f} s for {len(spent)} requests"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    count = max(10, min(args.requests, 2000))
    for handler, kind in ((NagleApp, "keep-alive"), (ClosingNagleApp, "HTTP/1.0")):
        with running_app(handler) as port:
            with without_quick_acks():
                print(describe(f"{kind}, no quick ACKs", timings(Forwarder, port, count)))
            print(describe(f"{kind}, TCP_QUICKACK", timings(Forwarder, port, count)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
