"""``ApiGatewaySocketPoster``: the ``SocketPoster`` port over the visitor-socket API's
``@connections`` management API (boto3 ``apigatewaymanagementapi``, the client
``apigateway_poster.make_client`` makes). A 410 Gone becomes ``ConnectionGone``, any other
failure ``PostFailed``, as for posts to agents.

API Gateway's ``PostToConnection`` takes the message as bytes and has no field for the frame's
kind: ``binary`` cannot be honoured and the bytes are sent as given (the relay on AWS refuses
binary visitor messages anyway, and the app's text arrives as UTF-8). ``DeleteConnection``
carries no close code or reason: the visitor sees a normal closure (1000) whatever the app's
code was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hatchway_relay.adapters.apigateway_poster import MANAGEMENT_ERRORS, management_failure
from hatchway_relay.ports import ConnectionGone


class ApiGatewaySocketPoster:
    """Sends messages to visitors' WebSockets and closes them through a boto3 client, or a
    function that makes one: most invocations of the HTTP function never touch a socket, and
    a client built at every cold start would cost each one its CPU."""

    def __init__(self, client: Any | Callable[[], Any]) -> None:
        self._make = client if callable(client) else None
        self._client: Any = None if callable(client) else client

    @property
    def client(self) -> Any:
        if self._client is None and self._make is not None:
            self._client = self._make()  # two threads at once make two: no harm
        return self._client

    def send(self, socket_id: str, data: bytes, binary: bool) -> None:
        try:
            self.client.post_to_connection(ConnectionId=socket_id, Data=data)
        except MANAGEMENT_ERRORS as exc:
            raise management_failure(socket_id, exc) from exc

    def close(self, socket_id: str, code: int, reason: str) -> None:
        try:
            self.client.delete_connection(ConnectionId=socket_id)
        except MANAGEMENT_ERRORS as exc:
            failure = management_failure(socket_id, exc)
            if isinstance(failure, ConnectionGone):
                return  # already closed: what the caller wanted
            raise failure from exc
