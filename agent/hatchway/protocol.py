"""The Hatchway wire protocol: messages, limits, framing and reassembly, with no I/O.

Rules this module keeps (both the agent and the relay functions import it; nothing else defines
anything that crosses the WebSocket):

* Every WebSocket message is one JSON object in a text frame of at most ``MAX_FRAME_BYTES``
  bytes (API Gateway's WebSocket frame limit). JSON is written with ``ensure_ascii`` so that a
  frame's length in characters is its length in bytes.
* Control messages (hello, welcome, ping, pong, error) always fit in one frame.
* Requests and responses are split into *parts*: part 0 carries the head (method, path, headers
  or status, headers) and the first slice of the body; later parts carry only body slices. Bodies
  travel as base64. Parts may arrive in any order (API Gateway invokes one Lambda per message);
  a ``Reassembler`` or ``assemble`` joins them with the same code on both sides.
* Every limit is a named constant here. Violations raise ``ProtocolError`` with the HTTP status the
  relay should answer with and a message that says which side sent the bad input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change; the relay refuses a hello with another version."""

# --- Limits -----------------------------------------------------------------------------------

MAX_FRAME_BYTES = 32 * 1024
"""Largest WebSocket message either side sends (API Gateway's WebSocket frame size limit)."""

MAX_BODY_BYTES = 4 * 1024 * 1024 + 256 * 1024
"""Largest request or response body (4.25 MiB). Base64 makes it 5.67 MiB, which leaves room for
headers inside Lambda's 6 MB synchronous payload limit that both directions pass through."""

MAX_HEAD_BYTES = 16 * 1024
"""Largest encoded head (method, path, query, headers; or status and headers) of one message."""

MAX_HEADERS = 200
"""Most header lines in one request or response head."""

MAX_PARTS = 256
"""Most parts one request or response may be split into (a 4.25 MiB body needs about 185)."""

MAX_ID_LENGTH = 64
"""Longest request id."""

MAX_TUNNELS_PER_CONNECTION = 16
"""Most tunnels one agent connection may claim in its hello."""

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
"""A tunnel name is one DNS label: lowercase letters, digits and inner hyphens, 1-63 chars."""

RESERVED_NAMES = frozenset({"connect", "www", "api", "admin", "t"})
"""Names no agent may claim: ``connect`` is the agent endpoint on a custom domain."""

MAX_GUARDS = 8
"""Most guard names a welcome lists per tunnel (there are two kinds today)."""

MAX_GUARD_LENGTH = 40
"""Longest guard name (``basic_auth``, ``webhook:<provider>``)."""

MAX_CUSTOM_URLS = 8
"""Most custom-hostname URLs a welcome lists per tunnel (the relay lists the first ones)."""

MAX_URL_LENGTH = 300
"""Longest URL a welcome carries: a 253-character hostname with scheme, port and slash."""

MAX_MESSAGE_TEXT = 1024
"""Longest human-readable message carried in an error or a fault."""

HEARTBEAT_SECONDS = 60.0
"""How often an agent pings by default; well inside API Gateway's 10 minute idle timeout."""

CLAIM_LEASE_SECONDS = 600.0
"""How long a tunnel claim lasts without a ping from its connection (the idle timeout)."""

MAX_CONNECTION_SECONDS = 2 * 60 * 60
"""API Gateway closes every WebSocket connection after two hours."""

CONNECTION_ROTATE_SECONDS = MAX_CONNECTION_SECONDS - 10 * 60
"""Agents open a fresh connection this long after connecting, before the platform cuts them off."""

WEBHOOK_PROVIDERS = frozenset({"github", "stripe", "slack"})
"""Webhook senders whose signatures the relay can verify for a tunnel (see relay guards)."""

MAX_WEBHOOK_SECRET_LENGTH = 256
"""Longest webhook signing secret an agent may hand the relay (providers use 32-72 chars)."""

MAX_BASIC_AUTH_LENGTH = 256
"""Longest ``user:password`` a tunnel may be protected with."""

