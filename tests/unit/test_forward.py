"""The agent's forwarder against a real local app over real sockets: byte-exact requests and
responses, connection reuse, faults that name the local app, and hostile targets refused; and
against a raw socket app for what a real app rarely does (bodies cut short, resets after a
request) and for the exact bytes of header values."""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import time
from collections.abc import Iterator

import pytest

from hatchway import protocol
from hatchway.serving.bodies import COMPRESSIBILITY_SAMPLE_BYTES
from hatchway.serving.forward import (
    Forwarder,
    LargeResponse,
    PassedResponse,
    Target,
    parse_target,
)
from support.blob_server import Scripted, scripted_server
from support.local_app import LocalApp
from support.raw_app import RawAnswer, RawApp, RawRequest, ok, run_raw_app


@pytest.fixture
def blob_server() -> Iterator[Scripted]:
    with scripted_server() as scripted:
        yield scripted


def request(
    method: str = "GET", path: str = "/echo", query: str = "", headers=(), body=b""
) -> protocol.Request:
    return protocol.Request("r1", "myapp", method, path, query, tuple(headers), body)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("3000", "127.0.0.1", 3000),
        ("localhost:8000", "localhost", 8000),
        ("http://127.0.0.1:5000", "127.0.0.1", 5000),
        ("http://[::1]:5000/", "::1", 5000),
    ],
)
def test_targets_parse(text: str, host: str, port: int) -> None:
    assert parse_target(text) == Target(host, port)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "70000",
        "https://localhost:3000",
        "localhost",
        "host:port",
        "http://h:1/path",
        "a:b@h:1",
    ],
)
def test_bad_targets_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="target"):
        parse_target(text)


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_and_bodies_arrive_exactly(
    app: LocalApp, forwarder: Forwarder, method: str
) -> None:
    body = b"" if method in ("GET", "HEAD") else method.encode() * 3
    response = forwarder.handle(request(method, "/echo/m", body=body))
    assert response.status == 200 and response.fault is None
    seen = app.requests[-1]
    assert (seen.method, seen.target, seen.body) == (method, "/echo/m", body)
    if method == "HEAD":
        assert response.body == b""


