"""``MemoryMetrics``: the ``Metrics`` port kept in one process for a day, a bucket a minute, so
that ``hatchway-local``'s dashboard can chart what CloudWatch charts for a deployed stack.

It answers the two questions a chart asks of CloudWatch, in CloudWatch's terms: the series of
one metric (``Sum``, ``Average``, ``Maximum``, ``Minimum`` or ``SampleCount`` a period), and
the values one dimension took (the causes of ``Errors``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from hatchway_relay.ports import Clock, SystemClock

RETENTION_SECONDS = 24 * 60 * 60
"""How far back data points are kept: the dashboard's longest window is a day."""

BUCKET_SECONDS = 60
"""The finest period kept: CloudWatch's standard resolution."""

STATISTICS = ("Sum", "Average", "Maximum", "Minimum", "SampleCount")

_Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class _Bucket:
    total: float = 0.0
    count: int = 0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: float, count: int = 1) -> None:
        self.total += value
        self.count += count
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def merge(self, other: _Bucket) -> None:
        self.total += other.total
        self.count += other.count
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def statistic(self, stat: str) -> float:
        return {
            "Sum": self.total,
            "Average": self.total / self.count if self.count else 0.0,
            "Maximum": self.high,
            "Minimum": self.low,
            "SampleCount": float(self.count),
        }[stat]


class MemoryMetrics:
    """Data points by metric name and dimensions, summed per minute, forgotten after a day."""

    def __init__(
        self,
        clock: Clock | None = None,
        retention_seconds: float = RETENTION_SECONDS,
        bucket_seconds: int = BUCKET_SECONDS,
    ) -> None:
        self.clock = clock or SystemClock()
        self.retention_seconds = retention_seconds
        self.bucket_seconds = bucket_seconds
        self._buckets: dict[_Key, dict[int, _Bucket]] = {}
        self._lock = threading.Lock()

    def add(
        self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None
    ) -> None:
        now = self.clock.now()
        minute = int(now // self.bucket_seconds) * self.bucket_seconds
        key = (name, frozenset((dimensions or {}).items()))
        with self._lock:
            buckets = self._buckets.setdefault(key, {})
            if minute not in buckets:
                # A new minute starts: the oldest ones go (one check a minute, not a point).
                oldest = now - self.retention_seconds
                for stale in [m for m in buckets if m < oldest]:
                    del buckets[stale]
                buckets[minute] = _Bucket()
            buckets[minute].add(value)

    def series(
        self,
        name: str,
        dimensions: Mapping[str, str] | None,
        start: float,
        end: float,
        period: int,
        stat: str,
    ) -> list[tuple[float, float]]:
        """(period start, statistic) for each period from ``start`` to ``end`` that has data,
        oldest first. Periods are aligned to ``start``, as CloudWatch's are."""
        if stat not in STATISTICS:
            raise ValueError(f"unknown statistic {stat!r}: use one of {', '.join(STATISTICS)}")
        if period < self.bucket_seconds or period % self.bucket_seconds:
            raise ValueError(f"the period must be a multiple of {self.bucket_seconds} s")
        key = (name, frozenset((dimensions or {}).items()))
        periods: dict[float, _Bucket] = {}
        with self._lock:
            for minute, bucket in self._buckets.get(key, {}).items():
                if start <= minute < end:
                    slot = start + (minute - start) // period * period
                    periods.setdefault(slot, _Bucket()).merge(bucket)
        return [(slot, periods[slot].statistic(stat)) for slot in sorted(periods)]

    def dimension_values(self, name: str, dimension: str, since: float = 0.0) -> list[str]:
        """Every value ``dimension`` took on ``name`` since ``since`` (e.g. the causes of
        ``Errors``), sorted."""
        # A bucket counts if any of its minute is recent enough.
        oldest = max(since, self.clock.now() - self.retention_seconds) - self.bucket_seconds
        with self._lock:
            found = {
                value
                for (metric, dimensions), buckets in self._buckets.items()
                if metric == name and any(minute > oldest for minute in buckets)
                for key, value in dimensions
                if key == dimension
            }
        return sorted(found)
