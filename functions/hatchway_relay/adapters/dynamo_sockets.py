"""Visitors' WebSockets in the DynamoDB table: the ``Store`` port's socket methods.

A pairing lives in two items, each changed only by single-item writes:

    vsock#<socket id> / vsock   connection_id, token_id, tunnel, opened_at, expires_at, ttl,
                                passed (the number of the app's last message passed on)
    conn#<connection> / conn    ``sockets``: a string set of the socket ids it carries

The socket's item is the truth. ``get_socket`` reads it strongly consistent; a move is one
conditional update of it (only the socket's token moves it) and an end one ``DeleteItem``
that returns what it removed, so of two closers at once exactly one gets the record. No
transaction: it would cost twice, and DynamoDB cancels transactions that meet on one item,
which a busy agent's connection item would be.

The connection's set only answers ``sockets_of`` without a scan. Its ADD and DELETE updates
apply only while the connection item exists, so no socket write ever brings back a
connection deleted meanwhile. An id goes into a set *before* the socket's item names that
connection and leaves it only *after* the item stopped naming it: two writes that a crash can
separate, which then leave one id too many in a set, never one too few (as does a move or an
end still under way). So ``sockets_of`` may over-report (a socket since gone, or moved
elsewhere); callers re-check each id with ``get_socket``. Two more consequences for callers:

- ``delete_connection`` takes the set with it: read ``sockets_of`` before deleting the
  connection, or the sockets it carried are no longer listed anywhere.
- A move to a connection whose item is already gone is refused (False): the socket stays on
  the connection that carries it, whose end closes it, instead of on one nobody will close.

What the set costs: the connection item is in the ``Listings`` index (projection ALL), so each
ADD or DELETE also writes its index copy, and both are billed by the item's size, which grows
about 20 bytes per socket (a full ``MAX_SOCKETS_PER_CONNECTION`` connection: some 5 KB, five
write units a change): two such updates in a socket's life, two more for each move.

Socket ids are API Gateway connection ids (base64: ``+``, ``/``, ``=``); they appear only in
keys and values, never in expression paths, so any text works.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from hatchway_relay.adapters.dynamo_items import dec, num, ttl
from hatchway_relay.adapters.dynamo_requests import condition_failed
from hatchway_relay.ports import SocketRecord

SOCKETS = "sockets"
"""The connection item's string set of the socket ids it carries."""

PASSED = "passed"
"""The socket item's number of the app's last message passed to the visitor."""


def _socket_key(socket_id: str) -> dict[str, str]:
    return {"pk": f"vsock#{socket_id}", "sk": "vsock"}


def _connection_key(connection_id: str) -> dict[str, str]:
    return {"pk": f"conn#{connection_id}", "sk": "conn"}


def _record(item: dict[str, Any]) -> SocketRecord:
    return SocketRecord(
        socket_id=item["pk"].removeprefix("vsock#"),
        connection_id=item["connection_id"],
        token_id=item["token_id"],
        tunnel=item["tunnel"],
        opened_at=num(item["opened_at"]),
        expires_at=num(item["expires_at"]),
    )


class DynamoSockets:
    """Mixed into ``DynamoStore``."""

    table: Any

    def put_socket(self, record: SocketRecord) -> None:
        # Listed first, so the item never names a connection that does not list it. A
        # connection already gone lists nothing; the pairing is still written, and posting
        # the visitor's request to that connection is what finds it gone.
        self._list(record.connection_id, record.socket_id)
        self.table.put_item(
            Item={
                **_socket_key(record.socket_id),
                "connection_id": record.connection_id,
                "token_id": record.token_id,
                "tunnel": record.tunnel,
                "opened_at": dec(record.opened_at),
                "expires_at": dec(record.expires_at),
                "ttl": ttl(record.expires_at),
            }
        )

    def get_socket(self, socket_id: str) -> SocketRecord | None:
        item = self.table.get_item(Key=_socket_key(socket_id), ConsistentRead=True).get("Item")
        return None if item is None else _record(item)

    def move_socket(self, socket_id: str, token_id: str, connection_id: str) -> bool:
        listed_before = self._list(connection_id, socket_id)
        if listed_before is None:
            return False  # the new connection is gone already
        try:
            old = self.table.update_item(
                Key=_socket_key(socket_id),
                UpdateExpression="SET #conn = :conn",
                ConditionExpression="#token = :token",
                ExpressionAttributeNames={"#conn": "connection_id", "#token": "token_id"},
                ExpressionAttributeValues={":conn": connection_id, ":token": token_id},
                ReturnValues="ALL_OLD",
            )["Attributes"]
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            # Gone, or another token's: take back the listing this call added, and only that
            # (an id listed before was listed for a reason of its own).
            if not listed_before:
                self._unlist(connection_id, socket_id)
            return False
        if old["connection_id"] != connection_id:
            self._unlist(old["connection_id"], socket_id)
        return True

    def delete_socket(self, socket_id: str) -> SocketRecord | None:
        old = self.table.delete_item(Key=_socket_key(socket_id), ReturnValues="ALL_OLD").get(
            "Attributes"
        )
        if not old:
            return None  # another caller ended it first
        record = _record(old)
        self._unlist(record.connection_id, socket_id)
        return record

    def pass_socket_message(self, socket_id: str, seq: int) -> bool:
        """One conditional update of the socket's item (a write unit per message: a repeat
        is told apart only by what was noted before it)."""
        try:
            self.table.update_item(
                Key=_socket_key(socket_id),
                UpdateExpression="SET #passed = :seq",
                ConditionExpression=(
                    "attribute_exists(pk) AND (attribute_not_exists(#passed) OR #passed < :seq)"
                ),
                ExpressionAttributeNames={"#passed": PASSED},
                ExpressionAttributeValues={":seq": seq},
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False  # a repeat, or the socket is gone
            raise
        return True

    def sockets_of(self, connection_id: str) -> list[str]:
        """May list sockets that are gone or moved since (see the module docstring): re-check
        each with ``get_socket``. Strongly consistent: a socket listed a moment ago is never
        missed."""
        item = self.table.get_item(
            Key=_connection_key(connection_id),
            ConsistentRead=True,
            ProjectionExpression="#sockets",
            ExpressionAttributeNames={"#sockets": SOCKETS},
        ).get("Item")
        return sorted(item.get(SOCKETS, ())) if item else []

    def _list(self, connection_id: str, socket_id: str) -> bool | None:
        """Add the socket to the connection's set, if the connection item exists: whether it
        was listed already, None when the connection is gone."""
        try:
            old = self.table.update_item(
                Key=_connection_key(connection_id),
                UpdateExpression="ADD #sockets :ids",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames={"#sockets": SOCKETS},
                ExpressionAttributeValues={":ids": {socket_id}},
                # The whole item as it was: "updated" attributes may leave out a set that the
                # ADD left as it was (moto does), which is just the case this must see.
                ReturnValues="ALL_OLD",
            ).get("Attributes", {})
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        return socket_id in old.get(SOCKETS, ())

    def _unlist(self, connection_id: str, socket_id: str) -> None:
        """Take the socket off the connection's set; nothing when it is not there, or the
        connection item is gone (the condition is what keeps a deleted item from coming back
        as a stub holding only its key)."""
        try:
            self.table.update_item(
                Key=_connection_key(connection_id),
                UpdateExpression="DELETE #sockets :ids",
                ConditionExpression="contains(#sockets, :id)",
                ExpressionAttributeNames={"#sockets": SOCKETS},
                ExpressionAttributeValues={":ids": {socket_id}, ":id": socket_id},
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
