"""A real local app for tests: a threaded HTTP/1.1 server on 127.0.0.1 that records exactly what
arrived (method, raw target, headers in order, body, client port) and offers a few endpoints:

/echo...            200 JSON of the request          /bytes?n=N&seed=S   N deterministic bytes
/upload             the request body back            /cookies            3 Set-Cookie, X-Multi twice
/status/NNN         that status (no body for 204/304) /redirect          302 to /echo/after
/slow?s=SECONDS     answers after a while (never past the app's shutdown)
/repeat?n=N&byte=B  N copies of one byte (a body that compresses to almost nothing)
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    client_port: int


def pseudo_random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


class LocalApp:
    def __init__(self, server: ThreadingHTTPServer, stopping: threading.Event) -> None:
        self.server = server
        self.stopping = stopping
        self.port = int(server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Seen] = []
        self.arrived = threading.Condition()
        self.next_event = threading.Semaphore(0)
        """``/events`` writes its first event at once, and each further one when released."""

    def record(self, seen: Seen) -> None:
        with self.arrived:
            self.requests.append(seen)
            self.arrived.notify_all()

    def wait_for_request(self, target: str, timeout: float = 10.0) -> Seen:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while (remaining := deadline - time.monotonic()) > 0:
                for seen in self.requests:
                    if seen.target == target:
                        return seen
                self.arrived.wait(remaining)
        raise AssertionError(f"the local app never received {target}")

    @staticmethod
    def expected_bytes(n: int, seed: int) -> bytes:
        return pseudo_random_bytes(n, seed)


def _handler(app_ref: list[LocalApp]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms stalls

        def log_message(self, format: str, *args: object) -> None:
            pass

        def handle_one_request(self) -> None:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            app = app_ref[0]
            seen = Seen(
                self.command, self.path, list(self.headers.items()), body, self.client_address[1]
            )
            app.record(seen)
            self._route(app, seen)
            self.wfile.flush()

        def _send(
            self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()
        ) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if status not in (204, 304):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and status not in (204, 304):
                self.wfile.write(body)

        def _events(self, app: LocalApp, count: int, whole: bool) -> None:
            """``count`` events ("data: <i>"), each after ``app.next_event`` is released (the
            first at once); the body ends properly unless ``whole`` is False (cut instead)."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(count):
                if i and not app.next_event.acquire(timeout=10):
                    break
                event = f"data: {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            if whole:
                self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def _route(self, app: LocalApp, seen: Seen) -> None:
            parts = urllib.parse.urlsplit(seen.target)
            query = dict(urllib.parse.parse_qsl(parts.query))
            path = parts.path
            if path.startswith("/echo"):
                report = {
                    "method": seen.method,
                    "target": seen.target,
                    "headers": seen.headers,
                    "body_sha256": hashlib.sha256(seen.body).hexdigest(),
                    "body_len": len(seen.body),
                }
                self._send(
                    200, json.dumps(report).encode(), (("Content-Type", "application/json"),)
                )
            elif path == "/bytes":
                data = pseudo_random_bytes(int(query.get("n", "0")), int(query.get("seed", "0")))
                self._send(200, data, (("Content-Type", "application/octet-stream"),))
            elif path == "/repeat":  # as compressible as a body gets
                data = query.get("byte", "x").encode()[:1] * int(query.get("n", "0"))
                self._send(200, data, (("Content-Type", "text/plain"),))
            elif path == "/upload":
                digest = hashlib.sha256(seen.body).hexdigest()
                self._send(
                    200,
                    seen.body,
                    (("Content-Type", "application/octet-stream"), ("X-Body-Sha256", digest)),
                )
            elif path == "/cookies":
                self._send(
                    200,
                    b"cookies",
                    (
                        ("Set-Cookie", "a=1; Path=/"),
                        ("Set-Cookie", "b=2; HttpOnly"),
                        ("Set-Cookie", "c=3; Max-Age=60"),
                        ("X-Multi", "a"),
                        ("X-Multi", "b"),
                    ),
                )
            elif path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]))
            elif path == "/redirect":
                self._send(302, b"", (("Location", "/echo/after"),))
            elif path == "/events":  # server-sent events, chunked, as dev servers send them
                self._events(app, int(query.get("n", "3")), query.get("end") != "cut")
            elif path == "/slow":
                app.stopping.wait(float(query.get("s", "1")))
                self._send(200, b"slow")
            else:
                self._send(404, b"no such endpoint")

    return Handler


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up before the answer (a visitor's timeout, a cut tunnel) is what many
    tests arrange: the app's write then fails, and that is no error worth a traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def run_local_app() -> Iterator[LocalApp]:
    app_ref: list[LocalApp] = []
    server = _QuietServer(("127.0.0.1", 0), _handler(app_ref))
    server.daemon_threads = True
    stopping = threading.Event()
    app = LocalApp(server, stopping)
    app_ref.append(app)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield app
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
