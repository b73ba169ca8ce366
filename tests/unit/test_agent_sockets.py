"""Visitors' WebSockets on the agent's side, against a real local app (an aiohttp WebSocket
server on loopback) and a relay played in memory: the handshake (subprotocol, the app's
refusal, an absent app), messages both ways in order with acks, closes passed on with their
codes, the size, ack, idle and duration limits, and the cap on sockets. Then through a whole
session on the scripted relay of ``test_agent_session``: the move on rotation, the close on a
stop, and on a lost connection."""

from __future__ import annotations

import asyncio
import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from hatchway import protocol
from hatchway.protocol import Request, SocketAck, SocketClose, SocketFrame, SocketMove
from hatchway.protocol.sockets import SocketMessage
from hatchway.serving.forward import Forwarder, Target
from hatchway.serving.sockets import SocketLimits, SocketResponse, Sockets

WAIT = 10.0
"""Longest any step waits (they normally take milliseconds)."""

QUIET = 0.3
"""How long a test waits to see that something does NOT happen."""

LIMIT = protocol.MAX_SOCKET_MESSAGE_BYTES


# --- The local app: an aiohttp WebSocket server on a loop of its own ---------------------------


@dataclass
class Peer:
    """The app's end of one WebSocket: what it received, how it was closed, and ways to act."""

    loop: asyncio.AbstractEventLoop
    ws: web.WebSocketResponse
    request: web.Request
    received: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    closed: queue.Queue[tuple[int, str]] = field(default_factory=queue.Queue)

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(WAIT)

    def send(self, data: str | bytes) -> None:
        self.run(self.ws.send_str(data) if isinstance(data, str) else self.ws.send_bytes(data))

    def close(self, code: int, reason: str) -> None:
        self.run(self.ws.close(code=code, message=reason.encode()))

    def raw(self, data: bytes) -> None:
        """Bytes written as they are (a server's frames are not masked)."""

        async def write() -> None:
            assert self.request.transport is not None
            self.request.transport.write(data)

        self.run(write())

    def next(self) -> tuple[str, Any]:
        return self.received.get(timeout=WAIT)


