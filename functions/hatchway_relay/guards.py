"""Per-tunnel guards the relay enforces before a visitor request reaches an agent: HTTP basic
auth and signed webhook deliveries (GitHub, Stripe, Slack).

Pure functions of (the claim's guards, the visitor's headers and body, the time): no I/O, no
logging. Every comparison of a secret-derived value is constant-time (``hmac.compare_digest``).
Refusals say what was wrong and that the relay refused it, never what the expected value was.
Header names arrive lowercased from API Gateway (payload 2.0) but are matched case-insensitively
anyway, so the module does not depend on that.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from dataclasses import dataclass

from hatchway import protocol
from hatchway_relay.ports import Claim

WEBHOOK_TOLERANCE_SECONDS = 300
"""How far a Stripe or Slack delivery's signed timestamp may be from the relay's clock (both
providers recommend five minutes): an older delivery is a possible replay and is refused."""

MAX_SIGNATURE_HEADER_LENGTH = 2048
"""Longest signature header parsed; a longer one is refused unread (bounds the work per request)."""

MAX_STRIPE_SIGNATURES = 8
"""Most ``v1=`` signatures read from one Stripe-Signature header (Stripe sends one per active
secret: two while a secret is being rolled)."""

MAX_AUTHORIZATION_LENGTH = 1024
"""Longest Authorization header read for basic auth (credentials are capped at
``protocol.MAX_BASIC_AUTH_LENGTH``; base64 adds a third)."""

MAX_TIMESTAMP_DIGITS = 12
"""Longest signed timestamp read: Unix times need ten digits until the year 2286."""

BASIC_AUTH_CACHE_SIZE = 256
"""Derived basic-auth digests remembered per process: a browser sends the same credentials with
every request, and each derivation costs milliseconds of CPU."""

BASIC_CHALLENGE = 'Basic realm="hatchway: {tunnel}", charset="UTF-8"'
"""The challenge a visitor gets without valid credentials (browsers then ask for them). Each
tunnel is its own realm: in path mode every tunnel shares one origin, and a browser would
otherwise send one tunnel's password to every other."""

REPLAYABLE_PROVIDERS = frozenset({"stripe", "slack"})
"""Providers whose deliveries carry a signed timestamp, so a captured one can be replayed while
it is fresh: the relay lets each signature through once."""

GITHUB_HEADER = "x-hub-signature-256"
STRIPE_HEADER = "stripe-signature"
SLACK_HEADER = "x-slack-signature"
SLACK_TIMESTAMP_HEADER = "x-slack-request-timestamp"


@dataclass(frozen=True)
class Refusal:
    """Why a visitor request is not forwarded: the status, a machine-readable code, a message
    for the page, and headers to add (the basic-auth challenge)."""

    status: int
    code: str
    message: str
    headers: protocol.Headers = ()


def check(claim: Claim, headers: protocol.Headers, body: bytes, now: float) -> Refusal | None:
    """The first guard of ``claim`` the request fails, or None if it may be forwarded."""
    if claim.basic_auth:
        refusal = check_basic_auth(claim.name, claim.basic_auth, headers)
        if refusal is not None:
            return refusal
    if claim.webhook:
        return check_webhook(claim.name, claim.webhook, claim.webhook_secret, headers, body, now)
    return None


def forwarded_headers(claim: Claim, headers: protocol.Headers) -> protocol.Headers:
    """The visitor's headers as the agent gets them: the tunnel's own credentials (consumed
    here) are removed, so the password never reaches the laptop, its logs or its inspector."""
    if not claim.basic_auth:
        return headers
    return tuple((name, value) for name, value in headers if name.lower() != "authorization")


def header(headers: protocol.Headers, name: str) -> str | None:
    """The value of header ``name`` (any case); repeats joined with commas, as HTTP allows."""
    values = [value for key, value in headers if key.lower() == name]
    return ",".join(values) if values else None


# --- Basic auth -------------------------------------------------------------------------------


