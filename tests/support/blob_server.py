"""A scripted HTTP server on loopback standing in for the relay's blob store: it answers each
request with the bytes a test sets and keeps what it received, head and body."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Scripted:
    """A one-connection-at-a-time HTTP server that answers each request with ``reply`` bytes
    and keeps what it received (head and body)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        """What every request is answered with. The server closes each connection after one
        answer, so the default says so: without it a client may reuse the connection before the
        close reaches it, and a request it cannot repeat fails with a reset."""
        self.received: list[bytes] = []
        self.arrived = threading.Event()
        """Set once a request (or what came of it before its client gave up) is recorded."""

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:  # the client gave up mid-body: record what came
                        break
                    body += chunk
                self.received.append(head + b"\r\n\r\n" + body)
                self.arrived.set()
                with contextlib.suppress(OSError):  # a client that gave up may be gone
                    conn.sendall(self.reply)


@contextmanager
def scripted_server() -> Iterator[Scripted]:
    scripted = Scripted()
    threading.Thread(target=scripted.serve, daemon=True).start()
    try:
        yield scripted
    finally:
        scripted.listener.close()
