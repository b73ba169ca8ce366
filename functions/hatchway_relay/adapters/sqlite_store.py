"""``SqliteStore``: the in-memory store, with what an operator creates kept in one SQLite file,
for a self-hosted ``hatchway-local`` that must survive restarts and crashes.

Kept (written through before the call returns, ``synchronous=FULL``, so a ``kill -9`` loses
nothing that was acknowledged): tokens (their hashes, labels, limits, reserved names and when
they were last used), reserved names, and share links (with their use counts and revocations).
What lives only as long as a connection stays in memory, as on ``MemoryStore``: connections,
tunnel claims, answers, webhook sightings and the relay's key. So a restart keeps every token and
reservation; agents reconnect by themselves and claim their names again.

Reads come from memory (everything kept is loaded at start), so the visitor's path is as fast
as ``MemoryStore``'s; one process owns the file (SQLite's own lock refuses a second writer).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.ports import Clock, ShareRecord, TokenLimits, TokenRecord

SCHEMA_VERSION = 1
"""Bumped on any change to the tables; an unknown version is refused, never rewritten."""

BUSY_TIMEOUT_SECONDS = 5.0
"""How long a write waits for SQLite's lock before failing (one process owns the file)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (token_hash TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (name TEXT PRIMARY KEY, token_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shares (share_id TEXT PRIMARY KEY, record TEXT NOT NULL);
"""


def _token_json(record: TokenRecord) -> str:
    return json.dumps(dataclasses.asdict(record), sort_keys=True)


def _token(text: str) -> TokenRecord:
    fields: dict[str, Any] = json.loads(text)
    fields["reserved"] = tuple(fields.get("reserved", ()))
    fields["limits"] = TokenLimits(**fields.get("limits", {}))
    return TokenRecord(**fields)


def _share_json(record: ShareRecord) -> str:
    return json.dumps(dataclasses.asdict(record), sort_keys=True)


def _share(text: str) -> ShareRecord:
    fields: dict[str, Any] = json.loads(text)
    fields["methods"] = tuple(fields.get("methods", ()))
    return ShareRecord(**fields)


class SqliteStore(MemoryStore):
    """``MemoryStore`` whose tokens, reservations and share links are kept in ``path``."""

    def __init__(self, path: Path, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        self._db_lock = threading.Lock()
        with self._db_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise RuntimeError(
                    f"{path} holds hatchway-local state of schema version {version}; this "
                    f"version reads {SCHEMA_VERSION}: use the hatchway-local that wrote it, or "
                    "another --state file"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for (text,) in self._db.execute("SELECT record FROM tokens"):
                token = _token(text)
                self._tokens[token.token_hash] = token
            for name, token_id in self._db.execute("SELECT name, token_id FROM reservations"):
                self._reservations[name] = token_id
            for (text,) in self._db.execute("SELECT record FROM shares"):
                share = _share(text)
                self._shares[share.share_id] = share

    def close(self) -> None:
        with self._db_lock:
            self._db.close()

    # Each statement commits (and syncs) before it returns. Each keep reads the record from
    # memory under the file's lock: whichever of two racing changes writes last, the file ends
    # up holding what memory holds.

    def _keep_token(self, token_hash: str) -> None:
        with self._db_lock:
            record = self.get_token(token_hash)
            if record is None:
                self._db.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO tokens (token_hash, record) VALUES (?, ?)",
                    (token_hash, _token_json(record)),
                )

    def _keep_share(self, share_id: str) -> None:
        with self._db_lock:
            record = self.get_share(share_id)
            if record is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO shares (share_id, record) VALUES (?, ?)",
                    (share_id, _share_json(record)),
                )

    # Tokens

    def put_token(self, record: TokenRecord) -> None:
        super().put_token(record)
        self._keep_token(record.token_hash)

    def note_token_use(self, token_hash: str, now: float) -> None:
        super().note_token_use(token_hash, now)
        self._keep_token(token_hash)

    def delete_token(self, token_hash: str) -> None:
        super().delete_token(token_hash)
        self._keep_token(token_hash)

    # Reserved names

    def reserve_name(self, name: str, token_id: str) -> bool:
        if not super().reserve_name(name, token_id):
            return False
        self._keep_reservation(name)
        return True

    def release_reservation(self, name: str, token_id: str) -> bool:
        if not super().release_reservation(name, token_id):
            return False
        self._keep_reservation(name)
        return True

    def _keep_reservation(self, name: str) -> None:
        with self._db_lock:
            token_id = self.get_reservation(name)
            if token_id is None:
                self._db.execute("DELETE FROM reservations WHERE name = ?", (name,))
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO reservations (name, token_id) VALUES (?, ?)",
                    (name, token_id),
                )

    # Share links

    def put_share(self, record: ShareRecord) -> None:
        super().put_share(record)
        self._keep_share(record.share_id)

    def use_share(self, share_id: str, now: float) -> bool:
        if not super().use_share(share_id, now):
            return False
        self._keep_share(share_id)
        return True

    def revoke_share(self, share_id: str, token_id: str) -> bool:
        if not super().revoke_share(share_id, token_id):
            return False
        self._keep_share(share_id)
        return True
