"""Visitors' WebSockets through the relay core, specified with fakes: the visitor-socket API's
events go through its handler, the agent is a fake on the other end of a fake poster, and the
visitor's side is a poster that records what reaches it. No sockets, no threads."""

from __future__ import annotations

from base64 import b64encode
from dataclasses import dataclass, field
from typing import Any

import pytest

from hatchway import protocol
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.core import Relay, RelayConfig
from hatchway_relay.handlers.visitor_socket import make_handler, viewer_ip
from hatchway_relay.ports import ConnectionGone, PostFailed
from hatchway_relay.sockets import OPEN_GRACE_SECONDS
from support.fake_clock import FakeClock
from support.relay_fakes import FakeAgent, FakePoster

TOKEN_A = "hw_token-a"
TOKEN_B = "hw_token-b"
HOST = "myapp.t.example.test"


@dataclass
class FakeVisitors:
    """The visitor-socket API's side: what each visitor's socket was sent, and how it closed.
    ``gone_first`` makes that many sends to a socket answer 410 first (a ``$connect`` that has
    not returned yet)."""

    sent: dict[str, list[tuple[bytes, bool]]] = field(default_factory=dict)
    closed: dict[str, tuple[int, str]] = field(default_factory=dict)
    gone_first: int = 0
    failing: bool = False

    def send(self, socket_id: str, data: bytes, binary: bool) -> None:
        if self.failing:
            raise PostFailed(socket_id, "throttled")
        if self.gone_first > 0 or socket_id in self.closed:
            self.gone_first -= 1
            raise ConnectionGone(socket_id)
        self.sent.setdefault(socket_id, []).append((data, binary))

    def close(self, socket_id: str, code: int, reason: str) -> None:
        self.closed.setdefault(socket_id, (code, reason))


def accept(subprotocol: str | None = "vite-hmr") -> Any:
    """A local app that accepts every socket, choosing ``subprotocol``."""

    def app(request: protocol.Request) -> protocol.Response:
        if not request.socket:
            return protocol.Response(request.id, 200, body=b"page")
        headers = (("sec-websocket-protocol", subprotocol),) if subprotocol else ()
        return protocol.Response(request.id, 101, headers)

    return app


class Harness:
    def __init__(self, socket_binary: bool = True, front_secret: str | None = None) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(self.clock)
        self.poster = FakePoster()
        self.visitors = FakeVisitors()
        self.relay = Relay(
            self.store,
            self.poster,
            self.clock,
            RelayConfig(
                path_url="http://relay.test/t/{name}/",
                subdomain_url="http://{name}.t.example.test/",
                domain="t.example.test",
                socket_binary=socket_binary,
                front_secret=front_secret,
            ),
            sockets=self.visitors,
        )
        self.handler = make_handler(self.relay)
        self.relay.add_token(TOKEN_A, "laptop")
        self.relay.add_token(TOKEN_B, "someone else")

    def agent(
        self,
        connection_id: str,
        app: Any = None,
        token: str = TOKEN_A,
        spec: protocol.TunnelSpec | None = None,
    ) -> FakeAgent:
        assert self.relay.connect(connection_id, token)
        agent = FakeAgent(self.relay, connection_id, app or accept())
        self.poster.agents[connection_id] = agent
        agent.send(protocol.Hello((spec or protocol.TunnelSpec("myapp"),)))
        return agent

    def event(self, route: str, socket_id: str, **extra: Any) -> dict[str, Any]:
        context = {
            "routeKey": route,
            "connectionId": socket_id,
            "requestTimeEpoch": int(self.clock.now() * 1000),
            "identity": {"sourceIp": extra.pop("source_ip", "203.0.113.9")},
        }
        context.update(extra.pop("context", {}))
        return {"requestContext": context, **extra}

    def connect(
        self,
        socket_id: str = "sock1=",
        target: str = "/hmr?token=x",
        headers: dict[str, str] | None = None,
        source_ip: str = "203.0.113.9",
    ) -> dict[str, Any]:
        sent = {
            "Host": "abc.execute-api.test",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Protocol": "vite-hmr",
            "Origin": f"https://{HOST}",
            "Cookie": "session=1",
            "x-hatchway-host": HOST,
            "x-hatchway-target": target,
            **(headers or {}),
        }
        event = self.event("$connect", socket_id, headers=sent, source_ip=source_ip)
        return self.handler(event, None)

    def message(self, socket_id: str, data: bytes, binary: bool = False) -> None:
        body = b64encode(data).decode() if binary else data.decode()
        self.handler(self.event("$default", socket_id, body=body, isBase64Encoded=binary), None)

    def leave(self, socket_id: str, code: int = 1000, reason: str = "") -> None:
        context = {"disconnectStatusCode": code, "disconnectReason": reason}
        self.handler(self.event("$disconnect", socket_id, context=context), None)


