"""The local gateway as an API Gateway emulator, with stub handlers (no relay core): event
shapes and AWS's path decoding, WebSocket frame and message limits, the management API (also
through a real boto3 client), the local poster's failures, and Lambda's concurrency rules
(throttling, reservations) without the gateway ever deadlocking itself."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import websocket

from hatchway import protocol
from hatchway_local.concurrency import (
    HTTP_FUNCTION,
    WEBSOCKET_FUNCTION,
    ConcurrencyPool,
    LambdaConcurrency,
    Throttled,
)
from hatchway_local.gateway import Gateway
from hatchway_local.local_poster import LocalPoster
from hatchway_local.platform import (
    CLOSE_GOING_AWAY,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    WEBSOCKET_MAX_MESSAGE_BYTES,
    GatewayLimits,
)
from hatchway_local.server import bind, serve_gateway
from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client
from hatchway_relay.ports import ConnectionGone, PostFailed
from support.aws_credentials import use_fake_credentials
from support.raw_http import RawClient
from support.visitor import Answer, visit

Event = dict[str, Any]

WAIT_SECONDS = 10.0
"""Bound on every wait for something the gateway does in another thread."""

FRAME = protocol.MAX_FRAME_BYTES
MESSAGE = protocol.MAX_MESSAGE_BYTES


def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition another thread makes true; fail after ``WAIT_SECONDS``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


class Stubs:
    """Records every event; answers $connect by token and HTTP requests with ``http_result``."""

    def __init__(self) -> None:
        self.ws_events: list[Event] = []
        self.http_events: list[Event] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.message = threading.Event()
        self.bodies: list[str] = []
        self.http_result: Callable[[Event], Event] = lambda e: {"statusCode": 200, "body": "ok"}

    def ws(self, event: Event, context: object) -> Event:
        self.ws_events.append(event)
        route = event["requestContext"]["routeKey"]
        if route == "$connect":
            if event["headers"].get("Authorization") != "Bearer good":
                return {"statusCode": 401, "body": "token refused"}
            self.connected.set()
        elif route == "$disconnect":
            self.disconnected.set()
        else:
            self.bodies.append(event["body"])
            self.message.set()
        return {"statusCode": 200}

    def http(self, event: Event, context: object) -> Event:
        self.http_events.append(event)
        return self.http_result(event)


@contextmanager
def gateway(
    concurrency: LambdaConcurrency | None = None, **limits: Any
) -> Iterator[tuple[Gateway, Stubs, int]]:
    stubs = Stubs()
    gw = Gateway({"127.0.0.1", "localhost"}, GatewayLimits(**limits), concurrency)
    gw.set_handlers(stubs.ws, stubs.http)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    with serve_gateway(gw, sock):
        yield gw, stubs, port


def open_ws(port: int, token: str = "good") -> websocket.WebSocket:
    return websocket.create_connection(
        f"ws://127.0.0.1:{port}/connect?x=1", header=[f"Authorization: Bearer {token}"], timeout=5
    )


def test_http_event_has_the_payload_2_shape() -> None:
    with gateway() as (_, stubs, port):
        visit(
            port,
            "POST",
            "/t/app/caf%C3%A9?a=1&a=2&b=%20",
            f"127.0.0.1:{port}",
            headers=[("X-Rep", "1"), ("X-Rep", "2"), ("Cookie", "a=1; b=2"), ("Cookie", "c=3")],
            body=b"\x00\x01binary",
        )
    event = stubs.http_events[-1]
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert event["rawPath"] == "/t/app/café"
    assert event["rawQueryString"] == "a=1&a=2&b=%20"
    assert event["queryStringParameters"] == {"a": "1,2", "b": " "}
    assert event["cookies"] == ["a=1", "b=2", "c=3"]
    assert event["headers"]["x-rep"] == "1,2"
    assert "cookie" not in event["headers"] and all(k == k.lower() for k in event["headers"])
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\x01binary"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["domainName"] == "127.0.0.1"


def test_results_become_responses_with_separate_set_cookies() -> None:
    with gateway() as (_, stubs, port):
        stubs.http_result = lambda e: {
            "statusCode": 201,
            "headers": {"x-multi": "a,b", "content-type": "application/octet-stream"},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": base64.b64encode(b"\xff\x00").decode(),
            "isBase64Encoded": True,
        }
        answer = visit(port, "GET", "/", "app.localhost")
    assert answer.status == 201 and answer.body == b"\xff\x00"
    assert answer.all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    assert answer.header("X-Multi") == "a,b"


@pytest.mark.parametrize(
    ("result", "status"),
    [({"nope": 1}, 500), ({"statusCode": 204}, 204)],
)
def test_malformed_results_are_500_like_aws(result: Event, status: int) -> None:
    with gateway() as (_, stubs, port):
        stubs.http_result = lambda e: result
        assert visit(port, "GET", "/", "app.localhost").status == status


def test_integration_timeout_is_503() -> None:
    release = threading.Event()
    with gateway(integration_timeout=0.5) as (_, stubs, port):
        stubs.http_result = lambda e: (release.wait(5), {"statusCode": 200})[1]
        answer = visit(port, "GET", "/", "app.localhost")
        release.set()
    assert answer.status == 503 and b"Service Unavailable" in answer.body


def test_body_over_the_http_api_limit_is_413() -> None:
    from hatchway_local.platform import LAMBDA_MAX_EVENT_BYTES

    with gateway() as (_, stubs, port):
        answer = visit(port, "POST", "/", "app.localhost", body=b"x" * LAMBDA_MAX_EVENT_BYTES)
    assert answer.status == 413 and stubs.http_events == []


def test_connect_refusal_rejects_the_upgrade() -> None:
    with gateway() as (_, _, port), pytest.raises(websocket.WebSocketBadStatusException) as exc:
        open_ws(port, "bad")
    assert exc.value.status_code == 401


def test_websocket_events_connect_message_disconnect() -> None:
    with gateway() as (_, stubs, port):
        ws = open_ws(port)
        ws.send('{"type":"ping","ts":1}')
        assert stubs.message.wait(5)
        ws.close()
        assert stubs.disconnected.wait(5)
    routes = [e["requestContext"]["routeKey"] for e in stubs.ws_events]
    assert routes == ["$connect", "$default", "$disconnect"]
    connect, message, _ = stubs.ws_events
    assert connect["queryStringParameters"] == {"x": "1"}
    assert connect["requestContext"]["eventType"] == "CONNECT"
    assert message["body"] == '{"type":"ping","ts":1}'
    ids = {e["requestContext"]["connectionId"] for e in stubs.ws_events}
    assert len(ids) == 1


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send_binary(b"\x00"), CLOSE_UNSUPPORTED_DATA),
        (lambda ws: ws.send("x" * (protocol.MAX_FRAME_BYTES + 1)), CLOSE_MESSAGE_TOO_BIG),
    ],
    ids=["binary", "oversized"],
)
def test_frames_api_gateway_refuses_close_the_connection(send: Callable, code: int) -> None:
    with gateway() as (_, stubs, port):
        ws = open_ws(port)
        ws.send("x" * protocol.MAX_FRAME_BYTES)  # exactly at the limit: accepted
        assert stubs.message.wait(5)
        send(ws)
        opcode, frame = ws.recv_data_frame(True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == code
        assert stubs.disconnected.wait(5)


def test_idle_connections_are_closed() -> None:
    with gateway(idle_timeout=0.3) as (_, stubs, port):
        ws = open_ws(port)  # held open: the gateway closes it, not the client
        opened = time.monotonic()
        ws.send("x")  # activity: the idle time counts from the last message
        assert stubs.message.wait(5)
        opcode, frame = ws.recv_data_frame(True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == CLOSE_GOING_AWAY
        assert 0.3 <= time.monotonic() - opened < 5
        assert stubs.disconnected.wait(5)


@pytest.mark.parametrize("via", ["local", "boto3"])
def test_management_api_posts_and_answers_410_for_gone_ids(
    via: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_fake_credentials(monkeypatch)
    with gateway() as (gw, stubs, port):
        ws = open_ws(port)
        assert stubs.connected.wait(5)
        connection_id = stubs.ws_events[0]["requestContext"]["connectionId"]
        assert gw.management_url is not None
        poster = (
            LocalPoster(gw) if via == "local" else ApiGatewayPoster(make_client(gw.management_url))
        )
        poster.post(connection_id, "hello agent")
        assert ws.recv() == "hello agent"
        with pytest.raises(ConnectionGone):
            poster.post("bm9wZQ==", "to nobody")
        if via == "boto3":
            client = poster.client  # type: ignore[union-attr]
            info = client.get_connection(ConnectionId=connection_id)
            assert "ConnectedAt" in info and "Identity" in info
            client.delete_connection(ConnectionId=connection_id)
            assert stubs.disconnected.wait(5)
            with pytest.raises(ConnectionGone):
                poster.post(connection_id, "after delete")


def manage(gw: Gateway, method: str, connection_id: str, body: bytes | None = None) -> Answer:
    """One call to the gateway's management API, key and all."""
    assert gw.management_url is not None
    parts = urlsplit(gw.management_url)
    assert parts.port is not None
    target = f"{parts.path}/@connections/{quote(connection_id, safe='')}"
    return visit(parts.port, method, target, parts.netloc, body=body)


