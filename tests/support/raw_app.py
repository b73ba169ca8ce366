"""A scripted local app on a raw socket for tests: it records the exact bytes of every request
and answers each with whatever bytes the test scripts, including broken answers (a body cut
short, a connection reset after reading a request) that a real framework would never send."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

READ_TIMEOUT_SECONDS = 10.0
"""Longest the app waits for the next bytes of a request."""


@dataclass(frozen=True)
class RawRequest:
    head: bytes
    """Request line and header lines, as received (CRLFs included, the blank line not)."""
    body: bytes
    connection: int
    """Which connection it came on (0 for the first accepted)."""
    index: int
    """Its place among the requests of that connection (0 for the first)."""

    @property
    def method(self) -> str:
        return self.head.split(b" ", 1)[0].decode("ascii")

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


@dataclass(frozen=True)
class RawAnswer:
    data: bytes = b""
    then: str = "keep"
    """After writing ``data``: ``keep`` the connection for the next request, ``close`` it, or
    ``reset`` it (RST, as a crashed app's kernel does)."""


def ok(body: bytes = b"ok", *headers: bytes) -> RawAnswer:
    """A well-formed 200 with a Content-Length, kept alive."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return RawAnswer(head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body)


class RawApp:
    """Serves ``answer(request)`` for each request on 127.0.0.1 (``port``)."""

    def __init__(self, answer: Callable[[RawRequest], RawAnswer]) -> None:
        self.answer = answer
        self.requests: list[RawRequest] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._lock = threading.Lock()
        self._connections = 0

    def serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                number, self._connections = self._connections, self._connections + 1
            threading.Thread(target=self._serve_one, args=(sock, number), daemon=True).start()

    def _serve_one(self, sock: socket.socket, number: int) -> None:
        sock.settimeout(READ_TIMEOUT_SECONDS)
        buffer = b""
        try:
            for index in range(1_000):
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                request = RawRequest(head, b"", number, index)
                length = int(request.header(b"content-length") or 0)
                while len(buffer) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                request = RawRequest(head, buffer[:length], number, index)
                buffer = buffer[length:]
                with self._lock:
                    self.requests.append(request)
                answer = self.answer(request)
                sock.sendall(answer.data)
                if answer.then == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if answer.then == "close":
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.listener.close()


@contextmanager
def run_raw_app(answer: Callable[[RawRequest], RawAnswer]) -> Iterator[RawApp]:
    app = RawApp(answer)
    threading.Thread(target=app.serve, daemon=True).start()
    try:
        yield app
    finally:
        app.close()
