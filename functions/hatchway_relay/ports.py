"""The ports the relay core talks through (store, blob store, poster, clock) and the records
they carry.

Adapters implement these: ``MemoryStore``/``DynamoStore`` for ``Store``, ``MemoryBlobStore``/
``S3BlobStore`` for ``BlobStore``, ``LocalPoster``/``ApiGatewayPoster`` for ``Poster``,
``SystemClock`` (or a test's fake) for ``Clock``. Every
record carries its own expiry; readers check it in code because TTL deletes late and
``$disconnect`` is best effort.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from hatchway import protocol


class ConnectionGone(Exception):
    """The WebSocket connection no longer exists (API Gateway answered 410 Gone)."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(f"connection {connection_id} is gone")
        self.connection_id = connection_id


class PostFailed(Exception):
    """A message could not be handed to a live connection (throttled, timed out, a 5xx after
    the SDK's retries). Whether it landed is unknown: receivers ignore repeats."""

    def __init__(self, connection_id: str, why: str) -> None:
        super().__init__(f"post to connection {connection_id} failed: {why}")
        self.connection_id = connection_id
        self.why = why


class BlobTooLarge(Exception):
    """A stored blob is larger than the reader accepts."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"blob {key} is {size} bytes; at most {limit} are read")
        self.size = size
        self.limit = limit


@dataclass(frozen=True)
class TokenLimits:
    """What the operator allows one token (0: no limit): requests a second with a burst, and a
    day, across its tunnels; tunnels one agent connection may serve. Counted in each warm relay
    function's memory (exact on ``hatchway-local``, approximate on AWS; see ``access``)."""

    rate: float = 0.0
    burst: int = 0
    max_tunnels: int = 0
    requests_per_day: int = 0

    def __bool__(self) -> bool:
        return bool(self.rate or self.max_tunnels or self.requests_per_day)


@dataclass(frozen=True)
class TokenRecord:
    """An agent token, known only by its hash. ``reserved`` names only this token may claim."""

    token_hash: str
    token_id: str
    label: str = ""
    created_at: float = 0.0
    reserved: tuple[str, ...] = ()
    limits: TokenLimits = field(default_factory=TokenLimits)
    last_used: float = 0.0
    """When an agent last connected with it (to ``TOKEN_USE_RESOLUTION_SECONDS``); 0: never."""


TOKEN_USE_RESOLUTION_SECONDS = 60.0
"""A token's ``last_used`` is written again only when it is older than this: agents that
reconnect in a burst cost one write, not one each."""


