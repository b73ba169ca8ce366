"""In-memory stand-ins for the relay's edges: a poster that delivers messages to a fake agent
(the "tunnel pair": core and agent logic wired together with no sockets and no threads), the
WebSocket API's routing of the agent's messages (template.yaml's own, answers stored by its
integration), and a blob store whose URLs the fake agent resolves without HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hatchway import protocol
from hatchway.protocol import codec, packing
from hatchway_local.integrations import MemoryWrites, load_routes
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.core import Relay
from hatchway_relay.ports import BlobTooLarge, ConnectionGone

App = Callable[[protocol.Request], protocol.Response | None]

BLOB_BASE = "http://blobs.test/"

TABLE = "hatchway"
ROUTES = load_routes(TABLE)
"""The WebSocket API's routes as template.yaml declares them."""


def agent_message(relay: Relay, connection_id: str, text: str) -> None:
    """One agent message as API Gateway routes it: answers and marks through the answer
    integration's mapping template into the relay's (in-memory) store, the rest to the
    WebSocket function's ``$default``."""
    route = ROUTES.select(text)
    if route is None:
        relay.on_message(connection_id, text)
        return
    assert isinstance(relay.store, MemoryStore)
    context = {
        "connectionId": connection_id,
        "requestTimeEpoch": int(relay.clock.now() * 1000),
        "routeKey": route.route_key,
    }
    route.apply(text, context, MemoryWrites(relay.store, TABLE))


class FakeBlobs:
    """The ``BlobStore`` port in a dict; its URLs name the key (``http://blobs.test/<key>``)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        self.objects[key] = data

    def get(self, key: str, max_bytes: int) -> bytes | None:
        data = self.objects.get(key)
        if data is not None and len(data) > max_bytes:
            raise BlobTooLarge(key, len(data), max_bytes)
        return data

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def download_url(self, key: str, expires_in: float) -> str:
        return BLOB_BASE + key

    def upload_url(self, key: str, expires_in: float) -> str:
        return BLOB_BASE + key

    def at(self, url: str) -> str:
        assert url.startswith(BLOB_BASE), url
        return url[len(BLOB_BASE) :]


@dataclass
class FakeAgent:
    """The agent side of one connection: answers requests with ``app`` (None means "never
    answer"), moving large bodies through ``blobs`` as the real agent does over HTTP, and
    records every control message it was sent. A ``live`` agent whose app does not answer says
    it is still working on the request, as the real one does after a few seconds; a frozen one
    (``live=False``) says nothing."""

    relay: Relay
    connection_id: str
    app: App
    blobs: FakeBlobs | None = None
    live: bool = True
    received: list[protocol.Message] = field(default_factory=list)
    requests: list[protocol.Request] = field(default_factory=list)

    def deliver(self, text: str) -> None:
        message = codec.decode(text)
        if not isinstance(message, protocol.Request):
            self.received.append(message)
            return
        if message.body_url is not None:
            assert self.blobs is not None
            body = self.blobs.objects[self.blobs.at(message.body_url)]
            message = protocol.Request(
                **{**message.__dict__, "body": body, "body_url": None, "body_size": 0}
            )
        self.requests.append(message)
        response = self.app(message)
        if response is not None:
            self.send(self._fit(message, response))
        elif self.live:
            self.send(protocol.Working(message.id))

    def _fit(self, request: protocol.Request, response: protocol.Response) -> protocol.Response:
        """Upload a body that is too large to carry inline, as the real agent does."""
        if response.uploaded is not None or not response.body:
            return response
        packed, _ = packing.pack_body(response.body)
        if packing.packed_size(packed) <= request.inline_max or request.upload_url is None:
            return response
        assert self.blobs is not None
        self.blobs.objects[self.blobs.at(request.upload_url)] = response.body
        return protocol.Response(
            response.id, response.status, response.headers, uploaded=len(response.body)
        )

    def send(self, message: protocol.Message) -> None:
        agent_message(self.relay, self.connection_id, codec.encode(message))

    def last(self) -> protocol.Message:
        return self.received[-1]


class FakePoster:
    """Delivers posted messages synchronously to registered fake agents; unknown ids are gone."""

    def __init__(self) -> None:
        self.agents: dict[str, FakeAgent] = {}
        self.posted: list[tuple[str, str]] = []

    def post(self, connection_id: str, text: str) -> None:
        agent = self.agents.get(connection_id)
        if agent is None:
            raise ConnectionGone(connection_id)
        assert len(text) <= protocol.MAX_MESSAGE_BYTES
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