def test_headers_keep_order_and_repeats_and_lose_hop_by_hop(
    app: LocalApp, forwarder: Forwarder
) -> None:
    headers = [
        ("host", "myapp.t.example.com"),
        ("x-b", "2"),
        ("x-a", "1"),
        ("x-a", "again"),
        ("connection", "x-private"),
        ("x-private", "hop"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
    ]
    forwarder.handle(request(headers=headers))
    seen = app.requests[-1].headers
    assert seen == [("host", "myapp.t.example.com"), ("x-b", "2"), ("x-a", "1"), ("x-a", "again")]


@pytest.mark.parametrize(
    ("path", "query"),
    [("/echo/caf%C3%A9/%2F", ""), ("/echo", "a=1&a=2&b=&c=%26"), ("/echo/;x=1/~", "q=%20")],
)
def test_paths_and_queries_are_not_requoted(
    app: LocalApp, forwarder: Forwarder, path: str, query: str
) -> None:
    forwarder.handle(request(path=path, query=query))
    assert app.requests[-1].target == path + ("?" + query if query else "")


@pytest.mark.parametrize("size", [0, 1024 * 1024])
def test_binary_bodies_both_ways(app: LocalApp, forwarder: Forwarder, size: int) -> None:
    upload = bytes(range(256)) * (size // 256)
    response = forwarder.handle(request("POST", "/upload", body=upload))
    assert hashlib.sha256(app.requests[-1].body).digest() == hashlib.sha256(upload).digest()
    assert response.body == upload
    download = forwarder.handle(request(path="/bytes", query=f"n={size}&seed=1"))
    assert download.body == LocalApp.expected_bytes(size, 1)


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses(forwarder: Forwarder, status: int) -> None:
    response = forwarder.handle(request(path=f"/status/{status}"))
    assert (response.status, response.body) == (status, b"")


def test_redirects_are_not_followed_and_cookies_stay_separate(forwarder: Forwarder) -> None:
    redirect = forwarder.handle(request(path="/redirect"))
    assert (redirect.status, dict(redirect.headers)["Location"]) == (302, "/echo/after")
    cookies = forwarder.handle(request(path="/cookies"))
    assert [v for k, v in cookies.headers if k == "Set-Cookie"] == [
        "a=1; Path=/",
        "b=2; HttpOnly",
        "c=3; Max-Age=60",
    ]


def test_connections_to_the_local_app_are_reused(app: LocalApp, forwarder: Forwarder) -> None:
    for _ in range(10):
        assert forwarder.handle(request()).status == 200
    assert len({seen.client_port for seen in app.requests}) == 1


def test_a_connection_the_app_closed_is_replaced_transparently(
    app: LocalApp, forwarder: Forwarder
) -> None:
    forwarder.handle(request())
    for conn in forwarder.pool.idle:  # the app dropped its keep-alive connection
        conn.sock.shutdown(socket.SHUT_RDWR)
    assert forwarder.handle(request("POST", "/upload", body=b"still here")).body == b"still here"


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_local_app_down_is_a_fault_naming_the_local_app() -> None:
    port = unused_port()
    response = Forwarder(Target("127.0.0.1", port)).handle(request())
    assert response.status == 502
    assert response.fault is not None and response.fault.side == "local app"
    assert f"connection refused by http://127.0.0.1:{port}" in response.fault.message


def test_slow_local_app_is_a_timeout_fault(app: LocalApp) -> None:
    response = Forwarder(Target("127.0.0.1", app.port), timeout=0.3).handle(
        request(path="/slow", query="s=5")
    )
    assert response.fault is not None and "did not answer within 0.3 s" in response.fault.message


def test_oversized_local_response_is_a_fault(forwarder: Forwarder) -> None:
    at_limit = forwarder.handle(request(path="/bytes", query=f"n={protocol.MAX_BODY_BYTES}"))
    assert at_limit.status == 200 and len(at_limit.body) == protocol.MAX_BODY_BYTES
    over = forwarder.handle(request(path="/bytes", query=f"n={protocol.MAX_BODY_BYTES + 1}"))
    assert over.status == 413 and over.fault is not None and over.fault.side == "local app"
    assert f"larger than {protocol.MAX_BODY_BYTES} bytes" in over.fault.message
    assert "--large-responses redirect" in over.fault.message


def test_a_redirecting_tunnel_reads_up_to_its_own_limit(app: LocalApp) -> None:
    limit = protocol.MAX_BODY_BYTES + 10
    forwarder = Forwarder(Target("127.0.0.1", app.port), timeout=5, max_response_bytes=limit)
    try:
        large = forwarder.handle(request(path="/bytes", query=f"n={limit}&seed=2"))
        assert isinstance(large, LargeResponse) and large.body == LocalApp.expected_bytes(limit, 2)
        over = forwarder.handle(request(path="/bytes", query=f"n={limit + 1}"))
        assert over.fault is not None and f"larger than {limit} bytes" in over.fault.message
    finally:
        forwarder.close()


def test_a_large_response_is_bounded_by_the_blob_store() -> None:
    LargeResponse("r1", 200, body=b"x" * (protocol.MAX_BODY_BYTES + 1))
    with pytest.raises(protocol.ProtocolError, match="blob store"):
        LargeResponse("r1", 200, body=b"x" * (protocol.MAX_BLOB_BYTES + 1))
    with pytest.raises(protocol.ProtocolError, match="invalid status"):
        LargeResponse("r1", 99)


@pytest.mark.parametrize(
    ("path", "query", "headers"),
    [
        ("http://evil.example/", "", ()),
        ("//evil.example/x", "", ()),
        ("/a\r\nHost: evil", "", ()),
        (" /x", "", ()),
        ("/x y", "", ()),
        ("/x", "a=1 HTTP/1.1\r\nX: y", ()),
        ("/x\x00", "", ()),
    ],
)
def test_hostile_requests_are_refused_before_reaching_the_app(
    app: LocalApp, forwarder: Forwarder, path: str, query: str, headers: tuple
) -> None:
    response = forwarder.handle(protocol.Request("r1", "myapp", "GET", path, query, headers))
    assert response.status == 400
    assert b"Refused by the hatchway agent" in response.body
    assert app.requests == []


def test_header_injection_cannot_even_be_expressed() -> None:
    with pytest.raises(protocol.ProtocolError, match="CR, LF, NUL"):
        protocol.Request("r1", "myapp", "GET", "/x", "", (("x-injected", "a\r\nHost: evil"),))


def test_echo_shows_no_added_headers(app: LocalApp, forwarder: Forwarder) -> None:
    response = forwarder.handle(request(headers=[("host", "h")]))
    names = [k.lower() for k, _ in json.loads(response.body)["headers"]]
    assert names == ["host"]  # no User-Agent, Accept-Encoding or Connection added


# --- Broken apps, retries and header bytes (a raw socket app that records bytes) ---------------


def raw_forwarder(app: RawApp) -> Forwarder:
    return Forwarder(Target("127.0.0.1", app.port), timeout=5)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (
            RawAnswer(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 2500, "close"),
            "it announced 5000 bytes and sent 2500",
        ),
        (
            RawAnswer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"a\r\n0123456789\r\n10\r\n01234",
                "close",
            ),
            "chunked body was cut short",
        ),
        (
            RawAnswer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
                "close",
            ),
            "chunked body was cut short",
        ),
    ],
)
def test_a_body_cut_short_is_a_fault_never_a_200(answer: RawAnswer, says: str) -> None:
    with run_raw_app(lambda request: answer) as app:
        response = raw_forwarder(app).handle(request())
    assert response.status == 502 and response.fault is not None
    assert response.fault.side == "local app"
    assert "closed the connection mid-response" in response.fault.message
    assert says in response.fault.message


