"""The visitor's path through the relay: route a request to the agent holding the tunnel's
name, check who may reach it, post one request message, wait for the one stored answer, and
turn it into the visitor's reply (``answers``).

One visitor request costs, on AWS: one ``@connections`` post (the request message), one
WebSocket message back (the answer, which API Gateway's answer integration stores with one
write, no Lambda), and the waiter's looks at that one item. Nothing on the path deletes from
DynamoDB (TTL does, for free) and nothing counts per request (pings carry the counts). Bodies
too large for a message go through the blob store, and are deleted there once used (free on
S3). Errors a visitor sees say which side failed.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Generator
from dataclasses import replace
from typing import Protocol, TypeVar

from hatchway import protocol
from hatchway.protocol import ProtocolError, codec
from hatchway_relay import access, guards, path_mode, request_ids, restarts, shares, sockets
from hatchway_relay.answers import BLOB_URL_SECONDS, AnswerReader, forget_blob
from hatchway_relay.config import RelayConfig
from hatchway_relay.ports import (
    BlobStore,
    Claim,
    Clock,
    ConnectionGone,
    Poster,
    PostFailed,
    SecretBox,
    ShareRecord,
    Store,
)
from hatchway_relay.replies import (
    AgentReply,
    Reply,
    Route,
    StreamedReply,
    Visit,
    error_reply,
)
from hatchway_relay.replies import AwaitAnswer as AwaitAnswer  # what the gateway's steps await

log = logging.getLogger("hatchway.relay")


class RelayParts(Protocol):
    """What the visitor path uses of the relay (``core.Relay``, which owns it): the ports, the
    settings and the key, and the one cleanup every gone connection goes through."""

    store: Store
    poster: Poster
    clock: Clock
    config: RelayConfig
    blobs: BlobStore | None
    secrets: SecretBox

    @property
    def key(self) -> bytes: ...

    def drop_connection(self, connection_id: str) -> None: ...


PATH_MODE_PREFIX = "/t/"
"""Path-mode tunnels live under ``/t/<name>/`` on the relay's bare URL (no domain needed)."""

ANSWER_GRACE_SECONDS = 5.0
"""A request id accepts answers this long past the visitor's deadline, so that a late answer is
refused cleanly (and told to the agent) rather than racing the waiter's end."""

CLEANUP_MARGIN_SECONDS = 1.0
"""Time the HTTP function keeps for itself after waiting: building the reply and its log lines
must finish inside the function's timeout."""

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
gone connection makes the relay read the claim afresh and try once more (in a pool, hand the
request to another member). Guards changed by a new hello, or a revoked token, take effect
within this long."""

UNCOUNTED = frozenset({"tunnel-not-found", "no-tunnel-in-url"})
"""Coded answers that name no live tunnel: nothing to count them under."""

MAX_POSTS_PER_VISIT = 4
"""Connections one visitor request is posted to at most. Each post that finds its connection
gone removes that connection (and its pool membership) before the next try, so only members
that vanished within the claim cache's second are ever tried; a burst of them beyond this many
answers 502 agent-gone rather than looping."""


VisitSteps = Generator[AwaitAnswer, bytes | None, Reply]
"""A visit as steps: it yields each wait, is sent back what the wait found (the answer, or None
when there is none yet), and returns the visitor's reply. The relay's code is the same whoever
waits: ``run_blocking`` blocks a thread on the store (Lambda, DynamoDB), and the local gateway
awaits its memory store on its event loop instead of parking a thread per visitor."""


Result = TypeVar("Result")


def run_blocking(steps: Generator[AwaitAnswer, bytes | None, Result], store: Store) -> Result:
    """Drive ``steps`` to its end, each wait a blocking ``store.wait_response``. A wait that
    fails (the store throttled it beyond the SDK's retries) is raised inside the steps, where
    the visit decides what it means."""
    answer: bytes | None = None
    failed: Exception | None = None
    try:
        while True:
            wait = steps.send(answer) if failed is None else steps.throw(failed)
            try:
                answer, failed = store.wait_response(wait.request_id, wait.until, wait.hint), None
            except Exception as exc:
                answer, failed = None, exc
    except StopIteration as done:
        result: Result = done.value
        return result


THROTTLED_BY = {
    "ProvisionedThroughputExceededException": "store (DynamoDB)",
    "ThrottlingException": "store (DynamoDB)",
    "RequestLimitExceeded": "store (DynamoDB)",
    "SlowDown": "blob store (S3)",
}
"""Error codes AWS answers a call with when it sheds load, and which of the relay's stores
said so (the SDK retried them first)."""

STORE_RETRY_AFTER_SECONDS = 1
"""What a visitor refused for a throttled store is told to wait before trying again."""

THROTTLE_PAUSE_SECONDS = 0.2
"""How long a wait for an answer pauses after a throttled look before it looks again."""


def throttled_store(exc: BaseException) -> str | None:
    """Which of the relay's stores refused a call for load (the SDK's error carries AWS's
    code), or None for any other failure."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    return THROTTLED_BY.get(code) if isinstance(code, str) else None


