"""The agent's WebSocket frames over a socket pair: messages whole however the relay fragments
them, control frames answered, broken frames refused, and the writer's frames readable by
websocket-client's own parser."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
import websocket

from hatchway.transport import wire
from hatchway.transport.wire import (
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameReader,
    FrameWriter,
)


def server_frame(opcode: int, payload: bytes, final: bool = True, mask: bytes = b"") -> bytes:
    """A frame as a server sends it (unmasked, unless ``mask`` is given)."""
    first = (0x80 if final else 0) | opcode
    size = len(payload)
    masked = 0x80 if mask else 0
    if size < 126:
        head = struct.pack("!BB", first, masked | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, masked | 126, size)
    else:
        head = struct.pack("!BBQ", first, masked | 127, size)
    body = websocket.ABNF.mask(mask, payload) if mask else payload
    return head + mask + body


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    agent, relay = socket.socketpair()
    agent.settimeout(5)
    relay.settimeout(5)
    yield agent, relay
    agent.close()
    relay.close()


def reader_of(agent: socket.socket) -> FrameReader:
    return FrameReader(agent, FrameWriter(agent))


def client_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """``(opcode, fin, payload)`` of each frame in ``data``, parsed by websocket-client."""
    frames = []
    buffer = bytearray(data)

    def recv(size: int) -> bytes:
        taken = bytes(buffer[:size])
        del buffer[:size]
        return taken

    parser = websocket._abnf.frame_buffer(recv, skip_utf8_validation=True)
    while buffer:
        frame = parser.recv_frame()
        frames.append((frame.opcode, frame.fin, frame.data))
    return frames


def received(relay: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += relay.recv(size - len(data))
    return data


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_every_length_encoding_reads_back(pair: tuple, size: int) -> None:
    agent, relay = pair
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    relay.sendall(server_frame(TEXT, payload))
    assert reader_of(agent).message() == (TEXT, payload)


def test_a_fragmented_message_comes_whole_with_pings_answered_between(pair: tuple) -> None:
    agent, relay = pair
    relay.sendall(
        server_frame(TEXT, b"one ", final=False)
        + server_frame(PING, b"are you there")
        + server_frame(CONTINUATION, b"two ", final=False)
        + server_frame(PONG, b"ignored")
        + server_frame(CONTINUATION, b"three")
        + server_frame(TEXT, b"next")
    )
    reader = reader_of(agent)
    assert reader.message() == (TEXT, b"one two three")
    assert reader.message() == (TEXT, b"next")
    pong = received(relay, 2 + 4 + len(b"are you there"))
    assert client_frames(pong) == [(PONG, 1, b"are you there")]


def test_a_masked_frame_from_the_relay_is_unmasked(pair: tuple) -> None:
    agent, relay = pair
    relay.sendall(server_frame(TEXT, b"hidden", mask=b"\x01\x02\x03\x04"))
    assert reader_of(agent).message() == (TEXT, b"hidden")


def test_the_relays_close_is_answered_once(pair: tuple) -> None:
    agent, relay = pair
    relay.sendall(server_frame(CLOSE, struct.pack("!H", 1001)))
    reader = reader_of(agent)
    assert reader.message() == (CLOSE, b"")
    assert client_frames(received(relay, 2 + 4 + 2)) == [(CLOSE, 1, wire.CLOSE_NORMAL)]
    reader.writer.control(CLOSE, wire.CLOSE_NORMAL)  # a closer's own close: not sent again
    with pytest.raises(FrameError, match="closing"):
        reader.writer.message([b"late"])
    relay.settimeout(0.2)
    with pytest.raises(TimeoutError):
        relay.recv(1)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "connection to the relay was lost$"),
        (server_frame(TEXT, b"x")[:1], "lost inside a frame"),
        (server_frame(TEXT, b"hello")[:4], "lost inside a frame"),
        (server_frame(TEXT, b"a", final=False), "lost inside a frame"),
        (bytes([0x80 | 0x40 | TEXT, 1]) + b"x", "reserved bits"),
        (bytes([0x80 | 0x3, 0]), "unknown opcode"),
        (server_frame(PING, b"x" * 126), "control frame"),
        (server_frame(PING, b"x", final=False), "control frame"),
        (server_frame(CONTINUATION, b"x"), "interleaved"),
        (server_frame(TEXT, b"a", final=False) + server_frame(TEXT, b"b"), "interleaved"),
    ],
)
def test_broken_frames_end_the_connection_with_a_reason(
    pair: tuple, data: bytes, says: str
) -> None:
    agent, relay = pair
    relay.sendall(data)
    relay.shutdown(socket.SHUT_WR)
    with pytest.raises(FrameError, match=says):
        reader_of(agent).message()


@pytest.mark.parametrize(("bound", "refused"), [(10, False), (9, True)])
def test_a_message_above_the_bound_is_refused(
    pair: tuple, monkeypatch: pytest.MonkeyPatch, bound: int, refused: bool
) -> None:
    agent, relay = pair
    monkeypatch.setattr(wire, "MAX_INCOMING_MESSAGE_BYTES", bound)
    relay.sendall(server_frame(TEXT, b"12345", final=False) + server_frame(CONTINUATION, b"67890"))
    if refused:
        with pytest.raises(FrameError, match="longer than 9 bytes"):
            reader_of(agent).message()
    else:
        assert reader_of(agent).message() == (TEXT, b"1234567890")


@pytest.mark.parametrize("sizes", [[0], [5], [125, 126], [65536, 3], [32 * 1024] * 4])
def test_a_written_message_is_masked_frames_websocket_client_reads(
    pair: tuple, sizes: list[int]
) -> None:
    agent, relay = pair
    chunks = [bytes([65 + index]) * size for index, size in enumerate(sizes)]
    FrameWriter(agent).message(chunks)
    agent.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := relay.recv(1 << 20):
        data += chunk
    assert data[1] & 0x80  # masked, as a client must
    last = len(chunks) - 1
    assert client_frames(data) == [
        (TEXT if index == 0 else CONTINUATION, int(index == last), chunk)
        for index, chunk in enumerate(chunks)
    ]


def test_mask_keys_are_fresh_across_draws_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys come from the kernel a draw at a time, and no two frames share one, however many
    threads build frames at once. The stand-in kernel numbers its keys, so that a repeat can
    only mean two frames took the same one (random keys may coincide by chance)."""
    draws: list[int] = []

    def numbered(size: int) -> bytes:
        first = len(draws) * wire.MASK_KEYS_PER_DRAW
        draws.append(size)
        return b"".join(struct.pack("!I", first + n) for n in range(size // 4))

    monkeypatch.setattr(wire.os, "urandom", numbered)
    monkeypatch.setattr(wire, "_keys", iter(()))
    per_thread = wire.MASK_KEYS_PER_DRAW
    keys: list[list[bytes]] = [[] for _ in range(4)]

    def build(mine: list[bytes]) -> None:
        mine.extend(wire.mask_key() for _ in range(per_thread))

    threads = [threading.Thread(target=build, args=(mine,)) for mine in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [key for mine in keys for key in mine]
    assert {len(key) for key in every} == {4}
    assert len(set(every)) == len(every) == 4 * per_thread
    # A draw per thousand keys; threads that find a draw used up at once may each make one.
    assert 4 <= len(draws) <= 16
    assert set(draws) == {4 * wire.MASK_KEYS_PER_DRAW}
