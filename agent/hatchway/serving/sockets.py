"""Visitors' WebSockets on the agent's side: each one the local app accepted (``Bridge``), and
the session's set of them (``Sockets``), which passes their messages between the app and the
relay.

A socket opens as a request (``Request.socket``): the forwarder opens the WebSocket to the local
app and answers with a ``SocketResponse``, a 101 that carries the open link; ``Sockets.open``
wraps that call, refusing past ``MAX_SOCKETS_PER_CONNECTION``. From then on:

* the app's messages go to the relay one at a time, numbered from 1 (``SocketFrame.seq``): the
  next is read from the app only once the relay confirmed the last (``SocketAck``), within
  ``SocketLimits.ack_seconds``, else both sides are closed with 1011. The open itself is
  message 0, which the relay confirms once it stored the pair. One thread per socket
  reads the app; the app's pings are answered here and never cross.
* the visitor's messages (``SocketFrame`` from the relay) wait in a bounded queue for a
  short-lived writer thread, so that the connection's reader never waits on an app.
* a close either way is passed on once (``SocketClose``), with a code a close frame may carry;
  a socket idle for ``SOCKET_IDLE_SECONDS`` or open for ``SOCKET_MAX_SECONDS`` is closed with
  1001 both ways, as API Gateway would close the visitor's, and an app that does not answer a
  close within ``CLOSE_WAIT_SECONDS`` loses its connection.

Messages to the relay leave through ``send``, which the session points at its current
connection: sockets outlive a rotation of the connection (``SocketMove``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hatchway import protocol
from hatchway.protocol import (
    Fault,
    ProtocolError,
    Request,
    Response,
    SocketAck,
    SocketClose,
    SocketFrame,
    SocketMove,
)
from hatchway.protocol.sockets import SocketMessage
from hatchway.transport import wire
from hatchway.transport.wire import Link

log = logging.getLogger("hatchway.agent")

CLOSE_WAIT_SECONDS = 1.0
"""How long the local app is given to answer a close before its connection is dropped."""

MAX_QUEUED_SOCKET_BYTES = 16 * protocol.MAX_SOCKET_MESSAGE_BYTES
"""Most bytes of a visitor's messages waiting for the local app to read them (about 1.5 MiB);
past it the app is not keeping up, and the socket closes with 1008 rather than grow without
bound."""

OPENED_SEQ = 0
"""The open counts as a socket's message 0: the relay acks it (``SocketAck``) once it stored
the pair, and the app's messages, numbered from 1, wait for that."""

STOPPING = "the agent is stopping"
"""The close reason every socket gets when the agent stops (1001)."""

APP = "the local app"


@dataclass(frozen=True)
class SocketLimits:
    """The bounds of visitors' sockets; tests shorten them, nothing else changes them."""

    idle_seconds: float = protocol.SOCKET_IDLE_SECONDS
    max_seconds: float = protocol.SOCKET_MAX_SECONDS
    ack_seconds: float = protocol.SOCKET_ACK_SECONDS
    max_sockets: int = protocol.MAX_SOCKETS_PER_CONNECTION
    max_queued_bytes: int = MAX_QUEUED_SOCKET_BYTES


@dataclass(frozen=True)
class SocketResponse(Response):
    """The local app accepted a visitor's WebSocket: a 101 (with the subprotocol it chose in
    ``sec-websocket-protocol``) and the open ``link`` to the app, which ``Sockets`` takes."""

    link: Link | None = field(default=None, repr=False, compare=False)


Send = Callable[[SocketMessage], None]
"""Sends one socket message to the relay (raises ``OSError`` when it cannot)."""

Handler = Callable[[Request], Response]


def _refusal(request: Request, status: int, message: str, side: str) -> Response:
    return Response(request.id, status, fault=Fault(side, message))


