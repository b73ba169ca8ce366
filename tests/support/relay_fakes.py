"""In-memory stand-ins for the relay's edges: a poster that delivers frames to a fake agent
(the "tunnel pair": core and agent logic wired together with no sockets and no threads)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hatchway import protocol
from hatchway_relay.core import Relay
from hatchway_relay.ports import ConnectionGone

App = Callable[[protocol.Request], protocol.Response | None]


@dataclass
class FakeAgent:
    """The agent side of one connection: reassembles requests, answers with ``app``
    (None means "never answer"), and records every control message it was sent."""

    relay: Relay
    connection_id: str
    app: App
    received: list[protocol.Frame] = field(default_factory=list)
    requests: list[protocol.Request] = field(default_factory=list)
    reassembler: protocol.Reassembler = field(default_factory=protocol.Reassembler)

    def deliver(self, text: str) -> None:
        frame = protocol.decode(text)
        if not isinstance(frame, protocol.Part):
            self.received.append(frame)
            return
        message = self.reassembler.feed(frame)
        if isinstance(message, protocol.Request):
            self.requests.append(message)
            response = self.app(message)
            if response is not None:
                self.send(response)

    def send(self, message: protocol.Message) -> None:
        for text in protocol.encode(message):
            self.relay.on_message(self.connection_id, text)

    def last(self) -> protocol.Frame:
        return self.received[-1]


class FakePoster:
    """Delivers posted frames synchronously to registered fake agents; unknown ids are gone."""

    def __init__(self) -> None:
        self.agents: dict[str, FakeAgent] = {}
        self.posted: list[tuple[str, str]] = []

    def post(self, connection_id: str, text: str) -> None:
        agent = self.agents.get(connection_id)
        if agent is None:
            raise ConnectionGone(connection_id)
        self.posted.append((connection_id, text))
        agent.deliver(text)


def echo_app(request: protocol.Request) -> protocol.Response:
    """Answers with the request's own body and a header naming what it saw."""
    return protocol.Response(
        id=request.id,
        status=200,
        headers=(("x-seen", f"{request.method} {request.target}"),),
        body=request.body,
    )
