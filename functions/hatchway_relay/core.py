"""The relay's behaviour, free of any transport: agents connect, claim names, answer requests
and manage share links here; visitors' requests go through ``visits.VisitorPath``.

Everything goes through ports (``Store``, ``BlobStore``, ``Poster``, ``Clock``, ``SecretBox``);
the Lambda handlers and the local gateway only translate events into calls on ``Relay``.
Agents' answers do not pass through here: API Gateway stores them (see ``Store``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from hatchway import protocol
from hatchway.protocol import ProtocolError, codec
from hatchway_relay import admin, hostnames, names, request_ids, shares, tokens
from hatchway_relay.config import RelayConfig
from hatchway_relay.metrics import COUNT, Metrics, NoMetrics
from hatchway_relay.ports import (
    TOKEN_USE_RESOLUTION_SECONDS,
    BlobStore,
    Claim,
    Clock,
    ConnectionGone,
    ConnectionRecord,
    PlainSecretBox,
    PoolMember,
    Poster,
    PostFailed,
    SecretBox,
    ShareRecord,
    SocketPoster,
    Store,
    TokenLimits,
    TokenRecord,
    TunnelReport,
    pool_options,
)
from hatchway_relay.replies import Reply, Route, Visit, error_reply
from hatchway_relay.sockets import VisitorSockets
from hatchway_relay.visits import PATH_MODE_PREFIX, VisitorPath

__all__ = [
    "PATH_MODE_PREFIX",
    "Relay",
    "RelayConfig",
    "Reply",
    "Route",
    "Visit",
    "error_reply",
]

log = logging.getLogger("hatchway.relay")

STREAMS_UNAVAILABLE = (
    "this relay runs behind API Gateway's HTTP API, which buffers every Lambda response, so it "
    "cannot pass a response on as the app writes it: start the tunnel without --stream "
    "(responses then arrive whole, within 28 s), or use hatchway-local, which streams"
)
"""Why a relay on AWS refuses a tunnel that asks to stream (``--stream``)."""

SOCKET_MESSAGES = (protocol.SocketFrame, protocol.SocketClose, protocol.SocketMove)
"""What an agent sends about visitors' sockets (``sockets``)."""

RANDOM_NAME_ATTEMPTS = 8
"""Tries at a fresh random name before giving up (collisions are rare: ~26 bits each)."""


def _describe(options: tuple[str, ...]) -> str:
    """``pool_options`` in words, for a refusal."""
    basic_auth, webhook, large_responses, access, no_gzip, stream = options
    words = [
        "a password" if basic_auth else "",
        f"{webhook} webhook checks" if webhook else "",
        f"--large-responses {large_responses}" if large_responses != "refuse" else "",
        f"access rules {access}" if access else "",
        "--no-gzip" if no_gzip else "",
        "--stream" if stream else "",
    ]
    return ", ".join(w for w in words if w) or "no password, webhook or access rules"