BASIC_AUTH_SCHEME = "pbkdf2-sha256"
"""How the agent hashes a tunnel's basic-auth credentials before sending them: the relay only
ever holds (and stores) this salted hash, never the password."""

BASIC_AUTH_ITERATIONS = 10_000
"""PBKDF2 rounds the agent uses. The relay repeats the derivation for each new credential a
visitor presents (about 3 ms), so this balances a leaked table against per-request cost."""

MIN_BASIC_AUTH_ITERATIONS = 1_000
MAX_BASIC_AUTH_ITERATIONS = 100_000
"""Rounds the relay accepts in a hash: enough to matter, and bounded so that one tunnel cannot
make the relay spend more than ~30 ms of CPU on a visitor's guess."""

BASIC_AUTH_SALT_BYTES = 16
"""Random salt per tunnel per agent run."""

RESPONSE_TIMEOUT_SECONDS = 28.0
"""How long the relay waits for an agent's response: under the HTTP API's 30 s ceiling, so the
visitor gets the relay's own 504 page instead of the gateway's bare one."""

# HTTP/1.1 hop-by-hop headers (RFC 9110 section 7.6.1): meaningful for one connection only, so
# neither the relay nor the agent forwards them. Content-Length is recomputed from the body.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

_ID_PATTERN = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}$")
_METHOD_PATTERN = re.compile(r"^[A-Z][A-Z0-9-]{0,19}$")
_HEADER_NAME_PATTERN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_FORBIDDEN_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_FORBIDDEN_IN_HEADER_VALUE = re.compile(r"[\x00\r\n]")
_B64URL = r"[A-Za-z0-9_-]+"
_BASIC_AUTH_HASH_PATTERN = re.compile(
    rf"^{re.escape(BASIC_AUTH_SCHEME)}\$([0-9]{{4,6}})\$({_B64URL})\$({_B64URL})$"
)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class ProtocolError(ValueError):
    """Input that breaks the protocol. ``status`` is the HTTP status to answer a visitor with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- Messages ---------------------------------------------------------------------------------

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TunnelSpec:
    """One tunnel an agent asks for in its hello; ``name`` None means "pick one for me".

    The optional guards are enforced by the relay on every visitor request, before anything is
    forwarded: ``basic_auth`` is a ``hash_basic_auth`` string (never the password), ``webhook``
    one of ``WEBHOOK_PROVIDERS`` with the ``webhook_secret`` its deliveries are signed with.
    Neither secret appears in a repr or in an error message.
    """

    name: str | None = None
    basic_auth: str | None = field(default=None, repr=False)
    webhook: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.name is not None:
            validate_name(self.name)
        if self.basic_auth is not None:
            parse_basic_auth_hash(self.basic_auth)
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
                    "without control characters"
                )

    @property
    def guards(self) -> tuple[str, ...]:
        """What the relay must confirm it enforces (``TunnelInfo.guards``) before the agent
        serves this tunnel: a relay that ignored them would serve it unprotected."""
        wanted = ("basic_auth",) if self.basic_auth else ()
        return wanted + ((f"webhook:{self.webhook}",) if self.webhook else ())


@dataclass(frozen=True)
class Hello:
    """Agent → relay, first message on a connection: the tunnels it wants to serve."""

    tunnels: tuple[TunnelSpec, ...]
    agent: str = ""
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
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

    @property
    def public_urls(self) -> tuple[str, ...]:
        """Every URL the tunnel answers at, custom hostnames first, the path form last."""
        return tuple(u for u in (*self.custom_urls, self.url, self.path_url) if u)


@dataclass(frozen=True)
class Welcome:
    """Relay → agent: the tunnels granted, and how often to ping."""

    tunnels: tuple[TunnelInfo, ...]
    heartbeat_seconds: float = HEARTBEAT_SECONDS


@dataclass(frozen=True)
class Ping:
    """Agent → relay keep-alive; renews the agent's claims. ``ts`` is echoed in the pong."""

    ts: float = 0.0


