"""The pairs ``bench/floor.py`` measures relay what they are given: a floor that answered
wrongly (or not through the relay's handlers) would be a figure of nothing. Each pair runs
as the bench runs it, as processes on loopback ports, in front of the bench's origin; the
peers among them are ``make bench``'s, started as it starts them."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import floor
import floor_roles
import localtunnel
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
def forward(
    request: pytest.FixtureRequest, origin_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[floor.run.Forward]:
    state = tmp_path_factory.mktemp("pair")
    started = floor.start_pair(floor.PAIRS[request.param], origin_port, state)
    try:
        yield started
    finally:
        for child in reversed(started.children):
            child.kill()


def connect(forward: floor.run.Forward) -> http.client.HTTPConnection:
    address = urlsplit(forward.base)
    assert address.hostname == "127.0.0.1" and address.port is not None
    return http.client.HTTPConnection("127.0.0.1", address.port, timeout=REQUEST_SECONDS)


def ask(
    forward: floor.run.Forward, method: str, path: str, body: bytes = b"", host: str = ""
) -> tuple[int, dict[str, str], bytes]:
    connection = connect(forward)
    try:
        name = host or forward.host
        connection.request(method, path, body=body or None, headers={"Host": name} if name else {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_a_pair_is_not_the_origin(forward: floor.run.Forward, origin_port: int) -> None:
    assert urlsplit(forward.base).port != origin_port


def test_a_get_comes_back_whole(forward: floor.run.Forward) -> None:
    status, _, body = ask(forward, "GET", "/bytes/1024")
    assert (status, len(body)) == (200, 1024)


def test_a_post_body_reaches_the_origin_and_comes_back(forward: floor.run.Forward) -> None:
    sent = bytes(range(256)) * 8
    status, _, body = ask(forward, "POST", "/echo", sent)
    assert (status, body) == (200, sent)


def test_the_body_columns_bodies_come_back_whole(forward: floor.run.Forward) -> None:
    """Every pair carries the body columns' bodies: a 1 MB GET, and a 100 KB POST of random
    bytes echoed (both too large for a message: the pairs with a blob path take it)."""
    sent = random.Random(7).randbytes(floor.run.POST_BYTES)
    status, _, body = ask(forward, "GET", f"/bytes/{floor.run.LARGE_BYTES}")
    assert (status, len(body)) == (200, floor.run.LARGE_BYTES)
    status, _, body = ask(forward, "POST", "/echo", sent)
    assert (status, body) == (200, sent)


def test_every_peer_of_make_bench_is_a_pair_and_one_pair_skips_the_small_columns() -> None:
    assert {pair.peer for pair in floor.PAIRS.values() if pair.peer} == set(floor.run.PEERS)
    assert [name for name, pair in floor.PAIRS.items() if not pair.small] == [
        "bare floor, blob path"
    ]
    assert [column.path for column in floor.BODIES.values()] == [
        f"/bytes/{floor.run.LARGE_BYTES}",
        "/echo",
    ]


@pytest.mark.parametrize(
    ("method", "path", "size", "passed"),
    [
        ("GET", "/bytes/1024", 0, "0"),
        ("POST", "/echo", 1024, "0"),
        ("GET", f"/bytes/{floor.run.LARGE_BYTES}", 0, "1"),  # the answer's body
        ("POST", "/echo", floor.run.POST_BYTES, "2"),  # the request's body, then the answer's
        ("POST", "/echo", 80 * 1024, "0"),  # as large as a message carries
        ("POST", "/echo", 80 * 1024 + 1, "2"),
    ],
)
def test_the_blob_path_floor_passes_bodies_too_large_for_a_message_by_its_blob_store(
    method: str, path: str, size: int, passed: str, origin_port: int, tmp_path: Path
) -> None:
    """Bodies above what a message carries inline go by way of the relay's blob store, each
    way, and come back whole; smaller ones stay in the messages."""
    from hatchway.protocol import MAX_INLINE_BODY_BYTES
    from hatchway_relay.adapters.memory_blobs import BLOB_PATH

    assert MAX_INLINE_BODY_BYTES == 80 * 1024  # the table's edges
    assert floor_roles.BLOB_PATH == BLOB_PATH
    started = floor.start_pair(floor.PAIRS["bare floor, blob path"], origin_port, tmp_path)
    try:
        sent = random.Random(size).randbytes(size)
        status, headers, body = ask(started, method, path, sent)
        expected = sent if method == "POST" else body
        assert (status, len(body), body) == (200, len(expected), expected)
        if method == "GET":
            assert len(body) == int(path.rsplit("/", 1)[1])
        assert headers[floor_roles.BLOBS_HEADER] == passed
    finally:
        for child in reversed(started.children):
            child.kill()


def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    """A server that closes each connection after one answer (as aiohttp closes an idle one)
    does not lose the floor's next request on it: it goes again on a fresh connection."""

    async def scenario() -> list[bytes]:
        served: list[int] = []

        async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            served.append(1)
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(once, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        kept = floor_roles.Kept(port)
        try:
            bodies = [(await kept.ask("GET / HTTP/1.1", [], b""))[2] for _ in range(3)]
        finally:
            server.close()
        assert len(served) == 3
        return bodies

    assert asyncio.run(scenario()) == [b"ok", b"ok", b"ok"]


def test_requests_on_one_kept_connection_are_answered_in_turn(
    forward: floor.run.Forward,
) -> None:
    connection = connect(forward)
    try:
        sizes = [16, 1024, 300]
        got = []
        headers = {"Host": forward.host} if forward.host else {}
        for size in sizes:
            connection.request("GET", f"/bytes/{size}", headers=headers)
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
    started = floor.start_pair(pair, origin_port, tmp_path)
    port = urlsplit(started.base).port
    try:
        status, headers, _ = ask(started, "GET", "/bytes/16", host=f"nobody.localhost:{port}")
        assert status == 404
        assert headers.get("x-hatchway-error") == "tunnel-not-found"
    finally:
        for child in reversed(started.children):
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
    hello = floor_roles.hello()
    monkeypatch.setattr(floor_roles, "hello", lambda: hello.replace('"bench"', '"other"'))
    with pytest.raises(RuntimeError, match=r"the handlers answered b'HTTP/1\.1 404"):
        floor.handler_cpu(origin_port, requests=5)


def _pin_another_version(lock: dict[str, Any]) -> None:
    lock["packages"]["node_modules/esm"]["version"] = "0.0.1"


def _pin_a_package_not_installed(lock: dict[str, Any]) -> None:
    lock["packages"]["node_modules/not-installed"] = {"version": "1.0.0"}


@pytest.mark.parametrize("change", [_pin_another_version, _pin_a_package_not_installed])
def test_the_peers_packages_are_reinstalled_when_the_lock_pins_others(
    change: Callable[[dict[str, Any]], None], tmp_path: Path
) -> None:
    """A lock changed since the last ``npm ci`` is noticed: every pinned package must be
    installed at its pinned version."""
    localtunnel.ensure_localtunnel()
    packages = localtunnel.PACKAGES
    lock = json.loads((packages / "package-lock.json").read_text())
    copy = tmp_path / "npm"
    copy.mkdir()
    (copy / "node_modules").symlink_to(packages / "node_modules")
    (copy / "package-lock.json").write_text(json.dumps(lock))
    assert localtunnel.installed_as_locked(copy)
    change(lock)
    (copy / "package-lock.json").write_text(json.dumps(lock))
    assert not localtunnel.installed_as_locked(copy)


def test_the_floor_agents_ping_to_keep_their_claims() -> None:
    """A floor run outlasts a claim's lease: its agents renew it with the real agent's pings,
    at the real agent's interval, well inside the lease."""
    from hatchway import protocol
    from hatchway.protocol import codec

    assert protocol.HEARTBEAT_SECONDS < protocol.CLAIM_LEASE_SECONDS / 2
    sent: list[object] = []

    async def three_pings() -> None:
        enough = asyncio.Event()

        async def send(text: str) -> None:
            sent.append(codec.decode(text))
            if len(sent) == 3:
                enough.set()

        pinging = asyncio.create_task(floor_roles.pings(send, every=0.01))
        try:
            await asyncio.wait_for(enough.wait(), timeout=REQUEST_SECONDS)
        finally:
            pinging.cancel()

    asyncio.run(three_pings())
    assert [type(message) for message in sent] == [protocol.Ping] * 3
