"""Forwarding one tunnel request to the local app, byte-exact, and only ever to its target.

Uses the stdlib ``http.client`` at the level of ``putrequest``/``putheader`` so that nothing is
added (no User-Agent, no Accept-Encoding), nothing is re-quoted, and headers keep their order and
repeats. Header values travel as UTF-8 both ways (bytes that are not UTF-8 as they were, through
``surrogateescape``), not as ``http.client``'s Latin-1. Idle connections to the local app are
pooled and reused; a pooled one the app closed is replaced before anything is written to it, and
a request is sent again on a fresh connection only when its method is safe to repeat. A response
body is read up to the tunnel's limit: ``MAX_BODY_BYTES`` (what passes through Lambda), or
``MAX_BLOB_BYTES`` for a tunnel whose large responses the relay redirects to its blob store; a
body shorter than the app announced is the app's fault, never a 200.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import urllib.parse
from dataclasses import dataclass

from hatchway import protocol
from hatchway.protocol import Fault, ProtocolError, Request, Response

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
"""Linux only: acknowledge at once instead of after the delayed-ACK timer (see ``_send``)."""

POOL_SIZE = 32
"""Most idle connections to the local app kept for reuse."""

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
"""Methods that always carry a Content-Length, even for an empty body."""

RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods sent again on a fresh connection when a reused one fails after the request was
written: the safe methods of RFC 9110 section 9.2.1. PUT and DELETE are idempotent too, but an
app may not implement them so; anything else may have been acted on, and runs at most once."""

_STALE_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_HEADER_ENCODING = "utf-8"


@dataclass(frozen=True)
class LargeResponse(Response):
    """A response whose body exceeds ``MAX_BODY_BYTES`` (up to ``MAX_BLOB_BYTES``): it cannot
    travel in a message, so the session uploads it to the relay's blob store."""

    def __post_init__(self) -> None:
        # Every check of a Response but the body's size, which the blob store bounds instead.
        Response(self.id, self.status, self.headers, fault=self.fault)
        if len(self.body) > protocol.MAX_BLOB_BYTES:
            raise ProtocolError(
                f"local app's response body is {len(self.body)} bytes; the relay's blob store "
                f"takes at most {protocol.MAX_BLOB_BYTES}",
                status=413,
            )