@dataclass(frozen=True)
class Pong:
    """Relay → agent answer to a ping."""

    ts: float = 0.0


@dataclass(frozen=True)
class Error:
    """Relay → agent: the session cannot go on (``code`` is machine-readable, e.g. name_taken)."""

    code: str
    message: str


@dataclass(frozen=True)
class Fault:
    """Why an agent could not produce a real response; ``side`` names who failed."""

    side: str  # "local app" or "agent"
    message: str


@dataclass(frozen=True)
class Request:
    """Relay → agent: one visitor request for ``tunnel``. ``path`` and ``query`` are raw."""

    id: str
    tunnel: str
    method: str
    path: str
    query: str = ""
    headers: Headers = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        validate_id(self.id)
        validate_name(self.tunnel)
        if not _METHOD_PATTERN.match(self.method):
            raise ProtocolError(f"visitor sent an invalid method {self.method[:20]!r}")
        validate_headers(self.headers, "visitor")
        if len(self.body) > MAX_BODY_BYTES:
            raise ProtocolError(
                f"visitor's request body is {len(self.body)} bytes; "
                f"the relay accepts at most {MAX_BODY_BYTES}",
                status=413,
            )

    @property
    def target(self) -> str:
        """The request target as the local app sees it: path plus raw query."""
        return self.path + ("?" + self.query if self.query else "")


@dataclass(frozen=True)
class Response:
    """Agent → relay: the local app's response to request ``id``, or a fault."""

    id: str
    status: int
    headers: Headers = ()
    body: bytes = b""
    fault: Fault | None = None

    def __post_init__(self) -> None:
        validate_id(self.id)
        if not 100 <= self.status <= 599:
            raise ProtocolError(f"agent sent an invalid status {self.status}", status=502)
        validate_headers(self.headers, "local app", status=502)
        if len(self.body) > MAX_BODY_BYTES:
            raise ProtocolError(
                f"local app's response body is {len(self.body)} bytes; "
                f"the relay carries at most {MAX_BODY_BYTES}",
                status=502,
            )


Message = Hello | Welcome | Ping | Pong | Error | Request | Response
Control = Hello | Welcome | Ping | Pong | Error


@dataclass(frozen=True)
class Part:
    """One frame of a request or response: ``index`` of ``count``; ``head`` only on part 0."""

    kind: str  # "request" or "response"
    id: str
    index: int
    count: int
    body: bytes
    head: dict[str, Any] | None = field(default=None, compare=False)


Frame = Control | Part


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
    if len(salt) < BASIC_AUTH_SALT_BYTES or len(digest) != hashlib.sha256().digest_size:
        raise ProtocolError("basic_auth hash has a short salt or a digest of the wrong size")
    return iterations, salt, digest


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
            f"{side} sent {len(headers)} headers; at most {MAX_HEADERS} are carried", status=431
        )
    for pair in headers:
        if len(pair) != 2:
            raise ProtocolError(f"{side} sent a malformed header", status=status)
        name, value = pair
        if not isinstance(name, str) or not _HEADER_NAME_PATTERN.match(name):
            raise ProtocolError(f"{side} sent an invalid header name {str(name)[:80]!r}", status)
        if not isinstance(value, str) or _FORBIDDEN_IN_HEADER_VALUE.search(value):
            raise ProtocolError(f"{side} sent header {name!r} with CR, LF or NUL in it", status)


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
    pairs = tuple(headers)
    listed = frozenset(
        token.strip().lower()
        for name, value in pairs
        if name.lower() == "connection"
        for token in value.split(",")
        if token.strip()
    )
    return tuple((n, v) for n, v in pairs if not is_hop_by_hop(n, listed))


