"""The agent's session against a scripted relay on loopback that speaks just enough WebSocket to
see every frame: typed refusals, messages cut into 32 KB frames both ways, pings with served
counts, reconnect and rotation that keep the name, repeated and late requests, bodies through
the blob store, guards the relay must confirm, and retrying an absent relay; Working marks,
the per-tunnel cap, answers sent again, names lost and taken back (or not), and rotation that
keeps the old connection answering until it is quiet."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import queue
import socket
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hatchway import protocol
from hatchway.errors import NameTaken, RelayUnreachable, SessionError, TokenRefused
from hatchway.protocol import Request, Response, codec
from hatchway.serving.bodies import looks_compressible
from hatchway.serving.connection import SILENCE_FACTOR
from hatchway.serving.forward import LargeResponse, StreamedResponse
from hatchway.serving.inflight import WORKING_SCAN_SECONDS
from hatchway.serving.session import MAX_HELLO_RESENDS, SeenRequests, Session

TOKEN = "hw_session-token-123"
WAIT = 10.0
"""Longest any step of a test waits for the agent (they normally take milliseconds)."""

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass(frozen=True)
class Frame:
    opcode: int
    fin: bool
    payload: bytes


class RelayEnd:
    """The relay's end of one agent connection: a reader thread queues each message with its
    frames (pings apart), and answers a close the way a real server does."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.hello = protocol.Hello((protocol.TunnelSpec(),))
        self.frames: list[Frame] = []
        self.pings: queue.Queue[protocol.Ping] = queue.Queue()
        self.messages: queue.Queue[tuple[protocol.Message, list[Frame]] | None] = queue.Queue()
        self.closed = threading.Event()
        self.write_lock = threading.Lock()
        self.throttle_pings = False
        """Answer pings with API Gateway's "could not take it" frame, as when every Lambda
        execution is taken by waiting visitors."""

    def start(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def send(self, message: protocol.Message) -> None:
        """Send ``message`` cut into frames of at most 32 KB, as the relay does."""
        frames = codec.split_frames(codec.encode(message))
        for index, piece in enumerate(frames):
            self.write_frame(0x1 if index == 0 else 0x0, piece.encode(), index == len(frames) - 1)

    def receive(self) -> tuple[protocol.Message, list[Frame]]:
        """The next message other than a ping, and its frames."""
        item = self.messages.get(timeout=WAIT)
        if item is None:
            raise EOFError("the agent closed the connection")
        return item

    def ping(self) -> protocol.Ping:
        return self.pings.get(timeout=WAIT)

    def response(self) -> Response:
        message, _ = self.receive()
        assert isinstance(message, Response), message
        return message

    def close(self) -> None:
        """Drop the connection (shutdown first: it wakes the reader and sends the FIN)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def next_message(self) -> tuple[protocol.Message, list[Frame]] | None:
        frames: list[Frame] = []
        while not frames or not frames[-1].fin:
            frame = self._read_frame()
            if frame.opcode == 0x8:
                self.write_frame(0x8, frame.payload[:2], True)
                return None
            if frame.opcode not in (0x9, 0xA):  # WebSocket-level pings are not messages
                frames.append(frame)
        return codec.decode(b"".join(f.payload for f in frames)), frames

    def _read(self) -> None:
        try:
            while (item := self.next_message()) is not None:
                if isinstance(item[0], protocol.Ping):
                    self.pings.put(item[0])
                    if self.throttle_pings:
                        self.send(protocol.Undelivered("Internal server error", "aws-request-id"))
                    else:
                        self.send(protocol.Pong(item[0].ts))
                else:
                    self.messages.put(item)
        except (EOFError, OSError):
            pass
        finally:
            self.closed.set()
            self.messages.put(None)

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the agent's socket closed")
            data += chunk
        return data

    def _read_frame(self) -> Frame:
        first, second = self._read_exact(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exact(8))
        mask = self._read_exact(4) if second & 0x80 else b"\0\0\0\0"
        masked = self._read_exact(length)
        stream = (mask * (length // 4 + 1))[:length]
        payload = (int.from_bytes(masked, "big") ^ int.from_bytes(stream, "big")).to_bytes(
            length, "big"
        )
        frame = Frame(first & 0x0F, bool(first & 0x80), payload)
        self.frames.append(frame)
        return frame

    def write_frame(self, opcode: int, payload: bytes, fin: bool) -> None:
        head = bytes([(0x80 if fin else 0) | opcode])
        if len(payload) < 126:
            head += bytes([len(payload)])
        elif len(payload) < 1 << 16:
            head += bytes([126]) + struct.pack("!H", len(payload))
        else:
            head += bytes([127]) + struct.pack("!Q", len(payload))
        with self.write_lock:
            self.sock.sendall(head + payload)


Welcomer = Callable[[protocol.Hello, int], protocol.Message]


def grant(hello: protocol.Hello, count: int) -> protocol.Message:
    """The usual welcome: every name asked for (``rand-N`` for none), with the guards asked."""
    infos = tuple(
        protocol.TunnelInfo(
            spec.name or f"rand-{i}", None, f"http://relay/t/{spec.name}/", spec.guards
        )
        for i, spec in enumerate(hello.tunnels)
    )
    return protocol.Welcome(infos)


@dataclass
class FakeRelay:
    """A relay on 127.0.0.1: accepts agents with ``TOKEN``, welcomes them with ``welcome``
    (after sending ``before_welcome``), and queues their connections for the test."""

    listener: socket.socket
    welcome: Welcomer = grant
    before_welcome: list[protocol.Message] = field(default_factory=list)
    connections: queue.Queue[RelayEnd] = field(default_factory=queue.Queue)
    ends: list[RelayEnd] = field(default_factory=list)
    hellos: int = 0
    undelivered_hellos: int = 0
    """Hellos on each connection that get API Gateway's "could not take it" frame first."""
    hellos_again: int = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.listener.getsockname()[1]}/connect"

    def next(self) -> RelayEnd:
        return self.connections.get(timeout=WAIT)

    def serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(sock,), daemon=True).start()

    def _handshake(self, sock: socket.socket) -> None:
        sock.settimeout(WAIT)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if headers.get("authorization") != f"Bearer {TOKEN}":
            sock.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
            sock.close()
            return
        accept = base64.b64encode(
            hashlib.sha1(headers["sec-websocket-key"].encode() + _WS_GUID).digest()
        )
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        end = RelayEnd(sock)
        first = end.next_message()
        assert first is not None and isinstance(first[0], protocol.Hello)
        end.hello = first[0]
        for _ in range(self.undelivered_hellos):
            end.send(protocol.Undelivered("Internal server error", "aws-request-id"))
            try:
                again = end.next_message()
            except EOFError:  # the agent gave up on this connection
                return
            if again is None:
                return
            assert isinstance(again[0], protocol.Hello)
            self.hellos_again += 1
        sock.settimeout(None)
        self.hellos += 1
        for message in self.before_welcome:
            end.send(message)
        end.send(self.welcome(end.hello, self.hellos))
        self.ends.append(end)
        end.start()
        self.connections.put(end)


