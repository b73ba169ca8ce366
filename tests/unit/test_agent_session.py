"""The agent's session in process against the real local gateway: typed refusals, heartbeats
that renew claims, reconnect and rotation that keep the name, and handler failures answered."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hatchway import protocol
from hatchway.errors import NameTaken, RelayUnreachable, TokenRefused
from hatchway.session import Session
from hatchway_local.server import LocalServer, run_local
from support.visitor import visit

TOKEN = "hw_session-token-123"
OTHER = "hw_other-token-456"


def hello_app(request: protocol.Request) -> protocol.Response:
    return protocol.Response(
        request.id, 200, (("content-type", "text/plain"),), b"hello " + request.path.encode()
    )


@pytest.fixture
def relay() -> Iterator[LocalServer]:
    with run_local(tokens=(TOKEN, OTHER), response_timeout=5.0) as server:
        yield server


def session(
    relay: LocalServer, token: str = TOKEN, name: str | None = "sess", **kw: object
) -> Session:
    handler = kw.pop("handler", hello_app)
    options: dict[str, object] = {"backoff_base": 0.01, "backoff_cap": 0.05, **kw}
    return Session(relay.agent_url, token, handler, (name,), **options)  # type: ignore[arg-type]


def get(relay: LocalServer, name: str, path: str = "/") -> tuple[int, bytes]:
    answer = visit(relay.port, "GET", f"/t/{name}{path}", f"127.0.0.1:{relay.port}", timeout=10)
    return answer.status, answer.body


def test_start_returns_once_welcomed_and_requests_flow(relay: LocalServer) -> None:
    with session(relay).start() as agent:
        assert agent.welcome is not None
        assert agent.welcome.tunnels[0].path_url == f"http://127.0.0.1:{relay.port}/t/sess/"
        assert get(relay, "sess", "/x") == (200, b"hello /x")


def test_refusals_are_typed(relay: LocalServer) -> None:
    with pytest.raises(TokenRefused, match="refused the token"):
        session(relay, token="hw_unknown").start()
    with session(relay).start(), pytest.raises(NameTaken, match="held by another token"):
        session(relay, token=OTHER).start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RelayUnreachable, match="cannot reach"):
        Session(f"ws://127.0.0.1:{port}/connect", TOKEN, hello_app).start()


def test_heartbeats_renew_the_claim(relay: LocalServer) -> None:
    with session(relay, heartbeat=0.05).start():
        first = relay.store.get_claim("sess").expires_at  # type: ignore[union-attr]
        deadline = time.monotonic() + 5
        while relay.store.get_claim("sess").expires_at == first and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.02)
        assert relay.store.get_claim("sess").expires_at > first  # type: ignore[union-attr]


def test_reconnect_takes_a_random_name_back(relay: LocalServer) -> None:
    reconnects = threading.Event()
    agent = session(relay, name=None, on_reconnecting=lambda *a: reconnects.set()).start()
    with agent:
        assert agent.welcome is not None
        name = agent.welcome.tunnels[0].name
        (first,) = relay.connection_ids()
        relay.close_connection(first)
        assert reconnects.wait(5)
        deadline = time.monotonic() + 5
        while get(relay, name)[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert get(relay, name) == (200, b"hello /")
        assert relay.connection_ids() != [first]


def test_rotation_opens_the_new_connection_before_closing_the_old(relay: LocalServer) -> None:
    ready: list[protocol.Welcome] = []
    with session(relay, heartbeat=0.05, rotate_after=0.2, on_ready=ready.append).start():
        (first,) = relay.connection_ids()
        deadline = time.monotonic() + 5
        while first in relay.connection_ids() and time.monotonic() < deadline:
            assert get(relay, "sess")[0] == 200  # served throughout the rotation
        assert first not in relay.connection_ids()
        assert len(ready) >= 2 and all(w.tunnels[0].name == "sess" for w in ready)
        assert get(relay, "sess") == (200, b"hello /")


def test_a_failing_handler_is_answered_as_an_agent_fault(relay: LocalServer) -> None:
    def broken(request: protocol.Request) -> protocol.Response:
        raise RuntimeError("bug in the handler")

    with session(relay, handler=broken).start():
        status, body = get(relay, "sess")
    assert status == 502 and b"agent failed" in body and b"bug in the handler" in body