# --- Encoding ---------------------------------------------------------------------------------


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def _control_to_dict(message: Control) -> dict[str, Any]:
    if isinstance(message, Hello):
        return {
            "type": "hello",
            "version": message.version,
            "agent": message.agent,
            "tunnels": [_spec_to_dict(t) for t in message.tunnels],
        }
    if isinstance(message, Welcome):
        return {
            "type": "welcome",
            "heartbeat": message.heartbeat_seconds,
            "tunnels": [_info_to_dict(t) for t in message.tunnels],
        }
    if isinstance(message, Ping):
        return {"type": "ping", "ts": message.ts}
    if isinstance(message, Pong):
        return {"type": "pong", "ts": message.ts}
    if isinstance(message, Error):
        text = message.message[:MAX_MESSAGE_TEXT]
        return {"type": "error", "code": message.code, "message": text}
    raise TypeError(f"not a control message: {message!r}")


def _spec_to_dict(spec: TunnelSpec) -> dict[str, Any]:
    # Optional keys only when set, so a plain hello reads exactly as before guards existed.
    out: dict[str, Any] = {"name": spec.name}
    if spec.basic_auth is not None:
        out["basic_auth"] = spec.basic_auth
    if spec.webhook is not None:
        out["webhook"] = spec.webhook
        out["webhook_secret"] = spec.webhook_secret
    return out


def _info_to_dict(info: TunnelInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"name": info.name, "url": info.url, "path_url": info.path_url}
    if info.guards:
        out["guards"] = list(info.guards)
    if info.custom_urls:
        out["custom_urls"] = list(info.custom_urls)
    return out


def _head(message: Request | Response) -> tuple[str, dict[str, Any]]:
    headers = [list(pair) for pair in message.headers]
    if isinstance(message, Request):
        return "request", {
            "tunnel": message.tunnel,
            "method": message.method,
            "path": message.path,
            "query": message.query,
            "headers": headers,
        }
    head: dict[str, Any] = {"status": message.status, "headers": headers}
    if message.fault is not None:
        text = message.fault.message[:MAX_MESSAGE_TEXT]
        head["fault"] = {"side": message.fault.side, "message": text}
    return "response", head


def encode(message: Message) -> list[str]:
    """Encode ``message`` as WebSocket text frames, each at most ``MAX_FRAME_BYTES`` bytes."""
    if not isinstance(message, Request | Response):
        text = _dumps(_control_to_dict(message))
        if len(text) > MAX_FRAME_BYTES:
            raise ProtocolError(f"{type(message).__name__} does not fit in one frame")
        return [text]

    kind, head = _head(message)
    head_text = _dumps(head)
    if len(head_text) > MAX_HEAD_BYTES:
        side = "visitor" if kind == "request" else "local app"
        raise ProtocolError(
            f"{side}'s headers take {len(head_text)} bytes; at most {MAX_HEAD_BYTES} are carried",
            status=431 if kind == "request" else 502,
        )
    body = message.body
    # Frame overhead is computed from the widest index/count this message can have, so every
    # slice fits whatever its number. Base64 carries 3 bytes in 4 characters, never escaped.
    widest = {"type": kind, "id": message.id, "part": MAX_PARTS, "parts": MAX_PARTS, "body": ""}
    rest_room = MAX_FRAME_BYTES - len(_dumps(widest))
    first_room = rest_room - len(',"head":') - len(head_text)
    first_slice = max(first_room // 4 * 3, 0)
    rest_slice = rest_room // 4 * 3
    remaining = max(len(body) - first_slice, 0)
    count = 1 + math.ceil(remaining / rest_slice)
    if count > MAX_PARTS:
        raise ProtocolError(f"message needs {count} parts; at most {MAX_PARTS}", status=413)

    frames = []
    # Slice i ends where slice i+1 starts; the last end is at or past the end of the body.
    ends = [first_slice + i * rest_slice for i in range(count)]
    for index in range(count):
        chunk = body[ends[index - 1] if index else 0 : ends[index]]
        frame: dict[str, Any] = {"type": kind, "id": message.id, "part": index, "parts": count}
        if index == 0:
            frame["head"] = head
        frame["body"] = base64.b64encode(chunk).decode("ascii")
        frames.append(_dumps(frame))
    return frames


# --- Decoding ---------------------------------------------------------------------------------


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"{where}: field {key!r} is missing or has the wrong type")
    return value


