"""The agent's session with the relay: connect, hello, welcome, then serve requests until closed.

One connection at a time serves requests. Each connection has a reader thread that decodes each
message (``wire`` joins a message's frames) and hands requests to a bounded worker pool,
and a ticker thread that pings (reporting the requests answered per tunnel, and how they went:
``tunnel_stats``), notices a dead socket, and sends ``Working`` marks for requests held longer
than ``WORKING_MARK_SECONDS``, so the relay can tell a slow app from a stopped agent. Every
message goes out as frames of at most ``MAX_FRAME_BYTES``, all of them under the connection's
send lock. When a connection drops, the session reconnects with exponential backoff and full
jitter and asks for the names it was granted, so its URLs survive. One connection serves every
tunnel of the hello; requests name their tunnel and the handler routes them; each tunnel holds
a bounded number of requests, and beyond it the agent answers 503 at once.

Every hello carries this run's random ``instance``: the relay lets a connection of the same run
take the names over (a reconnect, a rotation) and no other agent. Rotation (before the
platform's 2 h limit, or as often as ``rotate_after`` says) opens the new connection first, and
keeps the old one reading and answering until it has been quiet for longer than the relay's
claim cache, so no request routed to it is lost, and until the streamed bodies it carries have
ended (an agent with a streaming tunnel rotates early enough for that: ``STREAM_ROTATE_SECONDS``).
A ping that finds a name lost makes the session say hello again on the same connection; if
another agent holds the name now, the session ends with ``NameTaken`` rather than stay
connected serving nothing.

A request is served at most once: API Gateway may deliver a message twice (a management post it
retried after it landed), so the session remembers the ids it accepted until their deadline.
A request whose deadline has passed when a worker picks it up is dropped unexecuted: the relay
has answered the visitor already, and a webhook sender may be retrying it. Deadlines are on the
relay's clock (``Welcome.now``). Answers sent are kept briefly, so that one the relay failed to
store is sent again (once).

Bodies too large for a message go through the relay's blob store: the worker fetches a request
body from its ``body_url``, and PUTs a large response body to the request's ``upload_url``.

A tunnel with guards (basic auth, webhook verification) is served only if the relay's welcome
confirms it enforces them: a relay that ignored them would expose the app unprotected.

Visitors' WebSockets (``sockets``) belong to the session, not to a connection: their messages
go out on the current connection, and a rotation tells the relay they moved (``SocketMove``) on
the new connection before the old one retires. A stop closes them with 1001 both ways once the
requests held are answered; a lost connection closes the apps' side (the relay closes the
visitors').
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from hatchway import protocol
from hatchway.errors import NameTaken, RelayUnreachable, SessionError, TokenRefused
from hatchway.protocol import ProtocolError, Request, Response, codec, packing
from hatchway.protocol.sockets import SocketMessage
from hatchway.serving.answers import RecentAnswers
from hatchway.serving.bodies import looks_compressible
from hatchway.serving.connection import Connection, agent_fault, send_message
from hatchway.serving.inflight import TunnelGate
from hatchway.serving.sockets import SocketLimits, Sockets
from hatchway.transport import blobs, handshake
from hatchway.transport.wire import Link
from hatchway.version import __version__

log = logging.getLogger("hatchway.agent")

WORKERS = 64
"""Requests served at once; more wait in the pool's queue. Workers mostly wait on local apps,
so they are cheap; ``inflight.MAX_TUNNEL_REQUESTS`` keeps one tunnel from taking them all."""

ROTATION_QUIET_SECONDS = 2.0
"""How long a rotated-out connection must go without a new request before it closes (once it
answered what it holds): longer than the relay's claim cache (``CLAIM_CACHE_SECONDS``, 1 s),
during which a relay function may still route to it, plus the time a post takes to land."""

STOP_GRACE_SECONDS = 25.0
"""How long a stopping agent (``Session.stop``: the first Ctrl-C or SIGTERM) goes on answering
the requests it holds before it closes anyway: inside the 30 s that container platforms
(Kubernetes, ECS) wait before they kill a process they asked to stop."""

MAX_STOP_GRACE_SECONDS = protocol.RESPONSE_TIMEOUT_SECONDS + ROTATION_QUIET_SECONDS
"""The most ``--stop-grace`` may ask for: no request is waited for by the relay longer than
its deadline, and the last ones may arrive during the quiet period before the close."""

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long opening the WebSocket and waiting for the welcome may take."""

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
"""Reconnect delays: uniformly random up to base * 2**attempt, capped (full jitter)."""

