"""A raw-socket HTTP/1.1 client for tests that need what ``http.client`` will not do: send
headers or a body in pieces, stop halfway, put arbitrary bytes in a header, and see the exact
bytes of the answer and when the server closed."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass


@dataclass
class RawAnswer:
    status: int
    head: bytes
    """The status line and headers exactly as sent, up to the blank line."""
    body: bytes

    def header(self, name: str) -> bytes | None:
        prefix = name.lower().encode() + b":"
        for line in self.head.split(b"\r\n")[1:]:
            if line.lower().startswith(prefix):
                return line[len(prefix) :].strip()
        return None


class RawClient:
    """One connection to 127.0.0.1:``port``; every read is bounded by ``timeout``."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def answer(self, to_head: bool = False) -> RawAnswer:
        """The next response (its body by Content-Length; none if it has none, or if it
        answers a HEAD: ``to_head``)."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a whole response: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        answer = RawAnswer(int(head.split(b" ", 2)[1]), head, b"")
        length = 0 if to_head else int(answer.header("content-length") or 0)
        while len(self.buffer) < length:
            if not self._fill():
                break
        answer.body, self.buffer = self.buffer[:length], self.buffer[length:]
        return answer

    def seconds_until_closed(self) -> float:
        """How long until the server closes the connection (reading and dropping whatever it
        sends meanwhile); ``socket.timeout`` if it is still open after ``timeout``."""
        started = time.monotonic()
        while True:
            try:
                if not self._fill():
                    return time.monotonic() - started
            except ConnectionResetError:
                return time.monotonic() - started

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
