"""``ApiGatewayPoster``: the ``Poster`` port over API Gateway's ``@connections`` management API
(boto3 ``apigatewaymanagementapi``); a 410 Gone becomes ``ConnectionGone``, any other failure
(throttled, timed out, a 5xx after the SDK's retries) ``PostFailed``."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hatchway_relay.ports import ConnectionGone, PostFailed


def make_client(
    endpoint_url: str, region: str | None = None, max_pool_connections: int = 64
) -> Any:
    """A management API client for ``https://{api}.execute-api.{region}.amazonaws.com/{stage}``
    (or the local gateway's URL).

    The pool is sized for many visitor requests posting at once from one warm Lambda. Timeouts
    are short because a post is a small write and every post happens inside the HTTP API's 30 s
    budget: three slow attempts must still leave time to answer the visitor."""
    config = Config(
        max_pool_connections=max_pool_connections,
        connect_timeout=2,
        read_timeout=5,
        # Standard mode retries throttling and 5xx with backoff; a 410 is never retried.
        retries={"mode": "standard", "max_attempts": 3},
    )
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint_url,
        region_name=region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        config=config,
    )


def management_failure(connection_id: str, exc: Exception) -> ConnectionGone | PostFailed:
    """What a failed management API call on ``connection_id`` means to the relay: a 410 Gone is
    ``ConnectionGone``; anything else (throttled, refused, timed out, a 5xx after the SDK's
    retries) is ``PostFailed``, named by the service's error code or the botocore error."""
    if isinstance(exc, ClientError):
        # ``client.exceptions.GoneException`` is a ClientError with this code; the status check
        # also covers an endpoint (a proxy, an emulator) that answers 410 without it.
        error = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error == "GoneException" or status == 410:
            return ConnectionGone(connection_id)
        return PostFailed(connection_id, f"{error or status}")
    return PostFailed(connection_id, type(exc).__name__)


MANAGEMENT_ERRORS = (ClientError, BotoCoreError)
"""What a management API call raises when it fails (BotoCoreError: timeouts and connection
errors, after the retries)."""


class ApiGatewayPoster:
    """Posts text messages to agents' WebSocket connections through a boto3 client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def post(self, connection_id: str, text: str) -> None:
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=text.encode("utf-8"))
        except MANAGEMENT_ERRORS as exc:
            raise management_failure(connection_id, exc) from exc
