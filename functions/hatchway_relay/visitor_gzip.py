"""Responses reach visitors gzip-compressed when they accept it, re-wrapped, never recompressed.

Traffic out of AWS is billed per byte, and a page travels faster compressed, so the relay sends
a compressible response gzip-encoded to a visitor whose ``Accept-Encoding`` takes gzip, as
Cloudflare's proxy does. It costs almost no CPU: the agent already packed the body as a zlib
stream (only when that saved at least an eighth; see ``packing.pack_raw``), and a zlib stream is a
raw deflate stream between a 2-byte header and an Adler-32 trailer, while gzip wraps the same
deflate stream in a 10-byte header and a CRC-32 and size trailer. The relay swaps the wrapping.

What the app chose is kept: nothing is compressed when the app already set a Content-Encoding,
asked caches and proxies not to transform (``Cache-Control: no-transform``), answered a range,
or when the tunnel was started with ``--no-gzip``. A response that could travel either way says
``Vary: Accept-Encoding`` both ways, so caches keep the two apart, and a strong ETag becomes weak
because the bytes are no longer the app's.
"""

from __future__ import annotations

import struct
import zlib

from hatchway import protocol

_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""Magic, deflate, no flags, no modification time, no extra flags, unknown OS (RFC 1952)."""

_ZLIB_HEADER_BYTES = 2
_ZLIB_TRAILER_BYTES = 4

_NO_BODY_STATUSES = frozenset({204, 206, 304})
"""No body to compress (204, 304), or a byte range of the app's representation (206)."""


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value (RFC 9110 §12.5.3) takes gzip: named (or as
    ``x-gzip``) with a non-zero weight, or not named while ``*`` has one."""
    if not accept_encoding:
        return False
    named: float | None = None
    wildcard: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        weight = _weight(params)
        if coding in ("gzip", "x-gzip"):
            named = weight if named is None else max(named, weight)
        elif coding == "*":
            wildcard = weight
    if named is not None:
        return named > 0
    return wildcard is not None and wildcard > 0


def _weight(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value.strip())))
            except ValueError:
                return 0.0  # a weight nobody can read is no consent
    return 1.0


def gzip_from_zlib(stream: bytes, body: bytes) -> bytes:
    """The gzip member holding ``body``, from the complete zlib stream that holds it."""
    deflate = stream[_ZLIB_HEADER_BYTES:-_ZLIB_TRAILER_BYTES]
    trailer = struct.pack("<II", zlib.crc32(body), len(body) & 0xFFFFFFFF)
    return _GZIP_HEADER + deflate + trailer


def for_visitor(
    *,
    enabled: bool,
    method: str,
    accept_encoding: str | None,
    status: int,
    headers: protocol.Headers,
    body: bytes,
    zlib_stream: bytes | None,
) -> tuple[protocol.Headers, bytes]:
    """The headers and body to send: gzip-encoded when everything above allows it, otherwise
    the app's own (with ``Vary: Accept-Encoding`` when gzip was only refused by the visitor)."""
    if not enabled or zlib_stream is None or method == "HEAD":
        return headers, body
    if not _transformable(status, headers):
        return headers, body
    varied = _vary_on_accept_encoding(headers)
    if not accepts_gzip(accept_encoding):
        return varied, body
    packed = gzip_from_zlib(zlib_stream, body)
    if len(packed) >= len(body):
        return varied, body
    out = tuple(
        (name, _weak(value) if name.lower() == "etag" else value)
        for name, value in varied
        if name.lower() != "content-length"
    )
    return (*out, ("content-encoding", "gzip")), packed


def _transformable(status: int, headers: protocol.Headers) -> bool:
    if status < 200 or status in _NO_BODY_STATUSES:
        return False
    for name, value in headers:
        key = name.lower()
        if key in ("content-encoding", "content-range"):
            return False
        if key == "cache-control" and any(
            directive.strip().lower() == "no-transform" for directive in value.split(",")
        ):
            return False
    return True


def _vary_on_accept_encoding(headers: protocol.Headers) -> protocol.Headers:
    varies = [v for n, v in headers if n.lower() == "vary"]
    fields = {field.strip().lower() for value in varies for field in value.split(",")}
    if "*" in fields or "accept-encoding" in fields:
        return headers
    if not varies:
        return (*headers, ("vary", "Accept-Encoding"))
    first = next(i for i, (name, _) in enumerate(headers) if name.lower() == "vary")
    name, value = headers[first]
    joined = f"{value}, Accept-Encoding" if value.strip() else "Accept-Encoding"
    return (*headers[:first], (name, joined), *headers[first + 1 :])


def _weak(etag: str) -> str:
    stripped = etag.strip()
    return stripped if stripped.startswith("W/") else f"W/{stripped}"
