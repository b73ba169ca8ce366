"""``MemoryStore``: the relay's state in one process, for the local gateway and tests.

One lock guards everything; each awaited response has a condition variable on that lock that
wakes its waiter the moment the answer lands (or its agent's connection goes away), so the local
gateway pays no poll latency. A waiter that cannot block (a coroutine on the local gateway's
event loop) registers a wake-up for those same two events instead (``watch_response``).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hatchway import protocol
from hatchway.protocol import b64
from hatchway_relay.answer_items import ANSWER, WORKING
from hatchway_relay.ports import (
    Claim,
    Clock,
    ConnectionRecord,
    ShareRecord,
    SocketRecord,
    SystemClock,
    TokenRecord,
    TunnelReport,
    pool_options,
    reported,
)

MAX_SIGHTINGS = 100_000
"""Sightings kept before the expired ones are swept (each is a key and a time)."""


MAX_UNREAD_CHUNKS = 256
"""Chunks of one streamed body kept ahead of a visitor reading slower than the app writes
(16 MiB at most, at ``protocol.MAX_CHUNK_BYTES`` each)."""


@dataclass
class _Awaited:
    """A visitor request waiting for its answer."""

    connection_id: str
    expires_at: float
    answer: bytes | None = None
    working: bool = False
    item: dict[str, Any] = field(default_factory=dict)
    """The answer item as DynamoDB would hold it (typed attributes: ``update_answer``)."""
    ready: threading.Condition | None = None
    """What a blocked waiter waits on, made by the first one (a watching waiter needs none)."""
    wake: Callable[[], None] | None = None
    """A waiter's wake-up (``watch_response``), called once."""
    chunks: dict[int, bytes] = field(default_factory=dict)
    """A streamed body's chunks not read yet, by number."""

    def notify(self) -> None:
        """Wake whoever waits, blocked or watching (the store's lock is held)."""
        if self.ready is not None:
            self.ready.notify_all()
        wake, self.wake = self.wake, None
        if wake is not None:
            wake()


