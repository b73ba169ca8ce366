"""One WebSocket connection of an agent session: its reader, which hands requests to the
session's workers and answers the relay's errors, and its ticker, which marks slow requests,
pings, and starts the rotation; and how a message goes out as frames."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from hatchway import protocol
from hatchway.errors import HatchwayError, NameTaken
from hatchway.protocol import Fault, ProtocolError, Request, Response, codec
from hatchway.serving.answers import RecentAnswers
from hatchway.serving.bodies import looks_compressible
from hatchway.serving.forward import StreamedResponse
from hatchway.serving.inflight import (
    MAX_MARKS_PER_SCAN,
    WORKING_SCAN_SECONDS,
    Admission,
    GatePlace,
    HeldRequests,
    TunnelGate,
    Waiting,
)
from hatchway.serving.sockets import SocketResponse, Sockets
from hatchway.serving.tunnel_stats import TunnelStats
from hatchway.transport import blobs, http1, wire
from hatchway.transport.wire import FrameWriter, Link


class Remembers(Protocol):
    """The ids a session accepted already (``session.SeenRequests``)."""

    def first_time(self, request: Request, now: float) -> bool: ...


class SessionParts(Protocol):
    """What a connection uses of its session (``session.Session``, which makes and replaces
    its connections): the handler and its hooks, the state shared by every connection of the
    session, and the few steps the session owns."""

    handler: Callable[[Request], Response]
    on_request_done: Callable[[Request, Response, float], None] | None
    request_done_may_wait: Callable[[], bool]
    serve_on_reader: bool
    compress: bool
    rotate_after: float
    gate: TunnelGate
    answers: RecentAnswers
    welcome: protocol.Welcome | None
    sockets: Sockets
    _pool: ThreadPoolExecutor

    @property
    def seen(self) -> Remembers: ...

    @property
    def granted(self) -> tuple[str, ...]: ...

    def relay_now(self) -> float: ...

    def hello(self) -> protocol.Hello: ...

    def blob_timeout(self, request: Request) -> float: ...

    def _outgoing(self, request: Request, response: Response) -> Response: ...

    def _rotate(self, old: Connection) -> None: ...

    def _socket_opened(self, connection: Connection, socket_id: str) -> None: ...


log = logging.getLogger("hatchway.agent")

CLOSE_WAIT_SECONDS = 1.0
"""Longest a closing connection waits for the relay to answer its close."""

SILENCE_FACTOR = 3
"""A connection that received nothing for this many heartbeats is treated as dead."""

INLINE_WAIT_SECONDS = 0.002
"""How long the reader, serving a request itself, waits on a socket before it hands the
reading to a new thread and goes on with the request as any worker would. A fast app's
requests are then served without passing between threads at all (at 32 requests in flight the
interpreter changed threads a dozen times per request), and a slow one holds up the requests
behind it by this long at most."""

INLINE_PAUSE_SECONDS = 0.1
"""After a hand-over, requests go straight to workers for this long: an app that keeps the
reader waiting would otherwise hold up every request behind it by ``INLINE_WAIT_SECONDS``
(while it stays slow, the reader loses at most that in every pause)."""

INLINE_BODY_BYTES = 64 * 1024
"""An answer whose body is larger is encoded (compressed, base64) after the reading has been
handed over: about a millisecond of work per 64 KiB."""

START_MARGIN_SECONDS = WORKING_SCAN_SECONDS + 1.0
"""A request not marked as being worked on starts only if the relay's give-up time
(``Request.start_by``) is at least this far off: its mark goes out at the next scan and must
land before then."""

UNDELIVERED_LOOKBACK_SECONDS = 2.0
"""Answers sent this recently go again when API Gateway says it could not take a message: its
frame comes back within moments of the message it is about."""

UNDELIVERED_RETRY_SECONDS = 0.5
"""They go again after a random pause of up to this long, so that a throttled API is not met
by every agent's repeats at once."""

INLINE_SEND_BYTES = 16 * 1024
"""Sends up to this size are not waited on first: a request's socket is empty when it starts
(the previous exchange on it was read to its end), and the kernel takes at least this much."""

_IDENTITY_ENCODINGS = frozenset({"", "identity"})

