"""The inspector's record of exchanges: the last N requests with their responses, bodies capped,
in memory only, thread-safe, with bounded subscriptions for live updates.

Memory is bounded by construction: at most ``max_requests`` entries, each holding at most
``max_body_bytes`` of request body and as much of response body (the start of each: what a
person reads, and a whole small request for a replay), plus heads the protocol already caps
(``protocol.MAX_HEAD_BYTES``), and all of them together at most ``max_total_bytes`` (``footprint``
counts the Python objects around them too): recording past it forgets the oldest entries, so a
busy tunnel moving large bodies cannot balloon the agent. Nothing is written to disk.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from hatchway import protocol
from hatchway.protocol import Fault, Headers
from hatchway.serving.forward import PassedResponse
from hatchway.ui.limits import INSPECT_MEMORY_BYTES

MAX_REQUESTS = 200
"""Exchanges kept; recording one more forgets the oldest."""

MAX_BODY_BYTES = 32 * 1024
"""Bytes kept of each request body and of each response body; the rest is dropped (truncated).

32 KiB shows a webhook's payload, a page of JSON or a form whole and keeps it replayable as
captured; a larger upload is replayed by sending its body with the replay. Each kept body is
held for as long as its exchange is, so this and ``MAX_TOTAL_BYTES`` set the inspector's share of
the agent's memory (64 KiB and 2 MiB took the agent past its 30 MiB under ``make bench``; at
1 MiB a body, each 1 MB exchange pinned a megabyte of the heap while it lived)."""

MAX_TOTAL_BYTES = INSPECT_MEMORY_BYTES
"""Bytes kept of all exchanges together (bodies, heads and their objects, as ``footprint``
counts them); the oldest go first beyond it."""

ENTRY_OVERHEAD_BYTES = 1024
"""What one exchange costs besides its bodies' bytes and its heads' text: the exchange and its
two bodies (slotted objects), their numbers, strings and tuples, and its slot in the capture's
ordered dict, rounded up from ``sys.getsizeof`` on 64-bit CPython 3.11-3.13. Counted so that
a flood of tiny requests cannot keep far more than ``max_total_bytes``."""

HEADER_OVERHEAD_BYTES = 160
"""What one header line costs besides its text: two ``str`` objects (49 bytes each, empty) and
the pair's tuple (56), plus its slot in the headers' tuple, rounded up."""

MAX_PENDING_EVENTS = 256
"""Entries waiting for one subscriber; a subscriber that falls further behind is ended (a browser
resynchronises by reloading the list), so a stalled reader cannot grow the agent's memory."""

REFUSAL_HEADER = "x-hatchway-error"
"""Set by the agent's forwarder on requests it refused to send (e.g. a target naming another
host); the capture reports those as the agent's fault, as the visitor saw no app response."""


@dataclass(frozen=True, slots=True)
class Body:
    """The kept prefix of a body and the body's real size."""

    data: bytes
    size: int

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)

    @classmethod
    def of_response(cls, response: protocol.Response, limit: int) -> Body:
        """What is kept of a response's body: its start, up to ``limit`` bytes. Of a body the
        agent passed straight to the relay (``uploaded``), only the first bytes it read are
        known (``PassedResponse.prefix``): the body is kept cut there, with its real size."""
        if response.uploaded is None:
            return cls.capped(response.body, limit)
        prefix = response.prefix if isinstance(response, PassedResponse) else b""
        return cls(bytes(prefix[:limit]), response.uploaded)

    @classmethod
    def capped(cls, data: bytes, limit: int) -> Body:
        """At most ``limit`` bytes of ``data``, a copy of only those: the full body goes away
        with the request. A whole ``bytes`` body is kept as it is (no copy); anything else (a
        view into a larger buffer) is copied, so that it cannot keep the buffer alive."""
        if len(data) <= limit and type(data) is bytes:
            return cls(data, len(data))
        return cls(bytes(memoryview(data)[:limit]), len(data))


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the agent served (or replayed) and what came back."""

    id: int
    started_at: float
    """Seconds since the epoch when the request reached the agent."""
    tunnel: str
    method: str
    target: str
    """Path plus raw query, as the local app saw it."""
    request_headers: Headers
    request_body: Body
    status: int
    response_headers: Headers
    response_body: Body
    duration_ms: float
    fault: Fault | None
    """Set when the response is the agent's own (the local app or the agent failed)."""
    replay_of: int | None = None


class UnknownExchange(LookupError):
    """No kept exchange has this id (it never existed, or it was forgotten to stay in bounds)."""


class SubscriptionEnded(Exception):
    """The subscription is over: the capture closed, or the subscriber fell too far behind."""