OPENED = protocol.SocketAck("sock1=", 0)
"""The relay's word that the socket is open (the pair stored): the open is message 0."""


def frames(agent: FakeAgent) -> list[protocol.Message]:
    """The socket messages the agent got, but for the opens' acknowledgements."""
    return [
        m
        for m in agent.received
        if isinstance(m, protocol.SocketFrame) or (isinstance(m, protocol.SocketAck) and m.seq > 0)
    ]


def closes(agent: FakeAgent) -> list[protocol.SocketClose]:
    return [m for m in agent.received if isinstance(m, protocol.SocketClose)]


@pytest.fixture
def h() -> Harness:
    return Harness()


# --- Opening ----------------------------------------------------------------------------------


def test_an_accepted_socket_echoes_the_apps_subprotocol_and_pairs_the_socket(h: Harness) -> None:
    agent = h.agent("c1")
    assert h.connect("sock1=") == {
        "statusCode": 200,
        "headers": {"Sec-WebSocket-Protocol": "vite-hmr"},
    }
    request = agent.requests[-1]
    assert (request.socket, request.method, request.path, request.query) == (
        "sock1=",
        "GET",
        "/hmr",
        "token=x",
    )
    names = {name.lower() for name, _ in request.headers}
    assert {"origin", "cookie", "sec-websocket-protocol"} <= names
    assert not names & {"sec-websocket-key", "sec-websocket-version", "x-hatchway-host"}
    record = h.store.get_socket("sock1=")
    assert record is not None and (record.connection_id, record.tunnel) == ("c1", "myapp")
    assert agent.received[-1] == OPENED  # told once the pair was stored


def test_no_subprotocol_chosen_means_no_header(h: Harness) -> None:
    h.agent("c1", accept(None))
    assert h.connect() == {"statusCode": 200}


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [
        (protocol.Response("x", 403, body=b"no"), 403, None),
        (protocol.Response("x", 200, body=b"a page"), 502, "local-app-not-websocket"),
        (
            protocol.Response("x", 502, fault=protocol.Fault("local app", "refused")),
            502,
            "local-app-error",
        ),
    ],
)
def test_a_socket_the_app_does_not_accept_is_refused_and_not_paired(
    h: Harness, answer: protocol.Response, status: int, code: str | None
) -> None:
    h.agent(
        "c1",
        lambda r: protocol.Response(r.id, answer.status, answer.headers, answer.body, answer.fault),
    )
    result = h.connect()
    assert result["statusCode"] == status
    assert result["headers"].get("x-hatchway-error") == code
    assert h.store.get_socket("sock1=") is None


def test_the_tunnels_rules_apply_before_the_app_is_reached(h: Harness) -> None:
    rules = protocol.AccessRules(allow=("198.51.100.0/24",))
    agent = h.agent("c1", spec=protocol.TunnelSpec("myapp", access=rules))
    assert h.connect(source_ip="203.0.113.9")["statusCode"] == 403
    assert agent.requests == []
    assert h.connect(source_ip="198.51.100.7")["statusCode"] == 200


def test_no_tunnel_no_socket(h: Harness) -> None:
    result = h.connect()
    assert result["statusCode"] == 404
    assert result["headers"]["x-hatchway-error"] == "tunnel-not-found"


