"""``hatchway.transport.wire``'s frame reader held to wsproto, the well-kept sans-IO WebSocket
implementation, as a client reading a server's frames: fragmentation, control frames between
fragments, close, length encodings, and broken frames.

Where both read a stream, they yield the same data messages (opcode and payload) up to the
close. Where wsproto refuses a stream, ours refuses it too. The differences that remain are
deliberate, each listed in ``DELIBERATE`` with its reason.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from hatchway.transport import wire

Read = tuple[list[tuple[int, bytes]], bool] | str
"""The data messages read and whether a close ended them; or "refused"."""

DELIBERATE = {
    "masked": "a frame the server masked is unmasked and read (RFC 6455 says a client closes "
    "on it); being lenient costs nothing, and the relay is the agent's own",
    "utf8": "a text message's UTF-8 is checked by the codec, which refuses the message, not the "
    "connection; wsproto refuses the connection",
    "close-payload": "a close frame's code and reason are not checked: the agent answers 1000 "
    "and goes; wsproto refuses codes it does not know",
}


def frame(opcode: int, payload: bytes, final: bool = True, mask: bytes | None = None) -> bytes:
    """One frame as a server sends it (or masked, as a broken one would)."""
    head = bytes([(0x80 if final else 0) | opcode])
    flag = 0x80 if mask else 0
    if len(payload) < 126:
        head += bytes([flag | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([flag | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([flag | 127]) + struct.pack("!Q", len(payload))
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def ours(stream: bytes) -> Read:
    relay, agent = socket.socketpair()
    try:
        relay.sendall(stream)
        relay.shutdown(socket.SHUT_WR)
        reader = wire.FrameReader(agent, wire.FrameWriter(agent))
        messages: list[tuple[int, bytes]] = []
        while True:
            try:
                opcode, payload = reader.message()
            except wire.FrameError:
                # The stream ended without a close: what was read stands, as for wsproto.
                return "refused" if _broken(stream) else (messages, False)
            if opcode == wire.CLOSE:
                return messages, True
            messages.append((opcode, payload))
    finally:
        relay.close()
        agent.close()


def _broken(stream: bytes) -> bool:
    """Whether wsproto refuses ``stream`` (not just finds it cut short)."""
    return theirs(stream) == "refused"


def theirs(stream: bytes) -> Read:
    protocol = FrameProtocol(client=True, extensions=[])
    protocol.receive_bytes(stream)
    messages: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    kind = 0
    try:
        for event in protocol.received_frames():
            if event.opcode is Opcode.CLOSE:
                return messages, True
            if event.opcode in (Opcode.PING, Opcode.PONG):
                continue
            data = event.payload.encode() if isinstance(event.payload, str) else event.payload
            if event.opcode is not Opcode.CONTINUATION:
                kind = int(event.opcode)
            parts.append(bytes(data))
            if event.message_finished:
                messages.append((kind, b"".join(parts)))
                parts = []
    except ParseFailed:
        return "refused"
    return messages, False


def agree(stream: bytes) -> None:
    mine, reference = ours(stream), theirs(stream)
    assert mine == reference, (stream[:80], mine, reference)


CLOSE = frame(wire.CLOSE, struct.pack("!H", 1000))

CASES = [
    pytest.param(frame(wire.TEXT, b"hello") + CLOSE, id="text"),
    pytest.param(frame(wire.BINARY, bytes(range(256))) + CLOSE, id="binary"),
    pytest.param(frame(wire.TEXT, b"x" * 300) + CLOSE, id="16-bit length"),
    pytest.param(frame(wire.BINARY, b"y" * 70_000) + CLOSE, id="64-bit length"),
    pytest.param(
        frame(wire.TEXT, b"he", final=False)
        + frame(wire.PING, b"p")
        + frame(wire.CONTINUATION, b"ll", final=False)
        + frame(wire.PONG, b"")
        + frame(wire.CONTINUATION, b"o")
        + CLOSE,
        id="fragments with control frames between",
    ),
    pytest.param(frame(wire.TEXT, b"") + frame(wire.BINARY, b"") + CLOSE, id="empty messages"),
    pytest.param(frame(wire.TEXT, b"cut"), id="no close"),
    pytest.param(frame(wire.CONTINUATION, b"x") + CLOSE, id="continuation first"),
    pytest.param(
        frame(wire.TEXT, b"a", final=False) + frame(wire.TEXT, b"b") + CLOSE,
        id="interleaved messages",
    ),
    pytest.param(frame(wire.PING, b"p", final=False) + CLOSE, id="fragmented ping"),
    pytest.param(frame(wire.PING, b"p" * 126) + CLOSE, id="ping too long"),
    pytest.param(frame(0x3, b"x") + CLOSE, id="reserved opcode"),
    pytest.param(frame(0xB, b"x") + CLOSE, id="reserved control opcode"),
    pytest.param(bytes([0x81 | 0x40, 1]) + b"x" + CLOSE, id="RSV1 without an extension"),
    pytest.param(frame(wire.CLOSE, b""), id="close without a code"),
]


@pytest.mark.parametrize("stream", CASES)
def test_ours_reads_what_wsproto_reads_and_refuses_what_it_refuses(stream: bytes) -> None:
    agree(stream)


def test_a_masked_frame_is_read_deliberately() -> None:
    stream = frame(wire.TEXT, b"masked", mask=b"\x01\x02\x03\x04") + CLOSE
    assert theirs(stream) == "refused"
    assert ours(stream) == ([(wire.TEXT, b"masked")], True)
    assert "masked" in DELIBERATE


def test_a_text_message_that_is_not_utf8_is_left_to_the_codec_deliberately() -> None:
    stream = frame(wire.TEXT, b"\xff\xfe") + CLOSE
    assert theirs(stream) == "refused"
    assert ours(stream) == ([(wire.TEXT, b"\xff\xfe")], True)
    assert "utf8" in DELIBERATE


@pytest.mark.parametrize("code", [0, 999, 1005, 1006, 2999, 5000])
def test_a_close_code_is_not_checked_deliberately(code: int) -> None:
    stream = frame(wire.TEXT, b"x") + frame(wire.CLOSE, struct.pack("!H", code))
    assert ours(stream) == ([(wire.TEXT, b"x")], True)
    assert "close-payload" in DELIBERATE


# --- Generated streams -------------------------------------------------------------------------

TEXT = (
    st.text(max_size=40)
    .map(lambda t: t.encode("utf-8", "surrogatepass"))
    .filter(lambda b: _utf8(b))
)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        binary = draw(st.booleans())
        payload = draw(st.binary(max_size=80)) if binary else draw(TEXT)
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
        for index, piece in enumerate(pieces):
            opcode = (wire.BINARY if binary else wire.TEXT) if index == 0 else wire.CONTINUATION
            out += frame(opcode, piece, final=index == len(pieces) - 1)
            if draw(st.booleans()):
                out += frame(
                    draw(st.sampled_from([wire.PING, wire.PONG])), draw(st.binary(max_size=10))
                )
    if draw(st.booleans()):
        out += CLOSE
    return out


@settings(max_examples=300, deadline=None)
@given(streams())
def test_generated_streams_read_alike(stream: bytes) -> None:
    agree(stream)


@settings(max_examples=300, deadline=None)
@given(streams(), st.binary(max_size=16))
def test_any_tail_is_read_or_refused_never_a_crash(stream: bytes, tail: bytes) -> None:
    """Hostile bytes after well-formed frames: ours reads what came before, then either reads
    more or refuses the connection (FrameError); it never fails in another way."""
    read = ours(stream + tail)
    if read != "refused":
        messages, _ = read
        clean = ours(stream)
        assert clean != "refused"
        assert messages[: len(clean[0])] == clean[0]
