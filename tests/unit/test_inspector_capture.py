"""The inspector's capture and views, without sockets: the last N exchanges with capped bodies,
faults named by side, bounded live subscriptions, bodies rendered by kind, list filters, and
memory that stays bounded however many requests pass."""

from __future__ import annotations

import base64
import gc
import json
import threading
import tracemalloc
from typing import Any

import pytest

from hatchway import protocol
from hatchway.serving.forward import Forwarder, Target
from hatchway.ui.inspector import Inspector
from hatchway.ui.inspector.capture import (
    ENTRY_OVERHEAD_BYTES as CAPTURE_ENTRY_OVERHEAD_BYTES,
)
from hatchway.ui.inspector.capture import (
    HEADER_OVERHEAD_BYTES,
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    MAX_TOTAL_BYTES,
    Body,
    Capture,
    Exchange,
    SubscriptionEnded,
    footprint,
)
from hatchway.ui.inspector.views import HEX_PREVIEW_BYTES, Filters, body_view, detail, summary

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def request(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: protocol.Headers = (),
    body: bytes = b"",
    rid: str = "r1",
) -> protocol.Request:
    return protocol.Request(rid, "demo", method, path, query, headers, body)


def response(
    status: int = 200,
    headers: protocol.Headers = (),
    body: bytes = b"",
    fault: protocol.Fault | None = None,
) -> protocol.Response:
    return protocol.Response("r1", status, headers, body, fault)


def add(capture: Capture, method: str = "GET", target: str = "/", status: int = 200) -> Exchange:
    path, _, query = target.partition("?")
    return capture.add(request(method, path, query), response(status), 1.0)


def test_defaults_are_named_limits() -> None:
    capture = Capture()
    assert (capture.max_requests, capture.max_body_bytes) == (MAX_REQUESTS, MAX_BODY_BYTES)
    assert (MAX_REQUESTS, MAX_BODY_BYTES) == (200, 32 * 1024)
    assert capture.max_total_bytes == MAX_TOTAL_BYTES == 1024 * 1024


def test_the_total_byte_cap_forgets_the_oldest_exchanges() -> None:
    """Ten 100 KB exchanges with room for about three: only the newest stay, and what they
    hold is counted exactly as they are forgotten."""
    capture = Capture(max_body_bytes=64 * 1024, max_total_bytes=350_000)
    for i in range(10):
        body = bytes([i]) * 50_000
        capture.add(request("POST", f"/{i}", body=body), response(body=body), 1.0)
    kept = capture.newest_first()
    assert [e.target for e in kept] == ["/9", "/8", "/7"]
    assert capture.kept_bytes == sum(footprint(e) for e in kept) <= 350_000
    assert capture.recorded == 10


def test_an_exchange_above_the_byte_cap_alone_is_still_kept() -> None:
    capture = Capture(max_total_bytes=10)
    add(capture, target="/old")
    capture.add(request("POST", "/big", body=b"x" * 100), response(), 1.0)
    assert [e.target for e in capture.newest_first()] == ["/big"]


@pytest.mark.parametrize(("keep", "recorded"), [(1, 1), (1, 5), (3, 2), (3, 7)])
def test_keeps_the_newest_n_with_monotonic_ids(keep: int, recorded: int) -> None:
    capture = Capture(max_requests=keep)
    ids = [add(capture, target=f"/{i}").id for i in range(recorded)]
    assert ids == list(range(1, recorded + 1))
    kept = capture.newest_first()
    assert [e.id for e in kept] == ids[::-1][:keep]
    assert [e.target for e in kept] == [f"/{i}" for i in range(recorded)][::-1][:keep]
    assert capture.get(ids[0]) is (kept[-1] if recorded <= keep else None)
    assert (len(capture), capture.recorded) == (min(keep, recorded), recorded)