@dataclass(frozen=True)
class ConnectionRecord:
    """One live agent WebSocket connection and the tunnel names it holds."""

    connection_id: str
    token_id: str
    connected_at: float
    expires_at: float
    names: tuple[str, ...] = ()
    source_ip: str = ""
    limits: TokenLimits = field(default_factory=TokenLimits)
    """The token's limits as they were when the connection opened."""
    pooled: tuple[str, ...] = ()
    """Those of ``names`` it serves as a pool member (its pings renew them as members)."""

    def alive(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class SocketRecord:
    """A visitor's WebSocket (its connection id on the visitor-socket API, ``socket_id``),
    paired with the agent connection that carries it to the local app."""

    socket_id: str
    connection_id: str
    """The agent's connection: where the visitor's messages go, and the only one whose
    messages may reach this visitor."""
    token_id: str
    """The token of the agent that accepted it: only a connection of the same token may take
    it over (``SocketMove``)."""
    tunnel: str
    opened_at: float
    expires_at: float
    """When API Gateway closes it anyway (``SOCKET_MAX_SECONDS``); stores forget it by then."""


@dataclass(frozen=True)
class TunnelReport:
    """What one agent's ping says about one tunnel it serves (``protocol.Ping``): requests
    answered and errors by cause since its connection opened, and the latency of its answers
    of the last minute (None: none). Stored with the claim or pool member the ping renews
    anyway, so the counts never cost a write of their own."""

    served: int = 0
    errors: tuple[tuple[str, int], ...] = ()
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None


@dataclass(frozen=True)
class PoolMember:
    """One agent connection serving a pooled name; its lease is renewed by its own pings."""

    connection_id: str
    instance: str
    since: float
    expires_at: float
    served: int = 0
    """Visitor requests this member answered (its pings report the count)."""
    source_ip: str = ""
    errors: tuple[tuple[str, int], ...] = ()
    """Its answers that were errors, by cause (``TunnelReport``)."""
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None

    def alive(self, now: float) -> bool:
        return now < self.expires_at


@dataclass(frozen=True)
class Claim:
    """Who serves tunnel ``name`` right now; valid until ``expires_at`` unless renewed.

    The guards the holder asked for in its hello travel with the claim, so the one read a
    visitor request makes anyway also says what to check (see ``guards``). Empty means off.

    A pool (``pool``) is served by its ``members`` instead of one ``connection_id`` (which is
    empty): agents of one token that each asked to pool the name. ``expires_at`` is then the
    latest lease any member was given, and the claim is alive while any member is; the guards
    are the ones the pool began with (a member joins only with the same kinds of options).
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
    """The secret those deliveries are signed with, as the relay's ``SecretBox`` sealed it
    (HMAC needs it in clear: the relay opens it when it checks a delivery)."""
    large_responses: str = "refuse"
    """``protocol.LARGE_RESPONSE_MODES``: what a response above Lambda's ceiling becomes."""
    gzip: bool = True
    """Whether responses may reach visitors gzip-encoded (``visitor_gzip``)."""
    stream: bool = False
    """Whether the agent may answer with a streamed response (``protocol.Chunk``)."""
    instance: str = ""
    """The agent process holding it (``Hello.instance``): another process with the same token
    does not take a live claim over."""
    access: protocol.AccessRules = field(default_factory=protocol.AccessRules)
    """Who may reach the tunnel: address rules and a rate limit (see ``access``)."""
    token_limits: TokenLimits = field(default_factory=TokenLimits)
    """The holder's token's limits, so the one read a visitor request makes has them."""
    pool: bool = False
    members: tuple[PoolMember, ...] = ()
    """A pool's agents, oldest first."""
    pooled_since: float = 0.0
    """When the pool began serving the name."""
    errors: tuple[tuple[str, int], ...] = ()
    """The holder's answers that were errors, by cause, as its pings report them (a pool's
    are its members')."""
    latency_p50_ms: int | None = None
    latency_p95_ms: int | None = None
    """The holder's recent latency (``TunnelReport``)."""
    refused: tuple[tuple[str, int], ...] = ()
    """Visitor requests the relay answered for this tunnel itself, by cause (refusals by its
    access rules and limits, and its own 502s and 504s), since the name was claimed: the
    agent's pings cannot count what never reached it."""
    left_at: float = 0.0
    """When its last agent said it was leaving (``protocol.Leaving``; 0: it serves). The claim
    then routes to nobody and stays until ``expires_at``, the end of the restart hold, so that
    an agent of the same token may claim the name again while visitors wait."""

    def alive(self, now: float) -> bool:
        if self.pool:
            return any(member.alive(now) for member in self.members)
        return now < self.expires_at

    def leaving(self, now: float) -> bool:
        """Whether visitors wait for a restart: its agent left, and the hold has not ended."""
        return bool(self.left_at) and now < self.expires_at

    def holders(self, now: float) -> tuple[str, ...]:
        """The connections that may be handed a visitor request now."""
        if self.pool:
            return tuple(m.connection_id for m in self.members if m.alive(now))
        return (self.connection_id,) if self.alive(now) else ()

    def without(self, connection_id: str) -> Claim:
        """The claim as it is once ``connection_id`` is gone: a pool loses that member; a
        single holder's claim is unchanged (it is released as a whole)."""
        if not self.pool:
            return self
        return replace(
            self, members=tuple(m for m in self.members if m.connection_id != connection_id)
        )


def pool_options(claim: Claim) -> tuple[str, ...]:
    """What every member of a pool must ask for alike: the kinds of guards (not their secrets:
    each agent run salts its password hash afresh, and KMS seals a secret differently each
    time), the access rules, what becomes of a large response and whether responses may be
    gzip-encoded. The pool keeps the guard values of the agent that began it."""
    return (
        "basic_auth" if claim.basic_auth else "",
        claim.webhook,
        claim.large_responses,
        repr(claim.access) if claim.access else "",
        "" if claim.gzip else "no-gzip",
        "stream" if claim.stream else "",
    )


RecordWithReport = TypeVar("RecordWithReport", Claim, PoolMember)


def reported(record: RecordWithReport, report: TunnelReport) -> RecordWithReport:
    """``record`` (a claim or a pool member) with what ``report`` says in place of what an
    earlier ping said; errors by cause name, as every store returns them."""
    return replace(
        record,
        served=report.served,
        errors=tuple(sorted(report.errors)),
        latency_p50_ms=report.latency_p50_ms,
        latency_p95_ms=report.latency_p95_ms,
    )


@dataclass(frozen=True)
class ShareRecord:
    """A share link: ``token_id`` made it for ``tunnel``; its secret is kept only as a hash."""

    share_id: str
    token_id: str
    tunnel: str
    secret_hash: str = field(repr=False)
    methods: tuple[str, ...]
    path: str
    expires_at: float
    max_uses: int = 0
    uses: int = 0
    revoked: bool = False

    def usable(self, now: float) -> bool:
        return (
            not self.revoked
            and now < self.expires_at
            and (not self.max_uses or self.uses < self.max_uses)
        )


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
        """Send one text message to a connection; raise ``ConnectionGone`` if it is gone and
        ``PostFailed`` if it could not be sent for another reason."""
        ...


class SocketPoster(Protocol):
    """Visitors' WebSockets on the visitor-socket API (``@connections`` of that API on AWS)."""

    def send(self, socket_id: str, data: bytes, binary: bool) -> None:
        """Send one message; ``ConnectionGone`` if the socket is gone (or not yet open: API
        Gateway refuses posts until ``$connect`` has returned), ``PostFailed`` otherwise."""
        ...

    def close(self, socket_id: str, code: int, reason: str) -> None:
        """Close the socket. API Gateway's DeleteConnection carries no code: there the visitor
        sees 1000 whatever ``code`` is; the local gateway sends ``code`` and ``reason``.
        Closing a socket already gone does nothing."""
        ...


class SecretBox(Protocol):
    """Seals the secrets the relay must store but use in clear (webhook signing secrets): KMS
    on AWS; ``PlainSecretBox`` where the store never leaves the process."""

    def seal(self, plaintext: str) -> str: ...
    def open(self, sealed: str) -> str: ...


class PlainSecretBox:
    """No sealing: for the in-memory store, whose contents never leave the process."""

    def seal(self, plaintext: str) -> str:
        return plaintext

    def open(self, sealed: str) -> str:
        return sealed


class BlobStore(Protocol):
    """Bodies too large for a message (S3 on AWS, memory behind the local gateway). Objects
    expire by themselves within a day; the relay also deletes each one once it is done with it
    (an S3 DELETE is free, unlike a DynamoDB one, and storage is billed)."""

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str, max_bytes: int) -> bytes | None:
        """The object, or None if there is none; ``BlobTooLarge`` above ``max_bytes``."""
        ...

    def download_url(self, key: str, expires_in: float) -> str:
        """A URL anyone may GET the object from until it expires (signed, never listed)."""
        ...

    def upload_url(self, key: str, expires_in: float) -> str:
        """A URL anyone holding it may PUT the object to until it expires."""
        ...

    def delete(self, key: str) -> None:
        """Drop an object the relay is done with (free on S3, and memory given back on the
        local gateway); one that is not there is no error. Objects expire by themselves too."""
        ...


