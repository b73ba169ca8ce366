"""Visitors' WebSockets in the protocol: the messages that carry one socket's traffic between
the relay and the agent, and their JSON form.

A visitor's socket opens as a ``Request`` that names it (``Request.socket``): the agent opens
the matching WebSocket to the local app and answers with a ``Response``, 101 with the
subprotocol the app chose, or the app's refusal as it came. After that:

* ``SocketFrame`` carries one whole WebSocket message either way, text or binary, at most
  ``MAX_SOCKET_MESSAGE_BYTES``. The agent numbers the app's messages (``seq``, from 1) and sends
  the next only once the relay confirmed the last (``SocketAck``): the relay's invocations may
  run at once, and one message at a time is what keeps a socket's messages in order. The open
  itself counts as message 0: the relay acknowledges it once the pair is stored, so the app's
  first message never arrives before the relay knows the socket.
* ``SocketClose`` closes it either way, with the code and reason to pass on; the relay answers
  an agent's with the same message once the visitor's side is closed (a close handshake).
* ``SocketMove`` tells the relay that sockets now travel on the connection it came on (the
  agent replaced its connection to the relay, as it does before API Gateway's 2 h limit).

A socket id is the visitor's connection id on the relay's visitor-socket API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hatchway.protocol import b64
from hatchway.protocol.errors import ProtocolError
from hatchway.protocol.limits import (
    CLOSE_ABNORMAL,
    CLOSE_NO_STATUS,
    MAX_CHUNK_SEQ,
    MAX_CLOSE_REASON_BYTES,
    MAX_SOCKET_ID_LENGTH,
    MAX_SOCKET_MESSAGE_BYTES,
    MAX_SOCKETS_PER_CONNECTION,
)

_SOCKET_ID_PATTERN = re.compile(rf"[A-Za-z0-9_=+/-]{{1,{MAX_SOCKET_ID_LENGTH}}}")


def validate_socket_id(socket_id: object) -> str:
    """Return ``socket_id`` if it can name a visitor's socket, else raise ``ProtocolError``."""
    if not isinstance(socket_id, str) or not _SOCKET_ID_PATTERN.fullmatch(socket_id):
        raise ProtocolError(f"invalid socket id {str(socket_id)[:40]!r}")
    return socket_id


def sendable_close_code(code: int) -> int:
    """``code`` if a close frame may carry it, else 1001 (going away): 1005 and 1006 only say
    that a close frame had no code or never came, and must not be sent (RFC 6455 7.4.1)."""
    if code in (CLOSE_NO_STATUS, CLOSE_ABNORMAL) or not (
        1000 <= code <= 1014 or 3000 <= code <= 4999
    ):
        return 1001
    return code


def close_reason(text: str) -> str:
    """``text`` cut to what a close frame carries, on a character boundary."""
    data = text.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    return data.decode("utf-8", "ignore")


@dataclass(frozen=True)
class SocketFrame:
    """Either way: one WebSocket message of socket ``socket``. ``seq`` numbers the app's
    messages (agent → relay) from 1; the relay's messages to the agent carry 0."""

    socket: str
    data: bytes = field(default=b"", repr=False)
    binary: bool = False
    seq: int = 0

    def __post_init__(self) -> None:
        validate_socket_id(self.socket)
        if not 0 <= self.seq <= MAX_CHUNK_SEQ:
            raise ProtocolError(f"socket message number {self.seq} is outside 0..{MAX_CHUNK_SEQ}")
        if len(self.data) > MAX_SOCKET_MESSAGE_BYTES:
            raise ProtocolError(
                f"a WebSocket message of {len(self.data)} bytes is past the tunnel's "
                f"{MAX_SOCKET_MESSAGE_BYTES}-byte limit",
                status=413,
            )
        if not self.binary:
            try:
                self.data.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("a text WebSocket message must be UTF-8") from None


@dataclass(frozen=True)
class SocketAck:
    """Relay → agent: the app's message ``seq`` on ``socket`` was passed on to the visitor;
    0: the socket is open (the relay stored the pair, the handshake completes)."""

    socket: str
    seq: int

    def __post_init__(self) -> None:
        validate_socket_id(self.socket)
        if not 0 <= self.seq <= MAX_CHUNK_SEQ:
            raise ProtocolError(f"socket message number {self.seq} is outside 0..{MAX_CHUNK_SEQ}")


