"""Opening the agent's WebSockets: to the relay, a connection (``proxy`` decides whether
through an HTTP proxy), TLS for wss://, and the RFC 6455 opening handshake with the token; to the
local app, for a visitor's WebSocket, the same handshake on a connection the caller opened, with
the visitor's headers and subprotocol offer (``upgrade``). What either gives back is a
``wire.Link``; everything after the handshake is ``wire``'s.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from hatchway.errors import RelayUnreachable, TokenRefused
from hatchway.protocol import MAX_SOCKET_MESSAGE_BYTES
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
    key = new_key()
    host = [("Host", address.authority)]
    reply = _ask(conn, address.target, host, key, headers, proxy.MAX_REFUSAL_BYTES)
    if reply.status != 101:
        raise HandshakeRefused(
            reply.status, f"the relay answered HTTP {reply.status} instead of a WebSocket"
        )
    _check_acceptance(reply, key, "the relay")
    sock, already = conn.detach()
    return Link(sock, already)


@dataclass(frozen=True)
class Upgraded:
    """A WebSocket the local app accepted, and the subprotocol it chose (None: none)."""

    link: Link
    subprotocol: str | None


APP = "the local app"


def upgrade(
    conn: Connection, target: str, headers: Sequence[tuple[str, str]], refusal_limit: int
) -> Upgraded | Reply:
    """Open a WebSocket on ``conn`` (to the local app) at ``target``, sending ``headers`` (Host
    and the visitor's own, Sec-WebSocket-Protocol among them; none of the handshake's) with a
    fresh key. The app's answer when it is not 101 (its body read up to ``refusal_limit``);
    ``HandshakeFailed`` when its 101 does not complete this handshake. The link reads messages
    of at most ``MAX_SOCKET_MESSAGE_BYTES`` and answers the app's close with its own code."""
    key = new_key()
    reply = _ask(conn, target, (), key, headers, refusal_limit)
    if reply.status != 101:
        return reply
    offered = header_tokens(headers, "sec-websocket-protocol")
    chosen = _check_acceptance(reply, key, APP, offered)
    sock, already = conn.detach()
    link = Link(
        sock, already, peer=APP, max_message_bytes=MAX_SOCKET_MESSAGE_BYTES, echo_close=True
    )
    return Upgraded(link, chosen)


def new_key() -> str:
    """A Sec-WebSocket-Key: 16 fresh random bytes in base64."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def _ask(
    conn: Connection,
    target: str,
    first: Sequence[tuple[str, str]],
    key: str,
    headers: Sequence[tuple[str, str]],
    limit: int,
) -> Reply:
    conn.send(
        "GET",
        target,
        [
            *first,
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            *headers,
        ],
    )
    return conn.receive("GET", limit)


def _check_acceptance(reply: Reply, key: str, peer: str, offered: Sequence[str] = ()) -> str | None:
    """RFC 6455 section 4.1: a 101 that upgrades to WebSocket, accepts this key, and adds no
    extension (none is asked for) nor a subprotocol that was not ``offered``; the subprotocol
    chosen, if any."""
    upgrade = (reply.header("upgrade") or "").strip().lower()
    connection = header_tokens(reply.headers, "connection")
    expected = base64.b64encode(sha1(key.encode("ascii") + _ACCEPT_SUFFIX).digest()).decode()
    if upgrade != "websocket" or "upgrade" not in connection:
        raise HandshakeFailed(f"{peer}'s 101 answer does not upgrade to a WebSocket")
    if (reply.header("sec-websocket-accept") or "").strip() != expected:
        raise HandshakeFailed(f"{peer}'s 101 answer does not accept this WebSocket handshake")
    if reply.header("sec-websocket-extensions"):
        raise HandshakeFailed(
            f"{peer}'s 101 answer sets sec-websocket-extensions, which was not asked for"
        )
    chosen = (reply.header("sec-websocket-protocol") or "").strip() or None
    if chosen is not None and chosen not in offered:
        asked = f"offered: {', '.join(offered)}" if offered else "none was offered"
        raise HandshakeFailed(
            f"{peer}'s 101 answer sets sec-websocket-protocol {chosen!r}, which was not asked "
            f"for ({asked})"
        )
    return chosen
