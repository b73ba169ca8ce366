"""The app behind the tunnel for ``make cost``: answers after a fixed delay with JSON records or
random bytes of a requested size, and accepts any request body."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP_DELAY_SECONDS = 0.05

_EVENTS = ("invoice.paid", "customer.updated", "charge.succeeded", "order.created", "push")
_WORDS = "the quick brown fox jumps over lazy dog order shipped invoice paid refund".split()


def json_text(size: int, seed: int = 0) -> bytes:
    """A JSON array of webhook-like records (the same keys again and again, as APIs send),
    exactly ``size`` bytes long for any ``size`` of 64 or more."""
    rng = random.Random(seed)
    records: list[bytes] = []
    used = 2  # the brackets
    while True:
        n = len(records) + 1
        record = {
            "id": f"evt_{rng.getrandbits(64):016x}",
            "type": rng.choice(_EVENTS),
            "created": 1_790_000_000 + rng.randrange(10_000_000),
            "livemode": rng.random() < 0.5,
            "data": {
                "customer": f"cus_{rng.getrandbits(48):012x}",
                "email": f"user{rng.randrange(100_000)}@example.com",
                "amount": rng.randrange(100, 100_000),
                "currency": "usd",
                "description": " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(3, 9))),
            },
            "seq": n,
        }
        encoded = json.dumps(record, separators=(",", ":")).encode()
        separator = 1 if records else 0
        if used + separator + len(encoded) > size - 24:
            break
        records.append(encoded)
        used += separator + len(encoded)
    # Pad with one last record whose note fills the remaining bytes exactly.
    prefix = b',{"note":"' if records else b'{"note":"'
    room = size - used - len(prefix) - len(b'"}')
    note = " ".join(rng.choice(_WORDS) for _ in range(room)).encode()[: max(room, 0)]
    body = b"[" + b",".join(records) + prefix + note + b'"}]'
    return body


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class CostApp:
    """A threaded HTTP/1.1 app on 127.0.0.1: ``/json/N`` and ``/bytes/N`` answer N bytes,
    anything else a small JSON acknowledgement; each after ``delay`` seconds."""

    def __init__(self, server: ThreadingHTTPServer, delay: float) -> None:
        self.server = server
        self.delay = delay
        self.port = int(server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.bodies: dict[str, bytes] = {}
        self.lock = threading.Lock()

    def body_for(self, path: str) -> tuple[bytes, str]:
        kind, _, size = path.strip("/").partition("/")
        with self.lock:
            if path not in self.bodies:
                if kind == "json" and size.isdigit():
                    self.bodies[path] = json_text(int(size), seed=int(size))
                elif kind == "bytes" and size.isdigit():
                    self.bodies[path] = random_bytes(int(size), seed=int(size))
            body = self.bodies.get(path)
        if body is not None:
            return body, "application/json" if kind == "json" else "application/octet-stream"
        return b'{"ok":true}', "application/json"


def _handler(app_ref: list[CostApp]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: avoid 40 ms stalls

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self) -> None:
            app = app_ref[0]
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            time.sleep(app.delay)
            body, content_type = app.body_for(self.path.split("?", 1)[0])
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

    return Handler


@contextmanager
def run_cost_app(delay: float = APP_DELAY_SECONDS) -> Iterator[CostApp]:
    app_ref: list[CostApp] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(app_ref))
    server.daemon_threads = True
    app = CostApp(server, delay)
    app_ref.append(app)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield app
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
