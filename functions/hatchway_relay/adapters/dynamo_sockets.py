"""Visitors' WebSockets in the DynamoDB table: the ``Store`` port's socket methods."""

from __future__ import annotations

from typing import Any

from hatchway_relay.ports import SocketRecord


class DynamoSockets:
    """Mixed into ``DynamoStore``."""

    table: Any

    def put_socket(self, record: SocketRecord) -> None:
        raise NotImplementedError

    def get_socket(self, socket_id: str) -> SocketRecord | None:
        raise NotImplementedError

    def move_socket(self, socket_id: str, token_id: str, connection_id: str) -> bool:
        raise NotImplementedError

    def delete_socket(self, socket_id: str) -> SocketRecord | None:
        raise NotImplementedError

    def sockets_of(self, connection_id: str) -> list[str]:
        raise NotImplementedError