def decode(text: str | bytes) -> Frame:
    """Parse one WebSocket message into a control message or a ``Part``."""
    if len(text) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(text)} bytes exceeds {MAX_FRAME_BYTES}", status=413)
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    kind = obj.get("type")
    if kind in ("request", "response"):
        return _decode_part(kind, obj)
    if kind == "hello":
        version = _field(obj, "version", int, "hello")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"agent speaks protocol {version}; this relay speaks {PROTOCOL_VERSION}: "
                "upgrade the agent or the relay"
            )
        tunnels = _field(obj, "tunnels", list, "hello")
        specs = []
        for item in tunnels:
            if not isinstance(item, dict) or not all(
                isinstance(item.get(key), str | None)
                for key in ("name", "basic_auth", "webhook", "webhook_secret")
            ):
                raise ProtocolError(
                    "hello: each tunnel must be an object with an optional name and optional "
                    "string guards"
                )
            specs.append(
                TunnelSpec(
                    item.get("name"),
                    basic_auth=item.get("basic_auth"),
                    webhook=item.get("webhook"),
                    webhook_secret=item.get("webhook_secret"),
                )
            )
        agent = obj.get("agent", "")
        return Hello(tuple(specs), agent=str(agent)[:200], version=version)
    if kind == "welcome":
        infos = []
        for item in _field(obj, "tunnels", list, "welcome"):
            if not isinstance(item, dict):
                raise ProtocolError("welcome: each tunnel must be an object")
            guards = item.get("guards", [])
            if not isinstance(guards, list) or not all(isinstance(g, str) for g in guards):
                raise ProtocolError("welcome: guards must be a list of strings")
            custom_urls = item.get("custom_urls", [])
            if not isinstance(custom_urls, list) or not all(
                isinstance(u, str) and len(u) <= MAX_URL_LENGTH for u in custom_urls
            ):
                raise ProtocolError(
                    f"welcome: custom_urls must be a list of URLs of at most {MAX_URL_LENGTH} "
                    "characters"
                )
            infos.append(
                TunnelInfo(
                    name=_field(item, "name", str, "welcome"),
                    url=item.get("url") if isinstance(item.get("url"), str) else None,
                    path_url=_field(item, "path_url", str, "welcome"),
                    guards=tuple(g[:MAX_GUARD_LENGTH] for g in guards[:MAX_GUARDS]),
                    custom_urls=tuple(custom_urls[:MAX_CUSTOM_URLS]),
                )
            )
        heartbeat = float(_field(obj, "heartbeat", (int, float), "welcome"))
        return Welcome(tuple(infos), heartbeat_seconds=heartbeat)
    if kind == "ping":
        return Ping(float(_field(obj, "ts", (int, float), "ping")))
    if kind == "pong":
        return Pong(float(_field(obj, "ts", (int, float), "pong")))
    if kind == "error":
        return Error(
            _field(obj, "code", str, "error")[:100],
            _field(obj, "message", str, "error")[:MAX_MESSAGE_TEXT],
        )
    raise ProtocolError(f"unknown message type {str(kind)[:40]!r}")


def _decode_part(kind: str, obj: dict[str, Any]) -> Part:
    request_id = validate_id(_field(obj, "id", str, kind))
    index = _field(obj, "part", int, kind)
    count = _field(obj, "parts", int, kind)
    if not 1 <= count <= MAX_PARTS:
        raise ProtocolError(f"{kind} {request_id}: parts must be 1 to {MAX_PARTS}, got {count}")
    if not 0 <= index < count:
        raise ProtocolError(f"{kind} {request_id}: part {index} is outside 0..{count - 1}")
    try:
        body = base64.b64decode(_field(obj, "body", str, kind), validate=True)
    except binascii.Error:
        raise ProtocolError(f"{kind} {request_id}: body is not valid base64") from None
    head = obj.get("head")
    if index == 0 and not isinstance(head, dict):
        raise ProtocolError(f"{kind} {request_id}: part 0 must carry the head")
    if index != 0 and head is not None:
        raise ProtocolError(f"{kind} {request_id}: only part 0 may carry the head")
    return Part(kind=kind, id=request_id, index=index, count=count, body=body, head=head)


