"""A real WebSocket app for tests: aiohttp on 127.0.0.1 in a thread of its own, the local app a
dev server's hot reload or a live page talks to.

``/ws`` accepts a socket (choosing ``vite-hmr`` when offered), says ``hello`` first, then
answers each message:

    text "echo:X"        text "X"           binary B           binary B back
    text "close:CODE"    closes with CODE and reason "app closing"
    text "burst:N"       N text messages "0".."N-1", in order
    text "big:N"         one text message of N bytes

``/refuse`` answers 403 without upgrading. Everything the app saw is recorded: each socket's
handshake headers and messages, and how each socket was closed (``closed``: code per socket).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web


@dataclass
class SocketApp:
    port: int = 0
    handshakes: list[dict[str, str]] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    closed: list[int | None] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def note(self, what: list[object], item: object) -> None:
        with self.changed:
            what.append(item)
            self.changed.notify_all()

    def wait(self, what: list[object], count: int, timeout: float = 10.0) -> list[object]:
        """``what`` once it holds ``count`` items (AssertionError after ``timeout``)."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(what) >= count, timeout):
                raise AssertionError(f"the app saw {what!r}, expected {count} items")
            return list(what)


async def _socket(app: SocketApp, request: web.Request) -> web.StreamResponse:
    app.note(app.handshakes, dict(request.headers))  # type: ignore[arg-type]
    ws = web.WebSocketResponse(protocols=("vite-hmr",), autoping=True)
    await ws.prepare(request)
    await ws.send_str("hello")
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            app.note(app.received, msg.data)  # type: ignore[arg-type]
            await ws.send_bytes(msg.data)
            continue
        if msg.type != WSMsgType.TEXT:
            break
        app.note(app.received, msg.data)  # type: ignore[arg-type]
        command, _, value = msg.data.partition(":")
        if command == "echo":
            await ws.send_str(value)
        elif command == "close":
            await ws.close(code=int(value), message=b"app closing")
        elif command == "burst":
            for n in range(int(value)):
                await ws.send_str(str(n))
        elif command == "big":
            await ws.send_str("x" * int(value))
    app.note(app.closed, ws.close_code)  # type: ignore[arg-type]
    return ws


async def _refuse(request: web.Request) -> web.StreamResponse:
    return web.Response(status=403, text="not for you")


@contextmanager
def run_socket_app() -> Iterator[SocketApp]:
    state = SocketApp()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        async def socket(request: web.Request) -> web.StreamResponse:
            return await _socket(state, request)

        web_app = web.Application()
        web_app.router.add_get("/ws", socket)
        web_app.router.add_get("/refuse", _refuse)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state.port = runner.addresses[0][1]
        runner_box.append(runner)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="socket-app", daemon=True)
    thread.start()
    assert ready.wait(10), "the socket app did not start"
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