def test_path_mode_sockets_route_by_path() -> None:
    h = Harness()
    agent = h.agent("c1")
    result = h.connect(target="/t/myapp/ws", headers={"x-hatchway-host": "relay.test"})
    assert result["statusCode"] == 200
    assert agent.requests[-1].path == "/ws"


def test_behind_a_front_only_its_connects_pass_and_the_viewer_address_counts() -> None:
    h = Harness(front_secret="s3cret")
    rules = protocol.AccessRules(allow=("198.51.100.0/24",))
    h.agent("c1", spec=protocol.TunnelSpec("myapp", access=rules))
    assert h.connect(source_ip="198.51.100.7")["headers"]["x-hatchway-error"] == "front-required"
    through_front = {"x-hatchway-front": "s3cret", "cloudfront-viewer-address": "198.51.100.7:5123"}
    # The API Gateway source address is CloudFront's; the viewer's is what the rules check.
    assert h.connect(headers=through_front, source_ip="130.176.0.1")["statusCode"] == 200


@pytest.mark.parametrize(
    ("value", "ip"),
    [
        ("198.51.100.7:5123", "198.51.100.7"),
        ("2001:db8::1:443", "2001:db8::1"),
        ("[::1]:80", "::1"),
    ],
)
def test_viewer_address_without_its_port(value: str, ip: str) -> None:
    assert viewer_ip(value) == ip


# --- Messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "binary"), [(b"hello", False), (b"\x00\xff\x10", True)])
def test_a_visitors_message_reaches_the_agent(h: Harness, data: bytes, binary: bool) -> None:
    agent = h.agent("c1")
    h.connect()
    h.message("sock1=", data, binary)
    assert frames(agent) == [protocol.SocketFrame("sock1=", data, binary)]


def test_the_apps_messages_reach_the_visitor_each_acknowledged(h: Harness) -> None:
    agent = h.agent("c1")
    h.connect()
    for seq, data in enumerate([b"one", b"two"], start=1):
        agent.send(protocol.SocketFrame("sock1=", data, seq=seq))
    assert h.visitors.sent["sock1="] == [(b"one", False), (b"two", False)]
    assert frames(agent) == [protocol.SocketAck("sock1=", 1), protocol.SocketAck("sock1=", 2)]


def test_an_apps_message_sent_again_reaches_the_visitor_once(h: Harness) -> None:
    # The agent sends a message again when API Gateway says it lost one of the agent's
    # messages, without saying which: here it was another, and this one had passed.
    agent = h.agent("c1")
    h.connect()
    agent.send(protocol.SocketFrame("sock1=", b"one", seq=1))
    agent.send(protocol.SocketFrame("sock1=", b"one", seq=1))
    agent.send(protocol.SocketFrame("sock1=", b"two", seq=2))
    assert h.visitors.sent["sock1="] == [(b"one", False), (b"two", False)]
    # The repeat gets no ack of its own: the ack of 1 came from its one pass.
    assert frames(agent) == [protocol.SocketAck("sock1=", 1), protocol.SocketAck("sock1=", 2)]
    assert not closes(agent) and not h.visitors.closed


@pytest.mark.parametrize(
    ("size", "passes"),
    [(protocol.MAX_SOCKET_MESSAGE_BYTES, True), (protocol.MAX_SOCKET_MESSAGE_BYTES + 1, False)],
)
def test_a_visitors_message_past_the_limit_closes_both_sides(
    h: Harness, size: int, passes: bool
) -> None:
    agent = h.agent("c1")
    h.connect()
    h.message("sock1=", b"x" * size)
    if passes:
        assert len(frames(agent)) == 1 and not h.visitors.closed
        return
    code, reason = h.visitors.closed["sock1="]
    assert code == protocol.CLOSE_TOO_BIG
    assert reason.startswith("visitor:") and str(protocol.MAX_SOCKET_MESSAGE_BYTES) in reason
    assert closes(agent) == [protocol.SocketClose("sock1=", protocol.CLOSE_TOO_BIG, reason)]
    assert h.store.get_socket("sock1=") is None


