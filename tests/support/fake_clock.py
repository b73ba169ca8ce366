"""A clock for tests: time moves only when code sleeps or waits on it, or a test advances it."""

from __future__ import annotations

import threading

START = 1_700_000_000.0
"""Where every fake clock starts unless told otherwise (a plausible epoch time, Nov 2023)."""


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []
        """Every ``sleep`` asked for, in order: lets a test check a polling schedule."""

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.0)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
        self.advance(seconds)

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        # Whatever could wake the waiter has already happened or never will: in fake time the
        # whole timeout passes at once.
        self.advance(seconds)