def tunnel_reports(ping: protocol.Ping) -> dict[str, TunnelReport]:
    """What a ping says about each tunnel it mentions (its served count, errors and latency),
    to be stored with the claims the ping renews."""
    served, health = dict(ping.served), dict(ping.health)
    reports = {}
    for name in served.keys() | health.keys():
        report = health.get(name, protocol.TunnelHealth())
        reports[name] = TunnelReport(
            served.get(name, 0), report.errors, report.p50_ms, report.p95_ms
        )
    return reports


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
        sockets: SocketPoster | None = None,
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
        self.visitors = VisitorPath(self)
        self.sockets = VisitorSockets(self, sockets) if sockets is not None else None
        """Visitors' WebSockets; None where the relay has no visitor-socket API to post to."""

    @property
    def key(self) -> bytes:
        """The relay's key (one read per cold start; see ``request_ids``)."""
        if self._key is None:
            self._key = self.store.relay_key()
        return self._key

    # --- Tokens -------------------------------------------------------------------------------

    def add_token(
        self,
        token: str,
        label: str = "",
        reserved: tuple[str, ...] = (),
        limits: TokenLimits | None = None,
    ) -> TokenRecord:
        return admin.register_token(self.store, token, label, reserved, self.clock.now(), limits)

    def authorize(self, token: str | None) -> TokenRecord | None:
        """The token's record if the token is known, else None."""
        if not token:
            return None
        record = self.store.get_token(tokens.hash_token(token))
        if record is None or not tokens.hashes_match(record.token_hash, token):
            return None
        return record

    def admit(self, token: str | None) -> TokenRecord | None:
        """An agent connecting: the token's record if the token is known (``authorize``), and
        the token's ``last_used`` moved to now when it is older than
        ``TOKEN_USE_RESOLUTION_SECONDS`` (one small write per connection at most, and
        connections are rare next to requests)."""
        record = self.authorize(token)
        now = self.clock.now()
        if record is not None and now - record.last_used >= TOKEN_USE_RESOLUTION_SECONDS:
            try:
                self.store.note_token_use(record.token_hash, now)
            except Exception:
                # Bookkeeping only: an agent is never refused because its time was not noted.
                log.warning("could not note the use of token %s", record.token_id, exc_info=True)
        return record

    # --- Agent connections --------------------------------------------------------------------

    def connect(self, connection_id: str, token: str | None, source_ip: str = "") -> bool:
        """``$connect``: accept the connection only with a known token."""
        record = self.admit(token)
        if record is None:
            log.info("connection %s refused: unknown token", request_ids.log_id(connection_id))
            return False
        self.register_connection(connection_id, record.token_id, source_ip, record.limits)
        return True

    def register_connection(
        self,
        connection_id: str,
        token_id: str,
        source_ip: str = "",
        limits: TokenLimits | None = None,
    ) -> None:
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
                limits=limits or TokenLimits(),
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
        if self.sockets is not None:  # while the connection still lists its sockets
            self.sockets.agent_gone(connection_id)
        admin.forget_connection(self.store, connection_id)
        log.info("connection %s dropped", request_ids.log_id(connection_id))

    def on_message(self, connection_id: str, text: str) -> None:
        """``$default``: one WebSocket message from an agent. Answers and "working" marks never
        come here: API Gateway routes them by type to the integration that stores them."""
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
        if isinstance(message, protocol.Hello):
            self._hello(connection_id, message)
        elif isinstance(message, protocol.Ping):
            self._ping(connection_id, message)
        elif isinstance(message, protocol.ShareOp):
            self._share_op(connection_id, message)
        elif isinstance(message, protocol.Chunk) and self.config.streams:
            self.store.put_chunk(message.id, connection_id, message.seq, text.encode())
        elif isinstance(message, protocol.Leaving):
            self._leave(connection_id)
        elif isinstance(message, SOCKET_MESSAGES) and self.sockets is not None:
            self.sockets.from_agent(connection_id, message)
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
        most = connection.limits.max_tunnels
        if most and len(hello.tunnels) > most:
            self._send(
                connection_id,
                protocol.Error(
                    "name_taken",
                    f"this token may serve at most {most} tunnel{'s' if most != 1 else ''} at "
                    "once (the relay's operator "
                    f"set it); the hello asks for {len(hello.tunnels)}",
                ),
            )
            return
        if not self.config.streams and any(spec.stream for spec in hello.tunnels):
            self._send(connection_id, protocol.Error("stream_unavailable", STREAMS_UNAVAILABLE))
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
            claim = self._join if spec.pool else self._claim
            name = claim(connection, spec, now, hello.instance)
            if name is None:
                for done in granted:
                    self.store.release_claim(done, connection_id)
                wanted = spec.name or "a random name"
                self._send(
                    connection_id,
                    protocol.Error(
                        "name_taken",
                        f"tunnel name {wanted!r} {self._why_taken(spec, connection.token_id)}; "
                        "pick another --subdomain or stop the agent that holds it",
                    ),
                )
                return
            granted.append(name)
        # Names this connection held before but did not ask for again are released.
        for old in set(connection.names) - set(granted):
            self.store.release_claim(old, connection_id)
        pooled = tuple(n for n, spec in zip(granted, hello.tunnels, strict=True) if spec.pool)
        self.store.set_connection_names(connection_id, tuple(granted), pooled)
        # One read per pooled name, so each member's welcome says how many serve it.
        pools = {n: self.store.get_claim(n) for n in pooled}
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
                **self._pool_info(pools.get(n), connection_id, now),
            )
            for n, spec in zip(granted, hello.tunnels, strict=True)
        )
        log.info("connection %s serves %s", request_ids.log_id(connection_id), ", ".join(granted))
        self._send(
            connection_id,
            protocol.Welcome(infos, self.config.heartbeat_seconds, now=self.clock.now()),
        )

    @staticmethod
    def _pool_info(claim: Claim | None, connection_id: str, now: float) -> dict[str, Any]:
        """A pooled tunnel's size (its live members, this one included) and age."""
        if claim is None or not claim.pool:
            return {}
        live = set(claim.holders(now)) | {connection_id}
        return {
            "pool_size": min(len(live), protocol.MAX_POOL_MEMBERS),
            "pooled_since": claim.pooled_since,
        }

    def _claimable(self, name: str, token_id: str) -> bool:
        """Whether the token may hold ``name`` at all (reservations, custom hostnames)."""
        reserved_by = self.store.get_reservation(name)
        if reserved_by is not None and reserved_by != token_id:
            return False
        # A custom hostname's traffic only ever reaches the token its tunnel is reserved for:
        # an unreserved name would hand it to whoever claims first.
        return reserved_by is not None or name not in self._hostname_tunnels

    def _spec_claim(
        self, connection: ConnectionRecord, spec: protocol.TunnelSpec, name: str, lease: float
    ) -> Claim:
        """The claim ``spec`` asks for, held by ``connection`` alone."""
        return Claim(
            name,
            connection.connection_id,
            connection.token_id,
            lease,
            basic_auth=spec.basic_auth or "",
            webhook=spec.webhook or "",
            webhook_secret=self.secrets.seal(spec.webhook_secret or ""),
            large_responses=spec.large_responses,
            gzip=spec.gzip,
            stream=spec.stream,
            access=spec.access,
            token_limits=connection.limits,
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
            if not self._claimable(name, connection.token_id):
                continue
            claim = replace(self._spec_claim(connection, spec, name, lease), instance=instance)
            if self.store.claim_name(claim, now):
                return name
            # Held by another agent. If it is dead (a $disconnect that never came), take the
            # name over — conditionally, so a live re-claim in between still wins.
            held = self.store.get_claim(name)
            if held is None:
                continue
            if held.pool:
                if self._prune(held, now) == len(held.members) and self.store.claim_name(
                    claim, now
                ):
                    return name
                continue
            holder = self.store.get_connection(held.connection_id)
            if (holder is None or not holder.alive(now)) and self.store.claim_name(
                claim, now, takeover_from=held.connection_id
            ):
                return name
        return None

    def _join(
        self, connection: ConnectionRecord, spec: protocol.TunnelSpec, now: float, instance: str
    ) -> str | None:
        """Join (or begin) the pool serving ``spec.name``; None if the name is held otherwise:
        by another token, by one agent that did not ask for a pool, or by a pool started with
        other options. Dead holders and dead members are cleared out of the way first."""
        name = spec.name
        assert name is not None, "TunnelSpec refuses a pool without a name"
        if not self._claimable(name, connection.token_id):
            return None
        lease = now + self.config.claim_lease_seconds
        member = PoolMember(
            connection.connection_id, instance, now, lease, source_ip=connection.source_ip
        )
        claim = replace(
            self._spec_claim(connection, spec, name, lease),
            connection_id="",
            pool=True,
            members=(member,),
            pooled_since=now,
        )
        if self.store.join_pool(claim, now):
            return name
        held = self.store.get_claim(name)
        if held is None:
            joined = self.store.join_pool(claim, now)
        elif held.pool:
            joined = self._prune(held, now) > 0 and self.store.join_pool(claim, now)
        else:
            holder = self.store.get_connection(held.connection_id)
            joined = (holder is None or not holder.alive(now)) and self.store.join_pool(
                claim, now, takeover_from=held.connection_id
            )
        return name if joined else None

    def _prune(self, pool: Claim, now: float) -> int:
        """Remove the pool's members whose lease ran out or whose connection is gone (their
        $disconnect never came); how many were removed. Only a refused hello pays these reads."""
        removed = 0
        for member in pool.members:
            connection = self.store.get_connection(member.connection_id)
            if (
                not member.alive(now) or connection is None or not connection.alive(now)
            ) and self.store.release_claim(pool.name, member.connection_id):
                removed += 1
        return removed

    def _why_taken(self, spec: protocol.TunnelSpec, token_id: str) -> str:
        """Why the name in ``spec`` could not be granted, and what to do about it."""
        reserved_by = self.store.get_reservation(spec.name) if spec.name else None
        served = hostnames.hostnames_of(spec.name or "", self.config.custom_hostnames)
        if reserved_by not in (None, token_id):
            return "is reserved for another token"
        if served and reserved_by is None:
            return (
                f"serves {', '.join(served)}, so it must first be reserved for your "
                f"token: hatchway-admin reserve {spec.name} --token-id <your token id>"
            )
        held = self.store.get_claim(spec.name) if spec.name else None
        if held is None or held.token_id != token_id:
            # A pool never takes agents of another token.
            return "is held by another token"
        if held.pool and not spec.pool:
            return (
                f"is served by a pool of {len(held.members)} agent(s) using your token; start "
                "this agent with --pool to join it"
            )
        if held.pool and len(held.members) >= protocol.MAX_POOL_MEMBERS:
            return f"is served by a full pool ({protocol.MAX_POOL_MEMBERS} agents at most)"
        if held.pool:
            asked = self._spec_claim_options(spec)
            return (
                f"is served by a pool whose agents were started with other options (the pool: "
                f"{_describe(pool_options(held))}; this agent: {_describe(asked)}); start every "
                "member with the same password, webhook, address rules, rate limit, "
                "--large-responses, --no-gzip and --stream"
            )
        if spec.pool:
            return (
                "is served by another agent using your token that was started without --pool, "
                "so it does not share the name; restart that agent with --pool (or stop it)"
            )
        return (
            "is served by another agent using your token; stop that agent first (a restarted "
            "agent takes its names back once the old one is gone), or start both with --pool "
            "to share the name"
        )

    @staticmethod
    def _spec_claim_options(spec: protocol.TunnelSpec) -> tuple[str, ...]:
        return pool_options(
            Claim(
                "",
                "",
                "",
                0.0,
                basic_auth=spec.basic_auth or "",
                webhook=spec.webhook or "",
                large_responses=spec.large_responses,
                gzip=spec.gzip,
                stream=spec.stream,
                access=spec.access,
            )
        )

    def _ping(self, connection_id: str, ping: protocol.Ping) -> None:
        connection = self.store.get_connection(connection_id)
        if connection is None:
            # Revoked by the operator, or lost: the agent reconnects, and learns which.
            self._send(connection_id, protocol.Error("not_connected", "connection is not known"))
            return
        lease = self.clock.now() + self.config.claim_lease_seconds
        reports = tunnel_reports(ping)
        lost: list[str] = []
        pools: list[tuple[str, int]] = []
        for name in connection.names:
            if name in connection.pooled:
                # A member renews its own lease; the write returns the pool's size.
                size = self.store.renew_member(name, connection_id, lease, reports.get(name))
                if size:
                    pools.append((name, min(size, protocol.MAX_POOL_MEMBERS)))
                    continue
            elif self.store.renew_claim(name, connection_id, lease, reports.get(name)):
                continue
            lost.append(name)
        self.metrics.add("ActiveTunnels", len(connection.names) - len(lost), COUNT)
        self._send(connection_id, protocol.Pong(ping.ts, tuple(pools)))
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

    def _leave(self, connection_id: str) -> None:
        """The connection's agent is stopping: no new request goes to it. A pool member leaves
        its pools at once; a name it serves alone stays claimed, marked as left, for
        ``restart_hold_seconds``, while visitors wait for an agent of the same token to claim
        it again (a restart). Answers to what it holds still land (they are keyed by request
        and connection, not by claim). Its names are forgotten first-hand, so that its pings
        and its ``$disconnect`` no longer touch them."""
        connection = self.store.get_connection(connection_id)
        if connection is None:
            return  # forgotten already: nothing routes to it
        now = self.clock.now()
        hold_until = now + self.config.restart_hold_seconds
        for name in connection.names:
            self.store.leave_claim(name, connection_id, now, hold_until)
        self.store.set_connection_names(connection_id, ())
        log.info(
            "connection %s is leaving %s",
            request_ids.log_id(connection_id),
            ", ".join(connection.names) or "no names",
        )

    def _share_op(self, connection_id: str, op: protocol.ShareOp) -> None:
        """Create, list or revoke share links; a token manages links for its own tunnels only
        (one it holds now or has reserved)."""
        connection = self.store.get_connection(connection_id)
        now = self.clock.now()
        if connection is None or not connection.alive(now):
            self._send(connection_id, protocol.Error("not_connected", "connection is not known"))
            return
        token_id = connection.token_id
        link = ""
        if op.op == "create":
            held = self.store.get_claim(op.tunnel)
            if (held is None or held.token_id != token_id) and self.store.get_reservation(
                op.tunnel
            ) != token_id:
                self._send(
                    connection_id,
                    protocol.Error(
                        "share_refused",
                        f"tunnel {op.tunnel!r} is not yours: start it (or reserve its name) "
                        "with this token first",
                    ),
                )
                return
            share_id, secret = shares.new_secret()
            record = ShareRecord(
                share_id=share_id,
                token_id=token_id,
                tunnel=op.tunnel,
                secret_hash=shares.hash_secret(secret),
                methods=tuple(m.upper() for m in op.methods),
                path=op.path,
                expires_at=now + op.expires_in,
                max_uses=op.max_uses,
            )
            self.store.put_share(record)
            base = (self.config.subdomain_url or self.config.path_url).format(name=op.tunnel)
            link = f"{base.rstrip('/')}{op.path}?{shares.PARAMETER}={share_id}.{secret}"
            listed = [record]
        elif op.op == "revoke":
            if not self.store.revoke_share(op.share_id, token_id):
                self._send(
                    connection_id,
                    protocol.Error("share_refused", f"no share link {op.share_id!r} of yours"),
                )
                return
            revoked = self.store.get_share(op.share_id)
            listed = [revoked] if revoked else []
        else:
            listed = [
                r
                for r in self.store.list_shares(token_id)
                if not op.tunnel or r.tunnel == op.tunnel
            ]
            listed.sort(key=lambda r: r.expires_at)
        infos = tuple(shares.info(r) for r in listed[-protocol.MAX_SHARES_LISTED :])
        self._send(connection_id, protocol.ShareReply(infos, link))

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
        return self.visitors.visit(visit)
