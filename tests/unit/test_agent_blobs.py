"""The agent's blob transfers against a scripted HTTP server on loopback: presigned URLs used as
given, only Host and Content-Length on a PUT, bodies above the limit refused, and every failure a
BlobError that names the relay's blob store."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hatchway.transport import blobs
from hatchway.transport.blobs import BlobError
from support.blob_server import Scripted, scripted_server


@pytest.fixture
def server() -> Iterator[Scripted]:
    with scripted_server() as scripted:
        yield scripted


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


def test_fetch_gets_the_presigned_url_exactly(server: Scripted) -> None:
    server.reply = ok(b"the body")
    target = "/bucket/k%2Fey?X-Amz-Signature=a%2Bb&X-Amz-Expires=60"
    assert blobs.fetch(server.url + target, max_bytes=100) == b"the body"
    assert server.received[0].startswith(f"GET {target} HTTP/1.1\r\n".encode())


def test_upload_sends_only_host_and_content_length(server: Scripted) -> None:
    body = bytes(range(256)) * 40
    blobs.upload(server.url + "/bucket/key?sig=x", body)
    head, _, sent = server.received[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"PUT /bucket/key?sig=x HTTP/1.1"
    assert sorted(line.split(b":")[0].lower() for line in lines[1:]) == [b"content-length", b"host"]
    assert sent == body


def test_a_body_above_the_limit_is_refused_from_its_content_length(server: Scripted) -> None:
    server.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n"  # and never sent
    with pytest.raises(BlobError, match="offered a body of 1000000 bytes; at most 10"):
        blobs.fetch(server.url + "/k", max_bytes=10, timeout=5)


def test_a_body_above_the_limit_without_a_length_is_refused_by_a_bounded_read(
    server: Scripted,
) -> None:
    server.reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 100
    with pytest.raises(BlobError, match="more than 10 bytes"):
        blobs.fetch(server.url + "/k", max_bytes=10)


def test_a_body_cut_short_is_an_error(server: Scripted) -> None:
    server.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly this"
    with pytest.raises(BlobError, match=r"mid-body \(it announced 50 bytes and sent 9\)"):
        blobs.fetch(server.url + "/k", max_bytes=100)


@pytest.mark.parametrize("method", ["fetch", "upload"])
def test_a_refusal_names_the_blob_store_and_quotes_it(server: Scripted, method: str) -> None:
    detail = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    server.reply = b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(detail) + detail
    with pytest.raises(BlobError, match=r"relay.s blob store answered .* HTTP 403.*expired"):
        if method == "fetch":
            blobs.fetch(server.url + "/k", max_bytes=100)
        else:
            blobs.upload(server.url + "/k", b"body")


def test_an_unreachable_blob_store_is_an_error_naming_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BlobError, match="relay's blob store failed: ConnectionRefusedError"):
        blobs.fetch(f"http://127.0.0.1:{port}/k", max_bytes=100)


@pytest.mark.parametrize("url", ["ftp://host/k", "http:///nohost", "http://host:99999/k"])
def test_urls_that_are_not_http_urls_are_refused(url: str) -> None:
    with pytest.raises(BlobError, match="blob URL"):
        blobs.fetch(url, max_bytes=1)
