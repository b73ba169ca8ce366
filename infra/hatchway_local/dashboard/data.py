"""What the dashboard shows of a relay's state and what it may change there: the
``DashboardSource`` port, its rows, and ``StoreSource``, the adapter over any ``AdminStore``
(``DynamoStore`` for a deployed stack, ``RemoteStore`` for ``hatchway-local``).

Rows carry only what an operator may see: token ids and labels, never token hashes, a
tunnel's guards as on/off, never its password hash or webhook secret.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from hatchway import protocol
from hatchway_relay import admin
from hatchway_relay.admin import AdminStore
from hatchway_relay.ports import Claim, ConnectionRecord, TokenLimits, TokenRecord

MAX_LABEL_CHARS = 100
"""Longest token label accepted from the page (the CLI's labels are a laptop's name)."""

MAX_RESERVED_AT_CREATION = 20
"""Names one new token may reserve from the form; more go through ``reserve`` one by one."""

MAX_LIMIT = 1_000_000_000
"""Largest number accepted in a token limit (0 means no limit)."""


class Refused(ValueError):
    """The operator's request cannot be done as asked; the message says why and what to do."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    label: str
    created_at: float
    reserved: tuple[str, ...]
    limits: dict[str, float]
    tunnels: tuple[str, ...]
    """Names its agents serve right now."""
    connections: int
    """Its live agent connections."""
    in_use_since: float | None
    """When its oldest live connection opened; None when no agent is connected."""
    last_used: float | None
    """When an agent last connected with it (the relay notes it to the minute), or now while
    one is connected; None if none ever did."""


@dataclass(frozen=True)
class ReservationRow:
    name: str
    token_id: str
    token_label: str
    live: bool
    """Whether a tunnel of that name is being served now."""


@dataclass(frozen=True)
class TunnelRow:
    name: str
    token_id: str
    token_label: str
    connected_at: float
    source_ip: str
    served: int
    """Visitor requests handed to the agent, as its last heartbeat reported."""
    access: dict[str, Any]
    guards: dict[str, Any]
    token_limits: dict[str, float]
    members: tuple[dict[str, Any], ...] = ()
    """A pool's live agents (since, source IP, served, errors, latency), oldest first; empty
    for one agent."""
    errors: dict[str, int] = field(default_factory=dict)
    """Answers that were errors, by cause, most frequent first, as the agent's last heartbeat
    reported (a pool's members summed)."""
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None
    """The latency of its answers over the last minute (a pool's: its slowest member's);
    None when it answered nothing lately."""


@dataclass(frozen=True)
class Snapshot:
    tokens: tuple[TokenRow, ...]
    reservations: tuple[ReservationRow, ...]
    tunnels: tuple[TunnelRow, ...]
    taken_at: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Created:
    """A new token: ``token`` is shown to the operator once and kept nowhere."""

    token: str = field(repr=False)
    row: TokenRow


class DashboardSource(Protocol):
    """The relay's tokens, names and tunnels, and the operator's actions on them."""

    def snapshot(self) -> Snapshot: ...
    def create_token(self, label: str, reserved: tuple[str, ...], limits: TokenLimits) -> Created:
        """Raises ``Refused`` for a name another token holds or an invalid one."""
        ...

    def revoke_token(self, token_id: str) -> tuple[str, ...]:
        """Delete the token and cut its connections (their ids); ``Refused`` (404) if unknown."""
        ...

    def reserve(self, name: str, token_id: str) -> None: ...
    def release(self, name: str, token_id: str) -> None: ...


def limits_view(limits: TokenLimits) -> dict[str, float]:
    return {
        "rate": limits.rate,
        "burst": limits.burst,
        "max_tunnels": limits.max_tunnels,
        "requests_per_day": limits.requests_per_day,
    }


def parse_limits(given: Mapping[str, Any] | None) -> TokenLimits:
    """A token's limits from the page's form; absent or empty fields are 0 (no limit)."""
    values: dict[str, Any] = {}
    for key, kind in (
        ("rate", float),
        ("burst", int),
        ("max_tunnels", int),
        ("requests_per_day", int),
    ):
        raw = (given or {}).get(key)
        if raw in (None, ""):
            continue
        try:
            number = kind(raw)
        except (TypeError, ValueError):
            raise Refused(f"limit {key} must be a number, not {raw!r}") from None
        if not (math.isfinite(number) and 0 <= number <= MAX_LIMIT):
            raise Refused(f"limit {key} must be 0 (no limit) to {MAX_LIMIT}")
        values[key] = number
    return TokenLimits(**values)


def _guards(claim: Claim) -> dict[str, Any]:
    return {
        "basic_auth": bool(claim.basic_auth),
        "webhook": claim.webhook,
        "large_responses": claim.large_responses,
    }


def _access(rules: protocol.AccessRules) -> dict[str, Any]:
    return {
        "allow": list(rules.allow),
        "deny": list(rules.deny),
        "rate": rules.rate,
        "burst": rules.burst,
    }


