"""``MemoryStore``: the relay's state in one process, for the local gateway and tests.

One lock guards everything; each pending request has a condition variable on that lock that wakes
its waiter the moment the last frame lands (or its agent's connection goes away), so the local
gateway pays no poll latency.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace

from hatchway_relay.ports import (
    Claim,
    Clock,
    ConnectionRecord,
    StoredFrame,
    SystemClock,
    TokenRecord,
)


@dataclass
class _Pending:
    connection_id: str
    expires_at: float
    ready: threading.Condition
    frames: dict[int, StoredFrame] = field(default_factory=dict)

    def complete(self) -> bool:
        if not self.frames:
            return False
        count = next(iter(self.frames.values())).count
        return len(self.frames) == count


class MemoryStore:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._tokens: dict[str, TokenRecord] = {}
        self._connections: dict[str, ConnectionRecord] = {}
        self._claims: dict[str, Claim] = {}
        self._reservations: dict[str, str] = {}
        self._pending: dict[str, _Pending] = {}

    # Tokens

    def put_token(self, record: TokenRecord) -> None:
        with self._lock:
            self._tokens[record.token_hash] = record

    def get_token(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            return self._tokens.get(token_hash)

    def list_tokens(self) -> list[TokenRecord]:
        with self._lock:
            return list(self._tokens.values())

    def delete_token(self, token_hash: str) -> None:
        with self._lock:
            self._tokens.pop(token_hash, None)

    # Connections

    def put_connection(self, record: ConnectionRecord) -> None:
        with self._lock:
            self._connections[record.connection_id] = record

    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        with self._lock:
            return self._connections.get(connection_id)

    def set_connection_names(self, connection_id: str, names: tuple[str, ...]) -> None:
        with self._lock:
            record = self._connections.get(connection_id)
            if record is not None:
                self._connections[connection_id] = replace(record, names=names)

    def list_connections(self) -> list[ConnectionRecord]:
        with self._lock:
            return list(self._connections.values())

    def delete_connection(self, connection_id: str) -> None:
        with self._lock:
            self._connections.pop(connection_id, None)
            for pending in self._pending.values():
                if pending.connection_id == connection_id:
                    pending.ready.notify_all()

    # Claims

    def claim_name(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        with self._lock:
            held = self._claims.get(claim.name)
            if (
                held is None
                or not held.alive(now)
                or held.token_id == claim.token_id
                or (takeover_from is not None and held.connection_id == takeover_from)
            ):
                self._claims[claim.name] = claim
                return True
            return False

    def list_claims(self) -> list[Claim]:
        with self._lock:
            return list(self._claims.values())

    def get_claim(self, name: str) -> Claim | None:
        with self._lock:
            return self._claims.get(name)

    def renew_claim(self, name: str, connection_id: str, expires_at: float) -> bool:
        with self._lock:
            held = self._claims.get(name)
            if held is None or held.connection_id != connection_id:
                return False
            self._claims[name] = replace(held, expires_at=expires_at)
            return True

    def release_claim(self, name: str, connection_id: str) -> bool:
        with self._lock:
            held = self._claims.get(name)
            if held is None or held.connection_id != connection_id:
                return False
            del self._claims[name]
            return True

    def count_served(self, name: str, connection_id: str) -> None:
        with self._lock:
            held = self._claims.get(name)
            if held is not None and held.connection_id == connection_id:
                self._claims[name] = replace(held, served=held.served + 1)

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

    # Pending requests

    def put_pending(self, request_id: str, connection_id: str, expires_at: float) -> None:
        with self._lock:
            self._pending[request_id] = _Pending(
                connection_id, expires_at, threading.Condition(self._lock)
            )

    def add_response_frame(
        self, request_id: str, connection_id: str, frame: StoredFrame, now: float
    ) -> bool:
        with self._lock:
            pending = self._pending.get(request_id)
            if (
                pending is None
                or pending.connection_id != connection_id
                or now >= pending.expires_at
            ):
                return False
            if frame.index in pending.frames:
                # The identical frame again is a retry and changes nothing; another is refused.
                return pending.frames[frame.index] == frame
            pending.frames[frame.index] = frame
            if pending.complete():
                pending.ready.notify_all()
            return True

    def wait_response(self, request_id: str, until: float) -> list[StoredFrame] | None:
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is None:
                return None
            if not pending.complete():
                # One wake-up is enough: the caller re-checks liveness and calls again.
                self._clock.wait(pending.ready, until - self._clock.now())
            if pending.complete():
                return sorted(pending.frames.values(), key=lambda f: f.index)
            return None

    def delete_request(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)
