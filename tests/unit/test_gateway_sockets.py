"""The local gateway's visitor-socket API, with a fake visitor-socket function (no relay core)
and real aiohttp WebSocket clients: the front's dispatch and headers, the ``$connect`` event,
the handshake a result allows (subprotocol echoed, no compression) or refuses (status, headers
and body passed), ``$default`` for text and binary, one message at a time per socket, API
Gateway's frame, message, idle and duration limits, and ``$disconnect``."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
import time
from typing import Any

import aiohttp
import pytest
import websocket

from hatchway import protocol
from hatchway_local.access_log import AccessLog
from hatchway_local.concurrency import VISITOR_SOCKET_FUNCTION, LambdaConcurrency
from hatchway_local.platform import CLOSE_GOING_AWAY, CLOSE_MESSAGE_TOO_BIG
from hatchway_local.socket_api import GOING_AWAY
from support.socket_gateway import WAIT_SECONDS, Event, socket_gateway, visitor

FRAME = protocol.MAX_FRAME_BYTES
MESSAGE = protocol.MAX_MESSAGE_BYTES

UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
    "Sec-WebSocket-Version": "13",
}
"""An upgrade request's headers, for requests read as plain HTTP."""


# --- The front: which upgrades go where, with which headers -------------------------------------


def test_connect_event_has_the_websocket_api_shape_and_the_front_headers() -> None:
    with socket_gateway() as served:

        async def scenario() -> None:
            headers = {
                "x-hatchway-host": "evil.example",
                "X-Hatchway-Target": "/admin",
                "Origin": "http://app.localhost",
                "Cookie": "a=1",
                "X-Rep": "1",
            }
            host = f"App.LocalHost:{served.port}"
            async with visitor(
                served, "/caf%C3%A9/a%2Fb?room=1&room=2&q=%20", host, headers=headers
            ):
                served.function.wait_for("$connect")

        asyncio.run(scenario())
        [event] = served.function.wait_for("$connect")
    context = event["requestContext"]
    headers = event["headers"]
    assert headers["x-hatchway-host"] == f"app.localhost:{served.port}"
    assert headers["x-hatchway-target"] == "/caf%C3%A9/a%2Fb?room=1&room=2&q=%20"
    # The visitor's own x-hatchway-* headers never reach the function, in either spelling.
    multi = {k.lower(): v for k, v in event["multiValueHeaders"].items()}
    assert multi["x-hatchway-host"] == [f"app.localhost:{served.port}"]
    assert multi["x-hatchway-target"] == ["/caf%C3%A9/a%2Fb?room=1&room=2&q=%20"]
    assert [k for k in headers if k.lower() == "x-hatchway-target"] == ["x-hatchway-target"]
    assert headers["Origin"] == "http://app.localhost" and headers["Cookie"] == "a=1"
    assert "Sec-WebSocket-Key" in headers
    assert event["queryStringParameters"] == {"room": "1", "q": " "}
    assert event["multiValueQueryStringParameters"] == {"room": ["1", "2"], "q": [" "]}
    assert event["isBase64Encoded"] is False
    assert context["routeKey"] == "$connect" and context["eventType"] == "CONNECT"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["stage"] == "local" and context["domainName"] == f"App.LocalHost:{served.port}"
    assert context["connectionId"] and context["requestId"]
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < WAIT_SECONDS
    assert context["connectedAt"] <= context["requestTimeEpoch"]
    assert served.agents.ws_events == [] and served.agents.http_events == []


def test_an_upgrade_on_a_bare_host_is_path_mode_but_connect_stays_the_agents() -> None:
    with socket_gateway() as served:

        async def scenario() -> None:
            async with visitor(served, "/t/app/live", f"127.0.0.1:{served.port}"):
                served.function.wait_for("$connect")
            async with visitor(served, "/connect", f"127.0.0.1:{served.port}"):
                pass

        asyncio.run(scenario())
        [event] = served.function.wait_for("$connect")
    assert event["headers"]["x-hatchway-target"] == "/t/app/live"
    assert event["headers"]["x-hatchway-host"] == f"127.0.0.1:{served.port}"
    routes = [e["requestContext"]["routeKey"] for e in served.agents.ws_events]
    assert routes[0] == "$connect"  # the agents' /connect never reached the visitors' function
    assert len(served.function.routed("$connect")) == 1