def test_management_post_over_the_message_limit_is_413() -> None:
    with gateway() as (gw, stubs, port):
        ws = open_ws(port)  # held open while the API is called
        assert stubs.connected.wait(5)
        connection_id = stubs.ws_events[0]["requestContext"]["connectionId"]
        answer = manage(gw, "POST", connection_id, b"x" * (WEBSOCKET_MAX_MESSAGE_BYTES + 1))
        ws.close()
    assert answer.status == 413


class Waiters:
    """HTTP invocations that block until a ``$default`` message names them, as the relay's
    HTTP handler waits for the agent's response; unanswered, they give up with a 504."""

    def __init__(self, stubs: Stubs, patience: float = WAIT_SECONDS) -> None:
        self.stubs = stubs
        self.patience = patience
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.answered = 0

    def gate(self, key: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(key, threading.Event())

    def http(self, event: Event) -> Event:
        key = event["rawQueryString"]
        if not self.gate(key).wait(self.patience):
            return {"statusCode": 504, "body": "no answer"}
        return {"statusCode": 200, "body": key}

    def ws(self, event: Event, context: object) -> Event:
        if event["requestContext"]["routeKey"] == "$default":
            self.gate(event["body"]).set()
            with self.lock:
                self.answered += 1
        return self.stubs.ws(event, context)

    def attach(self, gw: Gateway) -> None:
        self.stubs.http_result = self.http
        gw.set_handlers(self.ws, self.stubs.http)


def test_waiting_visitors_do_not_block_the_answers() -> None:
    """Many HTTP invocations blocked at once: the answers still run on their own threads."""
    visitors = 16
    with gateway() as (gw, stubs, port):
        waiters = Waiters(stubs)
        waiters.attach(gw)
        agent = open_ws(port)
        with ThreadPoolExecutor(visitors) as pool:
            futures = [
                pool.submit(visit, port, "GET", f"/?i={i}", "app.localhost")
                for i in range(visitors)
            ]
            wait_until(lambda: gw.concurrency.running(HTTP_FUNCTION) == visitors)
            for i in range(visitors):
                agent.send(f"i={i}")  # the "agent" answers every request over the WebSocket
            answers = [f.result(WAIT_SECONDS) for f in futures]
        assert [a.status for a in answers] == [200] * visitors
        assert sorted(a.text for a in answers) == sorted(f"i={i}" for i in range(visitors))


# --- Lambda concurrency: one account pool, reservations, throttles ----------------------------


@pytest.mark.parametrize(
    ("config", "capacities"),
    [
        (LambdaConcurrency(10), {WEBSOCKET_FUNCTION: 10, HTTP_FUNCTION: 10}),
        (LambdaConcurrency(200, 50), {WEBSOCKET_FUNCTION: 50, HTTP_FUNCTION: 150}),
        (LambdaConcurrency(300, 50, 100), {WEBSOCKET_FUNCTION: 50, HTTP_FUNCTION: 100}),
    ],
)
def test_capacity_follows_reservations(
    config: LambdaConcurrency, capacities: dict[str, int]
) -> None:
    assert {f: config.capacity(f) for f in capacities} == capacities


@pytest.mark.parametrize(
    "config",
    [
        LambdaConcurrency(1000, 950),  # leaves 50 unreserved, below 100
        LambdaConcurrency(10, 1),  # a small account cannot reserve at all
        LambdaConcurrency(1000, 500, 450),
        LambdaConcurrency(0),
    ],
)
def test_reservations_lambda_refuses_are_refused(config: LambdaConcurrency) -> None:
    with pytest.raises(ValueError):
        ConcurrencyPool(config)


def test_an_invocation_over_the_limit_is_throttled_not_queued() -> None:
    pool = ConcurrencyPool(LambdaConcurrency(3, websocket_reserved=1, min_unreserved=1))
    for _ in range(2):
        pool.acquire(HTTP_FUNCTION)
    pool.acquire(WEBSOCKET_FUNCTION)
    for function in (HTTP_FUNCTION, WEBSOCKET_FUNCTION):
        with pytest.raises(Throttled):
            pool.acquire(function)
    pool.release(HTTP_FUNCTION)
    pool.acquire(HTTP_FUNCTION)
    assert pool.throttles == {WEBSOCKET_FUNCTION: 1, HTTP_FUNCTION: 1}


def test_without_a_reservation_waiting_visitors_starve_the_answers() -> None:
    """The trap on AWS: visitors' HTTP invocations hold the whole account pool while they
    wait, so the WebSocket invocation carrying an answer is throttled; API Gateway tells the
    agent, and the visitor is never answered."""
    limit = 4
    with gateway(LambdaConcurrency(limit)) as (gw, stubs, port):
        waiters = Waiters(stubs, patience=1.0)
        waiters.attach(gw)
        agent = open_ws(port)
        with ThreadPoolExecutor(limit) as pool:
            futures = [
                pool.submit(visit, port, "GET", f"/?i={i}", "app.localhost") for i in range(limit)
            ]
            wait_until(lambda: gw.concurrency.running(HTTP_FUNCTION) == limit)
            agent.send("i=0")
            error = json.loads(agent.recv())
            answers = [f.result(WAIT_SECONDS) for f in futures]
    assert error["message"] == "Internal server error"
    assert set(error) == {"message", "connectionId", "requestId"}
    assert waiters.answered == 0 and gw.concurrency.throttles[WEBSOCKET_FUNCTION] == 1
    assert [a.status for a in answers] == [504] * limit


def test_with_a_reservation_answers_flow_and_extra_visitors_get_500() -> None:
    unreserved = 4
    config = LambdaConcurrency(unreserved + 2, websocket_reserved=2, min_unreserved=1)
    with gateway(config) as (gw, stubs, port):
        waiters = Waiters(stubs)
        waiters.attach(gw)
        agent = open_ws(port)
        with ThreadPoolExecutor(unreserved) as pool:
            futures = [
                pool.submit(visit, port, "GET", f"/?i={i}", "app.localhost")
                for i in range(unreserved)
            ]
            wait_until(lambda: gw.concurrency.running(HTTP_FUNCTION) == unreserved)
            # One visitor more than the unreserved pool holds: Lambda's 429 becomes a 500.
            extra = visit(port, "GET", "/?i=extra", "app.localhost")
            for i in range(unreserved):
                agent.send(f"i={i}")
                wait_until(lambda i=i: waiters.answered == i + 1)  # type: ignore[misc]
            answers = [f.result(WAIT_SECONDS) for f in futures]
    assert (extra.status, json.loads(extra.body)) == (500, {"message": "Internal Server Error"})
    assert [a.status for a in answers] == [200] * unreserved
    assert gw.concurrency.throttles == {WEBSOCKET_FUNCTION: 0, HTTP_FUNCTION: 1}


# --- Paths as HTTP API hands them to Lambda -----------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/a%20b", "/a b", ""),
        ("/a%2Fb", "/a/b", ""),
        ("/a%3Fb?x=1", "/a", "x=1"),  # a decoded ? ends the path
        ("/a%25b", "/a%b", ""),
        ("/a%2520b", "/a%20b", ""),  # decoded once only
        ("/caf%C3%A9/%E2%9C%93", "/café/✓", ""),
        ("/a+b?q=a+b&r=%20", "/a+b", "q=a+b&r=%20"),  # the query stays encoded
        ("/plain/path", "/plain/path", ""),
    ],
)
def test_raw_path_is_percent_decoded_and_cut_at_a_decoded_question_mark(
    target: str, path: str, query: str
) -> None:
    with gateway() as (_, stubs, port):
        assert visit(port, "GET", target, "app.localhost").status == 200
    event = stubs.http_events[-1]
    assert event["rawPath"] == path
    assert event["requestContext"]["http"]["path"] == path
    assert event["rawQueryString"] == query


