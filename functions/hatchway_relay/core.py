"""The relay's behaviour, free of any transport: agents connect and claim names, visitors'
requests are routed to the agent holding the name, and its response frames are handed back.

Everything goes through three ports (``Store``, ``Poster``, ``Clock``); the Lambda handlers and
the local gateway only translate events into calls on ``Relay``. Errors a visitor sees say which
side failed: the visitor, the relay, the agent, or the local app behind it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from hatchway import protocol
from hatchway.protocol import ProtocolError
from hatchway_relay import admin, guards, hostnames, names, tokens
from hatchway_relay.metrics import COUNT, Metrics, NoMetrics
from hatchway_relay.ports import (
    Claim,
    Clock,
    ConnectionGone,
    ConnectionRecord,
    Poster,
    Store,
    StoredFrame,
    TokenRecord,
)

log = logging.getLogger("hatchway.relay")

PATH_MODE_PREFIX = "/t/"
"""Path-mode tunnels live under ``/t/<name>/`` on the relay's bare URL (no domain needed)."""

LIVENESS_CHECK_SECONDS = 0.5
"""How often a waiting visitor request checks that its agent is still connected."""

PENDING_GRACE_SECONDS = 5.0
"""Pending requests outlive the response deadline by this much, for late frames to be refused
cleanly rather than racing the cleanup."""

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
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
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
    ) -> None:
        self.store = store
        self.poster = poster
        self.clock = clock
        self.config = config
        self.metrics = metrics or NoMetrics()
        self._hostname_tunnels = frozenset(config.custom_hostnames.values())

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
            log.info("connection %s refused: unknown token", connection_id)
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
        log.info("agent connected: connection %s, token %s", connection_id, token_id)

    def disconnect(self, connection_id: str) -> None:
        """``$disconnect`` (best effort: 410s and expiry checks clean up when it never comes)."""
        self.drop_connection(connection_id)

    def drop_connection(self, connection_id: str) -> None:
        """Forget one connection and release exactly the names it holds — nobody else's.

        Every cleanup goes through here: ``$disconnect``, a 410 from the poster, a dead agent
        found by a waiting request.
        """
        admin.forget_connection(self.store, connection_id)
        log.info("connection %s dropped", connection_id)

    def on_message(self, connection_id: str, text: str) -> None:
        """``$default``: one WebSocket message from an agent."""
        try:
            frame = protocol.decode(text)
        except ProtocolError as exc:
            log.warning("bad frame from connection %s: %s", connection_id, exc)
            self._send(connection_id, protocol.Error("bad_frame", f"relay refused a frame: {exc}"))
            return
        if isinstance(frame, protocol.Part):
            self._accept_response_part(connection_id, frame, text)
        elif isinstance(frame, protocol.Hello):
            self._hello(connection_id, frame)
        elif isinstance(frame, protocol.Ping):
            self._ping(connection_id, frame)
        else:
            self._send(
                connection_id,
                protocol.Error("unexpected", f"agents do not send {type(frame).__name__} messages"),
            )

    def _hello(self, connection_id: str, hello: protocol.Hello) -> None:
        connection = self.store.get_connection(connection_id)
        now = self.clock.now()
        if connection is None or not connection.alive(now):
            self._send(connection_id, protocol.Error("not_connected", "connection is not known"))
            return
        granted: list[str] = []
        for spec in hello.tunnels:
            name = self._claim(connection, spec, now)
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
        log.info("connection %s serves %s", connection_id, ", ".join(granted))
        self._send(connection_id, protocol.Welcome(infos, self.config.heartbeat_seconds))

    def _claim(
        self, connection: ConnectionRecord, spec: protocol.TunnelSpec, now: float
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
                webhook_secret=spec.webhook_secret or "",
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

    def _ping(self, connection_id: str, ping: protocol.Ping) -> None:
        connection = self.store.get_connection(connection_id)
        if connection is None:
            # Revoked by the operator, or lost: the agent reconnects, and learns which.
            self._send(connection_id, protocol.Error("not_connected", "connection is not known"))
            return
        lease = self.clock.now() + self.config.claim_lease_seconds
        for name in connection.names:
            self.store.renew_claim(name, connection_id, lease)
        self.metrics.add("ActiveTunnels", len(connection.names), COUNT)
        self._send(connection_id, protocol.Pong(ping.ts))

    def _accept_response_part(self, connection_id: str, part: protocol.Part, text: str) -> None:
        if part.kind != "response":
            self._send(connection_id, protocol.Error("unexpected", "agents do not send requests"))
            return
        stored = self.store.add_response_frame(
            part.id, connection_id, StoredFrame(part.index, part.count, text), self.clock.now()
        )
        if not stored:
            # Not this connection's request, already answered, timed out, or a repeated part.
            log.warning("dropped response part %s/%s from %s", part.id, part.index, connection_id)

    def _send(self, connection_id: str, message: protocol.Message) -> None:
        """Best-effort message to an agent; a gone connection is cleaned up."""
        try:
            for frame in protocol.encode(message):
                self.poster.post(connection_id, frame)
        except ConnectionGone:
            self.drop_connection(connection_id)

    # --- Visitors -----------------------------------------------------------------------------

    def visit(self, visit: Visit) -> Reply:
        """Serve one visitor request through the agent that holds the tunnel's name."""
        routed = self._route(visit)
        if isinstance(routed, Reply):
            return routed
        name, path = routed
        now = self.clock.now()
        claim = self.store.get_claim(name)
        if claim is None or not claim.alive(now):
            return error_reply(
                404,
                "tunnel-not-found",
                f"No tunnel named {name!r} is connected to this relay. If it is yours, start it "
                f"with: hatchway http <port> --subdomain {name}",
            )
        refusal = guards.check(claim, visit.headers, visit.body, now)
        if refusal is not None:  # basic auth or webhook signature: never reaches the agent
            return error_reply(refusal.status, refusal.code, refusal.message, refusal.headers)
        try:
            request = protocol.Request(
                id=uuid.uuid4().hex,
                tunnel=name,
                method=visit.method.upper(),
                path=path,
                query=visit.query,
                headers=guards.forwarded_headers(claim, protocol.strip_hop_by_hop(visit.headers)),
                body=visit.body,
            )
            frames = protocol.encode(request)
        except ProtocolError as exc:
            message = f"The visitor's request was refused: {exc}."
            return error_reply(exc.status, "bad-request", message)
        self.store.count_served(name, claim.connection_id)
        return self._exchange(claim.connection_id, request, frames)

    def _route(self, visit: Visit) -> tuple[str, str] | Reply:
        """The tunnel name and the path to forward, from the Host (a custom hostname, or
        subdomain mode) or the path."""
        host = visit.host.lower().rsplit(":", 1)[0] if "]" not in visit.host else visit.host
        tunnel = self.config.custom_hostnames.get(host)
        if tunnel is not None:
            return tunnel, visit.path
        domain = (self.config.domain or "").lower()
        if domain and host.endswith("." + domain):
            label = host[: -len(domain) - 1]
            if "." not in label and protocol.NAME_PATTERN.match(label):
                return label, visit.path
        if visit.path.startswith(PATH_MODE_PREFIX):
            name, slash, rest = visit.path[len(PATH_MODE_PREFIX) :].partition("/")
            if protocol.NAME_PATTERN.match(name):
                if not slash:
                    # /t/name → /t/name/ so that the app's relative links resolve under it.
                    location = visit.path + "/" + ("?" + visit.query if visit.query else "")
                    return Reply(308, (("location", location),))
                return name, "/" + rest
        return error_reply(
            404,
            "no-tunnel-in-url",
            "This address names no tunnel. Tunnels are served at "
            + (f"http(s)://<name>.{domain}/ and at " if domain else "")
            + f"{PATH_MODE_PREFIX}<name>/ on this relay.",
        )

    def _exchange(self, connection_id: str, request: protocol.Request, frames: list[str]) -> Reply:
        started = self.clock.now()
        deadline = started + self.config.response_timeout
        self.store.put_pending(request.id, connection_id, deadline + PENDING_GRACE_SECONDS)
        try:
            try:
                for frame in frames:
                    self.poster.post(connection_id, frame)
            except ConnectionGone:
                self.drop_connection(connection_id)
                return self._agent_gone(request.tunnel, "was already gone")
            stored = self._wait(request, connection_id, deadline)
            if isinstance(stored, Reply):
                return stored
            return self._reply_from(request, stored)
        finally:
            self.store.delete_request(request.id)

    def _wait(
        self, request: protocol.Request, connection_id: str, deadline: float
    ) -> list[StoredFrame] | Reply:
        while True:
            now = self.clock.now()
            until = min(deadline, now + self.config.liveness_check_seconds)
            stored = self.store.wait_response(request.id, until)
            if stored is not None:
                return stored
            now = self.clock.now()
            if now >= deadline:
                return error_reply(
                    504,
                    "local-app-timeout",
                    f"The local app behind tunnel {request.tunnel!r} did not answer within "
                    f"{self.config.response_timeout:g} s. The agent is connected; the app may be "
                    "stuck or slow (the relay cannot wait longer than its gateway allows).",
                )
            connection = self.store.get_connection(connection_id)
            if connection is None or not connection.alive(now):
                return self._agent_gone(request.tunnel, "disconnected before answering")

    def _agent_gone(self, tunnel: str, what: str) -> Reply:
        return error_reply(
            502,
            "agent-gone",
            f"The agent serving tunnel {tunnel!r} {what}. It reconnects by itself if it is "
            "still running; otherwise restart `hatchway http`.",
        )

    def _reply_from(self, request: protocol.Request, stored: list[StoredFrame]) -> Reply:
        try:
            message = protocol.assemble(
                part
                for part in map(protocol.decode, (f.text for f in stored))
                if isinstance(part, protocol.Part)
            )
        except ProtocolError as exc:
            return error_reply(
                502, "agent-bad-response", f"The agent sent a malformed response: {exc}."
            )
        if not isinstance(message, protocol.Response):
            return error_reply(502, "agent-bad-response", "The agent answered with a request.")
        if message.fault is not None:
            code = "local-app-error" if message.fault.side == "local app" else "agent-error"
            return error_reply(
                502,
                code,
                f"The {message.fault.side} failed for tunnel {request.tunnel!r}: "
                f"{message.fault.message}",
            )
        return Reply(message.status, protocol.strip_hop_by_hop(message.headers), message.body)
