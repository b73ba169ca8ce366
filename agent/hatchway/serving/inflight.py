"""The requests an agent holds: how many one tunnel may hold at once, and which of them are due
a ``Working`` mark that tells the relay the agent is still on them."""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hatchway import protocol

MAX_TUNNEL_REQUESTS = 48
"""Most requests one tunnel may have in progress at once (with a worker or waiting on its app).
Below the session's 64 workers, so an app that hangs leaves workers to the agent's other
tunnels, and high enough that a few dozen hung requests still leave room for the quick ones of
the same tunnel. Requests beyond it wait their turn (``MAX_WAITING_REQUESTS``)."""

MAX_WAITING_REQUESTS = 256
"""Most requests one tunnel keeps waiting, in order, for a place among its
``MAX_TUNNEL_REQUESTS``: a burst (a page's assets through a slow dev server, a webhook storm)
is served as the app catches up instead of refused. Beyond it the agent answers 503 at once
(tunnel-busy)."""

MAX_WAITING_BODY_BYTES = 16 * 1024**2
"""Most body bytes one tunnel's waiting requests may hold together, so a burst of uploads
cannot grow the agent without bound (bodies that came through the blob store wait there and
count nothing here). Beyond it, 503 tunnel-busy at once."""

WAIT_DEADLINE_MARGIN_SECONDS = 1.0
"""A waiting request still without a place this close to the relay's deadline is answered
503 tunnel-busy: the app could not answer it in time, and an answer after the deadline would
be lost (the visitor had a 504 by then)."""

WORKING_SCAN_SECONDS = 1.0
"""How often a connection looks for requests due a ``Working`` mark: a mark leaves between
``WORKING_MARK_SECONDS`` and one scan later, well before the relay's ``AGENT_SILENCE_SECONDS``."""

MAX_MARKS_PER_SCAN = 256
"""Most ``Working`` marks one scan sends (a message each); any others wait a scan."""


@dataclass(frozen=True)
class Waiting:
    """A request waiting for a place in its tunnel: ``start`` has it served with the place
    it is given; ``refuse`` answers it 503 when its wait has to end without one."""

    request_id: str
    body_bytes: int
    deadline: float
    """The relay's deadline for it, on the relay's clock (0: none said)."""
    since: float
    start: Callable[[GatePlace], None]
    refuse: Callable[[str], None]


class Admission(enum.Enum):
    NOW = "now"
    """A place was free: the caller serves the request with ``GatePlace(gate, tunnel)``."""
    WAITING = "waiting"
    """It waits its turn; ``Waiting.start`` or ``Waiting.refuse`` is called later, once."""
    FULL = "full"
    """Neither: the caller answers 503 at once."""


