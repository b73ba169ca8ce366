"""``SocketApi``: one API Gateway WebSocket API as the local gateway emulates it — the
``$connect`` / ``$default`` / ``$disconnect`` events, the handshake a ``$connect`` result allows
or refuses, the platform's frame, message, idle and duration limits, and the table of live
connections that posts and closes act on.

The gateway serves two: the agents' API (text only, a binary frame closes with 1003, and
service routes that store an agent's answers without a Lambda) and the visitor-socket API
(visitors' own WebSockets; binary messages reach the function as base64, which only this
gateway does: API Gateway closes them with 1003 too). Which function an API invokes, and how,
is the gateway's business (``Invoke``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WebSocketError, WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy

from hatchway.protocol import b64
from hatchway.protocol.sockets import close_reason, sendable_close_code
from hatchway_local.concurrency import Throttled
from hatchway_local.frame_guard import FrameGuard
from hatchway_local.platform import (
    CLOSE_GOING_AWAY,
    CLOSE_HANDSHAKE_SECONDS,
    CLOSE_UNSUPPORTED_DATA,
    INTEGRATION_FAILED,
    INTEGRATION_THROTTLED,
    WEBSOCKET_INTEGRATION_ERROR,
    GatewayLimits,
    new_connection_id,
    request_id,
    request_time,
    wire_header,
)

log = logging.getLogger("hatchway.local")

GOING_AWAY = "Going away"
"""The reason API Gateway closes a connection with at its idle or duration limit."""

Invoke = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Runs function ``name`` on an event: its result, None if it failed, ``Throttled`` if Lambda
refused it."""

ServiceRouter = Callable[[web.WebSocketResponse, dict[str, Any]], Coroutine[Any, Any, None] | None]
"""An API's service routes: how a text message one of them takes is handled (None when none
takes it: the message goes to the function)."""

AccessLine = Callable[[dict[str, Any], str, int, float, str | None], None]
"""Writes the access-log line of one event: the event, its route, the status, when its
integration started, and how it failed."""

_REFUSAL_HEADERS_DROPPED = frozenset({"content-length", "transfer-encoding", "connection"})


@dataclass
class SocketConnection:
    """One live connection, as ``@connections`` describes it."""

    ws: web.WebSocketResponse
    connected_at: float
    source_ip: str
    user_agent: str
    last_active: float = field(default_factory=time.time)
    ended: tuple[int, str] | None = None
    """The code and reason of the close that ended it, once one began: what ``$disconnect``
    reports (the first close, the gateway's or the client's)."""

    async def close(self, code: int, reason: str) -> None:
        """Close from the gateway's side with ``code`` and ``reason``."""
        if self.ended is None and not self.ws.closed:
            self.ended = (code, reason)
        await self.ws.close(code=code, message=reason.encode())


