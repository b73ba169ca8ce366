"""The last values of a measure with the times they were taken (an answer's latency and when it
went out), for percentiles over a recent window.

They are kept in a ring of two ``array('d')``: 16 bytes a sample. A deque of ``(time, value)``
tuples takes 112 (the tuple, its two floats and its slot), and the agent keeps thousands of
samples for its status line and for each tunnel's health in the pings: under load the tuples
alone held more than a megabyte of the agent's memory.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence


class RecentValues:
    """At most ``capacity`` samples; past it, each new one replaces the oldest. Not thread-safe:
    its owners read and write it under their own lock."""

    __slots__ = ("_oldest", "_times", "_values", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a ring of recent values holds at least one")
        self.capacity = capacity
        # Grown as samples come, up to the capacity: an idle agent keeps none.
        self._times = array("d")
        self._values = array("d")
        self._oldest = 0
        """Where the next sample goes once the ring is full (the oldest sample's slot)."""

    def add(self, at: float, value: float) -> None:
        if len(self._times) < self.capacity:
            self._times.append(at)
            self._values.append(value)
            return
        slot = self._oldest
        self._times[slot] = at
        self._values[slot] = value
        self._oldest = (slot + 1) % self.capacity

    def since(self, start: float) -> list[float]:
        """The values taken at ``start`` or later, in no particular order."""
        return [value for at, value in zip(self._times, self._values, strict=True) if at >= start]

    def __len__(self) -> int:
        return len(self._times)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.5 for the median) of sorted, non-empty
    values."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