class VisitorPath:
    """The visitor-facing half of ``Relay`` (which owns the ports and the agent-facing half).
    Keeps a warm function's short memories: claims, response times, rate-limit buckets."""

    def __init__(self, relay: RelayParts) -> None:
        self.relay = relay
        self.answers = AnswerReader(relay)
        self._latency: dict[str, float] = {}
        self._claims: dict[str, tuple[float, Claim]] = {}
        self._limiter = access.RateLimiter()
        self._daily = access.DailyCounter()
        self._limiter_lock = threading.Lock()
        # Pool balancing: the requests this function waits on, per connection, and a turn per
        # tunnel for breaking ties (see ``_choose``).
        self._outstanding: dict[str, int] = {}
        self._turns: dict[str, int] = {}
        self._routing_lock = threading.Lock()
        # What this function answered itself, per tunnel, not yet added to its claim; and when
        # it last added them (``_count_refusal``).
        self._refusals: dict[str, dict[str, int]] = {}
        self._refusals_flushed: dict[str, float] = {}
        self._refusals_lock = threading.Lock()

    def visit(self, visit: Visit) -> Reply:
        """Serve one visitor request through the agent that holds the tunnel's name."""
        return run_blocking(self.visit_steps(visit), self.relay.store)

    def visit_steps(self, visit: Visit) -> VisitSteps:
        """``visit`` as steps (``VisitSteps``), for a caller that waits in its own way. A
        store that throttles beyond the SDK's retries gets the visitor a coded 503 that says
        so, never the gateway's bare 500 (once the request went to the agent, the wait rides
        a throttled look out instead: the visitor must not be told "failed" while the app
        may still run it)."""
        try:
            return (yield from self._visit_steps(visit))
        except Exception as exc:
            store = throttled_store(exc)
            if store is None:
                raise
            log.warning("the relay's %s is throttling: %s", store, exc)
            return error_reply(
                503,
                "relay-store-busy",
                f"The relay's {store} is refusing calls for load right now (throttled); the "
                f"request did not reach the tunnel. Try again in {STORE_RETRY_AFTER_SECONDS} s.",
                (("retry-after", str(STORE_RETRY_AFTER_SECONDS)),),
            )

    def _visit_steps(self, visit: Visit) -> VisitSteps:
        route = self._route(visit)
        if isinstance(route, Reply):
            return route
        reply = yield from self._tunnel_steps(visit, route)
        code = next((v for k, v in reply.headers if k == "x-hatchway-error"), None)
        if code in UNCOUNTED or isinstance(reply, AgentReply):
            code = None
        if code is not None or route.name in self._refusals:
            self._count_refusal(route.name, code)
        return reply

    def _count_refusal(self, tunnel: str, code: str | None) -> None:
        """One more visitor the relay answered itself for ``tunnel`` (``code``; None: only a
        look whether the tunnel's pending counts are due), added to its claim with the others
        of the last ``refusal_flush_seconds`` in one write."""
        now = self.relay.clock.now()
        with self._refusals_lock:
            pending = self._refusals.setdefault(tunnel, {})
            if code is not None:
                pending[code] = pending.get(code, 0) + 1
            last = self._refusals_flushed.get(tunnel, 0.0)
            if not pending or now - last < self.relay.config.refusal_flush_seconds:
                return
            if tunnel not in self._refusals_flushed and (
                len(self._refusals_flushed) >= MAX_REMEMBERED_TUNNELS
            ):
                self._refusals_flushed.pop(next(iter(self._refusals_flushed)))
            self._refusals_flushed[tunnel] = now
            counts = self._refusals.pop(tunnel)
        try:
            self.relay.store.count_refusals(tunnel, counts)
        except Exception as exc:  # a count is never worth a visitor's answer
            log.warning("could not count refusals for %s: %s", tunnel, exc)

    def _tunnel_steps(self, visit: Visit, route: Route) -> VisitSteps:
        # None: the request's connection was gone. A remembered claim may be stale (the name
        # moved on with a reconnect): the next try reads it afresh; a pool's next try goes to
        # another member. ``tried`` holds the connections found gone.
        tried: list[str] = []
        for _ in range(MAX_POSTS_PER_VISIT):
            reply = yield from self._visit(visit, route, tried)
            if reply is not None:
                return reply
        return self._agent_gone(route.name, "was already gone")

    def _claim_of(self, name: str, now: float) -> tuple[Claim | None, bool]:
        """The claim of ``name``, and whether it came from this relay's short memory."""
        remembered = self._claims.get(name)
        if remembered is not None and now - remembered[0] < CLAIM_CACHE_SECONDS:
            return remembered[1], True
        claim = self.relay.store.get_claim(name)
        if name not in self._claims and len(self._claims) >= MAX_REMEMBERED_TUNNELS:
            self._claims.pop(next(iter(self._claims)))
        if claim is None:
            self._claims.pop(name, None)
        else:
            self._claims[name] = (now, claim)
        return claim, False

    def _visit(
        self, visit: Visit, route: Route, tried: list[str]
    ) -> Generator[AwaitAnswer, bytes | None, Reply | None]:
        name = route.name
        now = self.relay.clock.now()
        claim, remembered = self._claim_of(name, now)
        if claim is not None and claim.leaving(now):  # its agent stopped: a restart may come
            held = yield from restarts.hold(self.relay, claim, self._deadline(visit, now))
            if isinstance(held, Reply):
                return held
            self._claims.pop(name, None)
            claim, remembered, now = held, False, self.relay.clock.now()
        if claim is None or not claim.alive(now):
            return error_reply(
                404,
                "tunnel-not-found",
                f"No tunnel named {name!r} is connected to this relay. If it is yours, start it "
                f"with: hatchway http PORT --subdomain {name}, where PORT is your local app's port "
                "(for example 3000).",
            )
        refusal = self._access_refusal(claim, visit, now)
        shared: ShareRecord | Reply | guards.Refusal | None = None
        if refusal is None:
            shared = self._share(claim, visit, route, now)
            if isinstance(shared, Reply):
                return self._scoped(shared, route)
            if isinstance(shared, guards.Refusal):
                refusal = shared
            elif shared is None:  # a share link stands in for the tunnel's password only
                refusal = guards.check(self._opened(claim), visit.headers, visit.body, now)
        if not tried:  # a retry carries the delivery this very visit already sighted
            refusal = refusal or self._replay_refusal(claim, visit, now)
        if refusal is not None:  # never reaches the agent
            page = error_reply(refusal.status, refusal.code, refusal.message, refusal.headers)
            return self._scoped(page, route)
        if guards.header(visit.headers, "sec-websocket-key") is not None and not visit.socket:
            return self._scoped(_websocket_refused(name), route)
        if shared is not None:
            visit = replace(visit, headers=shares.without_cookie(visit.headers))
        connection_id = self._choose(claim, now, tried)
        if connection_id is None:  # every holder the claim names was found gone just now
            return self._agent_gone(name, "was already gone")
        deadline = self._deadline(visit, now)
        request_id = request_ids.new_request_id(
            self.relay.key, connection_id, deadline + ANSWER_GRACE_SECONDS
        )
        try:
            request = self._request(request_id, route, visit, claim, deadline, now)
            text = codec.encode(request)
        except ProtocolError as exc:
            message = f"The visitor's request was refused: {exc}."
            return error_reply(exc.status, "bad-request", message)
        reply = yield from self._exchange(
            claim, connection_id, request, text, deadline, remembered, tried
        )
        return None if reply is None else self._scoped(reply, route)

    def _choose(self, claim: Claim, now: float, tried: list[str]) -> str | None:
        """The connection to hand the request to: the single holder, or the pool member this
        function waits on least (ties take turns). The claim already lists the members, so
        choosing costs no read and no write.

        On AWS a function serves one visitor at a time, so it waits on nobody and the turns
        decide: round-robin per warm function, from a random start so that functions started
        together spread out. Behind ``hatchway-local`` one process serves every visitor, so
        the counts are exact and a slow member gets fewer requests."""
        holders = [c for c in claim.holders(now) if c not in tried]
        if len(holders) <= 1:
            return holders[0] if holders else None
        with self._routing_lock:
            least = min(self._outstanding.get(c, 0) for c in holders)
            idle = [c for c in holders if self._outstanding.get(c, 0) == least]
            turn = self._turns.get(claim.name)
            if turn is None:
                if len(self._turns) >= MAX_REMEMBERED_TUNNELS:
                    self._turns.pop(next(iter(self._turns)))
                turn = random.randrange(protocol.MAX_POOL_MEMBERS)
            self._turns[claim.name] = turn + 1
            return idle[turn % len(idle)]

    def _count_outstanding(self, connection_id: str, change: int) -> None:
        with self._routing_lock:
            count = self._outstanding.get(connection_id, 0) + change
            if count > 0:
                self._outstanding[connection_id] = count
            else:  # bounded by the requests in flight: idle connections hold no entry
                self._outstanding.pop(connection_id, None)

    @staticmethod
    def _scoped(reply: Reply, route: Route) -> Reply:
        """In path mode, the reply's cookies and workers kept under the tunnel (``path_mode``)."""
        if not route.prefix:
            return reply
        return replace(reply, headers=path_mode.scoped_headers(reply.headers, route.prefix))

    def _share(
        self, claim: Claim, visit: Visit, route: Route, now: float
    ) -> ShareRecord | Reply | guards.Refusal | None:
        """A share link's verdict: None without one; the link's record when it lets the
        request in; a redirect that trades a just-opened link for a cookie; or a refusal that
        says which of the link's rules failed."""
        credential = shares.credential(visit.query, visit.headers)
        if credential is None:
            return None
        record = self.relay.store.get_share(credential.share_id) if credential.share_id else None
        if (
            record is None
            or record.tunnel != claim.name
            or not shares.secret_matches(record, credential.secret)
        ):
            return shares.refusal(claim.name, None, now)
        if not record.usable(now) or not shares.in_scope(record, visit.method, route.path):
            return shares.refusal(claim.name, record, now)
        if not credential.from_link:
            return record
        if record.max_uses and not self.relay.store.use_share(record.share_id, now):
            return shares.refusal(claim.name, self.relay.store.get_share(record.share_id), now)
        # The link was just opened: send the browser on without the secret in the address.
        query = shares.without_parameter(visit.query)
        secure = self.relay.config.path_url.startswith("https:")
        return Reply(
            303,
            (
                ("location", visit.path + ("?" + query if query else "")),
                ("set-cookie", shares.cookie(credential, record, now, secure)),
                ("cache-control", "no-store"),
                ("referrer-policy", "no-referrer"),
            ),
        )

    def _opened(self, claim: Claim) -> Claim:
        """The claim with its webhook secret in clear, for checking a delivery."""
        if not claim.webhook_secret:
            return claim
        return replace(claim, webhook_secret=self.relay.secrets.open(claim.webhook_secret))

    def _replay_refusal(self, claim: Claim, visit: Visit, now: float) -> guards.Refusal | None:
        """A verified delivery with a signed timestamp goes through once (one conditional write
        per delivery, only for tunnels that verify such a provider)."""
        key = guards.replay_key(claim, visit.headers)
        window = now + 2 * guards.WEBHOOK_TOLERANCE_SECONDS
        if key is None or self.relay.store.first_sighting(key, window):
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
                    f"Tunnel {claim.name!r} takes at most {access.rate_in_words(rules.rate)} "
                    f"(bursts of {rules.burst}); try again in {access.retry_after(wait)} s.",
                    (("retry-after", access.retry_after(wait)),),
                )
        return self._token_refusal(claim, now)

    def _token_refusal(self, claim: Claim, now: float) -> guards.Refusal | None:
        """The limits the relay's operator set for the tunnel's token, across its tunnels."""
        limits = claim.token_limits
        key = "token#" + claim.token_id
        with self._limiter_lock:
            wait = (
                self._limiter.take(key, limits.rate, limits.burst or max(1, int(limits.rate)), now)
                if limits.rate
                else None
            )
            daily = None
            if wait is None and limits.requests_per_day:
                daily = self._daily.take(key, limits.requests_per_day, now)
        if wait is not None:
            return guards.Refusal(
                429,
                "token-rate-limited",
                f"The tunnels of the token behind {claim.name!r} take at most "
                f"{access.rate_in_words(limits.rate)} together (set by the relay's operator); "
                "try again in "
                f"{access.retry_after(wait)} s.",
                (("retry-after", access.retry_after(wait)),),
            )
        if daily is not None:
            return guards.Refusal(
                429,
                "token-quota-exhausted",
                f"The tunnels of the token behind {claim.name!r} have had their "
                f"{limits.requests_per_day} requests for today (UTC; set by the relay's "
                "operator).",
                (("retry-after", access.retry_after(daily)),),
            )
        return None

    def _deadline(self, visit: Visit, now: float) -> float:
        """When to stop waiting: the response timeout counted from when the gateway got the
        request (a cold start spends part of it), and never later than the function can run."""
        deadline = (visit.received_at or now) + self.relay.config.response_timeout
        if visit.time_left is not None:
            deadline = min(deadline, now + visit.time_left - CLEANUP_MARGIN_SECONDS)
        return deadline

    def _request(
        self,
        request_id: str,
        route: Route,
        visit: Visit,
        claim: Claim,
        deadline: float,
        now: float,
    ) -> protocol.Request:
        """The request message; a body too large for it goes to the blob store first. It says
        when the relay gives up unless the agent marks it (``start_by``: the silence check of
        ``_wait``, counted from now, just before the post)."""
        body, body_url = visit.body, None
        if len(body) > protocol.MAX_INLINE_BODY_BYTES:
            if len(body) > protocol.MAX_BODY_BYTES or self.relay.blobs is None:
                most = (
                    protocol.MAX_BODY_BYTES if self.relay.blobs else protocol.MAX_INLINE_BODY_BYTES
                )
                raise ProtocolError(
                    f"its body is {len(body)} bytes; this relay accepts at most {most}",
                    status=413,
                )
            key = f"req/{request_id}"
            self.relay.blobs.put(key, body)
            body, body_url = b"", self.relay.blobs.download_url(key, BLOB_URL_SECONDS)
        upload_url = None
        if self.relay.blobs is not None:
            upload_url = self.relay.blobs.upload_url(f"resp/{request_id}", BLOB_URL_SECONDS)
        return protocol.Request(
            id=request_id,
            tunnel=route.name,
            method=visit.method.upper(),
            path=route.path,
            query=visit.query,
            headers=self._forwarded(claim, visit),
            socket=visit.socket,
            body=body,
            deadline=deadline,
            body_url=body_url,
            body_size=len(visit.body) if body_url else 0,
            upload_url=upload_url,
            inline_max=self.relay.config.inline_response_bytes,
            start_by=min(deadline, now + self.relay.config.agent_silence_seconds),
        )

    def _forwarded(self, claim: Claim, visit: Visit) -> protocol.Headers:
        """The headers the app gets: the visitor's, without hop-by-hop ones and the tunnel's
        own credentials, with ``X-Forwarded-For`` ending in the address the platform saw and
        ``X-Forwarded-Proto`` saying how the relay was reached (a visitor cannot claim either)."""
        headers = guards.forwarded_headers(claim, protocol.strip_hop_by_hop(visit.headers))
        if visit.socket:
            headers = sockets.request_headers(headers)
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
        proto = "https" if self.relay.config.path_url.startswith("https:") else "http"
        forwarded = (("x-forwarded-for", ", ".join(chain)),) if chain else ()
        return kept + forwarded + (("x-forwarded-proto", proto),)

    def _route(self, visit: Visit) -> Route | Reply:
        """The tunnel and the path to forward, from the Host (a custom hostname, or subdomain
        mode) or the path."""
        host = visit.host.lower().rsplit(":", 1)[0] if "]" not in visit.host else visit.host
        tunnel = self.relay.config.custom_hostnames.get(host)
        if tunnel is not None:
            return Route(tunnel, visit.path)
        domain = (self.relay.config.domain or "").lower()
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
        config = self.relay.config
        served_at = [
            template.format(name="<name>")
            for template in (config.subdomain_url if domain else None, config.path_url)
            if template
        ]
        return error_reply(
            404,
            "no-tunnel-in-url",
            "This address names no tunnel. Tunnels are served at "
            + " and at ".join(served_at)
            + ", where <name> is the tunnel's name.",
        )

    def _exchange(
        self,
        claim: Claim,
        connection_id: str,
        request: protocol.Request,
        text: str,
        deadline: float,
        remembered: bool,
        tried: list[str],
    ) -> Generator[AwaitAnswer, bytes | None, Reply | None]:
        """Post the request to ``connection_id`` and wait for its answer. None when that
        connection was gone and another try may succeed: the claim came from this relay's
        memory (the caller reads it afresh), or it is a pool with other live members."""
        started = self.relay.clock.now()
        self.relay.store.expect_response(
            request.id, connection_id, request_ids.expires_at(request.id)
        )
        self._count_outstanding(connection_id, +1)
        streaming = False
        try:
            try:
                self.relay.poster.post(connection_id, text)
            except ConnectionGone:
                # Removes the connection from the claim in the store (a pool keeps the rest).
                self.relay.drop_connection(connection_id)
                tried.append(connection_id)
                rest = claim.without(connection_id)
                now = self.relay.clock.now()
                others = [c for c in rest.holders(now) if c not in tried]
                cached = self._claims.get(request.tunnel)
                if claim.pool and others and cached is not None:
                    # The other members are as current as the memory was: no read needed.
                    self._claims[request.tunnel] = (cached[0], rest)
                else:
                    self._claims.pop(request.tunnel, None)
                if remembered or others:
                    return None
                return self._agent_gone(request.tunnel, "was already gone")
            except PostFailed as exc:
                return error_reply(
                    502,
                    "relay-post-failed",
                    f"The relay could not hand the request to the agent serving tunnel "
                    f"{request.tunnel!r} ({exc.why}). The API may be throttling the relay's "
                    "messages; try again shortly.",
                )
            answer = yield from self._wait(request, connection_id, deadline)
            if isinstance(answer, Reply):
                return answer
            self._remember_latency(request.tunnel, self.relay.clock.now() - started)
            if request.socket:
                paired = sockets.opened(self.relay, request, claim, answer, connection_id)
                if paired is not None:
                    return paired
            reply = self.answers.reply_from(request, claim, answer, connection_id)
            streaming = isinstance(reply, StreamedReply)
            return reply
        finally:
            self._count_outstanding(connection_id, -1)
            if not streaming:  # a stream's body steps forget it at its end
                self.relay.store.forget_response(request.id)
            if request.body_url:  # the agent fetched it (or the relay stopped waiting)
                forget_blob(self.relay, f"req/{request.id}")

    def _remember_latency(self, tunnel: str, seconds: float) -> None:
        if tunnel not in self._latency and len(self._latency) >= MAX_REMEMBERED_TUNNELS:
            self._latency.pop(next(iter(self._latency)))
        previous = self._latency.get(tunnel, seconds)
        self._latency[tunnel] = previous + LATENCY_MEMORY * (seconds - previous)

    def _wait(
        self, request: protocol.Request, connection_id: str, deadline: float
    ) -> Generator[AwaitAnswer, bytes | None, bytes | Reply]:
        typical = self._latency.get(request.tunnel, 0.0)
        hint = min(FIRST_POLL_FRACTION * typical, MAX_POLL_HINT_SECONDS)
        silence_check: float | None = (
            self.relay.clock.now() + self.relay.config.agent_silence_seconds
        )
        while True:
            now = self.relay.clock.now()
            until = min(deadline, now + max(self.relay.config.liveness_check_seconds, hint))
            if silence_check is not None:
                until = min(until, max(silence_check, now))
            try:
                answer = yield AwaitAnswer(request.id, until, hint)
            except Exception as exc:  # the store throttled a look: look again shortly
                if throttled_store(exc) is None:
                    raise
                answer = None
                self.relay.clock.sleep(min(THROTTLE_PAUSE_SECONDS, max(0.0, until - now)))
            hint = 0.0
            if answer is not None:
                return answer
            now = self.relay.clock.now()
            if now >= deadline:
                return error_reply(
                    504,
                    "local-app-timeout",
                    f"The local app behind tunnel {request.tunnel!r} did not answer within "
                    f"{self.relay.config.response_timeout:g} s. The agent is connected and "
                    "working on it; "
                    "the app may be stuck or slow (the relay cannot wait longer than its gateway "
                    "allows).",
                )
            try:
                connection = self.relay.store.get_connection(connection_id)
                working = (
                    silence_check is not None
                    and now >= silence_check
                    and (self.relay.store.is_working(request.id))
                )
            except Exception as exc:  # throttled: no news of the agent is not bad news
                if throttled_store(exc) is None:
                    raise
                continue
            if connection is None or not connection.alive(now):
                # The answer may have landed just before the connection went: one last look.
                answer = yield AwaitAnswer(request.id, now)
                if answer is not None:
                    return answer
                return self._agent_gone(request.tunnel, "disconnected before answering")
            if silence_check is not None and now >= silence_check:
                if not working:
                    return error_reply(
                        502,
                        "agent-unresponsive",
                        f"The agent serving tunnel {request.tunnel!r} is connected but did not "
                        f"react within {self.relay.config.agent_silence_seconds:g} s (stopped, "
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


def _websocket_refused(tunnel: str) -> Reply:
    """A visitor's WebSocket upgrade (it names a ``Sec-WebSocket-Key``) that reached the HTTP
    API (a relay on AWS without the front that sends upgrades to the visitor-socket API): it
    answers each request once and cannot hold a connection open both ways, so the app never
    sees it; refused in words rather than sent on as a plain GET that fails the handshake."""
    return error_reply(
        501,
        "websocket-unsupported",
        f"The visitor asked to open a WebSocket to tunnel {tunnel!r}, and this address reaches "
        "only the relay's HTTP API, which answers each request once. Pages load as usual; what "
        "needs a WebSocket, such as a dev server's hot reload, needs the relay's front for "
        "WebSockets (the VisitorFront option of a relay on AWS; hatchway-local has it built in).",
    )
