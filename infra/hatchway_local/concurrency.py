"""Lambda's concurrency rules for the local gateway: one pool per account shared by every
function, carved by reserved concurrency, and an invocation over its limit throttled at once
(never queued).

The gateway still runs each function's invocations on its own threads (so that it can never
deadlock itself); these counters decide which invocations may run at all, as Lambda would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LAMBDA_ACCOUNT_CONCURRENCY = 1000
"""Lambda's default concurrent-executions quota per account and region (new accounts may get
10 or 50 until they ask)."""

LAMBDA_MIN_UNRESERVED = 100
"""Lambda keeps at least this many executions unreserved (or the whole quota, when it is
smaller); a reservation that would leave fewer fails the deploy."""

WEBSOCKET_FUNCTION = "websocket"
HTTP_FUNCTION = "http"
VISITOR_SOCKET_FUNCTION = "visitor-socket"
"""The template's ``VisitorSocketFunction``: the visitor-socket API's ``$connect``,
``$default`` and ``$disconnect``. It reserves nothing: its executions come from the unreserved
pool, shared with every function that reserves nothing either."""

FUNCTIONS = (WEBSOCKET_FUNCTION, HTTP_FUNCTION, VISITOR_SOCKET_FUNCTION)

RELAY_FUNCTIONS = (WEBSOCKET_FUNCTION, HTTP_FUNCTION)
"""The functions every gateway runs; the visitor-socket function counts once it is attached
(``ConcurrencyPool.deploy``)."""


class Throttled(Exception):
    """Lambda refused the invocation (429 TooManyRequestsException): no execution was free."""


@dataclass(frozen=True)
class LambdaConcurrency:
    """The account's quota and the template's two knobs, named after its parameters."""

    account_limit: int = LAMBDA_ACCOUNT_CONCURRENCY
    websocket_reserved: int | None = None
    """``WebSocketReservedConcurrency``: reserved concurrency of the WebSocket function."""
    http_max: int | None = None
    """``HttpMaxConcurrency``: the HTTP function's cap. Lambda's only per-function cap is
    reserved concurrency, so it also takes these executions out of the shared pool."""
    min_unreserved: int = LAMBDA_MIN_UNRESERVED

    def reserved(self, function: str) -> int | None:
        if function == WEBSOCKET_FUNCTION:
            return self.websocket_reserved
        return self.http_max if function == HTTP_FUNCTION else None

    @property
    def unreserved(self) -> int:
        return self.account_limit - sum(self.reserved(f) or 0 for f in FUNCTIONS)

    def validate(self) -> None:
        """Refuse what Lambda refuses at deploy time."""
        if self.account_limit < 1:
            raise ValueError("the account concurrency limit must be at least 1")
        for function in FUNCTIONS:
            reserved = self.reserved(function)
            if reserved is not None and reserved < 0:
                raise ValueError(f"reserved concurrency of the {function} function is negative")
        reserving = any(self.reserved(f) is not None for f in FUNCTIONS)
        if reserving and self.unreserved < min(self.min_unreserved, self.account_limit):
            raise ValueError(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of "
                f"[{min(self.min_unreserved, self.account_limit)}]"
            )

    def capacity(self, function: str) -> int:
        """The most executions ``function`` can ever have at once."""
        reserved = self.reserved(function)
        return reserved if reserved is not None else max(self.unreserved, 0)


class ConcurrencyPool:
    """Counts running executions: a reserved function within its reservation, every other
    function in the shared unreserved pool."""

    def __init__(self, config: LambdaConcurrency) -> None:
        config.validate()
        self.config = config
        self._unreserved = config.unreserved
        self._lock = threading.Lock()
        self._running = dict.fromkeys(RELAY_FUNCTIONS, 0)
        self._unreserved_running = 0
        self.throttles = dict.fromkeys(RELAY_FUNCTIONS, 0)
        """Throttled invocations per deployed function, for tests and logs."""

    def deploy(self, function: str) -> None:
        """Count ``function``'s executions from now on (a function attached later)."""
        with self._lock:
            self._running.setdefault(function, 0)
            self.throttles.setdefault(function, 0)

    def running(self, function: str) -> int:
        with self._lock:
            return self._running[function]

    def acquire(self, function: str) -> None:
        """Take one execution for ``function`` or raise ``Throttled``; never waits."""
        reserved = self.config.reserved(function)
        with self._lock:
            if reserved is not None:
                free = self._running[function] < reserved
            else:
                free = self._unreserved_running < self._unreserved
                if free:
                    self._unreserved_running += 1
            if not free:
                self.throttles[function] += 1
                raise Throttled(function)
            self._running[function] += 1

    def release(self, function: str) -> None:
        with self._lock:
            self._running[function] -= 1
            if self.config.reserved(function) is None:
                self._unreserved_running -= 1

    @contextmanager
    def execution(self, function: str) -> Iterator[None]:
        self.acquire(function)
        try:
            yield
        finally:
            self.release(function)