@pytest.mark.parametrize(
    ("size", "cap", "stored", "truncated"),
    [(0, 4, 0, False), (4, 4, 4, False), (5, 4, 4, True), (1000, 0, 0, True)],
)
def test_bodies_are_capped_with_the_real_size_kept(
    size: int, cap: int, stored: int, truncated: bool
) -> None:
    capture = Capture(max_body_bytes=cap)
    data = bytes(range(256)) * 4
    exchange = capture.add(request("POST", body=data[:size]), response(body=data[:size]), 2.0)
    for body in (exchange.request_body, exchange.response_body):
        assert (body.size, len(body.data), body.truncated) == (size, stored, truncated)
        assert body.data == data[:stored]


def test_an_exchange_keeps_what_the_inspector_shows() -> None:
    capture = Capture(clock=lambda: 1_700_000_000.5)
    headers = (("Accept", "*/*"), ("X-Multi", "a"), ("X-Multi", "b"))
    exchange = capture.add(
        request("PUT", "/items/1", "a=1&a=2", headers, b"in"),
        response(201, (("Content-Type", "text/plain"),), b"out"),
        elapsed_ms=500.0,
    )
    assert (exchange.method, exchange.target, exchange.tunnel) == (
        "PUT",
        "/items/1?a=1&a=2",
        "demo",
    )
    assert exchange.request_headers == headers  # order and repeats kept
    assert (exchange.status, exchange.response_body.data) == (201, b"out")
    assert exchange.started_at == 1_700_000_000.0  # when the request arrived, not when it ended
    row = summary(exchange)
    assert row["time"] == "2023-11-14T22:13:20.000Z"
    assert (row["duration_ms"], row["size"], row["request_size"]) == (500.0, 3, 2)
    assert (row["fault"], row["replay_of"]) == (None, None)


@pytest.mark.parametrize(
    ("answer", "side", "message"),
    [
        (response(200, body=b"fine"), None, None),
        (
            response(502, fault=protocol.Fault("local app", "connection refused by :3000")),
            "local app",
            "connection refused by :3000",
        ),
        (response(502, fault=protocol.Fault("agent", "bug")), "agent", "bug"),
        (
            response(
                400,
                (("x-hatchway-error", "agent-refused"),),
                b"Refused by the hatchway agent: absolute URLs are refused.\n",
            ),
            "agent",
            "Refused by the hatchway agent: absolute URLs are refused.",
        ),
    ],
)
def test_faults_name_the_side_that_failed(
    answer: protocol.Response, side: str | None, message: str | None
) -> None:
    capture = Capture()
    exchange = capture.add(request(), answer, 1.0)
    fault = summary(exchange)["fault"]
    assert (fault and fault["side"], fault and fault["message"]) == (side, message)
    assert capture.faults == (side is not None)


def test_replays_are_marked_and_counted() -> None:
    capture = Capture()
    original = add(capture)
    replay = capture.add(request(), response(), 1.0, replay_of=original.id)
    assert (summary(replay)["replay_of"], capture.replays, capture.recorded) == (1, 1, 2)


# --- Live subscriptions -----------------------------------------------------------------------


def test_a_subscription_delivers_new_exchanges_in_order() -> None:
    capture = Capture()
    subscription = capture.subscribe()
    added = [add(capture, target=f"/{i}") for i in range(3)]
    assert [subscription.next(1) for _ in added] == added
    assert subscription.next(0.01) is None  # nothing new: the reader gets a heartbeat chance


def test_a_subscriber_gets_only_exchanges_still_kept() -> None:
    capture = Capture(max_requests=2)
    subscription = capture.subscribe()
    added = [add(capture, target=f"/{i}") for i in range(3)]
    assert [subscription.next(1), subscription.next(0.01)] == [added[1], added[2]]
    assert subscription.next(0.01) is None


def test_a_subscriber_that_falls_behind_is_ended_not_buffered() -> None:
    capture = Capture()
    subscription = capture.subscribe(max_pending=3)
    for i in range(4):
        add(capture, target=f"/{i}")
    with pytest.raises(SubscriptionEnded, match="fell more than 3 entries behind"):
        subscription.next(1)
    assert capture.subscriber_count == 0


