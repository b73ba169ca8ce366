"""``LocalPoster``: the relay's ``Poster`` port inside the local gateway's own process."""

from __future__ import annotations

import asyncio

from hatchway_local.gateway import WEBSOCKET_MAX_MESSAGE_BYTES, Gateway
from hatchway_relay.ports import ConnectionGone

POST_TIMEOUT_SECONDS = 10.0
"""How long a handler thread waits for the gateway's loop to hand a message to a socket."""


class LocalPoster:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def post(self, connection_id: str, text: str) -> None:
        if len(text.encode("utf-8")) > WEBSOCKET_MAX_MESSAGE_BYTES:
            raise ValueError(f"message exceeds {WEBSOCKET_MAX_MESSAGE_BYTES} bytes")
        loop = self.gateway.loop
        if loop is None or loop.is_closed():
            raise ConnectionGone(connection_id)
        future = asyncio.run_coroutine_threadsafe(self.gateway.send(connection_id, text), loop)
        try:
            future.result(POST_TIMEOUT_SECONDS)
        except KeyError:
            raise ConnectionGone(connection_id) from None
