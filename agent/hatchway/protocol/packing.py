"""Bodies as messages carry them: packed (zlib-compressed when that saves at least an eighth),
base64 for the JSON text, and back, bounded so a small message never becomes a large body.
No I/O; ``codec`` puts them in messages and the stored form of an answer."""

from __future__ import annotations

import binascii
import zlib

from hatchway.protocol import b64
from hatchway.protocol.limits import MIN_COMPRESS_BYTES
from hatchway.protocol.messages import ProtocolError


def pack_body(body: bytes, compress: bool = True) -> tuple[str, str | None]:
    """``body`` as the text a message carries and its encoding (``"zlib"`` or None)."""
    packed, encoding = pack_raw(body, compress)
    return b64.encode(packed), encoding


def pack_raw(body: bytes, compress: bool) -> tuple[bytes, str | None]:
    """``body`` compressed when that makes it at least an eighth smaller (so incompressible
    bytes pay nothing), and its encoding (``"zlib"`` or None)."""
    if compress and len(body) >= MIN_COMPRESS_BYTES:
        packed = zlib.compress(body, 6)
        if len(packed) <= len(body) - len(body) // 8:
            return packed, "zlib"
    return body, None


def packed_size(text: str) -> int:
    """Bytes a packed body's text stands for (its base64 decoded length)."""
    return len(text) // 4 * 3 - text[-2:].count("=") if text else 0


def unpack_body(text: str, encoding: str | None, limit: int, where: str) -> bytes:
    """The body a message carries; refuses bad base64, unknown encodings, and anything that
    inflates beyond ``limit`` bytes (a small message must not become a large body)."""
    return inflate_body(unbase64(text, where), encoding, limit, where)


def unbase64(text: str, where: str) -> bytes:
    try:
        return b64.decode(text)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{where}: body is not valid base64") from None


def inflate_body(raw: bytes, encoding: str | None, limit: int, where: str) -> bytes:
    """A packed body's bytes (base64 already undone) as the body: inflated when compressed,
    within ``limit`` bytes."""
    if encoding is None:
        return raw
    if encoding != "zlib":
        raise ProtocolError(f"{where}: unknown body encoding {str(encoding)[:20]!r}")
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise ProtocolError(f"{where}: compressed body is corrupt") from None
    if len(body) > limit or not inflater.eof or inflater.unused_data:
        raise ProtocolError(f"{where}: compressed body is corrupt or exceeds {limit} bytes")
    return body