def test_without_a_socket_function_an_upgrade_goes_to_the_http_api() -> None:
    with socket_gateway(attach=False) as served:

        async def scenario() -> tuple[int, str]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    served.url("/live"), headers={"Host": "app.localhost", **UPGRADE}
                ) as response,
            ):
                return response.status, await response.text()

        assert asyncio.run(scenario()) == (501, "websocket-unsupported")
    assert served.agents.http_events[0]["rawPath"] == "/live"
    assert served.function.events == []
    assert VISITOR_SOCKET_FUNCTION not in served.gateway.concurrency.throttles


def test_a_plain_request_on_a_tunnel_host_still_goes_to_the_http_api() -> None:
    with socket_gateway() as served:

        async def scenario() -> int:
            async with (
                aiohttp.ClientSession() as session,
                session.get(served.url("/page"), headers={"Host": "app.localhost"}) as response,
            ):
                return response.status

        assert asyncio.run(scenario()) == 501
    assert served.function.events == []


# --- The handshake ------------------------------------------------------------------------------


def test_the_chosen_subprotocol_is_echoed_and_no_compression_is_negotiated() -> None:
    with socket_gateway() as served:
        served.function.connect_result = lambda event: {
            "statusCode": 200,
            "headers": {"Sec-WebSocket-Protocol": "chat.v2"},
        }

        async def scenario() -> tuple[str | None, int]:
            async with visitor(served, protocols=("chat.v1", "chat.v2"), compress=15) as ws:
                return ws.protocol, ws.compress

        assert asyncio.run(scenario()) == ("chat.v2", 0)
    [event] = served.function.wait_for("$connect")
    assert event["headers"]["Sec-WebSocket-Protocol"] == "chat.v1,chat.v2"  # as aiohttp sends it


def test_no_subprotocol_is_echoed_when_none_was_chosen() -> None:
    with socket_gateway() as served:

        async def scenario() -> str | None:
            async with visitor(served, protocols=("chat.v1",)) as ws:
                return ws.protocol

        assert asyncio.run(scenario()) is None


@pytest.mark.parametrize(
    ("result", "status", "body"),
    [
        (
            {"statusCode": 403, "headers": {"X-Refused-By": "app"}, "body": "not you"},
            403,
            "not you",
        ),
        (
            {
                "statusCode": 502,
                "headers": {"Content-Type": "application/json"},
                "body": '{"error": "the local app is unreachable"}',
            },
            502,
            '{"error": "the local app is unreachable"}',
        ),
        ({"statusCode": 401}, 401, "Forbidden"),
    ],
    ids=["app-refusal", "relay-fault", "no-body"],
)
def test_a_refused_connect_answers_its_status_headers_and_body(
    result: Event, status: int, body: str
) -> None:
    with socket_gateway() as served:
        served.function.connect_result = lambda event: result

        async def scenario() -> tuple[int, dict[str, str], str]:
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    served.url("/live"), headers={"Host": "app.localhost", **UPGRADE}
                ) as response,
            ):
                return response.status, dict(response.headers), await response.text()

        got_status, headers, got_body = asyncio.run(scenario())
    assert (got_status, got_body) == (status, body)
    for name, value in (result.get("headers") or {}).items():
        assert headers[name].startswith(value)
    assert "Sec-WebSocket-Accept" not in headers
    assert served.function.routed("$disconnect") == []


def test_a_failing_connect_is_a_500() -> None:
    with socket_gateway() as served:

        def fail(event: Event) -> Event:
            raise RuntimeError("the function failed")

        served.function.connect_result = fail

        async def scenario() -> int:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with visitor(served):
                    pass
            return refused.value.status

        assert asyncio.run(scenario()) == 500


