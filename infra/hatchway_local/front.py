"""The lean front: visitors' plain HTTP requests parsed by ``httptools`` (llhttp, in C) on an
``asyncio.Protocol`` and answered by the gateway's own ``Gateway.http``, without aiohttp's
request machinery; every other request goes to aiohttp, the connection and all its unread
bytes handed over.

What it serves is what ``Gateway.dispatch`` would send to ``Gateway.http``: an HTTP/1.1 request
in origin form, with no upgrade, no ``Expect``, no ``Content-Encoding``, a plain body framing
and a modest head, not for a blob URL on a bare host. Anything else (an upgrade, a blob URL, a
malformed request, HTTP/1.0, a head near aiohttp's limits) is aiohttp's: its protocol takes
the transport and reads the request again from its first byte, so its answers and rules (the
400s, the WebSocket handshakes, the limits on heads) are kept by its own code. Responses are
written by aiohttp's own ``StreamResponse`` and ``StreamWriter`` on this protocol, so heads,
chunking, ``HEAD`` and 204/304 are byte for byte aiohttp's. The rules aiohttp's server keeps
around a request are kept here: the headers timeout (its keep-alive timer), responses in
order for pipelined requests, lingering close after a refused body, and a graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpVersion11
from aiohttp.http_writer import StreamWriter
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict, CIMultiDictProxy, MultiDictProxy
from yarl import URL

from hatchway_local.platform import LINGERING_CLOSE_SECONDS

log = logging.getLogger("hatchway.local")

FRONT_ENVIRONMENT_VARIABLE = "HATCHWAY_LOCAL_FRONT"
FRONTS = ("aiohttp", "lean")
"""``aiohttp``: aiohttp's low-level server serves every request. ``lean``: this module serves
visitors' plain HTTP requests and hands aiohttp the rest."""

DEFAULT_FRONT = "aiohttp"

MAX_LEAN_TARGET_BYTES = 4096
"""A request target longer than this goes to aiohttp (whose own limit is 8190 bytes)."""

MAX_LEAN_FIELD_BYTES = 4096
"""A header field (name and value) longer than this goes to aiohttp (its limit: 8190)."""

MAX_LEAN_HEADERS = 64
"""A request with more header fields than this goes to aiohttp (its limit: 128)."""

MAX_LEAN_HEAD_BYTES = 64 * 1024
"""A head still incomplete past this many bytes goes to aiohttp, which refuses it: the lean
parser keeps no head in memory longer than aiohttp would."""

MAX_KEPT_BODY_BYTES = 1024 * 1024
"""Bytes of a request's body kept to find where the next request begins, should that one be
aiohttp's. Past this they are dropped (a large upload is not held twice); if the request after
it in the same read is then aiohttp's, the connection closes once the requests before it
are answered."""

MAX_QUEUED_REQUESTS = 32
"""Pipelined requests waiting on one connection before it stops reading (as aiohttp's)."""

BODY_HIGH_WATER_BYTES = 256 * 1024
"""Body bytes buffered, not yet read by the gateway, before the connection stops reading."""

_AIOHTTP_HEADERS = frozenset({"upgrade", "expect", "content-encoding", "sec-websocket-key1"})
"""Headers whose requests aiohttp serves: upgrades, the 100-continue handshake, bodies it
decompresses before the gateway reads them, and the old WebSocket handshake it refuses."""

_SINGLETONS = frozenset(
    {
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "etag",
        "host",
        "max-forwards",
        "server",
        "transfer-encoding",
        "user-agent",
    }
)
"""Headers aiohttp refuses a request for repeating (400): such a request is aiohttp's."""


class VisitorGateway(Protocol):
    """What the lean front asks of the gateway (``Gateway``)."""

    def is_blob_url(self, host: str, raw_path: str) -> bool: ...

    async def http(self, request: web.BaseRequest) -> web.StreamResponse: ...


def front_choice(choice: str | None = None) -> str:
    """The front ``choice`` names (by default ``$HATCHWAY_LOCAL_FRONT``, else
    ``DEFAULT_FRONT``); ``ValueError`` for a name that is none of ``FRONTS``."""
    choice = choice or os.environ.get(FRONT_ENVIRONMENT_VARIABLE) or DEFAULT_FRONT
    if choice not in FRONTS:
        raise ValueError(f"unknown front {choice!r}: use one of {', '.join(FRONTS)}")
    return choice


class _Stop(Exception):
    """Raised in a parser callback to stop parsing: the request goes to aiohttp (or, on a
    closing connection, nowhere)."""