def response_with_body(
    request_id: str, status: int, headers: protocol.Headers, body: bytes
) -> Response:
    """A Response, or a LargeResponse when the body is above what a Lambda carries."""
    kind = LargeResponse if len(body) > protocol.MAX_BODY_BYTES else Response
    return kind(request_id, status, headers, body)


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_target(text: str) -> Target:
    """``3000``, ``host:port`` or ``http://host:port`` → Target; anything else is refused."""
    text = text.strip()
    if text.isdigit():
        return _checked(Target("127.0.0.1", int(text)))
    if "://" not in text:
        text = "http://" + text
    parts = urllib.parse.urlsplit(text)
    if parts.scheme != "http":
        raise ValueError(f"target {text!r}: only http:// local apps are supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"target {text!r}: give only a host and a port, e.g. localhost:3000")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"target {text!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname or port is None:
        raise ValueError(f"target {text!r}: give a port, e.g. 3000 or localhost:3000")
    return _checked(Target(parts.hostname, port))


def _checked(target: Target) -> Target:
    if not 1 <= target.port <= 65535:
        raise ValueError(f"target port {target.port} is not from 1 to 65535")
    return target


def _ascii_target(target: str) -> str:
    """Percent-encode any non-ASCII character (never present in what API Gateway delivers)."""
    if target.isascii():
        return target
    return urllib.parse.quote(target, safe="".join(chr(c) for c in range(33, 127)))


def _header_bytes(value: str) -> bytes:
    """A header value as the visitor sent it: UTF-8, with undecodable bytes restored."""
    return value.encode(_HEADER_ENCODING, "surrogateescape")


def _header_text(value: str) -> str:
    """A header value from ``http.client`` (bytes decoded as Latin-1) as the protocol carries
    it: UTF-8 decoded, bytes that are not UTF-8 kept through ``surrogateescape``."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire: leave it alone
        return value
    return raw.decode(_HEADER_ENCODING, "surrogateescape")


def _response_headers(method: str, headers: list[tuple[str, str]]) -> protocol.Headers:
    """The app's headers without hop-by-hop ones; a HEAD keeps its Content-Length, the only
    place the size of the body it did not send shows."""
    decoded = [(name, _header_text(value)) for name, value in headers]
    kept = protocol.strip_hop_by_hop(decoded)
    if method == "HEAD":
        kept += tuple((n, v) for n, v in decoded if n.lower() == "content-length")
    return kept


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether a pooled connection can no longer carry a request: the app closed it (or sent
    something unasked). Checked before writing, so a request never goes to a dead socket."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)  # EOF, a reset or stray bytes: none leaves it usable
    except (OSError, ValueError):
        return True


class _Truncated(Exception):
    """The app ended the connection before the body it announced was complete."""


class _NoDelayConnection(http.client.HTTPConnection):
    """http.client writes headers and a large body separately; with Nagle on, the body's last
    segment waits for the app's delayed ACK (40 ms on Linux) on every request."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Forwarder:
    """``handle(request) -> response`` against one local app. Thread-safe.

    ``max_response_bytes`` is the largest response body read from the app; a larger one is a
    fault that names the limit."""

    def __init__(
        self,
        target: Target,
        timeout: float = protocol.RESPONSE_TIMEOUT_SECONDS,
        max_response_bytes: int = protocol.MAX_BODY_BYTES,
    ) -> None:
        if not 0 < max_response_bytes <= protocol.MAX_BLOB_BYTES:
            raise ValueError(f"max_response_bytes must be 1 to {protocol.MAX_BLOB_BYTES}")
        self.target = target
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        try:
            protocol.check_target(request.path, request.query)
        except ProtocolError as exc:
            return _plain(request.id, 400, f"Refused by the hatchway agent: {exc}.")
        headers = list(protocol.strip_hop_by_hop(request.headers))
        if request.body or request.method in METHODS_WITH_BODY:
            headers.append(("Content-Length", str(len(request.body))))
        try:
            return self._exchange(request, _ascii_target(request.target), headers)
        except ValueError as exc:  # http.client refuses CR/LF/control characters
            return _plain(request.id, 400, f"Refused by the hatchway agent: {exc}.")
        except (_Truncated, http.client.IncompleteRead) as exc:
            detail = str(exc) if isinstance(exc, _Truncated) else "a chunked body was cut short"
            return self._fault(
                request, f"{self.target.url} closed the connection mid-response ({detail})"
            )
        except TimeoutError:
            return self._fault(
                request, f"{self.target.url} did not answer within {self.timeout:g} s"
            )
        except ConnectionRefusedError:
            return self._fault(
                request, f"connection refused by {self.target.url}; is the app running?"
            )
        except _STALE_ERRORS as exc:
            retried = request.method in RETRY_METHODS
            return self._fault(
                request,
                f"{self.target.url} closed the connection before answering "
                f"({exc.__class__.__name__})"
                + ("" if retried else f"; a {request.method} is not sent twice"),
            )
        except (OSError, http.client.HTTPException) as exc:
            return self._fault(
                request, f"{self.target.url} failed: {exc.__class__.__name__}: {exc}"
            )

    def _exchange(self, request: Request, target: str, headers: list[tuple[str, str]]) -> Response:
        conn, reused = self._checkout()
        try:
            try:
                response = self._send(conn, request, target, headers)
            except _STALE_ERRORS:
                # The app closed a pooled connection while the request was on its way: it may
                # have acted on it, so only a method that is safe to repeat goes again.
                if not reused or request.method not in RETRY_METHODS:
                    raise
                conn.close()
                conn, reused = self._connect(), False
                response = self._send(conn, request, target, headers)
            limit = self.max_response_bytes
            body = self._read_body(response, limit)
            if len(body) > limit:
                conn.close()
                return self._fault(
                    request,
                    f"the local app's response is larger than {limit} bytes, the most the "
                    "relay carries"
                    + (
                        " (a tunnel started with --large-responses redirect takes up to "
                        f"{protocol.MAX_BLOB_BYTES})"
                        if limit < protocol.MAX_BLOB_BYTES
                        else ""
                    ),
                    status=413,
                )
            result = response_with_body(
                request.id,
                response.status,
                _response_headers(request.method, response.getheaders()),
                body,
            )
            if response.will_close:
                conn.close()
            else:
                self._checkin(conn)
            return result
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _read_body(response: http.client.HTTPResponse, limit: int) -> bytes:
        """Up to ``limit + 1`` bytes (one more tells "too large" from "at the limit"); raises
        ``_Truncated`` when the connection ends before the announced Content-Length.
        ``http.client`` itself returns a short body then, without an error."""
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = response.read(limit + 1 - size)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        if size <= limit and response.length:  # bytes still owed when the app hung up
            raise _Truncated(f"it announced {size + response.length} bytes and sent {size}")
        return b"".join(parts)

    def _send(
        self,
        conn: http.client.HTTPConnection,
        request: Request,
        target: str,
        headers: list[tuple[str, str]],
    ) -> http.client.HTTPResponse:
        conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, _header_bytes(value))
        conn.endheaders(request.body or None)
        # Apps that write headers and body apart with Nagle on wait for our ACK of the
        # headers, which Linux delays up to 40 ms on request/response connections. The option
        # does not stick (the kernel re-arms delayed ACKs), so it is set for every request.
        if _QUICKACK is not None and conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return conn.getresponse()

    def _connect(self) -> http.client.HTTPConnection:
        return _NoDelayConnection(self.target.host, self.target.port, timeout=self.timeout)

    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(), False
            if not _dropped(conn):
                return conn, True
            conn.close()

    def _checkin(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < POOL_SIZE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _fault(self, request: Request, message: str, status: int = 502) -> Response:
        """The local app's fault; 413 asks the relay for response-too-large, not 502."""
        reason = http.client.responses.get(status, "Error")
        body = f"{status} {reason}\n\nThe local app failed: {message}.\n\n-- hatchway agent\n"
        return Response(
            request.id,
            status,
            (("content-type", "text/plain; charset=utf-8"),),
            body.encode(),
            fault=Fault("local app", message),
        )


def _plain(request_id: str, status: int, message: str) -> Response:
    return Response(
        request_id,
        status,
        (("content-type", "text/plain; charset=utf-8"), ("x-hatchway-error", "agent-refused")),
        (message + "\n").encode(),
    )
