"""A small HTTP/1.1 server for the agent's loopback page (the inspector), on ``socketserver``.

Python's ``http.server`` imports ``http.client``, and with it ``ssl`` (OpenSSL) and ``email``:
5.3 MiB of an agent whose inspector only ever speaks plain HTTP on loopback, most of its peak
RSS beyond the goal of 30 MiB (``docs/benchmarks.md``). This server parses what a page and its
scripts send (a request line, header lines, a ``Content-Length`` body the handler reads) and
answers in the ways ``BaseHTTPRequestHandler`` does (``send_response``, ``send_header``,
``end_headers``, ``wfile``), so that ``json_replies.JsonReplies`` serves on either. It imports
nothing beyond ``socketserver``.

Connections are kept alive as HTTP/1.1 says (HTTP/1.0 ones are closed after one answer); a
request line or head past its limit, or a head that is not HTTP, is answered 4xx and the
connection closed; a method without a ``do_METHOD`` is answered 501.
"""

from __future__ import annotations

import logging
import socketserver
from http import HTTPStatus
from typing import Any, overload

log = logging.getLogger("hatchway.ui.loopback_http")

MAX_REQUEST_LINE_BYTES = 64 * 1024
"""Longest request line read (``http.server``'s limit): a page's URLs are short, and a longer
line is answered 414 rather than held."""

MAX_HEADER_LINE_BYTES = 64 * 1024
"""Longest header line read (``http.client``'s limit, which ``http.server`` applies)."""

MAX_HEADERS = 100
"""Most header lines in one request (``http.client``'s limit): a browser sends about 15."""

SINGLE_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "origin"})
"""Headers a request may carry once only: two that differ would let the checks read one and
the body the other, so such a request is refused."""


class BadRequest(Exception):
    """The request's head cannot be served; ``status`` is the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RequestHeaders:
    """A request's headers by case-insensitive name; ``get`` gives the first value."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._first: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._first:
                if key in SINGLE_HEADERS and self._first[key] != value:
                    raise BadRequest(400, f"two different {name} headers")
                continue
            self._first[key] = value

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first


class LoopbackHTTPServer(socketserver.ThreadingTCPServer):
    """One thread per connection, daemon threads, the address reusable at once after a close
    (as ``http.server.ThreadingHTTPServer``)."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback on stderr, over the agent's screen.
        log.debug("loopback page: a connection from %s failed", client_address, exc_info=True)


class RequestHandler(socketserver.StreamRequestHandler):
    """Reads requests off one connection and calls ``do_<METHOD>`` for each.

    A handler reads ``command``, ``path``, ``request_version`` and ``headers``, reads a body from
    ``rfile`` itself, and answers with ``send_response``, ``send_header``, ``end_headers`` and
    ``wfile``; setting ``close_connection`` ends the connection after the answer. A subclass's
    ``timeout`` closes a connection silent (or not reading) that long."""

    disable_nagle_algorithm = True
    """A head and its body go in two writes: Nagle would hold the body for the client's
    delayed ACK (40 ms on Linux loopback)."""

    command = ""
    path = ""
    request_version = "HTTP/1.1"
    headers: RequestHeaders = RequestHeaders([])
    close_connection = True

    def handle(self) -> None:
        self.close_connection = True
        self._head: list[bytes] = []
        self._said_close = False
        try:
            self._serve_one()
            while not self.close_connection:
                self._serve_one()
        except (TimeoutError, ConnectionError):
            pass  # a silent or vanished client: its connection is simply closed

    def _serve_one(self) -> None:
        self.close_connection = True
        line = self.rfile.readline(MAX_REQUEST_LINE_BYTES + 1)
        if not line:
            return
        try:
            self._parse(line)
        except BadRequest as exc:
            self.command = self.command or "GET"
            self._refuse(exc.status, str(exc))
            return
        handler = getattr(self, f"do_{self.command}", None)
        if handler is None:
            self._refuse(501, f"the method {self.command} is not served here")
            return
        handler()
        self.wfile.flush()

    def _parse(self, line: bytes) -> None:
        self.command, self.path = "", ""
        if len(line) > MAX_REQUEST_LINE_BYTES:
            raise BadRequest(414, f"the request line is longer than {MAX_REQUEST_LINE_BYTES}")
        words = line.decode("latin-1").rstrip("\r\n").split()
        if len(words) != 3 or not words[2].startswith("HTTP/1."):
            raise BadRequest(400, "the request line is not METHOD TARGET HTTP/1.x")
        self.command, self.path, self.request_version = words
        pairs: list[tuple[str, str]] = []
        while True:
            raw = self.rfile.readline(MAX_HEADER_LINE_BYTES + 1)
            if len(raw) > MAX_HEADER_LINE_BYTES:
                raise BadRequest(431, f"a header line is longer than {MAX_HEADER_LINE_BYTES}")
            if not raw:
                raise ConnectionError("the client left inside a request head")
            if raw in (b"\r\n", b"\n"):
                break
            if len(pairs) == MAX_HEADERS:
                raise BadRequest(431, f"more than {MAX_HEADERS} header lines")
            name, colon, value = raw.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip() or name[0] in " \t":
                raise BadRequest(400, "a header line is not NAME: VALUE")
            pairs.append((name, value.strip()))
        self.headers = RequestHeaders(pairs)
        connection = (self.headers.get("Connection") or "").lower()
        if self.request_version == "HTTP/1.0":
            self.close_connection = "keep-alive" not in connection
        else:
            self.close_connection = "close" in connection
        if (self.headers.get("Expect") or "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, status: int, message: str) -> None:
        self.close_connection = True
        body = f"{status} {HTTPStatus(status).phrase}: {message}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    # --- Answering (as BaseHTTPRequestHandler) ------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_message('"%s %s" %s', self.command, self.path, code)
        phrase = HTTPStatus(code).phrase if message is None else message
        self._head = [f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")]
        self._said_close = False

    def send_header(self, keyword: str, value: str) -> None:
        self._head.append(f"{keyword}: {value}\r\n".encode("latin-1"))
        if keyword.lower() == "connection" and value.lower() == "close":
            self.close_connection = self._said_close = True

    def end_headers(self) -> None:
        if self.close_connection and not self._said_close:
            self._head.append(b"Connection: close\r\n")
        self._head.append(b"\r\n")
        self.wfile.write(b"".join(self._head))
        self._head = []

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("loopback page: " + format, *args)