# --- WebSocket frame and message limits ---------------------------------------------------------

TEXT, CONT = websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_CONT


def send_fragments(ws: websocket.WebSocket, sizes: list[int]) -> str:
    """One text message in frames of ``sizes`` bytes; returns the message."""
    parts = [chr(ord("a") + i % 26) * size for i, size in enumerate(sizes)]
    for i, part in enumerate(parts):
        frame = websocket.ABNF.create_frame(
            part, TEXT if i == 0 else CONT, fin=int(i == len(parts) - 1)
        )
        ws.send_frame(frame)
    return "".join(parts)


@pytest.mark.parametrize(
    ("sizes", "accepted"),
    [
        ([FRAME], True),
        ([FRAME + 1], False),
        ([FRAME] * 4, True),  # 128 KB in four 32 KB frames: the largest message
        ([FRAME, FRAME, FRAME, FRAME - 1, 1], True),
        ([FRAME] * 4 + [1], False),  # one byte over the message limit
        ([FRAME, FRAME + 1], False),  # a continuation frame over the frame limit
        ([10, 100, MESSAGE // 2], False),
    ],
    ids=["frame", "frame+1", "message", "message-5-frames", "message+1", "cont+1", "big-cont"],
)
def test_frames_and_messages_are_limited_like_api_gateway(sizes: list[int], accepted: bool) -> None:
    assert sum(sizes) <= MESSAGE or not accepted
    with gateway() as (_, stubs, port):
        ws = open_ws(port)
        message = send_fragments(ws, sizes)
        if accepted:
            assert stubs.message.wait(WAIT_SECONDS)
            assert stubs.bodies == [message]
            ws.send("still open")
            wait_until(lambda: len(stubs.bodies) == 2)
            return
        # The frame itself, not recv_data_frame: the server may drop the socket before the
        # client's close reply (it stops reading once a frame is refused).
        frame = ws.recv_frame()
        assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == CLOSE_MESSAGE_TOO_BIG
        assert stubs.disconnected.wait(WAIT_SECONDS)
        assert stubs.bodies == []


# --- The local poster ---------------------------------------------------------------------------


@contextmanager
def connected_agent() -> Iterator[tuple[Gateway, websocket.WebSocket, str]]:
    with gateway() as (gw, stubs, port):
        ws = open_ws(port)
        assert stubs.connected.wait(WAIT_SECONDS)
        yield gw, ws, stubs.ws_events[0]["requestContext"]["connectionId"]


def test_a_post_over_the_message_limit_fails_with_a_reason() -> None:
    with connected_agent() as (gw, _, connection_id):
        LocalPoster(gw).post(connection_id, "x" * WEBSOCKET_MAX_MESSAGE_BYTES)
        with pytest.raises(PostFailed) as exc:
            LocalPoster(gw).post(connection_id, "x" * (WEBSOCKET_MAX_MESSAGE_BYTES + 1))
    assert str(WEBSOCKET_MAX_MESSAGE_BYTES) in exc.value.why


def test_a_post_that_times_out_fails() -> None:
    with connected_agent() as (gw, _, connection_id):
        assert gw.loop is not None
        blocked, release = threading.Event(), threading.Event()

        def block_the_loop() -> None:
            blocked.set()
            release.wait(WAIT_SECONDS)

        gw.loop.call_soon_threadsafe(block_the_loop)
        assert blocked.wait(WAIT_SECONDS)
        try:
            with pytest.raises(PostFailed) as exc:
                LocalPoster(gw, timeout=0.2).post(connection_id, "late")
        finally:
            release.set()
    assert "timed out" in exc.value.why


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (KeyError("gone"), ConnectionGone),
        (OSError("broken pipe"), PostFailed),
        (ValueError("odd"), PostFailed),
    ],
)
def test_post_failures_other_than_an_unknown_connection_are_post_failed(
    failure: Exception, raised: type[Exception]
) -> None:
    with connected_agent() as (gw, _, connection_id):

        async def failing_send(connection_id: str, data: str) -> None:
            raise failure

        gw.send = failing_send  # type: ignore[method-assign]
        with pytest.raises(raised):
            LocalPoster(gw).post(connection_id, "hello")


