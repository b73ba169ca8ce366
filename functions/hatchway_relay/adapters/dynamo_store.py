"""``DynamoStore``: the relay's state in one DynamoDB table (boto3), for AWS and for the local
gateway's ``--store dynamodb`` mode.

Single-table layout, ``pk``/``sk`` strings:

    token#<hash>  / token     agent token (only the hash is ever stored)
    conn#<id>     / conn      live connection and the names it holds
    name#<name>   / claim     who serves a tunnel name, until expires_at
    req#<id>      / pending   a visitor request waiting for its response (owner: conn)
    req#<id>      / frame#NNNN  one response frame, written only by the owning connection

Every item has a ``ttl`` for garbage collection only; readers check expiry in code because TTL
deletes late. Claims and frames use conditional writes. No hot path scans.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from hatchway_relay.ports import (
    Claim,
    Clock,
    ConnectionRecord,
    StoredFrame,
    SystemClock,
    TokenRecord,
)

TTL_MARGIN_SECONDS = 3600
"""Items are garbage-collected this long after they stop mattering."""

FIRST_POLL_SECONDS = 0.02
POLL_BACKOFF = 1.5
MAX_POLL_SECONDS = 0.2
"""Response polling: first retry after 20 ms, growing 1.5x per poll, capped at 200 ms."""


def create_table(resource: Any, name: str) -> None:
    """Create the table (PAY_PER_REQUEST, TTL on ``ttl``) if it does not exist yet."""
    client = resource.meta.client
    try:
        client.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
        return
    client.get_waiter("table_exists").wait(TableName=name)
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, Decimal) else value


def _dec(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def _ttl(expires_at: float) -> int:
    return int(expires_at + TTL_MARGIN_SECONDS)


def _failed_condition(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] in (
        "ConditionalCheckFailedException",
        "TransactionCanceledException",
    )


class DynamoStore:
    def __init__(self, table: Any, clock: Clock | None = None) -> None:
        self.table = table
        self.client = table.meta.client
        self._clock = clock or SystemClock()

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        """One item by key, strongly consistent (a read that matters is never stale)."""
        item: dict[str, Any] | None = self.table.get_item(
            Key={"pk": pk, "sk": sk}, ConsistentRead=True
        ).get("Item")
        return item

    # Tokens

    def put_token(self, record: TokenRecord) -> None:
        self.table.put_item(
            Item={
                "pk": f"token#{record.token_hash}",
                "sk": "token",
                "token_id": record.token_id,
                "label": record.label,
                "created_at": _dec(record.created_at),
                "reserved": list(record.reserved),
            }
        )

    def get_token(self, token_hash: str) -> TokenRecord | None:
        item = self._get(f"token#{token_hash}", "token")
        return None if item is None else self._token(item)

    @staticmethod
    def _token(item: dict[str, Any]) -> TokenRecord:
        return TokenRecord(
            token_hash=item["pk"].removeprefix("token#"),
            token_id=item["token_id"],
            label=item.get("label", ""),
            created_at=_num(item.get("created_at", 0)),
            reserved=tuple(item.get("reserved", ())),
        )

    def list_tokens(self) -> list[TokenRecord]:
        # An operator's command, never a request path: a filtered scan is acceptable here.
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"FilterExpression": Attr("sk").eq("token")}
        while True:
            page = self.table.scan(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return [self._token(i) for i in items]
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def delete_token(self, token_hash: str) -> None:
        self.table.delete_item(Key={"pk": f"token#{token_hash}", "sk": "token"})

    # Connections

    def put_connection(self, record: ConnectionRecord) -> None:
        self.table.put_item(
            Item={
                "pk": f"conn#{record.connection_id}",
                "sk": "conn",
                "token_id": record.token_id,
                "connected_at": _dec(record.connected_at),
                "expires_at": _dec(record.expires_at),
                "names": list(record.names),
                "source_ip": record.source_ip,
                "ttl": _ttl(record.expires_at),
            }
        )

    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        item = self._get(f"conn#{connection_id}", "conn")
        if item is None:
            return None
        return ConnectionRecord(
            connection_id=connection_id,
            token_id=item["token_id"],
            connected_at=_num(item["connected_at"]),
            expires_at=_num(item["expires_at"]),
            names=tuple(item.get("names", ())),
            source_ip=item.get("source_ip", ""),
        )

    def set_connection_names(self, connection_id: str, names: tuple[str, ...]) -> None:
        try:
            self.table.update_item(
                Key={"pk": f"conn#{connection_id}", "sk": "conn"},
                UpdateExpression="SET #names = :names",
                ConditionExpression=Attr("pk").exists(),
                ExpressionAttributeNames={"#names": "names"},
                ExpressionAttributeValues={":names": list(names)},
            )
        except ClientError as exc:
            if not _failed_condition(exc):
                raise

    def delete_connection(self, connection_id: str) -> None:
        self.table.delete_item(Key={"pk": f"conn#{connection_id}", "sk": "conn"})

    # Claims

    def claim_name(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        condition = (
            Attr("pk").not_exists()
            | Attr("expires_at").lte(_dec(now))
            | Attr("token_id").eq(claim.token_id)
        )
        if takeover_from is not None:
            condition = condition | Attr("connection_id").eq(takeover_from)
        try:
            self.table.put_item(
                Item={
                    "pk": f"name#{claim.name}",
                    "sk": "claim",
                    "connection_id": claim.connection_id,
                    "token_id": claim.token_id,
                    "expires_at": _dec(claim.expires_at),
                    "ttl": _ttl(claim.expires_at),
                },
                ConditionExpression=condition,
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise
        return True

    def get_claim(self, name: str) -> Claim | None:
        item = self._get(f"name#{name}", "claim")
        if item is None:
            return None
        return Claim(name, item["connection_id"], item["token_id"], _num(item["expires_at"]))

    def renew_claim(self, name: str, connection_id: str, expires_at: float) -> bool:
        try:
            self.table.update_item(
                Key={"pk": f"name#{name}", "sk": "claim"},
                UpdateExpression="SET expires_at = :e, #ttl = :t",
                ConditionExpression=Attr("connection_id").eq(connection_id),
                ExpressionAttributeNames={"#ttl": "ttl"},
                ExpressionAttributeValues={":e": _dec(expires_at), ":t": _ttl(expires_at)},
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise
        return True

    def release_claim(self, name: str, connection_id: str) -> bool:
        try:
            self.table.delete_item(
                Key={"pk": f"name#{name}", "sk": "claim"},
                ConditionExpression=Attr("connection_id").eq(connection_id),
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise
        return True

    # Pending requests and response frames

    def put_pending(self, request_id: str, connection_id: str, expires_at: float) -> None:
        self.table.put_item(
            Item={
                "pk": f"req#{request_id}",
                "sk": "pending",
                "conn": connection_id,
                "expires_at": _dec(expires_at),
                "ttl": _ttl(expires_at),
            }
        )

    def add_response_frame(
        self, request_id: str, connection_id: str, frame: StoredFrame, now: float
    ) -> bool:
        table = self.table.name
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": table,
                            "Key": {"pk": f"req#{request_id}", "sk": "pending"},
                            "ConditionExpression": "#conn = :conn AND expires_at > :now",
                            "ExpressionAttributeNames": {"#conn": "conn"},
                            "ExpressionAttributeValues": {
                                ":conn": connection_id,
                                ":now": _dec(now),
                            },
                        }
                    },
                    {
                        "Put": {
                            "TableName": table,
                            "Item": {
                                "pk": f"req#{request_id}",
                                "sk": f"frame#{frame.index:04d}",
                                "index": frame.index,
                                "count": frame.count,
                                "text": frame.text,
                                "conn": connection_id,
                                "ttl": _ttl(now),
                            },
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except ClientError as exc:
            if _failed_condition(exc):
                return False
            raise
        return True

    def _frames(
        self, request_id: str, projection: str | None = None, names: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """All frame items of a request (every page), strongly consistent."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"req#{request_id}")
            & Key("sk").begins_with("frame#"),
            "ConsistentRead": True,
        }
        if projection:
            kwargs["ProjectionExpression"] = projection
        if names:
            kwargs["ExpressionAttributeNames"] = names
        items: list[dict[str, Any]] = []
        while True:
            page = self.table.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def wait_response(self, request_id: str, until: float) -> list[StoredFrame] | None:
        pending = self._get(f"req#{request_id}", "pending")
        if pending is None:
            return None
        delay = FIRST_POLL_SECONDS
        while True:
            # Poll the small attributes only; fetch the texts once every part is there.
            index = self._frames(request_id, "sk, #i, #c", {"#i": "index", "#c": "count"})
            if index and len(index) == int(index[0]["count"]):
                items = self._frames(request_id)
                return sorted(
                    (StoredFrame(int(i["index"]), int(i["count"]), i["text"]) for i in items),
                    key=lambda f: f.index,
                )
            remaining = until - self._clock.now()
            if remaining <= 0:
                return None
            self._clock.sleep(min(delay, remaining))
            delay = min(delay * POLL_BACKOFF, MAX_POLL_SECONDS)

    def delete_request(self, request_id: str) -> None:
        keys = [{"pk": f"req#{request_id}", "sk": "pending"}]
        keys += [{"pk": i["pk"], "sk": i["sk"]} for i in self._frames(request_id, "pk, sk")]
        with self.table.batch_writer() as batch:
            for key in keys:
                batch.delete_item(Key=key)
