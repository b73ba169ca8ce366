"""The WebSocket API's Lambda handler: ``$connect``, ``$disconnect`` and ``$default`` in one
function, each a thin translation from the API Gateway event to a call on the relay core."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hatchway_relay.core import Relay
from hatchway_relay.ports import TokenLimits

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def bearer_token(event: Mapping[str, Any]) -> str | None:
    """The agent's token: ``Authorization: Bearer`` header, or ``token`` in the query string
    for WebSocket clients that cannot set headers."""
    for name, value in (event.get("headers") or {}).items():
        if name.lower() == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    from_query = (event.get("queryStringParameters") or {}).get("token")
    return from_query if isinstance(from_query, str) and from_query else None


def make_handler(relay: Relay) -> Handler:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        ctx = event["requestContext"]
        route = ctx["routeKey"]
        connection_id = ctx["connectionId"]
        if route == "$connect":
            source_ip = (ctx.get("identity") or {}).get("sourceIp", "")
            authorized = ctx.get("authorizer") or {}
            token_id = authorized.get("tokenId")
            if token_id:
                # On AWS the authorizer already checked the token; only API Gateway can set this.
                limits = (
                    TokenLimits(**json.loads(authorized["limits"]))
                    if authorized.get("limits")
                    else None
                )
                relay.register_connection(connection_id, token_id, source_ip, limits)
            elif not relay.connect(connection_id, bearer_token(event), source_ip):
                return {"statusCode": 401, "body": "hatchway relay: token refused"}
        elif route == "$disconnect":
            relay.disconnect(connection_id)
        else:
            relay.on_message(connection_id, event.get("body") or "")
        return {"statusCode": 200}

    return handler
