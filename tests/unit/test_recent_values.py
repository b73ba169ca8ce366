"""``RecentValues``: the last samples of a measure within a fixed ring, read back by time, in
far less memory than the tuples it replaced."""

from __future__ import annotations

import tracemalloc
from collections import deque
from collections.abc import Callable

import pytest

from hatchway.serving.recent import RecentValues


def test_values_since_a_time_are_those_taken_then_or_later() -> None:
    ring = RecentValues(10)
    for at in range(5):
        ring.add(float(at), at * 10.0)
    assert sorted(ring.since(2.0)) == [20.0, 30.0, 40.0]
    assert sorted(ring.since(0.0)) == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert ring.since(5.0) == []
    assert len(ring) == 5


@pytest.mark.parametrize("added", [3, 4, 5, 9, 100, 101])
def test_past_its_capacity_each_sample_replaces_the_oldest(added: int) -> None:
    ring = RecentValues(4)
    for at in range(added):
        ring.add(float(at), float(at))
    kept = list(range(max(0, added - 4), added))
    assert sorted(ring.since(float("-inf"))) == kept
    assert len(ring) == len(kept)


def test_an_empty_ring_has_nothing_and_no_ring_is_smaller_than_one() -> None:
    assert RecentValues(3).since(float("-inf")) == []
    with pytest.raises(ValueError, match="at least one"):
        RecentValues(0)


def footprint(add: Callable[[float, float], None], count: int) -> int:
    """Bytes still allocated after ``count`` samples went through ``add`` (traced from before
    its first call: what the samples and their container grew by)."""
    tracemalloc.start()
    try:
        for n in range(count):
            add(1e6 + n * 0.001, n * 0.37)
        return tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()


def test_a_full_ring_takes_a_fraction_of_the_tuples_it_replaced() -> None:
    count = 10_000
    ring = RecentValues(count)
    tuples: deque[tuple[float, float]] = deque(maxlen=count)
    ring_bytes = footprint(ring.add, count)
    tuples_bytes = footprint(lambda at, value: tuples.append((at, value)), count)
    assert len(ring) == len(tuples) == count
    assert ring_bytes <= 18 * count  # two doubles a sample, and the arrays' slack
    assert tuples_bytes >= 5 * ring_bytes
