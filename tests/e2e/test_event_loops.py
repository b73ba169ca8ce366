"""The local gateway on each of its event loops (``hatchway_local.event_loop``): uvloop, which
it runs on by default and the rest of the suite runs it on, and asyncio's own, its fallback.
One tunnel's main paths through each: a small request, a body that travels through the blob
store, the path mode, a stream, and a visitor's WebSocket, through a real agent."""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Callable, Iterator

import pytest
import websocket

from hatchway_local.event_loop import loop_kind
from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.socket_app import SocketApp, run_socket_app
from support.visitor import visit

pytestmark = pytest.mark.e2e

LARGE_BODY = bytes(range(256)) * 1200
"""300 KB: past what a message carries, so it travels through the blob store both ways."""


@pytest.fixture(params=["memory"])
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["uvloop", "asyncio"])
def relay(make_relay: Callable[..., LocalServer], request: pytest.FixtureRequest) -> LocalServer:
    return make_relay(event_loop=request.param)


@pytest.fixture
def socket_app() -> Iterator[SocketApp]:
    with run_socket_app() as app:
        yield app


def test_the_gateway_runs_on_the_loop_it_was_asked_for(
    relay: LocalServer, request: pytest.FixtureRequest
) -> None:
    assert loop_kind(relay.loop) == request.node.callspec.params["relay"]


def test_requests_small_large_and_in_path_mode_pass(
    relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(app.port), "loops")
    host = f"loops.localhost:{relay.port}"
    small = visit(relay.port, "GET", "/echo/small?x=1", host)
    assert small.status == 200
    assert json.loads(small.body)["target"] == "/echo/small?x=1"
    large = visit(relay.port, "POST", "/upload", host, body=LARGE_BODY)
    assert large.status == 200
    assert hashlib.sha256(large.body).digest() == hashlib.sha256(LARGE_BODY).digest()
    by_path = visit(relay.port, "GET", "/t/loops/echo/by-path", f"127.0.0.1:{relay.port}")
    assert by_path.status == 200
    assert json.loads(by_path.body)["target"] == "/echo/by-path"


def test_a_stream_passes_as_the_app_writes_it(
    relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(app.port), "loops", extra=["--stream"])
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        conn.request("GET", "/events?n=2", headers={"Host": f"loops.localhost:{relay.port}"})
        response = conn.getresponse()
        assert response.status == 200
        # The app holds its second event until the first has reached the visitor.
        assert response.readline() + response.readline() == b"data: 0\n\n"
        app.next_event.release()
        assert response.read() == b"data: 1\n\n"
    finally:
        conn.close()


def test_a_visitors_websocket_passes(
    relay: LocalServer, socket_app: SocketApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(socket_app.port), "live")
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{relay.port}/ws", host=f"live.localhost:{relay.port}", timeout=10
    )
    try:
        assert ws.recv() == "hello"
        ws.send("echo:over the loop")
        assert ws.recv() == "over the loop"
    finally:
        ws.close(status=1000)
    assert socket_app.wait(socket_app.closed, 1) == [1000]