class Bridge:
    """One visitor's socket, open to the local app: passes messages both ways until a close."""

    def __init__(self, owner: Sockets, socket_id: str, link: Link) -> None:
        self.owner = owner
        self.id = socket_id
        self.link = link
        self.opened_at = self.last_active = time.monotonic()
        self._lock = threading.Lock()
        self._acked = threading.Condition(self._lock)
        self._acked_seq = -1
        self._unconfirmed: tuple[float, SocketFrame] | None = None
        """The app's message awaiting the relay's ack, and when it went (monotonic)."""
        self.closing = False
        """A close went (or is going) to the app: nothing else may, and what the app still
        sends is not passed on."""
        self.relay_knows = False
        """The relay was told (or told the agent) that the socket closed."""
        self.abort_at = math.inf
        """When the app's connection is dropped if it has not ended (a close unanswered)."""
        self.ended = threading.Event()
        self._queue: deque[tuple[int, bytes]] = deque()
        self._queued_bytes = 0
        self._writing = False
        self._written = threading.Event()
        """Set while no writer thread runs (every queued message written, or dropped)."""
        self._written.set()

    def start(self) -> None:
        threading.Thread(target=self._read, name="hatchway-socket", daemon=True).start()

    # --- The app's side -----------------------------------------------------------------------

    def _read(self) -> None:
        reader = self.link.reader
        seq = OPENED_SEQ + 1
        try:
            # The relay confirms the open once it stored the pair: a message before that could
            # reach a relay function that does not know the socket yet.
            if not self._acked_within(OPENED_SEQ, "the socket opened"):
                return
            while True:
                opcode, data = reader.message()
                if opcode == wire.CLOSE:  # the reader answered it already
                    code = reader.close_code or protocol.CLOSE_NO_STATUS
                    if code == protocol.CLOSE_NO_STATUS:
                        code = protocol.CLOSE_NORMAL
                    self.tell_relay(protocol.sendable_close_code(code), reader.close_reason)
                    with self._lock:
                        self.closing = True
                    return
                self.last_active = time.monotonic()
                if self.closing:
                    continue
                if not self._pass_on(opcode, data, seq):
                    continue  # closing now: read on until the app's close or the drop
                seq += 1
        except wire.MessageTooBig:
            limit = protocol.MAX_SOCKET_MESSAGE_BYTES
            # The message is not read: the close goes out, then the connection is dropped.
            self.close(
                protocol.CLOSE_TOO_BIG,
                f"{APP} sent a message past the tunnel's {limit}-byte limit",
            )
        except OSError as exc:
            if not self.closing:
                log.warning("socket %s: %s", self.id, exc)
            self.tell_relay(protocol.CLOSE_INTERNAL, f"{APP}'s connection ended without a close")
        finally:
            self._end()

    def _pass_on(self, opcode: int, data: bytes, seq: int) -> bool:
        """Send one app message to the relay and wait for its ack; False if it closed instead."""
        if opcode == wire.TEXT:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                self.close(1007, f"{APP} sent a text message that is not UTF-8")
                return False
        frame = SocketFrame(self.id, data, opcode == wire.BINARY, seq)
        with self._lock:
            self._unconfirmed = (time.monotonic(), frame)
        try:
            self.owner.send(frame)
        except (OSError, ProtocolError) as exc:
            log.warning("socket %s: could not pass a message on to the relay: %s", self.id, exc)
            self.close(protocol.CLOSE_INTERNAL, "the agent could not reach the relay")
            return False
        return self._acked_within(seq, f"message {seq}")

    def _acked_within(self, seq: int, what: str) -> bool:
        """Wait for the relay's ack of ``seq``; False, with both sides closing, if the socket
        closed meanwhile or the ack did not come in time."""
        limit = self.owner.limits.ack_seconds
        with self._acked:
            if self._acked.wait_for(lambda: self._acked_seq >= seq or self.closing, limit):
                return not self.closing
        self.close(protocol.CLOSE_INTERNAL, f"the relay did not confirm {what} within {limit:g} s")
        return False

    def unconfirmed_since(self, since: float) -> SocketFrame | None:
        """The app's message sent at or after ``since`` (monotonic) whose ack has not come."""
        with self._lock:
            if self._unconfirmed is None or self.closing:
                return None
            sent_at, frame = self._unconfirmed
            return frame if sent_at >= since and frame.seq > self._acked_seq else None

    def sending_again(self, frame: SocketFrame) -> bool:
        """Whether ``frame`` still awaits its ack (then it counts as sent now: if this copy is
        lost too, it goes again)."""
        with self._lock:
            if self.closing or self._unconfirmed is None or self._unconfirmed[1] != frame:
                return False
            if frame.seq <= self._acked_seq:
                return False
            self._unconfirmed = (time.monotonic(), frame)
            return True

    def _end(self) -> None:
        # A close the agent queued goes out before the connection is dropped.
        self._written.wait(CLOSE_WAIT_SECONDS)
        with self._acked:
            self.closing = True
            self._queue.clear()
            self._acked.notify_all()
        self.link.abort()
        # Closed now, not when the last reference goes: the 101 that carries the link may be
        # kept a while (the inspector, the Python API's recent exchanges).
        self.link.sock.close()
        self.owner._forget(self)
        self.ended.set()

    # --- Closing ------------------------------------------------------------------------------

    def tell_relay(self, code: int, reason: str) -> None:
        """Send the relay this socket's close, unless it knows already."""
        with self._lock:
            if self.relay_knows:
                return
            self.relay_knows = True
        close = SocketClose(self.id, code, protocol.close_reason(reason))
        try:
            self.owner.send(close)
        except (OSError, ProtocolError) as exc:
            log.warning("socket %s: could not tell the relay it closed: %s", self.id, exc)
            return
        self.owner._closed_sent(close)

    def close_app(self, code: int, reason: str) -> None:
        """Send the app a close (after the visitor's messages queued before it), and drop its
        connection if it has not answered within ``CLOSE_WAIT_SECONDS``."""
        with self._acked:
            if self.closing:
                return
            self.closing = True
            self._acked.notify_all()  # an app message waiting for its ack is not passed on
            payload = wire.close_payload(
                protocol.sendable_close_code(code), protocol.close_reason(reason)
            )
            self._queue.append((wire.CLOSE, payload))
            start = not self._writing
            self._writing = True
            self._written.clear()
            self.abort_at = time.monotonic() + CLOSE_WAIT_SECONDS
        self.owner._wake()
        if start:
            self._start_writer()

    def close(self, code: int, reason: str) -> None:
        """Close both sides with ``code``: the relay is told first, then the app."""
        log.info("socket %s: closing with %d: %s", self.id, code, reason)
        self.tell_relay(code, reason)
        self.close_app(code, reason)

    # --- The relay's side ---------------------------------------------------------------------

    def on_relay(self, message: SocketMessage) -> None:
        if isinstance(message, SocketAck):
            with self._acked:
                self._acked_seq = max(self._acked_seq, message.seq)
                self._acked.notify_all()
        elif isinstance(message, SocketFrame):
            self._to_app(wire.BINARY if message.binary else wire.TEXT, message.data)
        elif isinstance(message, SocketClose):
            with self._lock:
                self.relay_knows = True
            self.close_app(message.code, message.reason)

    def _to_app(self, opcode: int, data: bytes) -> None:
        self.last_active = time.monotonic()
        with self._lock:
            if self.closing:
                return
            full = self._queued_bytes + len(data) > self.owner.limits.max_queued_bytes
            if not full:
                self._queue.append((opcode, data))
                self._queued_bytes += len(data)
                start = not self._writing
                self._writing = True
                self._written.clear()
        if full:
            self.close(
                protocol.CLOSE_POLICY,
                f"{APP} is not reading: {self._queued_bytes} bytes of the visitor's messages "
                "wait for it",
            )
        elif start:
            self._start_writer()

    def _start_writer(self) -> None:
        threading.Thread(target=self._write, name="hatchway-socket-writer", daemon=True).start()

    def _write(self) -> None:
        writer = self.link.writer
        while True:
            with self._lock:
                if not self._queue:
                    self._writing = False
                    self._written.set()
                    return
                opcode, data = self._queue.popleft()
                if opcode != wire.CLOSE:
                    self._queued_bytes -= len(data)
            try:
                if opcode == wire.CLOSE:
                    writer.control(wire.CLOSE, data)
                else:
                    writer.message([data], opcode)
            except OSError:  # the reader sees the end too, and ends the socket
                with self._lock:
                    self._queue.clear()
                    self._writing = False
                    self._written.set()
                self.link.abort()
                return


