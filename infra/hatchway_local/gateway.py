"""An API Gateway emulator on aiohttp: the WebSocket API, the HTTP API (payload 2.0) and the
``@connections`` management API on one port, invoking the relay's real Lambda handlers.

It builds the event shapes API Gateway sends, enforces the platform's limits, and runs every
handler invocation in a worker thread. HTTP and WebSocket invocations have separate pools: an HTTP
invocation blocks until the agent's response arrives through WebSocket invocations, so sharing one
bounded pool would deadlock as soon as visitors filled it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from hatchway import protocol

log = logging.getLogger("hatchway.local")

# --- The platform's limits, as API Gateway and Lambda enforce them ----------------------------

HTTP_MAX_BODY_BYTES = 10 * 1024 * 1024
"""HTTP API request payload limit (10 MB)."""

LAMBDA_MAX_EVENT_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit (6 MB), for the event and for the result."""

WEBSOCKET_MAX_MESSAGE_BYTES = 128 * 1024
"""WebSocket API message limit; ``@connections`` POSTs above it are refused."""

HTTP_INTEGRATION_TIMEOUT_SECONDS = 30.0
"""HTTP API integration timeout (not raisable on AWS)."""

WEBSOCKET_IDLE_SECONDS = 600.0
"""WebSocket API idle connection timeout."""

CLOSE_HANDSHAKE_SECONDS = 1.0
"""How long a server-side close waits for the client's close frame before dropping the socket."""

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003  # API Gateway refuses binary frames from clients
CLOSE_MESSAGE_TOO_BIG = 1009

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass
class GatewayLimits:
    integration_timeout: float = HTTP_INTEGRATION_TIMEOUT_SECONDS
    idle_timeout: float = WEBSOCKET_IDLE_SECONDS
    max_connection_seconds: float = float(protocol.MAX_CONNECTION_SECONDS)
    frame_bytes: int = protocol.MAX_FRAME_BYTES


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    connected_at: float
    source_ip: str
    user_agent: str
    last_active: float = field(default_factory=time.time)