async def integration_error(ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
    """API Gateway's frame for a message it could not deliver to its integration."""
    if ws.closed:
        return
    context = event["requestContext"]
    error = {
        "message": WEBSOCKET_INTEGRATION_ERROR,
        "connectionId": context["connectionId"],
        "requestId": context["requestId"],
    }
    # The socket may have closed meanwhile; then nobody is left to tell.
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await ws.send_str(json.dumps(error))


def _refusal(status: int, result: dict[str, Any] | None) -> web.Response:
    """A ``$connect`` that did not allow the handshake, answered as plain HTTP: the result's
    status, headers and body."""
    result = result or {}
    raw = result.get("body") or ("Internal Server Error" if status == 500 else "Forbidden")
    body = b64.decode_lenient(raw) if result.get("isBase64Encoded") else str(raw).encode()
    response = web.Response(status=status, body=body, content_type="text/plain", charset="utf-8")
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in _REFUSAL_HEADERS_DROPPED:
            response.headers[name] = wire_header(str(value))
    return response


def _subprotocol(result: dict[str, Any]) -> str | None:
    """The subprotocol a ``$connect`` result chose (its ``Sec-WebSocket-Protocol`` header)."""
    for name, value in (result.get("headers") or {}).items():
        if name.lower() == "sec-websocket-protocol" and value:
            return str(value)
    return None


class SocketApi:
    """One WebSocket API: ``serve`` takes an upgrade request through ``$connect``, then each
    message through ``$default`` until the connection ends in ``$disconnect``."""

    def __init__(
        self,
        function: str,
        invoke: Invoke,
        limits: GatewayLimits,
        api_id: str,
        *,
        binary: bool,
        one_at_a_time: bool,
        log_line: AccessLine | None = None,
    ) -> None:
        self.function = function
        self.invoke = invoke
        self.limits = limits
        self.api_id = api_id
        self.binary = binary
        """Binary messages go to the function as base64 (else they close the socket, 1003)."""
        self.one_at_a_time = one_at_a_time
        """A connection's next message is read only once its last invocation has ended."""
        self.log_line = log_line
        self.services: ServiceRouter | None = None
        self.connections: dict[str, SocketConnection] = {}
        self.opening: dict[str, asyncio.Future[bool]] = {}
        """Connections in their ``$connect``: each resolves True once its handshake is done,
        False if it was refused."""
        self.peak_pending_messages = 0
        """The most ``$default`` invocations any one connection ever had pending at once."""
        self._closing: set[asyncio.Task[Any]] = set()

    # --- Events -------------------------------------------------------------------------------

    def event(
        self,
        request: web.BaseRequest,
        route: str,
        connection_id: str,
        connected_at: float,
        headers: CIMultiDictProxy[str] | None = None,
    ) -> dict[str, Any]:
        """The event of ``route``; a ``$connect`` one carries ``headers`` (by default the
        request's own) and the query."""
        now = time.time()
        context = {
            "routeKey": route,
            "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE"),
            "extendedRequestId": request_id(),
            "requestTime": request_time(now),
            "messageDirection": "IN",
            "stage": "local",
            "connectedAt": int(connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "sourceIp": request.remote or "",
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": request_id(),
            "domainName": request.host,
            "connectionId": connection_id,
            "apiId": self.api_id,
        }
        event: dict[str, Any] = {"requestContext": context, "isBase64Encoded": False}
        if route == "$connect":
            sent = request.headers if headers is None else headers
            event["headers"] = dict(sent)
            event["multiValueHeaders"] = {k: sent.getall(k) for k in sent}
            if request.query:
                event["queryStringParameters"] = {k: request.query[k] for k in request.query}
                event["multiValueQueryStringParameters"] = {
                    k: request.query.getall(k) for k in request.query
                }
        return event

    def log_event(
        self, event: dict[str, Any], route: str, status: int, started: float, error: str | None
    ) -> None:
        if self.log_line is not None:
            self.log_line(event, route, status, started, error)

    async def _invoke(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """A ``$connect`` or ``$disconnect`` invocation; a throttled one is logged and yields
        None."""
        try:
            return await self.invoke(self.function, event)
        except Throttled:
            log.warning("throttled: %s", event["requestContext"]["routeKey"])
            return None

    async def _message(self, ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
        """One ``$default`` invocation. If it fails or is throttled, API Gateway tells the
        client so in a message of its own."""
        started = time.time()
        error: str | None = None
        try:
            result = await self.invoke(self.function, event)
        except Throttled:
            result, error = None, INTEGRATION_THROTTLED
        if result is None:
            error = error or INTEGRATION_FAILED
            await integration_error(ws, event)
        self.log_event(event, "$default", 500 if error else 200, started, error)

    # --- One connection -----------------------------------------------------------------------

    async def serve(
        self, request: web.BaseRequest, headers: CIMultiDictProxy[str] | None = None
    ) -> web.StreamResponse:
        """One connection from its upgrade request to its ``$disconnect``; ``headers`` are
        those ``$connect`` gets when they are not the request's own (a front's)."""
        connection_id = new_connection_id()
        connected_at = time.time()
        connect = self.event(request, "$connect", connection_id, connected_at, headers)
        opened = self.opening[connection_id] = asyncio.get_running_loop().create_future()
        try:
            return await self._serve(request, connection_id, connected_at, connect, opened)
        finally:
            self.opening.pop(connection_id, None)
            if not opened.done():
                opened.set_result(False)

    async def _serve(
        self,
        request: web.BaseRequest,
        connection_id: str,
        connected_at: float,
        connect: dict[str, Any],
        opened: asyncio.Future[bool],
    ) -> web.StreamResponse:
        result = await self._invoke(connect)
        status = int(result.get("statusCode", 200)) if isinstance(result, dict) else 500
        failed = None if result is not None else INTEGRATION_FAILED
        self.log_event(connect, "$connect", status, connected_at, failed)
        if not 200 <= status < 300:
            return _refusal(status, result)

        chosen = _subprotocol(result) if isinstance(result, dict) else None
        ws = web.WebSocketResponse(
            autoping=True,
            # aiohttp refuses a message that reaches max_msg_size; API Gateway accepts one
            # of exactly its limit. It closes with 1009 either way.
            max_msg_size=self.limits.message_bytes + 1,
            compress=False,  # API Gateway negotiates no permessage-deflate
            timeout=CLOSE_HANDSHAKE_SECONDS,
            protocols=(chosen,) if chosen else (),
        )
        if request.transport is not None:
            # Before the 101 goes out: a client sends no frame before it.
            FrameGuard.install(request.transport, self.limits.frame_bytes)
        await ws.prepare(request)
        connection = SocketConnection(
            ws, connected_at, request.remote or "", request.headers.get("User-Agent", "")
        )
        self.connections[connection_id] = connection
        self.opening.pop(connection_id, None)
        opened.set_result(True)
        try:
            await self._read(request, connection, connection_id)
        finally:
            code, reason = connection.ended or (ws.close_code or 1006, "")
            event = self.event(request, "$disconnect", connection_id, connected_at)
            event["requestContext"].update(disconnectStatusCode=code, disconnectReason=reason)
            started = time.time()
            result = await self._invoke(event)
            failed = None if result is not None else INTEGRATION_FAILED
            self.log_event(event, "$disconnect", 500 if failed else 200, started, failed)
        return ws

    async def _read(
        self, request: web.BaseRequest, connection: SocketConnection, connection_id: str
    ) -> None:
        """Read ``connection``'s messages until it closes, within the limits."""
        ws, connected_at = connection.ws, connection.connected_at
        pending: set[asyncio.Task[Any]] = set()
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []
        watchdog: asyncio.TimerHandle | None = None

        def time_left() -> float:
            """Until the idle timeout or the connection's maximum duration, from now."""
            return (
                min(
                    connection.last_active + self.limits.idle_timeout,
                    connected_at + self.limits.max_connection_seconds,
                )
                - time.time()
            )

        def watch() -> None:
            """Close the connection once a limit is reached: one timer per connection, set
            again only when it fires, rather than a timeout around every read."""
            nonlocal watchdog
            remaining = time_left()
            if remaining > 0:
                watchdog = loop.call_later(remaining, watch)
            elif not ws.closed:  # the read in progress then ends
                closing.append(
                    asyncio.ensure_future(connection.close(CLOSE_GOING_AWAY, GOING_AWAY))
                )

        watchdog = loop.call_later(max(time_left(), 0.0), watch)
        try:
            while True:
                remaining = time_left()
                if remaining <= 0:
                    await connection.close(CLOSE_GOING_AWAY, GOING_AWAY)
                    break
                if len(pending) >= self.limits.pending_messages:
                    # Back-pressure: read nothing more until one invocation ends. aiohttp
                    # stops reading the socket once its small buffer is full.
                    await asyncio.wait(
                        pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                msg = await ws.receive()
                if msg.type == WSMsgType.TEXT or (msg.type == WSMsgType.BINARY and self.binary):
                    connection.last_active = time.time()
                    event = self.event(request, "$default", connection_id, connected_at)
                    event["requestContext"]["messageId"] = request_id()
                    service = None
                    if msg.type == WSMsgType.TEXT:
                        event["body"] = msg.data
                        if self.services is not None:
                            service = self.services(ws, event)
                    else:
                        event["body"] = b64.encode(msg.data)
                        event["isBase64Encoded"] = True
                    handled = self._message(ws, event) if service is None else service
                    if self.one_at_a_time:
                        # One at a time, read no further until it ends: back-pressure itself.
                        self.peak_pending_messages = max(self.peak_pending_messages, 1)
                        await handled
                        # A backlog of buffered frames is read without waiting: let every
                        # other connection and visitor have the loop between two messages.
                        await asyncio.sleep(0)
                        continue
                    task = asyncio.ensure_future(handled)
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    self.peak_pending_messages = max(self.peak_pending_messages, len(pending))
                elif msg.type == WSMsgType.BINARY:
                    await connection.close(
                        CLOSE_UNSUPPORTED_DATA, "Binary frames are not supported"
                    )
                    break
                else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp closed it, 1009 for size)
                    if connection.ended is None and msg.type == WSMsgType.CLOSE:
                        connection.ended = (int(msg.data), str(msg.extra or ""))
                    elif connection.ended is None and isinstance(msg.data, WebSocketError):
                        connection.ended = (msg.data.code, "")  # aiohttp refused a message
                    break
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self.connections.pop(connection_id, None)
            if not ws.closed:
                await ws.close()
            for close in closing:  # its close handshake settles the close code
                await close

    # --- Posts and closes ---------------------------------------------------------------------

    async def once_open(self, connection_id: str, timeout: float) -> bool:
        """Wait for a connection in its ``$connect`` to open; whether it is open."""
        opening = self.opening.get(connection_id)
        if opening is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(opening), timeout)
        return self.live(connection_id)

    def live(self, connection_id: str) -> bool:
        """Whether ``connection_id`` is open (past its ``$connect``, not closed)."""
        connection = self.connections.get(connection_id)
        return connection is not None and not connection.ws.closed

    async def send(self, connection_id: str, data: str | bytes) -> None:
        """Send one message (text for ``str``, binary for ``bytes``); KeyError if the
        connection is unknown or closed."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.ws.closed:
            raise KeyError(connection_id)
        try:
            if isinstance(data, str):
                await connection.ws.send_str(data)
            else:
                await connection.ws.send_bytes(data)
        except (ConnectionResetError, RuntimeError):
            raise KeyError(connection_id) from None
        connection.last_active = time.time()

    async def close_connection(
        self, connection_id: str, code: int = 1000, reason: str = ""
    ) -> bool:
        """Close a connection with ``code`` and ``reason`` (made sendable); False if it is
        unknown."""
        connection = self.connections.get(connection_id)
        if connection is None:
            return False
        await connection.close(sendable_close_code(code), close_reason(reason))
        return True

    def start_close(self, connection_id: str, code: int, reason: str) -> None:
        """Begin closing a connection without waiting for the client's close frame (on the
        loop's thread); nothing if it is unknown."""
        if connection_id not in self.connections:
            return
        task = asyncio.ensure_future(self.close_connection(connection_id, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_all(self, reason: str) -> None:
        for connection in list(self.connections.values()):
            await connection.close(CLOSE_GOING_AWAY, reason)


def front_headers(request: web.BaseRequest) -> CIMultiDictProxy[str]:
    """The visitor's headers as the front hands them to the visitor-socket API:
    ``x-hatchway-host`` (the Host as sent, lower-case) and ``x-hatchway-target`` (the raw path
    and query) always set by the front, never taken from the visitor."""
    headers = CIMultiDict(request.headers)
    headers.popall("x-hatchway-host", None)
    headers.popall("x-hatchway-target", None)
    headers["x-hatchway-host"] = request.headers.get("Host", "").lower()
    headers["x-hatchway-target"] = request.raw_path
    return CIMultiDictProxy(headers)