@contextmanager
def fake_relay(port: int = 0, **options: object) -> Iterator[FakeRelay]:
    listener = socket.create_server(("127.0.0.1", port))
    relay = FakeRelay(listener, **options)  # type: ignore[arg-type]
    threading.Thread(target=relay.serve, daemon=True).start()
    try:
        yield relay
    finally:
        listener.close()
        for end in relay.ends:
            end.close()


@pytest.fixture
def relay() -> Iterator[FakeRelay]:
    with fake_relay() as relay:
        yield relay


class App:
    """A handler that records what it was asked and answers ``body`` (default: the path)."""

    def __init__(self, body: bytes | None = None, large: bool = False) -> None:
        self.seen: list[Request] = []
        self.body = body
        self.large = large

    def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        body = self.body if self.body is not None else b"hello " + request.path.encode()
        kind = LargeResponse if self.large else Response
        return kind(request.id, 200, (("content-type", "text/plain"),), body)


def session(
    relay: FakeRelay, handler: Callable[[Request], Response] | None = None, **kw: object
) -> Session:
    names = kw.pop("names", ("sess",))
    options: dict[str, object] = {"backoff_base": 0.01, "backoff_cap": 0.05, **kw}
    return Session(relay.url, TOKEN, handler or App(), names, **options)  # type: ignore[arg-type]


def visit(end: RelayEnd, request_id: str = "r1", path: str = "/", **kw: object) -> Response:
    end.send(Request(request_id, kw.pop("tunnel", "sess"), "GET", path, **kw))  # type: ignore[arg-type]
    return end.response()


# --- Connecting -------------------------------------------------------------------------------


def test_start_returns_once_welcomed_and_requests_flow(relay: FakeRelay) -> None:
    with session(relay).start() as agent:
        assert agent.welcome is not None and agent.welcome.tunnels[0].name == "sess"
        end = relay.next()
        assert end.hello.tunnels == (protocol.TunnelSpec("sess"),)
        answer = visit(end, path="/x")
        assert (answer.status, answer.body) == (200, b"hello /x")


def test_refusals_are_typed(unused_port: int) -> None:
    def taken(hello: protocol.Hello, count: int) -> protocol.Message:
        return protocol.Error("name_taken", "sess is held by another token")

    with fake_relay(welcome=taken) as relay, pytest.raises(NameTaken, match="another token"):
        session(relay).start()
    with fake_relay() as relay, pytest.raises(TokenRefused, match="refused the token"):
        Session(relay.url, "hw_unknown", App()).start()
    with pytest.raises(RelayUnreachable, match="cannot reach"):
        Session(f"ws://127.0.0.1:{unused_port}/connect", TOKEN, App()).start()


def test_a_relay_that_does_not_confirm_the_guards_is_not_served() -> None:
    def like_an_old_relay(hello: protocol.Hello, count: int) -> protocol.Message:
        return protocol.Welcome((protocol.TunnelInfo("guarded", None, "http://relay/t/g/"),))

    salt = b"0" * protocol.BASIC_AUTH_SALT_BYTES
    spec = protocol.TunnelSpec("guarded", basic_auth=protocol.hash_basic_auth("a:b", salt))
    with (
        fake_relay(welcome=like_an_old_relay) as relay,
        pytest.raises(SessionError, match="does not enforce basic_auth"),
    ):
        session(relay, names=(spec,)).start()


def test_a_request_that_overtakes_the_welcome_is_still_served() -> None:
    # The relay routes visitors to a name as soon as it is claimed, just before it sends the
    # welcome: on a busy name the first request can arrive first.
    early = Request("early1", "busy", "GET", "/first")
    with fake_relay(before_welcome=[early]) as relay, session(relay, names=("busy",)).start():
        answer = relay.next().response()
    assert (answer.id, answer.body) == ("early1", b"hello /first")


# --- Frames -----------------------------------------------------------------------------------


def test_a_100_kb_message_travels_in_32_kb_frames_both_ways(relay: FakeRelay) -> None:
    incompressible = os.urandom(75_000)  # ~100 KB of base64 in one message
    app = App(body=incompressible)
    with session(relay, app).start():
        end = relay.next()
        end.send(Request("big", "sess", "POST", "/up", body=incompressible))
        message, frames = end.receive()
    assert isinstance(message, Response) and message.body == incompressible
    assert app.seen[0].body == incompressible  # the relay's 4 frames arrived as one message
    text, cont = 0x1, 0x0
    assert [(f.opcode, f.fin) for f in frames] == [(text, 0), (cont, 0), (cont, 0), (cont, 1)]
    assert all(len(f.payload) <= protocol.MAX_FRAME_BYTES for f in frames)
    assert sum(len(f.payload) for f in frames) > 3 * protocol.MAX_FRAME_BYTES


def test_a_bad_request_message_is_answered_at_once(relay: FakeRelay) -> None:
    with session(relay).start():
        end = relay.next()
        text = codec.encode(Request("bad1", "sess", "GET", "/")).replace('"GET"', '"g e t"')
        end.write_frame(0x1, text.encode(), True)
        answer = end.response()
    assert answer.id == "bad1" and answer.status == 400
    assert answer.fault is not None and answer.fault.side == "agent"


# --- Serving ----------------------------------------------------------------------------------


def test_a_failing_handler_is_answered_as_an_agent_fault(relay: FakeRelay) -> None:
    def broken(request: Request) -> Response:
        raise RuntimeError("bug in the handler")

    with session(relay, broken).start():
        answer = visit(relay.next())
    assert answer.status == 502 and answer.fault == protocol.Fault("agent", "bug in the handler")