def test_a_relay_that_carries_text_only_closes_a_binary_message_in_words() -> None:
    h = Harness(socket_binary=False)
    agent = h.agent("c1")
    h.connect()
    agent.send(protocol.SocketFrame("sock1=", b"\x00", binary=True, seq=1))
    code, reason = h.visitors.closed["sock1="]
    assert code == protocol.CLOSE_UNSUPPORTED_DATA and reason.startswith("local app:")
    assert closes(agent)[0].code == protocol.CLOSE_UNSUPPORTED_DATA
    assert "sock1=" not in h.visitors.sent


def test_a_message_for_a_socket_just_opened_is_retried_until_the_handshake_completes(
    h: Harness,
) -> None:
    agent = h.agent("c1")
    h.connect()
    h.visitors.gone_first = 3
    agent.send(protocol.SocketFrame("sock1=", b"first", seq=1))
    assert h.visitors.sent["sock1="] == [(b"first", False)]
    assert frames(agent) == [protocol.SocketAck("sock1=", 1)]


def test_a_visitor_gone_past_the_open_grace_is_told_to_the_agent(h: Harness) -> None:
    agent = h.agent("c1")
    h.connect()
    h.clock.advance(OPEN_GRACE_SECONDS)
    h.visitors.gone_first = 1
    agent.send(protocol.SocketFrame("sock1=", b"late", seq=1))
    assert closes(agent) == [
        protocol.SocketClose("sock1=", protocol.CLOSE_GOING_AWAY, "the visitor left")
    ]
    assert h.store.get_socket("sock1=") is None


def test_a_message_the_relay_cannot_pass_closes_both_sides_in_words(h: Harness) -> None:
    agent = h.agent("c1")
    h.connect()
    h.visitors.failing = True
    agent.send(protocol.SocketFrame("sock1=", b"x", seq=1))
    code, reason = h.visitors.closed["sock1="]
    assert code == protocol.CLOSE_INTERNAL and reason.startswith("relay:")
    assert closes(agent)[0].code == protocol.CLOSE_INTERNAL


# --- Who may speak for a socket ----------------------------------------------------------------


def test_another_tokens_connection_cannot_reach_the_visitor(h: Harness) -> None:
    h.agent("c1")
    h.connect()
    intruder = h.agent("c9", token=TOKEN_B, spec=protocol.TunnelSpec("other"))
    intruder.send(protocol.SocketFrame("sock1=", b"injected", seq=1))
    intruder.send(protocol.SocketClose("sock1=", 1000, ""))
    intruder.send(protocol.SocketMove(("sock1=",)))
    assert "sock1=" not in h.visitors.sent and "sock1=" not in h.visitors.closed
    assert h.store.get_socket("sock1=").connection_id == "c1"  # type: ignore[union-attr]
    assert closes(intruder)[0].code == protocol.CLOSE_GOING_AWAY


def test_a_move_sends_the_visitors_messages_to_the_agents_new_connection(h: Harness) -> None:
    old = h.agent("c1")
    h.connect()
    new = h.agent("c2")
    new.send(protocol.SocketMove(("sock1=",)))
    h.message("sock1=", b"after the move")
    assert frames(new) == [protocol.SocketFrame("sock1=", b"after the move")]
    assert frames(old) == []
    h.relay.disconnect("c1")  # the old connection closing leaves the moved socket alone
    assert "sock1=" not in h.visitors.closed


def test_the_same_agent_may_speak_on_its_new_connection_before_its_move(h: Harness) -> None:
    h.agent("c1")
    h.connect()
    new = h.agent("c2")
    new.send(protocol.SocketFrame("sock1=", b"from the new connection", seq=1))
    assert h.visitors.sent["sock1="] == [(b"from the new connection", False)]
    assert h.store.get_socket("sock1=").connection_id == "c2"  # type: ignore[union-attr]