class _Count:
    """Counts the messages a parser completes (``_boundary``)."""

    completed = 0

    def on_message_complete(self) -> None:
        self.completed += 1


def _completed(data: memoryview, messages: int) -> bool:
    """Whether ``data`` holds ``messages`` complete requests (malformed bytes after them
    aside)."""
    count = _Count()
    with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
        httptools.HttpRequestParser(count).feed_data(data)
    return count.completed >= messages


def _boundary(data: bytes | bytearray, messages: int) -> int:
    """Where in ``data`` (starting between two requests) the request after the first
    ``messages`` ones begins: the shortest prefix holding them all, found by bisection, each
    probe a parse in C (a body passes through llhttp without a copy). Only when a request that
    follows others in the bytes kept goes to aiohttp."""
    if messages == 0:
        return 0
    view = memoryview(data)
    low, high = 0, len(data)  # data[:low] holds fewer; data[:high] holds them all
    while high - low > 1:
        middle = (low + high) // 2
        if _completed(view[:middle], messages):
            high = middle
        else:
            low = middle
    return high


class BodyReader:
    """A request's body as the gateway reads it (``readany``, like aiohttp's ``StreamReader``),
    fed by the parser; past ``BODY_HIGH_WATER_BYTES`` unread, the connection stops reading."""

    __slots__ = ("_chunks", "_eof", "_error", "_protocol", "_waiter", "discard", "size")

    def __init__(self, protocol: LeanProtocol) -> None:
        self._chunks: list[bytes] = []
        self.size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._protocol = protocol
        self.discard = False
        """Lingering: what arrives is dropped."""

    def feed(self, data: bytes) -> None:
        if not self.discard:
            self._chunks.append(data)
            self.size += len(data)
        self._wake()

    def end(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def is_eof(self) -> bool:
        return self._eof and not self._chunks

    async def readany(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._protocol.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.size = 0
        self._protocol.flow()
        return data


class LeanRequest:
    """One request as the gateway and aiohttp's ``StreamResponse`` read it: the names of
    ``web.BaseRequest`` they use, and no more."""

    __slots__ = (
        "_payload_writer",
        "body_exists",
        "content",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "raw_path",
        "remote",
        "scheme",
        "transport",
        "version",
    )

    def __init__(
        self,
        protocol: LeanProtocol,
        method: str,
        raw_path: str,
        headers: CIMultiDictProxy[str],
        keep_alive: bool,
        content: BodyReader,
        content_length: int | None,
        body_exists: bool,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.version = HttpVersion11
        self.keep_alive = keep_alive
        self.remote = protocol.remote
        self.scheme = protocol.scheme
        self.transport = protocol.transport
        self.content = content
        self.content_length = content_length
        self.body_exists = body_exists
        self._payload_writer = StreamWriter(protocol, protocol.loop)

    @property
    def path(self) -> str:
        return URL.build(path=self.raw_path.partition("?")[0], encoded=True).path

    @property
    def query(self) -> MultiDictProxy[str]:
        # As aiohttp makes it (yarl), so that the event's query fields are the same.
        query = self.raw_path.partition("?")[2]
        return URL.build(query_string=query, encoded=True).query

    @property
    def writer(self) -> StreamWriter:
        return self._payload_writer

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        return


def _server_error(request: LeanRequest) -> web.Response:
    """aiohttp's answer to a handler that raised (``RequestHandler.handle_error``)."""
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    title = f"{status.value} {status.phrase}"
    if "text/html" in request.headers.get("Accept", ""):
        text = (
            f"<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>"
            f"\n{status.description}\n</body></html>\n"
        )
        response = web.Response(status=500, text=text, content_type="text/html")
    else:
        text = f"{title}\n\n{status.description}"
        response = web.Response(status=500, text=text, content_type="text/plain")
    response.force_close()
    return response


class LeanProtocol(BaseProtocol):
    """One visitor connection, until (if ever) aiohttp takes it over."""

    def __init__(self, server: LeanServer) -> None:
        super().__init__(server.loop)
        self.loop = server.loop
        self.server = server
        self._llhttp = httptools.HttpRequestParser(self)
        self._received = bytearray()
        """What arrived since the parser was last between requests at the end of a read: a
        request aiohttp is to serve is taken from here, from its first byte."""
        self._completed = 0
        """Requests completed within ``_received``."""
        self._lost_start = False
        """Whether ``_received`` lost its start: a large body's bytes (``MAX_KEPT_BODY_BYTES``)."""
        self._in_message = False
        self._in_head = False
        self._url = bytearray()
        self._fields: list[tuple[bytes, bytes]] = []
        self._body: BodyReader | None = None
        """The body of the request being received."""
        self._queue: deque[LeanRequest] = deque()
        """Requests received and not yet answered, the one being answered first."""
        self._task: asyncio.Task[None] | None = None
        self._handoff: bytearray | None = None
        """Bytes for aiohttp, from the first byte of its request: handed over once the
        requests before it are answered."""
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._held = False
        """Whether this protocol stopped the transport's reading (flow control)."""
        self.remote: str | None = None
        self.scheme = "http"

    # --- Connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # TCP_NODELAY, as aiohttp's
        tcp_keepalive(cast(asyncio.Transport, transport))
        peer = transport.get_extra_info("peername")
        if peer is not None:
            self.remote = str(peer[0]) if isinstance(peer, list | tuple) else str(peer)
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self.server.lean.add(self)
        self._arm_headers_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.lean.discard(self)
        self._cancel_timer()
        error = ConnectionResetError("Connection lost")
        for request in self._queue:
            request.content.fail(error)
        if self._body is not None:
            self._body.fail(error)
        super().connection_lost(exc)

    def _arm_headers_timer(self) -> None:
        """aiohttp's keep-alive timer, the headers timeout: armed when the connection opens and
        after each response; closes the connection if no whole request head came by then. A
        timer still armed is moved on when it fires, not replaced: one timer a connection."""
        timeout = self.server.headers_timeout
        if timeout > 0:
            self._deadline = self.loop.time() + timeout
            if self._timer is None:
                self._timer = self.loop.call_at(self._deadline, self._headers_timed_out)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_timed_out(self) -> None:
        self._timer = None
        if self._queue or self._handoff is not None or self.transport is None:
            return  # busy: armed again after its answer
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._headers_timed_out)
            return
        self.transport.close()

    def close(self) -> None:
        """The server stops: an idle connection closes now, a busy one after its answer."""
        self._closing = True
        if not self._queue and self._task is None and self.transport is not None:
            self.transport.close()

    async def shutdown(self, timeout: float | None) -> None:
        """Let the request being answered finish (within ``timeout``), then close."""
        self._closing = True
        self._cancel_timer()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
        if self.transport is not None:
            self.transport.close()

    def flow(self) -> None:
        """Stop reading while too much waits unread; read again once it is taken."""
        body = self._body
        hold = len(self._queue) > MAX_QUEUED_REQUESTS or (
            body is not None and body.size > BODY_HIGH_WATER_BYTES
        )
        if hold != self._held and self.transport is not None:
            self._held = hold
            if hold:
                self._pause_transport_reading()
            else:
                self._resume_transport_reading()

    # --- Parsing ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._handoff is not None:
            self._handoff += data
            return
        self._received += data
        try:
            self._llhttp.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            if self._closing:  # the server stops: what follows is dropped, as by aiohttp
                self._received = bytearray()
            else:  # malformed, or a request aiohttp is to serve
                self._give_to_aiohttp()
            return
        if not self._in_message:
            self._received.clear()
            self._completed = 0
            self._lost_start = False
        elif self._in_head:
            if len(self._received) > MAX_LEAN_HEAD_BYTES:
                self._give_to_aiohttp()
                return
        elif len(self._received) > MAX_KEPT_BODY_BYTES:
            self._received.clear()
            self._lost_start = True
        self.flow()

    def _give_to_aiohttp(self) -> None:
        """The request being received is aiohttp's, from its first byte on: handed over once
        the requests before it are answered (or, where its first byte was dropped with a large
        body before it, the connection closes then)."""
        if self._lost_start:
            self._handoff = bytearray()
        else:
            start = _boundary(self._received, self._completed)
            self._handoff = self._received[start:]
        self._received = bytearray()
        if self._task is None:
            self._task = self.loop.create_task(self._serve())

    def on_message_begin(self) -> None:
        self._in_message = True
        self._in_head = True
        self._url.clear()
        self._fields = []

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_LEAN_TARGET_BYTES:
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self._fields
        fields.append((name, value))
        if len(name) + len(value) > MAX_LEAN_FIELD_BYTES or len(fields) > MAX_LEAN_HEADERS:
            raise _Stop

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._closing:
            raise _Stop  # a stopping server takes no new request, as aiohttp's
        request = self._request()
        if request is None:
            raise _Stop
        if request.body_exists:
            self._body = request.content
        else:
            request.content.end()
        self._queue.append(request)
        if self._task is None:
            self._task = self.loop.create_task(self._serve())

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._body is not None:
            self._body.end()
            self._body = None
        self._in_message = False
        self._completed += 1

    def _request(self) -> LeanRequest | None:
        """The request just parsed, or None if it is aiohttp's."""
        parser = self._llhttp
        if parser.get_http_version() != "1.1":
            return None
        raw_path = self._url.decode("utf-8", "surrogateescape")
        if not raw_path.startswith("/") or "#" in raw_path:
            return None
        headers: CIMultiDict[str] = CIMultiDict()
        seen: set[str] = set()
        for name_bytes, value_bytes in self._fields:
            if b"\x00" in value_bytes:
                return None
            name = name_bytes.decode("utf-8", "surrogateescape")
            # llhttp strips the white space before a value, not after it; aiohttp does.
            value = value_bytes.rstrip(b" \t").decode("utf-8", "surrogateescape")
            key = name.lower()
            if key in _AIOHTTP_HEADERS or (key == "connection" and "upgrade" in value.lower()):
                return None
            if key in _SINGLETONS:
                if key in seen:
                    return None
                seen.add(key)
            headers.add(name, value)
        if "host" not in seen:
            return None  # aiohttp's 400
        length = headers.get("Content-Length")
        chunked = "transfer-encoding" in seen
        if chunked and (length is not None or headers["Transfer-Encoding"].lower() != "chunked"):
            return None
        if self.server.gateway.is_blob_url(headers.get("Host", ""), raw_path):
            return None
        content_length = int(length) if length is not None else None
        return LeanRequest(
            self,
            parser.get_method().decode("ascii"),
            raw_path,
            CIMultiDictProxy(headers),
            parser.should_keep_alive(),
            BodyReader(self),
            content_length,
            chunked or bool(content_length),
        )

    # --- Answering ----------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer the queued requests in order, then hand the connection to aiohttp if a
        request is its, or wait for the next request."""
        try:
            while self._queue:
                keep_alive = await self._answer(self._queue[0])
                self._queue.popleft()
                self.flow()
                if not keep_alive or self._closing:
                    if self.transport is not None:
                        self.transport.close()
                    return
                if self.transport is None:
                    return
                self._arm_headers_timer()
            if self._handoff is not None and self.transport is not None:
                if self._lost_start:
                    self.transport.close()
                    return
                await self._drain_helper()  # aiohttp's protocol starts with writing not paused
                self._hand_off(self._handoff)
        except ConnectionError:
            if self.transport is not None:
                self.transport.close()
        finally:
            self._task = None

    async def _answer(self, request: LeanRequest) -> bool:
        """Answer one request as aiohttp's server would; whether the connection stays open."""
        gateway_request = cast(web.BaseRequest, request)
        response: web.StreamResponse
        try:
            response = await self.server.gateway.http(gateway_request)
        except Exception:
            log.exception("Error handling request from %s", request.remote)
            if request.writer.output_size > 0:
                return False
            response = _server_error(request)
        try:
            await response.prepare(gateway_request)
            await response.write_eof()
        except ConnectionError:
            return False
        body = request.content
        if not body.is_eof():
            # Lingering close: the unread body is read and dropped for a while, so that the
            # client sees the answer rather than a reset.
            body.discard = True
            body.size = 0
            self.flow()
            try:
                async with asyncio.timeout(LINGERING_CLOSE_SECONDS):
                    while await body.readany():
                        pass
            except (TimeoutError, ConnectionError):
                return False
        return bool(response.keep_alive)

    def _hand_off(self, data: bytearray) -> None:
        """aiohttp's protocol takes the transport, and reads ``data`` as if it had received
        it."""
        transport = self.transport
        assert transport is not None
        self._cancel_timer()
        self.server.lean.discard(self)
        if self._held:
            self._held = False
            self._resume_transport_reading()
        self.transport = None
        handler = self.server.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(bytes(data))


class LeanServer(web.Server):
    """aiohttp's low-level server whose connections start on the lean front: the protocol
    factory a site serves, and the stop that closes both kinds of connection."""

    def __init__(
        self,
        handler: Any,
        *,
        gateway: VisitorGateway,
        headers_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, keepalive_timeout=headers_timeout, **kwargs)
        self.gateway = gateway
        self.loop = self._loop
        self.headers_timeout = headers_timeout
        self.lean: set[LeanProtocol] = set()

    def __call__(self) -> LeanProtocol:  # type: ignore[override]
        return LeanProtocol(self)

    def aiohttp_protocol(self) -> web.RequestHandler:
        return super().__call__()

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for protocol in list(self.lean):
            protocol.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        lean = [protocol.shutdown(timeout) for protocol in list(self.lean)]
        await asyncio.gather(super().shutdown(timeout), *lean)
