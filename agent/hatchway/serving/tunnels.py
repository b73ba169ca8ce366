"""One agent's tunnels: each tunnel's options (from flags, the config file or the Python API),
the header rules the agent applies around the forwarder, and the router that hands each request
to its own tunnel's local app.

Basic auth, webhook verification, address rules and rate limits are not applied here: they
travel in the hello (``TunnelOptions.spec``) and the relay enforces them, so refused requests
never reach this machine. Secrets stay out of reprs and error messages.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hatchway import protocol
from hatchway.protocol import Fault, Headers, ProtocolError, Request, Response
from hatchway.serving.forward import Target, parse_target

HOST_HEADER_MODES = ("preserve", "rewrite")
"""``preserve`` (the default): the Host the visitor sent; ``rewrite``: the target's host:port.
Any other value is sent as the Host itself."""

RATE_UNITS = {"s": 1.0, "m": 60.0}
"""``--rate-limit N/s`` or ``N/m``: the window each unit stands for, in seconds."""

_RATE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([sm])\s*$")

Handler = Callable[[Request], Response]


class OptionError(ValueError):
    """A tunnel option cannot be used; the message names the option and what to give instead."""


@dataclass(frozen=True)
class TunnelOptions:
    """Everything one tunnel is asked to do. ``label`` names it in the config file and logs."""

    target: Target
    subdomain: str | None = None
    host_header: str = "preserve"
    request_header_add: Headers = ()
    request_header_remove: tuple[str, ...] = ()
    response_header_add: Headers = ()
    response_header_remove: tuple[str, ...] = ()
    basic_auth: str | None = field(default=None, repr=False)
    verify_webhook: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    large_responses: str = "refuse"
    access: protocol.AccessRules = field(default_factory=protocol.AccessRules)
    pool: bool = False
    """Join the pool of agents of this token serving the same name, instead of holding it alone."""
    gzip: bool = True
    """Let the relay gzip-encode responses for visitors that accept it."""
    stream: bool = False
    """Pass responses of unknown length to visitors as the app writes them."""
    label: str | None = None

    @property
    def max_response_bytes(self) -> int:
        """The largest response body this tunnel reads from its app: what a Lambda carries, or
        what the blob store takes when the relay redirects visitors to large responses."""
        if self.large_responses == "redirect":
            return protocol.MAX_BLOB_BYTES
        return protocol.MAX_BODY_BYTES

    def spec(self, salt: bytes | None = None) -> protocol.TunnelSpec:
        """What the hello asks for: the name, and the guards the relay is to enforce. The
        password leaves this machine only as a salted hash."""
        hashed = None
        if self.basic_auth is not None:
            salt = salt or os.urandom(protocol.BASIC_AUTH_SALT_BYTES)
            hashed = protocol.hash_basic_auth(self.basic_auth, salt)
        return protocol.TunnelSpec(
            self.subdomain,
            basic_auth=hashed,
            webhook=self.verify_webhook,
            webhook_secret=self.webhook_secret,
            large_responses=self.large_responses,
            access=self.access,
            pool=self.pool,
            gzip=self.gzip,
            stream=self.stream,
        )


def tunnel_options(
    target: str | int,
    *,
    subdomain: str | None = None,
    host_header: str | None = None,
    request_header_add: Iterable[str] = (),
    request_header_remove: Iterable[str] = (),
    response_header_add: Iterable[str] = (),
    response_header_remove: Iterable[str] = (),
    basic_auth: str | None = None,
    verify_webhook: str | None = None,
    webhook_secret: str | None = None,
    large_responses: str | None = None,
    allow_cidr: Iterable[str] = (),
    deny_cidr: Iterable[str] = (),
    rate_limit: str | float | None = None,
    rate_burst: int | None = None,
    pool: bool = False,
    gzip: bool = True,
    stream: bool = False,
    label: str | None = None,
) -> TunnelOptions:
    """Validated options from the strings a user types (flags, config values, API arguments).

    Raises ``OptionError`` naming the option at fault."""
    try:
        parsed_target = parse_target(str(target))
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    if subdomain is not None:
        try:
            protocol.validate_name(subdomain)
        except ProtocolError as exc:
            raise OptionError(f"subdomain: {exc}") from None
    if verify_webhook is not None and verify_webhook not in protocol.WEBHOOK_PROVIDERS:
        raise OptionError(
            f"verify-webhook: {verify_webhook!r} is not one of "
            + ", ".join(sorted(protocol.WEBHOOK_PROVIDERS))
        )
    if (verify_webhook is None) != (webhook_secret is None):
        raise OptionError(
            "verify-webhook and webhook-secret go together: give the provider (github, stripe "
            "or slack) and the secret its deliveries are signed with"
        )
    if pool and subdomain is None:
        raise OptionError(
            "pool: agents share a name they all ask for; give the tunnel its name too "
            "(--subdomain, or subdomain= in the Python API)"
        )
    large_responses = large_responses or "refuse"
    if large_responses not in protocol.LARGE_RESPONSE_MODES:
        raise OptionError(
            f"large-responses: give {' or '.join(sorted(protocol.LARGE_RESPONSE_MODES))}, "
            f"not {large_responses[:40]!r}"
        )
    options = TunnelOptions(
        target=parsed_target,
        subdomain=subdomain,
        host_header=_host_header(host_header or "preserve"),
        request_header_add=tuple(_header_line(h, "request-header-add") for h in request_header_add),
        request_header_remove=tuple(
            _header_name(n, "request-header-remove") for n in request_header_remove
        ),
        response_header_add=tuple(
            _header_line(h, "response-header-add") for h in response_header_add
        ),
        response_header_remove=tuple(
            _header_name(n, "response-header-remove") for n in response_header_remove
        ),
        basic_auth=_basic_auth(basic_auth) if basic_auth is not None else None,
        verify_webhook=verify_webhook,
        webhook_secret=webhook_secret,
        large_responses=large_responses,
        access=access_rules(allow_cidr, deny_cidr, rate_limit, rate_burst),
        pool=pool,
        gzip=gzip,
        stream=stream,
        label=label,
    )
    try:  # the relay's own checks of the secret, here so that the user hears of it first
        protocol.TunnelSpec(None, webhook=verify_webhook, webhook_secret=webhook_secret)
    except ProtocolError as exc:
        raise OptionError(f"webhook-secret: {exc}") from None
    return options


def access_rules(
    allow_cidr: Iterable[str] = (),
    deny_cidr: Iterable[str] = (),
    rate_limit: str | float | None = None,
    rate_burst: int | None = None,
) -> protocol.AccessRules:
    """The relay's address rules and rate limit from what a user types: CIDRs (a bare address
    is its own /32 or /128) and ``20/s`` or ``20/m``. A burst defaults to the count of one
    window, so ``20/m`` lets 20 requests through at once, then one every 3 s."""
    rate, burst = 0.0, 0
    if isinstance(rate_limit, int | float) and not isinstance(rate_limit, bool):
        rate_limit = f"{rate_limit}/s"  # the Python API may give a number: per second
    if rate_limit is not None:
        match = _RATE_PATTERN.match(str(rate_limit))
        count = float(match.group(1)) if match else 0.0
        if not match or count <= 0:
            raise OptionError(
                f"rate-limit: give requests per second or minute such as 20/s or 600/m, not "
                f"{str(rate_limit)[:40]!r}"
            )
        rate = count / RATE_UNITS[match.group(2)]
        burst = max(1, math.ceil(count))
    if rate_burst is not None:
        if rate_limit is None:
            raise OptionError("rate-burst goes with rate-limit: give both, e.g. 20/s and 40")
        if isinstance(rate_burst, bool) or not isinstance(rate_burst, int) or rate_burst < 1:
            raise OptionError("rate-burst: give a whole number of requests of at least 1")
        burst = rate_burst
    # One range given as a string (an easy slip in the Python API) is one range, not letters.
    allow = (allow_cidr,) if isinstance(allow_cidr, str) else tuple(allow_cidr)
    deny = (deny_cidr,) if isinstance(deny_cidr, str) else tuple(deny_cidr)
    try:
        return protocol.AccessRules(allow=allow, deny=deny, rate=rate, burst=burst)
    except ProtocolError as exc:
        raise OptionError(f"access rules: {exc}") from None


def _host_header(value: str) -> str:
    text = value.strip()
    try:
        protocol.validate_headers((("Host", text),), "host-header")
        valid = bool(text) and " " not in text
    except ProtocolError:
        valid = False
    if not valid:
        raise OptionError(
            f"host-header: give rewrite, preserve or a host name such as example.test:8080, "
            f"not {value[:80]!r}"
        )
    return text


def _header_name(name: str, option: str) -> str:
    try:
        protocol.validate_headers(((name.strip(), ""),), option)
    except ProtocolError:
        raise OptionError(f"{option}: {name[:80]!r} is not a header name") from None
    return name.strip()


def _header_line(line: str, option: str) -> tuple[str, str]:
    name, colon, value = line.partition(":")
    if not colon:
        raise OptionError(f'{option}: give "Name: value", not {line[:80]!r}')
    name, value = _header_name(name, option), value.strip()
    try:
        protocol.validate_headers(((name, value),), option)
    except ProtocolError:
        raise OptionError(f"{option}: the value of {name!r} has CR, LF or NUL in it") from None
    if protocol.is_hop_by_hop(name) or name.lower() == "host":
        raise OptionError(
            f"{option}: {name} is managed per connection and cannot be set"
            + (" (use --host-header for Host)" if name.lower() == "host" else "")
        )
    return name, value


def _basic_auth(value: str) -> str:
    user, colon, password = value.partition(":")
    if not colon or not user or not password or len(value) > protocol.MAX_BASIC_AUTH_LENGTH:
        raise OptionError(
            "basic-auth: give user:password (both non-empty, at most "
            f"{protocol.MAX_BASIC_AUTH_LENGTH} characters in all)"
        )
    return value


# --- Header rules around the forwarder ---------------------------------------------------------


class Pipeline:
    """One tunnel's request path: the header rules, then its forwarder, then response rules."""

    def __init__(self, options: TunnelOptions, forward: Handler) -> None:
        self.options = options
        self.forward = forward
        self._request_remove = frozenset(n.lower() for n in options.request_header_remove)
        self._response_remove = frozenset(n.lower() for n in options.response_header_remove)
        self._rewrites_requests = bool(
            self._request_remove or options.host_header != "preserve" or options.request_header_add
        )

    def __call__(self, request: Request) -> Response:
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        if self._rewrites_requests:  # else the request stays as it is, checked once already
            try:
                headers = self.request_headers(request.headers)
                request = dataclasses.replace(request, headers=headers)
            except ProtocolError as exc:  # e.g. the added headers pass the protocol's count limit
                return _agent_fault(request.id, f"the tunnel's header rules failed: {exc}")
        response = self.forward(request)
        if response.fault is not None or not (
            self._response_remove or self.options.response_header_add
        ):
            return response
        try:
            return dataclasses.replace(response, headers=self.response_headers(response.headers))
        except ProtocolError as exc:
            return _agent_fault(request.id, f"the tunnel's response header rules failed: {exc}")

    def request_headers(self, headers: Headers) -> Headers:
        """Removals, then the Host rule, then additions (in the order given)."""
        kept = [(n, v) for n, v in headers if n.lower() not in self._request_remove]
        mode = self.options.host_header
        if mode != "preserve":
            host = _host_of(self.options.target) if mode == "rewrite" else mode
            kept = [("Host", host), *((n, v) for n, v in kept if n.lower() != "host")]
        return (*kept, *self.options.request_header_add)

    def response_headers(self, headers: Headers) -> Headers:
        kept = tuple((n, v) for n, v in headers if n.lower() not in self._response_remove)
        return (*kept, *self.options.response_header_add)


