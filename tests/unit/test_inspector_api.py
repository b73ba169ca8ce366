"""The inspector's HTTP side against a real local app over loopback: the JSON API (list, filters,
detail, status), replay as captured and with edits through the session's forwarder, refusals
that say what to fix, loopback-only binding with port fallback, and the live event stream."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hatchway import protocol
from hatchway.serving.bodies import COMPRESSIBILITY_SAMPLE_BYTES
from hatchway.serving.forward import Forwarder, Target
from hatchway.ui.inspector import Inspector, InspectorError, NoFreePort
from hatchway.ui.inspector import server as inspector_server
from hatchway.ui.inspector.server import MAX_EVENT_CLIENTS, parse_address
from support.blob_server import scripted_server
from support.local_app import LocalApp

SESSION_STATUS = {"status": "online", "public_urls": ["http://demo.localhost:8000/"]}
READ_TIMEOUT_SECONDS = 10.0


@pytest.fixture
def inspector(forwarder: Forwarder) -> Iterator[Inspector]:
    with Inspector(forwarder, lambda: dict(SESSION_STATUS), heartbeat_seconds=0.05) as started:
        started.start("127.0.0.1:0")
        yield started


class Client:
    """The JSON API over http.client, with full control of the Host and Origin headers."""

    def __init__(self, inspector: Inspector) -> None:
        assert inspector.url is not None
        self.port = int(inspector.url.rstrip("/").rsplit(":", 1)[1])

    def call(
        self,
        method: str,
        path: str,
        payload: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=READ_TIMEOUT_SECONDS)
        body = raw if raw is not None else None if payload is None else json.dumps(payload).encode()
        try:
            conn.request(method, path, body, headers or {})
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        is_json = answer.getheader("Content-Type", "").startswith("application/json")
        return answer.status, json.loads(data) if is_json else data, answer

    def get(self, path: str) -> tuple[int, Any]:
        status, data, _ = self.call("GET", path)
        return status, data

    def replay(self, exchange_id: int, edits: Any = None) -> tuple[int, Any]:
        status, data, _ = self.call("POST", f"/api/requests/{exchange_id}/replay", edits)
        return status, data


@pytest.fixture
def client(inspector: Inspector) -> Client:
    return Client(inspector)


def serve(
    inspector: Inspector,
    forwarder: Forwarder,
    method: str,
    target: str,
    headers: protocol.Headers = (),
    body: bytes = b"",
) -> int:
    """What the session does for a visitor: forward, then hand the exchange to the hook.
    Returns the id the inspector gave it."""
    path, _, query = target.partition("?")
    request = protocol.Request("v1", "demo", method, path, query, headers, body)
    inspector.record(request, forwarder.handle(request), 1.5)
    return inspector.capture.newest_first()[0].id


# --- Listing and detail -----------------------------------------------------------------------


@pytest.fixture
def traffic(inspector: Inspector, forwarder: Forwarder) -> list[int]:
    return [
        serve(inspector, forwarder, "GET", "/echo/one?x=1"),
        serve(inspector, forwarder, "POST", "/upload", (("Content-Type", "text/plain"),), b"hi"),
        serve(inspector, forwarder, "GET", "/status/404"),
        serve(inspector, forwarder, "DELETE", "/status/503"),
        serve(inspector, forwarder, "GET", "/bytes?n=2000&seed=7"),
    ]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ("", [5, 4, 3, 2, 1]),
        ("?path=echo", [1]),
        ("?method=delete", [4]),
        ("?status=404", [3]),
        ("?status=5xx", [4]),
        ("?status=2xx&method=GET", [5, 1]),
    ],
)
def test_the_list_is_newest_first_and_filtered(
    client: Client, traffic: list[int], query: str, ids: list[int]
) -> None:
    status, data = client.get(f"/api/requests{query}")
    assert status == 200
    assert [row["id"] for row in data["requests"]] == ids


def test_a_row_has_what_the_list_shows(client: Client, traffic: list[int]) -> None:
    _, data = client.get("/api/requests?path=upload")
    (row,) = data["requests"]
    assert {k: row[k] for k in ("id", "method", "path", "status", "size", "replay_of")} == {
        "id": 2,
        "method": "POST",
        "path": "/upload",
        "status": 200,
        "size": 2,
        "replay_of": None,
    }
    assert row["duration_ms"] == 1.5 and row["time"].endswith("Z")


@pytest.mark.parametrize("query", ["?status=40", "?status=abc", "?sort=id"])
def test_bad_filters_are_answered_400(client: Client, traffic: list[int], query: str) -> None:
    status, data = client.get(f"/api/requests{query}")
    assert status == 400
    assert "status filter" in data["error"] or "unknown filter" in data["error"]


def test_detail_renders_json_text_and_binary_bodies(client: Client, traffic: list[int]) -> None:
    _, echo = client.get("/api/requests/1")
    assert echo["path"] == "/echo/one?x=1"
    assert echo["response"]["body"]["kind"] == "json"
    assert json.loads(echo["response"]["body"]["pretty"])["target"] == "/echo/one?x=1"
    assert ["Content-Type", "application/json"] in echo["response"]["headers"]

    _, upload = client.get("/api/requests/2")
    assert upload["request"]["headers"] == [["Content-Type", "text/plain"]]
    assert upload["request"]["body"] == {
        "size": 2,
        "stored": 2,
        "truncated": False,
        "content_type": "text/plain",
        "kind": "text",
        "text": "hi",
    }

    _, binary = client.get("/api/requests/5")
    body = binary["response"]["body"]
    expected = LocalApp.expected_bytes(2000, 7)
    assert (body["kind"], body["size"]) == ("binary", 2000)
    assert body["hex"] == expected[:512].hex()


def test_faults_are_shown_with_the_side_that_failed(
    inspector: Inspector, client: Client, unused_port: int
) -> None:
    down = Forwarder(Target("127.0.0.1", unused_port), timeout=2)
    exchange_id = serve(inspector, down, "GET", "/anything")
    _, shown = client.get(f"/api/requests/{exchange_id}")
    assert shown["status"] == 502
    assert shown["fault"]["side"] == "local app"
    assert "connection refused" in shown["fault"]["message"]


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/requests/999", 404),
        ("POST", "/api/requests/999/replay", 404),
        ("GET", "/api/requests/abc", 404),
        ("GET", "/api/nothing", 404),
        ("GET", "/../etc/passwd", 404),
        ("POST", "/api/requests", 405),
        ("GET", "/api/requests/1/replay", 405),
    ],
)
def test_unknown_ids_and_paths_are_answered_in_json(
    client: Client, traffic: list[int], method: str, path: str, status: int
) -> None:
    answer_status, data, _ = client.call(method, path)
    assert (answer_status, data["status"]) == (status, status)
    assert data["error"]


def test_an_unknown_id_says_it_may_have_been_forgotten(client: Client) -> None:
    assert client.get("/api/requests/7")[1]["error"].startswith("no request 7: it never existed")


def test_status_merges_the_callers_status_with_counts(
    inspector: Inspector, client: Client, traffic: list[int]
) -> None:
    status, data = client.get("/api/status")
    assert status == 200
    assert data["session"] == SESSION_STATUS
    assert data["inspector"] == {"url": inspector.url, "moved": False}
    assert data["requests"] == {
        "kept": 5,
        "recorded": 5,
        "replays": 0,
        "faults": 0,
        "max_requests": 200,
        "max_body_bytes": 32 * 1024,
    }


def test_the_page_is_served_with_a_strict_content_policy(client: Client) -> None:
    for path, kind in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ]:
        status, body, answer = client.call("GET", path)
        assert status == 200 and body
        assert answer.getheader("Content-Type", "").startswith(kind)
        assert "script-src 'self'" in answer.getheader("Content-Security-Policy", "")
        assert answer.getheader("X-Content-Type-Options") == "nosniff"


# --- Replay -----------------------------------------------------------------------------------


def test_replay_sends_the_captured_request_again(
    app: LocalApp, inspector: Inspector, forwarder: Forwarder, client: Client
) -> None:
    headers = (("Content-Type", "application/json"), ("X-Multi", "a"), ("X-Multi", "b"))
    original = serve(inspector, forwarder, "PUT", "/echo/r?a=1&a=2", headers, b'{"n":1}')
    first = app.requests[-1]

    status, replayed = client.replay(original)

    assert status == 201
    assert (replayed["replay_of"], replayed["status"]) == (original, 200)
    again = app.requests[-1]
    assert (again.method, again.target, again.headers, again.body) == (
        first.method,
        first.target,
        first.headers,
        first.body,
    )
    _, listed = client.get("/api/requests")
    assert [(r["id"], r["replay_of"]) for r in listed["requests"]] == [
        (replayed["id"], original),
        (original, None),
    ]
    assert inspector.capture.replays == 1


def test_replay_with_edits_changes_method_path_headers_and_body(
    app: LocalApp, inspector: Inspector, forwarder: Forwarder, client: Client
) -> None:
    original = serve(inspector, forwarder, "POST", "/upload", (("X-A", "1"),), b"old body")
    edits = {
        "method": "PATCH",
        "path": "/echo/edited?v=2",
        "headers": [["X-B", "2"], ["Content-Type", "text/plain"]],
        "body": "new body ✓",
    }
    status, replayed = client.replay(original, edits)
    assert status == 201
    seen = app.wait_for_request("/echo/edited?v=2")
    assert (seen.method, seen.body) == ("PATCH", "new body ✓".encode())
    assert seen.headers == [("X-B", "2"), ("Content-Type", "text/plain"), ("Content-Length", "12")]
    _, shown = client.get(f"/api/requests/{replayed['id']}")
    assert (shown["method"], shown["path"], shown["replay_of"]) == ("PATCH", "/echo/edited?v=2", 1)
    assert shown["request"]["body"]["text"] == "new body ✓"


@pytest.mark.parametrize(
    ("edits", "field", "expected"),
    [
        ({"body_base64": "AAEC/w=="}, "body", b"\x00\x01\x02\xff"),
        ({"headers": {"X-Only": "this"}}, "headers", [("X-Only", "this"), ("Content-Length", "1")]),
        ({"method": "get"}, "method", "GET"),
        ({"path": "/echo/%2F?q=caf%C3%A9"}, "target", "/echo/%2F?q=caf%C3%A9"),
    ],
)
def test_edit_forms_for_scripts(
    app: LocalApp,
    inspector: Inspector,
    forwarder: Forwarder,
    client: Client,
    edits: dict[str, Any],
    field: str,
    expected: object,
) -> None:
    original = serve(inspector, forwarder, "POST", "/upload", (("X-Orig", "1"),), b"x")
    assert client.replay(original, edits)[0] == 201
    assert getattr(app.requests[-1], field) == expected


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ([1, 2], "edits must be a JSON object"),
        ({"url": "/x"}, "unknown edit 'url'"),
        ({"method": 7}, "method must be a string"),
        ({"method": "GET X"}, "method 'GET X' is not an HTTP method"),
        ({"path": "http://evil.example/"}, "path 'http://evil.example/' is refused"),
        ({"path": "//evil.example/x"}, "replays only ever go to the tunnel's target"),
        ({"path": "/a b"}, "is refused"),
        ({"path": 5}, "path must be a string"),
        ({"headers": "X-A: 1"}, "headers must be a list of [name, value]"),
        ({"headers": [["X-A"]]}, "headers must be a list"),
        ({"headers": [["Bad Name", "1"]]}, "invalid header name 'Bad Name'"),
        ({"headers": [["X-A", "1\r\nX-Injected: 1"]]}, "with CR, LF, NUL or a lone"),
        ({"body": 5}, "body must be a string"),
        ({"body_base64": "not base64!"}, "body_base64 is not valid base64"),
        ({"body": "a", "body_base64": "YQ=="}, "not both"),
    ],
)
def test_bad_replay_edits_are_answered_400_saying_what_to_fix(
    app: LocalApp,
    inspector: Inspector,
    forwarder: Forwarder,
    client: Client,
    edits: Any,
    message: str,
) -> None:
    original = serve(inspector, forwarder, "GET", "/echo")
    arrived = len(app.requests)
    status, data = client.replay(original, edits)
    assert (status, data["status"]) == (400, 400)
    assert message in data["error"]
    assert len(app.requests) == arrived  # nothing reached the local app
    assert len(inspector.capture) == 1  # and nothing was recorded


def test_edits_that_are_not_json_are_answered_400(
    inspector: Inspector, forwarder: Forwarder, client: Client
) -> None:
    original = serve(inspector, forwarder, "GET", "/echo")
    status, data, _ = client.call("POST", f"/api/requests/{original}/replay", raw=b"{method:")
    assert status == 400 and data["error"].startswith("the replay's edits are not JSON")


def test_a_truncated_body_is_not_replayed_as_if_whole(app: LocalApp, forwarder: Forwarder) -> None:
    with Inspector(forwarder, dict, max_body_bytes=4) as small:
        small.start("127.0.0.1:0")
        client = Client(small)
        original = serve(small, forwarder, "POST", "/upload", (), b"0123456789")
        status, data = client.replay(original)
        assert status == 409
        assert "only the first 4 were kept" in data["error"]
        assert client.replay(original, {"body": "whole again"})[0] == 201
        assert app.requests[-1].body == b"whole again"


def test_a_body_passed_through_is_shown_cut_at_its_first_bytes_with_its_real_size(
    app: LocalApp, client: Client, inspector: Inspector
) -> None:
    """A large body zlib cannot shrink goes from the app to the relay's blob store as it comes,
    inspector on or off: the inspector shows the start the agent read to judge it, and a
    request body it could not keep whole is replayed only with a body sent along."""
    upload = os.urandom(100_000)
    with scripted_server() as blobs:
        passing = Forwarder(
            Target("127.0.0.1", app.port),
            timeout=5,
            pass_large_bodies=True,
            keep_passed_prefix=True,
        )
        request = protocol.Request(
            "v1", "demo", "POST", "/upload", "", (), upload, upload_url=blobs.url + "/blob"
        )
        response = passing.handle(request)
        inspector.record(request, response, 1.5)
        passing.close()
    assert response.uploaded == len(upload) and response.body == b""  # passed through
    (exchange,) = inspector.capture.newest_first()
    status, data = client.get(f"/api/requests/{exchange.id}")
    assert status == 200 and data["size"] == len(upload)
    shown = data["response"]["body"]
    assert (shown["size"], shown["stored"], shown["truncated"]) == (
        len(upload),
        COMPRESSIBILITY_SAMPLE_BYTES,
        True,
    )
    assert shown["kind"] == "binary" and shown["hex"] == upload[:COMPRESSIBILITY_SAMPLE_BYTES].hex()
    status, data = client.replay(exchange.id)
    assert status == 409 and "cannot be replayed as captured" in data["error"]
    assert client.replay(exchange.id, {"body": "small"})[0] == 201


def test_a_replay_to_a_stopped_app_is_recorded_as_its_fault(
    inspector: Inspector, client: Client, app: LocalApp, forwarder: Forwarder
) -> None:
    original = serve(inspector, forwarder, "GET", "/echo")
    app.server.shutdown()
    app.server.server_close()
    forwarder.close()  # drop pooled connections to the stopped app
    status, replayed = client.replay(original)
    assert (status, replayed["status"]) == (201, 502)
    assert replayed["fault"]["side"] == "local app"


# --- Who may ask ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example"}, 403),  # DNS rebinding: a page on another name
        ({"Host": "localhost:4040"}, 200),
        ({"Host": "[::1]:4040"}, 200),
    ],
)
def test_only_loopback_host_names_are_answered(
    client: Client, headers: dict[str, str], status: int
) -> None:
    assert client.call("GET", "/api/requests", headers=headers)[0] == status


@pytest.mark.parametrize(
    ("origin", "status"),
    [("http://evil.example", 403), ("null", 403), (None, 201), ("SAME", 201)],
)
def test_cross_site_replays_are_refused(
    app: LocalApp,
    inspector: Inspector,
    forwarder: Forwarder,
    client: Client,
    origin: str | None,
    status: int,
) -> None:
    original = serve(inspector, forwarder, "GET", "/echo")
    arrived = len(app.requests)
    host = f"127.0.0.1:{client.port}"
    headers = {"Host": host, "Content-Type": "application/json"}
    if origin:
        headers["Origin"] = f"http://{host}" if origin == "SAME" else origin
    answer, _, _ = client.call("POST", f"/api/requests/{original}/replay", {}, headers)
    assert answer == status
    assert len(app.requests) == arrived + (status == 201)


# --- Binding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("4040", ("127.0.0.1", 4040)),
        ("127.0.0.1:4040", ("127.0.0.1", 4040)),
        ("127.1.2.3:0", ("127.1.2.3", 0)),
        ("localhost:8080", ("127.0.0.1", 8080)),
        ("[::1]:4040", ("::1", 4040)),
    ],
)
def test_loopback_addresses_are_accepted(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("0.0.0.0:4040", "loopback only"),
        ("192.168.1.10:4040", "loopback only"),
        ("[::]:4040", "loopback only"),
        ("example.com:4040", "loopback only"),
        (":4040", "loopback only"),
        ("127.0.0.1:70000", "port must be a number from 0 to 65535"),
        ("127.0.0.1:http", "port must be a number"),
    ],
)
def test_other_addresses_are_refused_with_a_clear_error(
    forwarder: Forwarder, address: str, message: str
) -> None:
    with pytest.raises(InspectorError, match=message):
        parse_address(address)
    with Inspector(forwarder, dict) as refused, pytest.raises(InspectorError, match=message):
        refused.start(address)
    assert refused.url is None


def test_a_taken_port_moves_to_the_next_free_one(forwarder: Forwarder) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with Inspector(forwarder, dict) as moved:
            url = moved.start(f"127.0.0.1:{port}")
            bound = int(url.rstrip("/").rsplit(":", 1)[1])
            assert moved.moved and port < bound < port + inspector_server.PORT_TRIES
            assert Client(moved).get("/api/status")[1]["inspector"]["moved"] is True


def test_no_free_port_nearby_is_a_clear_error(
    forwarder: Forwarder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inspector_server, "PORT_TRIES", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            Inspector(forwarder, dict) as blocked,
            pytest.raises(NoFreePort, match=f"ports {port}-{port} on 127.0.0.1 all taken"),
        ):
            blocked.start(f"127.0.0.1:{port}")


def test_port_zero_takes_any_free_port_without_saying_it_moved(inspector: Inspector) -> None:
    assert inspector.url is not None and inspector.url.startswith("http://127.0.0.1:")
    assert inspector.moved is False


# --- Live events ------------------------------------------------------------------------------


class EventStream:
    """One ``GET /api/events`` connection on a raw socket, read line by line (reads time out)."""

    def __init__(self, client: Client) -> None:
        self.sock = socket.create_connection(("127.0.0.1", client.port), READ_TIMEOUT_SECONDS)
        self.sock.sendall(
            f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{client.port}\r\n\r\n".encode()
        )
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers: dict[str, str] = {}
        while line := self.file.readline().decode().strip():
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()

    def readline(self) -> bytes:
        return self.file.readline()

    def next_event(self) -> tuple[str, str]:
        """The next (event, data) pair, skipping retry and heartbeat lines."""
        fields: dict[str, str] = {}
        while line := self.readline().decode():
            line = line.rstrip("\n")
            if not line and "event" in fields:
                return fields["event"], fields["data"]
            name, _, value = line.partition(": ")
            fields[name] = value
        raise AssertionError("the event stream ended")

    def close(self) -> None:
        self.file.close()
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def test_events_push_each_new_exchange(
    inspector: Inspector, forwarder: Forwarder, client: Client
) -> None:
    stream = EventStream(client)
    try:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.readline() == b"retry: 1000\n"
        exchange_id = serve(inspector, forwarder, "GET", "/echo/live")
        event, data = stream.next_event()
        assert event == "request"
        row = json.loads(data)
        assert (row["id"], row["path"], row["status"]) == (exchange_id, "/echo/live", 200)
    finally:
        stream.close()


def test_idle_streams_get_heartbeats_and_dead_clients_are_dropped(
    inspector: Inspector, client: Client
) -> None:
    stream = EventStream(client)
    assert stream.readline() == b"retry: 1000\n"
    assert stream.readline() == b"\n"
    assert stream.readline() == b": heartbeat\n"
    assert inspector.capture.subscriber_count == 1
    stream.close()
    # The next heartbeats fail to write, and the server lets the subscription go.
    assert wait_until(lambda: inspector.capture.subscriber_count == 0)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (for state with no signal)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_event_streams_are_limited(client: Client) -> None:
    streams = [EventStream(client) for _ in range(MAX_EVENT_CLIENTS)]
    try:
        assert all(s.status == 200 for s in streams)
        status, data = client.get("/api/events")
        assert status == 503 and "at most" in data["error"]
    finally:
        for stream in streams:
            stream.close()


def test_closing_the_inspector_ends_streams_and_stops_listening(
    forwarder: Forwarder,
) -> None:
    inspector = Inspector(forwarder, dict)
    inspector.start("127.0.0.1:0")
    client = Client(inspector)
    stream = EventStream(client)
    assert stream.readline() == b"retry: 1000\n"
    inspector.close()
    assert stream.file.read() == b"\n"  # the stream ended: its last blank line, then EOF
    with pytest.raises(ConnectionRefusedError):
        client.get("/api/status")