def _headers_from(head: dict[str, Any], where: str) -> Headers:
    raw = _field(head, "headers", list, where)
    pairs = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, str) for x in item)
        ):
            raise ProtocolError(f"{where}: each header must be a [name, value] pair of strings")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def _message_from(first: Part, body: bytes) -> Request | Response:
    head = first.head or {}
    where = f"{first.kind} {first.id}"
    if first.kind == "request":
        return Request(
            id=first.id,
            tunnel=_field(head, "tunnel", str, where),
            method=_field(head, "method", str, where),
            path=_field(head, "path", str, where),
            query=_field(head, "query", str, where),
            headers=_headers_from(head, where),
            body=body,
        )
    fault = head.get("fault")
    if fault is not None:
        if not isinstance(fault, dict):
            raise ProtocolError(f"{where}: fault must be an object", status=502)
        fault = Fault(
            side=_field(fault, "side", str, where)[:40],
            message=_field(fault, "message", str, where)[:MAX_MESSAGE_TEXT],
        )
    return Response(
        id=first.id,
        status=_field(head, "status", int, where),
        headers=_headers_from(head, where),
        body=body,
        fault=fault,
    )


class Reassembler:
    """Joins parts into requests or responses; parts of many messages may interleave.

    ``max_pending`` bounds how many incomplete messages are held at once, so a peer that starts
    messages and never finishes them cannot grow memory without limit.
    """

    def __init__(self, max_pending: int = 256) -> None:
        self._pending: dict[str, dict[int, Part]] = {}
        self._max_pending = max_pending

    def __len__(self) -> int:
        return len(self._pending)

    def feed(self, part: Part) -> Request | Response | None:
        """Add one part; return the whole message once its last part arrived."""
        parts = self._pending.get(part.id)
        if parts is None:
            if len(self._pending) >= self._max_pending:
                raise ProtocolError(
                    f"more than {self._max_pending} unfinished messages on one connection"
                )
            parts = self._pending[part.id] = {}
        else:
            first = next(iter(parts.values()))
            if first.count != part.count or first.kind != part.kind:
                del self._pending[part.id]
                raise ProtocolError(f"{part.kind} {part.id}: parts disagree on their count")
        if part.index in parts:
            del self._pending[part.id]
            raise ProtocolError(f"{part.kind} {part.id}: part {part.index} arrived twice")
        parts[part.index] = part
        size = sum(len(p.body) for p in parts.values())
        if size > MAX_BODY_BYTES:
            del self._pending[part.id]
            raise ProtocolError(f"{part.kind} {part.id}: body exceeds {MAX_BODY_BYTES}", status=413)
        if len(parts) < part.count:
            return None
        del self._pending[part.id]
        return assemble(parts.values())

    def discard(self, request_id: str) -> None:
        self._pending.pop(request_id, None)


def assemble(parts: Iterable[Part]) -> Request | Response:
    """Join a complete set of parts (any order) into one message."""
    ordered = sorted(parts, key=lambda p: p.index)
    if not ordered:
        raise ProtocolError("no parts to assemble")
    first = ordered[0]
    if [p.index for p in ordered] != list(range(first.count)) or any(
        p.count != first.count or p.id != first.id or p.kind != first.kind for p in ordered
    ):
        raise ProtocolError(f"{first.kind} {first.id}: parts are missing, repeated or mixed")
    body = b"".join(p.body for p in ordered)
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(f"{first.kind} {first.id}: body exceeds {MAX_BODY_BYTES}", status=413)
    return _message_from(first, body)