class StoreSource:
    """``DashboardSource`` over an ``AdminStore``: three listings a snapshot (tokens, claims,
    connections; each one query of the listings index on DynamoDB), joined here. Actions go through
    ``hatchway_relay.admin``, as ``hatchway-admin``'s do."""

    def __init__(self, store: AdminStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def snapshot(self) -> Snapshot:
        now = self.clock()
        records = admin.list_tokens(self.store)
        labels = {r.token_id: r.label for r in records}
        connections = {c.connection_id: c for c in self.store.list_connections() if c.alive(now)}
        found = (self._tunnel(c, connections, labels, now) for c in self.store.list_claims())
        tunnels = tuple(sorted((t for t in found if t is not None), key=lambda t: t.name))
        live = {t.name for t in tunnels}
        tokens = tuple(self._token(r, connections.values(), tunnels, now) for r in records)
        reservations = tuple(
            sorted(
                (
                    ReservationRow(name, r.token_id, r.label, name in live)
                    for r in records
                    for name in r.reserved
                ),
                key=lambda row: row.name,
            )
        )
        return Snapshot(tokens, reservations, tunnels, now)

    @staticmethod
    def _tunnel(
        claim: Claim,
        connections: dict[str, ConnectionRecord],
        labels: dict[str, str],
        now: float,
    ) -> TunnelRow | None:
        """The claim's row if someone serves it now: its one agent, or a pool's live members
        (read by name: pools are newer than some stores this dashboard may read)."""
        if not claim.alive(now):
            return None
        members: tuple[dict[str, Any], ...] = ()
        if getattr(claim, "pool", False):
            live = [
                m
                for m in getattr(claim, "members", ())
                if m.alive(now) and m.connection_id in connections
            ]
            if not live:
                return None
            members = tuple(
                {
                    "since": m.since,
                    "source_ip": m.source_ip,
                    "served": m.served,
                    "errors": dict(admin.errors_of(m)),
                    "latency_p50_ms": m.latency_p50_ms,
                    "latency_p95_ms": m.latency_p95_ms,
                }
                for m in live
            )
            since = getattr(claim, "pooled_since", 0.0) or min(m.since for m in live)
            source_ip = ", ".join(dict.fromkeys(m.source_ip for m in live if m.source_ip))
            served = sum(m.served for m in live)
            reporters: tuple[admin.Reporter, ...] = tuple(live)
        elif claim.connection_id in connections:
            connection = connections[claim.connection_id]
            since, source_ip, served = connection.connected_at, connection.source_ip, claim.served
            reporters = (claim,)
        else:
            return None
        p50, p95 = admin.latency_of(*reporters)
        return TunnelRow(
            name=claim.name,
            token_id=claim.token_id,
            token_label=labels.get(claim.token_id, ""),
            connected_at=since,
            source_ip=source_ip,
            served=served,
            access=_access(claim.access),
            guards=_guards(claim),
            token_limits=limits_view(claim.token_limits),
            members=members,
            errors=dict(admin.errors_of(*reporters, refused=claim.refused)),
            latency_p50_ms=p50,
            latency_p95_ms=p95,
        )

    @staticmethod
    def _token(
        record: TokenRecord,
        connections: Any,
        tunnels: tuple[TunnelRow, ...],
        now: float,
    ) -> TokenRow:
        opened = [c.connected_at for c in connections if c.token_id == record.token_id]
        return TokenRow(
            token_id=record.token_id,
            label=record.label,
            created_at=record.created_at,
            reserved=record.reserved,
            limits=limits_view(record.limits),
            tunnels=tuple(t.name for t in tunnels if t.token_id == record.token_id),
            connections=len(opened),
            in_use_since=min(opened) if opened else None,
            last_used=now if opened else (record.last_used or None),
        )

    def create_token(self, label: str, reserved: tuple[str, ...], limits: TokenLimits) -> Created:
        label = label.strip()
        if not label or len(label) > MAX_LABEL_CHARS:
            raise Refused(f"give the token a label of 1 to {MAX_LABEL_CHARS} characters")
        if len(reserved) > MAX_RESERVED_AT_CREATION:
            raise Refused(f"reserve at most {MAX_RESERVED_AT_CREATION} names at creation")
        try:
            new = admin.create_token(self.store, label, reserved, limits)
        except protocol.ProtocolError as exc:
            raise Refused(str(exc)) from None
        return Created(new.token, self._token(new.record, (), (), self.clock()))

    def revoke_token(self, token_id: str) -> tuple[str, ...]:
        revoked = admin.revoke_token(self.store, token_id)
        if revoked is None:
            raise Refused(f"no token with id {token_id}: it may be revoked already", 404)
        return revoked.connections

    def reserve(self, name: str, token_id: str) -> None:
        try:
            admin.reserve(self.store, token_id, name)
        except LookupError as exc:
            raise Refused(str(exc), 404) from None
        except protocol.ProtocolError as exc:
            raise Refused(str(exc), 409 if "reserved" in str(exc) else 400) from None

    def release(self, name: str, token_id: str) -> None:
        if not admin.release(self.store, token_id, name):
            raise Refused(f"{token_id} holds no reservation of {name}", 404)
