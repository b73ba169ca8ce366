"""Visitors' WebSockets on the local gateway, in both store modes: a real WebSocket client as
the visitor, a real ``hatchway http`` agent, and a real WebSocket app behind it (a dev server's
hot reload, a live page). The gateway plays the front a relay on AWS puts before its
visitor-socket API: upgrades on a tunnel's own host (or under its path) become sockets of their
own, paired by the relay with the agent's connection."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable, Iterator

import pytest
import websocket

from hatchway import protocol
from hatchway_local.server import LocalServer
from support.processes import AgentProcess
from support.socket_app import SocketApp, run_socket_app

pytestmark = pytest.mark.e2e

READ_SECONDS = 10.0
"""How long the visitor waits for the next message before the test fails."""


@pytest.fixture
def socket_app() -> Iterator[SocketApp]:
    with run_socket_app() as app:
        yield app


def open_socket(
    relay: LocalServer,
    target: str = "/ws",
    name: str = "live",
    path_mode: bool = False,
    **kw: object,
) -> websocket.WebSocket:
    host = f"127.0.0.1:{relay.port}" if path_mode else f"{name}.localhost:{relay.port}"
    if path_mode:
        target = f"/t/{name}{target}"
    return websocket.create_connection(
        f"ws://127.0.0.1:{relay.port}{target}", host=host, timeout=READ_SECONDS, **kw
    )


def send_in_frames(ws: websocket.WebSocket, text: str) -> None:
    """One text message in frames of API Gateway's 32 KB at most, as a browser may send it."""
    data = text.encode()
    step = 32 * 1024
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    for n, piece in enumerate(pieces):
        opcode = websocket.ABNF.OPCODE_TEXT if n == 0 else websocket.ABNF.OPCODE_CONT
        ws.send_frame(websocket.ABNF.create_frame(piece, opcode, fin=n == len(pieces) - 1))


def closed_with(ws: websocket.WebSocket) -> tuple[int, str]:
    """Read until the close frame; its code and reason."""
    for _ in range(100):  # bounded: a socket that never closes fails the test
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data
            code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
            return code, data[2:].decode("utf-8", "replace")
    raise AssertionError("no close frame")


@pytest.mark.parametrize("path_mode", [False, True], ids=["subdomain", "path"])
def test_a_hot_reload_socket_passes_both_ways_with_its_subprotocol_origin_and_cookies(
    relay: LocalServer,
    socket_app: SocketApp,
    start_agent: Callable[..., AgentProcess],
    path_mode: bool,
) -> None:
    start_agent(relay, str(socket_app.port), "live")
    origin = f"http://live.localhost:{relay.port}"
    ws = open_socket(
        relay,
        "/ws?token=abc",
        path_mode=path_mode,
        subprotocols=["vite-hmr"],
        origin=origin,
        cookie="session=42",
    )
    try:
        assert ws.getsubprotocol() == "vite-hmr"
        assert ws.recv() == "hello"  # the app spoke first, as soon as it accepted
        (handshake,) = socket_app.wait(socket_app.handshakes, 1)
        assert handshake["Origin"] == origin  # type: ignore[index]
        assert handshake["Cookie"] == "session=42"  # type: ignore[index]
        assert handshake["Sec-WebSocket-Protocol"] == "vite-hmr"  # type: ignore[index]
        ws.send("echo:update")
        assert ws.recv() == "update"
        ws.send_binary(b"\x00\xffbinary")
        assert ws.recv() == b"\x00\xffbinary"
        ws.send("burst:50")
        assert [ws.recv() for _ in range(50)] == [str(n) for n in range(50)]  # in order
    finally:
        ws.close(status=4001)
    assert socket_app.wait(socket_app.closed, 1) == [4001]  # the visitor's code reached the app


def test_the_apps_close_reaches_the_visitor_with_its_code_and_reason(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(socket_app.port), "live")
    ws = open_socket(relay)
    assert ws.recv() == "hello"
    ws.send("close:4000")
    assert closed_with(ws) == (4000, "app closing")


