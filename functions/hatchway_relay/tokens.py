"""Agent tokens: how they are made, and the only form in which the relay keeps them (a hash).

Tokens are 256 random bits, so one SHA-256 pass is enough to make the stored form useless to a
thief (no salt or slow hash is needed for secrets that were never guessable). Lookups go by hash;
the final comparison is constant-time all the same.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "hw_"
"""Makes a leaked token recognisable to secret scanners and to people."""

TOKEN_BYTES = 32
"""Random bytes in a new token."""


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id(token_hash: str) -> str:
    """A short public handle for a token, safe to show and log."""
    return token_hash[:12]


def hashes_match(stored_hash: str, token: str) -> bool:
    return hmac.compare_digest(stored_hash.encode("ascii"), hash_token(token).encode("ascii"))
