"""Share links: a link that lets a visitor into a tunnel without its basic auth, for some
methods under one path, until it expires, is used up or is revoked (``hatchway share``).

A link carries ``?hatchway_share=<id>.<secret>``. The relay keeps only the secret's hash. The
first visit through the link is counted and answered with a redirect to the same address without
the secret, setting a cookie scoped to the shared path, so the secret does not stay in the
browser's address bar, history or the app's logs; later requests carry the cookie. Neither the
parameter nor the cookie ever reaches the app. Pure functions: the relay core does the I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import string
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from hatchway import protocol
from hatchway_relay.guards import Refusal
from hatchway_relay.ports import ShareRecord

PARAMETER = "hatchway_share"
"""The query parameter a share link carries, and the name of the cookie that replaces it."""

ID_CHARS = 12
SECRET_BYTES = 18
"""A link's public id (shown by ``share list``) and its secret (144 random bits)."""


@dataclass(frozen=True)
class Credential:
    share_id: str
    secret: str
    from_link: bool
    """True when it came in the query string (the link was just opened), False from a cookie."""


ID_FIRST_CHARS = string.ascii_letters + string.digits
"""A link's id starts with one of these: one starting with "-" would be read as an option by
``hatchway share revoke ID`` (and by most command lines it is pasted into)."""


def new_secret() -> tuple[str, str]:
    """A fresh (id, secret) pair; both are URL-safe and cannot contain the separator."""
    share_id = secrets.choice(ID_FIRST_CHARS) + secrets.token_urlsafe(9)[: ID_CHARS - 1]
    return share_id, secrets.token_urlsafe(SECRET_BYTES).replace(".", "-")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(record: ShareRecord, secret: str) -> bool:
    return hmac.compare_digest(record.secret_hash, hash_secret(secret))


def _split(value: str) -> tuple[str, str] | None:
    share_id, dot, secret = value.partition(".")
    if not dot or not share_id or not secret or len(value) > 128:
        return None
    try:
        protocol.validate_id(share_id)
    except protocol.ProtocolError:
        return None
    return share_id, secret


def credential(query: str, headers: protocol.Headers) -> Credential | None:
    """The share credential a request carries: the link's parameter first, then the cookie."""
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == PARAMETER:
            parts = _split(value)
            return Credential(*parts, True) if parts else Credential("", "", True)
    for name, value in headers:
        if name.lower() != "cookie":
            continue
        for pair in value.split(";"):
            key, _, text = pair.strip().partition("=")
            if key == PARAMETER:
                parts = _split(text.strip())
                if parts:
                    return Credential(*parts, False)
    return None


def in_scope(record: ShareRecord, method: str, path: str) -> bool:
    """Whether a request (its app-side path) is one the link shares."""
    if method.upper() not in record.methods:
        return False
    shared = record.path.rstrip("/")
    return not shared or path == shared or path.startswith(shared + "/")


def refusal(tunnel: str, record: ShareRecord | None, now: float, why: str = "") -> Refusal:
    """The 403 page for a link that does not let this request in, saying which rule failed."""
    if record is None:
        reason, code = "is not a share link of this tunnel (mistyped, or for another)", "unknown"
    elif record.revoked:
        reason, code = "was revoked by the tunnel's owner", "revoked"
    elif now >= record.expires_at:
        reason, code = "has expired", "expired"
    elif record.max_uses and record.uses >= record.max_uses:
        reason, code = f"was used its {record.max_uses} times", "used-up"
    else:
        methods = ", ".join(record.methods)
        reason = why or f"shares only {methods} requests under {record.path}"
        code = "out-of-scope"
    return Refusal(
        403,
        f"share-{code}",
        f"This share link for tunnel {tunnel!r} {reason}. Ask the person who shared it for a "
        "new one.",
    )


def without_parameter(query: str) -> str:
    """The query string with the share parameter taken out (for the redirect)."""
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != PARAMETER]
    return urlencode(kept)


def cookie(cred: Credential, record: ShareRecord, now: float, secure: bool) -> str:
    """The cookie that carries the link on: scoped to the shared path, gone when it expires."""
    jar: SimpleCookie = SimpleCookie()
    jar[PARAMETER] = f"{cred.share_id}.{cred.secret}"
    morsel = jar[PARAMETER]
    morsel["path"] = record.path
    morsel["max-age"] = str(max(1, math.floor(record.expires_at - now)))
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"
    if secure:
        morsel["secure"] = True
    return morsel.OutputString()


def without_cookie(headers: protocol.Headers) -> protocol.Headers:
    """The visitor's headers without the share cookie (the app never sees the secret)."""
    out = []
    for name, value in headers:
        if name.lower() == "cookie":
            pairs = [p for p in value.split(";") if p.strip().partition("=")[0] != PARAMETER]
            if not pairs:
                continue
            value = ";".join(pairs).strip()
        out.append((name, value))
    return tuple(out)


def info(record: ShareRecord) -> protocol.ShareInfo:
    return protocol.ShareInfo(
        record.share_id,
        record.tunnel,
        record.methods,
        record.path,
        record.expires_at,
        record.max_uses,
        record.uses,
        record.revoked,
    )
