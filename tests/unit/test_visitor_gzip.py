"""Responses reach visitors gzip-encoded when they accept it and the app's choices allow it."""

from __future__ import annotations

import gzip
import zlib

import pytest

from hatchway import protocol
from hatchway_relay.visitor_gzip import accepts_gzip, for_visitor, gzip_from_zlib

BODY = b'{"items": [' + b'{"id": 1, "name": "widget"}, ' * 200 + b"]}"
STREAM = zlib.compress(BODY, 6)
JSON = (("content-type", "application/json"),)


@pytest.mark.parametrize(
    ("accept_encoding", "accepted"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("gzip, deflate, br, zstd", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),  # named with weight 0: refused, whatever * says
        ("gzip; q=0.001", True),
        ("gzip;q=nonsense", False),
        ("*", True),
        ("*;q=0", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzipped", False),
    ],
)
def test_accept_encoding_is_read_as_rfc_9110_says(
    accept_encoding: str | None, accepted: bool
) -> None:
    assert accepts_gzip(accept_encoding) is accepted


@pytest.mark.parametrize("body", [b"", b"a", BODY, bytes(range(256)) * 40])
def test_the_rewrapped_stream_is_a_gzip_member_holding_the_body(body: bytes) -> None:
    assert gzip.decompress(gzip_from_zlib(zlib.compress(body), body)) == body


def visit(
    headers: protocol.Headers = JSON,
    *,
    accept: str | None = "gzip, deflate",
    method: str = "GET",
    status: int = 200,
    enabled: bool = True,
    stream: bytes | None = STREAM,
) -> tuple[protocol.Headers, bytes]:
    return for_visitor(
        enabled=enabled,
        method=method,
        accept_encoding=accept,
        status=status,
        headers=headers,
        body=BODY,
        zlib_stream=stream,
    )


def test_a_compressible_response_reaches_a_visitor_that_accepts_gzip_gzipped() -> None:
    headers, body = visit((*JSON, ("etag", '"v1"'), ("content-length", str(len(BODY)))))
    assert gzip.decompress(body) == BODY and len(body) < len(BODY) // 4
    assert headers == (
        *JSON,
        ("etag", 'W/"v1"'),  # the bytes are no longer the app's: a strong ETag would lie
        ("vary", "Accept-Encoding"),
        ("content-encoding", "gzip"),
    )


@pytest.mark.parametrize(
    ("why", "kwargs", "headers"),
    [
        ("the tunnel said --no-gzip", {"enabled": False}, JSON),
        ("the agent did not compress it", {"stream": None}, JSON),
        ("a HEAD has no body", {"method": "HEAD"}, JSON),
        ("the app encoded it", {}, (*JSON, ("Content-Encoding", "br"))),
        ("the app said no-transform", {}, (*JSON, ("cache-control", "public, No-Transform"))),
        ("a range of the app's bytes", {"status": 206}, (*JSON, ("content-range", "0-9/99"))),
        ("not modified", {"status": 304}, JSON),
        ("an interim answer", {"status": 101}, JSON),
    ],
)
def test_the_apps_own_bytes_pass_untouched_when(
    why: str, kwargs: dict[str, object], headers: protocol.Headers
) -> None:
    assert visit(headers, **kwargs) == (headers, BODY)  # type: ignore[arg-type]


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0"])
def test_a_visitor_refusing_gzip_gets_the_body_as_is_with_vary(accept: str | None) -> None:
    assert visit(accept=accept) == ((*JSON, ("vary", "Accept-Encoding")), BODY)


@pytest.mark.parametrize(
    ("vary", "sent"),
    [
        ((("Vary", "Origin"),), (("Vary", "Origin, Accept-Encoding"),)),
        ((("vary", "accept-encoding"),), (("vary", "accept-encoding"),)),
        ((("vary", "*"),), (("vary", "*"),)),
        ((("vary", "Origin"), ("vary", "Accept-Encoding")), None),
        ((("vary", ""),), (("vary", "Accept-Encoding"),)),
    ],
)
def test_vary_names_accept_encoding_once(
    vary: protocol.Headers, sent: protocol.Headers | None
) -> None:
    headers, _ = visit(vary, accept=None)
    assert headers == (vary if sent is None else sent)


def test_a_body_gzip_cannot_shrink_passes_as_it_is() -> None:
    body = b"ab"
    stream = zlib.compress(body)
    headers, sent = for_visitor(
        enabled=True,
        method="GET",
        accept_encoding="gzip",
        status=200,
        headers=(),
        body=body,
        zlib_stream=stream,
    )
    assert sent == body and ("content-encoding", "gzip") not in headers