# --- Closing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visitor_code", "agent_code"), [(1000, 1000), (4001, 4001), (1005, 1001), (1006, 1001)]
)
def test_a_visitor_leaving_closes_the_apps_side_with_its_code(
    h: Harness, visitor_code: int, agent_code: int
) -> None:
    agent = h.agent("c1")
    h.connect()
    h.leave("sock1=", visitor_code, "bye")
    assert closes(agent) == [protocol.SocketClose("sock1=", agent_code, "bye")]
    assert h.store.get_socket("sock1=") is None
    h.leave("sock1=", visitor_code)  # API Gateway's retry of the same event: nothing more
    assert len(closes(agent)) == 1


def test_the_app_closing_closes_the_visitor_with_its_code_and_reason(h: Harness) -> None:
    agent = h.agent("c1")
    h.connect()
    agent.send(protocol.SocketClose("sock1=", 4000, "server restarting"))
    assert h.visitors.closed["sock1="] == (4000, "server restarting")
    assert h.store.get_socket("sock1=") is None
    # Confirmed to the agent, as a close handshake is (a stopping agent waits for it).
    assert closes(agent) == [protocol.SocketClose("sock1=", 4000, "server restarting")]
    agent.send(protocol.SocketClose("sock1=", 4000, "server restarting"))  # again: no harm
    assert len(closes(agent)) == 2 and len(h.visitors.closed) == 1


def test_an_agent_gone_closes_its_visitors_sockets_naming_the_agent(h: Harness) -> None:
    h.agent("c1")
    h.connect("sock1=")
    h.connect("sock2=")
    h.relay.disconnect("c1")
    for socket_id in ("sock1=", "sock2="):
        code, reason = h.visitors.closed[socket_id]
        assert code == protocol.CLOSE_INTERNAL
        assert reason.startswith("agent:") and "myapp" in reason
    assert h.store.sockets_of("c1") == []


def test_a_visitors_message_after_its_agent_vanished_closes_the_socket(h: Harness) -> None:
    h.agent("c1")
    h.connect()
    del h.poster.agents["c1"]  # gone without a $disconnect yet
    h.message("sock1=", b"anyone?")
    assert h.visitors.closed["sock1="][0] == protocol.CLOSE_INTERNAL


def test_a_message_for_an_unpaired_socket_closes_it(h: Harness) -> None:
    h.message("never=", b"x")
    assert h.visitors.closed["never="][0] == protocol.CLOSE_INTERNAL


def test_a_relay_without_a_visitor_socket_api_refuses_sockets_in_words() -> None:
    clock = FakeClock()
    relay = Relay(
        MemoryStore(clock), FakePoster(), clock, RelayConfig(path_url="http://r/t/{name}/")
    )
    result = make_handler(relay)(
        {"requestContext": {"routeKey": "$connect", "connectionId": "a"}}, None
    )
    assert result["statusCode"] == 501


def test_an_agent_gone_before_the_open_is_confirmed_fails_the_handshake_in_words(
    h: Harness,
) -> None:
    def accept_then_vanish(request: protocol.Request) -> protocol.Response:
        del h.poster.agents["c1"]  # the agent's connection drops right after its answer
        return protocol.Response(request.id, 101)

    h.agent("c1", accept_then_vanish)
    result = h.connect()
    assert (result["statusCode"], result["headers"]["x-hatchway-error"]) == (502, "agent-gone")
    assert h.store.get_socket("sock1=") is None


def test_a_visitors_message_the_relay_cannot_pass_to_the_agent_closes_both_sides_in_words(
    h: Harness,
) -> None:
    agent = h.agent("c1")
    h.connect()

    def throttled(connection_id: str, text: str) -> None:
        raise PostFailed(connection_id, "throttled")

    h.poster.post = throttled  # type: ignore[method-assign]
    h.message("sock1=", b"lost?")
    code, reason = h.visitors.closed["sock1="]
    assert code == protocol.CLOSE_INTERNAL
    assert reason.startswith("relay:") and "throttled" in reason
    assert h.store.get_socket("sock1=") is None
    assert frames(agent) == []