def test_a_repeated_delivery_is_served_once(
    relay: FakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    caplog.set_level(logging.DEBUG, "hatchway.agent")
    with session(relay, app, workers=1).start():
        end = relay.next()
        twice = Request("r1", "sess", "GET", "/once", deadline=4e9)
        end.send(twice)
        end.send(twice)  # API Gateway retried a post that had landed
        end.send(Request("r2", "sess", "GET", "/next", deadline=4e9))
        answers = [end.response().id, end.response().id]
    # One worker serves in arrival order: had the repeat been accepted, it came before r2.
    assert answers == ["r1", "r2"]
    assert [r.path for r in app.seen] == ["/once", "/next"]
    assert "repeated delivery of request r1" in caplog.text


def test_seen_requests_are_forgotten_after_their_deadline_and_bounded() -> None:
    def request(request_id: str, deadline: float) -> Request:
        return Request(request_id, "app", "GET", "/", deadline=deadline)

    seen = SeenRequests(limit=3)
    assert seen.first_time(request("a", 100.0), now=50.0)
    assert not seen.first_time(request("a", 100.0), now=99.0)
    assert seen.first_time(request("a", 200.0), now=101.0)  # forgotten after its deadline
    for name in "bcde":
        assert seen.first_time(request(name, 300.0), now=102.0)
    assert len(seen) == 3  # the oldest forgotten first
    assert seen.first_time(request("a", 300.0), now=103.0)


def test_the_record_of_accepted_ids_takes_little_beside_the_ids() -> None:
    count = 10_000
    requests = [Request(f"r{n:031d}", "app", "GET", "/", deadline=1e9 + n) for n in range(count)]
    seen = SeenRequests(limit=count)
    tracemalloc.start()
    try:
        assert all(seen.first_time(request, now=0.0) for request in requests)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # Its dict slot and deque slot; an OrderedDict's entry took 66 bytes.
    assert held / count < 45


def test_a_request_past_its_deadline_is_dropped_unexecuted(
    relay: FakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    app = App()
    now = 1_000_000.0
    with session(relay, app, workers=1, clock=lambda: now).start():
        end = relay.next()
        end.send(Request("late", "sess", "POST", "/webhook", deadline=now - 12.5))
        answer = visit(end, "fresh", "/fresh", deadline=now + 20)
    assert answer.id == "fresh"  # the only answer: nothing was sent for the late one
    assert [r.path for r in app.seen] == ["/fresh"]
    (record,) = [r for r in caplog.records if "dropped request late" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "the relay stopped waiting 12.5 s ago" in record.getMessage()


@pytest.mark.parametrize(
    ("start_in", "served"),
    [
        pytest.param(-5.0, False, id="the relay gave up on it already"),
        pytest.param(1.0, False, id="the relay gives up before a mark could land"),
        pytest.param(3.0, True, id="time enough to mark it"),
        pytest.param(0.0, True, id="no give-up time"),
    ],
)
def test_an_unmarked_request_the_relay_gave_up_on_is_never_started(
    relay: FakeRelay, caplog: pytest.LogCaptureFixture, start_in: float, served: bool
) -> None:
    """An agent that was stopped finds requests its visitors were already told failed (502
    agent-unresponsive, when no mark came in time): running them now would run them twice."""
    app = App()
    now = 1_000_000.0
    start_by = now + start_in if start_in else 0.0
    with session(relay, app, workers=1, clock=lambda: now).start():
        end = relay.next()
        end.send(Request("old", "sess", "POST", "/pay", deadline=now + 20, start_by=start_by))
        end.send(Request("fresh", "sess", "GET", "/fresh", deadline=now + 20))
        # Both answers when the old one is served, before the session closes; else only one.
        got = answers(end, 2 if served else 1)
    assert [r.id for r in got] == (["old", "fresh"] if served else ["fresh"])
    assert [r.path for r in app.seen] == (["/pay", "/fresh"] if served else ["/fresh"])
    if not served:
        assert "dropped request old (POST /pay on sess) unexecuted" in caplog.text
        assert "nothing said the agent was on it" in caplog.text


def test_a_request_the_relay_posted_a_while_ago_is_marked_by_the_relays_clock(
    relay: FakeRelay,
) -> None:
    """The "still working" mark is due three seconds after the relay posted the request, not
    after the agent read it: an agent that read it late marks it at once."""
    app = Gate()
    now = 1_000_000.0
    posted = now - (protocol.AGENT_SILENCE_SECONDS - 4.0)  # the relay's check is 4 s away
    with session(relay, app, workers=1, clock=lambda: now).start():
        end = relay.next()
        start_by = posted + protocol.AGENT_SILENCE_SECONDS
        end.send(Request("slow", "sess", "GET", "/hang", deadline=now + 20, start_by=start_by))
        # At the first scan (every second), not three seconds after the agent read it.
        item = end.messages.get(timeout=WORKING_SCAN_SECONDS + 1.0)
        assert item is not None and item[0] == protocol.Working("slow")
        app.release.set()
        assert end.response().id == "slow"


def test_pings_carry_the_requests_served_per_tunnel(relay: FakeRelay) -> None:
    with session(relay, names=("one", "two"), heartbeat=0.05).start():
        end = relay.next()
        for i, tunnel in enumerate(["one", "one", "two"]):
            assert visit(end, f"r{i}", tunnel=tunnel).status == 200
        # A request for a tunnel this agent was not granted is answered, and never counted.
        assert visit(end, "stray", tunnel="three").id == "stray"
        # Bounded: pings come every 50 ms, and the counts are right from the next one on.
        for _ in range(int(WAIT / 0.05)):
            if (served := end.ping().served) == (("one", 2), ("two", 1)):
                break
    assert served == (("one", 2), ("two", 1))


def test_a_tunnels_place_is_free_again_before_its_answer_reaches_the_visitor(
    relay: FakeRelay,
) -> None:
    """A visitor that sends its next request as soon as it has an answer must never find the
    previous one still counted against the tunnel's limit (a false 503 tunnel-busy), however
    late the worker gets to finish up after sending (here: its done hook is held)."""
    finishing = threading.Event()

    def slow_finish(request: Request, response: Response, elapsed_ms: float) -> None:
        finishing.wait(WAIT)

    with session(relay, on_request_done=slow_finish) as agent:
        agent.gate.limit = 1
        agent.start()
        end = relay.next()
        try:
            answers = [visit(end, f"r{i}").status for i in range(3)]
        finally:
            finishing.set()
    assert answers == [200, 200, 200]


# --- Bodies through the blob store ------------------------------------------------------------


class BlobStore:
    """Presigned-URL stand-in on loopback: GET answers stored objects, PUT stores and records."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[tuple[str, dict[str, str], bytes]] = []
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = store.objects.get(self.path)
                self.send_response(200 if body is not None else 403)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                store.puts.append((self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """``server`` answering from a thread of its own until the block ends."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def blobs() -> Iterator[BlobStore]:
    store = BlobStore()
    with serving(store.server):
        yield store


def test_a_request_body_is_fetched_from_its_body_url(relay: FakeRelay, blobs: BlobStore) -> None:
    body = os.urandom(300_000)
    blobs.objects["/req/r1?X-Amz-Signature=abc"] = body
    app = App()
    with session(relay, app).start():
        end = relay.next()
        url = blobs.url + "/req/r1?X-Amz-Signature=abc"
        end.send(Request("r1", "sess", "PUT", "/up", body_url=url, body_size=len(body)))
        assert end.response().status == 200
        end.send(Request("r2", "sess", "PUT", "/up", body_url=blobs.url + "/gone", body_size=9))
        failed = end.response()
    assert app.seen[0].body == body and app.seen[0].body_url is None
    assert len(app.seen) == 1  # the request whose body is missing never reached the app
    assert failed.status == 502 and failed.fault is not None and failed.fault.side == "agent"
    assert "request body could not be fetched from the relay" in failed.fault.message
    assert "blob store" in failed.fault.message


def test_a_large_response_is_uploaded_to_the_upload_url(relay: FakeRelay, blobs: BlobStore) -> None:
    body = os.urandom(200_000)
    with session(relay, App(body=body)).start():
        end = relay.next()
        answer = visit(end, upload_url=blobs.url + "/resp/r1?sig=x%2By", inline_max=50_000)
    assert (answer.status, answer.body, answer.uploaded) == (200, b"", len(body))
    assert answer.headers == (("content-type", "text/plain"),)
    ((path, headers, stored),) = blobs.puts
    assert path == "/resp/r1?sig=x%2By" and stored == body
    assert sorted(headers) == ["Content-Length", "Host"]  # nothing the signature leaves out


@pytest.mark.parametrize(
    ("body", "headers", "compressed"),
    [
        (b"hello world " * 200, (), True),
        (os.urandom(2000), (), False),  # random: zlib is not even tried
        (b"hello world " * 200, (("Content-Encoding", "gzip"),), False),  # the app's own
    ],
)
def test_a_body_travels_compressed_only_when_zlib_can_shrink_it(
    relay: FakeRelay, body: bytes, headers: protocol.Headers, compressed: bool
) -> None:
    def app(request: Request) -> Response:
        return Response(request.id, 200, headers, body)

    with session(relay, app).start():
        end = relay.next()
        end.send(Request("r1", "sess", "GET", "/"))
        message, frames = end.receive()
    assert isinstance(message, Response) and message.body == body
    sent = json.loads(b"".join(f.payload for f in frames))
    head = base64.b64decode(sent["stored"]).partition(b"\n")[0]
    assert (b'"enc":"zlib"' in head) is compressed


def test_a_compressible_response_stays_inline(relay: FakeRelay, blobs: BlobStore) -> None:
    body = b"0123456789" * 20_000  # 200 KB that zlib makes tiny
    with session(relay, App(body=body)).start():
        answer = visit(relay.next(), upload_url=blobs.url + "/resp/r1")
    assert answer.body == body and answer.uploaded is None and blobs.puts == []


def test_a_large_response_without_an_upload_url_is_an_agent_fault(relay: FakeRelay) -> None:
    with session(relay, App(body=os.urandom(100_000))).start():
        answer = visit(relay.next())
    assert answer.status == 502 and answer.fault is not None and answer.fault.side == "agent"
    assert "too large for the relay" in answer.fault.message


@pytest.mark.parametrize(("mode", "uploaded"), [("refuse", False), ("redirect", True)])
def test_a_body_above_the_lambda_limit_leaves_only_for_a_redirecting_tunnel(
    relay: FakeRelay, blobs: BlobStore, mode: str, uploaded: bool
) -> None:
    body = os.urandom(protocol.MAX_BODY_BYTES + 1)
    spec = protocol.TunnelSpec("sess", large_responses=mode)
    with session(relay, App(body=body, large=True), names=(spec,)).start():
        end = relay.next()
        assert end.hello.tunnels[0].large_responses == mode
        answer = visit(end, upload_url=blobs.url + "/resp/r1")
    if uploaded:
        assert answer.uploaded == len(body) and blobs.puts[0][2] == body
    else:
        assert answer.status == 413 and answer.fault is not None
        assert answer.fault.side == "local app"
        assert str(protocol.MAX_BODY_BYTES) in answer.fault.message and blobs.puts == []


# --- Reconnecting -----------------------------------------------------------------------------


def test_reconnect_takes_a_random_name_back(relay: FakeRelay) -> None:
    reconnects = threading.Event()
    with session(relay, names=(None,), on_reconnecting=lambda *a: reconnects.set()).start():
        first = relay.next()
        assert first.hello.tunnels[0].name is None
        first.close()  # the relay dropped the connection
        assert reconnects.wait(WAIT)
        second = relay.next()
        assert second.hello.tunnels[0].name == "rand-0"
        assert visit(second, tunnel="rand-0").status == 200


def test_rotation_opens_the_new_connection_before_closing_the_old(relay: FakeRelay) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(request: Request) -> Response:
        started.set()
        release.wait(WAIT)
        return Response(request.id, 200, body=b"finished")

    # The request must be in flight before the rotation: a second leaves room on a busy machine.
    with session(relay, slow, heartbeat=0.05, rotate_after=1.0).start():
        old = relay.next()
        old.send(Request("inflight", "sess", "GET", "/slow"))
        assert started.wait(WAIT)
        new = relay.next()  # opened while the old one still holds a request
        assert new.hello.tunnels[0].name == "sess"
        release.set()
        assert old.response().body == b"finished"  # answered on the old connection, then closed
        assert old.closed.wait(WAIT)
        assert visit(new, "r2").status == 200


RETIRE_LIMIT = 0.5
"""The longest a retiring connection stays open for an answer, in the stream tests."""


@dataclass
class RotatedStream:
    """A stream that started on ``old`` before the agent rotated to another connection: the
    app has written its first piece and writes the second when ``go_on`` is set."""

    agent: Session
    old: RelayEnd
    go_on: threading.Event


@contextmanager
def stream_through_a_rotation(
    relay: FakeRelay, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RotatedStream]:
    monkeypatch.setattr(protocol, "RESPONSE_TIMEOUT_SECONDS", RETIRE_LIMIT - QUIET)
    first_sent, go_on = threading.Event(), threading.Event()

    def pieces() -> Iterator[bytes]:
        yield b"data: 0\n\n"
        first_sent.set()
        go_on.wait(3 * WAIT)  # longer than any wait of the tests: only they end it
        yield b"data: 1\n\n"

    def streaming(request: Request) -> Response:
        return StreamedResponse(
            request.id, 200, (("content-type", "text/event-stream"),), pieces=pieces()
        )

    spec = protocol.TunnelSpec("sess", stream=True)
    agent = session(
        relay, streaming, names=(spec,), heartbeat=0.05, rotate_after=0.5, rotation_quiet=QUIET
    )
    with agent.start():
        old = relay.next()
        old.send(Request("s1", "sess", "GET", "/events"))
        assert old.response().streamed
        assert chunk(old) == protocol.Chunk("s1", 0, b"data: 0\n\n")
        assert first_sent.wait(WAIT)
        relay.next()  # the rotation's new connection: it serves from its welcome on...
        until = time.monotonic() + WAIT
        while agent.in_flight and time.monotonic() < until:  # ...and is then the current one
            time.sleep(0.01)
        assert agent.in_flight == 0, "the stream's connection is still the current one"
        yield RotatedStream(agent, old, go_on)
        go_on.set()


def test_a_stream_outlives_the_rotation_on_the_connection_it_started_on(
    relay: FakeRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay reads a stream's chunks from the connection its request went to: the old
    # connection must carry the stream to its end, however long after the rotation that is.
    with stream_through_a_rotation(relay, monkeypatch) as rotated:
        # Well past the quiet period and the limit that holds a retiring connection open for
        # an answer: the old one is still open, for its stream.
        assert not rotated.old.closed.wait(4 * RETIRE_LIMIT)
        rotated.go_on.set()
        assert chunk(rotated.old) == protocol.Chunk("s1", 1, b"data: 1\n\n")
        assert chunk(rotated.old) == protocol.Chunk("s1", 2, end=True)
        assert rotated.old.closed.wait(WAIT)  # closed once its stream has ended


def test_closing_the_agent_cuts_a_stream_on_a_retiring_connection_at_once(
    relay: FakeRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    with stream_through_a_rotation(relay, monkeypatch) as rotated:
        rotated.agent.close()
        assert rotated.old.closed.wait(WAIT)  # not when the stream ends, which it has not


def test_a_streaming_agent_rotates_early_enough_for_a_whole_stream_before_the_cut(
    relay: FakeRelay,
) -> None:
    plain = session(relay)
    streaming = session(relay, names=("sess", protocol.TunnelSpec("live", stream=True)))
    assert plain.rotate_after == protocol.CONNECTION_ROTATE_SECONDS
    assert streaming.rotate_after == protocol.STREAM_ROTATE_SECONDS
    left_at_rotation = protocol.MAX_CONNECTION_SECONDS - streaming.rotate_after
    assert left_at_rotation > protocol.STREAM_MAX_SECONDS + protocol.STREAM_IDLE_SECONDS
    assert (
        session(
            relay, names=(protocol.TunnelSpec("live", stream=True),), rotate_after=60.0
        ).rotate_after
        == 60.0
    )  # a shorter interval stands


def chunk(end: RelayEnd) -> protocol.Chunk:
    """The next message on ``end``, a ``Chunk`` (``Working`` marks skipped)."""
    while True:
        message, _ = end.receive()
        if not isinstance(message, protocol.Working):
            assert isinstance(message, protocol.Chunk), message
            return message


def test_an_unreachable_relay_is_retried_at_start_until_it_comes(unused_port: int) -> None:
    attempts: list[tuple[int, float, BaseException | None]] = []
    retrying, welcomed = threading.Event(), threading.Event()

    def reconnecting(attempt: int, delay: float, error: BaseException | None) -> None:
        attempts.append((attempt, delay, error))
        retrying.set()

    agent = Session(
        f"ws://127.0.0.1:{unused_port}/connect",
        TOKEN,
        App(),
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
        assert retrying.wait(WAIT)
        with fake_relay(port=unused_port) as late:
            assert welcomed.wait(WAIT)
            assert visit(late.next(), tunnel="late").body == b"hello /"
            agent.close()
    finally:
        agent.close()
        runner.join(WAIT)
    assert not runner.is_alive()
    attempt, delay, error = attempts[0]
    assert attempt == 1 and 0 <= delay <= 0.05
    assert isinstance(error, RelayUnreachable) and f"127.0.0.1:{unused_port}" in str(error)


def test_closing_while_the_relay_is_unreachable_ends_the_run_quietly(unused_port: int) -> None:
    retrying = threading.Event()
    agent = Session(
        f"ws://127.0.0.1:{unused_port}/connect",
        TOKEN,
        App(),
        retry_at_start=True,
        on_reconnecting=lambda *a: retrying.set(),
    )
    runner = threading.Thread(target=agent.run)
    runner.start()
    assert retrying.wait(WAIT)
    agent.close()
    runner.join(WAIT)
    assert not runner.is_alive()


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Faults, overload, names and rotation ------------------------------------------------------


def answers(end: RelayEnd, count: int) -> list[Response]:
    """The next ``count`` responses, skipping the ``Working`` marks in between."""
    found: list[Response] = []
    while len(found) < count:
        message, _ = end.receive()
        if isinstance(message, Response):
            found.append(message)
    return found


class Gate:
    """A handler whose ``/hang`` requests wait until released; anything else answers at once."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self, request: Request) -> Response:
        if request.path == "/hang":
            self.release.wait(WAIT)
        return Response(request.id, 200, body=request.path.encode())


class Recorder(Gate):
    """A ``Gate`` that notes the order in which its requests start."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []

    def __call__(self, request: Request) -> Response:
        self.started.append(request.path)
        return super().__call__(request)


def test_beyond_a_tunnels_limit_requests_wait_their_turn_in_order(relay: FakeRelay) -> None:
    handler = Recorder()
    with session(relay, handler) as agent:
        agent.gate.limit = 1
        agent.start()
        end = relay.next()
        end.send(Request("hung", "sess", "GET", "/hang"))
        for i in range(3):
            end.send(Request(f"w{i}", "sess", "GET", f"/w{i}"))
        for _ in range(int(WAIT / 0.01)):  # bounded: until all three wait
            if agent.gate.waiting("sess") == 3:
                break
            time.sleep(0.01)
        assert agent.gate.waiting("sess") == 3
        handler.release.set()
        done = answers(end, 4)
    assert sorted((r.id, r.status) for r in done) == [
        ("hung", 200),
        ("w0", 200),
        ("w1", 200),
        ("w2", 200),
    ]
    assert handler.started == ["/hang", "/w0", "/w1", "/w2"]


@pytest.mark.parametrize(
    ("setting", "bodies", "words"),
    [
        pytest.param(("waiting_limit", 2), (b"", b"", b""), "the most that may", id="line full"),
        pytest.param(
            ("waiting_bytes", 10),
            (b"1234", b"123456", b"1"),  # 10 bytes wait; the 11th would pass the bound
            "which this one's body would pass",
            id="bodies' bytes",
        ),
    ],
)
def test_past_the_waiting_line_a_request_is_refused_at_once_and_the_rest_are_served(
    relay: FakeRelay, setting: tuple[str, int], bodies: tuple[bytes, ...], words: str
) -> None:
    handler = Gate()
    with session(relay, handler) as agent:
        agent.gate.limit = 1
        setattr(agent.gate, *setting)
        agent.start()
        end = relay.next()
        end.send(Request("hung", "sess", "GET", "/hang"))
        for i, body in enumerate(bodies):
            end.send(Request(f"w{i}", "sess", "POST", f"/w{i}", body=body))
        (first,) = answers(end, 1)  # before the app has answered anything
        handler.release.set()
        rest = answers(end, len(bodies))
    assert (first.id, first.status, first.fault and first.fault.side) == ("w2", 503, "local app")
    assert (
        first.fault is not None
        and "1 requests in progress and 2 more waiting" in first.fault.message
    )
    assert words in first.fault.message
    assert {r.status for r in rest} == {200}


def test_a_request_still_waiting_near_the_relays_deadline_is_refused_unstarted(
    relay: FakeRelay,
) -> None:
    handler = Recorder()
    with session(relay, handler, heartbeat=0.05) as agent:
        agent.gate.limit = 1
        agent.start()
        end = relay.next()
        end.send(Request("hung", "sess", "GET", "/hang"))
        end.send(Request("late", "sess", "GET", "/late", deadline=time.time() + 1.5))
        (refused,) = answers(end, 1)
        handler.release.set()
        answers(end, 1)
    assert (refused.id, refused.status) == ("late", 503)
    assert refused.fault is not None and "deadline is near" in refused.fault.message
    assert handler.started == ["/hang"]


def test_deadlines_are_read_on_the_relays_clock() -> None:
    local = 1_000_000.0
    skew = {"now": 0.0}

    def welcome(hello: protocol.Hello, count: int) -> protocol.Message:
        granted = grant(hello, count)
        assert isinstance(granted, protocol.Welcome)
        return dataclasses.replace(granted, now=local + skew["now"])

    app = App()
    with fake_relay(welcome=welcome) as relay:
        skew["now"] = 100.0  # the relay's clock is 100 s ahead of ours
        with session(relay, app, workers=1, clock=lambda: local).start():
            end = relay.next()
            end.send(Request("gone", "sess", "POST", "/late", deadline=local + 50))
            assert visit(end, "kept", "/kept", deadline=local + 120).id == "kept"
        skew["now"] = -100.0  # and now 100 s behind
        with session(relay, app, workers=1, clock=lambda: local).start():
            assert visit(relay.next(), "fine", "/fine", deadline=local - 50).id == "fine"
    assert [r.path for r in app.seen] == ["/kept", "/fine"]


def test_requests_held_longer_than_the_mark_are_reported_working_once(relay: FakeRelay) -> None:
    handler = Gate()
    with session(relay, handler, workers=1).start():
        end = relay.next()
        assert visit(end, "quick", "/quick").status == 200
        end.send(Request("running", "sess", "GET", "/hang"))
        end.send(Request("queued", "sess", "GET", "/queued"))  # behind it: held, not running
        marked: list[str] = []
        while len(marked) < 2:
            message, _ = end.receive()
            assert isinstance(message, protocol.Working), message
            marked.append(message.id)
        handler.release.set()
        assert sorted(r.id for r in answers(end, 2)) == ["queued", "running"]
        assert visit(end, "after", "/after").status == 200  # nothing else came in between
    assert sorted(marked) == ["queued", "running"]  # each once, the quick one never


def test_a_refused_request_counts_under_tunnel_busy_in_the_next_ping(relay: FakeRelay) -> None:
    handler = Gate()
    with session(relay, handler, heartbeat=0.05) as agent:
        agent.gate.waiting_limit = 0  # nothing waits: beyond 48, refused at once
        agent.start()
        end = relay.next()
        for i in range(50):
            end.send(Request(f"hung{i}", "sess", "GET", "/hang"))
        refused = answers(end, 2)
        assert {r.status for r in refused} == {503}
        for _ in range(int(WAIT / 0.05)):  # bounded: pings come every 50 ms
            health = dict(end.ping().health)
            # A refusal is answered before it is counted: wait for the ping counting both.
            if "sess" in health and sum(dict(health["sess"].errors).values()) >= 2:
                break
        handler.release.set()
        answers(end, 48)
    assert dict(health["sess"].errors) == {"tunnel-busy": 2}


def test_with_no_room_to_wait_a_tunnel_refuses_past_its_limit_at_once(
    relay: FakeRelay,
) -> None:
    handler = Gate()
    with session(relay, handler) as agent:
        agent.gate.waiting_limit = 0  # nothing waits its turn: the limit alone is tested
        agent.start()
        end = relay.next()
        for i in range(32):
            end.send(Request(f"hung{i}", "sess", "GET", "/hang"))
        for i in range(10):
            end.send(Request(f"fast{i}", "sess", "GET", "/fast"))
        fast = answers(end, 10)  # while 32 hang, the quick ones of the same tunnel flow
        assert sorted(r.id for r in fast) == sorted(f"fast{i}" for i in range(10))
        assert {r.status for r in fast} == {200}
        for i in range(32, 52):
            end.send(Request(f"hung{i}", "sess", "GET", "/hang"))
        refused = answers(end, 4)  # answered before any hung request was released
        handler.release.set()
        rest = answers(end, 48)
    limit = 48
    assert [r.id for r in refused] == [f"hung{i}" for i in range(limit, 52)]
    for response in refused:
        assert response.status == 503 and response.fault is not None
        assert response.fault.side == "local app"
        assert f"its local app has {limit} requests in progress" in response.fault.message
    assert {r.status for r in rest} == {200} and len({r.id for r in rest}) == limit


UNDELIVERED = protocol.Undelivered("Internal server error", "aws-request-id")


def test_answers_the_platform_could_not_take_are_sent_again_once(
    relay: FakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    with session(relay).start():
        end = relay.next()
        first = visit(end, "r1", "/pay")
        end.send(UNDELIVERED)  # API Gateway's frame: which message, it does not say
        again = end.response()
        end.send(UNDELIVERED)
        assert visit(end, "r3", "/next").id == "r3"  # no third copy of r1 came first
    assert again == first
    warned = [
        r.getMessage() for r in caplog.records if "could not take a message" in r.getMessage()
    ]
    assert warned and "throttled or failed" in warned[0]
    assert "bad message" not in caplog.text and TOKEN not in caplog.text


def test_an_answer_is_kept_before_the_platform_can_say_it_could_not_take_it(
    relay: FakeRelay,
) -> None:
    """The platform's frame may arrive before the worker that sent the answer runs again: here
    every keeping step takes a while, and the answer must already be there to resend."""
    with session(relay).start() as agent:
        keep = agent.answers.put

        def slow_keep(response: Response, now: float | None = None) -> None:
            time.sleep(0.3)
            keep(response, now)

        agent.answers.put = slow_keep  # type: ignore[method-assign]
        end = relay.next()
        first = visit(end, "r1", "/pay")
        end.send(UNDELIVERED)
        assert end.response() == first


def test_a_connection_whose_pings_the_platform_cannot_take_is_kept(
    relay: FakeRelay, caplog: pytest.LogCaptureFixture
) -> None:
    with session(relay, heartbeat=0.05).start() as agent:
        end = relay.next()
        end.throttle_pings = True
        for _ in range(4 * SILENCE_FACTOR):  # far longer than a silent relay is given
            end.ping()
        assert visit(end, "r1").status == 200
        assert agent.connected
    assert relay.hellos == 1  # never reconnected: no new $connect for the busy functions
    assert "relay silent" not in caplog.text


def test_a_hello_the_platform_could_not_take_is_said_again_on_the_same_connection() -> None:
    with fake_relay(undelivered_hellos=2) as relay, session(relay).start() as agent:
        end = relay.next()
        assert visit(end, "r1").status == 200
        assert agent.connected
    assert (relay.hellos, relay.hellos_again) == (1, 2)  # one connection, no new $connect


def test_a_hello_the_platform_never_takes_gives_the_connection_up() -> None:
    with fake_relay(undelivered_hellos=MAX_HELLO_RESENDS + 1) as relay:
        agent = session(relay)
        with pytest.raises(RelayUnreachable, match="could not take the hello"):
            agent.start()
    assert relay.hellos_again == MAX_HELLO_RESENDS


def test_a_lost_name_is_asked_for_again_on_the_same_connection(relay: FakeRelay) -> None:
    with session(relay).start() as agent:
        end = relay.next()
        end.send(protocol.Error("name_lost", "this connection no longer holds 'sess'"))
        hello, _ = end.receive()
        assert isinstance(hello, protocol.Hello)
        assert hello.instance == end.hello.instance != ""
        end.send(grant(hello, 2))
        assert visit(end, "r1").status == 200
        assert agent.connected


def test_a_lost_name_held_by_another_agent_stops_the_session(relay: FakeRelay) -> None:
    why = "tunnel name 'sess' is served by another agent using your token; stop that agent first"
    agent = session(relay).start()
    try:
        end = relay.next()
        end.send(protocol.Error("name_lost", "this connection no longer holds 'sess'"))
        hello, _ = end.receive()
        assert isinstance(hello, protocol.Hello)
        end.send(protocol.Error("name_taken", why))
        assert agent._thread is not None
        agent._thread.join(WAIT)
        assert not agent._thread.is_alive()  # not pinging on while serving nothing
        assert isinstance(agent._fatal, NameTaken) and str(agent._fatal) == why
        assert end.closed.wait(WAIT)
    finally:
        agent.close()


def test_a_rotated_connection_answers_what_reaches_it_after_the_new_one_is_welcomed(
    relay: FakeRelay,
) -> None:
    with session(relay, heartbeat=0.05, rotate_after=0.2).start():
        old = relay.next()
        new = relay.next()
        assert new.hello.instance == old.hello.instance != ""
        # A relay function that read the claim just before the rotation still routes here.
        answer = visit(old, "cached", "/cached")
        assert (answer.id, answer.status) == ("cached", 200)
        assert old.closed.wait(WAIT)  # once quiet
        assert visit(new, "r2").status == 200


TEXT_SAMPLE = "Het is een mooie dag; это тестовый текст; 这是一个用于测试的中文文本. " * 20


@pytest.mark.parametrize(
    ("body", "worth_trying"),
    [
        (os.urandom(4096), False),  # random: encrypted data, media
        (zlib.compress(os.urandom(2048) + b"a" * 8192), False),  # already compressed
        (TEXT_SAMPLE.encode(), True),
        (
            json.dumps([{"id": n, "name": f"user {n}", "ok": True} for n in range(50)]).encode(),
            True,
        ),
        (b"<!doctype html><html><body>" + b"<p>hello</p>" * 100 + b"</body></html>", True),
    ],
)
def test_zlib_is_tried_only_on_bodies_that_can_shrink(body: bytes, worth_trying: bool) -> None:
    assert looks_compressible(body) is worth_trying
    assert (len(zlib.compress(body)) < len(body) * 7 // 8) is worth_trying


# --- Serving on the reader --------------------------------------------------------------------


class Waits:
    """A local app on loopback: ``/slow`` answers once released, anything else at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        waits = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path == "/slow":
                    waits.release.wait(WAIT)
                body = self.path.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True


@pytest.fixture
def waits() -> Iterator[Waits]:
    app = Waits()
    with serving(app.server):
        try:
            yield app
        finally:
            app.release.set()  # no handler left waiting


def forwarder_to(app: Waits) -> Callable[[Request], Response]:
    from hatchway.serving.forward import Forwarder, parse_target

    return Forwarder(parse_target(str(app.server.server_address[1]))).handle


def on_thread(request: Request) -> Response:
    return Response(request.id, 200, body=threading.current_thread().name.encode())


@pytest.mark.parametrize(("on_reader", "thread"), [(True, "hatchway-reader"), (False, "worker")])
def test_a_request_is_served_by_the_reader_itself_only_where_allowed(
    relay: FakeRelay, on_reader: bool, thread: str
) -> None:
    with session(relay, on_thread, serve_on_reader=on_reader).start():
        assert thread in visit(relay.next()).body.decode()


def test_a_request_waiting_on_the_app_hands_the_reading_on(relay: FakeRelay, waits: Waits) -> None:
    """The reader serving a slow request itself passes the reading to a new thread as soon as
    the app keeps it waiting (not at the ticker's next look, a second on): the requests behind
    it are served meanwhile, and the slow one is answered when the app is."""
    from hatchway.serving.inflight import WORKING_SCAN_SECONDS

    with session(relay, forwarder_to(waits), serve_on_reader=True).start():
        end = relay.next()
        end.send(Request("slow", "sess", "GET", "/slow"))
        sent = time.monotonic()
        assert visit(end, "fast", "/fast").body == b"/fast"
        assert time.monotonic() - sent < WORKING_SCAN_SECONDS
        waits.release.set()
        answer = end.response()
        assert (answer.id, answer.body) == ("slow", b"/slow")
        assert visit(end, "again", "/again").body == b"/again"


def test_a_handler_waiting_elsewhere_loses_the_reading_at_the_next_ticks(
    relay: FakeRelay,
) -> None:
    """A handler that waits on no ``http1`` socket cannot hand over itself: the ticker does,
    once the same request has held the reader for a whole tick."""
    release = threading.Event()

    def stuck_then_quick(request: Request) -> Response:
        if request.path == "/stuck":
            release.wait(WAIT)
        return Response(request.id, 200, body=request.path.encode())

    with session(relay, stuck_then_quick, serve_on_reader=True, heartbeat=0.2).start():
        end = relay.next()
        end.send(Request("stuck", "sess", "GET", "/stuck"))
        try:
            assert visit(end, "quick", "/quick").body == b"/quick"
        finally:
            release.set()
        assert end.response().id == "stuck"


@pytest.mark.parametrize("may_wait", [True, False])
def test_listeners_that_may_wait_run_on_a_worker_not_the_reader(
    relay: FakeRelay, may_wait: bool
) -> None:
    heard: list[str] = []
    finishing = threading.Event()

    def done(request: Request, response: Response, elapsed_ms: float) -> None:
        heard.append(threading.current_thread().name)
        if may_wait:
            finishing.wait(WAIT)  # an API user's slow callback

    options = {"on_request_done": done, "request_done_may_wait": lambda: may_wait}
    with session(relay, serve_on_reader=True, **options).start():
        end = relay.next()
        try:
            assert [visit(end, f"r{i}").status for i in range(3)] == [200, 200, 200]
        finally:
            finishing.set()
    on_reader = ["hatchway-reader" in name for name in heard]
    assert on_reader == [not may_wait] * 3


def test_after_a_hand_over_requests_go_to_workers_for_a_pause(
    relay: FakeRelay, waits: Waits
) -> None:
    """An app that just kept the reader waiting is likely slow for the next requests too: they
    go straight to workers for ``INLINE_PAUSE_SECONDS``, then the reader serves again."""
    from hatchway.serving.connection import INLINE_PAUSE_SECONDS

    forward = forwarder_to(waits)

    def handler(request: Request) -> Response:
        return forward(request) if request.path == "/slow" else on_thread(request)

    with session(relay, handler, serve_on_reader=True).start():
        end = relay.next()
        end.send(Request("slow", "sess", "GET", "/slow"))
        assert "worker" in visit(end, "next", "/next").body.decode()
        waits.release.set()
        assert end.response().id == "slow"
        deadline = time.monotonic() + INLINE_PAUSE_SECONDS + WAIT
        threads = []
        while "hatchway-reader" not in threads[-1:] and time.monotonic() < deadline:
            threads.append(visit(end, f"later{len(threads)}", "/later").body.decode())
        assert threads[-1] == "hatchway-reader"


def test_a_body_passed_on_to_the_blob_store_is_not_the_readers_job(relay: FakeRelay) -> None:
    """Passing a large body on is long work: the forwarder announces it, and the reader
    hands its reading on first."""
    from hatchway.transport import http1

    heard: list[str] = []

    def passes_on(request: Request) -> Response:
        http1.long_work_ahead()  # what Forwarder._pass_on says before it starts
        heard.append(threading.current_thread().name)
        return on_thread(request)

    with session(relay, passes_on, serve_on_reader=True).start():
        end = relay.next()
        assert visit(end, "big").status == 200
        assert visit(end, "next").status == 200
    assert heard[0] == "hatchway-reader"  # the thread goes on with its request...
    assert "worker" in heard[1]  # ...and the next request finds a new reader (and a pause)


# --- Stopping ---------------------------------------------------------------------------------


class Held:
    """A handler whose ``/hang`` requests wait until released, saying when one has started."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, request: Request) -> Response:
        if request.path == "/hang":
            self.started.set()
            self.release.wait(WAIT)
        return Response(request.id, 200, body=request.path.encode())


QUIET = 0.2
"""The quiet period a stopping session waits for in these tests (``rotation_quiet``)."""


def stopping(agent: Session, grace: float = WAIT) -> threading.Thread:
    """``agent.stop(grace)`` on a thread of its own (it blocks until the session closed)."""
    thread = threading.Thread(target=agent.stop, args=(grace,), daemon=True)
    thread.start()
    return thread


def test_stop_says_leaving_then_answers_what_it_holds_and_what_still_arrives(
    relay: FakeRelay,
) -> None:
    app = Held()
    agent = session(relay, app, rotation_quiet=QUIET).start()
    end = relay.next()
    end.send(Request("held", "sess", "GET", "/hang"))
    assert app.started.wait(WAIT)
    assert agent.in_flight == 1
    stopper = stopping(agent)
    message, _ = end.receive()
    assert message == protocol.Leaving()
    # A relay function that had read the claim just before the leave still routes here.
    assert visit(end, "late", "/late").status == 200
    assert not end.closed.is_set()  # still holding a request: it stays
    app.release.set()
    answer = end.response()
    assert (answer.id, answer.status) == ("held", 200)
    assert end.closed.wait(WAIT)  # then, once quiet, it closes
    stopper.join(WAIT)
    assert not stopper.is_alive() and relay.hellos == 1  # and never reconnects


def test_stop_gives_up_on_a_request_held_past_the_grace(relay: FakeRelay) -> None:
    app = Held()
    agent = session(relay, app, rotation_quiet=QUIET).start()
    end = relay.next()
    end.send(Request("stuck", "sess", "GET", "/hang"))
    assert app.started.wait(WAIT)
    began = time.monotonic()
    stopper = stopping(agent, grace=0.5)
    assert end.closed.wait(WAIT)
    assert 0.5 <= time.monotonic() - began < 0.5 + WAIT / 2
    stopper.join(WAIT)
    assert not stopper.is_alive()
    app.release.set()


def test_close_during_a_stop_quits_at_once(relay: FakeRelay) -> None:
    app = Held()
    agent = session(relay, app, rotation_quiet=QUIET).start()
    end = relay.next()
    end.send(Request("stuck", "sess", "GET", "/hang"))
    assert app.started.wait(WAIT)
    stopper = stopping(agent)  # would wait up to WAIT for the request
    assert end.receive()[0] == protocol.Leaving()
    began = time.monotonic()
    agent.close()  # the second Ctrl-C
    stopper.join(WAIT)
    # The relay's end sees the close on its own thread, a moment after the agent made it.
    assert not stopper.is_alive() and end.closed.wait(WAIT)
    assert time.monotonic() - began < WAIT / 2
    app.release.set()


def test_a_stopping_session_whose_relay_drops_it_does_not_reconnect(relay: FakeRelay) -> None:
    app = Held()
    agent = session(relay, app, rotation_quiet=QUIET).start()
    end = relay.next()
    end.send(Request("stuck", "sess", "GET", "/hang"))
    assert app.started.wait(WAIT)
    stopper = stopping(agent)
    assert end.receive()[0] == protocol.Leaving()
    end.close()
    stopper.join(WAIT)
    assert not stopper.is_alive() and relay.hellos == 1
    assert relay.connections.empty()
    app.release.set()


def test_a_leaving_the_platform_may_have_lost_is_said_again(relay: FakeRelay) -> None:
    app = Held()
    agent = session(relay, app, rotation_quiet=QUIET).start()
    end = relay.next()
    end.send(Request("held", "sess", "GET", "/hang"))
    assert app.started.wait(WAIT)
    stopper = stopping(agent)
    assert end.receive()[0] == protocol.Leaving()
    end.send(protocol.Undelivered("Internal server error", "aws-request-id"))
    assert end.receive()[0] == protocol.Leaving()
    app.release.set()
    assert end.response().id == "held"
    stopper.join(WAIT)
    assert not stopper.is_alive()