class Store(Protocol):
    """Everything the relay remembers. Claims use conditional writes."""

    # Tokens
    def put_token(self, record: TokenRecord) -> None: ...
    def get_token(self, token_hash: str) -> TokenRecord | None: ...
    def note_token_use(self, token_hash: str, now: float) -> None:
        """An agent connected with the token at ``now`` (``TokenRecord.last_used``). One
        conditional write that never brings back a token revoked meanwhile."""
        ...

    # Connections
    def put_connection(self, record: ConnectionRecord) -> None: ...
    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        """The record, or None; callers check ``alive(now)`` themselves."""
        ...

    def set_connection_names(
        self, connection_id: str, names: tuple[str, ...], pooled: tuple[str, ...] = ()
    ) -> None:
        """The names the connection serves, and which of them as a pool member."""
        ...

    def delete_connection(self, connection_id: str) -> None:
        """Forget the connection; wakes anyone waiting for a response from it."""
        ...

    # Tunnel claims
    def claim_name(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        """Write ``claim`` if the name is free, expired, held by the same token and agent
        instance, left by an agent of the same token (``Claim.left_at``: a restart), or held
        by connection ``takeover_from`` (a connection the caller found dead). False
        otherwise."""
        ...

    def get_claim(self, name: str) -> Claim | None: ...
    def renew_claim(
        self, name: str, connection_id: str, expires_at: float, report: TunnelReport | None = None
    ) -> bool:
        """Extend the claim (and replace what it says of the holder's work with ``report``,
        when given) if ``connection_id`` still holds it; False if it does not (a pool's members
        renew with ``renew_member``)."""
        ...

    def release_claim(self, name: str, connection_id: str) -> bool:
        """Delete the claim only if ``connection_id`` holds it; in a pool, remove that member,
        and delete the claim when it was the last (conditionally: a member joining meanwhile
        keeps it)."""
        ...

    def leave_claim(self, name: str, connection_id: str, now: float, hold_until: float) -> bool:
        """``connection_id`` takes no new requests for ``name``: in a pool with other members,
        remove it (as ``release_claim``); if it holds the name alone (or was a pool's last),
        mark the claim as left at ``now``, until ``hold_until``, during which only an agent of
        the same token may claim the name (``Claim.left_at``). False if it held nothing."""
        ...

    def count_refusals(self, name: str, counts: Mapping[str, int]) -> None:
        """Add ``counts`` (by cause) to the claim of ``name``'s ``refused``; nothing when there
        is no claim (one write, which never creates a claim)."""
        ...

    # Pools: several agents of one token serving one name
    def join_pool(self, claim: Claim, now: float, takeover_from: str | None = None) -> bool:
        """Add ``claim``'s one member to the pool serving ``claim.name``, if that pool is of
        the same token, asks for the same ``pool_options`` and has room
        (``protocol.MAX_POOL_MEMBERS``); a member of the same agent instance (a reconnect, a
        rotation) is replaced by it. Write ``claim`` as a new pool if the name is free, expired,
        an empty pool, left by an agent of the same token, or held by connection
        ``takeover_from`` (found dead). False otherwise."""
        ...

    def renew_member(
        self, name: str, connection_id: str, expires_at: float, report: TunnelReport | None = None
    ) -> int:
        """Extend one pool member's lease (and replace what it says of the member's work with
        ``report``, when given); the number of members the pool lists afterwards, or 0 if
        ``connection_id`` is none of them."""
        ...

    # The relay's own key
    def relay_key(self) -> bytes:
        """A random secret every relay function shares, created on first use (request ids are
        bound to their connection with it, so that checking ownership needs no read)."""
        ...

    # Reserved names: only the reserving token may claim them
    def reserve_name(self, name: str, token_id: str) -> bool:
        """Reserve ``name`` for ``token_id``; False if another token holds the reservation."""
        ...

    def get_reservation(self, name: str) -> str | None:
        """The id of the token that reserved ``name``, or None."""
        ...

    def release_reservation(self, name: str, token_id: str) -> bool: ...

    # Share links
    def put_share(self, record: ShareRecord) -> None: ...
    def get_share(self, share_id: str) -> ShareRecord | None: ...
    def list_shares(self, token_id: str) -> list[ShareRecord]:
        """The links a token made (the agent's ``share list``; never on a visitor's path)."""
        ...

    def use_share(self, share_id: str, now: float) -> bool:
        """Count one use if the link is still usable (not revoked, expired or used up); one
        conditional write, so concurrent opens never exceed ``max_uses``."""
        ...

    def revoke_share(self, share_id: str, token_id: str) -> bool:
        """Revoke a link ``token_id`` made; False if it made no such link."""
        ...

    # Things seen once
    def first_sighting(self, key: str, expires_at: float) -> bool:
        """True the first time ``key`` is shown before ``expires_at``, False on every repeat
        (one conditional write: a replayed webhook delivery is caught across functions)."""
        ...

    # Responses: one message per visitor request, stored once, not by the relay's code: API
    # Gateway's answer integration writes each agent message of type "response" or "working"
    # to the item of (request id, sending connection) itself (template.yaml), so storing an
    # answer needs no free Lambda execution. The store only waits for it.
    def expect_response(self, request_id: str, connection_id: str, expires_at: float) -> None:
        """A visitor request is about to wait for ``request_id``'s answer from
        ``connection_id`` (the only connection whose answer it reads). Free on DynamoDB
        (nothing is written); ``MemoryStore`` uses it to wake the waiter when the answer lands
        or the connection goes away."""
        ...

    def is_working(self, request_id: str) -> bool:
        """Whether the agent marked ``request_id`` as one it is still working on."""
        ...

    def wait_response(self, request_id: str, until: float, hint: float = 0.0) -> bytes | None:
        """The stored response once there is one; None if there is none by ``until`` or
        something happened that the waiter should look at (e.g. its connection went away).
        ``hint``: seconds from now before which the answer is unlikely (a store that polls
        need not look earlier)."""
        ...

    def forget_response(self, request_id: str) -> None:
        """The waiter is done. ``MemoryStore`` frees the slot; DynamoDB leaves the item to TTL,
        which deletes for free."""
        ...

    # Visitors' WebSockets
    def put_socket(self, record: SocketRecord) -> None:
        """Pair a visitor's socket with its agent connection (``sockets_of`` lists it)."""
        ...

    def get_socket(self, socket_id: str) -> SocketRecord | None: ...
    def move_socket(self, socket_id: str, token_id: str, connection_id: str) -> bool:
        """Carry the socket on ``connection_id`` from now on, if a connection of ``token_id``
        holds it; False otherwise (gone, or another token's)."""
        ...

    def delete_socket(self, socket_id: str) -> SocketRecord | None:
        """Forget the socket; return what was forgotten, None if it was already gone (of two
        callers at once, exactly one gets the record)."""
        ...

    def pass_socket_message(self, socket_id: str, seq: int) -> bool:
        """Note that the app's message ``seq`` of the socket goes to the visitor now: True the
        first time, that is when ``seq`` is above every number noted for the socket; False for
        a repeat, or a socket gone. An agent sends a message again when API Gateway said it
        could not take one of its messages, without saying which: it may have been another,
        and then the repeat must not reach the visitor twice. Of two calls with one number at
        once, exactly one gets True."""
        ...

    def sockets_of(self, connection_id: str) -> list[str]:
        """The ids of the sockets ``connection_id`` carries (moved ones no longer count)."""
        ...

    # Streamed bodies (a relay whose front streams: ``RelayConfig.streams``). The WebSocket
    # function stores each ``Chunk`` message as it came, under the sending connection; the
    # waiter reads only the chunks of the connection it posted the request to.
    def put_chunk(self, request_id: str, connection_id: str, seq: int, data: bytes) -> None:
        """Keep chunk ``seq`` of ``request_id``'s streamed body, sent by ``connection_id``; the
        first copy stays (a message delivered twice changes nothing)."""
        ...

    def wait_chunk(self, request_id: str, seq: int, until: float) -> bytes | None:
        """Chunk ``seq`` of the body ``request_id``'s waiter expects (``expect_response``), once
        stored, else None by ``until``."""
        ...
