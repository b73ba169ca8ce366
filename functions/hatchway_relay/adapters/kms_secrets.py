"""``KmsSecretBox``: the ``SecretBox`` port over AWS KMS (boto3), so the secrets the relay must
keep in clear to use (a tunnel's webhook signing secret) are stored only as KMS ciphertext.

A leaked table, a backup, or a reader with table access and no ``kms:Decrypt`` gets nothing
usable. The waiting function decrypts each sealed secret once per warm container (a bounded
cache), so a webhook tunnel costs one KMS call per container, not one per request.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

SEALED_PREFIX = "kms:"
"""Marks a sealed value, so a plain value written before encryption existed is still read."""

MAX_OPENED = 1024
"""Opened secrets one warm function remembers (by ciphertext)."""


class KmsSecretBox:
    def __init__(self, client: Any, key_id: str) -> None:
        self.client = client
        self.key_id = key_id
        self._opened: dict[str, str] = {}
        self._lock = threading.Lock()

    def seal(self, plaintext: str) -> str:
        if not plaintext:
            return ""
        blob = self.client.encrypt(KeyId=self.key_id, Plaintext=plaintext.encode("utf-8"))
        return SEALED_PREFIX + base64.b64encode(blob["CiphertextBlob"]).decode("ascii")

    def open(self, sealed: str) -> str:
        if not sealed.startswith(SEALED_PREFIX):
            return sealed
        with self._lock:
            known = self._opened.get(sealed)
        if known is not None:
            return known
        blob = base64.b64decode(sealed[len(SEALED_PREFIX) :])
        plaintext: bytes = self.client.decrypt(CiphertextBlob=blob, KeyId=self.key_id)["Plaintext"]
        opened = plaintext.decode("utf-8")
        with self._lock:
            if len(self._opened) >= MAX_OPENED:
                self._opened.pop(next(iter(self._opened)))
            self._opened[sealed] = opened
        return opened