class Subscription:
    """New exchanges, in order, for one reader.

    Only ids wait in the queue (at most ``max_pending``), and the reader gets the exchange the
    capture still holds: a stalled reader costs a few bytes per entry, never the bodies, and an
    entry forgotten before it was read is skipped, as the list no longer has it either.
    """

    def __init__(self, capture: Capture, max_pending: int) -> None:
        self._capture = capture
        self._max_pending = max_pending
        self._pending: deque[int] = deque()
        self._changed = threading.Condition()
        self._ended: str | None = None

    def next(self, timeout: float) -> Exchange | None:
        """The next exchange, or None if none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                while not self._pending and self._ended is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._changed.wait(remaining)
                if self._ended is not None:
                    raise SubscriptionEnded(self._ended)
                exchange_id = self._pending.popleft()
            exchange = self._capture.get(exchange_id)
            if exchange is not None:
                return exchange

    def close(self) -> None:
        self._end("unsubscribed")

    def _push(self, exchange_id: int) -> None:
        with self._changed:
            if self._ended is not None:
                return
            overflowed = len(self._pending) >= self._max_pending
            if overflowed:
                self._pending.clear()
                self._ended = f"fell more than {self._max_pending} entries behind"
            else:
                self._pending.append(exchange_id)
            self._changed.notify_all()
        if overflowed:
            self._capture._forget(self)

    def _end(self, reason: str) -> None:
        with self._changed:
            if self._ended is None:
                self._ended = reason
                self._pending.clear()
            self._changed.notify_all()
        self._capture._forget(self)


def fault_of(response: protocol.Response) -> Fault | None:
    """Which side failed, if the response is not the local app's own answer."""
    if response.fault is not None:
        return response.fault
    for name, value in response.headers:
        if name.lower() == REFUSAL_HEADER:
            reason = response.body.decode("utf-8", "replace").strip()
            return Fault("agent", reason or value)
    return None


def footprint(exchange: Exchange) -> int:
    """Bytes an exchange keeps alive: its bodies' kept prefixes, its heads' text, and the
    objects around them (``ENTRY_OVERHEAD_BYTES``, ``HEADER_OVERHEAD_BYTES`` a header)."""
    heads = exchange.request_headers + exchange.response_headers
    return (
        ENTRY_OVERHEAD_BYTES
        + len(exchange.request_body.data)
        + len(exchange.response_body.data)
        + len(exchange.target)
        + sum(HEADER_OVERHEAD_BYTES + len(name) + len(value) for name, value in heads)
    )


class Capture:
    """The bounded, thread-safe record the inspector shows."""

    def __init__(
        self,
        max_requests: int = MAX_REQUESTS,
        max_body_bytes: int = MAX_BODY_BYTES,
        clock: Callable[[], float] = time.time,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        if max_requests < 1 or max_body_bytes < 0 or max_total_bytes < 0:
            raise ValueError("the capture keeps at least one request and non-negative byte caps")
        self.max_requests = max_requests
        self.max_body_bytes = max_body_bytes
        self.max_total_bytes = max_total_bytes
        self.kept_bytes = 0
        """What the kept exchanges hold, as ``footprint`` counts it."""
        self._clock = clock
        self._entries: OrderedDict[int, Exchange] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._subscribers: set[Subscription] = set()
        self.recorded = 0
        self.replays = 0
        self.faults = 0

    def add(
        self,
        request: protocol.Request,
        response: protocol.Response,
        elapsed_ms: float,
        replay_of: int | None = None,
    ) -> Exchange:
        """Record one finished exchange and tell the subscribers."""
        cap = self.max_body_bytes
        fault = fault_of(response)
        with self._lock:
            exchange = Exchange(
                id=next(self._ids),
                started_at=self._clock() - elapsed_ms / 1000,
                tunnel=request.tunnel,
                method=request.method,
                target=request.target,
                request_headers=request.headers,
                request_body=Body.capped(request.body, cap),
                status=response.status,
                response_headers=response.headers,
                response_body=Body.of_response(response, cap),
                duration_ms=elapsed_ms,
                fault=fault,
                replay_of=replay_of,
            )
            self._entries[exchange.id] = exchange
            self.kept_bytes += footprint(exchange)
            # The newest entry stays even alone above the byte cap: its bodies are capped.
            while len(self._entries) > self.max_requests or (
                self.kept_bytes > self.max_total_bytes and len(self._entries) > 1
            ):
                self.kept_bytes -= footprint(self._entries.popitem(last=False)[1])
            self.recorded += 1
            self.replays += replay_of is not None
            self.faults += fault is not None
            subscribers = list(self._subscribers)
        # Outside the lock: a subscriber's own lock is never taken while holding this one.
        for subscriber in subscribers:
            subscriber._push(exchange.id)
        return exchange

    def get(self, exchange_id: int) -> Exchange | None:
        with self._lock:
            return self._entries.get(exchange_id)

    def newest_first(self) -> list[Exchange]:
        with self._lock:
            return list(reversed(self._entries.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def subscribe(self, max_pending: int = MAX_PENDING_EVENTS) -> Subscription:
        subscription = Subscription(self, max_pending)
        with self._lock:
            self._subscribers.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        """End every subscription (their readers wake at once)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber._end("the inspector closed")

    def _forget(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)