class MemoryStore:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenRecord] = {}
        self._connections: dict[str, ConnectionRecord] = {}
        self._claims: dict[str, Claim] = {}
        self._reservations: dict[str, str] = {}
        self._awaited: dict[str, _Awaited] = {}
        self._sightings: dict[str, float] = {}
        self._shares: dict[str, ShareRecord] = {}
        self._sockets: dict[str, SocketRecord] = {}
        self._passed: dict[str, int] = {}
        """The number of the last app message passed to each socket's visitor."""
        self._key = secrets.token_bytes(32)

    # Tokens

    def put_token(self, record: TokenRecord) -> None:
        with self._lock:
            self._tokens[record.token_hash] = record

    def get_token(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            return self._tokens.get(token_hash)

    def note_token_use(self, token_hash: str, now: float) -> None:
        with self._lock:
            record = self._tokens.get(token_hash)
            if record is not None:
                self._tokens[token_hash] = replace(record, last_used=now)

    def list_tokens(self) -> list[TokenRecord]:
        with self._lock:
            return list(self._tokens.values())

    def delete_token(self, token_hash: str) -> None:
        with self._lock:
            self._tokens.pop(token_hash, None)

    # Visitors' WebSockets

    def put_socket(self, record: SocketRecord) -> None:
        with self._lock:
            self._sockets[record.socket_id] = record
            self._passed.pop(record.socket_id, None)

    def get_socket(self, socket_id: str) -> SocketRecord | None:
        with self._lock:
            return self._sockets.get(socket_id)

    def move_socket(self, socket_id: str, token_id: str, connection_id: str) -> bool:
        with self._lock:
            record = self._sockets.get(socket_id)
            if record is None or record.token_id != token_id:
                return False
            self._sockets[socket_id] = replace(record, connection_id=connection_id)
            return True

    def delete_socket(self, socket_id: str) -> SocketRecord | None:
        with self._lock:
            self._passed.pop(socket_id, None)
            return self._sockets.pop(socket_id, None)

    def pass_socket_message(self, socket_id: str, seq: int) -> bool:
        with self._lock:
            if socket_id not in self._sockets or seq <= self._passed.get(socket_id, 0):
                return False
            self._passed[socket_id] = seq
            return True

    def sockets_of(self, connection_id: str) -> list[str]:
        with self._lock:
            return [s.socket_id for s in self._sockets.values() if s.connection_id == connection_id]

    # Connections

    def put_connection(self, record: ConnectionRecord) -> None:
        with self._lock:
            self._connections[record.connection_id] = record

    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        with self._lock:
            return self._connections.get(connection_id)

    def set_connection_names(
        self, connection_id: str, names: tuple[str, ...], pooled: tuple[str, ...] = ()
    ) -> None:
        with self._lock:
            record = self._connections.get(connection_id)
            if record is not None:
                self._connections[connection_id] = replace(record, names=names, pooled=pooled)

    def list_connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._connections.values())

    def delete_connection(self, connection_id: str) -> None:
        with self._lock:
            self._connections.pop(connection_id, None)
            for awaited in self._awaited.values():
                if awaited.connection_id == connection_id:
                    awaited.notify()

    # Claims

    def claim_name(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        with self._lock:
            held = self._claims.get(claim.name)
            if self._replaceable(held, now, takeover_from, claim.token_id) or (
                held is not None
                and not held.pool
                and held.token_id == claim.token_id
                and held.instance == claim.instance
            ):
                self._claims[claim.name] = claim
                return True
            return False

    @staticmethod
    def _replaceable(
        held: Claim | None, now: float, takeover_from: str | None, token_id: str
    ) -> bool:
        """Whether a new claim of ``token_id`` may replace ``held``: nothing is held, the
        holder's lease ran out (for a pool: the latest lease it gave), a pool emptied, its
        agent of the same token left it (a restart), or the caller found the single holder
        ``takeover_from`` dead."""
        return (
            held is None
            or now >= held.expires_at
            or (held.pool and not held.members and not held.left_at)
            or (bool(held.left_at) and held.token_id == token_id)
            or (not held.pool and takeover_from is not None and held.connection_id == takeover_from)
        )

    def join_pool(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        (joining,) = claim.members
        with self._lock:
            held = self._claims.get(claim.name)
            if self._replaceable(held, now, takeover_from, claim.token_id):
                self._claims[claim.name] = claim
                return True
            assert held is not None
            if (
                not held.pool
                or held.token_id != claim.token_id
                or pool_options(held) != pool_options(claim)
            ):
                return False
            # The same agent instance's earlier connection is replaced, not kept beside it.
            kept = tuple(
                m
                for m in held.members
                if m.connection_id != joining.connection_id
                and not (joining.instance and m.instance == joining.instance)
            )
            if len(kept) >= protocol.MAX_POOL_MEMBERS:
                return False
            self._claims[claim.name] = replace(
                held,
                members=(*kept, joining),
                # The newest lease is the latest one: the item's TTL follows it.
                expires_at=joining.expires_at,
            )
            return True

    def list_claims(self) -> list[Claim]:
        with self._lock:
            return list(self._claims.values())

    def get_claim(self, name: str) -> Claim | None:
        with self._lock:
            return self._claims.get(name)

    def renew_claim(
        self, name: str, connection_id: str, expires_at: float, report: TunnelReport | None = None
    ) -> bool:
        with self._lock:
            held = self._claims.get(name)
            if held is None or held.pool or held.connection_id != connection_id:
                return False
            renewed = replace(held, expires_at=expires_at)
            self._claims[name] = renewed if report is None else reported(renewed, report)
            return True

    def renew_member(
        self, name: str, connection_id: str, expires_at: float, report: TunnelReport | None = None
    ) -> int:
        with self._lock:
            held = self._claims.get(name)
            if held is None or all(m.connection_id != connection_id for m in held.members):
                return 0
            members = tuple(
                (
                    replace(m, expires_at=expires_at)
                    if report is None
                    else reported(replace(m, expires_at=expires_at), report)
                )
                if m.connection_id == connection_id
                else m
                for m in held.members
            )
            # A member alive again serves again, whatever left the pool meanwhile.
            self._claims[name] = replace(held, members=members, expires_at=expires_at, left_at=0.0)
            return len(members)

    def count_refusals(self, name: str, counts: Mapping[str, int]) -> None:
        with self._lock:
            held = self._claims.get(name)
            if held is None:
                return
            total = dict(held.refused)
            for cause, count in counts.items():
                total[cause] = total.get(cause, 0) + count
            self._claims[name] = replace(held, refused=tuple(sorted(total.items())))

    def release_claim(self, name: str, connection_id: str) -> bool:
        with self._lock:
            held = self._held_by(name, connection_id)
            if held is None:
                return False
            rest = held.without(connection_id)
            if held.pool and rest.members:
                self._claims[name] = rest
            else:
                del self._claims[name]
            return True

    def leave_claim(self, name: str, connection_id: str, now: float, hold_until: float) -> bool:
        with self._lock:
            held = self._held_by(name, connection_id)
            if held is None:
                return False
            rest = held.without(connection_id)
            if not held.pool or not rest.holders(now):  # visitors wait for a restart
                rest = replace(rest, left_at=now, expires_at=hold_until)
            self._claims[name] = rest
            return True

    def _held_by(self, name: str, connection_id: str) -> Claim | None:
        """The claim on ``name`` if ``connection_id`` holds it (alone, or as a pool member)."""
        held = self._claims.get(name)
        if held is None:
            return None
        if held.pool:
            return held if any(m.connection_id == connection_id for m in held.members) else None
        return held if held.connection_id == connection_id else None

    # The relay's own key

    def relay_key(self) -> bytes:
        return self._key

    # Reserved names

    def reserve_name(self, name: str, token_id: str) -> bool:
        with self._lock:
            return self._reservations.setdefault(name, token_id) == token_id

    def get_reservation(self, name: str) -> str | None:
        with self._lock:
            return self._reservations.get(name)

    def release_reservation(self, name: str, token_id: str) -> bool:
        with self._lock:
            if self._reservations.get(name) != token_id:
                return False
            del self._reservations[name]
            return True

    # Share links

    def put_share(self, record: ShareRecord) -> None:
        with self._lock:
            self._shares[record.share_id] = record

    def get_share(self, share_id: str) -> ShareRecord | None:
        with self._lock:
            return self._shares.get(share_id)

    def list_shares(self, token_id: str) -> list[ShareRecord]:
        with self._lock:
            return [r for r in self._shares.values() if r.token_id == token_id]

    def use_share(self, share_id: str, now: float) -> bool:
        with self._lock:
            record = self._shares.get(share_id)
            if record is None or not record.usable(now):
                return False
            self._shares[share_id] = replace(record, uses=record.uses + 1)
            return True

    def revoke_share(self, share_id: str, token_id: str) -> bool:
        with self._lock:
            record = self._shares.get(share_id)
            if record is None or record.token_id != token_id:
                return False
            self._shares[share_id] = replace(record, revoked=True)
            return True

    # Things seen once

    def first_sighting(self, key: str, expires_at: float) -> bool:
        with self._lock:
            now = self._clock.now()
            if len(self._sightings) > MAX_SIGHTINGS:
                self._sightings = {k: t for k, t in self._sightings.items() if t > now}
            if self._sightings.get(key, 0.0) > now:
                return False
            self._sightings[key] = expires_at
            return True

    # Responses

    def expect_response(self, request_id: str, connection_id: str, expires_at: float) -> None:
        with self._lock:
            self._awaited[request_id] = _Awaited(connection_id, expires_at)

    def update_answer(
        self,
        request_id: str,
        connection_id: str,
        update: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        """An ``UpdateItem`` on the item of ``connection_id``'s answer to ``request_id``, as
        API Gateway's answer integration makes it: ``update`` turns the item's typed
        attributes (DynamoDB's JSON form) into the new ones, or raises and changes nothing.
        An answer lands once the item holds ``ANSWER`` (binary), a mark once it holds
        ``WORKING``. Only an item a waiter reads is kept: one for another connection, or for
        a request nobody waits for (any more), is dropped, as nobody would ever read it."""
        with self._lock:
            awaited = self._awaited.get(request_id)
            if (
                awaited is None
                or awaited.connection_id != connection_id
                or self._clock.now() >= awaited.expires_at
            ):
                return
            awaited.item = update(dict(awaited.item))
            if (awaited.item.get(WORKING) or {}).get("BOOL") is True:
                awaited.working = True
            stored = (awaited.item.get(ANSWER) or {}).get("B")
            if awaited.answer is None and isinstance(stored, str):
                awaited.answer = b64.decode(stored)
                awaited.notify()

    def is_working(self, request_id: str) -> bool:
        with self._lock:
            awaited = self._awaited.get(request_id)
            return awaited is not None and awaited.working

    def wait_response(self, request_id: str, until: float, hint: float = 0.0) -> bytes | None:
        with self._lock:
            awaited = self._awaited.get(request_id)
            if awaited is None:
                return None
            self._wait_once(awaited, awaited.answer is not None, until)
            return awaited.answer

    def _wait_once(self, awaited: _Awaited, landed: bool, until: float) -> None:
        """Unless what the caller looks for has ``landed`` or ``until`` has passed (then it is a
        look, never a wait), wait for the next thing that lands for ``awaited``, with the
        store's lock held. One wake-up is enough: the caller looks again, and calls again."""
        seconds = until - self._clock.now()
        if landed or seconds <= 0:
            return
        if awaited.ready is None:
            awaited.ready = threading.Condition(self._lock)
        self._clock.wait(awaited.ready, seconds)

    def watch_response(self, request_id: str, wake: Callable[[], None]) -> None:
        """Call ``wake`` once, when ``request_id``'s answer lands or its connection goes (from
        whichever thread that happens on, under the store's lock: it must be quick); at once if
        nobody expects that answer. A later watch replaces this one (a request has one waiter).
        The caller then looks with ``wait_response`` and a time already past, so an answer
        stored just before the watch is not missed."""
        with self._lock:
            awaited = self._awaited.get(request_id)
            if awaited is not None:
                awaited.wake = wake
                return
        wake()

    def forget_response(self, request_id: str) -> None:
        with self._lock:
            self._awaited.pop(request_id, None)

    # Streamed bodies

    def put_chunk(self, request_id: str, connection_id: str, seq: int, data: bytes) -> None:
        """Kept only for the connection the waiter reads, and at most ``MAX_UNREAD_CHUNKS``
        ahead of it: an agent cannot fill this memory with chunks nobody reads."""
        with self._lock:
            awaited = self._awaited.get(request_id)
            if awaited is None or awaited.connection_id != connection_id:
                return
            if len(awaited.chunks) >= MAX_UNREAD_CHUNKS:
                return  # the waiter then finds the gap and cuts the stream at its idle limit
            awaited.chunks.setdefault(seq, data)
            if awaited.ready is not None:
                awaited.ready.notify_all()

    def wait_chunk(self, request_id: str, seq: int, until: float) -> bytes | None:
        with self._lock:
            awaited = self._awaited.get(request_id)
            if awaited is None:
                return None
            self._wait_once(awaited, seq in awaited.chunks, until)
            return awaited.chunks.pop(seq, None)
