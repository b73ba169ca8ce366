"""A clock for tests: time moves only when code sleeps or waits on it, or a test advances it."""

from __future__ import annotations

import threading


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += max(seconds, 0.0)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        # Whatever could wake the waiter has already happened or never will: in fake time the
        # whole timeout passes at once.
        self.advance(seconds)
