"""The ports the relay core talks through (store, poster, clock) and the records they carry.

Adapters implement these: ``MemoryStore``/``DynamoStore`` for ``Store``, ``LocalPoster``/
``ApiGatewayPoster`` for ``Poster``, ``SystemClock`` (or a test's fake) for ``Clock``. Every
record carries its own expiry; readers check it in code because TTL deletes late and
``$disconnect`` is best effort.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Protocol


class ConnectionGone(Exception):
    """The WebSocket connection no longer exists (API Gateway answered 410 Gone)."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} is gone")
        self.connection_id = connection_id


@dataclass(frozen=True)
class TokenRecord:
    """An agent token, known only by its hash. ``reserved`` names only this token may claim."""

    token_hash: str
    token_id: str
    label: str = ""
    created_at: float = 0.0
    reserved: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConnectionRecord:
    """One live agent WebSocket connection and the tunnel names it holds."""

    connection_id: str
    token_id: str
    connected_at: float
    expires_at: float
    names: tuple[str, ...] = ()
    source_ip: str = ""

    def alive(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class Claim:
    """Who serves tunnel ``name`` right now; valid until ``expires_at`` unless renewed.

    The guards the holder asked for in its hello travel with the claim, so the one read a
    visitor request makes anyway also says what to check (see ``guards``). Empty means off.
    """

    name: str
    connection_id: str
    token_id: str
    expires_at: float
    served: int = 0
    """Visitor requests handed to the holder since it claimed the name."""
    basic_auth: str = field(default="", repr=False)
    """The salted hash of the tunnel's ``user:password`` (``protocol.hash_basic_auth``)."""
    webhook: str = ""
    """The provider whose signed deliveries are the only requests let through."""
    webhook_secret: str = field(default="", repr=False)
    """The secret those deliveries are signed with (HMAC needs it in clear)."""

    def alive(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class StoredFrame:
    """One response frame as the agent sent it (JSON text), with its place in the message."""

    index: int
    count: int
    text: str = field(repr=False)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def sleep(self, seconds: float) -> None: ...

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        """Wait on ``condition`` (held by the caller) for at most ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        if seconds > 0:
            condition.wait(seconds)


class Poster(Protocol):
    def post(self, connection_id: str, text: str) -> None:
        """Send one text message to a connection; raise ``ConnectionGone`` if it is gone."""
        ...


class Store(Protocol):
    """Everything the relay remembers. Claims and response frames use conditional writes."""

    # Tokens
    def put_token(self, record: TokenRecord) -> None: ...
    def get_token(self, token_hash: str) -> TokenRecord | None: ...

    # Connections
    def put_connection(self, record: ConnectionRecord) -> None: ...
    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        """The record, or None; callers check ``alive(now)`` themselves."""
        ...

    def set_connection_names(self, connection_id: str, names: tuple[str, ...]) -> None: ...
    def delete_connection(self, connection_id: str) -> None:
        """Forget the connection; wakes anyone waiting for a response from it."""
        ...

    # Tunnel claims
    def claim_name(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        """Write ``claim`` if the name is free, expired, held by the same token, or held by
        connection ``takeover_from`` (a connection the caller found dead). False otherwise."""
        ...

    def get_claim(self, name: str) -> Claim | None: ...
    def renew_claim(self, name: str, connection_id: str, expires_at: float) -> bool:
        """Extend the claim if ``connection_id`` still holds it."""
        ...

    def release_claim(self, name: str, connection_id: str) -> bool:
        """Delete the claim only if ``connection_id`` holds it."""
        ...

    def count_served(self, name: str, connection_id: str) -> None:
        """Add one to the claim's ``served`` count if ``connection_id`` still holds it."""
        ...

    # Reserved names: only the reserving token may claim them
    def reserve_name(self, name: str, token_id: str) -> bool:
        """Reserve ``name`` for ``token_id``; False if another token holds the reservation."""
        ...

    def get_reservation(self, name: str) -> str | None:
        """The id of the token that reserved ``name``, or None."""
        ...

    def release_reservation(self, name: str, token_id: str) -> bool: ...

    # Pending requests and their response frames
    def put_pending(self, request_id: str, connection_id: str, expires_at: float) -> None: ...
    def add_response_frame(
        self, request_id: str, connection_id: str, frame: StoredFrame, now: float
    ) -> bool:
        """Store a frame only if ``connection_id`` owns the live pending request and this part
        was not stored before; False otherwise (the frame is dropped). The identical frame
        again is an idempotent retry: True, and still stored once."""
        ...

    def wait_response(self, request_id: str, until: float) -> list[StoredFrame] | None:
        """All frames once the message is complete; None if it is not complete by ``until`` or
        something happened that the waiter should look at (e.g. a connection went away)."""
        ...

    def delete_request(self, request_id: str) -> None: ...