def check_basic_auth(tunnel: str, stored: str, headers: protocol.Headers) -> Refusal | None:
    supplied = _basic_credentials(header(headers, "authorization"))
    if supplied is None:
        return _auth_refusal(
            tunnel,
            f"Tunnel {tunnel!r} is protected by a username and password, checked by the relay. "
            "A browser asks for them; scripts send an 'Authorization: Basic' header.",
        )
    if not verify_basic_auth(stored, supplied):
        return _auth_refusal(
            tunnel,
            f"The username or password for tunnel {tunnel!r} is wrong (checked by the relay; "
            "nothing was forwarded).",
        )
    return None


def verify_basic_auth(stored: str, supplied: bytes) -> bool:
    """Whether ``supplied`` (the ``user:password`` bytes a visitor sent) matches the hash."""
    try:
        iterations, salt, digest = protocol.parse_basic_auth_hash(stored)
    except protocol.ProtocolError:
        return False  # a claim written by a broken agent protects its tunnel by refusing all
    return hmac.compare_digest(_derive(supplied, salt, iterations), digest)


@functools.lru_cache(maxsize=BASIC_AUTH_CACHE_SIZE)
def _derive(supplied: bytes, salt: bytes, iterations: int) -> bytes:
    return protocol.derive_basic_auth(supplied, salt, iterations)


def _basic_credentials(value: str | None) -> bytes | None:
    if value is None or len(value) > MAX_AUTHORIZATION_LENGTH:
        return None
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if b":" in decoded else None


def _auth_refusal(tunnel: str, message: str) -> Refusal:
    challenge = BASIC_CHALLENGE.format(tunnel=tunnel)
    return Refusal(401, "auth-required", message, (("www-authenticate", challenge),))


# --- Webhooks ---------------------------------------------------------------------------------


def replay_key(claim: Claim, headers: protocol.Headers) -> str | None:
    """What identifies a verified delivery of a replayable provider (a digest of the tunnel and
    its signature header), or None when the tunnel's provider signs no timestamp."""
    if claim.webhook not in REPLAYABLE_PROVIDERS:
        return None
    name = STRIPE_HEADER if claim.webhook == "stripe" else SLACK_HEADER
    signature = (header(headers, name) or "").encode("utf-8", "surrogateescape")
    return hashlib.sha256(claim.name.encode() + b"\n" + signature).hexdigest()


def replayed(tunnel: str, provider: str) -> Refusal:
    return Refusal(
        409,
        "webhook-replayed",
        f"The relay refused this {provider} webhook delivery for tunnel {tunnel!r}: the same "
        "signed delivery already came through (a replay). It never reached the local app.",
    )


def check_webhook(
    tunnel: str, provider: str, secret: str, headers: protocol.Headers, body: bytes, now: float
) -> Refusal | None:
    """Verify a delivery signed the way ``provider`` signs them, with ``secret``."""
    key = secret.encode("utf-8")
    if provider == "github":
        return _github(tunnel, key, headers, body)
    if provider == "stripe":
        return _stripe(tunnel, key, headers, body, now)
    if provider == "slack":
        return _slack(tunnel, key, headers, body, now)
    # A provider this relay does not know (the protocol refuses them): fail closed.
    return _forged(tunnel, provider, "the relay cannot verify this provider's signatures")