def reset_after_the_second_request(request: RawRequest) -> RawAnswer:
    """Answers the first request of a connection and resets it after reading the next."""
    return ok(b"first") if request.index == 0 else RawAnswer(then="reset")


def test_a_post_the_app_may_have_acted_on_is_never_sent_twice() -> None:
    with run_raw_app(reset_after_the_second_request) as app:
        forwarder = raw_forwarder(app)
        assert forwarder.handle(request("GET", "/warm")).body == b"first"
        response = forwarder.handle(request("POST", "/charge", body=b"card=1"))
        posts = [r for r in app.requests if r.method == "POST"]
    assert len(posts) == 1  # executed once
    assert response.status == 502 and response.fault is not None
    assert "a POST is not sent twice" in response.fault.message


def test_a_get_on_a_connection_the_app_reset_is_sent_again() -> None:
    with run_raw_app(reset_after_the_second_request) as app:
        forwarder = raw_forwarder(app)
        assert forwarder.handle(request("GET", "/warm")).body == b"first"
        response = forwarder.handle(request("GET", "/again"))
    assert (response.status, response.body) == (200, b"first")  # on a fresh connection
    assert [(r.connection, r.index) for r in app.requests] == [(0, 0), (0, 1), (1, 0)]


def test_a_pooled_connection_the_app_closed_is_replaced_before_writing() -> None:
    closes = {0: "close"}
    with run_raw_app(
        lambda r: RawAnswer(ok(b"done").data, closes.get(r.connection, "keep"))
    ) as app:
        forwarder = raw_forwarder(app)
        forwarder.handle(request("GET", "/warm"))
        # The app closed its end after answering; wait until the FIN reached the pooled socket.
        (pooled,) = forwarder.pool.idle
        readable, _, _ = select.select([pooled.sock], [], [], 5)
        assert readable
        response = forwarder.handle(request("POST", "/once", body=b"x"))
    assert (response.status, response.body) == (200, b"done")
    assert [(r.method, r.connection) for r in app.requests] == [("GET", 0), ("POST", 1)]


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        ("caf\u00e9", "café".encode()),
        ("\u2603 snow", "☃ snow".encode()),
        ("bad \udcff byte", b"bad \xff byte"),  # invalid UTF-8 from the visitor, as it came
    ],
)
def test_header_values_reach_the_app_as_utf8_bytes(value: str, wire: bytes) -> None:
    with run_raw_app(lambda r: ok()) as app:
        response = raw_forwarder(app).handle(request(headers=[("x-name", value)]))
        (seen,) = app.requests
    assert response.status == 200
    assert seen.header(b"x-name") == wire


def test_response_header_values_come_back_as_the_app_sent_them() -> None:
    answer = ok(b"ok", "X-Name: café".encode(), "X-Snow: ☃".encode(), b"X-Raw: \xff")
    with run_raw_app(lambda r: answer) as app:
        response = raw_forwarder(app).handle(request())
    headers = dict(response.headers)
    assert headers["X-Name"] == "café" and headers["X-Snow"] == "☃"
    assert headers["X-Raw"].encode("utf-8", "surrogateescape") == b"\xff"


def test_a_head_response_keeps_the_apps_content_length(forwarder: Forwarder) -> None:
    response = forwarder.handle(request("HEAD", "/bytes", query="n=1234"))
    assert response.status == 200 and response.body == b""
    assert [v for k, v in response.headers if k.lower() == "content-length"] == ["1234"]
    get = forwarder.handle(request("GET", "/bytes", query="n=1234"))
    assert all(k.lower() != "content-length" for k, _ in get.headers)


# --- Large bodies passed from the app to the blob store as they come ---------------------------


def passing(port: int) -> Forwarder:
    return Forwarder(Target("127.0.0.1", port), timeout=5, pass_large_bodies=True)


def large_request(upload_url: str | None, inline_max: int = 1000) -> protocol.Request:
    return protocol.Request(
        "r1", "myapp", "GET", "/big", upload_url=upload_url, inline_max=inline_max
    )


