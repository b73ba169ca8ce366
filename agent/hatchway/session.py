"""The agent's session with the relay: connect, hello, welcome, then serve requests until closed.

One connection at a time serves requests (two briefly, while rotating before the platform's 2 h
limit). Each connection has a reader thread that decodes each message (websocket-client joins a
message's frames) and hands requests to a bounded worker pool, and a heartbeat thread that pings,
reporting the requests answered per tunnel, and notices a dead socket. Every message goes out as
frames of at most ``MAX_FRAME_BYTES``, all of them under the connection's send lock. When a
connection drops, the session reconnects with exponential backoff and full jitter and asks for
the names it was granted, so its URLs survive. One connection serves every tunnel of the hello;
requests name their tunnel and the handler routes them.

A request is served at most once: API Gateway may deliver a message twice (a management post it
retried after it landed), so the session remembers the ids it accepted until their deadline.
A request whose deadline has passed when a worker picks it up is dropped unexecuted: the relay
has answered the visitor already, and a webhook sender may be retrying it.

Bodies too large for a message go through the relay's blob store: the worker fetches a request
body from its ``body_url``, and PUTs a large response body to the request's ``upload_url``.

A tunnel with guards (basic auth, webhook verification) is served only if the relay's welcome
confirms it enforces them: a relay that ignored them would expose the app unprotected.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import websocket

from hatchway import __version__, blobs, codec, protocol
from hatchway.errors import NameTaken, RelayUnreachable, SessionError, TokenRefused
from hatchway.protocol import Fault, ProtocolError, Request, Response

log = logging.getLogger("hatchway.agent")

WORKERS = 16
"""Requests served at once; more wait in the pool's queue."""

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long opening the WebSocket and waiting for the welcome may take."""

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
"""Reconnect delays: uniformly random up to base * 2**attempt, capped (full jitter)."""

SILENCE_FACTOR = 3
"""A connection that received nothing for this many heartbeats is treated as dead."""

MAX_EARLY_REQUESTS = 64
"""Requests kept that overtake the welcome (a visitor was quick); beyond them the relay is
misbehaving, and the visitors get the relay's timeout."""

MAX_REMEMBERED_REQUESTS = 10_000
"""Request ids remembered against a repeated delivery; the oldest are forgotten first."""

UNDATED_MEMORY_SECONDS = 2 * protocol.RESPONSE_TIMEOUT_SECONDS
"""How long the id of a request without a deadline is remembered."""

MIN_BLOB_TIMEOUT_SECONDS = 1.0
"""Least time a blob transfer is given, even with the deadline nearly reached."""

Handler = Callable[[Request], Response]
Clock = Callable[[], float]


def send_message(
    ws: websocket.WebSocket, message: protocol.Message, lock: threading.Lock, compress: bool = True
) -> None:
    """Encode ``message`` and send it as one WebSocket message in frames of at most
    ``MAX_FRAME_BYTES`` (API Gateway's frame limit): a text frame, then continuation frames.
    The lock keeps another message's frames from slipping in between."""
    frames = codec.split_frames(codec.encode(message, compress=compress))
    last = len(frames) - 1
    with lock:
        for index, chunk in enumerate(frames):
            opcode = websocket.ABNF.OPCODE_TEXT if index == 0 else websocket.ABNF.OPCODE_CONT
            # Encoded messages are ASCII; create_frame only encodes str for text frames itself.
            data = chunk.encode("ascii")
            ws.send_frame(websocket.ABNF.create_frame(data, opcode, fin=int(index == last)))


class SeenRequests:
    """The ids of requests already accepted, each until its deadline, at most ``limit``."""

    def __init__(self, limit: int = MAX_REMEMBERED_REQUESTS) -> None:
        self.limit = limit
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, request: Request, now: float) -> bool:
        """Record ``request``; False if its id was already accepted and not yet forgotten."""
        until = request.deadline or now + UNDATED_MEMORY_SECONDS
        with self._lock:
            # Deadlines arrive nearly in order, so expired ids gather at the front.
            while self._until and next(iter(self._until.values())) < now:
                self._until.popitem(last=False)
            if request.id in self._until:
                return False
            self._until[request.id] = until
            while len(self._until) > self.limit:
                self._until.popitem(last=False)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)