def test_a_connect_with_no_free_execution_is_throttled_to_a_500() -> None:
    # One execution in the account: the first visitor's $connect holds it while it waits
    # (as the relay's waits for the agent's answer), so the second's is throttled.
    with socket_gateway(concurrency=LambdaConcurrency(account_limit=1)) as served:
        holding, release = threading.Event(), threading.Event()

        def hold(event: Event) -> Event:
            if event["headers"]["x-hatchway-target"] == "/first":
                holding.set()
                assert release.wait(WAIT_SECONDS)
            return {"statusCode": 200}

        served.function.connect_result = hold

        async def scenario() -> int:
            async with aiohttp.ClientSession() as session:
                first = asyncio.ensure_future(
                    session.get(served.url("/first"), headers={"Host": "app.localhost", **UPGRADE})
                )
                await asyncio.get_running_loop().run_in_executor(None, holding.wait, WAIT_SECONDS)
                try:
                    async with session.get(
                        served.url("/second"), headers={"Host": "app.localhost", **UPGRADE}
                    ) as second:
                        return second.status
                finally:
                    release.set()
                    (await first).close()

        assert asyncio.run(scenario()) == 500
        assert served.gateway.concurrency.throttles[VISITOR_SOCKET_FUNCTION] == 1


# --- Messages -----------------------------------------------------------------------------------


def test_text_and_binary_messages_are_default_events() -> None:
    with socket_gateway() as served:

        async def scenario() -> None:
            async with visitor(served) as ws:
                await ws.send_str("héllo")
                await ws.send_bytes(b"\x00\xff binary")
                served.function.wait_for("$default", 2)

        asyncio.run(scenario())
        connect = served.function.wait_for("$connect")[0]
        text, binary = served.function.wait_for("$default", 2)
    assert (text["body"], text["isBase64Encoded"]) == ("héllo", False)
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == b"\x00\xff binary"
    for event in (text, binary):
        context = event["requestContext"]
        assert context["routeKey"] == "$default" and context["eventType"] == "MESSAGE"
        assert context["connectionId"] == connect["requestContext"]["connectionId"]
        assert context["messageId"] and "headers" not in event


def test_a_sockets_messages_are_invoked_one_at_a_time_in_order() -> None:
    with socket_gateway() as served:
        release = threading.Event()
        running: list[str] = []
        started: list[str] = []
        overlaps: list[list[str]] = []
        lock = threading.Lock()

        def on_message(event: Event) -> None:
            with lock:
                started.append(event["body"])
                running.append(event["body"])
                if len(running) > 1:
                    overlaps.append(list(running))
            if event["body"] == "m0":
                assert release.wait(WAIT_SECONDS)
            with lock:
                running.remove(event["body"])

        served.function.on_message = on_message

        async def scenario() -> None:
            async with visitor(served) as ws:
                for i in range(5):
                    await ws.send_str(f"m{i}")
                served.function.wait_for("$default")
                # A second visitor's whole handshake: the gateway's loop has had its turns
                # to read the first socket's other messages, had it meant to.
                async with visitor(served, "/other"):
                    served.function.wait_for("$connect", 2)
                with lock:
                    assert started == ["m0"]
                release.set()
                served.function.wait_for("$default", 5)

        asyncio.run(scenario())
    assert started == [f"m{i}" for i in range(5)]
    assert overlaps == []


# --- API Gateway's limits -----------------------------------------------------------------------

TEXT, BINARY, CONT = (
    websocket.ABNF.OPCODE_TEXT,
    websocket.ABNF.OPCODE_BINARY,
    websocket.ABNF.OPCODE_CONT,
)


def send_fragments(ws: websocket.WebSocket, sizes: list[int], opcode: int) -> bytes:
    """One message in frames of ``sizes`` bytes; returns the message."""
    parts = [bytes([ord("a") + i % 26]) * size for i, size in enumerate(sizes)]
    for i, part in enumerate(parts):
        frame = websocket.ABNF.create_frame(
            part, opcode if i == 0 else CONT, fin=int(i == len(parts) - 1)
        )
        ws.send_frame(frame)
    return b"".join(parts)


