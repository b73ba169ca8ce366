"""The ``@connections`` management API of the local gateway, on a loopback listener of its own
whose URL carries a per-process key, so that no visitor can reach it.

On AWS the management API is a separate, IAM-signed endpoint; here the key stands in for the
signature. It travels as the first path segment (``http://127.0.0.1:<port>/<key>``), where
boto3's ``apigatewaymanagementapi`` client keeps an endpoint's path the way it keeps a stage
name, so the production ``ApiGatewayPoster`` reaches it unchanged.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
import socket
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import unquote

from aiohttp import web


class LiveConnection(Protocol):
    """One WebSocket connection as the gateway holds it."""

    ws: web.WebSocketResponse
    connected_at: float
    source_ip: str
    user_agent: str
    last_active: float


class Connections(Protocol):
    """What the management API acts on: the gateway's live connections (``Gateway``)."""

    @property
    def connections(self) -> Mapping[str, LiveConnection]: ...

    async def send(self, connection_id: str, data: str) -> None: ...

    async def close_connection(self, connection_id: str) -> bool: ...


MANAGEMENT_HOST = "127.0.0.1"
"""The management listener never binds elsewhere: it can post to and close any agent."""

MANAGEMENT_KEY_BYTES = 24
"""Randomness of the per-process key (URL-safe base64 of this many bytes)."""

CONNECTIONS_PATH = "/@connections/"


def new_key() -> str:
    return secrets.token_urlsafe(MANAGEMENT_KEY_BYTES)


def management_url(sock: socket.socket, key: str) -> str:
    """The endpoint URL to hand a management client (the stage-like path holds the key)."""
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}/{key}"


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def _json(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def management_app(gateway: Connections, key: str, max_message_bytes: int) -> web.Application:
    """``POST/GET/DELETE /<key>/@connections/{id}`` over ``gateway``'s live connections."""

    async def handle(request: web.Request) -> web.Response:
        given, slash, rest = request.raw_path.split("?", 1)[0].lstrip("/").partition("/")
        # A wrong key is refused before anything else is looked at, in constant time.
        if not hmac.compare_digest(given.encode(), key.encode()) or not slash:
            return _json(403, "Forbidden")
        path = "/" + rest
        if not path.startswith(CONNECTIONS_PATH):
            return _json(404, "Not Found")
        return await _connection(request, unquote(path[len(CONNECTIONS_PATH) :]))

    async def _connection(request: web.Request, connection_id: str) -> web.Response:
        connection = gateway.connections.get(connection_id)
        if connection is None or connection.ws.closed:
            # The caller named the id; echoing it tells nobody anything new (AWS says "Gone").
            return _json(410, "Gone")
        if request.method == "POST":
            if (request.content_length or 0) > max_message_bytes:
                return _json(413, "Message too long")
            data = await request.read()
            if len(data) > max_message_bytes:
                return _json(413, "Message too long")
            try:
                await gateway.send(connection_id, data.decode("utf-8", "replace"))
            except KeyError:
                return _json(410, "Gone")
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
            await gateway.close_connection(connection_id)
            return web.Response(status=204)
        return _json(405, "Method Not Allowed")

    # Messages are at most 128 KB; a little more lets the handler answer 413 itself.
    app = web.Application(client_max_size=max_message_bytes + 1)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