MAX_HELLO_RESENDS = 3
"""Times a hello the platform could not take is said again on the same connection (after
backoff with jitter, within ``CONNECT_TIMEOUT_SECONDS``) before the connection is given up."""

MAX_EARLY_REQUESTS = 64
"""Requests kept that overtake the welcome (a visitor was quick); beyond them the relay is
misbehaving, and the visitors get the relay's timeout."""

MAX_REMEMBERED_REQUESTS = 10_000
"""Request ids remembered against a repeated delivery; the oldest are forgotten first."""

UNDATED_MEMORY_SECONDS = 2 * protocol.RESPONSE_TIMEOUT_SECONDS
"""How long the id of a request without a deadline is remembered."""

ANSWER_TRAVEL_SECONDS = 0.5
"""What an answer sent at the last moment is given to reach the relay before its deadline (the
agent's own 504, which says why, must come before the relay's, which cannot)."""

MIN_BLOB_TIMEOUT_SECONDS = 1.0
"""Least time a blob transfer is given, even with the deadline nearly reached."""

COMPRESSION_SAMPLE_BYTES = 64 * 1024
"""A response body above the inline limit is compressed whole (to see whether it fits a
message after all) only if this much of its start shrinks enough: compressing megabytes of
incompressible bytes (media, archives, encrypted data) took tens of milliseconds per response
for nothing."""

COMPRESSION_SAMPLE_SLACK = 2
"""How far above the limit the sample's ratio may put the whole body and still be tried: the
sample is compressed at zlib's fastest level, and a body's start may compress worse than the
rest."""

Handler = Callable[[Request], Response]
Clock = Callable[[], float]


class SeenRequests:
    """The ids of requests already accepted, each until its deadline, at most ``limit``.

    A plain dict (id to deadline) answers whether an id was seen, and a deque of the ids keeps
    their order for forgetting the oldest first: 53 bytes an id besides its string, where an
    ``OrderedDict`` took 90. At the limit, with the ids' strings, that is 1.3 MiB, not 1.6."""

    def __init__(self, limit: int = MAX_REMEMBERED_REQUESTS) -> None:
        self.limit = limit
        self._until: dict[str, float] = {}
        self._order: deque[str] = deque()
        self._lock = threading.Lock()

    def first_time(self, request: Request, now: float) -> bool:
        """Record ``request``; False if its id was already accepted and not yet forgotten."""
        until = request.deadline or now + UNDATED_MEMORY_SECONDS
        with self._lock:
            order, known = self._order, self._until
            # Deadlines arrive nearly in order, so expired ids gather at the front.
            while order and known[order[0]] < now:
                del known[order.popleft()]
            if request.id in known:
                return False
            known[request.id] = until
            order.append(request.id)
            while len(order) > self.limit:
                del known[order.popleft()]
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)


