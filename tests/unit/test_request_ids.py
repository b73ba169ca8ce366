"""Request ids: until when they are answered, and a MAC every version of the relay computes
alike."""

from __future__ import annotations

import base64
import hashlib
import hmac

from hatchway_relay import request_ids

KEY = b"k" * 32
EXPIRES = 1_700_000_060.0


def test_an_id_carries_an_hmac_sha256_of_nonce_expiry_and_connection() -> None:
    request_id = request_ids.new_request_id(KEY, "conn-1", EXPIRES)
    nonce, expiry = request_id[:12], request_id[12:20]
    message = f"{nonce}.{expiry}.conn-1".encode()
    digest = hmac.new(KEY, message, hashlib.sha256).digest()[:15]
    assert request_id[20:] == base64.urlsafe_b64encode(digest).decode()
    assert len(request_id) == request_ids.ID_LENGTH


def test_an_id_says_until_when_it_is_answered_and_is_safe_in_a_key() -> None:
    request_id = request_ids.new_request_id(KEY, "conn-1", EXPIRES)
    assert request_ids.expires_at(request_id) == EXPIRES
    assert request_ids.expires_at("too short") == 0.0
    assert all(c.isalnum() or c in "-_" for c in request_id)


def test_ids_made_under_other_keys_stay_apart() -> None:
    keys = [bytes([i]) * 32 for i in range(10)]  # more keys than are kept keyed at once
    for key in keys:
        request_id = request_ids.new_request_id(key, "c", EXPIRES)
        nonce, expiry = request_id[:12], request_id[12:20]
        digest = hmac.new(key, f"{nonce}.{expiry}.c".encode(), hashlib.sha256).digest()[:15]
        assert request_id[20:] == base64.urlsafe_b64encode(digest).decode()
