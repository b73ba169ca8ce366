"""The requests an agent holds: how many one tunnel may hold at once, and which of them are due
a ``Working`` mark that tells the relay the agent is still on them."""

from __future__ import annotations

import threading
import time

from hatchway import protocol

MAX_TUNNEL_REQUESTS = 48
"""Most requests one tunnel may hold at once (queued for a worker or waiting on its app). Below
the session's 64 workers, so an app that hangs leaves workers to the agent's other tunnels, and
high enough that a few dozen hung requests still leave room for the quick ones of the same
tunnel. Beyond it the agent answers 503 at once (the relay's tunnel-busy) instead of letting
visitors queue for a 504 at the relay's deadline."""

WORKING_SCAN_SECONDS = 1.0
"""How often a connection looks for requests due a ``Working`` mark: a mark leaves between
``WORKING_MARK_SECONDS`` and one scan later, well before the relay's ``AGENT_SILENCE_SECONDS``."""

MAX_MARKS_PER_SCAN = 256
"""Most ``Working`` marks one scan sends (a message each); any others wait a scan."""


class TunnelGate:
    """Counts the requests each tunnel holds, refusing one beyond ``limit``. Thread-safe."""

    def __init__(self, limit: int = MAX_TUNNEL_REQUESTS) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, tunnel: str) -> bool:
        """Count one more request for ``tunnel``; False (and nothing counted) at the limit."""
        with self._lock:
            held = self._held.get(tunnel, 0)
            if held >= self.limit:
                return False
            self._held[tunnel] = held + 1
            return True

    def leave(self, tunnel: str) -> None:
        with self._lock:
            held = self._held.get(tunnel, 0) - 1
            if held > 0:
                self._held[tunnel] = held
            else:
                self._held.pop(tunnel, None)

    def held(self, tunnel: str) -> int:
        with self._lock:
            return self._held.get(tunnel, 0)


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
