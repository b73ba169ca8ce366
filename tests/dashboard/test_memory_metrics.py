"""``MemoryMetrics``: data points summed a minute, read back as CloudWatch reads them (aligned
periods, one statistic), forgotten after a day; the relay's ``record_visit`` feeds it."""

from __future__ import annotations

import pytest

from hatchway_relay.adapters.memory_metrics import MemoryMetrics
from hatchway_relay.metrics import record_visit
from support.fake_clock import START, FakeClock

ZERO = START - START % 3600  # an hour boundary


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(ZERO)


def test_points_are_summed_a_period_and_read_with_each_statistic(clock: FakeClock) -> None:
    metrics = MemoryMetrics(clock)
    for value in (10.0, 30.0):
        metrics.add("WaitTime", value, "Milliseconds")
    clock.advance(120)
    metrics.add("WaitTime", 50.0, "Milliseconds")

    def read(stat: str, period: int = 60) -> list[tuple[float, float]]:
        return metrics.series("WaitTime", None, ZERO, ZERO + 3600, period, stat)

    assert read("Sum") == [(ZERO, 40.0), (ZERO + 120, 50.0)]
    assert read("Average") == [(ZERO, 20.0), (ZERO + 120, 50.0)]
    assert read("Maximum") == [(ZERO, 30.0), (ZERO + 120, 50.0)]
    assert read("Minimum") == [(ZERO, 10.0), (ZERO + 120, 50.0)]
    assert read("SampleCount") == [(ZERO, 2.0), (ZERO + 120, 1.0)]
    assert read("Sum", 300) == [(ZERO, 90.0)]
    assert read("Average", 300) == [(ZERO, 30.0)]


def test_dimensions_split_the_points_and_name_the_causes(clock: FakeClock) -> None:
    metrics = MemoryMetrics(clock)
    record_visit(metrics, 200, None, 0.01)
    record_visit(metrics, 502, "agent-gone", 0.02)
    record_visit(metrics, 404, None, 0.03)
    record_visit(metrics, 502, "agent-gone", 0.02)

    def total(name: str, dimensions: dict[str, str] | None = None) -> float:
        return sum(v for _, v in metrics.series(name, dimensions, ZERO, ZERO + 60, 60, "Sum"))

    assert total("Requests") == 4
    assert total("Responses5xx") == 2
    assert total("Responses4xx") == 1
    assert total("Errors") == 0  # every Errors point has a Cause
    assert total("Errors", {"Cause": "agent-gone"}) == 2
    assert total("Errors", {"Cause": "local-app"}) == 1
    assert metrics.dimension_values("Errors", "Cause") == ["agent-gone", "local-app"]


def test_a_day_is_kept_and_older_points_are_forgotten(clock: FakeClock) -> None:
    metrics = MemoryMetrics(clock)
    metrics.add("Requests", 1, "Count", {"Cause": "old"})
    metrics.add("Requests", 1, "Count")
    clock.advance(86400 + 120)
    metrics.add("Requests", 1, "Count")  # a new minute: the day-old one goes
    assert metrics.series("Requests", None, ZERO, ZERO + 2 * 86400, 60, "Sum") == [
        (ZERO + 86400 + 120, 1.0)
    ]
    assert metrics.dimension_values("Requests", "Cause") == []


def test_an_unknown_statistic_or_a_period_finer_than_a_minute_is_refused() -> None:
    metrics = MemoryMetrics()
    with pytest.raises(ValueError, match="statistic"):
        metrics.series("Requests", None, 0, 60, 60, "p99")
    with pytest.raises(ValueError, match="multiple of 60"):
        metrics.series("Requests", None, 0, 60, 30, "Sum")
