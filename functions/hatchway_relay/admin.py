"""Operator actions on a relay's store: create, list and revoke agent tokens.

A new token is shown once and stored only as its hash. Tokens are identified afterwards by
their public id (the first 12 hex digits of the hash), which is safe to show and log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from hatchway import protocol
from hatchway_relay import tokens
from hatchway_relay.ports import Store, TokenRecord


class AdminStore(Store, Protocol):
    """The port plus the operator's token commands, which both adapters offer."""

    def list_tokens(self) -> list[TokenRecord]: ...
    def delete_token(self, token_hash: str) -> None: ...


@dataclass(frozen=True)
class NewToken:
    token: str
    record: TokenRecord


def create_token(store: AdminStore, label: str, reserved: tuple[str, ...] = ()) -> NewToken:
    token = tokens.generate_token()
    token_hash = tokens.hash_token(token)
    record = TokenRecord(
        token_hash=token_hash,
        token_id=tokens.token_id(token_hash),
        label=label,
        created_at=time.time(),
        reserved=tuple(protocol.validate_name(name) for name in reserved),
    )
    store.put_token(record)
    return NewToken(token, record)


def list_tokens(store: AdminStore) -> list[TokenRecord]:
    return sorted(store.list_tokens(), key=lambda r: r.created_at)


def revoke_token(store: AdminStore, token_id: str) -> TokenRecord | None:
    """Delete the token with this public id; None if there is none. Agents using it cannot
    connect again; a connection already open lasts until it drops."""
    for record in store.list_tokens():
        if record.token_id == token_id:
            store.delete_token(record.token_hash)
            return record
    return None
