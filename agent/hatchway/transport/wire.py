"""WebSocket frames on a client WebSocket once ``handshake`` has opened it (the agent's
connection to the relay, and a visitor's socket to the local app): a reader that takes whatever
the socket has in one call and cuts frames from it, a writer that sends a whole message, every
frame of it, in one write, and the ``Link`` that holds the two.

A general-purpose client (websocket-client, for one) reads each frame in three calls (its first
two bytes, its length, its payload) through several layers of Python, and writes each frame
apart; on the agent's path that was a good part of the cost of a small request, and at 32
requests in flight several frames usually wait in the socket together.

Masking, which RFC 6455 asks of every client frame, goes through wsaccel's C code when it is
installed (``pip install 'hatchway[fast]'``) and otherwise through one XOR of two Python
integers: the same bytes either way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

TEXT, BINARY, CONTINUATION = 0x1, 0x2, 0x0
CLOSE, PING, PONG = 0x8, 0x9, 0xA

MAX_INCOMING_MESSAGE_BYTES = 64 * 1024 * 1024
"""Longest message read from the relay (frames joined); a longer one ends the connection. The
relay's own messages stay far below it (``protocol.MAX_MESSAGE_BYTES``); this bounds memory."""

MAX_CONTROL_PAYLOAD_BYTES = 125
"""RFC 6455 section 5.5: a control frame's payload."""

RECEIVE_BYTES = 64 * 1024
"""Most bytes asked of the socket at once (more for a frame known to be longer). Below glibc's
128 KiB mmap threshold: a 256 KiB read cost an mmap, an mremap and a munmap per message."""

CLOSE_NORMAL = struct.pack("!H", 1000)
"""A close frame's payload: status 1000, normal closure."""

MASK_KEYS_PER_DRAW = 1024
"""Masking keys drawn from the kernel at once. Each key is still four bytes of ``os.urandom``
(RFC 6455 asks for keys from a strong source of entropy), but one ``getrandom`` serves a
thousand frames: a system call per message let another thread take the interpreter between
building a frame and sending it, at every answer."""


class FrameError(ConnectionError):
    """The peer sent frames that break RFC 6455, or a message above the agent's bound; or the
    connection ended inside a frame. A connection error, as every way the link can fail is."""


class Closed(FrameError):
    """The relay closed the connection (a close frame) where a message was expected."""


class MessageTooBig(FrameError):
    """The peer sent a message longer than the reader's bound (``max_message_bytes``)."""


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the status code, then the reason in UTF-8, cut to fit."""
    text = reason.encode("utf-8")[: MAX_CONTROL_PAYLOAD_BYTES - 2]
    return struct.pack("!H", code) + text.decode("utf-8", "ignore").encode("utf-8")


def _mask_in_python(key: bytes, payload: bytes) -> bytes:
    """``payload`` XORed with the 4-byte ``key`` repeated: one big-integer XOR, in C."""
    size = len(payload)
    if not size:
        return b""
    keys = key * (size // 4) + key[: size % 4]
    order = sys.byteorder
    return (int.from_bytes(payload, order) ^ int.from_bytes(keys, order)).to_bytes(size, order)


mask: Callable[[bytes, bytes], bytes]
try:
    from wsaccel.xormask import XorMaskerSimple

    def mask(key: bytes, payload: bytes) -> bytes:
        """``payload`` XORed with the 4-byte ``key`` repeated (RFC 6455 section 5.3)."""
        masked: bytes = XorMaskerSimple(key).process(payload)
        return masked

except ImportError:  # no wsaccel: the pure-Python way, same bytes
    mask = _mask_in_python


class FrameWriter:
    """Sends masked frames on ``sock``; one lock keeps each message's frames together."""

    def __init__(self, sock: socket.socket, peer: str = "the relay") -> None:
        self.sock = sock
        self.peer = peer
        """Who is at the other end, in error messages."""
        self.lock = threading.Lock()
        self.closed = False
        """A close went out: nothing may follow it, not even a second close."""

    def message(self, chunks: Sequence[bytes], opcode: int = TEXT) -> None:
        """One message in frames of the given chunks: the first with ``opcode``, the rest
        continuations, the last marked final."""
        last = len(chunks) - 1
        frames = b"".join(
            frame(opcode if index == 0 else CONTINUATION, chunk, final=index == last)
            for index, chunk in enumerate(chunks)
        )
        with self.lock:
            if self.closed:
                raise FrameError(f"the connection to {self.peer} is closing")
            self.sock.sendall(frames)

    def control(self, opcode: int, payload: bytes = b"") -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = opcode == CLOSE
            self.sock.sendall(frame(opcode, payload[:MAX_CONTROL_PAYLOAD_BYTES]))


