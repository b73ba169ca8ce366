"""The local gateway with a fake visitor-socket function attached (and stub agents' and HTTP
functions), served on 127.0.0.1 from its own thread, for tests of the visitor-socket API and of
``LocalSocketPoster``. Visitors are real aiohttp WebSocket clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from hatchway_local.access_log import AccessLog
from hatchway_local.concurrency import LambdaConcurrency
from hatchway_local.gateway import Gateway
from hatchway_local.platform import GatewayLimits
from hatchway_local.server import bind, serve_gateway

Event = dict[str, Any]

WAIT_SECONDS = 10.0
"""Bound on every wait for something the gateway or a client does."""


class SocketFunction:
    """A fake ``VisitorSocketFunction``: records every event (waitable), answers ``$connect``
    with ``connect_result(event)`` and runs ``on_message(event)`` for each ``$default``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = threading.Condition()
        self.connect_result: Callable[[Event], Event] = lambda event: {"statusCode": 200}
        self.on_message: Callable[[Event], None] = lambda event: None

    def __call__(self, event: Event, context: object) -> Event:
        route = event["requestContext"]["routeKey"]
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()
        if route == "$connect":
            return self.connect_result(event)
        if route == "$default":
            self.on_message(event)
        return {"statusCode": 200}

    def routed(self, route: str) -> list[Event]:
        with self.changed:
            return [e for e in self.events if e["requestContext"]["routeKey"] == route]

    def wait_for(self, route: str, count: int = 1) -> list[Event]:
        """The first ``count`` events of ``route``, once there are that many."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: len(self.routed(route)) >= count, timeout=WAIT_SECONDS
            )
        assert found, f"{count} {route} event(s) never came: {self.events}"
        return self.routed(route)[:count]


@dataclass
class Agents:
    """Stub agents' and HTTP functions: what reached them."""

    ws_events: list[Event]
    http_events: list[Event]

    def ws(self, event: Event, context: object) -> Event:
        self.ws_events.append(event)
        return {"statusCode": 200}

    def http(self, event: Event, context: object) -> Event:
        self.http_events.append(event)
        return {"statusCode": 501, "body": "websocket-unsupported"}


@dataclass
class Served:
    gateway: Gateway
    function: SocketFunction
    agents: Agents
    port: int

    def url(self, target: str) -> URL:
        """``target`` (path and query) on the gateway, byte for byte as written."""
        return URL(f"http://127.0.0.1:{self.port}{target}", encoded=True)

    def on_loop(self, call: Callable[[], Any]) -> Any:
        """Run ``call`` on the gateway's loop thread; its result (or its exception)."""
        loop = self.gateway.loop
        assert loop is not None

        async def run() -> Any:
            return call()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(WAIT_SECONDS)


@contextmanager
def socket_gateway(
    attach: bool = True,
    access_log: AccessLog | None = None,
    concurrency: LambdaConcurrency | None = None,
    websocket_on_loop: bool = False,
    **limits: Any,
) -> Iterator[Served]:
    """The gateway, the visitor-socket function attached unless ``attach`` is false."""
    function = SocketFunction()
    agents = Agents([], [])
    gateway = Gateway(
        {"127.0.0.1", "localhost"},
        GatewayLimits(**limits),
        concurrency,
        websocket_on_loop=websocket_on_loop,
        access_log=access_log,
    )
    gateway.set_handlers(agents.ws, agents.http)
    if attach:
        gateway.set_socket_handler(function)
    sock = bind("127.0.0.1", 0)
    with serve_gateway(gateway, sock):
        yield Served(gateway, function, agents, sock.getsockname()[1])


@asynccontextmanager
async def visitor(
    served: Served,
    target: str = "/chat?room=1",
    host: str = "app.localhost",
    **options: Any,
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A visitor's WebSocket to ``target`` on ``host``, open once the handshake is done."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            served.url(target),
            headers={"Host": host, **options.pop("headers", {})},
            timeout=aiohttp.ClientWSTimeout(ws_receive=WAIT_SECONDS, ws_close=WAIT_SECONDS),
            **options,
        ) as ws,
    ):
        yield ws
