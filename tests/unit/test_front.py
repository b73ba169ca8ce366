"""The lean front (``hatchway_local.front``) held to aiohttp's server, the reference: the same
raw requests sent to a gateway on each front get the same bytes back (Date aside) and reach
the handler as the same events; upgrades, malformed requests and whatever else the lean front
leaves to aiohttp are handed over with the connection, after the answers owed before them."""

from __future__ import annotations

import base64
import gzip
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import websocket

from hatchway_local.front import (
    MAX_KEPT_BODY_BYTES,
    MAX_LEAN_HEAD_BYTES,
    _boundary,
    front_choice,
)
from hatchway_local.gateway import Gateway
from hatchway_local.platform import MAX_REQUEST_BODY_BYTES, GatewayLimits
from hatchway_local.server import bind, serve_gateway
from support.certificates import localhost_server_context
from support.raw_http import RawClient

Event = dict[str, Any]

WAIT_SECONDS = 10.0

HOST = b"Host: app.localhost\r\n"


class Recorder:
    """The functions: HTTP results chosen by path (``/status/<n>``, ``/head``, else 200 with
    the path and query as body), every HTTP event kept; every WebSocket event accepted."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def http(self, event: Event, context: object) -> Event:
        self.events.append(event)
        self.entered.set()
        assert self.release.wait(WAIT_SECONDS)
        path = event["rawPath"]
        if path.startswith("/status/"):
            status = int(path.removeprefix("/status/"))
            return {"statusCode": status, "body": "ignored", "headers": {"x-status": str(status)}}
        if path == "/head":
            return {"statusCode": 200, "body": "", "headers": {"Content-Length": "1234"}}
        return {
            "statusCode": 200,
            "body": f"{event['requestContext']['http']['method']} {path}?{event['rawQueryString']}",
            "headers": {"content-type": "text/plain", "x-multi": "a"},
            "cookies": ["s=1; Path=/", "t=2"],
        }

    def ws(self, event: Event, context: object) -> Event:
        return {"statusCode": 200}


@contextmanager
def gateway(
    front: str, tls: ssl.SSLContext | None = None, **limits: Any
) -> Iterator[tuple[Recorder, int]]:
    recorder = Recorder()
    gw = Gateway({"127.0.0.1", "localhost"}, GatewayLimits(**limits))
    gw.set_handlers(recorder.ws, recorder.http)
    sock = bind("127.0.0.1", 0)
    with serve_gateway(gw, sock, tls, front=front):
        yield recorder, sock.getsockname()[1]


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` at once; everything the gateway sends until it closes (Date blanked)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", received)


def comparable(event: Event) -> Event:
    """An event without what differs between any two requests (ids, times)."""
    context = dict(event["requestContext"])
    for key in ("requestId", "time", "timeEpoch"):
        context.pop(key)
    return {**event, "requestContext": context}


CLOSE = b"Connection: close\r\n"

GZIPPED = gzip.compress(b"hello", mtime=0)

SCENARIOS = {
    "get with a query": b"GET /t/a/caf%C3%A9?q=1&q=2&r=%20 HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n",
    "head keeps the result's length": b"HEAD /head HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n",
    "204 and 304 carry no body": (
        b"GET /status/204 HTTP/1.1\r\n" + HOST + b"\r\n"
        b"GET /status/304 HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n"
    ),
    "pipelined requests are answered in order": b"".join(
        f"GET /n/{n} HTTP/1.1\r\n".encode() + HOST + (CLOSE if n == 4 else b"") + b"\r\n"
        for n in range(5)
    ),
    "a body by its length": (
        b"POST /up HTTP/1.1\r\n" + HOST + CLOSE + b"Content-Length: 5\r\n\r\nhello"
    ),
    "a chunked body": (
        b"PUT /up HTTP/1.1\r\n" + HOST + CLOSE + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    ),
    "headers repeated, cookies, bytes that are not UTF-8": (
        b"GET /h HTTP/1.1\r\n" + HOST + CLOSE + b"X-Rep: 1\r\nX-Rep: 2\r\n"
        b"Cookie: a=1; b=2\r\nCookie: c=3\r\nX-Bytes: caf\xc3\xa9 \xff\xfe\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\n\r\n"
    ),
    "a malformed request is aiohttp's 400": b"GET / HTTP/1.1\r\n" + HOST + b"Bad Header\r\n\r\n",
    "HTTP/1.0": b"GET /old HTTP/1.0\r\n" + HOST + b"\r\n",
    "HTTP/1.0 kept alive, then 1.1": (
        b"GET /old HTTP/1.0\r\n" + HOST + b"Connection: keep-alive\r\n\r\n"
        b"GET /new HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n"
    ),
    "an upgrade that is not a WebSocket": (
        b"GET /u HTTP/1.1\r\n" + HOST + b"Connection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n"
    ),
    "a field longer than the lean front takes": (
        b"GET /long HTTP/1.1\r\n" + HOST + CLOSE + b"X-Long: " + b"y" * 5000 + b"\r\n\r\n"
    ),
    "a field longer than aiohttp takes": (
        b"GET /long HTTP/1.1\r\n" + HOST + b"X-Long: " + b"y" * 9000 + b"\r\n\r\n"
    ),
    "a head longer than the lean front keeps": (
        b"GET /long HTTP/1.1\r\n"
        + HOST
        + CLOSE
        + b"".join(
            f"X-F{n}: ".encode() + b"z" * 4000 + b"\r\n" for n in range(MAX_LEAN_HEAD_BYTES // 4000)
        )
        + b"\r\n"
    ),
    "white space after a value": b"GET /ws HTTP/1.1\r\n" + HOST + CLOSE + b"X-Trail: v \t \r\n\r\n",
    "a repeated singleton": (
        b"GET /dup HTTP/1.1\r\n" + HOST + b"User-Agent: a\r\nUser-Agent: b\r\n\r\n"
    ),
    "no host": b"GET /nohost HTTP/1.1\r\n" + CLOSE + b"\r\n",
    "a null byte in a value": b"GET /null HTTP/1.1\r\n" + HOST + b"X-Null: a\x00b\r\n\r\n",
    "Expect: 100-continue": (
        b"POST /expect HTTP/1.1\r\n"
        + HOST
        + CLOSE
        + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"
    ),
    "a gzipped body": (
        b"POST /gz HTTP/1.1\r\n"
        + HOST
        + CLOSE
        + b"Content-Encoding: gzip\r\n"
        + f"Content-Length: {len(GZIPPED)}\r\n\r\n".encode()
        + GZIPPED
    ),
    "an absolute target": b"GET http://app.localhost/abs HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n",
    "a body declared over the limit: 413, closed": (
        b"POST /big HTTP/1.1\r\n"
        + HOST
        + f"Content-Length: {MAX_REQUEST_BODY_BYTES + 1}\r\n\r\n".encode()
        + b"x" * 1000
    ),
    "content-length and chunked at once": (
        b"POST /both HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("data", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_the_lean_front_answers_what_aiohttp_answers(data: bytes) -> None:
    answers, events = {}, {}
    for front in ("aiohttp", "lean"):
        with gateway(front) as (recorder, port):
            answers[front] = exchange(port, data)
            events[front] = [comparable(event) for event in recorder.events]
    assert answers["lean"] == answers["aiohttp"]
    assert events["lean"] == events["aiohttp"]
    assert answers["lean"].startswith(b"HTTP/1.")


def test_bodies_at_and_past_the_limit_are_answered_alike() -> None:
    """At the limit the body is read and the event is too large (413, kept alive); one byte
    more is refused from its length (413, closed, the body read and dropped meanwhile)."""
    answers: dict[str, list[bytes]] = {}
    for front in ("aiohttp", "lean"):
        with gateway(front) as (recorder, port):
            answers[front] = [
                exchange(
                    port,
                    b"POST /edge HTTP/1.1\r\n"
                    + HOST
                    + CLOSE
                    + f"Content-Length: {size}\r\n\r\n".encode()
                    + b"b" * size,
                )
                for size in (MAX_REQUEST_BODY_BYTES, MAX_REQUEST_BODY_BYTES + 1)
            ]
            assert recorder.events == []
    assert answers["lean"] == answers["aiohttp"]
    at, past = answers["lean"]
    assert at.startswith(b"HTTP/1.1 413") and b"Connection: close" in at  # asked by the client
    assert past.startswith(b"HTTP/1.1 413")


def test_a_malformed_request_after_good_ones_gets_aiohttps_400_after_their_answers() -> None:
    """Where aiohttp, finding the error in the read that carried the good requests, answers
    only the 400 (its parser drops what it had parsed of that read), the lean front answers
    the good ones first: the rule (a malformed request gets 400) is kept, and no answer to a
    good request is lost."""
    with gateway("lean") as (recorder, port):
        answer = exchange(
            port,
            b"GET /1 HTTP/1.1\r\n"
            + HOST
            + b"\r\nPOST /2 HTTP/1.1\r\n"
            + HOST
            + b"Content-Length: 2\r\n\r\nokGARBAGE / HTTP/1.1\r\n\r\n",
        )
    first, second, third = answer.split(b"HTTP/1.", 3)[1:]
    assert first.startswith(b"1 200") and first.endswith(b"GET /1?")
    assert second.startswith(b"1 200") and second.endswith(b"POST /2?")
    assert third.startswith(b"0 400 Bad Request") and b"Invalid method" in third
    assert [event["rawPath"] for event in recorder.events] == ["/1", "/2"]


PIPELINE = [
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"d" * 1048576,
]


@pytest.mark.parametrize("messages", range(len(PIPELINE) + 1))
def test_where_a_request_begins_after_others_is_found(messages: int) -> None:
    data = b"".join(PIPELINE) + b"GARBAGE / HTTP/1.1\r\n\r\n"
    assert _boundary(data, messages) == len(b"".join(PIPELINE[:messages]))


def test_a_malformed_request_after_a_large_body_closes_the_connection_after_its_answer() -> None:
    """A large body is not kept twice: where the request after it arrives in the same read
    and is aiohttp's, its start is lost, and the connection closes once the body's request
    is answered (aiohttp would answer 400)."""
    size = 3 * MAX_KEPT_BODY_BYTES
    with gateway("lean") as (recorder, port), RawClient(port, WAIT_SECONDS) as client:
        client.send(b"POST /large HTTP/1.1\r\n" + HOST + f"Content-Length: {size}\r\n\r\n".encode())
        client.send(b"l" * (size - 1))
        client.send(b"lGARBAGE / HTTP/1.1\r\n\r\n")
        answer = client.answer()
        assert client.seconds_until_closed() < WAIT_SECONDS
    assert answer.status == 200 and answer.body == b"POST /large?"
    assert base64.b64decode(recorder.events[0]["body"]) == b"l" * size


def test_an_upgrade_after_a_plain_request_is_handed_to_aiohttp() -> None:
    """One write: a plain request, then an agent's upgrade. The first is answered by the lean
    front, then aiohttp takes the connection and completes the handshake."""
    with gateway("lean") as (recorder, port), RawClient(port, WAIT_SECONDS) as client:
        client.send(
            b"GET /first HTTP/1.1\r\n" + HOST + b"\r\n"
            b"GET /connect HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        first = client.answer()
        second = client.answer()
    assert first.status == 200 and first.body == b"GET /first?"
    assert second.status == 101
    assert second.header("sec-websocket-accept") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert [event["rawPath"] for event in recorder.events] == ["/first"]


def test_over_tls_plain_requests_are_lean_and_an_upgrade_is_handed_over(tmp_path: Path) -> None:
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    with (
        gateway("lean", localhost_server_context(tmp_path)) as (recorder, port),
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as raw,
        client_context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            b"GET /secure?x=1 HTTP/1.1\r\n" + HOST + b"\r\n"
            b"GET /connect HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        received = b""
        while received.count(b"\r\n\r\n") < 2:
            chunk = tls.recv(65536)
            assert chunk, f"closed after {received!r}"
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK") and b"GET /secure?x=1" in received
    assert b"HTTP/1.1 101 Switching Protocols" in received
    event = recorder.events[0]
    assert event["headers"]["x-forwarded-proto"] == "https"


def test_a_websocket_on_the_lean_front_is_aiohttps() -> None:
    with gateway("lean") as (_, port):
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/connect", timeout=WAIT_SECONDS)
        ws.close()


def test_an_idle_connection_closes_at_the_headers_timeout() -> None:
    """Armed when the connection opens and after each answer; partial heads do not reset it."""
    with (
        gateway("lean", headers_timeout=0.3) as (_, port),
        RawClient(port, WAIT_SECONDS) as idle,
        RawClient(port, WAIT_SECONDS) as partial,
        RawClient(port, WAIT_SECONDS) as answered,
    ):
        partial.send(b"GET / HTTP/1.1\r\nHost: app")
        answered.send(b"GET / HTTP/1.1\r\n" + HOST + b"\r\n")
        assert answered.answer().status == 200
        for client in (idle, partial, answered):
            assert client.seconds_until_closed() < 3.0


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_request_in_flight_is_answered_when_the_gateway_stops() -> None:
    serving = gateway("lean")
    recorder, port = serving.__enter__()
    recorder.release.clear()
    with RawClient(port, WAIT_SECONDS) as client:
        client.send(b"GET /slow HTTP/1.1\r\n" + HOST + b"\r\n")
        assert recorder.entered.wait(WAIT_SECONDS)
        stopping = threading.Thread(target=serving.__exit__, args=(None, None, None))
        stopping.start()
        while not refused(port):  # the listener is gone: the stop has begun
            pass
        recorder.release.set()
        answer = client.answer()
        assert client.seconds_until_closed() < WAIT_SECONDS
    stopping.join(WAIT_SECONDS)
    assert answer.status == 200 and answer.body == b"GET /slow?"
    assert answer.header("connection") is None  # answered as it would have been


def test_the_front_is_chosen_by_name_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HATCHWAY_LOCAL_FRONT", raising=False)
    assert front_choice() == "aiohttp"
    monkeypatch.setenv("HATCHWAY_LOCAL_FRONT", "lean")
    assert front_choice() == "lean" and front_choice("aiohttp") == "aiohttp"
    with pytest.raises(ValueError, match="unknown front"):
        front_choice("nginx")
