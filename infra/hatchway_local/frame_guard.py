"""``FrameGuard``: refuses WebSocket frames above API Gateway's frame limit, which aiohttp's
reader cannot see (it only bounds whole messages).

It sits between the socket's transport and aiohttp's protocol (``transport.set_protocol``, a
public asyncio API), reads only frame headers, and hands every byte on unchanged. On a data frame
above the limit it stops forwarding and feeds aiohttp a header that declares an impossible
length instead, so that aiohttp's own message-size check fails the reader and closes the socket
with 1009, exactly as it does for a message above ``max_msg_size``.

It must be installed before the 101 response is sent: a client may not send frames before it
(RFC 6455, 4.1), so the first byte the guard sees starts a frame.
"""

from __future__ import annotations

import asyncio

DATA_OPCODES = frozenset({0x0, 0x1, 0x2})
"""Continuation, text and binary: the frames the limit applies to (control frames are ≤ 125)."""

_IMPOSSIBLE_LENGTH = 1 << 62
"""Above any ``max_msg_size``: makes aiohttp's reader fail with its own MESSAGE_TOO_BIG."""


def _header_length(header: bytes | bytearray) -> int:
    """Bytes the header starting with ``header`` (at least two bytes) occupies."""
    short = header[1] & 0x7F
    extended = 2 if short == 126 else 8 if short == 127 else 0
    return 2 + extended + (4 if header[1] & 0x80 else 0)


def _payload_length(header: bytes | bytearray) -> int:
    short = header[1] & 0x7F
    if short == 126:
        return int.from_bytes(header[2:4], "big")
    if short == 127:
        return int.from_bytes(header[2:10], "big")
    return short


class FrameGuard(asyncio.Protocol):
    def __init__(self, inner: asyncio.BaseProtocol, frame_limit: int) -> None:
        assert isinstance(inner, asyncio.Protocol)
        self.inner = inner
        self.frame_limit = frame_limit
        self.refused = False
        self._header = bytearray()  # an incomplete header, held back until it is whole
        self._payload_left = 0

    @classmethod
    def install(cls, transport: asyncio.BaseTransport, frame_limit: int) -> FrameGuard:
        guard = cls(transport.get_protocol(), frame_limit)
        transport.set_protocol(guard)
        return guard

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return  # aiohttp's reader has failed; it would discard these bytes too
        forward = bytearray()
        view = memoryview(data)
        while view:
            if self._payload_left:
                step = min(self._payload_left, len(view))
                forward += view[:step]
                self._payload_left -= step
                view = view[step:]
                continue
            need = 2 if len(self._header) < 2 else _header_length(self._header)
            step = min(need - len(self._header), len(view))
            self._header += view[:step]
            view = view[step:]
            if len(self._header) < 2 or len(self._header) < _header_length(self._header):
                continue
            length = _payload_length(self._header)
            if self._header[0] & 0x0F in DATA_OPCODES and length > self.frame_limit:
                self.refused = True
                forward += bytes([self._header[0] & 0x8F, 0x7F])
                forward += _IMPOSSIBLE_LENGTH.to_bytes(8, "big")
                break
            forward += self._header
            self._header.clear()
            self._payload_left = length
        if forward:
            self.inner.data_received(bytes(forward))

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
