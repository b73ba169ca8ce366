"""The pairs ``bench/floor.py`` measures relay what they are given: a floor that answered
wrongly (or not through the relay's handlers) would be a figure of nothing. Each pair runs
as the bench runs it, as processes on loopback ports, in front of the bench's origin."""

from __future__ import annotations

import http.client
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import floor
from children import Child, free_port

BENCH = Path(floor.__file__).resolve().parent
REQUEST_SECONDS = 10.0


@pytest.fixture(scope="module")
def origin_port() -> Iterator[int]:
    port = free_port()
    origin = Child([sys.executable, str(BENCH / "origin.py"), str(port)])
    try:
        origin.wait_for("origin ready")
        yield port
    finally:
        origin.kill()


@pytest.fixture(params=list(floor.PAIRS), scope="module")
def relay_port(
    request: pytest.FixtureRequest, origin_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    state = tmp_path_factory.mktemp("pair")
    children, port = floor.start_pair(floor.PAIRS[request.param], origin_port, state)
    try:
        yield port
    finally:
        for child in reversed(children):
            child.kill()


def ask(port: int, method: str, path: str, body: bytes = b"", name: str = "bench"):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_SECONDS)
    try:
        headers = {"Host": f"{name}.localhost:{port}"}
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_a_get_comes_back_whole(relay_port: int) -> None:
    status, _, body = ask(relay_port, "GET", "/bytes/1024")
    assert (status, len(body)) == (200, 1024)


def test_a_post_body_reaches_the_origin_and_comes_back(relay_port: int) -> None:
    sent = bytes(range(256)) * 8
    status, _, body = ask(relay_port, "POST", "/echo", sent)
    assert (status, body) == (200, sent)


def test_the_body_columns_bodies_come_back_whole_through_their_pairs(
    origin_port: int, tmp_path: Path
) -> None:
    """The pairs measured on the body columns carry those columns' bodies: a 1 MB GET, and a
    100 KB POST of random bytes echoed."""
    sent = random.Random(7).randbytes(floor.run.POST_BYTES)
    for name in floor.BODY_PAIRS:
        state = tmp_path / name
        state.mkdir()
        children, port = floor.start_pair(floor.PAIRS[name], origin_port, state)
        try:
            status, _, body = ask(port, "GET", f"/bytes/{floor.run.LARGE_BYTES}")
            assert (status, len(body)) == (200, floor.run.LARGE_BYTES), name
            status, _, body = ask(port, "POST", "/echo", sent)
            assert (status, body) == (200, sent), name
        finally:
            for child in reversed(children):
                child.kill()


def test_the_body_columns_are_measured_on_the_floor_hatchway_and_the_peer() -> None:
    assert set(floor.BODY_PAIRS) <= set(floor.PAIRS)
    assert [column.path for column in floor.BODIES.values()] == [
        f"/bytes/{floor.run.LARGE_BYTES}",
        "/echo",
    ]


def test_requests_on_one_kept_connection_are_answered_in_turn(relay_port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", relay_port, timeout=REQUEST_SECONDS)
    try:
        sizes = [16, 1024, 300]
        got = []
        for size in sizes:
            connection.request("GET", f"/bytes/{size}", headers={"Host": "bench.localhost"})
            got.append(len(connection.getresponse().read()))
        assert got == sizes
    finally:
        connection.close()


def test_the_handlers_pair_answers_through_the_relays_own_handlers(
    origin_port: int, tmp_path: Path
) -> None:
    """Only the relay's routing knows no tunnel is called ``nobody``: its coded 404 shows the
    real handlers ran (the bare pair forwards whatever comes)."""
    pair = floor.PAIRS["with handlers"]
    children, relay_port = floor.start_pair(pair, origin_port, tmp_path)
    try:
        status, headers, _ = ask(relay_port, "GET", "/bytes/16", name="nobody")
        assert status == 404
        assert headers.get("x-hatchway-error") == "tunnel-not-found"
    finally:
        for child in reversed(children):
            child.kill()


def test_the_handlers_cpu_is_timed_on_requests_the_handlers_answered(origin_port: int) -> None:
    """Every timed request went through both handlers and came back with the origin's body
    (``handler_cpu`` stops at the first that did not), and each side took some time."""
    cpu = floor.handler_cpu(origin_port, requests=50)
    assert cpu.relay > 0 and cpu.agent > 0


def test_the_handlers_cpu_stops_at_an_answer_that_is_not_the_origins(
    origin_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent that serves another tunnel than the one asked for gets no request: the
    relay's coded 404 is not timed as an answer."""
    hello = floor._hello()
    monkeypatch.setattr(floor, "_hello", lambda: hello.replace('"bench"', '"other"'))
    with pytest.raises(RuntimeError, match=r"the handlers answered b'HTTP/1\.1 404"):
        floor.handler_cpu(origin_port, requests=5)