# --- The management API is not the visitors' ---------------------------------------------------


def test_a_visitor_path_under_connections_is_a_visitor_request() -> None:
    """On the public port, ``/@connections/<id>`` is a path like any other: routed to the HTTP
    function, never posted to an agent, read from or used to close its connection."""
    with gateway() as (_, stubs, port):
        agent = open_ws(port)
        assert stubs.connected.wait(WAIT_SECONDS)
        connection_id = stubs.ws_events[0]["requestContext"]["connectionId"]
        target = f"/@connections/{quote(connection_id, safe='')}"
        for method in ("POST", "GET", "DELETE"):
            answer = visit(port, method, target, f"127.0.0.1:{port}", body=b"forged frame")
            assert (answer.status, answer.text) == (200, "ok")
        agent.settimeout(0.3)
        with pytest.raises(websocket.WebSocketTimeoutException):
            agent.recv()  # nothing reached the agent
        agent.send("still connected")
        assert stubs.message.wait(WAIT_SECONDS)
    methods = [e["requestContext"]["http"]["method"] for e in stubs.http_events]
    assert methods == ["POST", "GET", "DELETE"]


def test_the_management_api_is_on_loopback_and_wants_its_key() -> None:
    with gateway() as (gw, stubs, port):
        ws = open_ws(port)  # held open while the API is called
        assert stubs.connected.wait(WAIT_SECONDS)
        connection_id = stubs.ws_events[0]["requestContext"]["connectionId"]
        assert gw.management_url is not None
        parts = urlsplit(gw.management_url)
        assert parts.hostname == "127.0.0.1" and parts.port != port
        assert parts.path == f"/{gw.management_key}"
        wrong = visit(parts.port or 0, "GET", f"/nope/@connections/{connection_id}", parts.netloc)
        assert wrong.status == 403
        assert manage(gw, "GET", connection_id).status == 200
        ws.close()