def _host_of(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{host}:{target.port}"


def _agent_fault(request_id: str, message: str) -> Response:
    return Response(request_id, 502, fault=Fault("agent", message))


class Router:
    """Hands each request to its tunnel's handler. Handlers are given in the order of the hello's
    specs; ``bind`` learns the granted names from the welcome (random names are only known
    then), and the session calls it before the connection serves anything."""

    def __init__(self, handlers: Sequence[Handler]) -> None:
        self.handlers = tuple(handlers)
        self._by_name: Mapping[str, Handler] = {}
        self._lock = threading.Lock()

    def bind(self, welcome: protocol.Welcome) -> None:
        by_name = {
            info.name: handler
            for info, handler in zip(welcome.tunnels, self.handlers, strict=False)
        }
        with self._lock:
            self._by_name = by_name

    def __call__(self, request: Request) -> Response:
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        with self._lock:
            handler = self._by_name.get(request.tunnel)
        if handler is None:
            return _agent_fault(request.id, f"this agent serves no tunnel named {request.tunnel!r}")
        return handler(request)


def describe(options: TunnelOptions) -> dict[str, Any]:
    """The options as shown to the user (status screen, JSON log): secrets left out."""
    shown: dict[str, Any] = {"target": options.target.url}
    if options.label:
        shown["label"] = options.label
    if options.host_header != "preserve":
        shown["host_header"] = options.host_header
    if options.basic_auth:
        shown["basic_auth"] = options.basic_auth.partition(":")[0] + ":***"
    if options.verify_webhook:
        shown["verify_webhook"] = options.verify_webhook
    if options.large_responses != "refuse":
        shown["large_responses"] = options.large_responses
    if options.pool:
        shown["pool"] = True
    if not options.gzip:
        shown["gzip"] = False
    if options.stream:
        shown["stream"] = True
    if options.access.allow:
        shown["allow_cidr"] = list(options.access.allow)
    if options.access.deny:
        shown["deny_cidr"] = list(options.access.deny)
    if options.access.rate:
        shown["rate_limit"] = f"{options.access.rate:g}/s burst {options.access.burst}"
    return shown