class Session:
    """A tunnel session; ``run()`` blocks, ``start()`` runs it in the background."""

    def __init__(
        self,
        server: str,
        token: str,
        handler: Handler,
        names: Sequence[str | protocol.TunnelSpec | None] = (None,),
        *,
        workers: int = WORKERS,
        heartbeat: float | None = None,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        rotate_after: float = protocol.CONNECTION_ROTATE_SECONDS,
        rotation_quiet: float = ROTATION_QUIET_SECONDS,
        instance: str | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        retry_at_start: bool = False,
        compress: bool = True,
        clock: Clock = time.time,
        on_ready: Callable[[protocol.Welcome], None] | None = None,
        on_request_done: Callable[[Request, Response, float], None] | None = None,
        request_done_may_wait: Callable[[], bool] = lambda: True,
        serve_on_reader: bool = False,
        on_reconnecting: Callable[[int, float, BaseException | None], None] | None = None,
        socket_limits: SocketLimits | None = None,
    ) -> None:
        self.server = server
        self.token = token
        self.handler = handler
        self.specs: tuple[protocol.TunnelSpec, ...] = tuple(
            n if isinstance(n, protocol.TunnelSpec) else protocol.TunnelSpec(n) for n in names
        )
        self.retry_at_start = retry_at_start
        self.heartbeat_override = heartbeat
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        if any(spec.stream for spec in self.specs):
            # The connection a rotation leaves must have room for a whole stream.
            rotate_after = min(rotate_after, protocol.STREAM_ROTATE_SECONDS)
        self.rotate_after = rotate_after
        self.rotation_quiet = rotation_quiet
        self.instance = instance or base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
        """Random per agent run, the same on every connection: the relay lets a connection of
        the same instance take the names over (reconnect, rotation), and no other agent."""
        self.connect_timeout = connect_timeout
        self.on_ready = on_ready
        self.on_request_done = on_request_done
        self.request_done_may_wait = request_done_may_wait
        """Whether ``on_request_done`` may wait on something (a user's callback): it then runs on
        a worker when the reader served the request itself. Unknown hooks are assumed to."""
        self.serve_on_reader = serve_on_reader
        """Whether the reader may serve a request itself (``connection.INLINE_WAIT_SECONDS``):
        for a handler whose every wait is on ``http1``'s sockets, as the forwarder's are."""
        self.on_reconnecting = on_reconnecting
        self.compress = compress
        self.clock = clock
        """Wall-clock time, compared with the deadlines the relay sets (injectable for tests)."""
        self.seen = SeenRequests()
        self.gate = TunnelGate()
        self.answers = RecentAnswers()
        self.clock_offset = 0.0
        """The relay's clock minus ours (from ``Welcome.now``): deadlines are on the relay's."""
        self.welcome: protocol.Welcome | None = None
        self.sockets = Sockets(self._send_socket, socket_limits)
        """Visitors' WebSockets open to the local apps."""
        self._socket_route = threading.Lock()
        """Held while a socket message goes out, and while a rotation moves the sockets: no
        socket message reaches the new connection before the move."""
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="hatchway-worker")
        self._closing = threading.Event()
        self._leaving = threading.Event()
        self._ready = threading.Event()
        self._current: Connection | None = None
        self._retiring: set[Connection] = set()
        """Connections a rotation replaced that still answer what they hold (or stream)."""
        self._lock = threading.Lock()
        self._current_set = threading.Condition(self._lock)
        """Notified whenever another connection becomes the current one."""
        self._thread: threading.Thread | None = None
        self._fatal: BaseException | None = None

    # --- Public API ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``close()``; raises TokenRefused, NameTaken or RelayUnreachable at start
        (with ``retry_at_start``, an unreachable relay is retried with backoff instead, each wait
        announced through ``on_reconnecting``), and TokenRefused or NameTaken if a reconnect is
        refused."""
        try:
            first = self._reconnect(None, immediate=True) if self.retry_at_start else self._open()
            if first is None:  # closed while still trying to reach the relay
                return
            self._set_current(first)
            self._ready.set()
            while not self._closing.is_set():
                current = self._current
                assert current is not None
                current.ended.wait()
                if self._leaving.is_set():  # ``stop`` closes once it is done: no reconnect
                    self._closing.wait()
                if self._closing.is_set():
                    break
                if current.fatal is not None:
                    raise current.fatal
                if self._current is not current:  # rotated: the new one is already serving
                    continue
                # The relay closes the visitors' sockets this connection carried.
                self.sockets.close_all(
                    protocol.CLOSE_GOING_AWAY,
                    "the agent lost its connection to the relay",
                    tell_relay=False,
                    wait=None,
                )
                replacement = self._reconnect(current.error)
                if replacement is None:  # closed while waiting to reconnect
                    break
                self._set_current(replacement)
        except BaseException as exc:
            self._fatal = exc
            raise
        finally:
            self._ready.set()
            self._shutdown()

    def start(self, timeout: float = 30.0) -> Session:
        """Run in a background thread; return once the relay welcomed us (or raise why not)."""
        self._thread = threading.Thread(
            target=self._run_quietly, name="hatchway-session", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            self.close()
            raise RelayUnreachable(f"no welcome from {self.server} within {timeout:g} s")
        if self._fatal is not None:
            raise self._fatal
        return self

    def close(self) -> None:
        self._closing.set()
        self.sockets.shutdown()
        self._close_connections()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Leave, then close: tell the relay this agent takes no new requests (a pool's other
        members get them; a lone agent's visitors wait a moment for its restart), and go on
        answering what it holds and what a relay function routed to it before it knew, until
        that is done and the relay has been quiet a while (``rotation_quiet``), for at most
        ``grace`` seconds. ``close()`` meanwhile (a second Ctrl-C) cuts it short. Visitors'
        WebSockets do not count as held: they close then, with 1001 both ways."""
        self._leaving.set()
        with self._lock:
            current = self._current
        if current is not None and not self._closing.is_set():
            current.leave(self.rotation_quiet, grace)
            if not self._closing.is_set():
                self.sockets.stop()
        self.close()

    @property
    def in_flight(self) -> int:
        """Requests the serving connection holds (accepted, not answered yet)."""
        current = self._current
        return 0 if current is None else len(current.held)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def names(self) -> tuple[str | None, ...]:
        """The names asked for: after the first welcome, the names granted."""
        return tuple(spec.name for spec in self.specs)

    @property
    def granted(self) -> tuple[str, ...]:
        """The names the relay granted in its last welcome."""
        return tuple(info.name for info in self.welcome.tunnels) if self.welcome else ()

    def relay_now(self) -> float:
        """The relay's time now, as far as this agent can tell: request deadlines are on it."""
        return self.clock() + self.clock_offset

    def hello(self) -> protocol.Hello:
        return protocol.Hello(self.specs, f"hatchway/{__version__}", instance=self.instance)

    @property
    def connected(self) -> bool:
        current = self._current
        return current is not None and not current.ended.is_set()

    # --- Internals ----------------------------------------------------------------------------

    def _run_quietly(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # surfaced by start() or held in _fatal
            log.debug("session ended: %s", exc)

    def _set_current(self, connection: Connection) -> None:
        with self._lock:
            self._current = connection
            self._current_set.notify_all()
        if self._closing.is_set():
            connection.close()

    def _shutdown(self) -> None:
        self.sockets.shutdown()
        self._close_connections()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _close_connections(self) -> None:
        """Close the current connection and those still retiring (a stream they carry is cut)."""
        with self._lock:
            connections = [self._current, *self._retiring]
        for connection in connections:
            if connection is not None:
                connection.close()

    def _open(self) -> Connection:
        """Connect, say hello, wait for the welcome; raise a typed error on refusal."""
        link = handshake.connect(self.server, self.token, self.connect_timeout)
        try:
            send_message(link.writer, self.hello(), self.compress)
            welcome, early = self._await_welcome(link)
            if welcome.now > 0:
                self.clock_offset = welcome.now - self.clock()
            self._check_guards(welcome)
            link.sock.settimeout(None)
        except BaseException:
            link.abort()
            raise
        if self.welcome is None:
            # Reconnects ask for the names granted now, so random names survive too.
            self.specs = tuple(
                dataclasses.replace(spec, name=info.name)
                for spec, info in zip(self.specs, welcome.tunnels, strict=True)
            )
        self.welcome = welcome
        heartbeat = self.heartbeat_override or welcome.heartbeat_seconds
        connection = Connection(self, link, heartbeat, early)
        # Before the connection serves anything, so that routing set up here sees every request.
        if self.on_ready:
            self.on_ready(welcome)
        connection.start()
        return connection

    def _check_guards(self, welcome: protocol.Welcome) -> None:
        if len(welcome.tunnels) != len(self.specs):
            raise SessionError(
                f"the relay granted {len(welcome.tunnels)} tunnels for {len(self.specs)} asked"
            )
        for spec, info in zip(self.specs, welcome.tunnels, strict=True):
            missing = [guard for guard in spec.guards if guard not in info.guards]
            if missing:
                raise SessionError(
                    f"the relay at {self.server} does not enforce {', '.join(missing)} for "
                    f"tunnel {info.name!r}, so the agent will not serve it unprotected; upgrade "
                    "the relay, or start the tunnel without that option"
                )

    def _await_welcome(self, link: Link) -> tuple[protocol.Welcome, list[Request]]:
        """The welcome, and any requests that overtook it (the relay routes visitors to a name
        as soon as it is claimed, which is just before it sends the welcome)."""
        early: list[Request] = []
        resends = 0
        try:
            while True:
                message = codec.decode(link.receive_text())
                if isinstance(message, protocol.Welcome):
                    return message, early
                if isinstance(message, Request) and len(early) < MAX_EARLY_REQUESTS:
                    early.append(message)
                if isinstance(message, protocol.Undelivered):
                    # The platform could not take the hello (the relay's functions are busy or
                    # throttled): say it again on this connection rather than open another,
                    # which would need the same busy functions to authorize it.
                    resends += 1
                    if resends > MAX_HELLO_RESENDS:
                        raise RelayUnreachable(
                            f"the relay at {self.server} could not take the hello "
                            f"{resends} times (its functions are throttled or failing)"
                        )
                    log.warning("the relay could not take the hello: throttled or failed")
                    time.sleep(random.uniform(0, self.backoff_base * 2**resends))
                    send_message(link.writer, self.hello(), self.compress)
                if isinstance(message, protocol.Error):
                    if message.code == "name_taken":
                        raise NameTaken(message.message)
                    raise SessionError(f"the relay ended the session: {message.message}")
        except ProtocolError as exc:
            raise SessionError(
                f"the relay sent something this agent does not understand: {exc}"
            ) from None
        except OSError as exc:
            raise RelayUnreachable(
                f"the relay at {self.server} closed before welcoming: {exc}"
            ) from None

    def _reconnect(self, error: BaseException | None, immediate: bool = False) -> Connection | None:
        """A new connection, after backoff; ``immediate`` tries once before backing off."""
        if immediate:
            try:
                return self._open()
            except RelayUnreachable as exc:
                error = exc
        attempt = 0
        while not self._closing.is_set():
            delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
            if self.on_reconnecting:
                self.on_reconnecting(attempt + 1, delay, error)
            if self._closing.wait(delay):
                break
            try:
                return self._open()
            except (RelayUnreachable, SessionError) as exc:
                error = exc
                attempt += 1
        return None

    def _rotate(self, old: Connection) -> None:
        """Before the platform's 2 h cut-off: open the new connection first (the same instance
        takes the names over), then let the old one answer what the relay still sends it, and
        close it once it has been quiet and its streams have ended."""
        if self._leaving.is_set():  # stopping: the connection that leaves is the last one
            return
        try:
            new = self._open()
        except (RelayUnreachable, SessionError, TokenRefused, NameTaken) as exc:
            log.warning("could not rotate the connection (%s); keeping the current one", exc)
            old.opened_at = time.monotonic()
            old.rotating = False
            return
        with self._socket_route:
            moving = self.sockets.ids()
            if moving:
                try:
                    new.send(protocol.SocketMove(moving))
                except (OSError, ProtocolError) as exc:  # its reader notices a broken socket
                    log.warning(
                        "could not move %d sockets to the new connection: %s", len(moving), exc
                    )
            self._set_current(new)
        with self._lock:
            self._retiring.add(old)
        try:
            if not self._closing.is_set():  # else ``close`` may have looked before the add
                old.retire(
                    self.rotation_quiet,
                    protocol.RESPONSE_TIMEOUT_SECONDS + self.rotation_quiet,
                    outlive_streams=True,
                )
        finally:
            with self._lock:
                self._retiring.discard(old)
            old.close()

    def _send_socket(self, message: SocketMessage) -> None:
        """A socket message to the relay, on the current connection. A connection serves from
        its welcome on, a moment before it becomes the current one (``run``): a socket opened
        in that moment waits for it, rather than find no connection."""
        with self._current_set:
            self._current_set.wait_for(
                lambda: (
                    (self._current is not None and not self._current.ended.is_set())
                    or self._closing.is_set()
                ),
                self.connect_timeout,
            )
        with self._socket_route:
            current = self._current
            if current is None or current.ended.is_set():
                raise ConnectionError("the agent is not connected to the relay")
            current.send(message)

    def _socket_opened(self, connection: Connection, socket_id: str) -> None:
        """A socket opened by a request on ``connection`` travels on the current connection:
        the relay is told if that is another one (a rotation came between)."""
        with self._socket_route:
            current = self._current
            if current is not None and current is not connection:
                try:
                    current.send(protocol.SocketMove((socket_id,)))
                except (OSError, ProtocolError) as exc:
                    log.warning("could not move socket %s: %s", socket_id, exc)

    def time_left(self, request: Request) -> float:
        """Seconds until the relay stops waiting for ``request``, less the time an answer needs
        to reach it first."""
        if not request.deadline:
            return protocol.RESPONSE_TIMEOUT_SECONDS
        return max(0.0, request.deadline - self.relay_now() - ANSWER_TRAVEL_SECONDS)

    def blob_timeout(self, request: Request) -> float:
        """Time a blob transfer may take: until the relay stops waiting, within bounds."""
        if not request.deadline:
            return blobs.BLOB_TIMEOUT_SECONDS
        remaining = request.deadline - self.relay_now()
        return min(blobs.BLOB_TIMEOUT_SECONDS, max(MIN_BLOB_TIMEOUT_SECONDS, remaining))

    def _tunnel_spec(self, name: str) -> protocol.TunnelSpec | None:
        return next((spec for spec in self.specs if spec.name == name), None)

    def _outgoing(self, request: Request, response: Response) -> Response:
        """What goes back to the relay for ``response``: itself when its body fits the message
        the relay asked for (``inline_max``), else the body PUT to ``upload_url`` and a response
        that says so, else an agent fault saying the response is too large for the relay."""
        if response.fault is not None or not response.body:
            return response
        size = len(response.body)
        spec = self._tunnel_spec(request.tunnel)
        if size > protocol.MAX_BODY_BYTES and (spec is None or spec.large_responses != "redirect"):
            # The forwarder enforces this per tunnel; a custom handler may not have.
            return agent_fault(
                request.id,
                413,
                f"the local app's response body of {size} bytes is larger than "
                f"{protocol.MAX_BODY_BYTES} bytes, the most the relay carries",
                side="local app",
            )
        # Above the ceiling a body goes to the blob store however well it compresses: the
        # relay inflates no message to more than the ceiling (a small message must not become
        # a large body), and a redirect serves it from there.
        fits = size <= request.inline_max or self._packs_within(response.body, request.inline_max)
        if fits and size <= protocol.MAX_BODY_BYTES:
            return response
        if request.upload_url is None:
            return agent_fault(
                request.id,
                502,
                f"the response body of {size} bytes is too large for the relay: it takes at "
                f"most {request.inline_max} bytes in a message and offered no upload URL",
            )
        return blobs.upload_answer(
            request, response.status, response.headers, response.body, self.blob_timeout(request)
        )

    def _packs_within(self, body: bytes, limit: int) -> bool:
        """Whether the body, as a message would carry it (compressed if that helps), fits."""
        if not self.compress or not looks_compressible(body):
            return False
        if len(body) > COMPRESSION_SAMPLE_BYTES:
            sample = memoryview(body)[:COMPRESSION_SAMPLE_BYTES]
            estimate = len(zlib.compress(sample, 1)) * len(body) // COMPRESSION_SAMPLE_BYTES
            if estimate > COMPRESSION_SAMPLE_SLACK * limit:
                return False
        text, _ = packing.pack_body(body, compress=True)
        return packing.packed_size(text) <= limit
