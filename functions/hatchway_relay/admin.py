"""Operator actions on a relay's store: create, list and revoke agent tokens, with the names
each token reserves.

A new token is shown once and stored only as its hash. Tokens are identified afterwards by
their public id (the first 12 hex digits of the hash), which is safe to show and log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Protocol

from hatchway import protocol
from hatchway_relay import tokens
from hatchway_relay.ports import (
    Claim,
    ConnectionRecord,
    PoolMember,
    Store,
    TokenLimits,
    TokenRecord,
)


class AdminStore(Protocol):
    """The store calls the operator's commands make. Both adapters offer them, and
    ``hatchway-local`` serves them to ``hatchway-admin --local`` (its store is in its process).
    The listings may scan: they never run on a request path."""

    def put_token(self, record: TokenRecord) -> None: ...
    def get_token(self, token_hash: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def delete_token(self, token_hash: str) -> None: ...
    def get_connection(self, connection_id: str) -> ConnectionRecord | None: ...
    def list_connections(self) -> list[ConnectionRecord]: ...
    def delete_connection(self, connection_id: str) -> None: ...
    def list_claims(self) -> list[Claim]: ...
    def release_claim(self, name: str, connection_id: str) -> bool: ...
    def reserve_name(self, name: str, token_id: str) -> bool: ...
    def get_reservation(self, name: str) -> str | None: ...
    def release_reservation(self, name: str, token_id: str) -> bool: ...


@dataclass(frozen=True)
class NewToken:
    token: str
    record: TokenRecord


def register_token(
    store: Store | AdminStore,
    token: str,
    label: str = "",
    reserved: tuple[str, ...] = (),
    now: float = 0.0,
    limits: TokenLimits | None = None,
) -> TokenRecord:
    """Store ``token`` as its hash, with its limits, and reserve its names; refuses a name
    another token holds."""
    token_hash = tokens.hash_token(token)
    record = TokenRecord(
        token_hash=token_hash,
        token_id=tokens.token_id(token_hash),
        label=label,
        created_at=now or time.time(),
        reserved=tuple(protocol.validate_name(name) for name in reserved),
        limits=limits or TokenLimits(),
    )
    taken = [n for n in record.reserved if store.get_reservation(n) not in (None, record.token_id)]
    if taken:
        raise protocol.ProtocolError(f"tunnel name {taken[0]!r} is reserved for another token")
    store.put_token(record)
    for name in record.reserved:
        if not store.reserve_name(name, record.token_id):  # lost a race for it just now
            raise protocol.ProtocolError(f"tunnel name {name!r} is reserved for another token")
    return record


def create_token(
    store: AdminStore,
    label: str,
    reserved: tuple[str, ...] = (),
    limits: TokenLimits | None = None,
) -> NewToken:
    token = tokens.generate_token()
    return NewToken(token, register_token(store, token, label, reserved, limits=limits))


def list_tokens(store: AdminStore) -> list[TokenRecord]:
    return sorted(store.list_tokens(), key=lambda r: r.created_at)


def forget_connection(store: Store | AdminStore, connection_id: str) -> None:
    """Forget one connection and release exactly the names it holds — nobody else's (in a
    pool, only its own membership: the other members keep serving)."""
    record = store.get_connection(connection_id)
    if record is not None:
        for name in record.names:
            store.release_claim(name, connection_id)
    store.delete_connection(connection_id)


@dataclass(frozen=True)
class Revoked:
    record: TokenRecord
    connections: tuple[str, ...]
    """Connections that were open with the token and are now forgotten."""


def revoke_token(store: AdminStore, token_id: str) -> Revoked | None:
    """Delete the token with this public id and its reservations, and forget every connection
    opened with it; None if there is no such token.

    Its tunnels stop answering at once (their names are released). Each agent still holding a
    socket learns at its next heartbeat that the relay forgot it, and its reconnect is refused.
    """
    record = find_token(store, token_id)
    if record is None:
        return None
    store.delete_token(record.token_hash)
    for name in record.reserved:
        store.release_reservation(name, token_id)
    cut = tuple(c.connection_id for c in store.list_connections() if c.token_id == token_id)
    for connection_id in cut:
        forget_connection(store, connection_id)
    return Revoked(record, cut)


def find_token(store: AdminStore, token_id: str) -> TokenRecord | None:
    return next((r for r in store.list_tokens() if r.token_id == token_id), None)


def reserve(store: AdminStore, token_id: str, name: str) -> TokenRecord:
    """Reserve ``name`` for the token with this id (also recorded on the token)."""
    record = find_token(store, token_id)
    if record is None:
        raise LookupError(f"no token with id {token_id}")
    protocol.validate_name(name)
    if not store.reserve_name(name, token_id):
        raise protocol.ProtocolError(f"tunnel name {name!r} is reserved for another token")
    if name not in record.reserved:
        record = replace(record, reserved=(*record.reserved, name))
        store.put_token(record)
    return record


def release(store: AdminStore, token_id: str, name: str) -> bool:
    """Drop the token's reservation of ``name``; False if it held none."""
    record = find_token(store, token_id)
    released = store.release_reservation(name, token_id)
    if record is not None and name in record.reserved:
        store.put_token(replace(record, reserved=tuple(n for n in record.reserved if n != name)))
    return released


