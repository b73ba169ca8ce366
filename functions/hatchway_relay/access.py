"""Who may reach a tunnel: its address rules and its rate limit (``protocol.AccessRules``), and
its token's operator-set limits (``ports.TokenLimits``), checked by the relay before anything
else is done with a visitor request.

Addresses are the ones the platform saw (``requestContext.http.sourceIp``), never a header a
visitor can write. Rate limits are token buckets in the memory of each warm relay function: exact
on ``hatchway-local`` (one process), approximate on AWS, where every concurrent HTTP function
keeps its own bucket (N warm functions let up to N times the rate through; the HTTP API's
throttles stand behind them). No DynamoDB write is made per request to count.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from dataclasses import dataclass

from hatchway import protocol

MAX_BUCKETS = 4096
"""Tunnels whose buckets one warm function keeps (the least recently used go first)."""


@functools.lru_cache(maxsize=1024)
def _networks(
    ranges: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(r) for r in ranges)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: match it as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_allowed(rules: protocol.AccessRules, source_ip: str) -> bool:
    """Whether a visitor from ``source_ip`` may reach the tunnel: not in ``deny``, and in
    ``allow`` when there is one. An address the relay cannot read is refused by any rule."""
    if not rules.allow and not rules.deny:
        return True
    address = _address(source_ip)
    if address is None:
        return False
    if any(address in network for network in _networks(rules.deny)):
        return False
    return not rules.allow or any(address in network for network in _networks(rules.allow))


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets by key (a tunnel's name). Not thread-safe by itself: the relay takes from
    it under its own lock."""

    def __init__(self, max_buckets: int = MAX_BUCKETS) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._max = max_buckets

    def take(self, key: str, rate: float, burst: int, now: float) -> float | None:
        """Take one token: None if there was one, else the seconds until there will be."""
        bucket = self._buckets.pop(key, None) or _Bucket(float(burst), now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        self._buckets[key] = bucket  # re-inserted: the dict's order is least recent first
        if len(self._buckets) > self._max:
            self._buckets.pop(next(iter(self._buckets)))
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / rate


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))


SECONDS_PER_DAY = 86_400


class DailyCounter:
    """Requests per key (a token) in the current UTC day, in this function's memory. Not
    thread-safe by itself, like ``RateLimiter``."""

    def __init__(self, max_keys: int = MAX_BUCKETS) -> None:
        self._counts: dict[str, tuple[int, int]] = {}
        self._max = max_keys

    def take(self, key: str, limit: int, now: float) -> float | None:
        """Count one request: None if it is within ``limit`` today, else the seconds until the
        next UTC day begins."""
        day = int(now // SECONDS_PER_DAY)
        counted_day, count = self._counts.pop(key, (day, 0))
        if counted_day != day:
            count = 0
        self._counts[key] = (day, count + 1)
        if len(self._counts) > self._max:
            self._counts.pop(next(iter(self._counts)))
        if count < limit:
            return None
        return (day + 1) * SECONDS_PER_DAY - now


_PERIODS = (("a second", 1.0), ("a minute", 60.0), ("an hour", 3600.0), ("a day", 86400.0))
"""Periods a rate is said in: the first in which it comes to one request or more."""


def rate_in_words(per_second: float) -> str:
    """A rate as an operator set it and a visitor reads it: ``5 a minute``, not 0.0833333 a
    second (``--rate-limit 5/m``)."""
    for period, seconds in _PERIODS:
        count = per_second * seconds
        if count >= 1 or seconds == _PERIODS[-1][1]:
            return f"{round(count, 2):g} {period}"
    raise AssertionError("unreachable: the last period always answers")