# --- Lambda's context and the request's clock ---------------------------------------------------


def test_handlers_get_a_context_counting_down_their_function_timeout() -> None:
    remaining: dict[str, int] = {}

    def record(name: str, handler: Callable[[Event, Any], Event]) -> Callable[[Event, Any], Event]:
        def wrapped(event: Event, context: Any) -> Event:
            remaining[name] = context.get_remaining_time_in_millis()
            invocation = uuid.UUID(context.aws_request_id)
            assert (invocation.version, invocation.variant) == (4, uuid.RFC_4122)
            assert str(invocation) == context.aws_request_id and context.function_name
            return handler(event, context)

        return wrapped

    with gateway(http_function_timeout=7.0, websocket_function_timeout=5.0) as (gw, stubs, port):
        gw.set_handlers(record("ws", stubs.ws), record("http", stubs.http))
        assert visit(port, "GET", "/", "app.localhost").status == 200
        open_ws(port)
        assert stubs.connected.wait(WAIT_SECONDS)
    assert 6000 < remaining["http"] <= 7000
    assert 4000 < remaining["ws"] <= 5000


def test_time_epoch_is_when_the_request_arrived_not_when_its_body_did() -> None:
    """The relay's deadline counts from ``timeEpoch``: time spent reading a slow body (or any
    other wait before the invocation) must be inside it."""
    delay = 0.6
    invoked: list[float] = []

    def answer(event: Event) -> Event:
        invoked.append(time.time())
        return {"statusCode": 200}

    with gateway() as (_, stubs, port), RawClient(port) as client:
        stubs.http_result = answer
        client.send(b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 4\r\n\r\n")
        time.sleep(delay)  # the visitor's body is late, on purpose
        client.send(b"body")
        assert client.answer().status == 200
    epoch = stubs.http_events[0]["requestContext"]["timeEpoch"] / 1000
    assert invoked[0] - epoch >= delay - 0.05


# --- Visitors' bodies and slow clients ----------------------------------------------------------

SEVEN_MB = 7 * 1024 * 1024


def test_a_body_over_the_lambda_limit_is_refused_from_its_content_length() -> None:
    """9.5 MB declared, nothing sent: 413 at once, and not a byte of it is awaited."""
    with gateway() as (_, stubs, port), RawClient(port, timeout=WAIT_SECONDS) as client:
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: app.localhost\r\n"
            + f"Content-Length: {int(9.5 * 1024 * 1024)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = client.answer()
        took = time.monotonic() - started
    assert answer.status == 413 and json.loads(answer.body) == {
        "message": "Request Entity Too Large"
    }
    assert took < 2.0 and stubs.http_events == []


def test_a_chunked_body_is_read_no_further_than_the_limit() -> None:
    from hatchway_local.platform import MAX_REQUEST_BODY_BYTES

    piece = b"x" * (1024 * 1024)
    with gateway() as (_, stubs, port), RawClient(port, timeout=WAIT_SECONDS) as client:
        client.send(b"POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        with pytest.raises(OSError):  # the gateway stops reading, then closes
            while sent < 4 * SEVEN_MB:
                client.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
                if sent > MAX_REQUEST_BODY_BYTES + 4 * len(piece):
                    break
            raise OSError("everything was sent")
        answer = client.answer()
    assert answer.status == 413 and stubs.http_events == []


def test_headers_that_never_end_are_cut_off() -> None:
    with gateway(headers_timeout=0.5) as (_, _, port), RawClient(port, WAIT_SECONDS) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Slow: a")
        assert client.seconds_until_closed() < 3.0


def test_a_body_that_stops_halfway_is_abandoned() -> None:
    with (
        gateway(body_idle_timeout=0.5) as (_, stubs, port),
        RawClient(port, WAIT_SECONDS) as client,
    ):
        client.send(b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 100\r\n\r\nhalf")
        started = time.monotonic()
        answer = client.answer()
        closed = client.seconds_until_closed()
    assert answer.status == 408 and answer.header("connection") == b"close"
    assert time.monotonic() - started - closed < 3.0 and stubs.http_events == []


def test_a_trickling_body_is_abandoned_at_the_total_body_time() -> None:
    with (
        gateway(body_idle_timeout=0.4, body_timeout=1.0) as (_, stubs, port),
        RawClient(port, WAIT_SECONDS) as client,
    ):
        client.send(b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 100\r\n\r\n")
        started = time.monotonic()
        status = None
        for _ in range(40):  # a byte every 0.1 s: never idle, never done in time
            try:
                client.send(b"x")
            except OSError:
                break
            client.sock.settimeout(0.1)
            try:
                status = client.answer().status
                break
            except TimeoutError:
                continue
        took = time.monotonic() - started
    assert status == 408 and took < 3.0 and stubs.http_events == []


# --- Header bytes and HEAD -----------------------------------------------------------------------


def test_header_bytes_reach_the_handler_so_that_they_can_be_rebuilt_exactly() -> None:
    values = {b"x-utf8": b"caf\xc3\xa9", b"x-snowman": b"\xe2\x98\x83", b"x-invalid": b"a\xffb"}
    with gateway() as (_, stubs, port), RawClient(port, WAIT_SECONDS) as client:
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in values.items())
        client.send(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n" + lines + b"\r\n")
        assert client.answer().status == 200
    headers = stubs.http_events[0]["headers"]
    assert headers["x-utf8"] == "café" and headers["x-snowman"] == "☃"
    for name, value in values.items():
        assert headers[name.decode()].encode("utf-8", "surrogateescape") == value


def test_a_visitor_cannot_send_the_headers_only_the_front_sets() -> None:
    # On AWS CloudFront sets them (the visitor's host and target, its secret, the viewer's
    # address); this gateway is its own front, and passes none a visitor sent.
    forged = b"".join(
        name + b": forged\r\n"
        for name in (
            b"x-hatchway-host",
            b"x-hatchway-target",
            b"x-hatchway-front",
            b"cloudfront-viewer-address",
        )
    )
    with gateway() as (_, stubs, port), RawClient(port, WAIT_SECONDS) as client:
        client.send(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n" + forged + b"\r\n")
        assert client.answer().status == 200
    headers = stubs.http_events[0]["headers"]
    assert headers["host"] == "app.localhost"
    assert not {k for k in headers if k.startswith(("x-hatchway-", "cloudfront-"))}


def test_response_header_text_is_sent_as_utf8_and_bytes_it_cannot_carry_are_marked() -> None:
    with gateway() as (_, stubs, port), RawClient(port, WAIT_SECONDS) as client:
        stubs.http_result = lambda e: {
            "statusCode": 200,
            "headers": {"x-utf8": "café ☃", "x-invalid": "a\udcffb"},
            "cookies": ["n=caf\udce9"],
        }
        client.send(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        answer = client.answer()
    assert answer.header("x-utf8") == "café ☃".encode()
    # Not silently dropped: U+FFFD in place of the byte no UTF-8 text can hold.
    assert answer.header("x-invalid") == "a\ufffdb".encode()
    assert answer.header("set-cookie") == "n=caf\ufffd".encode()


def test_head_keeps_the_content_length_of_the_result() -> None:
    with gateway() as (_, stubs, port), RawClient(port, WAIT_SECONDS) as client:
        stubs.http_result = lambda e: {
            "statusCode": 200,
            "headers": {"content-length": "1234", "content-type": "text/plain"},
            "body": "",
        }
        client.send(b"HEAD /file HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        head = client.answer(to_head=True)
        client.send(b"GET /file HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        get = client.answer()
    assert head.header("content-length") == b"1234" and head.body == b""
    assert get.header("content-length") == b"0"  # a GET's length is its body's, not a header


# --- Back-pressure on a flooding WebSocket client ------------------------------------------------


def test_one_connection_has_at_most_its_cap_of_messages_in_flight() -> None:
    cap, sent = 4, 200
    release = threading.Event()
    with gateway(pending_messages=cap) as (gw, stubs, port):

        def slow_ws(event: Event, context: Any) -> Event:
            if event["requestContext"]["routeKey"] == "$default":
                release.wait(WAIT_SECONDS)
            return stubs.ws(event, context)

        gw.set_handlers(slow_ws, stubs.http)
        client = open_ws(port)
        for i in range(sent):
            client.send(f"m{i}")
        wait_until(lambda: gw.concurrency.running(WEBSOCKET_FUNCTION) == cap)
        time.sleep(0.2)  # room for a gateway without the cap to start more
        assert gw.concurrency.running(WEBSOCKET_FUNCTION) == cap
        release.set()
        wait_until(lambda: len(stubs.bodies) == sent)
    assert gw.peak_pending_messages == cap
    assert sorted(stubs.bodies) == sorted(f"m{i}" for i in range(sent))


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", {"Host": "app.localhost"}),
        ("/caf%C3%A9?a=1&a=2&b=%20", {"Host": "x", "Cookie": "a=1; b=2", "X-Rep": "1"}),
        ("/" + "é" * 500, {"Host": "h" * 255, "User-Agent": "🦊" * 300, "X-Emoji": "😀" * 400}),
        ("/?" + "&".join(f"k{i}=\x01" for i in range(300)), {"Host": "q"}),
        ("/", {f"X-H{i}": "\x7f" * 20 for i in range(100)} | {"Host": "many"}),
    ],
)
def test_the_event_size_bound_is_never_below_the_events_json(
    path: str, headers: dict[str, str]
) -> None:
    """The gateway encodes an event to measure it only when this bound could exceed
    Lambda's limit: a bound under the real size would let an oversized event through."""
    from aiohttp.test_utils import make_mocked_request

    from hatchway_local.platform import event_bound as _event_bound

    request = make_mocked_request("GET", path, headers=headers)
    gw = Gateway({"127.0.0.1"})
    event = gw._http_event(request, b"", time.time())
    assert _event_bound(request) >= len(json.dumps(event))
