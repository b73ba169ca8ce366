"""The relay's behaviour, free of any transport: agents connect and claim names, visitors'
requests are routed to the agent holding the name, and its response is handed back.

Everything goes through ports (``Store``, ``BlobStore``, ``Poster``, ``Clock``); the Lambda
handlers and the local gateway only translate events into calls on ``Relay``. Errors a visitor
sees say which side failed: the visitor, the relay, the agent, or the local app behind it.

One visitor request costs, on AWS: one ``@connections`` post (the request message), one
WebSocket message back (the response), one conditional write of that response (its id proves
which connection may answer, so no read precedes the write) and the waiter's polls of that one
item. Nothing on the path deletes (TTL does, for free) and nothing counts per request (pings
carry the counts). Bodies too large for a message go through the blob store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from hatchway import codec, protocol
from hatchway.protocol import ProtocolError
from hatchway_relay import access, admin, guards, hostnames, names, path_mode, request_ids, tokens
from hatchway_relay.metrics import COUNT, Metrics, NoMetrics
from hatchway_relay.ports import (
    BlobStore,
    BlobTooLarge,
    Claim,
    Clock,
    ConnectionGone,
    ConnectionRecord,
    PlainSecretBox,
    Poster,
    PostFailed,
    SecretBox,
    Store,
    TokenRecord,
)

log = logging.getLogger("hatchway.relay")

PATH_MODE_PREFIX = "/t/"
"""Path-mode tunnels live under ``/t/<name>/`` on the relay's bare URL (no domain needed)."""

LIVENESS_CHECK_SECONDS = 0.5
"""How often a waiting visitor request checks that its agent is still connected."""

ANSWER_GRACE_SECONDS = 5.0
"""A request id accepts answers this long past the visitor's deadline, so that a late answer is
refused cleanly (and told to the agent) rather than racing the waiter's end."""

CLEANUP_MARGIN_SECONDS = 1.0
"""Time the HTTP function keeps for itself after waiting: building the reply and its log lines
must finish inside the function's timeout."""

BLOB_URL_SECONDS = 60.0
"""Lifetime of the presigned URLs a request hands the agent (it uses them within the request's
deadline) and of a redirect to a large response (the visitor follows it at once)."""

FIRST_POLL_FRACTION = 0.8
"""A waiter first looks for the answer at this share of the tunnel's recent response time:
polls before it would all miss (each miss is a billed read on DynamoDB)."""

MAX_POLL_HINT_SECONDS = 1.0
"""The first look is never later than this, so a dead agent is still noticed quickly."""

LATENCY_MEMORY = 0.2
"""Weight of the newest response time in a tunnel's running average."""

MAX_REMEMBERED_TUNNELS = 4096
"""Tunnels whose response times one warm relay keeps (a bounded cache)."""

CLAIM_CACHE_SECONDS = 1.0
"""A warm relay routes by a claim it read this recently without reading it again (one read
saved per request on a busy tunnel). A claim that moved meanwhile is caught by the post: a
gone connection makes the relay read the claim afresh and try once more. Guards changed by a
new hello, or a revoked token, take effect within this long."""

FAULT_CODES = {413: "response-too-large", 503: "tunnel-busy", 504: "local-app-timeout"}
"""Statuses an agent's fault may ask the relay to answer with, and the error code each gets;
any other status in a fault becomes 502 (``local-app-error`` or ``agent-error``)."""

RANDOM_NAME_ATTEMPTS = 8
"""Tries at a fresh random name before giving up (collisions are rare: ~26 bits each)."""


@dataclass(frozen=True)
class RelayConfig:
    """Where the relay is reachable, and its timing. URL templates contain ``{name}``."""

    path_url: str
    subdomain_url: str | None = None
    domain: str | None = None
    custom_hostnames: Mapping[str, str] = field(default_factory=dict)
    """Hostnames users bring -> the tunnel each serves (see ``hostnames``)."""
    custom_hostname_url: str = "https://{host}/"
    """How a custom hostname's URL is shown to its agent."""
    response_timeout: float = protocol.RESPONSE_TIMEOUT_SECONDS
    heartbeat_seconds: float = protocol.HEARTBEAT_SECONDS
    claim_lease_seconds: float = protocol.CLAIM_LEASE_SECONDS
    liveness_check_seconds: float = LIVENESS_CHECK_SECONDS
    agent_silence_seconds: float = protocol.AGENT_SILENCE_SECONDS
    inline_response_bytes: int = protocol.MAX_INLINE_BODY_BYTES
    """Largest packed response body an agent sends inline; larger ones go to the blob store.
    On DynamoDB this is where one stored item stops being cheaper than S3 (``prices``)."""