@pytest.mark.parametrize(
    ("sizes", "accepted"),
    [
        ([FRAME], True),
        ([FRAME + 1], False),
        ([FRAME] * 4, True),  # the largest message
        ([FRAME] * 4 + [1], False),  # one byte over the message limit
        ([FRAME, FRAME + 1], False),  # a continuation frame over the frame limit
    ],
    ids=["frame", "frame+1", "message", "message+1", "cont+1"],
)
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_frames_and_messages_are_limited_like_api_gateway(
    sizes: list[int], accepted: bool, opcode: int
) -> None:
    with socket_gateway() as served:
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{served.port}/live", host="app.localhost", timeout=WAIT_SECONDS
        )
        message = send_fragments(ws, sizes, opcode)
        if accepted:
            [event] = served.function.wait_for("$default")
            body = event["body"]
            assert (base64.b64decode(body) if opcode == BINARY else body.encode()) == message
            ws.send("still open")
            served.function.wait_for("$default", 2)
            ws.close()
            return
        # The frame itself: the server may drop the socket before the client's close reply.
        frame = ws.recv_frame()
        assert frame.opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == CLOSE_MESSAGE_TOO_BIG
        [gone] = served.function.wait_for("$disconnect")
        assert gone["requestContext"]["disconnectStatusCode"] == CLOSE_MESSAGE_TOO_BIG
        assert served.function.routed("$default") == []


@pytest.mark.parametrize(
    "limits",
    [{"idle_timeout": 0.3}, {"max_connection_seconds": 0.3}],
    ids=["idle", "max-duration"],
)
def test_a_socket_idle_or_open_too_long_is_closed_going_away(limits: dict[str, float]) -> None:
    with socket_gateway(**limits) as served:

        async def scenario() -> aiohttp.WSMessage:
            async with visitor(served) as ws:
                if "max_connection_seconds" in limits:
                    # Active throughout: only the duration limit can end it.
                    await ws.send_str("busy")
                return await ws.receive(timeout=WAIT_SECONDS)

        closed = asyncio.run(scenario())
        [gone] = served.function.wait_for("$disconnect")
    assert (closed.type, closed.data, closed.extra) == (
        aiohttp.WSMsgType.CLOSE,
        CLOSE_GOING_AWAY,
        GOING_AWAY,
    )
    assert gone["requestContext"]["disconnectStatusCode"] == CLOSE_GOING_AWAY
    assert gone["requestContext"]["disconnectReason"] == GOING_AWAY


def test_disconnect_carries_the_visitors_close_code_and_reason() -> None:
    with socket_gateway() as served:

        async def scenario() -> None:
            async with visitor(served) as ws:
                await ws.close(code=4001, message=b"bye now")

        asyncio.run(scenario())
        [connect] = served.function.wait_for("$connect")
        [gone] = served.function.wait_for("$disconnect")
    context = gone["requestContext"]
    assert context["eventType"] == "DISCONNECT"
    assert context["connectionId"] == connect["requestContext"]["connectionId"]
    assert (context["disconnectStatusCode"], context["disconnectReason"]) == (4001, "bye now")
    assert served.gateway.sockets.connections == {}


# --- Access log ---------------------------------------------------------------------------------


def test_each_socket_event_gets_an_access_log_line() -> None:
    log = AccessLog()
    lines: queue.Queue[str] = queue.Queue()
    log.listen(lines.put)
    with socket_gateway(access_log=log) as served:
        served.function.connect_result = lambda event: {"statusCode": 200}

        async def scenario() -> None:
            async with visitor(served) as ws:
                await ws.send_str("hi")
                served.function.wait_for("$default")

        asyncio.run(scenario())
        served.function.wait_for("$disconnect")
        entries: list[dict[str, Any]] = [
            json.loads(lines.get(timeout=WAIT_SECONDS)) for _ in range(3)
        ]
    connection_id = served.function.events[0]["requestContext"]["connectionId"]
    assert [e["route"] for e in entries] == ["$connect", "$default", "$disconnect"]
    assert {e["connectionId"] for e in entries} == {connection_id}
    assert [e["status"] for e in entries] == ["200"] * 3
