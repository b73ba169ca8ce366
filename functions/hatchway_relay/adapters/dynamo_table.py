"""The relay's DynamoDB table: its key schema, its sparse ``Listings`` index and its TTL,
created the way ``template.yaml`` creates it (for the local gateway's DynamoDB mode and the
tests). ``DynamoStore`` keeps the items in it; their layout is described there."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

LISTING_INDEX = "Listings"
"""The sparse global secondary index of long-lived items (see the module docstring); its name
is also in ``template.yaml``, whose IAM statements name it in the index ARN."""
LISTING_KEY = "listing"
"""The index's partition key attribute, present only on the items the listings return."""
TOKENS_LISTING = "tokens"
CONNECTIONS_LISTING = "connections"
CLAIMS_LISTING = "claims"
SHARES_LISTING_PREFIX = "shares#"
"""Followed by the token id: one token's share links are one index partition of their own,
which is all an agent's ``share list`` reads (and all its function may query)."""


def create_table(client_or_resource: Any, name: str) -> None:
    """Create the table (PAY_PER_REQUEST, TTL on ``ttl``, the ``Listings`` index) unless it
    exists, and wait until it is active. Safe to call on every start, also from several
    processes at once. ``template.yaml``'s ``RelayTable`` is the same table."""
    # A resource exposes its client as ``meta.client``; a client's own ``meta`` has no such field.
    client = getattr(client_or_resource.meta, "client", client_or_resource)
    try:
        client.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": LISTING_KEY, "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": LISTING_INDEX,
                    "KeySchema": [
                        {"AttributeName": LISTING_KEY, "KeyType": "HASH"},
                        {"AttributeName": "pk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
    except ClientError as exc:
        # Already there, possibly still CREATING (another process won the race): wait anyway.
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
    # The waiter's default first retry is 20 s; tables usually turn active in a few seconds.
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 90}
    )
    indexes = client.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes", [])
    if not any(index["IndexName"] == LISTING_INDEX for index in indexes):
        # A table from before the index: its items carry no listing key, so adding the index
        # would list none of them. Nothing deployed depends on such a table (pre-release).
        raise RuntimeError(
            f"table {name!r} has no {LISTING_INDEX!r} index (it was made by an older version): "
            "use another table name, or delete this one and let the relay create it again"
        )
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        if ttl.get("AttributeName") != "ttl":
            raise RuntimeError(
                f"table {name!r} expires items by attribute {ttl.get('AttributeName')!r}, not "
                "'ttl': use another table name or turn that TTL setting off first"
            )
        return
    # DynamoDB refuses to enable TTL twice, hence the check above.
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
