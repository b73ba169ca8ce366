"""Visitors' WebSockets through the relay: a visitor's socket on the visitor-socket API paired
with the agent connection that carries it to the local app, and their messages passed both ways.

* ``$connect`` is a visit like any other (the tunnel's rules apply exactly as for HTTP): the
  agent gets a ``Request`` naming the socket, opens the app's WebSocket and answers 101 (or the
  app's refusal). Only then is the pair stored (``opened``), and the handshake completes.
* A visitor's message (``$default``) goes to the agent as a ``SocketFrame``.
* An app's message comes from the agent as a ``SocketFrame``; it is posted to the visitor and
  acknowledged to the agent (``SocketAck``), which sends the next one only then: relay
  invocations may run at once, and one message in flight per socket keeps them in order. The
  agent sends a message again when API Gateway lost one of its messages (it does not say
  which); the store notes each message's number before it is posted
  (``Store.pass_socket_message``), so a repeat reaches the visitor once.
* Either side's close is passed on (``SocketClose``); an agent connection that goes closes
  its visitors' sockets; ``SocketMove`` follows an agent to its new connection.

Only the connection a socket is paired with may speak for it (or take it over with the same
token): an agent reaches only its own tunnels' visitors. Every close says which side closed.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import replace
from typing import Protocol

from hatchway import protocol
from hatchway.protocol import ProtocolError, codec
from hatchway_relay import guards, request_ids
from hatchway_relay.config import RelayConfig
from hatchway_relay.ports import (
    Claim,
    Clock,
    ConnectionGone,
    Poster,
    PostFailed,
    SocketPoster,
    SocketRecord,
    Store,
)
from hatchway_relay.replies import Reply, Visit, error_reply

log = logging.getLogger("hatchway.relay")

OPEN_GRACE_SECONDS = 3.0
"""API Gateway refuses posts to a connection until its ``$connect`` has returned (410), and the
app may speak first, at once: for this long after the pair was stored, a 410 is retried."""

OPEN_RETRY_SECONDS = 0.05
"""The first pause between those tries; each next one doubles."""

FRONT_HEADERS = frozenset(
    {"x-hatchway-host", "x-hatchway-target", "x-hatchway-front", "cloudfront-viewer-address"}
)
"""Headers the front (CloudFront, or the local gateway) sets: never passed to the app."""

NOT_PASSED = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
    }
)
"""A visitor's handshake headers the agent makes anew for its own handshake with the app."""


class Visits(Protocol):
    def visit(self, visit: Visit) -> Reply: ...


class SocketParts(Protocol):
    """What storing a socket's pair uses of the relay (``visits.RelayParts`` has it)."""

    store: Store
    poster: Poster
    clock: Clock


class SocketRelay(SocketParts, Protocol):
    """What the socket path uses of the relay (``core.Relay``)."""

    config: RelayConfig

    @property
    def visitors(self) -> Visits: ...


def opened(
    relay: SocketParts, request: protocol.Request, claim: Claim, answer: bytes, via: str
) -> Reply | None:
    """The visitor's reply when the app accepted the socket (the agent answered 101): the pair
    is stored, then confirmed to the agent (``SocketAck`` 0: the open counts as the socket's
    message 0), which holds the app's first message until then, so that it finds the pair.
    None for any other answer, which is then an ordinary reply (the app's refusal, or the
    agent's fault)."""
    try:
        message, _ = codec.unpack_stored(answer)
    except ProtocolError:
        return None
    if not isinstance(message, protocol.Response) or message.id != request.id:
        return None
    if message.status != 101 or message.fault is not None:
        return None
    now = relay.clock.now()
    record = SocketRecord(
        request.socket, via, claim.token_id, claim.name, now, now + protocol.SOCKET_MAX_SECONDS
    )
    relay.store.put_socket(record)
    try:
        relay.poster.post(via, codec.encode(protocol.SocketAck(request.socket, 0)))
    except (ConnectionGone, PostFailed) as exc:
        relay.store.delete_socket(request.socket)
        why = exc.why if isinstance(exc, PostFailed) else "it disconnected"
        return error_reply(
            502,
            "agent-gone",
            f"The agent serving tunnel {claim.name!r} accepted the WebSocket but could not be "
            f"told it opened ({why}).",
        )
    chosen = guards.header(message.headers, "sec-websocket-protocol")
    return Reply(101, (("sec-websocket-protocol", chosen),) if chosen else ())


def request_headers(headers: protocol.Headers) -> protocol.Headers:
    """The visitor's headers as the agent gets them for the app's handshake."""
    return tuple(
        (name, value)
        for name, value in headers
        if name.lower() not in NOT_PASSED and name.lower() not in FRONT_HEADERS
    )