class _Connection:
    """One WebSocket to the relay with its reader and heartbeat threads."""

    def __init__(
        self,
        session: Session,
        ws: websocket.WebSocket,
        heartbeat: float,
        early: Sequence[Request] = (),
    ) -> None:
        self.session = session
        self.ws = ws
        self.early = list(early)
        """Requests that arrived before the welcome (a visitor was quick): served first."""
        self.heartbeat = heartbeat
        self.opened_at = time.monotonic()
        self.last_received = time.monotonic()
        self.send_lock = threading.Lock()
        self.ended = threading.Event()
        self.in_flight = 0
        self.in_flight_lock = threading.Condition()
        self.served: dict[str, int] = {}
        """Requests answered on this connection, per tunnel: reported in each ping."""
        self.error: BaseException | None = None

    def start(self) -> None:
        threading.Thread(target=self._read, name="hatchway-reader", daemon=True).start()
        threading.Thread(target=self._beat, name="hatchway-heartbeat", daemon=True).start()

    def send(self, message: protocol.Message) -> None:
        send_message(self.ws, message, self.send_lock, self.session.compress)

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # already broken: the point was to stop it
            self.ws.abort()
        self.ended.set()

    def _read(self) -> None:
        for request in self.early:
            self._accept(request)
        self.early.clear()
        try:
            while True:
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                self.last_received = time.monotonic()
                if opcode == websocket.ABNF.OPCODE_TEXT:
                    self._on_text(data)
        except (websocket.WebSocketException, OSError) as exc:
            self.error = exc
        finally:
            self.ended.set()

    def _on_text(self, text: bytes) -> None:
        try:
            message = codec.decode(text)
        except ProtocolError as exc:
            log.warning("relay sent a bad message: %s", exc)
            request_id = _request_id_of(text)
            if request_id is not None:  # a visitor is waiting: tell them now, not at the timeout
                self._answer(_agent_fault(request_id, exc.status, f"bad request message: {exc}"))
            return
        if isinstance(message, Request):
            self._accept(message)
        elif isinstance(message, protocol.Error):
            log.warning("relay says %s: %s", message.code, message.message)
            if message.code == "not_connected":
                # The relay forgot this connection (its token was revoked, or its record was
                # lost): reconnecting either restores the tunnels or reports the refusal.
                self.ws.abort()

    def _accept(self, request: Request) -> None:
        if not self.session.seen.first_time(request, self.session.clock()):
            log.debug("ignored a repeated delivery of request %s", request.id)
            return
        with self.in_flight_lock:
            self.in_flight += 1
        self.session._pool.submit(self._serve, request)

    def _serve(self, request: Request) -> None:
        try:
            late = self.session.clock() - request.deadline
            if request.deadline and late > 0:
                log.warning(
                    "dropped request %s (%s %s on %s): the relay stopped waiting %.1f s ago",
                    request.id,
                    request.method,
                    request.path,
                    request.tunnel,
                    late,
                )
                return
            self._serve_in_time(request)
        finally:
            with self.in_flight_lock:
                self.in_flight -= 1
                self.in_flight_lock.notify_all()

    def _serve_in_time(self, request: Request) -> None:
        started = time.monotonic()
        session = self.session
        if request.body_url is not None:
            try:
                body = blobs.fetch(
                    request.body_url, protocol.MAX_BODY_BYTES, session._blob_timeout(request)
                )
            except blobs.BlobError as exc:
                message = f"the request body could not be fetched from the relay: {exc}"
                log.warning("request %s: %s", request.id, message)
                self._answer(_agent_fault(request.id, 502, message), request.tunnel)
                return
            request = dataclasses.replace(request, body=body, body_url=None, body_size=0)
        try:
            response = session.handler(request)
        except Exception as exc:  # a handler bug must not leave the visitor hanging
            log.exception("handler failed for %s %s", request.method, request.path)
            response = Response(request.id, 502, fault=Fault("agent", str(exc)))
        self._answer(session._outgoing(request, response), request.tunnel)
        elapsed_ms = (time.monotonic() - started) * 1000
        if session.on_request_done:
            session.on_request_done(request, response, elapsed_ms)

    def _answer(self, response: Response, tunnel: str | None = None) -> None:
        try:
            self.send(response)
        except ProtocolError as exc:  # e.g. the app's headers exceed what a message carries
            log.warning("could not encode the response to %s: %s", response.id, exc)
            fault = _agent_fault(response.id, exc.status, f"the response cannot be sent: {exc}")
            try:
                self.send(fault)
            except (websocket.WebSocketException, OSError, ProtocolError):
                return
        except (websocket.WebSocketException, OSError) as exc:
            log.warning("could not send the response to %s: %s", response.id, exc)
            return
        if tunnel is not None:
            with self.in_flight_lock:
                self.served[tunnel] = self.served.get(tunnel, 0) + 1

    def _beat(self) -> None:
        while not self.ended.wait(self.heartbeat):
            if time.monotonic() - self.last_received > SILENCE_FACTOR * self.heartbeat:
                log.warning(
                    "relay silent for %.0f s; reconnecting", SILENCE_FACTOR * self.heartbeat
                )
                self.ws.abort()
                return
            if time.monotonic() - self.opened_at > self.session.rotate_after:
                self.session._rotate(self)
                return
            with self.in_flight_lock:
                served = tuple(sorted(self.served.items()))
            try:
                self.send(protocol.Ping(time.time(), served))
            except (websocket.WebSocketException, OSError):
                self.ws.abort()
                return

    def drain(self, timeout: float) -> None:
        """Wait (bounded) until every request this connection accepted has been answered."""
        deadline = time.monotonic() + timeout
        with self.in_flight_lock:
            while self.in_flight and (remaining := deadline - time.monotonic()) > 0:
                self.in_flight_lock.wait(remaining)


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
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        retry_at_start: bool = False,
        compress: bool = True,
        clock: Clock = time.time,
        on_ready: Callable[[protocol.Welcome], None] | None = None,
        on_request_done: Callable[[Request, Response, float], None] | None = None,
        on_reconnecting: Callable[[int, float, BaseException | None], None] | None = None,
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
        self.rotate_after = rotate_after
        self.connect_timeout = connect_timeout
        self.on_ready = on_ready
        self.on_request_done = on_request_done
        self.on_reconnecting = on_reconnecting
        self.compress = compress
        self.clock = clock
        """Wall-clock time, compared with the deadlines the relay sets (injectable for tests)."""
        self.seen = SeenRequests()
        self.welcome: protocol.Welcome | None = None
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="hatchway-worker")
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._current: _Connection | None = None
        self._lock = threading.Lock()
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
                if self._closing.is_set():
                    break
                if self._current is not current:  # rotated: the new one is already serving
                    continue
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
        with self._lock:
            current = self._current
        if current is not None:
            current.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def names(self) -> tuple[str | None, ...]:
        """The names asked for: after the first welcome, the names granted."""
        return tuple(spec.name for spec in self.specs)

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

    def _set_current(self, connection: _Connection) -> None:
        with self._lock:
            self._current = connection
        if self._closing.is_set():
            connection.close()

    def _shutdown(self) -> None:
        with self._lock:
            current = self._current
        if current is not None:
            current.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _open(self) -> _Connection:
        """Connect, say hello, wait for the welcome; raise a typed error on refusal."""
        try:
            ws = websocket.create_connection(
                self.server,
                header=[f"Authorization: Bearer {self.token}"],
                timeout=self.connect_timeout,
                enable_multithread=True,
                # websocket-client's pure-Python UTF-8 check costs ~5 ms per 32 KB frame; the
                # reader decodes every text frame strictly itself.
                skip_utf8_validation=True,
            )
        except websocket.WebSocketBadStatusException as exc:
            if exc.status_code in (401, 403):
                raise TokenRefused(
                    f"the relay at {self.server} refused the token. Get one from the relay's "
                    "operator (hatchway-admin token create; hatchway-local prints one when it "
                    "starts), then save it with `hatchway config add-token TOKEN`, or pass "
                    "--token or set HATCHWAY_TOKEN"
                ) from None
            raise RelayUnreachable(f"{self.server} answered HTTP {exc.status_code}") from None
        except (TimeoutError, websocket.WebSocketException, OSError, ValueError) as exc:
            raise RelayUnreachable(f"cannot reach the relay at {self.server}: {exc}") from None
        try:
            hello = protocol.Hello(self.specs, f"hatchway/{__version__}")
            send_message(ws, hello, threading.Lock(), self.compress)
            welcome, early = self._await_welcome(ws)
            self._check_guards(welcome)
            ws.settimeout(None)
        except BaseException:
            ws.abort()
            raise
        if self.welcome is None:
            # Reconnects ask for the names granted now, so random names survive too.
            self.specs = tuple(
                dataclasses.replace(spec, name=info.name)
                for spec, info in zip(self.specs, welcome.tunnels, strict=True)
            )
        self.welcome = welcome
        heartbeat = self.heartbeat_override or welcome.heartbeat_seconds
        connection = _Connection(self, ws, heartbeat, early)
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

    def _await_welcome(self, ws: websocket.WebSocket) -> tuple[protocol.Welcome, list[Request]]:
        """The welcome, and any requests that overtook it (the relay routes visitors to a name
        as soon as it is claimed, which is just before it sends the welcome)."""
        early: list[Request] = []
        try:
            while True:
                message = codec.decode(ws.recv())
                if isinstance(message, protocol.Welcome):
                    return message, early
                if isinstance(message, Request) and len(early) < MAX_EARLY_REQUESTS:
                    early.append(message)
                if isinstance(message, protocol.Error):
                    if message.code == "name_taken":
                        raise NameTaken(message.message)
                    raise SessionError(f"the relay ended the session: {message.message}")
        except ProtocolError as exc:
            raise SessionError(
                f"the relay sent something this agent does not understand: {exc}"
            ) from None
        except (websocket.WebSocketException, OSError) as exc:
            raise RelayUnreachable(
                f"the relay at {self.server} closed before welcoming: {exc}"
            ) from None

    def _reconnect(
        self, error: BaseException | None, immediate: bool = False
    ) -> _Connection | None:
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

    def _rotate(self, old: _Connection) -> None:
        """Before the platform's 2 h cut-off: open the new connection first, then let the old
        one finish what it accepted. The same token takes the names over."""
        try:
            new = self._open()
        except (RelayUnreachable, SessionError, TokenRefused, NameTaken) as exc:
            log.warning("could not rotate the connection (%s); keeping the current one", exc)
            old.opened_at = time.monotonic()
            threading.Thread(target=old._beat, daemon=True).start()
            return
        self._set_current(new)
        old.drain(protocol.RESPONSE_TIMEOUT_SECONDS)
        old.close()

    def _blob_timeout(self, request: Request) -> float:
        """Time a blob transfer may take: until the relay stops waiting, within bounds."""
        if not request.deadline:
            return blobs.BLOB_TIMEOUT_SECONDS
        remaining = request.deadline - self.clock()
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
            return _agent_fault(
                request.id,
                502,
                f"the response body of {size} bytes is larger than {protocol.MAX_BODY_BYTES} "
                "bytes, the most the relay carries",
            )
        if size <= request.inline_max or self._packs_within(response.body, request.inline_max):
            return response
        if request.upload_url is None:
            return _agent_fault(
                request.id,
                502,
                f"the response body of {size} bytes is too large for the relay: it takes at "
                f"most {request.inline_max} bytes in a message and offered no upload URL",
            )
        try:
            blobs.upload(request.upload_url, response.body, self._blob_timeout(request))
        except blobs.BlobError as exc:
            message = f"the response body could not be uploaded to the relay: {exc}"
            log.warning("request %s: %s", request.id, message)
            return _agent_fault(request.id, 502, message)
        return Response(request.id, response.status, response.headers, b"", uploaded=size)

    def _packs_within(self, body: bytes, limit: int) -> bool:
        """Whether the body, as a message would carry it (compressed if that helps), fits."""
        if not self.compress:
            return False
        text, _ = codec.pack_body(body, compress=True)
        return codec.packed_size(text) <= limit


def _agent_fault(request_id: str, status: int, message: str) -> Response:
    """The agent's own answer when it cannot produce the app's: ``side`` names the agent."""
    status = status if 400 <= status <= 599 else 502
    return Response(request_id, status, fault=Fault("agent", message))


def _request_id_of(text: bytes) -> str | None:
    """The id of a request message that failed to decode, if it has a valid one."""
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and obj.get("type") == "request":
            return protocol.validate_id(str(obj.get("id")))
    except (ValueError, RecursionError, ProtocolError):
        pass
    return None