@dataclass(frozen=True)
class LiveTunnel:
    name: str
    token_id: str
    token_label: str
    connected_at: float
    """When its agent connected; for a pool, when the pool began serving the name."""
    served: int
    """Requests served (reported by pings); for a pool, its live members' total."""
    pool: tuple[PoolMember, ...] = ()
    """A pool's live members, oldest first; empty for a tunnel one agent serves alone."""
    errors: tuple[tuple[str, int], ...] = ()
    """Answers that were errors, by cause, most frequent first (a pool's members summed)."""
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None
    """Its answers' latency over the last minute (a pool's: its slowest member's)."""

    @property
    def agents(self) -> int:
        """How many agents serve the name."""
        return len(self.pool) if self.pool else 1


Reporter = Claim | PoolMember
"""A record that keeps what an agent's pings report (a single holder's claim, a member)."""


def errors_of(
    *reporters: Reporter, refused: tuple[tuple[str, int], ...] = ()
) -> tuple[tuple[str, int], ...]:
    """Errors by cause summed over ``reporters`` and what the relay answered itself
    (``Claim.refused``), most frequent first: every coded answer a visitor got."""
    total: dict[str, int] = {}
    for cause, count in [pair for r in reporters for pair in r.errors] + list(refused):
        total[cause] = total.get(cause, 0) + count
    return tuple(sorted(total.items(), key=lambda c: (-c[1], c[0])))


def latency_of(*reporters: Reporter) -> tuple[int | None, int | None]:
    """The recent latency (median, 95th percentile) of the slowest of ``reporters`` that
    answered anything lately: a pool is as slow as the member its visitors wait on longest."""
    timed = [r for r in reporters if r.latency_p95_ms is not None]
    if not timed:
        return None, None
    slowest = max(timed, key=lambda r: r.latency_p95_ms or 0)
    return slowest.latency_p50_ms, slowest.latency_p95_ms


def live_tunnels(store: AdminStore, now: float) -> list[LiveTunnel]:
    """Tunnels whose claim is current and whose connection is alive (for a pool: the members
    whose lease is current and whose connection is alive), by name. A name whose lone agent
    is stopping is not: its visitors are held for a restart, not served."""
    labels = {r.token_id: r.label for r in store.list_tokens()}
    found = []
    for claim in store.list_claims():
        label = labels.get(claim.token_id, "")
        if claim.pool:
            members = tuple(
                m for m in claim.members if m.alive(now) and _connected(store, m.connection_id, now)
            )
            if members:
                served = sum(m.served for m in members)
                found.append(
                    LiveTunnel(
                        claim.name,
                        claim.token_id,
                        label,
                        claim.pooled_since,
                        served,
                        members,
                        errors_of(*members, refused=claim.refused),
                        *latency_of(*members),
                    )
                )
            continue
        connection: ConnectionRecord | None = store.get_connection(claim.connection_id)
        serving = claim.alive(now) and not claim.leaving(now)
        if serving and connection is not None and connection.alive(now):
            found.append(
                LiveTunnel(
                    claim.name,
                    claim.token_id,
                    label,
                    connection.connected_at,
                    claim.served,
                    (),
                    errors_of(claim, refused=claim.refused),
                    *latency_of(claim),
                )
            )
    return sorted(found, key=lambda t: t.name)


def _connected(store: AdminStore, connection_id: str, now: float) -> bool:
    connection = store.get_connection(connection_id)
    return connection is not None and connection.alive(now)