def test_closing_the_capture_wakes_waiting_readers() -> None:
    capture = Capture()
    subscription = capture.subscribe()
    ended = threading.Event()

    def read() -> None:
        try:
            subscription.next(60)
        except SubscriptionEnded:
            ended.set()

    reader = threading.Thread(target=read)
    reader.start()
    capture.close()
    assert ended.wait(5)
    reader.join(5)
    assert capture.subscriber_count == 0


# --- Bodies as the page shows them ------------------------------------------------------------


def view(data: bytes, content_type: str | None = None, size: int | None = None) -> dict[str, Any]:
    headers = (("Content-Type", content_type),) if content_type else ()
    return body_view(Body(data, len(data) if size is None else size), headers)


@pytest.mark.parametrize(
    ("data", "content_type", "size", "expected"),
    [
        (b"", None, None, {"kind": "empty"}),
        (
            b'{"b":[1,2],"a":"\xc3\xa9"}',
            "application/json",
            None,
            {"kind": "json", "pretty": '{\n  "b": [\n    1,\n    2\n  ],\n  "a": "é"\n}'},
        ),
        (b'{"ok":true}', "application/problem+json", None, {"kind": "json"}),
        (b'{"cut', "application/json", 100, {"kind": "text", "text": '{"cut'}),
        (b"not json", "application/json", None, {"kind": "text", "text": "not json"}),
        (b"caf\xe9", "text/plain; charset=latin-1", None, {"kind": "text", "text": "café"}),
        (b"caf\xc3\xa9", None, None, {"kind": "text", "text": "café"}),
        (b"caf\xc3", "text/plain", 9, {"kind": "text", "text": "caf"}),  # cut mid-character
        (b"a=1&b=2", "application/x-www-form-urlencoded", None, {"kind": "text"}),
        (b"<svg onload='x()'/>", "image/svg+xml", None, {"kind": "text"}),
        (PNG, "image/png", None, {"kind": "image"}),
        (PNG, "image/png", len(PNG) + 1, {"kind": "binary"}),  # half an image is not shown
        (b"a\x00b", None, None, {"kind": "binary", "hex": "610062"}),
        (b"\xff\xfe", None, None, {"kind": "binary", "hex": "fffe"}),
        (b"plain", "application/octet-stream", None, {"kind": "binary", "hex": b"plain".hex()}),
    ],
)
def test_bodies_are_rendered_by_kind(
    data: bytes, content_type: str | None, size: int | None, expected: dict[str, Any]
) -> None:
    shown = view(data, content_type, size)
    assert {key: shown.get(key) for key in expected} == expected
    assert (shown["size"], shown["stored"]) == (len(data) if size is None else size, len(data))
    assert shown["truncated"] == (size is not None and size > len(data))
    assert shown["content_type"] == content_type


def test_an_image_is_a_data_uri_of_its_bytes() -> None:
    uri = view(PNG, "image/png")["data_uri"]
    assert uri == "data:image/png;base64," + base64.b64encode(PNG).decode()


def test_binary_shows_a_bounded_hex_preview() -> None:
    data = bytes(range(256)) * 8
    shown = view(data, "application/octet-stream")
    assert shown["hex"] == data[:HEX_PREVIEW_BYTES].hex()
    assert shown["size"] == len(data)


def test_detail_holds_both_messages() -> None:
    capture = Capture()
    exchange = capture.add(
        request("POST", "/j", headers=(("Content-Type", "application/json"),), body=b"[1]"),
        response(200, (("Content-Type", "text/plain"),), b"ok"),
        3.0,
    )
    shown = json.loads(json.dumps(detail(exchange)))  # all of it is JSON
    assert shown["request"]["headers"] == [["Content-Type", "application/json"]]
    assert shown["request"]["body"]["kind"] == "json"
    assert shown["response"]["body"]["text"] == "ok"


# --- Filters ----------------------------------------------------------------------------------


