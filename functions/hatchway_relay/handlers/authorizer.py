"""The WebSocket API's ``$connect`` authorizer (REQUEST type): the agent's token from the
``Authorization: Bearer`` header or the ``token`` query parameter, checked against the stored
hashes. Allowed connections carry the token's public id to ``$connect`` in the context, and
note the token's ``last_used`` (the operator's dashboard shows it).

A refused token gets a Deny policy (API Gateway answers 403), not an exception: a refusal is
the authorizer doing its job, and must not count as a Lambda error that pages the operator
every time a scanner knocks."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hatchway_relay.core import Relay
from hatchway_relay.handlers.websocket import Handler, bearer_token


def policy(principal: str, effect: str, resource: str) -> dict[str, Any]:
    return {
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }


def make_handler(relay: Relay) -> Handler:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        record = relay.admit(bearer_token(event))
        if record is None:
            return policy("refused", "Deny", event["methodArn"])
        context = {"tokenId": record.token_id}
        if record.limits:
            # Context values are strings: the limits travel to $connect as JSON.
            context["limits"] = json.dumps(dataclasses.asdict(record.limits))
        return policy(record.token_id, "Allow", event["methodArn"]) | {"context": context}

    return handler
