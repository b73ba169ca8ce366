"""The agent's session in process against the real local gateway: typed refusals, heartbeats
that renew claims, reconnect and rotation that keep the name, handler failures answered, several
tunnels on one connection, guards the relay must confirm, and retrying an absent relay."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import websocket

from hatchway import protocol
from hatchway.errors import NameTaken, RelayUnreachable, SessionError, TokenRefused
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


def test_one_connection_serves_several_tunnels_each_by_its_handler(relay: LocalServer) -> None:
    def named(request: protocol.Request) -> protocol.Response:
        return protocol.Response(request.id, 200, body=f"{request.tunnel} {request.path}".encode())

    with Session(relay.agent_url, TOKEN, named, ("one", None, "three")).start() as agent:
        assert agent.welcome is not None
        granted = [t.name for t in agent.welcome.tunnels]
        assert granted[0] == "one" and granted[2] == "three"
        assert len(relay.connection_ids()) == 1
        for name in granted:
            assert get(relay, name, "/p") == (200, f"{name} /p".encode())
        assert agent.names == tuple(granted)  # a reconnect asks for the same names


def test_a_relay_that_does_not_confirm_the_guards_is_not_served(
    relay: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = relay.relay._send

    def like_an_old_relay(connection_id: str, message: protocol.Message) -> None:
        if isinstance(message, protocol.Welcome):
            tunnels = tuple(dataclasses.replace(t, guards=()) for t in message.tunnels)
            message = dataclasses.replace(message, tunnels=tunnels)
        send(connection_id, message)

    monkeypatch.setattr(relay.relay, "_send", like_an_old_relay)
    salt = b"0" * protocol.BASIC_AUTH_SALT_BYTES
    spec = protocol.TunnelSpec("guarded", basic_auth=protocol.hash_basic_auth("a:b", salt))
    with pytest.raises(SessionError, match="does not enforce basic_auth"):
        session(relay, name=spec).start()  # type: ignore[arg-type]


def test_an_unreachable_relay_is_retried_at_start_until_it_comes(unused_port: int) -> None:
    attempts: list[tuple[int, float, BaseException | None]] = []
    retrying, welcomed = threading.Event(), threading.Event()

    def reconnecting(attempt: int, delay: float, error: BaseException | None) -> None:
        attempts.append((attempt, delay, error))
        retrying.set()

    agent = Session(
        f"ws://127.0.0.1:{unused_port}/connect",
        TOKEN,
        hello_app,
        ("late",),
        backoff_base=0.01,
        backoff_cap=0.05,
        retry_at_start=True,
        on_reconnecting=reconnecting,
        on_ready=lambda welcome: welcomed.set(),
    )
    runner = threading.Thread(target=agent.run)
    runner.start()
    try:
        assert retrying.wait(5)
        with run_local(port=unused_port, tokens=(TOKEN,)) as late:
            assert welcomed.wait(10)
            assert get(late, "late") == (200, b"hello /")
            agent.close()
    finally:
        agent.close()
        runner.join(10)
    assert not runner.is_alive()
    attempt, delay, error = attempts[0]
    assert attempt == 1 and 0 <= delay <= 0.05
    assert isinstance(error, RelayUnreachable) and f"127.0.0.1:{unused_port}" in str(error)


def test_closing_while_the_relay_is_unreachable_ends_the_run_quietly(unused_port: int) -> None:
    retrying = threading.Event()
    agent = Session(
        f"ws://127.0.0.1:{unused_port}/connect",
        TOKEN,
        hello_app,
        retry_at_start=True,
        on_reconnecting=lambda *a: retrying.set(),
    )
    runner = threading.Thread(target=agent.run)
    runner.start()
    assert retrying.wait(5)
    agent.close()
    runner.join(10)
    assert not runner.is_alive()


class ScriptedSocket:
    """A WebSocket whose relay sends ``texts`` first, then stays silent until closed."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.sent: list[str] = []
        self.closed = threading.Event()
        self.answered = threading.Event()

    def send(self, text: str) -> None:
        self.sent.append(text)
        if '"type":"response"' in text:
            self.answered.set()

    def recv(self) -> str:
        return self.texts.pop(0)

    def recv_data(self) -> tuple[int, bytes]:
        self.closed.wait(10)
        return websocket.ABNF.OPCODE_CLOSE, b""

    def settimeout(self, timeout: float | None) -> None:
        pass

    def close(self, timeout: float = 0) -> None:
        self.closed.set()

    def abort(self) -> None:
        self.closed.set()


def test_a_request_that_overtakes_the_welcome_is_still_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The relay routes visitors to a name as soon as it is claimed, just before it sends the
    # welcome: on a busy name the first request can arrive first.
    early = protocol.encode(protocol.Request("early1", "busy", "GET", "/first"))
    welcome = protocol.encode(
        protocol.Welcome((protocol.TunnelInfo("busy", None, "http://r/t/busy/"),))
    )
    sock = ScriptedSocket([*early, *welcome])
    monkeypatch.setattr(websocket, "create_connection", lambda *a, **kw: sock)
    with Session("ws://relay.test/connect", TOKEN, hello_app, ("busy",)).start():
        assert sock.answered.wait(5)
    (answer,) = [protocol.decode(t) for t in sock.sent if '"type":"response"' in t]
    assert isinstance(answer, protocol.Part) and answer.id == "early1"
    assert answer.body == b"hello /first"


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