class Sockets:
    """The session's open sockets, whichever connection to the relay carries them; ``send``
    goes through the session's current connection. Thread-safe."""

    def __init__(self, send: Send, limits: SocketLimits | None = None) -> None:
        self.send = send
        self.limits = limits or SocketLimits()
        self._bridges: dict[str, Bridge] = {}
        self._awaiting_close: dict[str, threading.Event] = {}
        """Sockets whose close a stopping agent waits for the relay to confirm."""
        self._reserved = 0
        self._closes_sent: OrderedDict[str, tuple[float, SocketClose]] = OrderedDict()
        """Closes told to the relay that it has not confirmed yet (when, which), the latest
        ``max_sockets``: sent again with the app messages awaiting their acks when API Gateway
        says it could not take a message."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._watching = False
        self._shut = False
        self.stopping = False
        """No new socket opens (the agent is stopping)."""

    def open(self, request: Request, handler: Handler) -> Response:
        """Have ``handler`` open the visitor's socket ``request.socket`` to the local app; the
        answer for the visitor. A 101 leaves the socket registered, to ``start`` once the
        answer went out."""
        with self._lock:
            if self.stopping:
                return _refusal(request, 503, f"{STOPPING}; try again in a moment", "agent")
            if len(self._bridges) + self._reserved >= self.limits.max_sockets:
                return _refusal(
                    request,
                    503,
                    f"tunnel {request.tunnel!r} is busy: this agent carries "
                    f"{self.limits.max_sockets} WebSockets, the most one connection may; "
                    "try again when one has closed",
                    "agent",
                )
            self._reserved += 1
        registered = False
        try:
            response = handler(request)
            if isinstance(response, SocketResponse) and response.link is not None:
                self._add(Bridge(self, request.socket, response.link))
                registered = True
            elif response.status == 101:
                response = _refusal(
                    request, 502, "the agent's handler does not open WebSockets", "agent"
                )
            return response
        finally:
            with self._lock:
                self._reserved -= 1
                if not registered:
                    self._changed.notify_all()

    def _add(self, bridge: Bridge) -> None:
        with self._lock:
            if self._shut:  # opened while the agent quit: nothing would ever close it
                bridge.link.abort()
                bridge.link.sock.close()
                return
            old = self._bridges.get(bridge.id)
            self._bridges[bridge.id] = bridge
            self._changed.notify_all()
            start_watch = not self._watching
            self._watching = True
        if old is not None:  # the relay reused an id: the old socket cannot be reached
            old.relay_knows = True  # and its close must not close the new one's visitor
            old.close_app(protocol.CLOSE_GOING_AWAY, "the visitor's socket was replaced")
        if start_watch:
            threading.Thread(target=self._watch, name="hatchway-sockets", daemon=True).start()

    def start(self, socket_id: str) -> None:
        """Begin passing the app's messages on: the 101 went out."""
        bridge = self.get(socket_id)
        if bridge is not None:
            bridge.start()

    def abandon(self, socket_id: str) -> None:
        """The 101 could not be sent: close the app's socket, telling the relay nothing."""
        bridge = self.get(socket_id)
        if bridge is not None:
            bridge.relay_knows = True
            bridge.close_app(protocol.CLOSE_GOING_AWAY, "the relay could not be answered")
            bridge.start()  # to read the app's answer to the close and end

    def get(self, socket_id: str) -> Bridge | None:
        with self._lock:
            return self._bridges.get(socket_id)

    def ids(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._bridges)

    def __len__(self) -> int:
        with self._lock:
            return len(self._bridges)

    def dispatch(self, message: SocketMessage) -> None:
        """A socket message from the relay. Never waits on the local app."""
        if isinstance(message, SocketMove):
            return  # the agent's to send, not to receive
        if isinstance(message, SocketClose):
            with self._lock:
                self._closes_sent.pop(message.socket, None)
                confirmed = self._awaiting_close.pop(message.socket, None)
            if confirmed is not None:
                confirmed.set()
        bridge = self.get(message.socket)
        if bridge is not None:
            bridge.on_relay(message)
        elif isinstance(message, SocketFrame):  # the relay thinks it open: it is not
            with contextlib.suppress(OSError, ProtocolError):
                self.send(
                    SocketClose(
                        message.socket, protocol.CLOSE_GOING_AWAY, "the agent has it closed"
                    )
                )

    def unconfirmed(self, since: float) -> list[SocketFrame | SocketClose]:
        """What went to the relay at or after ``since`` (monotonic) and may not have reached
        it: each app message whose ack has not come, and each close. API Gateway says when it
        could not take one of the agent's messages, not which; these go again (``send_again``),
        and the relay passes a repeated app message on once and confirms a close twice."""
        with self._lock:
            bridges = list(self._bridges.values())
            closes: list[SocketFrame | SocketClose] = [
                close for at, close in self._closes_sent.values() if at >= since
            ]
        frames: list[SocketFrame | SocketClose] = [
            frame for bridge in bridges if (frame := bridge.unconfirmed_since(since)) is not None
        ]
        return frames + closes

    def send_again(self, messages: list[SocketFrame | SocketClose]) -> None:
        """Send ``messages`` (from ``unconfirmed``) once more, each that is still unconfirmed;
        they count as sent now, so that a copy lost again goes again too (until the app
        message's ack is overdue, ``SocketLimits.ack_seconds``, and the socket closes)."""
        for message in messages:
            if isinstance(message, SocketFrame):
                bridge = self.get(message.socket)
                if bridge is None or not bridge.sending_again(message):
                    continue
            else:
                with self._lock:
                    if message.socket not in self._closes_sent:
                        continue  # confirmed meanwhile
                    self._closes_sent[message.socket] = (time.monotonic(), message)
            try:
                self.send(message)
            except (OSError, ProtocolError) as exc:  # the connection's reader sees it broken
                log.warning("socket %s: could not send a message again: %s", message.socket, exc)
                return

    def _closed_sent(self, close: SocketClose) -> None:
        with self._lock:
            self._closes_sent[close.socket] = (time.monotonic(), close)
            self._closes_sent.move_to_end(close.socket)
            while len(self._closes_sent) > self.limits.max_sockets:
                self._closes_sent.popitem(last=False)

    def close_all(self, code: int, reason: str, *, tell_relay: bool, wait: float | None) -> None:
        """Close every socket with ``code`` (telling the relay, if ``tell_relay``); wait up to
        ``wait`` seconds for the apps to answer before their connections are dropped (None:
        the usual ``CLOSE_WAIT_SECONDS``, without waiting here)."""
        with self._lock:
            bridges = list(self._bridges.values())
        for bridge in bridges:
            if tell_relay:
                bridge.tell_relay(code, reason)
            else:
                bridge.relay_knows = True
            bridge.close_app(code, reason)
        if wait is None:
            return
        deadline = time.monotonic() + wait
        for bridge in bridges:
            if not bridge.ended.wait(max(0.0, deadline - time.monotonic())):
                bridge.link.abort()

    def stop(self, wait: float = CLOSE_WAIT_SECONDS) -> None:
        """The agent is stopping: every socket closes with 1001 both ways; no new one opens.
        Returns once the relay confirmed each close (or ``wait`` passed): the connection may
        end only then, or the relay could learn of its end first and close the visitors'
        sockets as if the agent had vanished (1011)."""
        with self._lock:
            self.stopping = True
            confirmed = {socket_id: threading.Event() for socket_id in self._bridges}
            self._awaiting_close.update(confirmed)
        started = time.monotonic()
        self.close_all(protocol.CLOSE_GOING_AWAY, STOPPING, tell_relay=True, wait=wait)
        for event in confirmed.values():
            event.wait(max(0.0, started + wait - time.monotonic()))
        with self._lock:
            for socket_id in confirmed:
                self._awaiting_close.pop(socket_id, None)

    def shutdown(self) -> None:
        """Drop every app connection now (the agent quits) and stop watching."""
        with self._lock:
            self.stopping = self._shut = True
            self._changed.notify_all()
        self.close_all(protocol.CLOSE_GOING_AWAY, STOPPING, tell_relay=False, wait=0)

    def _forget(self, bridge: Bridge) -> None:
        with self._lock:
            if self._bridges.get(bridge.id) is bridge:
                del self._bridges[bridge.id]
            self._changed.notify_all()

    def _wake(self) -> None:
        with self._lock:
            self._changed.notify_all()

    def _due(self, bridge: Bridge) -> float:
        """When the watcher must next look at ``bridge``."""
        if bridge.closing:
            return bridge.abort_at
        limits = self.limits
        return min(bridge.last_active + limits.idle_seconds, bridge.opened_at + limits.max_seconds)

    def _watch(self) -> None:
        """Closes sockets idle or open too long, and drops apps that did not answer a close."""
        limits = self.limits
        while True:
            with self._lock:
                if self._shut:
                    self._watching = False
                    return
                bridges = list(self._bridges.values())
                now = time.monotonic()
                due = min((self._due(bridge) for bridge in bridges), default=math.inf)
                if due > now:
                    # Activity only moves a socket's time later: waking early just looks again.
                    self._changed.wait(min(due - now, 60.0))
                    continue
            for bridge in bridges:
                if now >= bridge.abort_at:
                    bridge.abort_at = math.inf  # once: its reader ends it
                    bridge.link.abort()
                elif bridge.closing:
                    continue
                elif now >= bridge.opened_at + limits.max_seconds:
                    bridge.close(
                        protocol.CLOSE_GOING_AWAY,
                        f"the socket was open {limits.max_seconds:g} s, the most it may be",
                    )
                elif now >= bridge.last_active + limits.idle_seconds:
                    bridge.close(
                        protocol.CLOSE_GOING_AWAY,
                        f"no message either way for {limits.idle_seconds:g} s",
                    )
