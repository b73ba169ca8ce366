"""The Hatchway protocol's messages and their validation (``limits`` holds every number they are
held to; ``codec`` turns them into WebSocket text and back).

Rules the protocol keeps (the agent and the relay functions both import it; nothing else
defines anything that crosses the WebSocket):

* Every WebSocket message is one JSON object of at most ``MAX_MESSAGE_BYTES`` (API Gateway's
  message limit), sent as text frames of at most ``MAX_FRAME_BYTES`` each (its frame limit,
  which also applies to ``@connections`` posts): ``split_frames`` cuts a message into them.
  JSON is written with ``ensure_ascii`` so that a message's length in characters is its length
  in bytes, and any cut between characters is a valid UTF-8 boundary.
* A visitor request and its response are one message each. A body travels inline (base64,
  zlib-compressed when that makes it smaller) when it fits; a larger one goes through the
  relay's blob store: the request names a URL to GET its body from (``body_url``), and offers a
  URL to PUT a large response body to (``upload_url``); the response then says ``uploaded``.
  One message per response is what lets API Gateway store it with one write.
* Violations raise ``ProtocolError`` with the HTTP status the relay should answer with and a
  message that says which side sent the bad input. Malformed input of any shape raises
  ``ProtocolError`` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hatchway.protocol.errors import ProtocolError as ProtocolError
from hatchway.protocol.limits import (
    BASIC_AUTH_ITERATIONS,
    BASIC_AUTH_SALT_BYTES,
    BASIC_AUTH_SCHEME,
    HEARTBEAT_SECONDS,
    HOP_BY_HOP_HEADERS,
    LARGE_RESPONSE_MODES,
    MAX_BASIC_AUTH_ITERATIONS,
    MAX_BLOB_BYTES,
    MAX_BLOB_URL_LENGTH,
    MAX_BODY_BYTES,
    MAX_BURST,
    MAX_CAUSE_LENGTH,
    MAX_CHUNK_BYTES,
    MAX_CHUNK_SEQ,
    MAX_CIDRS,
    MAX_ERROR_CAUSES,
    MAX_HEADERS,
    MAX_HEARTBEAT_SECONDS,
    MAX_ID_LENGTH,
    MAX_INLINE_RESPONSE_BYTES,
    MAX_INSTANCE_LENGTH,
    MAX_LATENCY_MS,
    MAX_RATE_PER_SECOND,
    MAX_REPORTED_COUNT,
    MAX_SHARE_PATH_LENGTH,
    MAX_SHARE_SECONDS,
    MAX_SHARE_USES,
    MAX_TUNNELS_PER_CONNECTION,
    MAX_WEBHOOK_SECRET_LENGTH,
    MIN_BASIC_AUTH_ITERATIONS,
    MIN_HEARTBEAT_SECONDS,
    NAME_PATTERN,
    PROTOCOL_VERSION,
    RESERVED_NAMES,
    SHARE_OPS,
    WEBHOOK_PROVIDERS,
)
from hatchway.protocol.sockets import (
    SocketAck,
    SocketClose,
    SocketFrame,
    SocketMove,
    validate_socket_id,
)

_ID_PATTERN = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}\Z")
_INSTANCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]*\Z")
_METHOD_PATTERN = re.compile(r"^[A-Z][A-Z0-9-]{0,19}\Z")
_TOKEN_CHARACTER = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_HEADER_NAME_PATTERN = re.compile(rf"^{_TOKEN_CHARACTER}{{1,256}}\Z")
# Every name of a head joined with newlines (which no name may hold), checked in one match.
# Possessive quantifiers: a name that breaks the rule fails at once, without backtracking.
_HEADER_NAMES_PATTERN = re.compile(
    rf"(?:{_TOKEN_CHARACTER}{{1,256}}+\n)*+{_TOKEN_CHARACTER}{{1,256}}+"
)
_FORBIDDEN_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_FORBIDDEN_IN_HEADER_VALUE = re.compile("[\x00\r\n\ud800-\udc7f\udd00-\udfff]")
"""CR, LF and NUL, and surrogates that stand for no byte: a header value is text, or bytes
that are not UTF-8 carried as U+DC80..U+DCFF (Python's ``surrogateescape``), and nothing else
can be written on the wire."""
_B64URL = r"[A-Za-z0-9_-]+"
_BASIC_AUTH_HASH_PATTERN = re.compile(
    rf"^{re.escape(BASIC_AUTH_SCHEME)}\$([0-9]{{4,6}})\$({_B64URL})\$({_B64URL})\Z"
)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
# Used with fullmatch: a pattern ending in "$" also lets a trailing newline through.
_CAUSE_PATTERN = re.compile(rf"[a-z][a-z0-9-]{{0,{MAX_CAUSE_LENGTH - 1}}}")


# --- Messages ---------------------------------------------------------------------------------

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AccessRules:
    """Who may reach a tunnel, enforced by the relay before anything is forwarded: visitors
    whose address (as the relay's gateway saw it, never ``X-Forwarded-For``) is in ``deny``, or
    not in a non-empty ``allow``, are refused; more than ``rate`` requests a second (bursts of
    ``burst``) get 429. Ranges are normalised CIDRs, IPv4 or IPv6."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    rate: float = 0.0
    burst: int = 0

    def __post_init__(self) -> None:
        for kind in ("allow", "deny"):
            ranges = getattr(self, kind)
            if not isinstance(ranges, tuple) or len(ranges) > MAX_CIDRS:
                raise ProtocolError(f"{kind}: at most {MAX_CIDRS} address ranges")
            object.__setattr__(self, kind, tuple(_cidr(r) for r in ranges))
        if not (isinstance(self.rate, int | float) and 0 <= self.rate <= MAX_RATE_PER_SECOND):
            raise ProtocolError(f"rate limit must be 0 to {MAX_RATE_PER_SECOND:g} requests/s")
        if not (isinstance(self.burst, int) and 0 <= self.burst <= MAX_BURST):
            raise ProtocolError(f"burst must be 0 to {MAX_BURST}")
        if self.rate and not self.burst:
            object.__setattr__(self, "burst", max(1, math.ceil(self.rate)))

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny or self.rate)


def _cidr(text: object) -> str:
    """``text`` as a normalised network (``10.0.0.0/8``, ``2001:db8::/32``; a bare address is
    its own /32 or /128), else ``ProtocolError``."""
    if not isinstance(text, str) or len(text) > 50:
        raise ProtocolError("an address range must be a CIDR such as 203.0.113.0/24")
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ProtocolError(
            f"{text[:50]!r} is not an address range; use a CIDR such as 203.0.113.0/24 or "
            "2001:db8::/32"
        ) from None


@dataclass(frozen=True)
class TunnelSpec:
    """One tunnel an agent asks for in its hello; ``name`` None means "pick one for me".

    The optional guards are enforced by the relay on every visitor request, before anything is
    forwarded: ``basic_auth`` is a ``hash_basic_auth`` string (never the password), ``webhook``
    one of ``WEBHOOK_PROVIDERS`` with the ``webhook_secret`` its deliveries are signed with.
    Neither secret appears in a repr or in an error message. ``large_responses`` is one of
    ``LARGE_RESPONSE_MODES``; ``access`` holds the address rules and rate limit. ``gzip``
    False keeps the relay from gzip-encoding responses for visitors that accept it; ``stream``
    asks for responses of unknown length to reach visitors as the app writes them.

    ``pool`` asks to serve the name together with the other agents of the same token that ask
    for it with ``pool`` too (and the same options): the relay spreads visitor requests over
    them. Without it, a name served by another live agent is refused, never shared.
    """

    name: str | None = None
    basic_auth: str | None = field(default=None, repr=False)
    webhook: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    large_responses: str = "refuse"
    access: AccessRules = AccessRules()
    pool: bool = False
    gzip: bool = True
    stream: bool = False

    def __post_init__(self) -> None:
        if self.name is not None:
            validate_name(self.name)
        if self.pool and self.name is None:
            raise ProtocolError("a pool needs a name: other agents join it by that name")
        if self.basic_auth is not None:
            parse_basic_auth_hash(self.basic_auth)
        if self.large_responses not in LARGE_RESPONSE_MODES:
            raise ProtocolError(
                f"large_responses must be one of {', '.join(sorted(LARGE_RESPONSE_MODES))}"
            )
        if (self.webhook is None) != (self.webhook_secret is None):
            raise ProtocolError("a webhook check needs both the provider and its secret")
        if self.webhook is not None:
            if self.webhook not in WEBHOOK_PROVIDERS:
                raise ProtocolError(
                    f"unknown webhook provider {str(self.webhook)[:40]!r}; the relay verifies "
                    + ", ".join(sorted(WEBHOOK_PROVIDERS))
                )
            secret = self.webhook_secret
            if (
                not isinstance(secret, str)
                or not 1 <= len(secret) <= MAX_WEBHOOK_SECRET_LENGTH
                or _CONTROL_CHARACTERS.search(secret)
            ):
                raise ProtocolError(
                    f"the webhook secret must be 1 to {MAX_WEBHOOK_SECRET_LENGTH} characters "
                    "without control characters or lone surrogates"
                )

    @property
    def guards(self) -> tuple[str, ...]:
        """What the relay must confirm it enforces (``TunnelInfo.guards``) before the agent
        serves this tunnel: a relay that ignored them would serve it unprotected."""
        wanted = {
            "basic_auth": bool(self.basic_auth),
            f"webhook:{self.webhook}": bool(self.webhook),
            "ip_rules": bool(self.access.allow or self.access.deny),
            "rate_limit": bool(self.access.rate),
        }
        return tuple(guard for guard, on in wanted.items() if on)


@dataclass(frozen=True)
class Hello:
    """Agent → relay, first message on a connection: the tunnels it wants to serve.

    ``instance`` is random per agent process: a connection of the same instance takes its
    names over (a reconnect, a rotation), another instance of the same token does not while the
    holder is alive."""

    tunnels: tuple[TunnelSpec, ...]
    agent: str = ""
    version: int = PROTOCOL_VERSION
    instance: str = ""

    def __post_init__(self) -> None:
        if len(self.instance) > MAX_INSTANCE_LENGTH or not _INSTANCE_PATTERN.match(self.instance):
            raise ProtocolError(
                f"hello: instance must be up to {MAX_INSTANCE_LENGTH} letters, digits, _ or -"
            )
        if not 1 <= len(self.tunnels) <= MAX_TUNNELS_PER_CONNECTION:
            raise ProtocolError(
                f"agent asked for {len(self.tunnels)} tunnels; one connection serves "
                f"1 to {MAX_TUNNELS_PER_CONNECTION}"
            )


@dataclass(frozen=True)
class TunnelInfo:
    """A tunnel the relay granted, with its public URLs (``url`` is None without a domain) and
    the guards it enforces for it (``TunnelSpec.guards``)."""

    name: str
    url: str | None
    path_url: str
    guards: tuple[str, ...] = ()
    custom_urls: tuple[str, ...] = ()
    """URLs of the custom hostnames that serve this tunnel (``https://api.mycompany.com/``)."""
    pool_size: int = 0
    """Agents serving the name as one pool, this one included (0: not a pool)."""
    pooled_since: float = 0.0
    """When the pool began serving the name (seconds since the epoch; 0: not a pool)."""

    @property
    def public_urls(self) -> tuple[str, ...]:
        """Every URL the tunnel answers at, custom hostnames first, the path form last."""
        return tuple(u for u in (*self.custom_urls, self.url, self.path_url) if u)


@dataclass(frozen=True)
class Welcome:
    """Relay → agent: the tunnels granted, how often to ping, and the relay's clock (``now``,
    seconds since the epoch; 0 when unknown): request deadlines are on that clock, so an agent
    whose clock is off corrects for the difference."""

    tunnels: tuple[TunnelInfo, ...]
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    now: float = 0.0

    def __post_init__(self) -> None:
        if not MIN_HEARTBEAT_SECONDS <= self.heartbeat_seconds <= MAX_HEARTBEAT_SECONDS:
            raise ProtocolError(
                f"welcome: heartbeat must be {MIN_HEARTBEAT_SECONDS:g} to "
                f"{MAX_HEARTBEAT_SECONDS:g} s"
            )


@dataclass(frozen=True)
class TunnelHealth:
    """How one tunnel fared on one agent connection, as its pings report it.

    ``errors`` counts the answers that were errors, by cause, since the connection opened: the
    relay's error code for an agent's fault (``local-app-error``, ``response-too-large``...),
    refined where the agent knows more (``local-app-refused``, ``local-app-timeout``), and
    ``app-5xx`` for the local app's own server errors. ``p50_ms`` and ``p95_ms`` are the
    latency of the answers of the last minute (from the agent receiving a request to sending
    its answer), None when there were none."""

    errors: tuple[tuple[str, int], ...] = ()
    p50_ms: int | None = None
    p95_ms: int | None = None

    def __post_init__(self) -> None:
        if len(self.errors) > MAX_ERROR_CAUSES:
            raise ProtocolError(f"ping: at most {MAX_ERROR_CAUSES} error causes per tunnel")
        for cause, count in self.errors:
            if not (isinstance(cause, str) and _CAUSE_PATTERN.fullmatch(cause)):
                raise ProtocolError(
                    f"ping: an error cause is 1 to {MAX_CAUSE_LENGTH} lowercase letters, "
                    "digits or -, starting with a letter"
                )
            _check_count(count, "an error count", MAX_REPORTED_COUNT)
        if len({cause for cause, _ in self.errors}) != len(self.errors):
            raise ProtocolError("ping: an error cause is reported twice")
        if (self.p50_ms is None) != (self.p95_ms is None):
            raise ProtocolError("ping: latency needs both its median and its 95th percentile")
        if self.p50_ms is not None and self.p95_ms is not None:
            _check_count(self.p50_ms, "the median latency", MAX_LATENCY_MS)
            _check_count(self.p95_ms, "the 95th percentile latency", MAX_LATENCY_MS)
            if self.p50_ms > self.p95_ms:
                raise ProtocolError("ping: the median latency exceeds the 95th percentile")

    def __bool__(self) -> bool:
        return bool(self.errors) or self.p50_ms is not None


def _check_count(value: object, what: str, upper: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise ProtocolError(f"ping: {what} must be a whole number from 0 to {upper}")


@dataclass(frozen=True)
class Ping:
    """Agent → relay keep-alive; renews the agent's claims. ``ts`` is echoed in the pong.

    ``served`` counts, per tunnel, the requests this connection answered since it opened, and
    ``health`` says how those answers went (``TunnelHealth``): the relay keeps both with the
    claim it renews anyway, instead of a write per request."""

    ts: float = 0.0
    served: tuple[tuple[str, int], ...] = ()
    health: tuple[tuple[str, TunnelHealth], ...] = ()

    def __post_init__(self) -> None:
        if len(self.health) > MAX_TUNNELS_PER_CONNECTION:
            raise ProtocolError(f"ping: health for at most {MAX_TUNNELS_PER_CONNECTION} tunnels")


@dataclass(frozen=True)
class Pong:
    """Relay → agent answer to a ping. ``pools`` holds, for each tunnel this connection serves
    as a pool member, how many agents the pool lists now (this one included), as the ping's
    renewal found them."""

    ts: float = 0.0
    pools: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Working:
    """Agent → relay: it holds request ``id`` and is still on it (sent once per request, after
    ``WORKING_MARK_SECONDS``; quick answers never cost one). One id per message: API Gateway
    stores the mark itself, with one write per message (see the WebSocket API's routes)."""

    id: str


@dataclass(frozen=True)
class Leaving:
    """Agent → relay: this connection takes no new visitor requests (its agent is stopping).
    The relay routes none to it from then on: a pool's other members take them, and for a lone
    agent it holds them up to ``RESTART_HOLD_SECONDS`` for the same token's agent to claim the
    name again (a restart). Answers to requests the connection already holds still count."""


@dataclass(frozen=True)
class ShareOp:
    """Agent → relay: create, list or revoke share links for tunnels this token owns. A link
    lets a visitor in without the tunnel's basic auth, for ``methods`` under ``path`` only,
    until it expires, is used ``max_uses`` times (0: no limit) or is revoked."""

    op: str
    tunnel: str = ""
    share_id: str = ""
    expires_in: float = 0.0
    methods: tuple[str, ...] = ("GET", "HEAD")
    path: str = "/"
    max_uses: int = 0

    def __post_init__(self) -> None:
        if self.op not in SHARE_OPS:
            raise ProtocolError(f"share: op must be one of {', '.join(sorted(SHARE_OPS))}")
        if self.tunnel:
            validate_name(self.tunnel)
        if self.share_id:
            validate_id(self.share_id)
        if self.op == "create":
            if not self.tunnel:
                raise ProtocolError("share: which tunnel is the link for?")
            if not 0 < self.expires_in <= MAX_SHARE_SECONDS:
                raise ProtocolError(f"share: a link lives 1 s to {MAX_SHARE_SECONDS // 86400} days")
            if not self.methods or not all(_METHOD_PATTERN.match(m) for m in self.methods):
                raise ProtocolError("share: methods must be HTTP methods such as GET,HEAD")
            if (
                not self.path.startswith("/")
                or len(self.path) > MAX_SHARE_PATH_LENGTH
                or _FORBIDDEN_IN_TARGET.search(self.path)
            ):
                raise ProtocolError("share: the path must be a plain path such as /reports/")
            if not 0 <= self.max_uses <= MAX_SHARE_USES:
                raise ProtocolError(f"share: max uses must be 0 to {MAX_SHARE_USES}")
        if self.op == "revoke" and not self.share_id:
            raise ProtocolError("share: which link to revoke?")


@dataclass(frozen=True)
class ShareInfo:
    """One share link as the relay describes it (never its secret)."""

    id: str
    tunnel: str
    methods: tuple[str, ...]
    path: str
    expires_at: float
    max_uses: int = 0
    uses: int = 0
    revoked: bool = False


@dataclass(frozen=True)
class ShareReply:
    """Relay → agent: the links asked about; after a create, ``link`` is the new link with its
    secret in it, shown this once (the relay keeps only a hash)."""

    shares: tuple[ShareInfo, ...] = ()
    link: str = field(default="", repr=False)


@dataclass(frozen=True)
class Error:
    """Relay → agent: something the agent should know, ``code`` machine-readable: ``name_taken``
    (a hello was refused), ``name_lost`` (a ping found a name held by another connection now),
    ``not_connected`` (the relay forgot this connection), ``share_refused``, ``bad_frame``,
    ``unexpected``."""

    code: str
    message: str
    id: str = ""
    """The request an error is about, if any, else empty."""


@dataclass(frozen=True)
class Undelivered:
    """API Gateway → agent, not the relay: the platform's own frame for a message it could not
    hand to its integration (the WebSocket function was throttled or failed, or the answer
    integration's write failed): ``{"message": "Internal server error", "connectionId": …,
    "requestId": …}``, with no ``type``. The message it carried is gone; which one it was, the
    frame does not say (``request_id`` is API Gateway's own id). The connection itself is fine."""

    message: str
    request_id: str = ""


@dataclass(frozen=True)
class Fault:
    """Why an agent could not produce a real response; ``side`` names who failed."""

    side: str  # "local app" or "agent"
    message: str


@dataclass(frozen=True)
class Request:
    """Relay → agent: one visitor request for ``tunnel``. ``path`` and ``query`` are raw.

    A body too large to travel inline is not in ``body`` but at ``body_url`` (``body_size``
    bytes): the agent fetches it before forwarding. ``upload_url``, when set, takes a response
    body larger than ``inline_max`` encoded bytes. ``deadline`` (seconds since the epoch) is
    when the relay stops waiting; work started after it is wasted, or worse, a repeat.
    ``start_by`` (the same clock, 0: none) is when the relay gives up on the request unless
    the agent has marked it as one it is working on (``Working``): an agent that was stopped
    and finds the request only later must not start it, since its visitor was told it failed.
    """

    id: str
    tunnel: str
    method: str
    path: str
    query: str = ""
    headers: Headers = ()
    body: bytes = field(default=b"", repr=False)
    deadline: float = 0.0
    body_url: str | None = field(default=None, repr=False)
    body_size: int = 0
    upload_url: str | None = field(default=None, repr=False)
    inline_max: int = MAX_INLINE_RESPONSE_BYTES
    start_by: float = 0.0
    socket: str = ""
    """A visitor's WebSocket to open (its id), answered 101 once the app accepted it."""

    def __post_init__(self) -> None:
        validate_id(self.id)
        if self.socket:
            validate_socket_id(self.socket)
        if not math.isfinite(self.start_by) or self.start_by < 0:
            raise ProtocolError("request: start_by must be a time")
        validate_name(self.tunnel)
        if not _METHOD_PATTERN.match(self.method):
            raise ProtocolError(f"visitor sent an invalid method {self.method[:20]!r}")
        validate_headers(self.headers, "visitor")
        size = self.body_size if self.body_url else len(self.body)
        if size > MAX_BODY_BYTES:
            raise ProtocolError(
                f"visitor's request body is {size} bytes; the relay accepts at most "
                f"{MAX_BODY_BYTES}",
                status=413,
            )
        for url in (self.body_url, self.upload_url):
            if url is not None and not _valid_blob_url(url):
                raise ProtocolError("request: a blob URL must be an http(s) URL")
        if not 0 <= self.inline_max <= MAX_INLINE_RESPONSE_BYTES:
            raise ProtocolError(f"request: inline_max must be 0 to {MAX_INLINE_RESPONSE_BYTES}")

    @property
    def target(self) -> str:
        """The request target as the local app sees it: path plus raw query."""
        return self.path + ("?" + self.query if self.query else "")


@dataclass(frozen=True)
class Response:
    """Agent → relay: the local app's response to request ``id``, or a fault.

    ``uploaded`` is the body's size when the agent PUT it to the request's ``upload_url``
    instead of carrying it (``body`` is then empty). ``streamed``: the body follows in ``Chunk``
    messages, as the app writes it (a tunnel started with ``--stream``; ``body`` is empty)."""

    id: str
    status: int
    headers: Headers = ()
    body: bytes = field(default=b"", repr=False)
    fault: Fault | None = None
    uploaded: int | None = None
    streamed: bool = False

    def __post_init__(self) -> None:
        validate_id(self.id)
        if not 100 <= self.status <= 599:
            raise ProtocolError(f"agent sent an invalid status {self.status}", status=502)
        validate_headers(self.headers, "local app", status=502)
        if self.uploaded is not None:
            if self.body or not 0 <= self.uploaded <= MAX_BLOB_BYTES:
                raise ProtocolError(
                    f"agent sent an uploaded size outside 0..{MAX_BLOB_BYTES} (or a body too)",
                    status=502,
                )
        elif len(self.body) > MAX_BODY_BYTES:
            raise ProtocolError(
                f"local app's response body is {len(self.body)} bytes; "
                f"the relay carries at most {MAX_BODY_BYTES}",
                status=413,
            )
        if self.streamed and (self.body or self.uploaded is not None or self.fault):
            raise ProtocolError("a streamed response carries its body in chunks only", status=502)

    @property
    def size(self) -> int:
        """The body's length, wherever the body is."""
        return len(self.body) if self.uploaded is None else self.uploaded


@dataclass(frozen=True)
class Chunk:
    """Agent → relay: the next ``body`` bytes of streamed response ``id``, number ``seq`` (from
    0, each once, in order); ``end`` closes the body, and ``fault`` (with ``end``) says the app
    failed mid-stream, so the visitor's response is cut rather than ended as if whole."""

    id: str
    seq: int
    body: bytes = field(default=b"", repr=False)
    end: bool = False
    fault: str | None = None

    def __post_init__(self) -> None:
        validate_id(self.id)
        if not 0 <= self.seq <= MAX_CHUNK_SEQ:
            raise ProtocolError(f"chunk number {self.seq} is outside 0..{MAX_CHUNK_SEQ}")
        if len(self.body) > MAX_CHUNK_BYTES:
            raise ProtocolError(f"a chunk carries at most {MAX_CHUNK_BYTES} bytes", status=502)
        if self.fault is not None and not self.end:
            raise ProtocolError("a chunk with a fault must end the stream", status=502)


Message = (
    Hello
    | Welcome
    | Ping
    | Pong
    | Working
    | Leaving
    | ShareOp
    | ShareReply
    | Error
    | Request
    | Response
    | Chunk
    | Undelivered
    | SocketFrame
    | SocketAck
    | SocketClose
    | SocketMove
)


# --- Validation helpers -----------------------------------------------------------------------


def validate_name(name: str) -> str:
    """Return ``name`` if it can be a tunnel name, else raise ``ProtocolError``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ProtocolError(
            f"invalid tunnel name {str(name)[:80]!r}: use 1-63 lowercase letters, digits or "
            "inner hyphens"
        )
    if name in RESERVED_NAMES:
        raise ProtocolError(f"tunnel name {name!r} is reserved")
    return name


def hash_basic_auth(credentials: str, salt: bytes, iterations: int = BASIC_AUTH_ITERATIONS) -> str:
    """``user:password`` → the salted hash an agent sends in its hello."""
    digest = derive_basic_auth(credentials.encode("utf-8"), salt, iterations)
    return f"{BASIC_AUTH_SCHEME}${iterations}${_b64url(salt)}${_b64url(digest)}"


def derive_basic_auth(credentials: bytes, salt: bytes, iterations: int) -> bytes:
    """The PBKDF2 digest both sides compute: the agent once, the relay per credential seen."""
    import hashlib  # here: OpenSSL's 4 MiB stay out of an agent without basic auth on plain ws://

    return hashlib.pbkdf2_hmac("sha256", credentials, salt, iterations)


def parse_basic_auth_hash(text: str) -> tuple[int, bytes, bytes]:
    """(iterations, salt, digest) of a ``hash_basic_auth`` string, else ``ProtocolError``
    (whose message never repeats the text)."""
    match = _BASIC_AUTH_HASH_PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ProtocolError(f"basic_auth must be a {BASIC_AUTH_SCHEME} hash from the agent")
    iterations = int(match.group(1))
    salt, digest = _unb64url(match.group(2)), _unb64url(match.group(3))
    if not MIN_BASIC_AUTH_ITERATIONS <= iterations <= MAX_BASIC_AUTH_ITERATIONS:
        raise ProtocolError(
            f"basic_auth hash rounds must be {MIN_BASIC_AUTH_ITERATIONS} to "
            f"{MAX_BASIC_AUTH_ITERATIONS}"
        )
    if len(salt) < BASIC_AUTH_SALT_BYTES or len(digest) != _SHA256_BYTES:
        raise ProtocolError("basic_auth hash has a short salt or a digest of the wrong size")
    return iterations, salt, digest


_SHA256_BYTES = 32


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ProtocolError("basic_auth hash is not valid base64") from None


def validate_id(request_id: str) -> str:
    if not isinstance(request_id, str) or not _ID_PATTERN.match(request_id):
        raise ProtocolError(f"invalid request id {str(request_id)[:80]!r}")
    return request_id


def validate_headers(headers: Headers, side: str, status: int = 400) -> None:
    if len(headers) > MAX_HEADERS:
        raise ProtocolError(
            f"{side} sent {len(headers)} headers; at most {MAX_HEADERS} are carried",
            status=431 if side == "visitor" else status,
        )
    if not headers or _headers_valid(headers):
        return
    # Something is wrong: find the first bad header, to say which.
    for pair in headers:
        if len(pair) != 2:
            raise ProtocolError(f"{side} sent a malformed header", status=status)
        name, value = pair
        if not isinstance(name, str) or not _HEADER_NAME_PATTERN.match(name):
            raise ProtocolError(f"{side} sent an invalid header name {str(name)[:80]!r}", status)
        if not isinstance(value, str) or _FORBIDDEN_IN_HEADER_VALUE.search(value):
            raise ProtocolError(
                f"{side} sent header {name!r} with CR, LF, NUL or a lone surrogate in it", status
            )


def _headers_valid(headers: Headers) -> bool:
    """Whether every header is a pair of strings, a valid name and a value without CR, LF or
    NUL: one pass over all names and one over all values, rather than two searches a header
    (every message that crosses the relay is checked)."""
    try:
        names = "\n".join([name for name, _ in headers])
        values = "".join([value for _, value in headers])
    except (TypeError, ValueError):  # not pairs, or not strings
        return False
    return (
        _HEADER_NAMES_PATTERN.fullmatch(names) is not None
        # A newline inside a name would pass for the gap between two names.
        and names.count("\n") == len(headers) - 1
        and _FORBIDDEN_IN_HEADER_VALUE.search(values) is None
    )


def check_target(path: str, query: str = "") -> None:
    """Refuse request targets that could make the agent address anything but its own target.

    Only origin-form targets are allowed: a path starting with one ``/`` (not ``//``, which many
    apps and libraries read as a host) and no whitespace or control characters anywhere.
    """
    if not path.startswith("/") or path.startswith("//"):
        raise ProtocolError(
            f"visitor's request target {path[:80]!r} is not a plain path; "
            "absolute URLs and '//host' targets are refused"
        )
    if _FORBIDDEN_IN_TARGET.search(path) or _FORBIDDEN_IN_TARGET.search(query):
        raise ProtocolError("visitor's request target contains whitespace or control characters")


def is_hop_by_hop(name: str, connection_tokens: frozenset[str] = frozenset()) -> bool:
    lowered = name.lower()
    return lowered in HOP_BY_HOP_HEADERS or lowered in connection_tokens


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> Headers:
    """Drop hop-by-hop headers, including any the ``Connection`` header names."""
    pairs = tuple([(name, value) for name, value in headers])
    lowered = [name.lower() for name, _ in pairs]
    if HOP_BY_HOP_HEADERS.isdisjoint(lowered):  # the usual request: nothing to drop
        return pairs
    dropped = HOP_BY_HOP_HEADERS.union(
        token.strip().lower()
        for (_, value), name in zip(pairs, lowered, strict=True)
        if name == "connection"
        for token in value.split(",")
        if token.strip()
    )
    return tuple([pair for pair, name in zip(pairs, lowered, strict=True) if name not in dropped])


def _valid_blob_url(url: str) -> bool:
    return (
        isinstance(url, str)
        and len(url) <= MAX_BLOB_URL_LENGTH
        and url.startswith(("http://", "https://"))
        and not _FORBIDDEN_IN_TARGET.search(url)
    )
