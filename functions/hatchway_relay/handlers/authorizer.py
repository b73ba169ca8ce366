"""The WebSocket API's ``$connect`` authorizer (REQUEST type): the agent's token from the
``Authorization: Bearer`` header or the ``token`` query parameter, checked against the stored
hashes. Allowed connections carry the token's public id to ``$connect`` in the context."""

from __future__ import annotations

from typing import Any

from hatchway_relay.core import Relay
from hatchway_relay.handlers.websocket import Handler, bearer_token


class Unauthorized(Exception):
    """API Gateway answers 401 when an authorizer fails with exactly this message."""

    def __init__(self) -> None:
        super().__init__("Unauthorized")


def make_handler(relay: Relay) -> Handler:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        record = relay.authorize(bearer_token(event))
        if record is None:
            raise Unauthorized()
        return {
            "principalId": record.token_id,
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Action": "execute-api:Invoke",
                        "Effect": "Allow",
                        "Resource": event["methodArn"],
                    }
                ],
            },
            "context": {"tokenId": record.token_id},
        }

    return handler