@dataclass(frozen=True)
class SocketClose:
    """Either way: ``socket`` closed, or is to be closed, with ``code`` and ``reason``."""

    socket: str
    code: int = 1000
    reason: str = ""

    def __post_init__(self) -> None:
        validate_socket_id(self.socket)
        if not 1000 <= self.code <= 4999:
            raise ProtocolError(f"close code {self.code} is outside 1000..4999")
        if len(self.reason.encode("utf-8", "surrogatepass")) > MAX_CLOSE_REASON_BYTES:
            raise ProtocolError(f"a close reason is at most {MAX_CLOSE_REASON_BYTES} bytes")


@dataclass(frozen=True)
class SocketMove:
    """Agent → relay: these sockets now travel on the connection this message came on."""

    sockets: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.sockets) > MAX_SOCKETS_PER_CONNECTION:
            raise ProtocolError(f"at most {MAX_SOCKETS_PER_CONNECTION} sockets move at once")
        for socket_id in self.sockets:
            validate_socket_id(socket_id)


SocketMessage = SocketFrame | SocketAck | SocketClose | SocketMove

SOCKET_TYPES = frozenset({"socket_frame", "socket_ack", "socket_close", "socket_move"})
"""The ``type`` of each message here, in its JSON form."""


def socket_to_dict(message: SocketMessage) -> dict[str, Any]:
    """The JSON object of a socket message."""
    if isinstance(message, SocketFrame):
        out: dict[str, Any] = {
            "type": "socket_frame",
            "socket": message.socket,
            "data": b64.encode(message.data),
        }
        if message.binary:
            out["binary"] = True
        if message.seq:
            out["seq"] = message.seq
        return out
    if isinstance(message, SocketAck):
        return {"type": "socket_ack", "socket": message.socket, "seq": message.seq}
    if isinstance(message, SocketClose):
        return {
            "type": "socket_close",
            "socket": message.socket,
            "code": message.code,
            "reason": message.reason,
        }
    return {"type": "socket_move", "sockets": list(message.sockets)}


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if type(value) is not int:
        raise ProtocolError(f"{obj.get('type')}: {key} must be a whole number")
    return value


def socket_from_dict(obj: dict[str, Any]) -> SocketMessage:
    """The socket message a JSON object holds (its ``type`` is one of ``SOCKET_TYPES``)."""
    kind = obj.get("type")
    socket_id = obj.get("socket")
    if kind == "socket_frame":
        data, binary = obj.get("data"), obj.get("binary", False)
        if not isinstance(data, str) or not isinstance(binary, bool):
            raise ProtocolError("socket_frame: data must be base64 text, binary true or false")
        if len(data) > (MAX_SOCKET_MESSAGE_BYTES + 2) // 3 * 4:
            raise ProtocolError(
                f"a WebSocket message is at most {MAX_SOCKET_MESSAGE_BYTES} bytes", status=413
            )
        try:
            raw = b64.decode(data)
        except ValueError:
            raise ProtocolError("socket_frame: data is not base64") from None
        return SocketFrame(validate_socket_id(socket_id), raw, binary, _int(obj, "seq", 0))
    if kind == "socket_ack":
        return SocketAck(validate_socket_id(socket_id), _int(obj, "seq"))
    if kind == "socket_close":
        reason = obj.get("reason", "")
        if not isinstance(reason, str):
            raise ProtocolError("socket_close: reason must be text")
        return SocketClose(validate_socket_id(socket_id), _int(obj, "code", 1000), reason)
    if kind == "socket_move":
        sockets = obj.get("sockets")
        if not isinstance(sockets, list) or len(sockets) > MAX_SOCKETS_PER_CONNECTION:
            raise ProtocolError(
                f"socket_move: sockets must list at most {MAX_SOCKETS_PER_CONNECTION} ids"
            )
        return SocketMove(tuple(validate_socket_id(s) for s in sockets))
    raise ProtocolError(f"unknown message type {str(kind)[:40]!r}")
