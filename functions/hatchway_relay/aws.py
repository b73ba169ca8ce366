"""Composition root on AWS Lambda: builds the relay from the function's environment once per
cold start and exposes the handler entry points that ``template.yaml`` names.

Environment: ``TABLE_NAME``, ``SECRETS_KEY`` (the KMS key that seals webhook secrets in the
table), ``BLOB_BUCKET`` (the HTTP function's bodies too large for a
message), ``WEBSOCKET_MANAGEMENT_URL`` (``https://{api}.execute-api.{region}
.amazonaws.com/{stage}``), ``PATH_URL`` (template with ``{name}``; only the WebSocket function
needs it, for the welcome), and optionally
``SUBDOMAIN_URL`` and ``DOMAIN_NAME`` once a custom domain is configured, and
``CUSTOM_HOSTNAMES`` (``HOSTNAME=TUNNEL`` pairs, see ``hatchway_relay.hostnames``). Powertools reads
``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE`` and ``POWERTOOLS_LOG_LEVEL``.

Logs are JSON lines carrying the Lambda request id and API Gateway's request id as the
correlation id. Events are never logged: agents' tokens travel in their headers and query
strings. Metrics (see ``hatchway_relay.metrics``) go out as EMF lines in the same log.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client
from hatchway_relay.adapters.apigateway_socket_poster import ApiGatewaySocketPoster
from hatchway_relay.adapters.dynamo_store import DynamoStore
from hatchway_relay.adapters.emf_metrics import EmfMetrics
from hatchway_relay.adapters.kms_secrets import KmsSecretBox
from hatchway_relay.adapters.s3_blobs import S3BlobStore
from hatchway_relay.core import Relay, RelayConfig
from hatchway_relay.handlers import authorizer as authorizer_handlers
from hatchway_relay.handlers import http as http_handlers
from hatchway_relay.handlers import visitor_socket as visitor_socket_handlers
from hatchway_relay.handlers import websocket as ws_handlers
from hatchway_relay.hostnames import parse_custom_hostnames
from hatchway_relay.ports import BlobStore, SystemClock
from hatchway_relay.prices import stored_response_limit

HEAD_ALLOWANCE_BYTES = 1024
"""Room a stored response keeps for its status, headers and id beside the body."""


def inline_response_bytes() -> int:
    """Largest packed response body an agent sends inline when responses are stored in
    DynamoDB: base64 grows it by a third inside the item."""
    return (stored_response_limit() - HEAD_ALLOWANCE_BYTES) * 3 // 4


SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "relay"
logger = Logger(service=SERVICE)
metrics = Metrics(
    service=SERVICE, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Hatchway"
)
# The core logs through the standard ``hatchway`` loggers; they get the same JSON format.
logging.getLogger("hatchway")
copy_config_to_registered_loggers(source_logger=logger, include={"hatchway"})
# Most WebSocket invocations record no metric; that is not worth a warning in every log.
warnings.filterwarnings("ignore", message="No application metrics to publish")


@functools.cache
def relay() -> Relay:
    env = os.environ
    clock = SystemClock()
    table = boto3.resource("dynamodb").Table(env["TABLE_NAME"])
    blobs: BlobStore | None = None
    if env.get("BLOB_BUCKET"):
        blobs = S3BlobStore(boto3.client("s3"), env["BLOB_BUCKET"])
    secrets = (
        KmsSecretBox(boto3.client("kms"), env["SECRETS_KEY"]) if env.get("SECRETS_KEY") else None
    )
    # The functions that speak to visitors' sockets (the agents' and the visitor-socket one).
    visitor_sockets = env.get("VISITOR_SOCKET_MANAGEMENT_URL")
    sockets = (
        ApiGatewaySocketPoster(functools.partial(make_client, visitor_sockets))
        if visitor_sockets
        else None
    )
    return Relay(
        DynamoStore(table, clock),
        ApiGatewayPoster(make_client(env["WEBSOCKET_MANAGEMENT_URL"])),
        clock,
        RelayConfig(
            path_url=env.get("PATH_URL", ""),
            subdomain_url=env.get("SUBDOMAIN_URL") or None,
            domain=env.get("DOMAIN_NAME") or None,
            custom_hostnames=parse_custom_hostnames(env.get("CUSTOM_HOSTNAMES", "")),
            inline_response_bytes=inline_response_bytes(),
            front_secret=env.get("HATCHWAY_FRONT_SECRET") or None,
        ),
        EmfMetrics(metrics, SERVICE),
        blobs,
        secrets,
        sockets,
    )


@functools.cache
def _handlers() -> tuple[ws_handlers.Handler, http_handlers.Handler, ws_handlers.Handler]:
    return (
        ws_handlers.make_handler(relay()),
        http_handlers.make_handler(relay(), EmfMetrics(metrics, SERVICE)),
        authorizer_handlers.make_handler(relay()),
    )


@functools.cache
def _visitor_socket_handler() -> visitor_socket_handlers.Handler:
    return visitor_socket_handlers.make_handler(relay())


@metrics.log_metrics
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def websocket_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handlers()[0](event, context)


@metrics.log_metrics
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def http_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handlers()[1](event, context)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def authorizer_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _handlers()[2](event, context)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
def visitor_socket_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _visitor_socket_handler()(event, context)