class TunnelGate:
    """Counts the requests each tunnel has in progress, up to ``limit``, and keeps the ones
    beyond it waiting in order (at most ``waiting_limit`` and ``waiting_bytes`` of bodies); a
    place given back goes to the tunnel's longest-waiting request. Thread-safe."""

    def __init__(
        self,
        limit: int = MAX_TUNNEL_REQUESTS,
        waiting_limit: int = MAX_WAITING_REQUESTS,
        waiting_bytes: int = MAX_WAITING_BODY_BYTES,
    ) -> None:
        self.limit = limit
        self.waiting_limit = waiting_limit
        self.waiting_bytes = waiting_bytes
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[Waiting]] = {}
        self._waiting_size: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, tunnel: str, waiting: Waiting) -> Admission:
        """A place for ``waiting`` now, a place in the line, or neither."""
        with self._lock:
            if not self._waiting.get(tunnel) and self._take(tunnel):
                return Admission.NOW
            line = self._waiting.setdefault(tunnel, deque())
            size = self._waiting_size.get(tunnel, 0) + waiting.body_bytes
            if len(line) >= self.waiting_limit or size > self.waiting_bytes:
                if not line:
                    del self._waiting[tunnel]
                return Admission.FULL
            line.append(waiting)
            self._waiting_size[tunnel] = size
            return Admission.WAITING

    def leave(self, tunnel: str) -> None:
        """Give back one of ``tunnel``'s places: to its longest-waiting request, if any."""
        with self._lock:
            following = self._pop(tunnel)
            if following is None:
                held = self._held.get(tunnel, 0) - 1
                if held > 0:
                    self._held[tunnel] = held
                else:
                    self._held.pop(tunnel, None)
        if following is not None:
            following.start(GatePlace(self, tunnel))

    def expire(self, now: float, margin: float = WAIT_DEADLINE_MARGIN_SECONDS) -> list[Waiting]:
        """Take out the waiting requests whose deadline (relay clock) is less than ``margin``
        away at ``now``; the caller refuses them."""
        expired: list[Waiting] = []
        with self._lock:
            for tunnel, line in list(self._waiting.items()):
                kept: deque[Waiting] = deque()
                for w in line:
                    (kept if not w.deadline or w.deadline - now >= margin else expired).append(w)
                self._waiting_size[tunnel] = sum(w.body_bytes for w in kept)
                if kept:
                    self._waiting[tunnel] = kept
                else:
                    del self._waiting[tunnel]
                    del self._waiting_size[tunnel]
        return expired

    def held(self, tunnel: str) -> int:
        with self._lock:
            return self._held.get(tunnel, 0)

    def waiting(self, tunnel: str) -> int:
        with self._lock:
            return len(self._waiting.get(tunnel, ()))

    def _take(self, tunnel: str) -> bool:
        held = self._held.get(tunnel, 0)
        if held >= self.limit:
            return False
        self._held[tunnel] = held + 1
        return True

    def _pop(self, tunnel: str) -> Waiting | None:
        line = self._waiting.get(tunnel)
        if not line:
            return None
        following = line.popleft()
        self._waiting_size[tunnel] -= following.body_bytes
        if not line:
            del self._waiting[tunnel]
            del self._waiting_size[tunnel]
        return following


class GatePlace:
    """One request's place in its tunnel's ``TunnelGate``, given back once whichever way the
    request ends (answered, refused, dropped). Used by the one thread serving the request."""

    def __init__(self, gate: TunnelGate, tunnel: str) -> None:
        self._gate = gate
        self._tunnel = tunnel
        self._held = True

    def leave(self) -> None:
        if self._held:
            self._held = False
            self._gate.leave(self._tunnel)


class HeldRequests:
    """The requests one connection accepted and has not answered yet, with when each arrived
    (monotonic seconds), and whether the relay was told the agent is working on it."""

    def __init__(self, mark_after: float = protocol.WORKING_MARK_SECONDS) -> None:
        self.mark_after = mark_after
        self._since: dict[str, float] = {}
        self._marked: set[str] = set()
        self._changed = threading.Condition()

    def add(self, request_id: str, now: float | None = None) -> None:
        with self._changed:
            self._since[request_id] = time.monotonic() if now is None else now

    def age(self, request_id: str, now: float | None = None) -> float | None:
        """Seconds since ``request_id`` was accepted; None if it is not held."""
        now = time.monotonic() if now is None else now
        with self._changed:
            since = self._since.get(request_id)
        return None if since is None else now - since

    def marked(self, request_id: str) -> bool:
        """Whether the relay was sent a ``Working`` mark for ``request_id``."""
        with self._changed:
            return request_id in self._marked

    def done(self, request_id: str) -> None:
        with self._changed:
            self._since.pop(request_id, None)
            self._marked.discard(request_id)
            self._changed.notify_all()

    def due(self, now: float | None = None) -> tuple[str, ...]:
        """Ids held at least ``mark_after`` and not marked yet (at most ``MAX_MARKS_PER_SCAN``,
        the oldest first); they count as marked from now on, so each is marked once."""
        now = time.monotonic() if now is None else now
        with self._changed:
            ids = tuple(
                request_id
                for request_id, since in self._since.items()
                if request_id not in self._marked and now - since >= self.mark_after
            )[:MAX_MARKS_PER_SCAN]
            self._marked.update(ids)
            return ids

    def wait_empty(self, timeout: float) -> bool:
        """Wait (bounded) until nothing is held; True if so."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._since and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            return not self._since

    def __len__(self) -> int:
        with self._changed:
            return len(self._since)
