"""The visitor-socket API's Lambda handler: a visitor's WebSocket to a tunnel, each of its
``$connect``, ``$default`` and ``$disconnect`` a thin translation to ``Relay.sockets``.

The WebSocket API only serves its stage root, so the front before it (CloudFront on AWS, the
local gateway itself) says where the visitor was going: ``x-hatchway-host`` and
``x-hatchway-target`` (path and query as sent). Behind CloudFront the visitor's address is in
``cloudfront-viewer-address``, trusted only with the front's secret (``RelayConfig.front_secret``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hatchway import protocol
from hatchway.protocol import b64
from hatchway_relay.core import Relay, Reply, Visit
from hatchway_relay.handlers.http import result_from_reply
from hatchway_relay.replies import error_reply

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _headers(event: dict[str, Any]) -> list[tuple[str, str]]:
    """Every header of the handshake, repeated ones kept apart where the event has them."""
    multi = event.get("multiValueHeaders") or {}
    if multi:
        return [(name.lower(), value) for name, values in multi.items() for value in values]
    return [(name.lower(), value) for name, value in (event.get("headers") or {}).items()]


def viewer_ip(value: str) -> str:
    """The address of ``cloudfront-viewer-address`` (``IP:port``; an IPv6 address has colons
    of its own, so the port is what follows the last one)."""
    host = value.rsplit(":", 1)[0] if ":" in value else value
    return host.strip("[]")


def visit_from_connect(event: dict[str, Any], context: Any, trust_front: bool) -> Visit:
    ctx = event.get("requestContext") or {}
    headers = _headers(event)
    found = dict(headers)
    target = found.get("x-hatchway-target") or "/"
    path, _, query = target.partition("?")
    source_ip = (ctx.get("identity") or {}).get("sourceIp", "")
    if trust_front and found.get("cloudfront-viewer-address"):
        source_ip = viewer_ip(found["cloudfront-viewer-address"])
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    epoch = ctx.get("requestTimeEpoch")
    return Visit(
        method="GET",
        host=found.get("x-hatchway-host") or found.get("host") or "",
        path=path if path.startswith("/") else "/" + path,
        query=query,
        headers=tuple(headers),
        source_ip=source_ip,
        received_at=epoch / 1000 if isinstance(epoch, int) else None,
        time_left=remaining() / 1000 if callable(remaining) else None,
    )


def connect_result(reply: Reply) -> dict[str, Any]:
    """API Gateway completes the handshake on a 2xx; the subprotocol must be echoed there."""
    if reply.status == 101:
        chosen = [v for k, v in reply.headers if k == "sec-websocket-protocol"]
        return (
            {"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": chosen[0]}}
            if chosen
            else {"statusCode": 200}
        )
    return result_from_reply(reply)


def make_handler(relay: Relay) -> Handler:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        ctx = event["requestContext"]
        route = ctx["routeKey"]
        socket_id = ctx["connectionId"]
        sockets = relay.sockets
        if sockets is None:  # a relay built without the visitor-socket API's poster
            unavailable = error_reply(
                501, "websocket-unsupported", "This relay does not carry visitors' WebSockets."
            )
            return result_from_reply(unavailable) if route == "$connect" else {"statusCode": 200}
        if route == "$connect":
            trust = bool(relay.config.front_secret)
            return connect_result(
                sockets.connect(socket_id, visit_from_connect(event, context, trust))
            )
        if route == "$disconnect":
            code = ctx.get("disconnectStatusCode")
            sockets.visitor_left(
                socket_id,
                code if isinstance(code, int) else protocol.CLOSE_NO_STATUS,
                str(ctx.get("disconnectReason") or ""),
            )
        else:
            body = event.get("body") or ""
            binary = bool(event.get("isBase64Encoded"))
            data = (
                body
                if isinstance(body, bytes)
                else (b64.decode_lenient(body) if binary else body.encode("utf-8"))
            )
            sockets.from_visitor(socket_id, data, binary)
        return {"statusCode": 200}

    return handler
