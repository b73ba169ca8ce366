"""AWS list prices the relay is designed around, in one table: ``make cost`` prices counted
operations with it, and the relay chooses where a response body travels from it.

us-east-1, on-demand list prices, checked 2026-11 on the AWS pricing pages of Lambda, API Gateway,
DynamoDB, S3 and CloudWatch. Every figure is dollars per one unit named beside it.
"""

from __future__ import annotations

import math

PRICES_CHECKED = "2026-11"
PRICES_SOURCE = "AWS list prices, us-east-1 (Lambda, API Gateway, DynamoDB, S3, CloudWatch pages)"

LAMBDA_ARM_GB_SECOND = 0.0000133334
"""Lambda duration on arm64, per GB-second (billed per 1 ms at the configured memory)."""
LAMBDA_REQUEST = 0.20 / 1_000_000
"""Lambda, per invocation."""
HTTP_API_REQUEST = 1.00 / 1_000_000
"""HTTP API, per request, metered in 512 KB increments of request plus response."""
HTTP_API_METERING_BYTES = 512 * 1024
WEBSOCKET_MESSAGE = 1.00 / 1_000_000
"""WebSocket API, per message in either direction, metered in 32 KB increments."""
WEBSOCKET_METERING_BYTES = 32 * 1024
WEBSOCKET_CONNECTION_MINUTE = 0.25 / 1_000_000
"""WebSocket API, per connection-minute."""
DYNAMODB_WRU = 0.625 / 1_000_000
"""DynamoDB on-demand, per write request unit (1 KB of item; transactions take two)."""
DYNAMODB_RRU = 0.125 / 1_000_000
"""DynamoDB on-demand, per read request unit (4 KB strongly consistent; a miss still takes one)."""
DYNAMODB_WRITE_UNIT_BYTES = 1024
DYNAMODB_READ_UNIT_BYTES = 4096
S3_PUT = 0.005 / 1000
"""S3 Standard, per PUT (or POST, COPY, LIST) request."""
S3_GET = 0.0004 / 1000
"""S3 Standard, per GET request."""
S3_GB_MONTH = 0.023
"""S3 Standard storage, per GB-month."""
LOGS_INGESTED_GB = 0.50
"""CloudWatch Logs, per GB ingested."""


def dynamodb_write_units(item_bytes: int) -> int:
    return max(1, math.ceil(item_bytes / DYNAMODB_WRITE_UNIT_BYTES))


def dynamodb_read_units(item_bytes: int) -> int:
    return max(1, math.ceil(item_bytes / DYNAMODB_READ_UNIT_BYTES))


def stored_response_limit() -> int:
    """The largest response item (bytes) that costs no more written to and read once from
    DynamoDB than a small pointer item plus an S3 PUT and GET of the body (about 9 KB): above
    it, a response body goes through the blob store."""
    through_s3 = S3_PUT + S3_GET + DYNAMODB_WRU + DYNAMODB_RRU
    size = DYNAMODB_WRITE_UNIT_BYTES
    while True:
        bigger = size + DYNAMODB_WRITE_UNIT_BYTES
        cost = dynamodb_write_units(bigger) * DYNAMODB_WRU + dynamodb_read_units(bigger) * (
            DYNAMODB_RRU
        )
        if cost > through_s3:
            return size
        size = bigger