def test_a_socket_the_app_refuses_is_refused_with_the_apps_status(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(socket_app.port), "live")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_socket(relay, "/refuse")
    assert refused.value.status_code == 403


def test_a_tunnels_password_guards_its_sockets_too(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(socket_app.port), "live", extra=["--basic-auth", "dev:s3cret"])
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_socket(relay)
    assert refused.value.status_code == 401
    assert socket_app.handshakes == []  # never reached the app
    credentials = base64.b64encode(b"dev:s3cret").decode()
    ws = open_socket(relay, header=[f"Authorization: Basic {credentials}"])
    assert ws.recv() == "hello"
    ws.close()


@pytest.mark.parametrize(
    ("size", "passes"),
    [(protocol.MAX_SOCKET_MESSAGE_BYTES, True), (protocol.MAX_SOCKET_MESSAGE_BYTES + 1, False)],
)
def test_a_message_past_the_tunnels_limit_closes_with_1009_in_words(
    relay: LocalServer,
    socket_app: SocketApp,
    start_agent: Callable[..., AgentProcess],
    size: int,
    passes: bool,
) -> None:
    start_agent(relay, str(socket_app.port), "live")
    ws = open_socket(relay)
    assert ws.recv() == "hello"
    ws.send("big:" + str(size))  # the app's message to the visitor
    if passes:
        assert ws.recv() == "x" * size
        ws.close()
        return
    code, reason = closed_with(ws)
    assert code == protocol.CLOSE_TOO_BIG
    assert str(protocol.MAX_SOCKET_MESSAGE_BYTES) in reason and "local app" in reason


def test_a_visitors_message_past_the_limit_closes_with_1009_in_words(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(socket_app.port), "live")
    ws = open_socket(relay)
    assert ws.recv() == "hello"
    send_in_frames(ws, "y" * (protocol.MAX_SOCKET_MESSAGE_BYTES + 1))
    code, reason = closed_with(ws)
    assert code == protocol.CLOSE_TOO_BIG
    assert reason.startswith("visitor:") and str(protocol.MAX_SOCKET_MESSAGE_BYTES) in reason
    socket_app.wait(socket_app.closed, 1)  # the app's side was closed too


def test_a_stopping_agent_closes_its_visitors_sockets_with_1001(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent(relay, str(socket_app.port), "live")
    ws = open_socket(relay)
    assert ws.recv() == "hello"
    agent.stop()
    code, reason = closed_with(ws)
    assert code == protocol.CLOSE_GOING_AWAY and "stopping" in reason


def test_a_vanished_agent_closes_its_visitors_sockets_naming_the_agent(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    agent = start_agent(relay, str(socket_app.port), "live")
    ws = open_socket(relay)
    assert ws.recv() == "hello"
    agent.kill()
    code, reason = closed_with(ws)
    assert code == protocol.CLOSE_INTERNAL and reason.startswith("agent:")


ROTATION_BUDGET_SECONDS = 20.0
"""How long the socket is used while the agent replaces its connection to the relay."""


def test_a_socket_lives_through_the_agents_connection_rotations(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(socket_app.port), "live", extra=["--rotate-after", "1"])
    ws = open_socket(relay)
    assert ws.recv() == "hello"
    first = set(relay.connection_ids())
    deadline = time.monotonic() + ROTATION_BUDGET_SECONDS
    sent = 0
    seen: set[str] = set()
    # Bounded: ends once two connections after the first have carried it, or at the deadline.
    while time.monotonic() < deadline and len(seen - first) < 2:
        ws.send(f"echo:{sent}")
        assert ws.recv() == str(sent)  # every message, both ways, in order
        sent += 1
        seen.update(relay.connection_ids())
    assert len(seen - first) >= 2, f"the agent did not rotate within the budget: {seen}"
    ws.send("burst:20")
    assert [ws.recv() for _ in range(20)] == [str(n) for n in range(20)]
    ws.close()
