"""The relay's posting ports inside the local gateway's own process: ``LocalPoster`` (the
``Poster`` to agents' connections) and ``LocalSocketPoster`` (the ``SocketPoster`` to visitors'
WebSockets).

From a worker thread a post waits until the gateway's loop has written the message (or fails);
from the loop's own thread (an invocation run there) it cannot wait, and the gateway writes the
message when that invocation returns, after the posts it made before."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any

from hatchway_local.gateway import Gateway
from hatchway_local.platform import WEBSOCKET_MAX_MESSAGE_BYTES
from hatchway_relay.ports import ConnectionGone, PostFailed

POST_TIMEOUT_SECONDS = 10.0
"""How long a handler thread waits for the gateway's loop to hand a message to a socket."""


class _LoopPoster:
    """Posts through the gateway's loop, from whichever thread the relay runs on."""

    def __init__(self, gateway: Gateway, timeout: float = POST_TIMEOUT_SECONDS) -> None:
        self.gateway = gateway
        self.timeout = timeout

    def _post(
        self,
        connection_id: str,
        size: int,
        live: Callable[[], bool],
        send: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Send what ``send`` makes to a connection, ``live`` telling whether it is open.
        ``send`` raises KeyError for a connection gone."""
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
            if not live():
                raise ConnectionGone(connection_id)
            self.gateway.post_on_loop(send())
            return
        future = asyncio.run_coroutine_threadsafe(send(), loop)
        try:
            future.result(self.timeout)
        except KeyError:
            raise ConnectionGone(connection_id) from None
        except concurrent.futures.TimeoutError:
            future.cancel()  # it may still land: receivers ignore repeats
            raise PostFailed(connection_id, f"timed out after {self.timeout:g} s") from None
        except Exception as exc:
            raise PostFailed(connection_id, f"{type(exc).__name__}: {exc}") from exc


class LocalPoster(_LoopPoster):
    """``Poster``: text messages to agents' connections (the agents' API)."""

    def post(self, connection_id: str, text: str) -> None:
        self._post(
            connection_id,
            len(text.encode("utf-8")),
            lambda: self.gateway.agents.live(connection_id),
            lambda: self.gateway.send(connection_id, text),
        )


OPENING_WAIT_SECONDS = 3.0
"""How long a post made on the loop's thread waits for its socket's handshake to complete."""


class LocalSocketPoster(_LoopPoster):
    """``SocketPoster``: visitors' WebSockets (the visitor-socket API). A socket still in its
    ``$connect`` is not open yet: from a worker thread posts to it are refused as gone, as API
    Gateway refuses them (410), and the relay tries again shortly. An invocation on the loop's
    own thread cannot pause without stopping the very handshake it waits for, so its post goes
    out once the handshake is done, before the invocation counts as finished."""

    def send(self, socket_id: str, data: bytes, binary: bool) -> None:
        sockets = self.gateway.sockets
        message: str | bytes = data if binary else data.decode("utf-8", "replace")
        if self.gateway.in_loop_thread() and socket_id in sockets.opening:

            async def once_open() -> None:
                if await sockets.once_open(socket_id, OPENING_WAIT_SECONDS):
                    await sockets.send(socket_id, message)

            self.gateway.post_on_loop(once_open())
            return
        self._post(
            socket_id,
            len(data),
            lambda: sockets.live(socket_id),
            lambda: sockets.send(socket_id, message),
        )

    def close(self, socket_id: str, code: int, reason: str) -> None:
        """Begin closing the socket with ``code`` and ``reason`` (a socket gone is left alone),
        after the messages sent before; the client's close frame is not waited for."""
        loop = self.gateway.loop
        if loop is None or loop.is_closed():
            return
        sockets = self.gateway.sockets
        if self.gateway.in_loop_thread():

            async def close() -> None:
                sockets.start_close(socket_id, code, reason)

            self.gateway.post_on_loop(close())
            return
        loop.call_soon_threadsafe(sockets.start_close, socket_id, code, reason)
