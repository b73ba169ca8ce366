"""Composition root on AWS Lambda: builds the relay from the function's environment once per
cold start and exposes the handler entry points that ``template.yaml`` names.

Environment: ``TABLE_NAME``, ``WEBSOCKET_MANAGEMENT_URL`` (``https://{api}.execute-api.{region}
.amazonaws.com/{stage}``), ``PATH_URL`` (template with ``{name}``; only the WebSocket function
needs it, for the welcome), and optionally
``SUBDOMAIN_URL`` and ``DOMAIN_NAME`` once a custom domain is configured.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import boto3

from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client
from hatchway_relay.adapters.dynamo_store import DynamoStore
from hatchway_relay.core import Relay, RelayConfig
from hatchway_relay.handlers import authorizer as authorizer_handlers
from hatchway_relay.handlers import http as http_handlers
from hatchway_relay.handlers import websocket as ws_handlers
from hatchway_relay.ports import SystemClock


@functools.cache
def relay() -> Relay:
    env = os.environ
    clock = SystemClock()
    table = boto3.resource("dynamodb").Table(env["TABLE_NAME"])
    return Relay(
        DynamoStore(table, clock),
        ApiGatewayPoster(make_client(env["WEBSOCKET_MANAGEMENT_URL"])),
        clock,
        RelayConfig(
            path_url=env.get("PATH_URL", ""),
            subdomain_url=env.get("SUBDOMAIN_URL") or None,
            domain=env.get("DOMAIN_NAME") or None,
        ),
    )


@functools.cache
def _handlers() -> tuple[ws_handlers.Handler, http_handlers.Handler, ws_handlers.Handler]:
    return (
        ws_handlers.make_handler(relay()),
        http_handlers.make_handler(relay()),
        authorizer_handlers.make_handler(relay()),
    )


def websocket_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handlers()[0](event, context)


def http_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handlers()[1](event, context)


def authorizer_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handlers()[2](event, context)
