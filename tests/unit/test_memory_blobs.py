"""What only ``MemoryBlobStore`` promises: key rules, expiry on its own clock, and the local
gateway answering its URLs with S3's refusals (wrong method, too large, unknown)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from hatchway_local.gateway import Gateway
from hatchway_local.server import bind, serve_gateway
from hatchway_relay.adapters.memory_blobs import BLOB_TTL_SECONDS, InvalidKey, MemoryBlobStore
from support.fake_clock import FakeClock

MAX_BYTES = 1024


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def blobs(clock: FakeClock) -> Iterator[MemoryBlobStore]:
    sock = bind("127.0.0.1", 0)
    store = MemoryBlobStore(f"http://127.0.0.1:{sock.getsockname()[1]}", clock, MAX_BYTES)
    with serve_gateway(Gateway({"127.0.0.1"}, blobs=store), sock):
        yield store


def send(url: str, method: str, body: bytes | None = None, chunked: bool = False) -> int:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        target = f"{parts.path}?{parts.query}"
        if chunked:
            conn.request(method, target, body=iter([body or b""]), encode_chunked=True)
        else:
            conn.request(method, target, body=body)
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("key", ["", "a b", "a?b", "é", "x" * 1025, "a%2Fb", "a\n"])
def test_keys_outside_the_pattern_are_refused(key: str) -> None:
    store = MemoryBlobStore("http://x")
    with pytest.raises(InvalidKey):
        store.put(key, b"")
    with pytest.raises(InvalidKey):
        store.upload_url(key, 60)


def test_a_url_carries_its_key_as_it_is() -> None:
    url = MemoryBlobStore("http://x").upload_url("resp/A-b_c.9", 60)
    assert url.startswith("http://x/@blobs/resp/A-b_c.9?expires=")


def test_objects_expire_after_the_ttl_and_are_purged(clock: FakeClock) -> None:
    store = MemoryBlobStore("http://x", clock)
    store.put("old", b"1")
    clock.advance(BLOB_TTL_SECONDS)
    assert store.get("old", 10) is None
    store.put("new", b"2")  # a write purges what expired
    assert "old" not in store._objects
    assert store.get("new", 10) == b"2"


def test_the_store_holds_at_most_its_total_the_oldest_going_first() -> None:
    store = MemoryBlobStore("http://x", max_total_bytes=25)
    for key in ("a", "b", "c"):
        store.put(key, b"x" * 10)
    assert store.get("a", 100) is None  # 30 bytes would be over: the oldest went
    assert store.get("b", 100) == b"x" * 10 and store.get("c", 100) == b"x" * 10
    store.delete("b")
    store.put("d", b"y" * 10)  # room again: nothing else goes
    assert store.get("c", 100) and store.get("d", 100)


@pytest.mark.parametrize(
    ("make", "method", "body", "chunked", "status"),
    [
        ("upload", "PUT", b"x" * MAX_BYTES, False, 200),
        ("upload", "PUT", b"x" * (MAX_BYTES + 1), False, 413),
        ("upload", "PUT", b"x" * (MAX_BYTES + 1), True, 413),
        ("upload", "PUT", b"x" * 10, True, 200),
        ("download", "PUT", b"x", False, 403),  # a GET URL grants no PUT
        ("upload", "GET", None, False, 403),
        ("download", "DELETE", None, False, 405),
    ],
    ids=["at-limit", "over-limit", "over-limit-chunked", "chunked", "get-url", "put-url", "del"],
)
def test_the_gateway_answers_blob_urls_like_s3(
    blobs: MemoryBlobStore, make: str, method: str, body: bytes | None, chunked: bool, status: int
) -> None:
    url = (blobs.upload_url if make == "upload" else blobs.download_url)("k/1", 60)
    assert send(url, method, body, chunked) == status
    if make == "upload" and status == 200:
        assert blobs.get("k/1", MAX_BYTES) == body


def test_a_url_for_another_key_is_refused(blobs: MemoryBlobStore) -> None:
    blobs.put("k/2", b"mine")
    url = blobs.download_url("k/1", 60).replace("/k/1?", "/k/2?")
    assert send(url, "GET") == 403