def frame(opcode: int, payload: bytes, final: bool = True) -> bytes:
    """One client frame: masked, as RFC 6455 requires of a client."""
    first = (0x80 if final else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    key = mask_key()
    return head + key + mask(key, payload)


_keys: Iterator[tuple[bytes]] = iter(())


def mask_key() -> bytes:
    """Four fresh random bytes. ``next`` on the C iterator is atomic, so threads building
    frames at once never share a key; two that find the draw used up each make a new one."""
    global _keys
    drawn = next(_keys, None)
    if drawn is None:
        _keys = struct.iter_unpack("4s", os.urandom(4 * MASK_KEYS_PER_DRAW))
        drawn = next(_keys)
    return drawn[0]


class FrameReader:
    """Whole messages from ``sock``: answers pings and a close itself (through ``writer``).

    ``max_message_bytes`` (default ``MAX_INCOMING_MESSAGE_BYTES``) bounds a message (its
    frames joined): a longer one raises
    ``MessageTooBig``. The peer's close code and reason are kept (``close_code``: 1005 when the
    close frame had none); with ``echo_close`` the answering close repeats the peer's code, as
    RFC 6455 section 5.5.1 suggests, else it says 1000."""

    def __init__(
        self,
        sock: socket.socket,
        writer: FrameWriter,
        already: bytes = b"",
        *,
        max_message_bytes: int | None = None,
        echo_close: bool = False,
    ) -> None:
        self.sock = sock
        self.writer = writer
        self.peer = writer.peer
        self.max_message_bytes = max_message_bytes or MAX_INCOMING_MESSAGE_BYTES
        self.echo_close = echo_close
        self.close_code: int | None = None
        """The code of the peer's close frame, once one came (1005: it carried none)."""
        self.close_reason = ""
        self._buffer = bytearray(already)
        """Bytes read and not yet cut into frames (``already``: what came with the handshake's
        answer)."""
        self._message: list[bytes] = []
        self._message_opcode = 0
        self._message_bytes = 0

    def message(self) -> tuple[int, bytes]:
        """The next data message as ``(TEXT or BINARY, payload)``, or ``(CLOSE, b"")`` once
        the relay closed. Raises ``FrameError`` on broken frames and ``OSError`` (or
        ``FrameError`` at a cut) when the connection ends without a close."""
        while True:
            opcode, final, payload = self._frame()
            if opcode == CLOSE:
                self._closed_by_peer(payload)
                return CLOSE, b""
            if opcode == PING:
                self.writer.control(PONG, payload)
            elif opcode == PONG:
                pass
            elif opcode in (TEXT, BINARY, CONTINUATION):
                whole = self._join(opcode, final, payload)
                if whole is not None:
                    return whole
            else:
                raise FrameError(f"{self.peer} sent a frame with unknown opcode {opcode:#x}")

    def _closed_by_peer(self, payload: bytes) -> None:
        code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
        self.close_code = code
        self.close_reason = payload[2:].decode("utf-8", "replace")
        answer = CLOSE_NORMAL
        if self.echo_close and len(payload) >= 2:
            answer = payload[:2]
        self.writer.control(CLOSE, answer)

    def _join(self, opcode: int, final: bool, payload: bytes) -> tuple[int, bytes] | None:
        if (opcode == CONTINUATION) != bool(self._message_opcode):
            raise FrameError(f"{self.peer} interleaved two messages' frames")
        if opcode != CONTINUATION:
            if final:
                return opcode, payload
            self._message_opcode = opcode
        self._message.append(payload)
        self._message_bytes += len(payload)
        self._bound(self._message_bytes)
        if not final:
            return None
        whole = (self._message_opcode, b"".join(self._message))
        self._message, self._message_opcode, self._message_bytes = [], 0, 0
        return whole

    def _bound(self, size: int) -> None:
        if size > self.max_message_bytes:
            raise MessageTooBig(
                f"{self.peer} sent a message longer than {self.max_message_bytes} bytes"
            )

    def _frame(self) -> tuple[int, bool, bytes]:
        """The next frame: its opcode, whether it is final, its (unmasked) payload."""
        self._want(2)
        first, second = self._buffer[0], self._buffer[1]
        if first & 0x70:
            raise FrameError(f"{self.peer} sent a frame with reserved bits set (no extension)")
        opcode, final = first & 0x0F, bool(first & 0x80)
        size, offset = second & 0x7F, 2
        if size == 126:
            self._want(4)
            (size,) = struct.unpack_from("!H", self._buffer, 2)
            offset = 4
        elif size == 127:
            self._want(10)
            (size,) = struct.unpack_from("!Q", self._buffer, 2)
            offset = 10
        if opcode >= CLOSE and (size > MAX_CONTROL_PAYLOAD_BYTES or not final):
            raise FrameError(f"{self.peer} sent a control frame that is fragmented or too long")
        if opcode < CLOSE:  # before reading it: a frame past the bound is never buffered
            self._bound(size + self._message_bytes)
        key = b""
        if second & 0x80:  # a server must not mask; unmasking costs nothing to be lenient
            self._want(offset + 4)
            key = bytes(self._buffer[offset : offset + 4])
            offset += 4
        self._want(offset + size)
        with memoryview(self._buffer) as view:
            payload = bytes(view[offset : offset + size])
        del self._buffer[: offset + size]
        if key:
            payload = mask(key, payload)
        return opcode, final, payload

    def _want(self, size: int) -> None:
        """Read until the buffer holds ``size`` bytes."""
        while len(self._buffer) < size:
            data = self.sock.recv(max(RECEIVE_BYTES, size - len(self._buffer)))
            if not data:
                where = " inside a frame" if self._buffer or self._message else ""
                raise FrameError(f"the connection to {self.peer} was lost{where}")
            self._buffer += data


class Link:
    """An open WebSocket (to the relay, unless ``peer`` says otherwise): its socket, with the
    one writer and the one reader every user of the connection goes through."""

    def __init__(
        self,
        sock: socket.socket,
        already: bytes = b"",
        *,
        peer: str = "the relay",
        max_message_bytes: int | None = None,
        echo_close: bool = False,
    ) -> None:
        self.sock = sock
        self.writer = FrameWriter(sock, peer)
        self.reader = FrameReader(
            sock,
            self.writer,
            already,
            max_message_bytes=max_message_bytes,
            echo_close=echo_close,
        )

    def receive_text(self) -> bytes:
        """The next text message (binary ones are skipped: the relay sends none); ``Closed``
        if the relay closed instead."""
        while True:
            opcode, data = self.reader.message()
            if opcode == CLOSE:
                raise Closed("the relay closed the connection")
            if opcode == TEXT:
                return data

    def abort(self) -> None:
        """End the connection at once, without a close: a reader blocked on it wakes up with
        the end of the stream. The socket is closed once nothing refers to it."""
        with contextlib.suppress(OSError):  # already shut or never fully open: nothing to end
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Say goodbye with a close frame, if the socket still takes one, and close it."""
        with contextlib.suppress(OSError):
            self.writer.control(CLOSE, CLOSE_NORMAL)
        self.abort()
        self.sock.close()
