"""Opening the agent's WebSocket to the relay: a connection (``proxy`` decides whether through
an HTTP proxy), TLS for wss://, and the RFC 6455 opening handshake with the token. What it gives
back is a ``wire.Link``; everything after the handshake is ``wire``'s.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from hatchway.errors import RelayUnreachable, TokenRefused
from hatchway.transport import proxy
from hatchway.transport.http1 import (
    BadReply,
    Connection,
    Reply,
    Truncated,
    client_tls,
    header_tokens,
)
from hatchway.transport.wire import Link

try:  # CPython's own SHA-1: hashlib's would load OpenSSL, 4 MiB, to hash 60 bytes once
    from _sha1 import sha1
except ImportError:  # an interpreter built without it
    from hashlib import sha1

KEY_BYTES = 16
"""RFC 6455 section 4.1: the random nonce of Sec-WebSocket-Key."""

_ACCEPT_SUFFIX = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455 section 1.3: appended to the key before hashing it into Sec-WebSocket-Accept."""

TOKEN_HELP = (
    "Get one from the relay's operator (hatchway-admin token create; hatchway-local prints one "
    "when it starts), then save it with `hatchway config add-token TOKEN`, or pass --token or "
    "set HATCHWAY_TOKEN"
)


class HandshakeRefused(ConnectionError):
    """The relay answered the handshake with an HTTP status instead of a WebSocket."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HandshakeFailed(ConnectionError):
    """What came back is not a WebSocket server's answer to this handshake."""


@dataclass(frozen=True)
class Address:
    """Where a ws:// or wss:// URL points."""

    secure: bool
    host: str
    port: int
    target: str
    """The path and query asked for in the handshake."""

    @property
    def authority(self) -> str:
        return proxy.authority(self.host, self.port)


def parse_url(url: str) -> Address:
    """The relay's address from its URL; ``ValueError`` if it is not ws:// or wss:// to a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Address(secure, parts.hostname, parts.port or (443 if secure else 80), target)


def connect(server: str, token: str, timeout: float) -> Link:
    """The agent's WebSocket to the relay at ``server``, opened with ``token``: ``TokenRefused``
    if the relay refuses the token, ``RelayUnreachable`` for every other failure."""
    try:
        return open_link(server, [("Authorization", f"Bearer {token}")], timeout)
    except HandshakeRefused as exc:
        if exc.status in (401, 403):
            raise TokenRefused(f"the relay at {server} refused the token. {TOKEN_HELP}") from None
        raise RelayUnreachable(f"{server}: {exc}") from None
    except (OSError, BadReply, Truncated, ValueError) as exc:
        raise RelayUnreachable(f"cannot reach the relay at {server}: {exc}") from None


def open_link(
    url: str,
    headers: Sequence[tuple[str, str]],
    timeout: float,
    environ: Mapping[str, str] = os.environ,
) -> Link:
    """Open a WebSocket to ``url`` with ``headers`` added to the handshake; every step (and the
    socket afterwards, until the caller changes it) times out after ``timeout`` seconds."""
    address = parse_url(url)
    tls = client_tls() if address.secure else None
    conn = proxy.open_connection(address.host, address.port, tls, timeout, environ)
    try:
        return _upgrade(conn, address, headers)
    except BaseException:
        conn.close()
        raise


def _upgrade(conn: Connection, address: Address, headers: Sequence[tuple[str, str]]) -> Link:
    key = base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")
    conn.send(
        "GET",
        address.target,
        [
            ("Host", address.authority),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            *headers,
        ],
    )
    reply = conn.receive("GET", proxy.MAX_REFUSAL_BYTES)
    if reply.status != 101:
        raise HandshakeRefused(
            reply.status, f"the relay answered HTTP {reply.status} instead of a WebSocket"
        )
    _check_acceptance(reply, key)
    sock, already = conn.detach()
    return Link(sock, already)


def _check_acceptance(reply: Reply, key: str) -> None:
    """RFC 6455 section 4.1: a 101 that upgrades to WebSocket, accepts this key, and adds no
    extension or subprotocol the agent did not ask for (it asks for none)."""
    upgrade = (reply.header("upgrade") or "").strip().lower()
    connection = header_tokens(reply.headers, "connection")
    expected = base64.b64encode(sha1(key.encode("ascii") + _ACCEPT_SUFFIX).digest()).decode()
    if upgrade != "websocket" or "upgrade" not in connection:
        raise HandshakeFailed("the relay's 101 answer does not upgrade to a WebSocket")
    if (reply.header("sec-websocket-accept") or "").strip() != expected:
        raise HandshakeFailed("the relay's 101 answer does not accept this WebSocket handshake")
    for name in ("sec-websocket-extensions", "sec-websocket-protocol"):
        if reply.header(name):
            raise HandshakeFailed(f"the relay's 101 answer sets {name}, which was not asked for")
