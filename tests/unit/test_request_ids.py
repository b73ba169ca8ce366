"""Request ids: who may answer them and until when, and a MAC every version of the relay
computes alike (an id made by one function is checked by another, maybe of another deploy)."""

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


def test_only_its_connection_may_answer_and_only_in_time() -> None:
    request_id = request_ids.new_request_id(KEY, "conn-1", EXPIRES)
    assert request_ids.may_answer(KEY, request_id, "conn-1", EXPIRES - 1)
    assert not request_ids.may_answer(KEY, request_id, "conn-2", EXPIRES - 1)
    assert not request_ids.may_answer(KEY, request_id, "conn-1", EXPIRES)
    assert not request_ids.may_answer(b"x" * 32, request_id, "conn-1", EXPIRES - 1)
    forged = request_id[:-1] + ("A" if request_id[-1] != "A" else "B")
    assert not request_ids.may_answer(KEY, forged, "conn-1", EXPIRES - 1)


def test_ids_made_under_other_keys_stay_apart() -> None:
    keys = [bytes([i]) * 32 for i in range(10)]  # more keys than are kept keyed at once
    made = [(key, request_ids.new_request_id(key, "c", EXPIRES)) for key in keys]
    for key, request_id in made:
        assert [request_ids.may_answer(k, request_id, "c", 0.0) for k in keys] == [
            k == key for k in keys
        ]
