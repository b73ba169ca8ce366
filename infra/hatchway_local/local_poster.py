"""``LocalPoster``: the relay's ``Poster`` port inside the local gateway's own process.

From a worker thread a post waits until the gateway's loop has written the message (or fails);
from the loop's own thread (a WebSocket invocation run there) it cannot wait, and the gateway
writes the message when that invocation returns."""

from __future__ import annotations

import asyncio
import concurrent.futures

from hatchway_local.gateway import Gateway
from hatchway_local.platform import WEBSOCKET_MAX_MESSAGE_BYTES
from hatchway_relay.ports import ConnectionGone, PostFailed

POST_TIMEOUT_SECONDS = 10.0
"""How long a handler thread waits for the gateway's loop to hand a message to a socket."""


class LocalPoster:
    def __init__(self, gateway: Gateway, timeout: float = POST_TIMEOUT_SECONDS) -> None:
        self.gateway = gateway
        self.timeout = timeout

    def post(self, connection_id: str, text: str) -> None:
        size = len(text.encode("utf-8"))
        if size > WEBSOCKET_MAX_MESSAGE_BYTES:
            # What the @connections API answers (413) for a message it will not send.
            raise PostFailed(
                connection_id,
                f"message of {size} bytes is above the {WEBSOCKET_MAX_MESSAGE_BYTES}-byte limit",
            )
        loop = self.gateway.loop
        if loop is None or loop.is_closed():
            raise ConnectionGone(connection_id)
        if self.gateway.in_loop_thread():
            try:
                self.gateway.post_on_loop(connection_id, text)
            except KeyError:
                raise ConnectionGone(connection_id) from None
            return
        future = asyncio.run_coroutine_threadsafe(self.gateway.send(connection_id, text), loop)
        try:
            future.result(self.timeout)
        except KeyError:
            raise ConnectionGone(connection_id) from None
        except concurrent.futures.TimeoutError:
            future.cancel()  # it may still land: receivers ignore repeats
            raise PostFailed(connection_id, f"timed out after {self.timeout:g} s") from None
        except Exception as exc:
            raise PostFailed(connection_id, f"{type(exc).__name__}: {exc}") from exc