def _github(tunnel: str, key: bytes, headers: protocol.Headers, body: bytes) -> Refusal | None:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``."""
    value = header(headers, GITHUB_HEADER)
    if value is None:
        return _unsigned(tunnel, "GitHub", "X-Hub-Signature-256")
    scheme, _, signature = value.strip().partition("=")
    if scheme != "sha256" or not _matches(_hmac_hex(key, body), signature):
        return _forged(tunnel, "GitHub", "its X-Hub-Signature-256 does not match the body")
    return None


def _stripe(
    tunnel: str, key: bytes, headers: protocol.Headers, body: bytes, now: float
) -> Refusal | None:
    """``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">[,v1=...]``."""
    value = header(headers, STRIPE_HEADER)
    if value is None:
        return _unsigned(tunnel, "Stripe", "Stripe-Signature")
    if len(value) > MAX_SIGNATURE_HEADER_LENGTH:
        return _forged(tunnel, "Stripe", "its Stripe-Signature header is too long")
    timestamp: str | None = None
    signatures: list[str] = []
    for item in value.split(","):
        name, _, text = item.strip().partition("=")
        if name == "t":
            timestamp = text
        elif name == "v1" and len(signatures) < MAX_STRIPE_SIGNATURES:
            signatures.append(text)
    if timestamp is None or not signatures:
        return _forged(tunnel, "Stripe", "its Stripe-Signature has no t= or no v1= part")
    stale = _stale(tunnel, "Stripe", timestamp, now)
    if stale is not None:
        return stale
    expected = _hmac_hex(key, timestamp.encode("ascii") + b"." + body)
    # Every candidate is compared, so the time taken does not tell which one came close.
    if not any([_matches(expected, signature) for signature in signatures]):
        return _forged(tunnel, "Stripe", "no v1 signature in its Stripe-Signature matches")
    return None


def _slack(
    tunnel: str, key: bytes, headers: protocol.Headers, body: bytes, now: float
) -> Refusal | None:
    """``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:ts:body">`` with the timestamp in
    ``X-Slack-Request-Timestamp``."""
    value = header(headers, SLACK_HEADER)
    timestamp = header(headers, SLACK_TIMESTAMP_HEADER)
    if value is None or timestamp is None:
        return _unsigned(tunnel, "Slack", "X-Slack-Signature and X-Slack-Request-Timestamp")
    stale = _stale(tunnel, "Slack", timestamp, now)
    if stale is not None:
        return stale
    version, _, signature = value.strip().partition("=")
    expected = _hmac_hex(key, b"v0:" + timestamp.strip().encode("ascii") + b":" + body)
    if version != "v0" or not _matches(expected, signature):
        return _forged(tunnel, "Slack", "its X-Slack-Signature does not match the body")
    return None


def _stale(tunnel: str, provider: str, timestamp: str, now: float) -> Refusal | None:
    text = timestamp.strip()
    if not text.isascii() or not text.isdigit() or len(text) > MAX_TIMESTAMP_DIGITS:
        return _forged(tunnel, provider, "its signed timestamp is not a Unix time")
    age = now - int(text)
    if abs(age) > WEBHOOK_TOLERANCE_SECONDS:
        return Refusal(
            403,
            "webhook-stale",
            f"The relay refused this {provider} webhook delivery for tunnel {tunnel!r}: its "
            f"signed timestamp is {abs(age):.0f} s {'old' if age > 0 else 'in the future'}, and "
            f"the relay accepts at most {WEBHOOK_TOLERANCE_SECONDS} s (a replayed delivery, or a "
            "clock that is off). It never reached the local app.",
        )
    return None


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _matches(expected: str, supplied: str) -> bool:
    candidate = supplied.strip().lower()
    if len(candidate) > MAX_SIGNATURE_HEADER_LENGTH or not candidate.isascii():
        return False  # compare_digest takes ASCII only; such a signature cannot match anyway
    return hmac.compare_digest(expected, candidate)


def _unsigned(tunnel: str, provider: str, headers: str) -> Refusal:
    return Refusal(
        401,
        "webhook-unsigned",
        f"The relay refused this request for tunnel {tunnel!r}: the tunnel accepts only "
        f"{provider} webhook deliveries signed with its secret, and this one has no {headers}. "
        "It never reached the local app.",
    )


def _forged(tunnel: str, provider: str, why: str) -> Refusal:
    return Refusal(
        403,
        "webhook-bad-signature",
        f"The relay refused this {provider} webhook delivery for tunnel {tunnel!r}: {why} "
        "(is the tunnel's --webhook-secret the one the sender signs with?). It never reached "
        "the local app.",
    )