@dataclass(frozen=True)
class Visit:
    """A visitor's request as the HTTP API delivered it. ``path`` and ``query`` are raw."""

    method: str
    host: str
    path: str
    query: str = ""
    headers: protocol.Headers = ()
    body: bytes = b""
    source_ip: str = ""
    received_at: float | None = None
    """When the gateway received the request (``requestContext.timeEpoch``): its 30 s
    integration timeout counts from then, cold start included."""
    time_left: float | None = None
    """Seconds the function has left (Lambda's ``get_remaining_time_in_millis``)."""


@dataclass(frozen=True)
class Route:
    """Where a visitor request goes: the tunnel, the path its app sees, and in path mode the
    ``/t/<name>`` prefix the visitor's browser sees (empty otherwise)."""

    name: str
    path: str
    prefix: str = ""


@dataclass(frozen=True)
class Reply:
    """What the visitor gets back."""

    status: int
    headers: protocol.Headers = ()
    body: bytes = b""


def error_reply(
    status: int, code: str, message: str, extra_headers: protocol.Headers = ()
) -> Reply:
    """A plain-text error page; ``x-hatchway-error`` lets scripts tell our errors from the app's."""
    reason = _REASONS.get(status, "Error")
    body = f"{status} {reason}\n\n{message}\n\n-- hatchway relay\n".encode()
    return Reply(
        status,
        (
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", "no-store"),
            ("x-hatchway-error", code),
            *extra_headers,
        ),
        body,
    )


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Relay:
    def __init__(
        self,
        store: Store,
        poster: Poster,
        clock: Clock,
        config: RelayConfig,
        metrics: Metrics | None = None,
        blobs: BlobStore | None = None,
        secrets: SecretBox | None = None,
    ) -> None:
        self.store = store
        self.poster = poster
        self.clock = clock
        self.config = config
        self.metrics = metrics or NoMetrics()
        self.blobs = blobs
        self.secrets = secrets or PlainSecretBox()
        self._hostname_tunnels = frozenset(config.custom_hostnames.values())
        self._key: bytes | None = None
        self._latency: dict[str, float] = {}
        self._claims: dict[str, tuple[float, Claim]] = {}
        self._limiter = access.RateLimiter()
        self._limiter_lock = threading.Lock()

    @property
    def key(self) -> bytes:
        """The relay's key (one read per cold start; see ``request_ids``)."""
        if self._key is None:
            self._key = self.store.relay_key()
        return self._key

    # --- Tokens -------------------------------------------------------------------------------

    def add_token(self, token: str, label: str = "", reserved: tuple[str, ...] = ()) -> TokenRecord:
        return admin.register_token(self.store, token, label, reserved, self.clock.now())

    def authorize(self, token: str | None) -> TokenRecord | None:
        """The token's record if the token is known, else None."""
        if not token:
            return None
        record = self.store.get_token(tokens.hash_token(token))
        if record is None or not tokens.hashes_match(record.token_hash, token):
            return None
        return record

    # --- Agent connections --------------------------------------------------------------------

    def connect(self, connection_id: str, token: str | None, source_ip: str = "") -> bool:
        """``$connect``: accept the connection only with a known token."""
        record = self.authorize(token)
        if record is None:
            log.info("connection %s refused: unknown token", request_ids.log_id(connection_id))
            return False
        self.register_connection(connection_id, record.token_id, source_ip)
        return True

    def register_connection(self, connection_id: str, token_id: str, source_ip: str = "") -> None:
        now = self.clock.now()
        self.store.put_connection(
            ConnectionRecord(
                connection_id=connection_id,
                token_id=token_id,
                connected_at=now,
                # The platform closes every connection at this age; a record older than that
                # belongs to a connection whose $disconnect never came.
                expires_at=now + protocol.MAX_CONNECTION_SECONDS + 60,
                source_ip=source_ip,
            )
        )
        log.info(
            "agent connected: connection %s, token %s", request_ids.log_id(connection_id), token_id
        )

    def disconnect(self, connection_id: str) -> None:
        """``$disconnect`` (best effort: 410s and expiry checks clean up when it never comes)."""
        self.drop_connection(connection_id)

    def drop_connection(self, connection_id: str) -> None:
        """Forget one connection and release exactly the names it holds — nobody else's.

        Every cleanup goes through here: ``$disconnect``, a 410 from the poster, a dead agent
        found by a waiting request.
        """
        admin.forget_connection(self.store, connection_id)
        log.info("connection %s dropped", request_ids.log_id(connection_id))

    def on_message(self, connection_id: str, text: str) -> None:
        """``$default``: one WebSocket message from an agent."""
        try:
            message = codec.decode(text)
        except ProtocolError as exc:
            log.warning(
                "bad message from connection %s: %s", request_ids.log_id(connection_id), exc
            )
            self._send(
                connection_id, protocol.Error("bad_frame", f"relay refused a message: {exc}")
            )
            return
        if isinstance(message, protocol.Response):
            self._accept_response(connection_id, message, text)
        elif isinstance(message, protocol.Hello):
            self._hello(connection_id, message)
        elif isinstance(message, protocol.Ping):
            self._ping(connection_id, message)
        elif isinstance(message, protocol.Working):
            self._working(connection_id, message)
        else:
            self._send(
                connection_id,
                protocol.Error(
                    "unexpected", f"agents do not send {type(message).__name__} messages"
                ),
            )

    def _hello(self, connection_id: str, hello: protocol.Hello) -> None:
        connection = self.store.get_connection(connection_id)
        now = self.clock.now()
        if connection is None or not connection.alive(now):
            self._send(connection_id, protocol.Error("not_connected", "connection is not known"))
            return
        named = [spec.name for spec in hello.tunnels if spec.name]
        twice = sorted({name for name in named if named.count(name) > 1})
        if twice:
            self._send(
                connection_id,
                protocol.Error(
                    "name_taken",
                    f"the hello asks for {', '.join(map(repr, twice))} more than once; each "
                    "tunnel of an agent needs its own name",
                ),
            )
            return
        granted: list[str] = []
        for spec in hello.tunnels:
            name = self._claim(connection, spec, now, hello.instance)
            if name is None:
                for done in granted:
                    self.store.release_claim(done, connection_id)
                wanted = spec.name or "a random name"
                reserved_by = self.store.get_reservation(spec.name) if spec.name else None
                served = hostnames.hostnames_of(spec.name or "", self.config.custom_hostnames)
                if reserved_by not in (None, connection.token_id):
                    why = "is reserved for another token"
                elif served and reserved_by is None:
                    why = (
                        f"serves {', '.join(served)}, so it must first be reserved for your "
                        f"token: hatchway-admin reserve {spec.name} --token-id <your token id>"
                    )
                elif self._held_by_own_token(spec.name, connection.token_id):
                    why = (
                        "is served by another agent using your token; stop that agent first "
                        "(a restarted agent takes its names back once the old one is gone)"
                    )
                else:
                    why = "is held by another token"
                self._send(
                    connection_id,
                    protocol.Error(
                        "name_taken",
                        f"tunnel name {wanted!r} {why}; pick another --subdomain or stop "
                        "the agent that holds it",
                    ),
                )
                return
            granted.append(name)
        # Names this connection held before but did not ask for again are released.
        for old in set(connection.names) - set(granted):
            self.store.release_claim(old, connection_id)
        self.store.set_connection_names(connection_id, tuple(granted))
        infos = tuple(
            protocol.TunnelInfo(
                name=n,
                url=self.config.subdomain_url.format(name=n) if self.config.subdomain_url else None,
                path_url=self.config.path_url.format(name=n),
                guards=spec.guards,
                custom_urls=tuple(
                    self.config.custom_hostname_url.format(host=host)
                    for host in hostnames.hostnames_of(n, self.config.custom_hostnames)[
                        : protocol.MAX_CUSTOM_URLS
                    ]
                ),
            )
            for n, spec in zip(granted, hello.tunnels, strict=True)
        )
        log.info("connection %s serves %s", request_ids.log_id(connection_id), ", ".join(granted))
        self._send(
            connection_id,
            protocol.Welcome(infos, self.config.heartbeat_seconds, now=self.clock.now()),
        )

    def _claim(
        self, connection: ConnectionRecord, spec: protocol.TunnelSpec, now: float, instance: str
    ) -> str | None:
        """Claim ``spec.name`` (or a fresh random name) for ``connection``, with the spec's
        guards; None if it is taken."""
        wanted = spec.name
        if wanted:
            candidates = [wanted]
        else:
            candidates = [names.random_name() for _ in range(RANDOM_NAME_ATTEMPTS)]
        lease = now + self.config.claim_lease_seconds
        for name in candidates:
            reserved_by = self.store.get_reservation(name)
            if reserved_by is not None and reserved_by != connection.token_id:
                continue
            if reserved_by is None and name in self._hostname_tunnels:
                # A custom hostname's traffic only ever reaches the token its tunnel is
                # reserved for: an unreserved name would hand it to whoever claims first.
                continue
            claim = Claim(
                name,
                connection.connection_id,
                connection.token_id,
                lease,
                basic_auth=spec.basic_auth or "",
                webhook=spec.webhook or "",
                webhook_secret=self.secrets.seal(spec.webhook_secret or ""),
                large_responses=spec.large_responses,
                instance=instance,
                access=spec.access,
            )
            if self.store.claim_name(claim, now):
                return name
            # Held by another token. If its connection is dead (a $disconnect that never came),
            # take the name over — conditionally, so a live re-claim in between still wins.
            held = self.store.get_claim(name)
            if held is not None:
                holder = self.store.get_connection(held.connection_id)
                if (holder is None or not holder.alive(now)) and self.store.claim_name(
                    claim, now, takeover_from=held.connection_id
                ):
                    return name
        return None

    def _held_by_own_token(self, name: str | None, token_id: str) -> bool:
        held = self.store.get_claim(name) if name else None
        return held is not None and held.token_id == token_id

    def _ping(self, connection_id: str, ping: protocol.Ping) -> None:
        connection = self.store.get_connection(connection_id)
        if connection is None:
            # Revoked by the operator, or lost: the agent reconnects, and learns which.
            self._send(connection_id, protocol.Error("not_connected", "connection is not known"))
            return
        lease = self.clock.now() + self.config.claim_lease_seconds
        served = dict(ping.served)
        lost = [
            name
            for name in connection.names
            if not self.store.renew_claim(name, connection_id, lease, served.get(name))
        ]
        self.metrics.add("ActiveTunnels", len(connection.names) - len(lost), COUNT)
        self._send(connection_id, protocol.Pong(ping.ts))
        if lost:
            # Taken over (its lease ran out, or another connection claimed it): the agent says
            # hello again, which takes the names back or says why it cannot.
            self._send(
                connection_id,
                protocol.Error(
                    "name_lost",
                    f"this connection no longer holds {', '.join(map(repr, lost))}",
                ),
            )

    def _working(self, connection_id: str, working: protocol.Working) -> None:
        """The agent is still on these slow requests: the waiters will not call it silent."""
        now = self.clock.now()
        for request_id in working.ids:
            if request_ids.may_answer(self.key, request_id, connection_id, now):
                self.store.mark_working(request_id, request_ids.expires_at(request_id))

    def _accept_response(self, connection_id: str, response: protocol.Response, text: str) -> None:
        """Store an agent's answer with one conditional write; its id proves the sender owns
        the request (no read first). A refusal is told to the agent, which logs it."""
        now = self.clock.now()
        if not request_ids.may_answer(self.key, response.id, connection_id, now):
            why = "it is not this connection's request, or the relay stopped waiting for it"
        else:
            try:
                stored = self.store.put_response(
                    response.id, codec.stored_response(text), request_ids.expires_at(response.id)
                )
            except Exception:
                # The write failed (throttled, a 5xx after the SDK's retries): the agent is told
                # at once and may send the answer again; a repeat is harmless.
                log.exception(
                    "could not store an answer from %s", request_ids.log_id(connection_id)
                )
                self._send(
                    connection_id,
                    protocol.Error(
                        "response_not_stored",
                        "the relay could not store the answer; send it again",
                        response.id,
                    ),
                )
                return
            if stored:
                return
            why = "another answer to it is already stored"
        log.warning(
            "refused a response from connection %s: %s",
            request_ids.log_id(connection_id),
            why,
        )
        self._send(
            connection_id,
            protocol.Error(
                "response_refused", f"relay refused the response to {response.id}: {why}"
            ),
        )

    def _send(self, connection_id: str, message: protocol.Message) -> None:
        """Best-effort message to an agent; a gone connection is cleaned up."""
        try:
            self.poster.post(connection_id, codec.encode(message))
        except ConnectionGone:
            self.drop_connection(connection_id)
        except PostFailed as exc:
            log.warning(
                "could not tell connection %s: %s", request_ids.log_id(connection_id), exc.why
            )

    # --- Visitors -----------------------------------------------------------------------------

    def visit(self, visit: Visit) -> Reply:
        """Serve one visitor request through the agent that holds the tunnel's name."""
        route = self._route(visit)
        if isinstance(route, Reply):
            return route
        reply = self._visit(visit, route, fresh=False)
        # None: a remembered claim led to a gone connection. The name may have moved on (a
        # reconnect): read it afresh and try once more.
        return (
            reply
            or self._visit(visit, route, fresh=True)
            or self._agent_gone(route.name, "was already gone")
        )

    def _claim_of(self, name: str, now: float, fresh: bool) -> tuple[Claim | None, bool]:
        """The claim of ``name``, and whether it came from this relay's short memory."""
        remembered = None if fresh else self._claims.get(name)
        if remembered is not None and now - remembered[0] < CLAIM_CACHE_SECONDS:
            return remembered[1], True
        claim = self.store.get_claim(name)
        if name not in self._claims and len(self._claims) >= MAX_REMEMBERED_TUNNELS:
            self._claims.pop(next(iter(self._claims)))
        if claim is None:
            self._claims.pop(name, None)
        else:
            self._claims[name] = (now, claim)
        return claim, False

    def _visit(self, visit: Visit, route: Route, fresh: bool) -> Reply | None:
        name = route.name
        now = self.clock.now()
        claim, remembered = self._claim_of(name, now, fresh)
        if claim is None or not claim.alive(now):
            return error_reply(
                404,
                "tunnel-not-found",
                f"No tunnel named {name!r} is connected to this relay. If it is yours, start it "
                f"with: hatchway http <port> --subdomain {name}",
            )
        refusal = (
            self._access_refusal(claim, visit, now)
            or guards.check(self._opened(claim), visit.headers, visit.body, now)
            or self._replay_refusal(claim, visit, now)
        )
        if refusal is not None:  # never reaches the agent
            return error_reply(refusal.status, refusal.code, refusal.message, refusal.headers)
        deadline = self._deadline(visit, now)
        request_id = request_ids.new_request_id(
            self.key, claim.connection_id, deadline + ANSWER_GRACE_SECONDS
        )
        try:
            request = self._request(request_id, route, visit, claim, deadline)
            text = codec.encode(request)
        except ProtocolError as exc:
            message = f"The visitor's request was refused: {exc}."
            return error_reply(exc.status, "bad-request", message)
        reply = self._exchange(claim, request, text, deadline, remembered)
        if reply is not None and route.prefix:
            return replace(reply, headers=path_mode.scoped_headers(reply.headers, route.prefix))
        return reply

    def _opened(self, claim: Claim) -> Claim:
        """The claim with its webhook secret in clear, for checking a delivery."""
        if not claim.webhook_secret:
            return claim
        return replace(claim, webhook_secret=self.secrets.open(claim.webhook_secret))

    def _replay_refusal(self, claim: Claim, visit: Visit, now: float) -> guards.Refusal | None:
        """A verified delivery with a signed timestamp goes through once (one conditional write
        per delivery, only for tunnels that verify such a provider)."""
        key = guards.replay_key(claim, visit.headers)
        window = now + 2 * guards.WEBHOOK_TOLERANCE_SECONDS
        if key is None or self.store.first_sighting(key, window):
            return None
        return guards.replayed(claim.name, claim.webhook)

    def _access_refusal(self, claim: Claim, visit: Visit, now: float) -> guards.Refusal | None:
        """The tunnel's address rules and rate limit (``access``), before anything else."""
        rules = claim.access
        if not access.address_allowed(rules, visit.source_ip):
            return guards.Refusal(
                403,
                "address-refused",
                f"Tunnel {claim.name!r} does not accept requests from your address "
                f"({visit.source_ip or 'unknown'}); its owner limits who may reach it.",
            )
        if rules.rate:
            with self._limiter_lock:
                wait = self._limiter.take(claim.name, rules.rate, rules.burst, now)
            if wait is not None:
                return guards.Refusal(
                    429,
                    "rate-limited",
                    f"Tunnel {claim.name!r} takes at most {rules.rate:g} requests a second "
                    f"(bursts of {rules.burst}); try again in {access.retry_after(wait)} s.",
                    (("retry-after", access.retry_after(wait)),),
                )
        return None

    def _deadline(self, visit: Visit, now: float) -> float:
        """When to stop waiting: the response timeout counted from when the gateway got the
        request (a cold start spends part of it), and never later than the function can run."""
        deadline = (visit.received_at or now) + self.config.response_timeout
        if visit.time_left is not None:
            deadline = min(deadline, now + visit.time_left - CLEANUP_MARGIN_SECONDS)
        return deadline

    def _request(
        self, request_id: str, route: Route, visit: Visit, claim: Claim, deadline: float
    ) -> protocol.Request:
        """The request message; a body too large for it goes to the blob store first."""
        body, body_url = visit.body, None
        if len(body) > protocol.MAX_INLINE_BODY_BYTES:
            if len(body) > protocol.MAX_BODY_BYTES or self.blobs is None:
                raise ProtocolError(
                    f"its body is {len(body)} bytes; this relay accepts at most "
                    f"{protocol.MAX_BODY_BYTES if self.blobs else protocol.MAX_INLINE_BODY_BYTES}",
                    status=413,
                )
            key = f"req/{request_id}"
            self.blobs.put(key, body)
            body, body_url = b"", self.blobs.download_url(key, BLOB_URL_SECONDS)
        upload_url = None
        if self.blobs is not None:
            upload_url = self.blobs.upload_url(f"resp/{request_id}", BLOB_URL_SECONDS)
        return protocol.Request(
            id=request_id,
            tunnel=route.name,
            method=visit.method.upper(),
            path=route.path,
            query=visit.query,
            headers=self._forwarded(claim, visit),
            body=body,
            deadline=deadline,
            body_url=body_url,
            body_size=len(visit.body) if body_url else 0,
            upload_url=upload_url,
            inline_max=self.config.inline_response_bytes,
        )

    def _forwarded(self, claim: Claim, visit: Visit) -> protocol.Headers:
        """The headers the app gets: the visitor's, without hop-by-hop ones and the tunnel's
        own credentials, with ``X-Forwarded-For`` ending in the address the platform saw and
        ``X-Forwarded-Proto`` saying how the relay was reached (a visitor cannot claim either)."""
        headers = guards.forwarded_headers(claim, protocol.strip_hop_by_hop(visit.headers))
        chain = [
            hop.strip()
            for name, value in headers
            if name.lower() == "x-forwarded-for"
            for hop in value.split(",")
            if hop.strip()
        ]
        if visit.source_ip and (not chain or chain[-1] != visit.source_ip):
            chain.append(visit.source_ip)
        kept = tuple(
            (name, value)
            for name, value in headers
            if name.lower() not in ("x-forwarded-for", "x-forwarded-proto")
        )
        proto = "https" if self.config.path_url.startswith("https:") else "http"
        forwarded = (("x-forwarded-for", ", ".join(chain)),) if chain else ()
        return kept + forwarded + (("x-forwarded-proto", proto),)

    def _route(self, visit: Visit) -> Route | Reply:
        """The tunnel and the path to forward, from the Host (a custom hostname, or subdomain
        mode) or the path."""
        host = visit.host.lower().rsplit(":", 1)[0] if "]" not in visit.host else visit.host
        tunnel = self.config.custom_hostnames.get(host)
        if tunnel is not None:
            return Route(tunnel, visit.path)
        domain = (self.config.domain or "").lower()
        if domain and host.endswith("." + domain):
            label = host[: -len(domain) - 1]
            if "." not in label and protocol.NAME_PATTERN.match(label):
                return Route(label, visit.path)
        if visit.path.startswith(PATH_MODE_PREFIX):
            name, slash, rest = visit.path[len(PATH_MODE_PREFIX) :].partition("/")
            if protocol.NAME_PATTERN.match(name):
                if not slash:
                    # /t/name → /t/name/ so that the app's relative links resolve under it.
                    location = visit.path + "/" + ("?" + visit.query if visit.query else "")
                    return Reply(308, (("location", location),))
                return Route(name, "/" + rest, PATH_MODE_PREFIX + name)
        return error_reply(
            404,
            "no-tunnel-in-url",
            "This address names no tunnel. Tunnels are served at "
            + (f"http(s)://<name>.{domain}/ and at " if domain else "")
            + f"{PATH_MODE_PREFIX}<name>/ on this relay.",
        )

    def _exchange(
        self, claim: Claim, request: protocol.Request, text: str, deadline: float, retry: bool
    ) -> Reply | None:
        """Post the request and wait for its answer; None when ``retry`` and the connection
        was gone (the caller reads the claim afresh)."""
        connection_id = claim.connection_id
        started = self.clock.now()
        self.store.expect_response(request.id, connection_id, request_ids.expires_at(request.id))
        try:
            try:
                self.poster.post(connection_id, text)
            except ConnectionGone:
                self.drop_connection(connection_id)
                self._claims.pop(request.tunnel, None)
                return None if retry else self._agent_gone(request.tunnel, "was already gone")
            except PostFailed as exc:
                return error_reply(
                    502,
                    "relay-post-failed",
                    f"The relay could not hand the request to the agent serving tunnel "
                    f"{request.tunnel!r} ({exc.why}). The API may be throttling the relay's "
                    "messages; try again shortly.",
                )
            answer = self._wait(request, connection_id, deadline)
            if isinstance(answer, Reply):
                return answer
            self._remember_latency(request.tunnel, self.clock.now() - started)
            return self._reply_from(request, claim, answer)
        finally:
            self.store.forget_response(request.id)

    def _remember_latency(self, tunnel: str, seconds: float) -> None:
        if tunnel not in self._latency and len(self._latency) >= MAX_REMEMBERED_TUNNELS:
            self._latency.pop(next(iter(self._latency)))
        previous = self._latency.get(tunnel, seconds)
        self._latency[tunnel] = previous + LATENCY_MEMORY * (seconds - previous)

    def _wait(
        self, request: protocol.Request, connection_id: str, deadline: float
    ) -> bytes | Reply:
        typical = self._latency.get(request.tunnel, 0.0)
        hint = min(FIRST_POLL_FRACTION * typical, MAX_POLL_HINT_SECONDS)
        silence_check: float | None = self.clock.now() + self.config.agent_silence_seconds
        while True:
            now = self.clock.now()
            until = min(deadline, now + max(self.config.liveness_check_seconds, hint))
            if silence_check is not None:
                until = min(until, max(silence_check, now))
            answer = self.store.wait_response(request.id, until, hint)
            hint = 0.0
            if answer is not None:
                return answer
            now = self.clock.now()
            if now >= deadline:
                return error_reply(
                    504,
                    "local-app-timeout",
                    f"The local app behind tunnel {request.tunnel!r} did not answer within "
                    f"{self.config.response_timeout:g} s. The agent is connected and working on "
                    "it; the app may be stuck or slow (the relay cannot wait longer than its "
                    "gateway allows).",
                )
            connection = self.store.get_connection(connection_id)
            if connection is None or not connection.alive(now):
                # The answer may have landed just before the connection went: one last look.
                answer = self.store.wait_response(request.id, now)
                if answer is not None:
                    return answer
                return self._agent_gone(request.tunnel, "disconnected before answering")
            if silence_check is not None and now >= silence_check:
                if not self.store.is_working(request.id):
                    return error_reply(
                        502,
                        "agent-unresponsive",
                        f"The agent serving tunnel {request.tunnel!r} is connected but did not "
                        f"react within {self.config.agent_silence_seconds:g} s (stopped, "
                        "suspended or overloaded). Check the machine it runs on; restart "
                        "`hatchway http` if it is stuck.",
                    )
                silence_check = None

    def _agent_gone(self, tunnel: str, what: str) -> Reply:
        return error_reply(
            502,
            "agent-gone",
            f"The agent serving tunnel {tunnel!r} {what}. It reconnects by itself if it is "
            "still running; otherwise restart `hatchway http`.",
        )

    def _reply_from(self, request: protocol.Request, claim: Claim, answer: bytes) -> Reply:
        try:
            message = codec.response_from_stored(answer)
        except ProtocolError as exc:
            return error_reply(
                502, "agent-bad-response", f"The agent sent a malformed response: {exc}."
            )
        if not isinstance(message, protocol.Response) or message.id != request.id:
            return error_reply(502, "agent-bad-response", "The agent answered something else.")
        if message.fault is not None:
            status = message.status if message.status in FAULT_CODES else 502
            code = FAULT_CODES.get(status) or (
                "local-app-error" if message.fault.side == "local app" else "agent-error"
            )
            return error_reply(
                status,
                code,
                f"The {message.fault.side} failed for tunnel {request.tunnel!r}: "
                f"{message.fault.message}",
            )
        headers = protocol.strip_hop_by_hop(message.headers)
        if request.method == "HEAD":
            # No body follows, so the app's Content-Length is the only place its size shows.
            headers += tuple((n, v) for n, v in message.headers if n.lower() == "content-length")
        if message.uploaded is None:
            return Reply(message.status, headers, message.body)
        return self._uploaded_reply(request, claim, message, headers)

    def _uploaded_reply(
        self,
        request: protocol.Request,
        claim: Claim,
        message: protocol.Response,
        headers: protocol.Headers,
    ) -> Reply:
        """A response whose body the agent put in the blob store."""
        key = f"resp/{request.id}"
        if self.blobs is None:
            return error_reply(502, "agent-bad-response", "The agent uploaded to no blob store.")
        if message.uploaded is not None and message.uploaded > protocol.MAX_BODY_BYTES:
            if claim.large_responses == "redirect":
                location = self.blobs.download_url(key, BLOB_URL_SECONDS)
                return Reply(302, (("location", location), ("cache-control", "no-store")))
            return self._too_large(request.tunnel, message.uploaded)
        try:
            body = self.blobs.get(key, protocol.MAX_BODY_BYTES)
        except BlobTooLarge as exc:
            return self._too_large(request.tunnel, exc.size)
        if body is None or len(body) != message.uploaded:
            return error_reply(
                502,
                "agent-bad-response",
                f"The agent serving tunnel {request.tunnel!r} said it uploaded the response "
                "body, but the relay's blob store does not hold it.",
            )
        return Reply(message.status, headers, body)

    def _too_large(self, tunnel: str, size: int) -> Reply:
        return error_reply(
            413,
            "response-too-large",
            f"The local app behind tunnel {tunnel!r} answered with {size} bytes; the relay "
            f"returns at most {protocol.MAX_BODY_BYTES} bytes through its functions (Lambda's "
            "6 MB limit). Start the tunnel with --large-responses redirect to send larger "
            "responses as a redirect to a short-lived download link.",
        )
