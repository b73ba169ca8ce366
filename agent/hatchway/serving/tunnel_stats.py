"""How each tunnel's answers went on one agent connection, told to the relay in its pings:
errors by cause since the connection opened, and the latency of the last minute's answers
(median and 95th percentile). Counted in memory as answers go out; nothing travels per request,
and the relay stores the figures in the write each ping makes anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hatchway import protocol
from hatchway.protocol import Response, TunnelHealth
from hatchway.serving.recent import RecentValues, percentile

LATENCY_WINDOW_SECONDS = 60.0
"""Answers older than this no longer count toward a tunnel's reported latency."""

MAX_LATENCY_SAMPLES = 1000
"""Answer times kept per tunnel (the newest): a busy tunnel's percentiles come from its last
thousand answers, sorted once per ping."""

APP_5XX = "app-5xx"
"""The cause of an answer the local app itself gave with a 5xx status."""

LOCAL_APP_FAULTS = (
    ("connection refused", "local-app-refused"),
    ("did not answer within", "local-app-timeout"),
)
"""Words of the forwarder's fault messages that name a more precise cause than the relay's
``local-app-error``: the app is not running, or it is too slow."""

AGENT_REFUSED = "agent-refused"
"""The agent refused to forward a request (a target it will not send); the answer carries
this as ``x-hatchway-error``."""


def cause_of(response: Response) -> str | None:
    """The error cause ``response`` counts under, or None when it is not an error (a 4xx from
    the app is the visitor's mistake, not the tunnel's)."""
    fault = response.fault
    if fault is None:
        if ("x-hatchway-error", AGENT_REFUSED) in response.headers:
            return AGENT_REFUSED
        return APP_5XX if response.status >= 500 else None
    if response.status in protocol.FAULT_CODES:  # the code the relay gives visitors for it
        return protocol.FAULT_CODES[response.status]
    if fault.side != "local app":
        return "agent-error"
    return next(
        (cause for words, cause in LOCAL_APP_FAULTS if words in fault.message), "local-app-error"
    )


class TunnelStats:
    """Per tunnel: errors by cause and recent answer times. Thread-safe (workers record,
    the ticker reports)."""

    def __init__(
        self,
        window: float = LATENCY_WINDOW_SECONDS,
        max_samples: int = MAX_LATENCY_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_samples = max_samples
        self.clock = clock
        self._errors: dict[str, dict[str, int]] = {}
        self._times: dict[str, RecentValues] = {}
        self._lock = threading.Lock()

    def record(self, tunnel: str, response: Response, seconds: float | None) -> None:
        """One answer sent for ``tunnel``, ``seconds`` after its request arrived (None when
        unknown: it counts toward the errors only)."""
        cause = cause_of(response)
        now = self.clock()
        with self._lock:
            if tunnel not in self._times:
                # A connection serves at most this many tunnels; a relay naming more gets
                # their answers, not a ping too large to be read.
                if len(self._times) >= protocol.MAX_TUNNELS_PER_CONNECTION:
                    return
                self._times[tunnel] = RecentValues(self.max_samples)
                self._errors[tunnel] = {}
            if cause is not None:
                errors = self._errors[tunnel]
                errors[cause] = min(errors.get(cause, 0) + 1, protocol.MAX_REPORTED_COUNT)
            if seconds is not None:
                self._times[tunnel].add(now, seconds)

    def health(self) -> tuple[tuple[str, TunnelHealth], ...]:
        """What a ping says now: for each tunnel with errors or recent answers, its most
        frequent causes (at most ``MAX_ERROR_CAUSES``) and its latency over the window."""
        since = self.clock() - self.window
        with self._lock:
            found = []
            for tunnel, times in sorted(self._times.items()):
                ms = sorted(min(s * 1000, protocol.MAX_LATENCY_MS) for s in times.since(since))
                top = sorted(self._errors[tunnel].items(), key=lambda c: (-c[1], c[0]))
                health = TunnelHealth(
                    tuple(top[: protocol.MAX_ERROR_CAUSES]),
                    round(percentile(ms, 0.5)) if ms else None,
                    round(percentile(ms, 0.95)) if ms else None,
                )
                if health:
                    found.append((tunnel, health))
            return tuple(found)
