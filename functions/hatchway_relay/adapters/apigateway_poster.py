"""``ApiGatewayPoster``: sends messages to agents through API Gateway's ``@connections`` API."""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from hatchway_relay.ports import ConnectionGone


def make_client(
    endpoint_url: str, region: str | None = None, max_pool_connections: int = 64
) -> Any:
    """A management API client; the pool is sized for many concurrent visitor requests."""
    config = Config(
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=10,
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


class ApiGatewayPoster:
    def __init__(self, client: Any) -> None:
        self.client = client

    def post(self, connection_id: str, text: str) -> None:
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=text.encode("utf-8"))
        except ClientError as exc:
            error = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if error == "GoneException" or status == 410:
                raise ConnectionGone(connection_id) from None
            raise