def test_a_large_incompressible_body_goes_from_the_app_to_the_blob_store(
    blob_server: Scripted,
) -> None:
    body = os.urandom(300_000)
    with run_raw_app(lambda r: ok(body, b"X-Kind: random")) as app:
        forwarder = passing(app.port)
        response = forwarder.handle(large_request(blob_server.url + "/blob?sig=1"))
        again = forwarder.handle(large_request(blob_server.url + "/blob?sig=2"))
    assert (response.status, response.body, response.uploaded) == (200, b"", len(body))
    assert not isinstance(response, PassedResponse)  # no prefix kept unless asked for
    assert ("X-Kind", "random") in response.headers
    assert again.uploaded == len(body)
    put = blob_server.received[0]
    assert put.startswith(b"PUT /blob?sig=1 HTTP/1.1\r\n") and put.endswith(b"\r\n\r\n" + body)
    assert [r.connection for r in app.requests] == [0, 0]  # read to its end: kept alive


def test_a_passed_body_keeps_the_first_bytes_asked_for_and_uploads_all(
    blob_server: Scripted,
) -> None:
    """What the inspector shows of a body passed through: the start the forwarder read to judge
    it, never more (the agent holds no more of it)."""
    body = os.urandom(300_000)
    with run_raw_app(lambda r: ok(body)) as app:
        forwarder = Forwarder(
            Target("127.0.0.1", app.port),
            timeout=5,
            pass_large_bodies=True,
            keep_passed_prefix=True,
        )
        response = forwarder.handle(large_request(blob_server.url + "/blob"))
    assert isinstance(response, PassedResponse)
    assert (response.uploaded, response.body, response.prefix) == (
        len(body),
        b"",
        body[:COMPRESSIBILITY_SAMPLE_BYTES],
    )
    assert blob_server.received[0].endswith(b"\r\n\r\n" + body)


@pytest.mark.parametrize(
    ("body", "upload_url", "inline_max"),
    [
        (b"compressible text " * 20_000, "/blob", 1000),  # the session may carry it compressed
        (os.urandom(1000), "/blob", 1000),  # fits a message
        (os.urandom(5000), None, 1000),  # nowhere to put it: the session says so
    ],
)
def test_other_bodies_are_read_whole(
    blob_server: Scripted, body: bytes, upload_url: str | None, inline_max: int
) -> None:
    url = blob_server.url + upload_url if upload_url else None
    with run_raw_app(lambda r: ok(body)) as app:
        response = passing(app.port).handle(large_request(url, inline_max))
    assert (response.body, response.uploaded, blob_server.received) == (body, None, [])


def test_an_app_that_stops_mid_body_is_its_fault_and_the_upload_is_abandoned(
    blob_server: Scripted,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 400000\r\n\r\n"
    with run_raw_app(lambda r: RawAnswer(head + os.urandom(100_000), "close")) as app:
        response = passing(app.port).handle(large_request(blob_server.url + "/blob"))
    assert response.status == 502 and response.fault is not None
    assert response.fault.side == "local app"
    assert "closed the connection mid-response" in response.fault.message
    assert "announced 400000 bytes" in response.fault.message
    assert blob_server.arrived.wait(5)  # recorded once the server saw the upload dropped
    (put,) = blob_server.received
    assert len(put.partition(b"\r\n\r\n")[2]) < 400_000  # never a whole body


def test_a_blob_store_that_refuses_is_the_agents_fault(blob_server: Scripted) -> None:
    blob_server.reply = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nexpired"
    body = os.urandom(200_000)
    with run_raw_app(lambda r: ok(body)) as app:
        response = passing(app.port).handle(large_request(blob_server.url + "/blob"))
    assert response.status == 502 and response.fault is not None
    assert response.fault.side == "agent"
    assert "could not be uploaded to the relay" in response.fault.message
    assert "HTTP 403: expired" in response.fault.message


def test_a_passed_on_body_gets_the_time_the_request_has_left_not_the_apps() -> None:
    """The upload ends when the relay stops waiting for the answer (what ``blob_timeout``
    says for the request), even where the app's own timeout is far longer."""
    stalled = socket.create_server(("127.0.0.1", 0), backlog=1)  # accepts nothing, reads nothing
    given: list[str] = []

    def blob_timeout(request: protocol.Request) -> float:
        given.append(request.id)
        return 0.5

    body = os.urandom(8_000_000)  # more than loopback's socket buffers hold
    with stalled, run_raw_app(lambda r: ok(body)) as app:
        forwarder = Forwarder(
            Target("127.0.0.1", app.port),
            timeout=60,
            max_response_bytes=protocol.MAX_BLOB_BYTES,
            pass_large_bodies=True,
            blob_timeout=blob_timeout,
        )
        url = f"http://127.0.0.1:{stalled.getsockname()[1]}/blob"
        started = time.monotonic()
        response = forwarder.handle(large_request(url))
        waited = time.monotonic() - started
    assert given == ["r1"]
    assert response.status == 502 and response.fault is not None
    assert response.fault.side == "agent" and "could not be uploaded" in response.fault.message
    assert waited < 30  # the app's 60 s was not what bounded it
