"""The local gateway as an API Gateway emulator, with stub handlers (no relay core): event
shapes, limits, the management API (also through a real boto3 client), and no deadlock when
visitors outnumber HTTP workers."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import websocket

from hatchway import protocol
from hatchway_local.gateway import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    WEBSOCKET_MAX_MESSAGE_BYTES,
    Gateway,
    GatewayLimits,
)
from hatchway_local.local_poster import LocalPoster
from hatchway_local.server import bind, serve_gateway
from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client
from hatchway_relay.ports import ConnectionGone
from support.aws_credentials import use_fake_credentials
from support.visitor import visit

Event = dict[str, Any]


class Stubs:
    """Records every event; answers $connect by token and HTTP requests with ``http_result``."""

    def __init__(self) -> None:
        self.ws_events: list[Event] = []
        self.http_events: list[Event] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.message = threading.Event()
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
            self.message.set()
        return {"statusCode": 200}

    def http(self, event: Event, context: object) -> Event:
        self.http_events.append(event)
        return self.http_result(event)


@contextmanager
def gateway(**limits: Any) -> Iterator[tuple[Gateway, Stubs, int]]:
    stubs = Stubs()
    workers = {k: limits.pop(k) for k in ("http_workers", "ws_workers") if k in limits}
    gw = Gateway({"127.0.0.1", "localhost"}, GatewayLimits(**limits), **workers)
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
    assert event["rawPath"] == "/t/app/caf%C3%A9"
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
    from hatchway_local.gateway import LAMBDA_MAX_EVENT_BYTES

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
        open_ws(port)
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
        poster = (
            LocalPoster(gw)
            if via == "local"
            else ApiGatewayPoster(make_client(f"http://127.0.0.1:{port}"))
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


def test_management_post_over_the_message_limit_is_413() -> None:
    with gateway() as (_, stubs, port):
        open_ws(port)
        assert stubs.connected.wait(5)
        connection_id = stubs.ws_events[0]["requestContext"]["connectionId"]
        answer = visit(
            port,
            "POST",
            f"/@connections/{connection_id}",
            f"127.0.0.1:{port}",
            body=b"x" * (WEBSOCKET_MAX_MESSAGE_BYTES + 1),
        )
    assert answer.status == 413


def test_more_visitors_than_http_workers_do_not_deadlock() -> None:
    """Each HTTP invocation blocks until a WebSocket invocation releases it, as the relay's
    HTTP handler waits for the agent's response frames."""
    visitors = 16
    with gateway(http_workers=4, ws_workers=4) as (gw, stubs, port):
        waiting: dict[str, threading.Event] = {}
        lock = threading.Lock()

        def blocking_http(event: Event) -> Event:
            key = event["rawQueryString"]
            with lock:
                gate = waiting.setdefault(key, threading.Event())
            assert gate.wait(10), "the WebSocket side never released this request"
            return {"statusCode": 200, "body": key}

        def release(event: Event, context: object) -> Event:
            if event["requestContext"]["routeKey"] == "$default":
                with lock:
                    waiting.setdefault(event["body"], threading.Event()).set()
            return stubs.ws(event, context)

        stubs.http_result = blocking_http
        gw.set_handlers(release, stubs.http)
        gw_ws = open_ws(port)
        with ThreadPoolExecutor(visitors) as pool:
            futures = [
                pool.submit(visit, port, "GET", f"/?i={i}", "app.localhost")
                for i in range(visitors)
            ]
            for i in range(visitors):
                gw_ws.send(f"i={i}")  # the "agent" answers every request over the WebSocket
            answers = [f.result(20) for f in futures]
        assert [a.status for a in answers] == [200] * visitors
        assert sorted(a.text for a in answers) == sorted(f"i={i}" for i in range(visitors))
