"""Forwarding one tunnel request to the local app, byte-exact, and only ever to its target.

Requests go out through ``hatchway.transport.http1`` as given: nothing is added (no User-Agent, no
Accept-Encoding), nothing is re-quoted, and headers keep their order and repeats. Idle
connections to the local app are pooled and reused; a pooled one the app closed is replaced
before anything is written to it, and a request is sent again on a fresh connection only when
its method is safe to repeat. A response body is read up to the tunnel's limit:
``MAX_BODY_BYTES`` (what passes through Lambda), or ``MAX_BLOB_BYTES`` for a tunnel whose large
responses the relay redirects to its blob store; a body shorter than the app announced is the
app's fault, never a 200. With ``pass_large_bodies``, a body above what the relay's message takes
that zlib cannot shrink goes from the app straight to the request's upload URL, a buffer at a
time, and the response says it was uploaded (a ``PassedResponse`` with the body's first bytes,
read to judge it, when ``keep_passed_prefix`` asks: what the inspector shows of it). For a
tunnel started with ``--stream``, a body of unknown length (chunked, or until the app closes)
or an event stream is passed on as the app writes it (``StreamedResponse``); elsewhere a body
still coming when the relay stops waiting is a 504 that says the app was streaming.

A request that opens a visitor's WebSocket (``Request.socket``) is a WebSocket handshake with
the app on a connection of its own, at the same target: the visitor's headers with a fresh key,
answered with a ``SocketResponse`` (101 and the open link), or the app's refusal as it came.
"""

from __future__ import annotations

import dataclasses
import http
import time
import urllib.parse
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from hatchway import protocol
from hatchway.protocol import Fault, ProtocolError, Request, Response
from hatchway.serving.bodies import COMPRESSIBILITY_SAMPLE_BYTES, looks_compressible
from hatchway.serving.sockets import SocketResponse
from hatchway.transport import blobs, handshake, http1
from hatchway.transport.http1 import (
    STALE_ERRORS,
    BadReply,
    BodyStream,
    BodyTimedOut,
    Closed,
    Connection,
    Pool,
    Reply,
    SourceFailed,
    Truncated,
)

POOL_SIZE = 32
"""Most idle connections to the local app kept for reuse."""

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
"""Methods that always carry a Content-Length, even for an empty body."""

SOCKET_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)
"""The visitor's handshake headers the agent does not pass to the app (the relay drops them
too): the agent makes its own handshake, with its own key and no extension."""

RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods sent again on a fresh connection when a reused one fails after the request was
written: the safe methods of RFC 9110 section 9.2.1. PUT and DELETE are idempotent too, but an
app may not implement them so; anything else may have been acted on, and runs at most once."""


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


def _no_pieces() -> Generator[bytes, None, None]:
    yield from ()


@dataclass(frozen=True)
class StreamedResponse(Response):
    """A response whose body ``pieces`` gives as the app writes it: the session sends the head,
    then each piece in a ``Chunk`` (a tunnel started with ``--stream``)."""

    streamed: bool = True
    pieces: Generator[bytes, None, None] = field(
        default_factory=_no_pieces, repr=False, compare=False
    )


@dataclass(frozen=True)
class PassedResponse(Response):
    """A response whose body went from the app straight to the request's upload URL
    (``uploaded`` is its size), with ``prefix``, the body's first bytes as read to judge it
    (``COMPRESSIBILITY_SAMPLE_BYTES``): what the inspector shows of it.

    Only those: reading 4 KiB before passing the body on instead cost the inspected agent 1 to
    2 MiB of peak RSS on ``make bench``'s 1 MB GETs, even with nothing recorded, and such a body
    is binary (zlib cannot shrink it), which the inspector shows as hex anyway."""

    prefix: bytes = field(default=b"", repr=False, compare=False)


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


def _response_headers(method: str, headers: list[tuple[str, str]]) -> protocol.Headers:
    """The app's headers without hop-by-hop ones; a HEAD keeps its Content-Length, the only
    place the size of the body it did not send shows."""
    kept = protocol.strip_hop_by_hop(headers)
    if method == "HEAD":
        kept += tuple((n, v) for n, v in headers if n.lower() == "content-length")
    return kept


class Forwarder:
    """``handle(request) -> response`` against one local app. Thread-safe.

    ``max_response_bytes`` is the largest response body read from the app; a larger one is a
    fault that names the limit."""

    def __init__(
        self,
        target: Target,
        timeout: float = protocol.RESPONSE_TIMEOUT_SECONDS,
        max_response_bytes: int = protocol.MAX_BODY_BYTES,
        pass_large_bodies: bool = False,
        blob_timeout: Callable[[Request], float] | None = None,
        stream: bool = False,
        time_left: Callable[[Request], float] | None = None,
        keep_passed_prefix: bool = False,
    ) -> None:
        if not 0 < max_response_bytes <= protocol.MAX_BLOB_BYTES:
            raise ValueError(f"max_response_bytes must be 1 to {protocol.MAX_BLOB_BYTES}")
        self.target = target
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.pass_large_bodies = pass_large_bodies
        """Pass a body too large for a message, and that zlib cannot shrink, from the app to the
        request's upload URL as it comes, instead of holding all of it: less memory and one
        copy less."""
        self.keep_passed_prefix = keep_passed_prefix
        """Answer a passed body with a ``PassedResponse``, which keeps the start read to judge
        it, for the inspector; else with a plain ``Response``."""
        self.blob_timeout = blob_timeout or (lambda request: timeout)
        """How long a pass-through upload may take for a request: the session's (until the
        relay stops waiting for the answer) when it runs under one."""
        self.stream = stream
        """Pass bodies of unknown length on as they come (``StreamedResponse``)."""
        self.time_left = time_left or (lambda request: timeout)
        """Seconds until the relay stops waiting for a request's answer: a body still coming
        then is cut and answered 504, in words that say the app was streaming."""
        self.pool = Pool(lambda t: Connection.open(target.host, target.port, t), POOL_SIZE)

    def __call__(self, request: Request) -> Response:
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        try:
            protocol.check_target(request.path, request.query)
        except ProtocolError as exc:
            return _plain(request.id, 400, f"Refused by the hatchway agent: {exc}.")
        if request.socket:
            return self._open_socket(request)
        headers = list(protocol.strip_hop_by_hop(request.headers))
        if request.body or request.method in METHODS_WITH_BODY:
            headers.append(("Content-Length", str(len(request.body))))
        target = _ascii_target(request.target)
        passed_above = request.inline_max if self.pass_large_bodies and request.upload_url else None

        body_deadline = None if self.stream else time.monotonic() + self.time_left(request)

        def exchange(conn: Connection) -> Reply | Response:
            conn.send(request.method, target, headers, request.body)
            reply = conn.receive(
                request.method,
                self.max_response_bytes,
                passed_above,
                live=self.stream,
                body_deadline=body_deadline,
            )
            return reply if reply.stream is None else self._pass_on(request, reply, reply.stream)

        try:
            try:
                result = self.pool.exchange(
                    exchange, may_repeat=request.method in RETRY_METHODS, timeout=self.timeout
                )
            except SourceFailed as failed:  # the app failed while its body was being passed on
                raise failed.cause from None
        except ValueError as exc:  # a request line or header that would say something else
            return _plain(request.id, 400, f"Refused by the hatchway agent: {exc}.")
        except Truncated as exc:
            return self._fault(
                request, f"{self.target.url} closed the connection mid-response ({exc})"
            )
        except BodyTimedOut:
            return self._fault(
                request,
                f"{self.target.url} answered, but was still sending the body when the relay "
                "stopped waiting: a stream (server-sent events, a chunked download) reaches "
                "visitors only through a tunnel started with --stream",
                status=504,
            )
        except TimeoutError:
            return self._fault(
                request, f"{self.target.url} did not answer within {self.timeout:g} s"
            )
        except ConnectionRefusedError:
            return self._fault(
                request, f"connection refused by {self.target.url}; is the app running?"
            )
        except STALE_ERRORS as exc:
            how = "" if isinstance(exc, Closed) else f" ({type(exc).__name__})"
            retried = request.method in RETRY_METHODS
            return self._fault(
                request,
                f"{self.target.url} closed the connection before answering{how}"
                + ("" if retried else f"; a {request.method} is not sent twice"),
            )
        except (OSError, BadReply) as exc:
            return self._fault(request, f"{self.target.url} failed: {type(exc).__name__}: {exc}")
        if isinstance(result, Response):
            return result
        reply = result
        if reply.live is not None:
            return StreamedResponse(
                request.id,
                reply.status,
                _response_headers(request.method, reply.headers),
                pieces=reply.live.pieces(protocol.STREAM_IDLE_SECONDS),
            )
        if reply.too_large:
            limit = self.max_response_bytes
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
        return response_with_body(
            request.id,
            reply.status,
            _response_headers(request.method, reply.headers),
            reply.body,
        )

    def _pass_on(self, request: Request, reply: Reply, stream: BodyStream) -> Reply | Response:
        """A body above what the relay's message takes: read whole when zlib may shrink it
        into one (the session decides), else PUT to the request's upload URL as it comes."""
        http1.long_work_ahead()  # a body this large is no job for a thread that has others
        start = stream.peek(COMPRESSIBILITY_SAMPLE_BYTES)
        if looks_compressible(start):
            return dataclasses.replace(reply, body=stream.read(), stream=None)
        headers = _response_headers(request.method, reply.headers)
        answer = blobs.upload_answer(
            request, reply.status, headers, stream, self.blob_timeout(request)
        )
        if not self.keep_passed_prefix or answer.uploaded is None:
            return answer
        return PassedResponse(
            answer.id, answer.status, answer.headers, uploaded=answer.uploaded, prefix=start
        )

    def _open_socket(self, request: Request) -> Response:
        """The visitor's WebSocket, opened to the app at the request's target."""
        url = self.target.url
        headers = [
            (name, value)
            for name, value in protocol.strip_hop_by_hop(request.headers)
            if name.lower() not in SOCKET_HANDSHAKE_HEADERS
        ]
        if not any(name.lower() == "host" for name, _ in headers):
            headers.insert(0, ("Host", url.removeprefix("http://")))
        timeout = max(1.0, min(self.timeout, self.time_left(request)))
        conn: Connection | None = None
        result: handshake.Upgraded | Reply | None = None
        try:
            conn = Connection.open(self.target.host, self.target.port, timeout)
            result = handshake.upgrade(
                conn, _ascii_target(request.target), headers, protocol.MAX_BODY_BYTES
            )
        except ValueError as exc:
            return _plain(request.id, 400, f"Refused by the hatchway agent: {exc}.")
        except TimeoutError:
            return self._fault(
                request, f"{url} did not answer the WebSocket handshake within {timeout:g} s"
            )
        except ConnectionRefusedError:
            return self._fault(request, f"connection refused by {url}; is the app running?")
        except (OSError, BadReply, Truncated) as exc:
            return self._fault(
                request, f"{url} failed the WebSocket handshake: {type(exc).__name__}: {exc}"
            )
        finally:
            # Unless the link took it over (a 101), the connection is done with.
            if conn is not None and not isinstance(result, handshake.Upgraded):
                conn.close()
        assert result is not None  # every failure above answered already
        if isinstance(result, handshake.Upgraded):
            result.link.sock.settimeout(None)
            chosen = result.subprotocol
            return SocketResponse(
                request.id,
                101,
                (("sec-websocket-protocol", chosen),) if chosen else (),
                link=result.link,
            )
        if 200 <= result.status < 300:
            # A 2xx would complete the visitor's handshake with nothing behind it.
            return self._fault(
                request, f"{url} answered HTTP {result.status} instead of a WebSocket"
            )
        if result.too_large:
            return self._fault(
                request, f"{url} refused the WebSocket with a body past {protocol.MAX_BODY_BYTES}"
            )
        return Response(
            request.id, result.status, _response_headers("GET", result.headers), result.body
        )

    def close(self) -> None:
        self.pool.close()

    def _fault(self, request: Request, message: str, status: int = 502) -> Response:
        """The local app's fault; 413 asks the relay for response-too-large, not 502."""
        reason = http.HTTPStatus(status).phrase
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