def front_refusal(headers: protocol.Headers, secret: str | None) -> Reply | None:
    """A ``$connect`` that did not come through the relay's front, when it has one: the
    visitor-socket API's own address is public, and only the front may say which host and
    address a visitor came with."""
    if not secret:
        return None
    given = guards.header(headers, "x-hatchway-front") or ""
    if hmac.compare_digest(given.encode(), secret.encode()):
        return None
    return error_reply(
        403,
        "front-required",
        "WebSockets reach tunnels through the tunnel's own address, not this API's.",
    )


class VisitorSockets:
    """The socket path of ``Relay``: both APIs' events about visitors' sockets come here."""

    def __init__(self, relay: SocketRelay, sockets: SocketPoster) -> None:
        self.relay = relay
        self.sockets = sockets

    # --- The visitor-socket API -------------------------------------------------------------

    def connect(self, socket_id: str, visit: Visit) -> Reply:
        """``$connect``: the visit that opens the socket. 101 means accepted (the handler
        answers API Gateway 200); a 2xx other than that is no handshake, so it is refused."""
        refused = front_refusal(visit.headers, self.relay.config.front_secret)
        if refused is not None:
            return refused
        try:
            protocol.validate_socket_id(socket_id)
        except ProtocolError as exc:
            return error_reply(400, "bad-request", f"The relay refused the socket: {exc}.")
        reply = self.relay.visitors.visit(replace(visit, socket=socket_id))
        if 200 <= reply.status < 300:
            return error_reply(
                502,
                "local-app-not-websocket",
                f"The local app answered the WebSocket handshake with {reply.status} instead of "
                "101 Switching Protocols: it does not serve a WebSocket at that path.",
            )
        return reply

    def from_visitor(self, socket_id: str, data: bytes, binary: bool) -> None:
        """``$default``: one message from the visitor, on to the app."""
        record = self.relay.store.get_socket(socket_id)
        if record is None:
            self._close_visitor(
                socket_id, protocol.CLOSE_INTERNAL, "relay: this socket is no longer paired"
            )
            return
        if binary and not self.relay.config.socket_binary:
            self._close_both(
                record,
                protocol.CLOSE_UNSUPPORTED_DATA,
                "relay: binary messages cannot pass this relay's WebSocket API",
            )
            return
        if len(data) > protocol.MAX_SOCKET_MESSAGE_BYTES:
            self._close_both(
                record,
                protocol.CLOSE_TOO_BIG,
                f"visitor: a message of {len(data)} bytes is past the tunnel's "
                f"{protocol.MAX_SOCKET_MESSAGE_BYTES}-byte limit",
            )
            return
        text = codec.encode(protocol.SocketFrame(socket_id, data, binary))
        try:
            if not self._to_agent(record, text):
                self._agent_lost(record)
        except PostFailed as exc:  # a message the visitor sent must not vanish in silence
            self._close_both(
                record,
                protocol.CLOSE_INTERNAL,
                f"relay: could not pass a message to the agent ({exc.why})",
            )

    def visitor_left(self, socket_id: str, code: int, reason: str) -> None:
        """``$disconnect``: the visitor's socket closed (or API Gateway closed it)."""
        record = self.relay.store.delete_socket(socket_id)
        if record is None:
            return
        close = protocol.SocketClose(
            socket_id,
            protocol.sendable_close_code(code),
            protocol.close_reason(reason or "the visitor left"),
        )
        self._tell_agent(record, close)

    # --- The agents' API --------------------------------------------------------------------

    def from_agent(
        self,
        connection_id: str,
        message: protocol.SocketFrame | protocol.SocketClose | protocol.SocketMove,
    ) -> None:
        """A socket message from an agent connection."""
        if isinstance(message, protocol.SocketMove):
            self._move(connection_id, message.sockets)
            return
        record = self._owned(connection_id, message.socket)
        if isinstance(message, protocol.SocketClose):
            if record is not None and self.relay.store.delete_socket(message.socket) is not None:
                self._close_visitor(message.socket, message.code, message.reason)
            # Confirmed, as a close handshake is: a stopping agent leaves only then, so that
            # its connection's end cannot overtake the close (its visitors would get 1011).
            self._post_agent(connection_id, codec.encode(message))
            return
        if record is None:  # gone, or not this agent's: it must stop speaking for it
            gone = protocol.SocketClose(message.socket, protocol.CLOSE_GOING_AWAY, "")
            self._post_agent(connection_id, codec.encode(gone))
            return
        if not self.relay.store.pass_socket_message(message.socket, message.seq):
            # Sent again after API Gateway lost one of the agent's messages, which was another:
            # this one reached the visitor once, and its ack went (or goes) from that pass.
            log.info(
                "socket %s: message %d came again; passed on once", message.socket, message.seq
            )
            return
        self._to_visitor(connection_id, record, message)

    def agent_gone(self, connection_id: str) -> None:
        """The agent connection is gone: its visitors' sockets are closed, in words."""
        for socket_id in self.relay.store.sockets_of(connection_id):
            record = self.relay.store.get_socket(socket_id)
            if record is None or record.connection_id != connection_id:
                continue  # moved to another connection meanwhile, or already closed
            self._agent_lost(record)

    # --- Inside -----------------------------------------------------------------------------

    def _owned(self, connection_id: str, socket_id: str) -> SocketRecord | None:
        """The socket's record if ``connection_id`` may speak for it: the connection it is
        paired with, or (an agent that replaced its connection and spoke before its move
        landed) another connection of the same token, which then takes it over."""
        record = self.relay.store.get_socket(socket_id)
        if record is None or record.connection_id == connection_id:
            return record
        connection = self.relay.store.get_connection(connection_id)
        if connection is None or connection.token_id != record.token_id:
            log.warning(
                "connection %s spoke for a socket it does not carry",
                request_ids.log_id(connection_id),
            )
            return None
        if not self.relay.store.move_socket(socket_id, record.token_id, connection_id):
            return None
        return replace(record, connection_id=connection_id)

    def _move(self, connection_id: str, socket_ids: tuple[str, ...]) -> None:
        connection = self.relay.store.get_connection(connection_id)
        if connection is None:
            return
        for socket_id in socket_ids:
            self.relay.store.move_socket(socket_id, connection.token_id, connection_id)

    def _to_visitor(
        self, connection_id: str, record: SocketRecord, frame: protocol.SocketFrame
    ) -> None:
        """Post the app's message to the visitor, then acknowledge it to the agent."""
        if frame.binary and not self.relay.config.socket_binary:
            self._close_both(
                record,
                protocol.CLOSE_UNSUPPORTED_DATA,
                "local app: it sent a binary message; this relay's WebSocket API carries text only",
            )
            return
        pause = OPEN_RETRY_SECONDS
        while True:
            try:
                self.sockets.send(record.socket_id, frame.data, frame.binary)
                break
            except ConnectionGone:
                now = self.relay.clock.now()
                if now + pause > record.opened_at + OPEN_GRACE_SECONDS:
                    self.visitor_left(record.socket_id, protocol.CLOSE_GOING_AWAY, "")
                    return
                self.relay.clock.sleep(pause)
                pause *= 2
            except PostFailed as exc:
                self._close_both(
                    record,
                    protocol.CLOSE_INTERNAL,
                    f"relay: could not pass a message to the visitor ({exc.why})",
                )
                return
        ack = protocol.SocketAck(record.socket_id, frame.seq)
        self._post_agent(connection_id, codec.encode(ack))

    def _to_agent(self, record: SocketRecord, text: str) -> bool:
        """Post to the socket's agent connection; a connection gone in between may have
        handed the socket to its successor (``SocketMove``): try that one once. False when
        no agent connection took it; ``PostFailed`` when the post failed otherwise."""
        try:
            self.relay.poster.post(record.connection_id, text)
            return True
        except ConnectionGone:
            pass
        fresh = self.relay.store.get_socket(record.socket_id)
        if fresh is None or fresh.connection_id == record.connection_id:
            return False
        return self._post_agent(fresh.connection_id, text)

    def _tell_agent(self, record: SocketRecord, close: protocol.SocketClose) -> None:
        """A close for the agent, best effort: an agent never told closes the app's side once
        the socket has been idle for ``SOCKET_IDLE_SECONDS``."""
        try:
            self._to_agent(record, codec.encode(close))
        except PostFailed as exc:
            log.warning("could not tell the agent a socket closed: %s", exc.why)

    def _post_agent(self, connection_id: str, text: str) -> bool:
        """Post to an agent connection, best effort: False if it failed (logged unless gone)."""
        try:
            self.relay.poster.post(connection_id, text)
            return True
        except ConnectionGone:
            return False
        except PostFailed as exc:
            log.warning(
                "could not post a socket message to connection %s: %s",
                request_ids.log_id(connection_id),
                exc.why,
            )
            return False

    def _agent_lost(self, record: SocketRecord) -> None:
        if self.relay.store.delete_socket(record.socket_id) is not None:
            self._close_visitor(
                record.socket_id,
                protocol.CLOSE_INTERNAL,
                f"agent: the agent serving tunnel {record.tunnel!r} is gone",
            )

    def _close_both(self, record: SocketRecord, code: int, reason: str) -> None:
        """Close the visitor's side and the app's, with the same code and reason."""
        if self.relay.store.delete_socket(record.socket_id) is None:
            return
        reason = protocol.close_reason(reason)
        self._close_visitor(record.socket_id, code, reason)
        close = protocol.SocketClose(record.socket_id, code, reason)
        self._tell_agent(record, close)

    def _close_visitor(self, socket_id: str, code: int, reason: str) -> None:
        try:
            self.sockets.close(
                socket_id, protocol.sendable_close_code(code), protocol.close_reason(reason)
            )
        except PostFailed as exc:  # API Gateway closes it by itself once idle
            log.warning("could not close a visitor's socket: %s", exc.why)