@pytest.fixture
def listed() -> Capture:
    capture = Capture()
    for method, target, status in [
        ("GET", "/api/users", 200),
        ("POST", "/api/users", 201),
        ("GET", "/Static/app.js", 304),
        ("GET", "/missing", 404),
        ("DELETE", "/api/users/1", 403),
        ("GET", "/boom?next=/API", 500),
    ]:
        add(capture, method, target, status)
    return capture


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        ({}, [6, 5, 4, 3, 2, 1]),
        ({"path": ["/api"]}, [6, 5, 2, 1]),  # substring of path and query, any case
        ({"path": ["static"]}, [3]),
        ({"method": ["get"]}, [6, 4, 3, 1]),
        ({"status": ["404"]}, [4]),
        ({"status": ["4xx"]}, [5, 4]),
        ({"status": ["4XX"]}, [5, 4]),
        ({"status": ["2xx"], "method": ["POST"]}, [2]),
        ({"path": ["/api/users"], "status": ["5xx"]}, []),
        ({"path": [""], "method": [""], "status": [""]}, [6, 5, 4, 3, 2, 1]),
    ],
)
def test_filters_select_by_path_method_and_status(
    listed: Capture, query: dict[str, list[str]], ids: list[int]
) -> None:
    filters = Filters.from_query(query)
    assert [e.id for e in listed.newest_first() if filters.matches(e)] == ids


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"status": ["40"]}, "status filter '40'"),
        ({"status": ["6xx"]}, "such as 404"),
        ({"status": ["4x"]}, "or a class such as 4xx"),
        ({"limit": ["5"]}, "unknown filter 'limit'"),
    ],
)
def test_bad_filters_say_what_to_give(query: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Filters.from_query(query)


# --- Memory -----------------------------------------------------------------------------------

BODY_BYTES = 32 * 1024
"""Each exchange's request and response body: four times the capture's cap below."""
CAP_BYTES = 8 * 1024
ENTRY_OVERHEAD_BYTES = 4 * 1024
"""Generous room per entry for the objects around the bodies (dataclasses, heads, dict slot)."""


def test_memory_stays_bounded_after_10000_exchanges() -> None:
    forwarder = Forwarder(Target("127.0.0.1", 9))  # never used: nothing is replayed
    # Room for every entry: this is the entry bound and the body cap at work, not the byte cap.
    room = MAX_REQUESTS * (2 * CAP_BYTES + ENTRY_OVERHEAD_BYTES)
    inspector = Inspector(
        forwarder, dict, max_requests=MAX_REQUESTS, max_body_bytes=CAP_BYTES, max_total_bytes=room
    )
    headers = (("Content-Type", "application/octet-stream"), ("X-Trace", "t" * 200))

    def serve(count: int, start: int) -> None:
        for i in range(start, start + count):
            body = bytes([i % 256]) * BODY_BYTES  # a fresh body each time, as from the wire
            inspector.record(
                request("POST", f"/upload/{i}", "", headers, body, rid=f"r{i}"),
                protocol.Response(f"r{i}", 200, headers, body),
                1.0,
            )

    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        serve(2_000, 0)
        gc.collect()
        after_2000 = tracemalloc.get_traced_memory()[0] - baseline
        serve(8_000, 2_000)
        gc.collect()
        after_10000 = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()

    # Without the entry bound this would be 50 times larger; without the body cap, 4 times.
    assert after_10000 <= MAX_REQUESTS * (2 * CAP_BYTES + ENTRY_OVERHEAD_BYTES)
    assert after_10000 - after_2000 <= 64 * 1024  # and it no longer grows
    assert (len(inspector.capture), inspector.capture.recorded) == (MAX_REQUESTS, 10_000)


# --- The default caps at and beyond their edges ---------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [0, 1, MAX_BODY_BYTES - 1, MAX_BODY_BYTES, MAX_BODY_BYTES + 1, 1024 * 1024, 4 * 1024 * 1024],
)
def test_a_body_keeps_at_most_the_default_prefix(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    body = Body.capped(data[:size], MAX_BODY_BYTES)
    assert len(body.data) == min(size, MAX_BODY_BYTES) <= MAX_BODY_BYTES
    assert (body.size, body.truncated) == (size, size > MAX_BODY_BYTES)
    assert body.data == data[: min(size, MAX_BODY_BYTES)]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
@pytest.mark.parametrize("size", [10, 100])
def test_a_body_that_is_a_view_is_copied_not_kept(kind: Any, size: int) -> None:
    """A view into a larger buffer would keep all of it alive: only the prefix is copied."""
    buffer = bytearray(b"x" * 100)
    body = Body.capped(kind(buffer)[:size], 50)
    assert type(body.data) is bytes
    assert (len(body.data), body.size) == (min(size, 50), size)
    buffer[0:1] = b"y"
    assert body.data[:1] == b"x"


def test_a_whole_bytes_body_is_kept_without_a_copy() -> None:
    data = b"abc" * 100
    assert Body.capped(data, MAX_BODY_BYTES).data is data


@pytest.mark.parametrize(
    ("body_sizes", "max_total"),
    [
        (
            [0] * 50,
            20 * CAPTURE_ENTRY_OVERHEAD_BYTES,
        ),  # a flood of tiny requests: their objects count
        ([MAX_BODY_BYTES] * 40, MAX_TOTAL_BYTES),  # exactly at the body cap, the default total
        ([4 * 1024 * 1024] * 40, MAX_TOTAL_BYTES),  # far beyond the body cap
        ([100, 200_000, 5, 70_000, 0, 1_000_000] * 10, 300_000),  # mixed, a small total
    ],
)
def test_what_is_kept_stays_under_the_total_cap(body_sizes: list[int], max_total: int) -> None:
    capture = Capture(max_total_bytes=max_total)
    headers = (("Content-Type", "application/octet-stream"), ("X-Trace", "t" * 100))
    for i, size in enumerate(body_sizes):
        body = bytes([i % 256]) * size
        capture.add(
            request("POST", f"/{i}", headers=headers, body=body), response(200, headers, body), 1.0
        )
        kept = capture.newest_first()
        assert capture.kept_bytes == sum(footprint(e) for e in kept)
        assert capture.kept_bytes <= max_total or len(kept) == 1
        # The oldest go first: what is kept is always the newest, without gaps.
        assert [e.target for e in kept] == [f"/{j}" for j in range(i, i - len(kept), -1)]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), CAPTURE_ENTRY_OVERHEAD_BYTES + 1),
        ((("A", "b"),), CAPTURE_ENTRY_OVERHEAD_BYTES + 1 + 2 * (HEADER_OVERHEAD_BYTES + 2)),
    ],
)
def test_the_footprint_counts_the_objects_around_the_bytes(
    headers: protocol.Headers, expected: int
) -> None:
    """One header on the request and the same on the response; the target is "/"."""
    capture = Capture()
    exchange = capture.add(request(headers=headers), response(headers=headers), 1.0)
    assert footprint(exchange) == expected


@pytest.mark.parametrize(
    ("size", "kind", "stored", "truncated"),
    [
        (MAX_BODY_BYTES, "text", MAX_BODY_BYTES, False),
        (MAX_BODY_BYTES + 1, "text", MAX_BODY_BYTES, True),
        (1024 * 1024, "text", MAX_BODY_BYTES, True),
    ],
)
def test_what_was_cut_is_shown_as_cut(size: int, kind: str, stored: int, truncated: bool) -> None:
    capture = Capture()
    text = b"a" * size
    plain = (("Content-Type", "text/plain"),)
    exchange = capture.add(request(), response(200, plain, text), 1.0)
    view = detail(exchange)["response"]["body"]
    assert (view["kind"], view["size"], view["stored"], view["truncated"]) == (
        kind,
        size,
        stored,
        truncated,
    )
    assert summary(exchange)["size"] == size
