"""AWS list prices the relay is designed around, in one table: ``make cost`` prices counted
operations with it, and the relay chooses where a response body travels from it.

us-east-1, on-demand list prices, checked 2026-11 on the AWS pricing pages of Lambda, API Gateway,
DynamoDB, S3, CloudWatch and EC2 (data transfer). Every figure is dollars per one unit named beside
it; the two Lambda facts that are not prices (CPU share by memory) sit with the Lambda prices.
"""

from __future__ import annotations

import math

PRICES_CHECKED = "2026-11"
PRICES_SOURCE = (
    "AWS list prices, us-east-1 (Lambda, API Gateway, DynamoDB, S3, CloudWatch, EC2 data transfer)"
)

LAMBDA_ARM_GB_SECOND = 0.0000133334
"""Lambda duration on arm64, per GB-second (billed per 1 ms at the configured memory)."""
LAMBDA_REQUEST = 0.20 / 1_000_000
"""Lambda, per invocation."""
LAMBDA_ONE_VCPU_MB = 1769
"""Lambda's CPU share follows memory: "at 1,769 MB, a function has the equivalent of one vCPU
(one vCPU-second of credits per second)", proportionally less below (Lambda developer guide,
"Configuring Lambda function memory", checked 2026-11). Single-threaded work gets no faster above.
The INIT phase is billed like the invocation since 2025-08-01 (AWS Compute blog, "AWS Lambda
standardizes billing for INIT Phase")."""
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
LOGS_STORED_GB_MONTH = 0.03
"""CloudWatch Logs storage, per GB-month (billed on the compressed size: pricing raw bytes is an
upper bound)."""
DATA_TRANSFER_OUT_GB = 0.09
"""Data transferred out of us-east-1 to the internet, per GB: the first-10-TB-a-month tier, after
the 100 GB a month every account gets free across services (EC2 pricing page, "Data Transfer";
S3 pricing page, "Data Transfer"; checked 2026-11). API Gateway bills it for HTTP APIs ("the API
calls you receive and the amount of data transferred out") and S3 for objects read from outside
AWS (the agent's presigned downloads; reads by the relay's Lambda in the same region are free).
The same pricing page bills WebSocket APIs on "messages sent and received and connection
minutes" alone, with no data-transfer item, so ``@connections`` posts are priced as messages
(per 32 KB), not as transfer; ``make cost`` still reports their bytes."""


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
