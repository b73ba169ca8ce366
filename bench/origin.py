"""The benchmark's origin app: a minimal HTTP/1.1 keep-alive server on raw asyncio, fast enough
that the tunnel, not the app, is what a run measures.

``GET /bytes/N`` answers N incompressible bytes (the same seeded bytes every time, like a file
of random data an nginx would serve); ``POST /echo`` answers the request body. Several worker
processes (started by the bench, one per CPU) share the port through ``SO_REUSEPORT``, as
nginx's ``worker_processes auto`` does.

    python bench/origin.py PORT      # one worker; prints "origin ready" once it listens
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket

MAX_BODY_BYTES = 64 * 1024 * 1024
"""Largest body the origin serves or accepts (the 10 MB GET fits)."""

MAX_HEAD_BYTES = 64 * 1024
"""Largest request head; a longer one closes the connection."""

PAYLOAD_SEED = 1013
"""Seed of the served bytes, so that every run serves the same body."""

_PAYLOADS: dict[int, bytes] = {}


def payload(size: int) -> bytes:
    """``size`` seeded random bytes (incompressible: zlib cannot shrink them)."""
    if size not in _PAYLOADS:
        _PAYLOADS[size] = random.Random(PAYLOAD_SEED).randbytes(size)
    return _PAYLOADS[size]


def _response(status: str, body: bytes) -> list[bytes]:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("ascii")
    # One write for small answers; large bodies go out as they are, uncopied.
    return [head + body] if len(body) < 16384 else [head, body]


class Origin(asyncio.Protocol):
    """One client connection: requests parsed from a buffer, answered in order."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and self._serve_one():
            pass

    def _serve_one(self) -> bool:
        """Answer the first complete request in the buffer; False if none is complete yet."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD_BYTES:
                self._close()
            return False
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        method, target, _ = lines[0].split(b" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length > MAX_BODY_BYTES:
            self._close()
            return False
        if len(self.buffer) < end + 4 + length:
            return False
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        assert self.transport is not None
        if method == b"GET" and target.startswith(b"/bytes/"):
            size = int(target[len(b"/bytes/") :])
            parts = _response("200 OK", payload(min(size, MAX_BODY_BYTES)))
        elif method == b"POST" and target == b"/echo":
            parts = _response("200 OK", body)
        else:
            parts = _response("404 Not Found", b"not found\n")
        self.transport.writelines(parts)
        return True

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    port = parser.parse_args().port
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Workers started with the same port share it, each accepting its own connections.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Origin, sock=sock, backlog=1024)
        print("origin ready", flush=True)
        await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