RELAY_SOCKET_MESSAGES = (protocol.SocketFrame, protocol.SocketAck, protocol.SocketClose)
"""What the relay sends about visitors' sockets: handed to the session's ``Sockets``."""


def worth_compressing(response: Response) -> bool:
    """A body the app already encoded (gzip, br...) or that looks random is sent as it is."""
    for name, value in response.headers:
        if name.lower() == "content-encoding" and value.strip().lower() not in _IDENTITY_ENCODINGS:
            return False
    return looks_compressible(response.body)


def send_message(writer: FrameWriter, message: protocol.Message, compress: bool = True) -> None:
    """Encode ``message`` and send it as one WebSocket message in frames of at most
    ``MAX_FRAME_BYTES`` (API Gateway's frame limit): a text frame, then continuation frames,
    all in one write."""
    # Encoded messages are ASCII.
    chunks = [
        chunk.encode("ascii") for chunk in codec.split_frames(codec.encode(message, compress))
    ]
    writer.message(chunks)


class Connection:
    """One WebSocket to the relay with its reader and ticker threads.

    A connection is *serving* (the session's current one), then, once a rotation replaced it,
    *retiring*: it still reads and answers what the relay sends it (a relay function may route
    by a claim it read up to ``CLAIM_CACHE_SECONDS`` ago) but no longer pings; it closes once it
    has been quiet and answered everything it accepted."""

    def __init__(
        self,
        session: SessionParts,
        link: Link,
        heartbeat: float,
        early: Sequence[Request] = (),
    ) -> None:
        self.session = session
        self.link = link
        self.early = list(early)
        """Requests that arrived before the welcome (a visitor was quick): served first."""
        self.heartbeat = heartbeat
        self.opened_at = time.monotonic()
        self.last_received = time.monotonic()
        self.last_request = time.monotonic()
        self.writer = link.writer
        self.frames = link.reader
        self.ended = threading.Event()
        self.held = HeldRequests()
        """Requests accepted and not answered yet: drained before closing, marked when slow."""
        self.served: dict[str, int] = {}
        """Requests answered on this connection, per tunnel: reported in each ping."""
        self.served_lock = threading.Lock()
        self.stats = TunnelStats()
        """How each tunnel's answers went (errors by cause, latency): also in each ping."""
        self.error: BaseException | None = None
        self.fatal: HatchwayError | None = None
        """Why the session must stop rather than reconnect (the names went to another agent)."""
        self.reading: _Reading | None = None
        """The current reader's role."""
        self.inline_after = 0.0
        """No request is served by the reader itself before this (``INLINE_PAUSE_SECONDS``)."""
        self.retiring = False
        self.leaving = False
        """``Leaving`` went out: the relay routes nothing new here (``leave``)."""
        self.rotating = False
        self.saying_hello = False
        """A hello went out again on this connection (a name was lost); its answer is due."""
        self.marked: deque[tuple[float, str]] = deque(maxlen=MAX_MARKS_PER_SCAN)
        """The latest ``Working`` marks sent (when, which request): sent again with the
        answers when the platform could not take a message."""
        self.streams: dict[str, float] = {}
        """The streamed bodies this connection carries, each with the time (monotonic) by
        which it ends whatever the app does: a retiring connection outlives them."""
        self.streams_lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._read, name="hatchway-reader", daemon=True).start()
        threading.Thread(target=self._tick, name="hatchway-ticker", daemon=True).start()

    def send(self, message: protocol.Message) -> None:
        compress = self.session.compress
        if compress and isinstance(message, Response) and message.body:
            compress = worth_compressing(message)
        send_message(self.writer, message, compress)

    def close(self) -> None:
        """Say goodbye, give the relay ``CLOSE_WAIT_SECONDS`` to answer (the reader sees its
        close), then drop the socket. Never called by the reader itself."""
        try:
            self.writer.control(wire.CLOSE, wire.CLOSE_NORMAL)
            self.ended.wait(CLOSE_WAIT_SECONDS)
        except OSError:  # already broken: the point was to stop it
            pass
        self.link.abort()
        self.ended.set()

    def _read(self) -> None:
        for request in self.early:
            self._accept(request)
        self.early.clear()
        self._reading(_Reading())

    def _reading(self, role: _Reading) -> None:
        """Read until the connection ends, or until this thread handed the reading over
        (``_Reading``) while it served a request itself."""
        self.reading = role
        try:
            while True:
                opcode, data = self.frames.message()
                if opcode == wire.CLOSE:
                    break
                self.last_received = time.monotonic()
                if opcode == wire.TEXT:
                    self._on_text(data, role)
                    if role.handed_over:
                        return
        except OSError as exc:
            self.error = exc
        finally:
            if not role.handed_over:  # else the thread reading now ends the connection
                self.ended.set()

    def _on_text(self, text: bytes, role: _Reading | None = None) -> None:
        try:
            message = codec.decode(text)
        except ProtocolError as exc:
            log.warning("relay sent a bad message: %s", exc)
            request_id = request_id_of(text)
            if request_id is not None:  # a visitor is waiting: tell them now, not at the timeout
                self._answer(agent_fault(request_id, exc.status, f"bad request message: {exc}"))
            return
        if isinstance(message, Request):
            self.last_request = time.monotonic()
            self._accept(message, role)
        elif isinstance(message, RELAY_SOCKET_MESSAGES):
            self.session.sockets.dispatch(message)
        elif isinstance(message, protocol.Error):
            self._on_error(message)
        elif isinstance(message, protocol.Undelivered):
            self._on_undelivered()
        elif isinstance(message, protocol.Welcome) and self.saying_hello:
            self.saying_hello = False
            self.session.welcome = message
            log.warning("took the tunnel names back: %s", ", ".join(self.session.granted))

    def _on_undelivered(self) -> None:
        """API Gateway could not take one of this connection's messages (throttled or failed);
        which one, it does not say. The connection is fine. Answers sent in the last moments
        go again, once each, after a pause (a repeat changes nothing stored), and so do the
        visitors' sockets' messages the relay has not confirmed (it passes a repeat on once)
        and a hello still waiting for its welcome; a lost ping only costs one heartbeat."""
        resent = self.session.answers.recent(UNDELIVERED_LOOKBACK_SECONDS)
        since = time.monotonic() - UNDELIVERED_LOOKBACK_SECONDS
        sockets = self.session.sockets.unconfirmed(since)
        # A copy first: the ticker appends meanwhile (list() of a deque is one step).
        latest = list(self.marked)
        marks = [rid for at, rid in latest if at >= since and self.held.age(rid) is not None]
        self.marked.clear()  # each mark goes again at most once
        log.warning(
            "the relay could not take a message: throttled or failed; %s",
            f"sending {len(resent)} recent answers, {len(marks)} marks and "
            f"{len(sockets)} socket messages again"
            if resent or marks or sockets
            else "nothing to send again",
        )
        if not (resent or marks or sockets or self.saying_hello or self.leaving):
            return
        session = self.session

        def again() -> None:
            if self.ended.wait(random.uniform(0, UNDELIVERED_RETRY_SECONDS)):
                return
            try:
                for response in resent:
                    self.send(response)
                for request_id in marks:
                    self.send(protocol.Working(request_id))
                if self.saying_hello:
                    self.send(session.hello())
                if self.leaving:  # it may have been the lost one; twice changes nothing
                    self.send(protocol.Leaving())
            except (OSError, ProtocolError):
                pass  # the reader notices a broken socket
            session.sockets.send_again(sockets)  # on the current connection, as they went

        threading.Thread(target=again, name="hatchway-resend", daemon=True).start()

    def _on_error(self, error: protocol.Error) -> None:
        session = self.session
        if error.code == "name_lost":
            if self.retiring:  # its names went to the connection that replaced it, as meant
                return
            log.warning("%s; asking for the names again", error.message)
            self.saying_hello = True
            try:
                self.send(session.hello())
            except OSError:
                self.link.abort()
        elif error.code == "name_taken" and self.saying_hello:
            # Another agent of this token serves the names now: pinging on while serving
            # nothing would leave the user believing the tunnel is up.
            log.error("lost the tunnel names for good: %s", error.message)
            self.fatal = NameTaken(error.message)
            self.link.abort()
        else:
            log.warning("relay says %s: %s", error.code, error.message)
            if error.code == "not_connected":
                # The relay forgot this connection (its token was revoked, or its record was
                # lost): reconnecting either restores the tunnels or reports the refusal.
                self.link.abort()

    def _accept(self, request: Request, reading: _Reading | None = None) -> None:
        """Admit ``request`` and have it served: by the reader itself (``reading``, its role)
        when its body is in the message, else by a worker."""
        session = self.session
        if not session.seen.first_time(request, session.relay_now()):
            log.debug("ignored a repeated delivery of request %s", request.id)
            return
        waiting = Waiting(
            request.id,
            len(request.body),
            request.deadline,
            time.monotonic(),
            lambda place: self._start(request, place),
            lambda why: self._refuse_busy(request, why),
        )
        admission = session.gate.admit(request.tunnel, waiting)
        if admission is Admission.FULL:
            gate, line = session.gate, session.gate.waiting(request.tunnel)
            full = (
                f"{line} more waiting their turn, the most that may"
                if line >= gate.waiting_limit
                else f"{line} more waiting their turn with {gate.waiting_bytes // 1024**2} MiB "
                "of bodies at most, which this one's body would pass"
            )
            self._refuse_busy(
                request, f"its local app has {gate.limit} requests in progress and {full}"
            )
            return
        self.held.add(request.id, time.monotonic() - self._relay_age(request))
        if admission is Admission.WAITING:
            return  # started when a place frees up, or refused near the relay's deadline
        place = GatePlace(session.gate, request.tunnel)
        if (
            reading is not None
            and request.body_url is None
            and session.serve_on_reader
            and time.monotonic() >= self.inline_after
        ):
            self._serve_inline(request, place, reading)
            return
        self._start(request, place)

    def _start(self, request: Request, place: GatePlace) -> None:
        """Hand ``request``, which holds ``place``, to a worker."""
        try:
            self.session._pool.submit(self._serve, request, place)
        except RuntimeError:  # the session is shutting down
            place.leave()
            self.held.done(request.id)

    def _refuse_busy(self, request: Request, why: str) -> None:
        """Answer ``request`` 503 tunnel-busy, unstarted: ``why`` says what was full."""
        log.warning("refused request %s on %s: %s", request.id, request.tunnel, why)
        self.held.done(request.id)
        self._answer(
            agent_fault(
                request.id,
                503,
                f"tunnel {request.tunnel!r} is busy: {why}; try again when it has caught up",
                side="local app",
            ),
            request.tunnel,  # counted under tunnel-busy, as every answer a visitor got
        )

    def _serve_inline(self, request: Request, place: GatePlace, reading: _Reading) -> None:
        """Serve ``request`` on the reader's own thread. Before any wait on a socket that lasts
        past ``INLINE_WAIT_SECONDS`` (or a connect, or long work), the reading passes to a new
        thread, and this one goes on with the request and then ends; the ticker passes it on
        too if a request holds the reader for a whole tick anyway."""

        def hand_over_if_slow(sock: socket.socket | None, size: int) -> None:
            if reading.handed_over:  # by the ticker
                http1.before_blocking(None)
                return
            if sock is not None:
                if size:
                    if size <= INLINE_SEND_BYTES:
                        return
                    ready = select.select((), (sock,), (), INLINE_WAIT_SECONDS)[1]
                else:
                    ready = select.select((sock,), (), (), INLINE_WAIT_SECONDS)[0]
                if ready:
                    return
            http1.before_blocking(None)
            self._hand_over(reading)

        with reading.lock:
            reading.served += 1
            reading.busy = True
        http1.before_blocking(hand_over_if_slow)
        try:
            self._serve(request, place, reading)
        finally:
            http1.before_blocking(None)
            with reading.lock:
                reading.busy = False  # from here the ticker may no longer hand over

    def _hand_over(self, reading: _Reading, served: int | None = None) -> None:
        """A new thread takes the reading over from the one serving a request itself; once
        only, and only while it serves (``served``: that very request, for the ticker)."""
        with reading.lock:
            if reading.handed_over or not reading.busy:
                return
            if served is not None and served != reading.served:
                return
            reading.handed_over = True
        # The app is slow just now: the next requests go to workers a while, rather than
        # each holding the reader up first.
        self.inline_after = time.monotonic() + INLINE_PAUSE_SECONDS
        threading.Thread(
            target=self._reading, args=(_Reading(),), name="hatchway-reader", daemon=True
        ).start()

    def _relay_age(self, request: Request) -> float:
        """How long ago the relay posted ``request`` (0 if it does not say): its "working"
        mark is due that long sooner than the agent's own clock would say."""
        if not request.start_by:
            return 0.0
        posted = request.start_by - protocol.AGENT_SILENCE_SECONDS
        return max(0.0, self.session.relay_now() - posted)

    def _given_up(self, request: Request) -> str | None:
        """Why the relay has stopped waiting for ``request`` (or will have before it could hear
        from the agent), or None: a request its visitor was told failed must never start."""
        now = self.session.relay_now()
        if request.deadline and now > request.deadline:
            return f"the relay stopped waiting {now - request.deadline:.1f} s ago"
        if request.start_by and not self.held.marked(request.id):
            left = request.start_by - now
            if left < START_MARGIN_SECONDS:
                # Unmarked, the relay answers 502 agent-unresponsive at start_by: a mark sent
                # now might arrive after that.
                when = f"{-left:.1f} s ago" if left < 0 else "in a moment"
                return f"the relay gives up on it {when}: nothing said the agent was on it"
        return None

    def _serve(self, request: Request, place: GatePlace, reading: _Reading | None = None) -> None:
        try:
            why = self._given_up(request)
            if why is not None:
                log.warning(
                    "dropped request %s (%s %s on %s) unexecuted: %s",
                    request.id,
                    request.method,
                    request.path,
                    request.tunnel,
                    why,
                )
                return
            self._serve_in_time(request, place, reading)
        finally:
            place.leave()
            self.held.done(request.id)

    def _serve_in_time(
        self, request: Request, place: GatePlace, reading: _Reading | None = None
    ) -> None:
        started = time.monotonic()
        session = self.session
        if request.body_url is not None:
            try:
                body = blobs.fetch(
                    request.body_url, protocol.MAX_BODY_BYTES, session.blob_timeout(request)
                )
            except blobs.BlobError as exc:
                message = f"the request body could not be fetched from the relay: {exc}"
                log.warning("request %s: %s", request.id, message)
                place.leave()
                self._answer(agent_fault(request.id, 502, message), request.tunnel)
                return
            request = dataclasses.replace(request, body=body, body_url=None, body_size=0)
        try:
            if request.socket:
                response = session.sockets.open(request, session.handler)
            else:
                response = session.handler(request)
        except Exception as exc:  # a handler bug must not leave the visitor hanging
            log.exception("handler failed for %s %s", request.method, request.path)
            response = Response(request.id, 502, fault=Fault("agent", str(exc)))
        outgoing = session._outgoing(request, response)
        # The app is done with it: its place is given back before the answer goes out, so the
        # visitor's next request can never find this one still counted against the tunnel.
        # An open socket holds no place either: it lives on in ``session.sockets``.
        place.leave()
        if len(outgoing.body) > INLINE_BODY_BYTES:
            http1.long_work_ahead()  # compressing and encoding it is no job for the reader
        self._answer(outgoing, request.tunnel)
        if isinstance(outgoing, StreamedResponse):
            self._stream(request, outgoing.pieces)
        elif isinstance(outgoing, SocketResponse):
            self._bridge(request.socket)
        elapsed_ms = (time.monotonic() - started) * 1000
        if session.on_request_done:
            if reading is not None and not reading.handed_over and session.request_done_may_wait():
                # A hook that may wait (an API user's callback) runs on a worker, so that the
                # reader is back at its socket whatever it does. The display and the inspector
                # run here: a hand-over to a worker costs the interpreter changing threads.
                with contextlib.suppress(RuntimeError):  # the session is shutting down
                    session._pool.submit(session.on_request_done, request, response, elapsed_ms)
                    return
            session.on_request_done(request, response, elapsed_ms)

    def _bridge(self, socket_id: str) -> None:
        """The 101 went out: the socket's messages may flow (on the session's current
        connection, which this one may no longer be)."""
        sockets = self.session.sockets
        if self.ended.is_set():  # the answer was lost with the connection
            sockets.abandon(socket_id)
            return
        self.session._socket_opened(self, socket_id)
        sockets.start(socket_id)

    def _stream(self, request: Request, pieces: Generator[bytes, None, None]) -> None:
        """Pass a streamed body on as the app writes it, one ``Chunk`` per piece (split at
        ``MAX_CHUNK_BYTES``), then the end: cut, with a fault, if the app failed mid-stream."""
        http1.long_work_ahead()  # a stream holds its thread: the reader goes on elsewhere
        ends_by = time.monotonic() + protocol.STREAM_MAX_SECONDS
        # Past ``ends_by`` the next piece ends it; an app that then sends nothing, its idle limit.
        with self.streams_lock:
            self.streams[request.id] = ends_by + protocol.STREAM_IDLE_SECONDS
        try:
            self._pass_stream(request, pieces, ends_by)
        finally:
            with self.streams_lock:
                self.streams.pop(request.id, None)

    def _pass_stream(
        self, request: Request, pieces: Generator[bytes, None, None], ends_by: float
    ) -> None:
        """Each piece in its chunks, then the end chunk, with the fault that cut it if any."""
        seq, fault = 0, None
        try:
            for piece in pieces:
                if time.monotonic() > ends_by:
                    fault = f"the stream ran past {protocol.STREAM_MAX_SECONDS:g} s, its limit"
                    break
                for start in range(0, len(piece), protocol.MAX_CHUNK_BYTES):
                    body = piece[start : start + protocol.MAX_CHUNK_BYTES]
                    self.send(protocol.Chunk(request.id, seq, body))
                    seq += 1
        except TimeoutError:
            fault = f"the local app sent nothing for {protocol.STREAM_IDLE_SECONDS:g} s"
        except (http1.Truncated, http1.BadReply) as exc:
            fault = f"the local app's stream broke: {exc}"
        except OSError as exc:  # the relay's connection, or the app's
            fault = f"the stream broke: {type(exc).__name__}: {exc}"
        finally:
            pieces.close()  # the app's connection with it
        if fault is not None:
            log.warning("request %s: %s", request.id, fault)
        with contextlib.suppress(OSError, ProtocolError):
            self.send(protocol.Chunk(request.id, seq, end=True, fault=fault))

    def _answer(self, response: Response, tunnel: str | None = None, keep: bool = True) -> None:
        """Send ``response``; ``keep`` it a while, in case API Gateway cannot take it. It is
        kept before it goes out: the platform's frame may come back before this thread runs
        again."""
        if keep:
            self.session.answers.put(response)
        try:
            self.send(response)
        except ProtocolError as exc:  # e.g. the app's headers exceed what a message carries
            log.warning("could not encode the response to %s: %s", response.id, exc)
            fault = agent_fault(response.id, exc.status, f"the response cannot be sent: {exc}")
            if keep:
                self.session.answers.put(fault)  # in the unsendable answer's place
            try:
                self.send(fault)
            except (OSError, ProtocolError):
                return
            response = fault
        except OSError as exc:
            log.warning("could not send the response to %s: %s", response.id, exc)
            return
        if tunnel is not None and tunnel in self.session.granted:
            # Only answers to a granted tunnel's request count (a repeated answer, or one to
            # an undecodable request, has none), so a ping never reports more tunnels than the
            # hello asked for, whatever names a relay sends requests for.
            with self.served_lock:
                self.served[tunnel] = self.served.get(tunnel, 0) + 1
            self.stats.record(tunnel, response, self.held.age(response.id))

    def _tick(self) -> None:
        """Marks slow requests, pings, notices a silent relay, and starts the rotation."""
        tick = min(WORKING_SCAN_SECONDS, self.heartbeat)
        next_ping = time.monotonic() + self.heartbeat
        held_reader: tuple[_Reading, int] | None = None
        while not self.ended.wait(self._next_tick(tick)):
            # A request the reader serves itself for a whole tick (a handler that waits
            # without a socket of ``http1``'s) gets the reading passed on.
            reading = self.reading
            busy = (reading, reading.served) if reading is not None and reading.busy else None
            if busy is not None and busy == held_reader:
                self._hand_over(*busy)
            held_reader = busy
            for waiting in self.session.gate.expire(self.session.relay_now()):
                waited = time.monotonic() - waiting.since
                waiting.refuse(
                    f"it waited {waited:.0f} s for its turn and the relay's deadline is near"
                )
            try:
                for request_id in self.held.due():
                    self.marked.append((time.monotonic(), request_id))
                    self.send(protocol.Working(request_id))
                if self.retiring:
                    continue
                now = time.monotonic()
                if now - self.last_received > SILENCE_FACTOR * self.heartbeat:
                    log.warning(
                        "relay silent for %.0f s; reconnecting", SILENCE_FACTOR * self.heartbeat
                    )
                    self.link.abort()
                    return
                if not self.rotating and now - self.opened_at >= self.session.rotate_after:
                    self.rotating = True
                    threading.Thread(
                        target=self.session._rotate, args=(self,), name="hatchway-rotate"
                    ).start()
                if now >= next_ping:
                    next_ping = now + self.heartbeat
                    with self.served_lock:
                        served = tuple(sorted(self.served.items()))
                    self.send(protocol.Ping(time.time(), served, self.stats.health()))
            except OSError:
                self.link.abort()
                return

    def _next_tick(self, tick: float) -> float:
        """Seconds to the next tick: ``tick``, or sooner when the rotation is due sooner."""
        if self.rotating or self.retiring:
            return tick
        rotate_in = self.opened_at + self.session.rotate_after - time.monotonic()
        return max(0.0, min(tick, rotate_in))

    def leave(self, quiet: float, limit: float) -> None:
        """Take no new work: tell the relay (``Leaving``), then ``retire``. A request that
        still arrives was routed by a relay function that had not heard yet (it remembers a
        claim up to a second): it is served like any other, since this connection is the only
        one that can answer it."""
        self.leaving = True
        try:
            self.send(protocol.Leaving())
        except OSError:
            return  # broken already: nothing more can be answered on it
        self.retire(quiet, limit)

    def retire(self, quiet: float, limit: float, *, outlive_streams: bool = False) -> None:
        """Stop pinging; return once no request arrived for ``quiet`` seconds and every one
        accepted is answered, or after ``limit`` seconds, or when the socket ended.

        ``outlive_streams`` (a rotation): a streamed body still running after ``limit`` is
        waited for to its end too. It cannot go on elsewhere: the relay reads its chunks from
        the connection its request went to, and a rotation leaves room for a whole stream
        (``STREAM_ROTATE_SECONDS``)."""
        self.retiring = True
        self.last_request = time.monotonic()
        limit_at = self.last_request + limit
        while not self.ended.is_set():
            now = time.monotonic()
            deadline = max(limit_at, self._streams_end()) if outlive_streams else limit_at
            if now >= deadline:
                break
            still_quiet_for = self.last_request + quiet - now
            if still_quiet_for > 0:
                self.ended.wait(min(still_quiet_for, deadline - now))
            elif (
                self.held.wait_empty(min(quiet, deadline - now))
                and time.monotonic() - self.last_request >= quiet
            ):
                return
        if len(self.held):
            log.warning("closed a connection with %d requests unanswered", len(self.held))

    def _streams_end(self) -> float:
        """When the last streamed body this connection carries ends at the latest (0: none)."""
        with self.streams_lock:
            return max(self.streams.values(), default=0.0)

    def drain(self, timeout: float) -> None:
        """Wait (bounded) until every request this connection accepted has been answered."""
        self.held.wait_empty(timeout)


def agent_fault(request_id: str, status: int, message: str, side: str = "agent") -> Response:
    """The agent's own answer when it cannot produce the app's; ``side`` names who failed."""
    status = status if 400 <= status <= 599 else 502
    return Response(request_id, status, fault=Fault(side, message))


def request_id_of(text: bytes) -> str | None:
    """The id of a request message that failed to decode, if it has a valid one."""
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and obj.get("type") == "request":
            return protocol.validate_id(str(obj.get("id")))
    except (ValueError, RecursionError, ProtocolError):
        pass
    return None


class _Reading:
    """The reader's role on one thread: ``busy`` while it serves a request itself (the
    ``served``-th), ``handed_over`` once another thread reads instead (with a role of its own)."""

    __slots__ = ("busy", "handed_over", "lock", "served")

    def __init__(self) -> None:
        self.handed_over = False
        self.busy = False
        self.served = 0
        self.lock = threading.Lock()