def _connection_id() -> str:
    """Shaped like API Gateway's: 12 random bytes in base64 (``L0SM9cOFvHcCIhw=``-like)."""
    return base64.b64encode(secrets.token_bytes(10)).decode()


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def _json(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


class Gateway:
    """The emulator. Handlers are attached after construction (they need the poster, which
    needs the gateway)."""

    def __init__(
        self,
        bare_hosts: set[str],
        limits: GatewayLimits | None = None,
        http_workers: int = 64,
        ws_workers: int = 32,
        api_id: str = "local",
    ) -> None:
        self.bare_hosts = {h.lower() for h in bare_hosts}
        self.limits = limits or GatewayLimits()
        self.api_id = api_id
        self.ws_handler: Handler | None = None
        self.http_handler: Handler | None = None
        self.http_pool = ThreadPoolExecutor(http_workers, thread_name_prefix="gw-http")
        self.ws_pool = ThreadPoolExecutor(ws_workers, thread_name_prefix="gw-ws")
        self.connections: dict[str, _Connection] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = web.Application(client_max_size=HTTP_MAX_BODY_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)
        self.app.on_shutdown.append(self._close_all)

    def set_handlers(self, ws_handler: Handler, http_handler: Handler) -> None:
        self.ws_handler = ws_handler
        self.http_handler = http_handler

    # --- Dispatch -----------------------------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get("Host", "").lower()
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if bare in self.bare_hosts or host in self.bare_hosts:
            path = request.raw_path.split("?", 1)[0]
            if path == "/connect" and request.headers.get("Upgrade", "").lower() == "websocket":
                return await self.websocket(request)
            if path.startswith("/@connections/"):
                return await self.management(request, path[len("/@connections/") :])
        return await self.http(request)

    # --- WebSocket API ------------------------------------------------------------------------

    def _ws_event(
        self, request: web.Request, route: str, connection_id: str, connected_at: float
    ) -> dict[str, Any]:
        now = time.time()
        context = {
            "routeKey": route,
            "eventType": {"$connect": "CONNECT", "$disconnect": "DISCONNECT"}.get(route, "MESSAGE"),
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "messageDirection": "IN",
            "stage": "local",
            "connectedAt": int(connected_at * 1000),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "sourceIp": request.remote or "",
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": uuid.uuid4().hex[:16],
            "domainName": request.host,
            "connectionId": connection_id,
            "apiId": self.api_id,
        }
        event: dict[str, Any] = {"requestContext": context, "isBase64Encoded": False}
        if route == "$connect":
            event["headers"] = dict(request.headers)
            event["multiValueHeaders"] = {k: request.headers.getall(k) for k in request.headers}
            if request.query:
                event["queryStringParameters"] = {k: request.query[k] for k in request.query}
                event["multiValueQueryStringParameters"] = {
                    k: request.query.getall(k) for k in request.query
                }
        return event

    async def _invoke(
        self, pool: ThreadPoolExecutor, handler: Handler | None, event: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Run a handler like Lambda would; an exception is logged and yields None."""
        assert handler is not None, "handlers not attached"
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, handler, event, None)
        except Exception:
            log.exception("handler failed for %s", event.get("requestContext", {}).get("routeKey"))
            return None

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        connection_id = _connection_id()
        connected_at = time.time()
        result = await self._invoke(
            self.ws_pool,
            self.ws_handler,
            self._ws_event(request, "$connect", connection_id, connected_at),
        )
        status = int(result.get("statusCode", 200)) if isinstance(result, dict) else 500
        if not 200 <= status < 300:
            body = (result or {}).get("body") or (
                "Internal Server Error" if status == 500 else "Forbidden"
            )
            return web.Response(status=status, text=str(body))

        ws = web.WebSocketResponse(
            autoping=True,
            max_msg_size=WEBSOCKET_MAX_MESSAGE_BYTES * 2,
            timeout=CLOSE_HANDSHAKE_SECONDS,
        )
        await ws.prepare(request)
        connection = _Connection(
            ws, connected_at, request.remote or "", request.headers.get("User-Agent", "")
        )
        self.connections[connection_id] = connection
        pending: set[asyncio.Task[Any]] = set()
        try:
            while True:
                now = time.time()
                remaining = (
                    min(
                        connection.last_active + self.limits.idle_timeout,
                        connected_at + self.limits.max_connection_seconds,
                    )
                    - now
                )
                if remaining <= 0:
                    await ws.close(code=CLOSE_GOING_AWAY, message=b"Going away")
                    break
                try:
                    msg = await ws.receive(timeout=remaining)
                except TimeoutError:
                    continue  # the loop head decides whether a limit was reached
                if msg.type == WSMsgType.TEXT:
                    connection.last_active = time.time()
                    if len(msg.data.encode("utf-8")) > self.limits.frame_bytes:
                        await ws.close(code=CLOSE_MESSAGE_TOO_BIG, message=b"Message too big")
                        break
                    event = self._ws_event(request, "$default", connection_id, connected_at)
                    event["body"] = msg.data
                    event["requestContext"]["messageId"] = uuid.uuid4().hex[:16]
                    task = asyncio.ensure_future(self._invoke(self.ws_pool, self.ws_handler, event))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                elif msg.type == WSMsgType.BINARY:
                    await ws.close(
                        code=CLOSE_UNSUPPORTED_DATA, message=b"Binary frames are not supported"
                    )
                    break
                else:  # CLOSE, CLOSING, CLOSED, ERROR
                    break
        finally:
            self.connections.pop(connection_id, None)
            if not ws.closed:
                await ws.close()
            event = self._ws_event(request, "$disconnect", connection_id, connected_at)
            event["requestContext"].update(
                disconnectStatusCode=ws.close_code or 1006, disconnectReason=""
            )
            await self._invoke(self.ws_pool, self.ws_handler, event)
        return ws

    async def send(self, connection_id: str, data: str) -> None:
        """Send one text message; KeyError if the connection is unknown or closed."""
        connection = self.connections.get(connection_id)
        if connection is None or connection.ws.closed:
            raise KeyError(connection_id)
        try:
            await connection.ws.send_str(data)
        except (ConnectionResetError, RuntimeError):
            raise KeyError(connection_id) from None
        connection.last_active = time.time()

    async def close_connection(self, connection_id: str) -> bool:
        connection = self.connections.get(connection_id)
        if connection is None:
            return False
        await connection.ws.close(code=1000, message=b"")
        return True

    async def _close_all(self, app: web.Application) -> None:
        for connection in list(self.connections.values()):
            await connection.ws.close(code=CLOSE_GOING_AWAY, message=b"Server shutting down")

    # --- Management API -----------------------------------------------------------------------

    async def management(self, request: web.Request, raw_id: str) -> web.Response:
        from urllib.parse import unquote

        connection_id = unquote(raw_id)
        connection = self.connections.get(connection_id)
        if connection is None or connection.ws.closed:
            return _json(410, f"connection {connection_id} is gone")
        if request.method == "POST":
            data = await request.read()
            if len(data) > WEBSOCKET_MAX_MESSAGE_BYTES:
                return _json(413, "Message too long")
            try:
                await self.send(connection_id, data.decode("utf-8", "replace"))
            except KeyError:
                return _json(410, f"connection {connection_id} is gone")
            return web.Response(status=200)
        if request.method == "GET":
            return web.json_response(
                {
                    # Wire names; boto3 presents them as ConnectedAt, Identity, LastActiveAt.
                    "connectedAt": _iso(connection.connected_at),
                    "identity": {
                        "sourceIp": connection.source_ip,
                        "userAgent": connection.user_agent,
                    },
                    "lastActiveAt": _iso(connection.last_active),
                }
            )
        if request.method == "DELETE":
            await self.close_connection(connection_id)
            return web.Response(status=204)
        return _json(405, "Method Not Allowed")

    # --- HTTP API -----------------------------------------------------------------------------

    def _http_event(self, request: web.Request, body: bytes) -> dict[str, Any]:
        raw_path, _, raw_query = request.raw_path.partition("?")
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in request.headers.items():
            key = name.lower()
            if key == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
            elif key in headers:
                headers[key] = f"{headers[key]},{value}"
            else:
                headers[key] = value
        headers.setdefault("x-forwarded-for", request.remote or "")
        headers.setdefault("x-forwarded-proto", request.scheme)
        domain = request.headers.get("Host", "").rsplit(":", 1)[0]
        now = time.time()
        query: dict[str, str] = {}
        for key, value in request.query.items():
            query[key] = f"{query[key]},{value}" if key in query else value
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": raw_path,
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": self.api_id,
                "domainName": domain,
                "domainPrefix": domain.split(".", 1)[0],
                "http": {
                    "method": request.method,
                    "path": request.path,
                    "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                    "sourceIp": request.remote or "",
                    "userAgent": request.headers.get("User-Agent", ""),
                },
                "requestId": uuid.uuid4().hex[:16],
                "routeKey": "$default",
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": bool(body),
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if body:
            event["body"] = base64.b64encode(body).decode("ascii")
        return event

    async def http(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(413, "Request Entity Too Large")
        event = self._http_event(request, body)
        if len(json.dumps(event)) > LAMBDA_MAX_EVENT_BYTES:
            return _json(413, "Request Entity Too Large")
        try:
            result = await asyncio.wait_for(
                self._invoke(self.http_pool, self.http_handler, event),
                self.limits.integration_timeout,
            )
        except TimeoutError:
            return _json(503, "Service Unavailable")
        if not isinstance(result, dict) or "statusCode" not in result:
            return _json(500, "Internal Server Error")
        return self._response(request, result)

    def _response(self, request: web.Request, result: dict[str, Any]) -> web.Response:
        raw = result.get("body") or ""
        body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
        response = web.Response(status=int(result["statusCode"]))
        for name, value in (result.get("headers") or {}).items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                response.headers.add(name, str(value))
        for cookie in result.get("cookies") or []:
            response.headers.add("Set-Cookie", cookie)
        response.headers.setdefault("Server", "hatchway-local")
        if response.status not in (204, 304):
            response.body = body  # aiohttp sends no body for HEAD itself
        return response
