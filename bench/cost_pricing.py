"""The arithmetic of ``make cost``: DynamoDB item sizes, billing units, data transfer, Lambda
duration at a memory size's CPU share, cold starts, the memory table, and dollars from the one
price table in ``hatchway_relay.prices``."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hatchway_relay import prices

PER_MILLION = 1_000_000
GB = 1024**3
"""AWS bills storage and log ingestion per GB of 2^30 bytes."""
DAYS_PER_MONTH = 30
SUMMARY_KEYS = ("1kb", "10kb", "100kb", "1mb", "4mb-request")
COLD_START_EVERY = 100
"""One cold start per this many invocations of each function. AWS's analysis of production
workloads puts cold starts "in under 1% of invocations" (AWS Compute blog, "AWS Lambda
standardizes billing for INIT Phase", 2025): at a million requests a month (one every 2.6 s on
average) a function's few environments stay warm between visitors, and each is replaced every few
hours. A tunnel visited once every quarter of an hour pays one on nearly every request instead;
the report prints the cost of one cold start so that such traffic can be priced too."""
MEMORY_CANDIDATES = (128, 192, 256, 384, 512, 1024, 1769)

# --- DynamoDB item sizes (the developer guide's "Item sizes and formats") ---------------------


def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def number_size(text: str) -> int:
    """1 byte per two significant digits plus 1; leading and trailing zeros do not count.

    The guide calls this approximate; a negative sign costs one more byte in every
    reverse-engineered account of it, so it is counted here too."""
    mantissa = text.strip().lower().split("e", 1)[0]
    # Decimal would round beyond its 28-digit context; DynamoDB keeps 38 significant digits.
    significant = len(mantissa.lstrip("+-").replace(".", "").strip("0"))
    negative = mantissa.startswith("-") and significant > 0
    return math.ceil(significant / 2) + 1 + (1 if negative else 0)


def _binary_size(value: str | bytes) -> int:
    """Raw bytes count: base64 text on the wire, bytes once botocore has parsed it."""
    return len(value) if isinstance(value, bytes | bytearray) else len(base64.b64decode(value))


def value_size(value: Mapping[str, Any]) -> int:
    """The size of one typed attribute value (``{"S": ...}``, ``{"M": {...}}``...) without its
    name, as it travels in DynamoDB's JSON wire format."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return _utf8(inner)
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_utf8(s) for s in inner)
    if kind == "NS":
        return sum(number_size(n) for n in inner)
    if kind == "BS":
        return sum(_binary_size(b) for b in inner)
    if kind == "L":
        # 3 bytes for the list, 1 more per element.
        return 3 + sum(value_size(element) + 1 for element in inner)
    if kind == "M":
        return 3 + sum(_utf8(name) + value_size(element) + 1 for name, element in inner.items())
    raise ValueError(f"unknown DynamoDB type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    """Attribute names plus values; 0 for no item."""
    if not item:
        return 0
    return sum(_utf8(name) + value_size(value) for name, value in item.items())


def write_units(before_bytes: int, after_bytes: int, transactional: bool = False) -> int:
    """A write bills the larger of the item before and after it (a delete: the old item; a
    refused conditional write: the item as it stands, at least 1); transactions bill double."""
    units = prices.dynamodb_write_units(max(before_bytes, after_bytes))
    return units * 2 if transactional else units


def read_units(item_bytes: int, consistent: bool = True) -> float:
    """A strongly consistent read of up to 4 KB is 1 RRU (a miss too); eventually consistent
    reads cost half."""
    units = prices.dynamodb_read_units(item_bytes)
    return float(units) if consistent else units / 2


# --- API Gateway and Lambda metering ----------------------------------------------------------


def websocket_units(message_bytes: int) -> int:
    """WebSocket messages are metered per started 32 KB."""
    return max(1, math.ceil(message_bytes / prices.WEBSOCKET_METERING_BYTES))


def http_api_units(request_and_response_bytes: int) -> int:
    """HTTP API requests are metered per started 512 KB of request plus response."""
    return max(1, math.ceil(request_and_response_bytes / prices.HTTP_API_METERING_BYTES))


def lambda_billed_ms(seconds: float) -> int:
    """Lambda bills duration per started millisecond."""
    return max(1, math.ceil(seconds * 1000 - 1e-9))


def s3_gb_months(nbytes: int, days: float) -> float:
    """Storage of ``nbytes`` for ``days`` (S3 bills byte-hours, summed over the month)."""
    return nbytes / GB * days / DAYS_PER_MONTH


def lambda_gb_seconds(billed_ms: int, memory_mb: int) -> float:
    return billed_ms / 1000 * memory_mb / 1024


def transfer_gb(nbytes: float) -> float:
    """Data transfer is billed per GB of 2^30 bytes, like storage."""
    return nbytes / GB


# --- Lambda CPU by memory size ----------------------------------------------------------------


def cpu_share(memory_mb: int) -> float:
    """The part of one vCPU a function gets: all of it at 1,769 MB, proportionally less below.
    Above, more vCPUs, but single-threaded handler code runs no faster."""
    return min(1.0, memory_mb / prices.LAMBDA_ONE_VCPU_MB)


def seconds_at(wall: float, cpu: float, memory_mb: int) -> float:
    """An invocation's duration at ``memory_mb``, from one measured on a full core: its waits
    (I/O, the agent, the app) as they were, its CPU work stretched by the size's CPU share. One
    core of the measuring machine is taken as one Lambda vCPU."""
    cpu = min(max(cpu, 0.0), wall)
    return wall - cpu + cpu / cpu_share(memory_mb)


@dataclass(frozen=True)
class Profile:
    """What one function did per visitor request, measured on a full core."""

    function: str
    invocations: float
    """Invocations per visitor request."""
    wall: float
    """Seconds per invocation (waits and CPU)."""
    cpu: float
    """Thread CPU seconds per invocation."""


def cold_start_lines(
    profiles: Iterable[Profile],
    init_cpu: float,
    memory_of: Callable[[str], int],
    every: int = COLD_START_EVERY,
) -> list[Line]:
    """One INIT per ``every`` invocations of each function, billed like its invocations (since
    August 2025): ``init_cpu`` seconds of CPU on a full core, stretched by the CPU share."""
    lines = []
    for profile in profiles:
        if profile.invocations <= 0:
            continue
        memory = memory_of(profile.function)
        billed = lambda_billed_ms(init_cpu / cpu_share(memory))
        count = profile.invocations / every
        lines.append(
            Line(
                f"Lambda INIT, {profile.function} (1/{every} inv., {billed} ms)",
                count,
                count * lambda_gb_seconds(billed, memory),
                "GB-s",
                prices.LAMBDA_ARM_GB_SECOND,
            )
        )
    return lines


@dataclass(frozen=True)
class MemoryOption:
    """One candidate memory size for one function, per visitor request."""

    memory_mb: int
    cpu_ms: float
    """The invocation's CPU work at this size's share (on a full core: the measured CPU)."""
    added_ms: float
    """Latency the smaller CPU share adds to each invocation, against a full vCPU."""
    duration: float
    """Lambda duration, dollars per million visitor requests (CPU and waits)."""
    wait_second: float
    """Dollars per million visitor requests for each further second the function waits."""
    init_ms: float
    """A cold start's INIT at this size."""
    init: float
    """Cold starts (at ``COLD_START_EVERY``), dollars per million visitor requests."""

    @property
    def per_million(self) -> float:
        return self.duration + self.init


def memory_options(
    profile: Profile,
    init_cpu: float,
    candidates: Iterable[int] = MEMORY_CANDIDATES,
    every: int = COLD_START_EVERY,
) -> list[MemoryOption]:
    """The memory table of one function: what its measured work costs, in latency and dollars,
    at each candidate size."""
    options = []
    per_second = prices.LAMBDA_ARM_GB_SECOND * PER_MILLION * profile.invocations
    for memory in candidates:
        cpu = profile.cpu / cpu_share(memory)
        seconds = seconds_at(profile.wall, profile.cpu, memory)
        init = init_cpu / cpu_share(memory)
        options.append(
            MemoryOption(
                memory,
                cpu * 1000,
                (cpu - profile.cpu) * 1000,
                seconds * memory / 1024 * per_second,
                memory / 1024 * per_second,
                init * 1000,
                init * memory / 1024 * per_second / every,
            )
        )
    return options


# --- Lines of a bill --------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One priced operation of a case: how often it happened per visitor request, how many
    billing units that was, and what a unit costs."""

    operation: str
    count: float
    units: float
    unit: str
    price: float
    nbytes: float = 0.0
    """Bytes behind the units (item, message or request size), per visitor request."""

    @property
    def per_million(self) -> float:
        return self.units * self.price * PER_MILLION


def total_per_million(lines: Iterable[Line]) -> float:
    return sum(line.per_million for line in lines)


def floor_lines(app_seconds: float, memory_mb: int) -> list[Line]:
    """What the platform itself charges for one proxied request: one HTTP API request, one
    WebSocket message each way, the one Lambda invocation that waits (API Gateway stores the
    answer itself), billed for the app's own latency."""
    billed = lambda_billed_ms(app_seconds)
    return [
        Line("HTTP API request", 1, 1, "request", prices.HTTP_API_REQUEST),
        Line("WebSocket messages", 2, 2, "message", prices.WEBSOCKET_MESSAGE),
        Line("Lambda invocation", 1, 1, "invocation", prices.LAMBDA_REQUEST),
        Line(
            f"Lambda duration ({billed} ms at {memory_mb} MB)",
            1,
            lambda_gb_seconds(billed, memory_mb),
            "GB-s",
            prices.LAMBDA_ARM_GB_SECOND,
        ),
    ]


def summary_line(
    per_million: Mapping[str, float],
    floor: float,
    transfer_1mb: float,
    wait_1s: float,
    access_logs: float | None = None,
    socket_message: float | None = None,
) -> str:
    """The one line scripts read: dollars per million visitor requests, as computed; the
    transfer part of ``1mb=``, what one more second of the app's latency adds and the access
    logs' part of ``1kb=`` come last, so that readers of the older keys keep working."""
    parts = [f"{key}={per_million[key]:.2f}" for key in SUMMARY_KEYS]
    extra = [f"floor={floor:.2f}", f"transfer-1mb={transfer_1mb:.2f}", f"wait-1s={wait_1s:.2f}"]
    if access_logs is not None:
        extra.append(f"access-logs={access_logs:.2f}")
    if socket_message is not None:  # per million round trips on a visitor's WebSocket
        extra.append(f"socket-message={socket_message:.2f}")
    return " ".join(["cost-per-million", *parts, *extra])


ACCESS_LOGS = "CloudWatch Logs, access log"
"""How every access-log line of a bill starts (ingestion and storage)."""


def access_logs_per_million(lines: Iterable[Line]) -> float:
    """The access logs' part of a bill."""
    return sum(line.per_million for line in lines if line.operation.startswith(ACCESS_LOGS))


def transfer_per_million(lines: Iterable[Line]) -> float:
    """The data-transfer part of a bill."""
    return sum(line.per_million for line in lines if line.operation.startswith(TRANSFER))


TRANSFER = "Data transfer out"
"""How every data-transfer line of a bill starts."""