class WsApp:
    """``/ws`` accepts WebSockets (subprotocol ``chat`` if offered), ``/refuse`` answers 403,
    ``/page`` a plain 200. Every socket opened is queued in ``peers``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.peers: queue.Queue[Peer] = queue.Queue()
        self.open: list[Peer] = []
        self.port = 0
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("chat",), autoping=False, max_msg_size=0)
        await ws.prepare(request)
        peer = Peer(self.loop, ws, request)
        self.open.append(peer)
        self.peers.put(peer)
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PONG):
                peer.received.put((msg.type.name.lower(), msg.data))
            elif msg.type == WSMsgType.CLOSE:
                peer.closed.put((msg.data, msg.extra or ""))
                break
            else:  # the connection ended without a close frame, or the app closed first
                peer.closed.put((ws.close_code or 1006, ""))
                break
        return ws

    async def _refuse(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="no entry", headers={"x-why": "members only"})

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="just a page")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/refuse", self._refuse)
        app.router.add_get("/page", self._page)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> WsApp:
        threading.Thread(target=self._run, daemon=True).start()
        assert self._ready.wait(WAIT)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for peer in self.open:
                if not peer.ws.closed:
                    await peer.ws.close(code=1001)
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def next_peer(self) -> Peer:
        return self.peers.get(timeout=WAIT)


# --- The relay, in memory ----------------------------------------------------------------------


class Relay:
    """Plays the relay: records what the agent sends, and acks each message at once unless
    ``acks`` is off."""

    def __init__(self, limits: SocketLimits | None = None, acks: bool = True) -> None:
        self.messages: queue.Queue[SocketMessage] = queue.Queue()
        self.acks = acks
        self.sockets = Sockets(self.send, limits)

    def send(self, message: SocketMessage) -> None:
        self.messages.put(message)
        if self.acks and isinstance(message, SocketFrame):
            self.sockets.dispatch(SocketAck(message.socket, message.seq))

    def next(self) -> SocketMessage:
        return self.messages.get(timeout=WAIT)

    def nothing_more(self) -> bool:
        try:
            self.messages.get(timeout=QUIET)
        except queue.Empty:
            return True
        return False

    def ended(self, socket_id: str) -> None:
        """Wait until the agent forgot the socket (its app connection is closed)."""
        bridge = self.sockets.get(socket_id)
        assert bridge is None or bridge.ended.wait(WAIT)


@pytest.fixture
def ws_app() -> Iterator[WsApp]:
    with WsApp() as app:
        yield app


@pytest.fixture
def forwarder(ws_app: WsApp) -> Iterator[Forwarder]:
    forwarder = Forwarder(Target("127.0.0.1", ws_app.port), timeout=5)
    yield forwarder
    forwarder.close()


def open_socket(
    relay: Relay,
    forwarder: Forwarder,
    socket_id: str = "s1",
    path: str = "/ws",
    headers: protocol.Headers = (),
) -> protocol.Response:
    """What ``Connection`` does with a socket request: open it, answer, then start it."""
    request = Request(
        f"r-{socket_id}",
        "sess",
        "GET",
        path,
        headers=(("Host", "sess.t.example"), *headers),
        socket=socket_id,
    )
    response = relay.sockets.open(request, forwarder.handle)
    if response.status == 101:
        relay.sockets.start(socket_id)
        if relay.acks:  # the relay stored the pair: the open is confirmed, as message 0
            relay.sockets.dispatch(SocketAck(socket_id, 0))
    return response


@pytest.fixture
def relay() -> Iterator[Relay]:
    relay = Relay()
    yield relay
    relay.sockets.shutdown()


def opened(relay: Relay, forwarder: Forwarder, ws_app: WsApp, socket_id: str = "s1") -> Peer:
    assert open_socket(relay, forwarder, socket_id).status == 101
    return ws_app.next_peer()


# --- Opening -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "chosen"),
    [("chat", "chat"), ("v2.chat, chat", "chat"), (None, None), ("v2.chat", None)],
)
def test_the_subprotocol_the_app_chose_is_in_the_101(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp, offer: str | None, chosen: str | None
) -> None:
    headers = (("Sec-WebSocket-Protocol", offer),) if offer else ()
    response = open_socket(relay, forwarder, headers=headers)
    assert isinstance(response, SocketResponse)
    assert (response.status, response.body, response.fault) == (101, b"", None)
    assert response.headers == ((("sec-websocket-protocol", chosen),) if chosen else ())
    assert ws_app.next_peer().ws.ws_protocol == chosen


def test_the_app_sees_the_visitors_headers_with_a_handshake_of_the_agents_own(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    visitor = (
        ("Origin", "https://sess.t.example"),
        ("Cookie", "a=1"),
        ("User-Agent", "visitor/1"),
        ("Sec-WebSocket-Key", "dmlzaXRvcnMga2V5IQ=="),
        ("Sec-WebSocket-Extensions", "permessage-deflate"),
        ("Sec-WebSocket-Version", "8"),
    )
    assert open_socket(relay, forwarder, headers=visitor).status == 101
    seen = ws_app.next_peer().request.headers
    assert (seen["Host"], seen["Origin"], seen["Cookie"]) == (
        "sess.t.example",
        "https://sess.t.example",
        "a=1",
    )
    assert seen["User-Agent"] == "visitor/1"
    assert seen["Sec-WebSocket-Key"] != "dmlzaXRvcnMga2V5IQ=="
    assert seen.getall("Sec-WebSocket-Key") == [seen["Sec-WebSocket-Key"]]
    assert seen.getall("Sec-WebSocket-Version") == ["13"]
    assert "Sec-WebSocket-Extensions" not in seen


def test_the_apps_refusal_is_passed_on_as_it_came(relay: Relay, forwarder: Forwarder) -> None:
    response = open_socket(relay, forwarder, path="/refuse")
    assert not isinstance(response, SocketResponse)
    assert (response.status, response.body, response.fault) == (403, b"no entry", None)
    assert ("x-why", "members only") in [(n.lower(), v) for n, v in response.headers]
    assert len(relay.sockets) == 0


def test_a_plain_2xx_is_no_websocket_and_says_so(relay: Relay, forwarder: Forwarder) -> None:
    response = open_socket(relay, forwarder, path="/page")
    assert response.status == 502 and response.fault is not None
    assert response.fault.side == "local app"
    assert "answered HTTP 200 instead of a WebSocket" in response.fault.message


def test_an_absent_app_is_a_502_that_names_it(relay: Relay) -> None:
    with WsApp() as gone:
        port = gone.port
    forwarder = Forwarder(Target("127.0.0.1", port), timeout=5)
    response = open_socket(relay, forwarder)
    assert response.status == 502 and response.fault is not None
    assert response.fault.side == "local app"
    assert f"connection refused by http://127.0.0.1:{port}" in response.fault.message
    assert b"The local app failed" in response.body
    assert len(relay.sockets) == 0


def test_past_the_cap_a_socket_is_refused_503_until_one_closes(
    forwarder: Forwarder, ws_app: WsApp
) -> None:
    relay = Relay(SocketLimits(max_sockets=2))
    try:
        first = opened(relay, forwarder, ws_app, "s1")
        opened(relay, forwarder, ws_app, "s2")
        refused = open_socket(relay, forwarder, "s3")
        assert refused.status == 503 and refused.fault is not None
        assert "carries 2 WebSockets, the most one connection may" in refused.fault.message
        assert ws_app.peers.empty()  # the app never saw it
        first.close(1000, "")
        assert relay.next() == SocketClose("s1", 1000, "")
        relay.ended("s1")
        assert open_socket(relay, forwarder, "s4").status == 101
    finally:
        relay.sockets.shutdown()


def test_the_default_cap_is_the_protocols() -> None:
    assert SocketLimits().max_sockets == protocol.MAX_SOCKETS_PER_CONNECTION == 256


# --- Messages ----------------------------------------------------------------------------------


def test_text_and_binary_pass_both_ways(relay: Relay, forwarder: Forwarder, ws_app: WsApp) -> None:
    peer = opened(relay, forwarder, ws_app)
    peer.send("héllo")
    peer.send(b"\x00\xff")
    assert relay.next() == SocketFrame("s1", "héllo".encode(), False, 1)
    assert relay.next() == SocketFrame("s1", b"\x00\xff", True, 2)
    relay.sockets.dispatch(SocketFrame("s1", "à vous".encode()))
    relay.sockets.dispatch(SocketFrame("s1", b"\x01\x02", binary=True))
    assert peer.next() == ("text", "à vous")
    assert peer.next() == ("binary", b"\x01\x02")


def test_a_fragmented_message_from_the_app_arrives_whole(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    peer = opened(relay, forwarder, ws_app)
    peer.raw(bytes([0x01, 3]) + b"abc" + bytes([0x00, 3]) + b"def" + bytes([0x80, 3]) + b"ghi")
    assert relay.next() == SocketFrame("s1", b"abcdefghi", False, 1)


def test_the_apps_pings_are_answered_by_the_agent_and_go_no_further(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    peer = opened(relay, forwarder, ws_app)
    peer.run(peer.ws.ping(b"are you there"))
    assert peer.next() == ("pong", b"are you there")
    assert relay.nothing_more()


def test_each_message_waits_for_the_ack_of_the_last(forwarder: Forwarder, ws_app: WsApp) -> None:
    relay = Relay(acks=False)
    try:
        peer = opened(relay, forwarder, ws_app)
        for word in ("one", "two", "three"):
            peer.send(word)
        assert relay.nothing_more()  # nothing before the relay confirmed the open
        relay.sockets.dispatch(SocketAck("s1", 0))
        for seq, word in enumerate(("one", "two", "three"), 1):
            assert relay.next() == SocketFrame("s1", word.encode(), False, seq)
            assert relay.nothing_more()  # the next waits for this one's ack
            relay.sockets.dispatch(SocketAck("s1", seq))
        relay.sockets.dispatch(SocketAck("s1", 3))  # a repeated ack changes nothing
        peer.send("four")
        assert relay.next() == SocketFrame("s1", b"four", False, 4)
    finally:
        relay.sockets.shutdown()


def test_an_open_the_relay_never_confirms_closes_both_sides_1011(
    forwarder: Forwarder, ws_app: WsApp
) -> None:
    relay = Relay(SocketLimits(ack_seconds=0.2), acks=False)
    try:
        peer = opened(relay, forwarder, ws_app)
        peer.send("too early")
        close = relay.next()  # the app's message never left
        assert close == SocketClose(
            "s1", 1011, "the relay did not confirm the socket opened within 0.2 s"
        )
        assert peer.closed.get(timeout=WAIT) == (1011, close.reason)
        relay.ended("s1")
    finally:
        relay.sockets.shutdown()


def test_an_ack_that_never_comes_closes_both_sides_1011(
    forwarder: Forwarder, ws_app: WsApp
) -> None:
    relay = Relay(SocketLimits(ack_seconds=0.2), acks=False)
    try:
        peer = opened(relay, forwarder, ws_app)
        relay.sockets.dispatch(SocketAck("s1", 0))
        peer.send("lost")
        assert isinstance(relay.next(), SocketFrame)
        close = relay.next()
        assert isinstance(close, SocketClose) and close.code == 1011
        assert close.reason == "the relay did not confirm message 1 within 0.2 s"
        assert peer.closed.get(timeout=WAIT) == (1011, close.reason)
        relay.ended("s1")
    finally:
        relay.sockets.shutdown()


@pytest.mark.parametrize(("size", "passes"), [(LIMIT, True), (LIMIT + 1, False)])
def test_an_app_message_past_the_limit_closes_1009(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp, size: int, passes: bool
) -> None:
    peer = opened(relay, forwarder, ws_app)
    peer.send(b"x" * size)
    message = relay.next()
    if passes:
        assert message == SocketFrame("s1", b"x" * size, True, 1)
        return
    assert isinstance(message, SocketClose) and message.code == 1009
    assert "the local app" in message.reason and str(LIMIT) in message.reason
    assert peer.closed.get(timeout=WAIT) == (1009, message.reason)
    relay.ended("s1")


def test_a_fragmented_app_message_past_the_limit_closes_1009(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    peer = opened(relay, forwarder, ws_app)
    half = LIMIT // 2 + 1  # each fragment fits; together they do not
    head = struct.pack("!H", half)
    peer.raw(bytes([0x02, 126]) + head + b"a" * half + bytes([0x80, 126]) + head + b"b" * half)
    message = relay.next()
    assert isinstance(message, SocketClose) and message.code == 1009
    assert peer.closed.get(timeout=WAIT)[0] == 1009


def test_an_app_that_sends_bad_utf8_text_is_closed_1007(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    peer = opened(relay, forwarder, ws_app)
    peer.raw(bytes([0x81, 2]) + b"\xc3\x28")
    message = relay.next()
    assert isinstance(message, SocketClose) and message.code == 1007
    assert peer.closed.get(timeout=WAIT)[0] == 1007


# --- Closing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (1001, "restarting"), (4001, "bye now"), (1011, "é" * 61)]
)
def test_the_apps_close_reaches_the_relay_with_its_code_and_reason(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp, code: int, reason: str
) -> None:
    peer = opened(relay, forwarder, ws_app)
    peer.send("last words")
    peer.close(code, reason)
    assert relay.next() == SocketFrame("s1", b"last words", False, 1)
    assert relay.next() == SocketClose("s1", code, reason)
    relay.ended("s1")
    assert relay.nothing_more()


def test_what_the_relay_confirmed_is_not_sent_again(forwarder: Forwarder, ws_app: WsApp) -> None:
    relay = Relay(acks=False)
    try:
        assert open_socket(relay, forwarder).status == 101
        relay.sockets.dispatch(SocketAck("s1", 0))
        peer = ws_app.next_peer()
        peer.send("one")
        assert relay.next() == SocketFrame("s1", b"one", False, 1)
        assert relay.sockets.unconfirmed(0.0) == [SocketFrame("s1", b"one", False, 1)]
        assert relay.sockets.unconfirmed(time.monotonic() + 1) == []  # sent before that
        relay.sockets.dispatch(SocketAck("s1", 1))
        assert relay.sockets.unconfirmed(0.0) == []
        peer.close(4000, "done")
        assert relay.next() == SocketClose("s1", 4000, "done")
        assert relay.sockets.unconfirmed(0.0) == [SocketClose("s1", 4000, "done")]
        relay.sockets.dispatch(SocketClose("s1", 4000, "done"))  # the relay's confirmation
        assert relay.sockets.unconfirmed(0.0) == []
        relay.sockets.send_again([SocketClose("s1", 4000, "done")])
        assert relay.nothing_more()
    finally:
        relay.sockets.shutdown()


@pytest.mark.parametrize(
    ("code", "app_sees"),
    [(1000, 1000), (1001, 1001), (4002, 4002), (1005, 1001), (1006, 1001), (1015, 1001)],
)
def test_the_relays_close_reaches_the_app_with_a_code_it_may_carry(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp, code: int, app_sees: int
) -> None:
    peer = opened(relay, forwarder, ws_app)
    relay.sockets.dispatch(SocketFrame("s1", b"before the close"))
    relay.sockets.dispatch(SocketClose("s1", code, "the visitor left"))
    assert peer.next() == ("text", "before the close")
    assert peer.closed.get(timeout=WAIT) == (app_sees, "the visitor left")
    relay.ended("s1")
    assert relay.nothing_more()  # the relay knows: no close goes back


def test_a_message_for_a_socket_the_agent_has_not_is_answered_with_a_close(
    relay: Relay,
) -> None:
    relay.sockets.dispatch(SocketFrame("unknown", b"hello?"))
    message = relay.next()
    assert isinstance(message, SocketClose) and (message.socket, message.code) == ("unknown", 1001)
    relay.sockets.dispatch(SocketAck("unknown", 0))
    relay.sockets.dispatch(SocketClose("unknown"))
    assert relay.nothing_more()


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        (SocketLimits(idle_seconds=0.3), "no message either way for 0.3 s"),
        (SocketLimits(max_seconds=0.5, idle_seconds=5), "open 0.5 s, the most it may be"),
    ],
)
def test_a_socket_idle_or_open_too_long_closes_1001_both_ways(
    forwarder: Forwarder, ws_app: WsApp, limits: SocketLimits, words: str
) -> None:
    relay = Relay(limits)
    try:
        peer = opened(relay, forwarder, ws_app)
        if limits.idle_seconds > 1:  # keep it busy: only its age closes it
            relay.sockets.dispatch(SocketFrame("s1", b"busy"))
            assert peer.next() == ("text", "busy")
        message = relay.next()
        assert isinstance(message, SocketClose) and message.code == 1001
        assert words in message.reason
        assert peer.closed.get(timeout=WAIT) == (1001, message.reason)
        relay.ended("s1")
    finally:
        relay.sockets.shutdown()


def test_activity_either_way_keeps_a_socket_open(forwarder: Forwarder, ws_app: WsApp) -> None:
    relay = Relay(SocketLimits(idle_seconds=0.6))
    try:
        peer = opened(relay, forwarder, ws_app)
        for turn in range(4):  # 4 x 0.2 s: past the idle time, never idle that long
            if turn % 2:
                peer.send("from the app")
                assert isinstance(relay.next(), SocketFrame)
            else:
                relay.sockets.dispatch(SocketFrame("s1", b"from the visitor"))
                assert peer.next()[0] == "text"
            assert relay.messages.empty() and peer.closed.empty()
            threading.Event().wait(0.2)
        assert len(relay.sockets) == 1
    finally:
        relay.sockets.shutdown()


def test_stop_closes_every_socket_1001_both_ways_and_opens_no_more(
    relay: Relay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    peers = [opened(relay, forwarder, ws_app, f"s{i}") for i in range(3)]
    relay.sockets.stop()
    closes = {relay.next() for _ in peers}
    assert closes == {SocketClose(f"s{i}", 1001, "the agent is stopping") for i in range(3)}
    for peer in peers:
        assert peer.closed.get(timeout=WAIT) == (1001, "the agent is stopping")
    assert len(relay.sockets) == 0
    refused = open_socket(relay, forwarder, "late")
    assert refused.status == 503 and refused.fault is not None
    assert "stopping" in refused.fault.message


# --- Through a session: rotation, stop, a lost connection --------------------------------------

from test_agent_session import FakeRelay, RelayEnd, fake_relay, session  # noqa: E402


@pytest.fixture
def scripted() -> Iterator[FakeRelay]:
    with fake_relay() as relay:
        yield relay


def socket_request(end: RelayEnd, socket_id: str = "s1") -> protocol.Response:
    """Open a socket through the session, and confirm it as the relay does."""
    end.send(Request(f"r-{socket_id}", "sess", "GET", "/ws", socket=socket_id))
    response = end.response()
    if response.status == 101:
        end.send(SocketAck(socket_id, 0))
    return response


def receive(end: RelayEnd) -> protocol.Message:
    message, _ = end.receive()
    return message


def test_a_rotation_moves_the_sockets_to_the_new_connection_first(
    scripted: FakeRelay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    with session(scripted, forwarder.handle, rotation_quiet=0.2).start() as agent:
        old = scripted.next()
        assert socket_request(old).status == 101
        peer = ws_app.next_peer()
        peer.send("on the old one")
        assert receive(old) == SocketFrame("s1", b"on the old one", False, 1)
        old.send(SocketAck("s1", 1))
        # What the ticker starts before the platform's 2 h limit, started here and now.
        serving = agent._current
        assert serving is not None
        threading.Thread(target=agent._rotate, args=(serving,), daemon=True).start()
        new = scripted.next()
        assert receive(new) == SocketMove(("s1",))
        peer.send("on the new one")
        assert receive(new) == SocketFrame("s1", b"on the new one", False, 2)
        new.send(SocketAck("s1", 2))
        # The old connection is still read until it closes: the visitor's message arrives.
        old.send(SocketFrame("s1", b"late, on the old one"))
        assert peer.next() == ("text", "late, on the old one")
        assert old.closed.wait(WAIT)  # once quiet (``rotation_quiet``)
        new.send(SocketFrame("s1", b"on the new one"))
        assert peer.next() == ("text", "on the new one")
        assert len(agent.sockets) == 1


def test_socket_messages_api_gateway_could_not_take_go_again(
    scripted: FakeRelay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    # API Gateway's "could not take it" frame names no message: the app's message awaiting
    # its ack goes again (the relay passes a repeat on once), and so does a close the relay
    # has not confirmed.
    lost = protocol.Undelivered("Internal server error", "aws-request-id")

    def again(end: RelayEnd) -> SocketMessage:
        """The next socket message (the recent 101 goes again too, as any recent answer)."""
        while isinstance(message := receive(end), protocol.Response):
            assert message.status == 101
        assert isinstance(message, SocketFrame | SocketClose), message
        return message

    with session(scripted, forwarder.handle).start():
        end = scripted.next()
        assert socket_request(end).status == 101
        peer = ws_app.next_peer()
        peer.send("first")
        assert receive(end) == SocketFrame("s1", b"first", False, 1)
        end.send(lost)
        assert again(end) == SocketFrame("s1", b"first", False, 1)
        end.send(lost)  # that copy was lost too
        assert again(end) == SocketFrame("s1", b"first", False, 1)
        end.send(SocketAck("s1", 1))
        peer.send("second")
        assert receive(end) == SocketFrame("s1", b"second", False, 2)
        end.send(SocketAck("s1", 2))
        end.send(lost)  # about another message: nothing of the socket's awaits a confirmation
        peer.close(4000, "done")
        assert receive(end) == SocketClose("s1", 4000, "done")
        end.send(lost)
        assert again(end) == SocketClose("s1", 4000, "done")


def test_a_stop_closes_the_sockets_1001_before_the_connection_leaves(
    scripted: FakeRelay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    agent = session(scripted, forwarder.handle, rotation_quiet=0.2).start()
    end = scripted.next()
    assert socket_request(end).status == 101
    peer = ws_app.next_peer()
    stopper = threading.Thread(target=agent.stop, args=(WAIT,), daemon=True)
    stopper.start()
    assert receive(end) == protocol.Leaving()
    # The open socket holds nothing up: once quiet, it closes, then the connection.
    assert receive(end) == SocketClose("s1", 1001, "the agent is stopping")
    assert peer.closed.get(timeout=WAIT) == (1001, "the agent is stopping")
    assert end.closed.wait(WAIT)
    stopper.join(WAIT)
    assert not stopper.is_alive()


def test_a_lost_connection_closes_the_apps_side(
    scripted: FakeRelay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    with session(scripted, forwarder.handle).start() as agent:
        end = scripted.next()
        assert socket_request(end).status == 101
        peer = ws_app.next_peer()
        end.close()
        assert peer.closed.get(timeout=WAIT) == (1001, "the agent lost its connection to the relay")
        again = scripted.next()  # reconnected, with no socket to move
        assert socket_request(again, "s2").status == 101
        assert ws_app.next_peer() is not peer and agent.sockets.ids() == ("s2",)


def test_a_socket_open_holds_no_place_of_its_tunnel(
    scripted: FakeRelay, forwarder: Forwarder, ws_app: WsApp
) -> None:
    with session(scripted, forwarder.handle).start() as agent:
        end = scripted.next()
        for index in range(3):
            assert socket_request(end, f"s{index}").status == 101
        current = agent._current
        # Each request is done with a moment after its answer went out.
        assert current is not None and current.held.wait_empty(WAIT)
        assert agent.in_flight == 0 and len(agent.sockets) == 3
        assert agent.gate.held("sess") == 0 and agent.gate.waiting("sess") == 0


def test_a_socket_opened_before_its_connection_is_current_waits_for_it(
    scripted: FakeRelay, forwarder: Forwarder
) -> None:
    # A connection serves from its welcome on, a moment before ``run`` makes it the current
    # one: a socket opened then (its app speaking at once) must not find no connection.
    agent = session(scripted, forwarder.handle)

    @dataclass
    class Serving:
        ended: threading.Event = field(default_factory=threading.Event)
        sent: list[protocol.Message] = field(default_factory=list)

        def send(self, message: protocol.Message) -> None:
            self.sent.append(message)

    sending = threading.Thread(
        target=agent._send_socket, args=(SocketFrame("s1", b"first"),), daemon=True
    )
    sending.start()
    serving = Serving()
    agent._set_current(serving)  # type: ignore[arg-type]
    sending.join(WAIT)
    assert serving.sent == [SocketFrame("s1", b"first")]
