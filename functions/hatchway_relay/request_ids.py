"""Request ids: a random nonce, the time the relay stops waiting for an answer, and an HMAC
binding both to the agent connection the request was sent to (under the relay's key).

What makes an answer its connection's is not the id but the answer item's key, which API
Gateway writes with the sending connection's id (``answer_items``). Ids are 40 characters of
``[A-Za-z0-9_-]``, safe in a DynamoDB key and in a mapping template.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

NONCE_CHARS = 12
EXPIRY_CHARS = 8
MAC_CHARS = 20
ID_LENGTH = NONCE_CHARS + EXPIRY_CHARS + MAC_CHARS


@functools.lru_cache(maxsize=4)
def _keyed(key: bytes) -> hmac.HMAC:
    """HMAC-SHA256 under ``key`` with nothing hashed yet: each MAC starts from a copy of it,
    which costs a third of keying a new one (a warm relay has one key)."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _mac(key: bytes, nonce: str, expiry: str, connection_id: str) -> str:
    mac = _keyed(key).copy()
    mac.update(f"{nonce}.{expiry}.{connection_id}".encode())
    return base64.urlsafe_b64encode(mac.digest()[:15]).decode("ascii")


def new_request_id(key: bytes, connection_id: str, expires_at: float) -> str:
    """A fresh id only ``connection_id`` can answer, until ``expires_at``."""
    nonce = secrets.token_urlsafe(9)
    expiry = format(int(expires_at) & 0xFFFFFFFF, "08x")
    return nonce + expiry + _mac(key, nonce, expiry, connection_id)


def expires_at(request_id: str) -> float:
    """When answers to this id stop being accepted (0 for an id not made here)."""
    if len(request_id) != ID_LENGTH:
        return 0.0
    try:
        return float(int(request_id[NONCE_CHARS : NONCE_CHARS + EXPIRY_CHARS], 16))
    except ValueError:
        return 0.0


def log_id(value: str) -> str:
    """A short stable stand-in for an id or connection id in logs (never the value itself:
    a connection id is enough to post to or close a connection)."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]
