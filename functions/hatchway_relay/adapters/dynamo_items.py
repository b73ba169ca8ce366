"""How the relay's records become DynamoDB item attributes and back (``DynamoStore``): numbers
as Decimals, limits as JSON, a pool's members as one map, what a ping reports, when an item
may be garbage-collected."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

from hatchway_relay.ports import PoolMember, TokenLimits, TunnelReport

TTL_MARGIN_SECONDS = 3600
"""Items are garbage-collected this long after they stop mattering."""


def ttl(expires_at: float) -> int:
    """The ``ttl`` attribute of an item that stops mattering at ``expires_at``."""
    return int(expires_at + TTL_MARGIN_SECONDS)


def num(value: Any) -> float:
    # The resource API reads every number as Decimal; records hold floats.
    return float(value)


def dec(value: float) -> Decimal:
    # ``repr`` is the shortest text that reads back as the same float, so values round-trip.
    return Decimal(repr(float(value)))


def limits_attribute(name: str, limits: TokenLimits) -> dict[str, str]:
    """A token's limits as one JSON attribute, only when there are any."""
    return {name: json.dumps(dataclasses.asdict(limits))} if limits else {}


def limits(text: str | None) -> TokenLimits:
    return TokenLimits(**json.loads(text)) if text else TokenLimits()


def member_item(member: PoolMember) -> dict[str, Any]:
    """A pool member as a value of the claim's ``members`` map (keyed by its connection)."""
    item = {
        "instance": member.instance,
        "since": dec(member.since),
        "lease": dec(member.expires_at),
        "served": member.served,
        "ip": member.source_ip,
    }
    if member.errors:
        item["errors"] = dict(member.errors)
    if member.latency_p50_ms is not None:
        item["p50"], item["p95"] = member.latency_p50_ms, member.latency_p95_ms
    return item


def member(connection_id: str, item: dict[str, Any]) -> PoolMember:
    return PoolMember(
        connection_id,
        item.get("instance", ""),
        num(item["since"]),
        num(item["lease"]),
        int(item.get("served", 0)),
        item.get("ip", ""),
        **report_fields(item),
    )


def report_fields(item: dict[str, Any]) -> dict[str, Any]:
    """A claim's or member's errors and latency as the record's fields."""
    p50, p95 = item.get("p50"), item.get("p95")
    return {
        "errors": tuple(
            sorted(((cause, int(count)) for cause, count in item.get("errors", {}).items()))
        ),
        "latency_p50_ms": None if p50 is None else int(p50),
        "latency_p95_ms": None if p95 is None else int(p95),
    }


def report_update(
    report: TunnelReport, at: str, names: dict[str, str], values: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """The SET and REMOVE clauses that put ``report`` on the map at path ``at`` (``""`` for
    the claim item itself), adding their names and values. Absent errors and latency are
    removed, not stored empty: the item every ping rewrites stays as small as it can."""
    names.update({"#served": "served", "#errors": "errors", "#p50": "p50", "#p95": "p95"})
    sets, removes = [f"{at}#served = :served"], []
    values[":served"] = report.served
    if report.errors:
        sets.append(f"{at}#errors = :errors")
        values[":errors"] = dict(report.errors)
    else:
        removes.append(f"{at}#errors")
    if report.latency_p50_ms is not None:
        sets += [f"{at}#p50 = :p50", f"{at}#p95 = :p95"]
        values[":p50"], values[":p95"] = report.latency_p50_ms, report.latency_p95_ms
    else:
        removes += [f"{at}#p50", f"{at}#p95"]
    return sets, removes


def binary_value(value: Any) -> bytes:
    """A binary attribute's bytes: the resource API reads them as ``Binary`` wrappers."""
    return bytes(value.value if hasattr(value, "value") else value)
