"""``MemoryBlobStore``: the ``BlobStore`` port in one process, its signed URLs answered by the
local gateway (``serve``) so that ``hatchway-local`` runs the same blob code as AWS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
from collections.abc import Mapping

from hatchway import protocol
from hatchway_relay.ports import BlobTooLarge, Clock, SystemClock

BLOB_PATH = "/@blobs/"
"""Where the gateway answers blob URLs, on its bare hosts."""

MAX_TOTAL_BYTES = 512 * 1024 * 1024
"""Most bytes the gateway's blob store holds at once; the oldest objects go first beyond it
(the relay deletes each object once it is done with it, so only abandoned ones pile up)."""

BLOB_TTL_SECONDS = 24 * 60 * 60
"""How long an object lives, like the bucket's lifecycle rule (a day)."""

MAX_KEY_LENGTH = 1024
"""S3's key length limit."""

KEY_PATTERN = re.compile(rf"^[A-Za-z0-9/_.-]{{1,{MAX_KEY_LENGTH}}}\Z")

SIGNED_METHODS = frozenset({"GET", "PUT"})

Answer = tuple[int, bytes, str]
"""What ``serve`` returns: status, body, content type."""


class InvalidKey(ValueError):
    """A key outside ``KEY_PATTERN``."""


def _check_key(key: str) -> None:
    if not KEY_PATTERN.match(key):
        raise InvalidKey(f"blob keys are 1 to {MAX_KEY_LENGTH} of A-Z a-z 0-9 / _ . -")


def _error(status: int, message: str) -> Answer:
    return status, json.dumps({"message": message}).encode(), "application/json"


class MemoryBlobStore:
    def __init__(
        self,
        base_url: str,
        clock: Clock | None = None,
        max_bytes: int = protocol.MAX_BLOB_BYTES,
        ttl: float = BLOB_TTL_SECONDS,
        max_total_bytes: int = MAX_TOTAL_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock or SystemClock()
        self.max_bytes = max_bytes
        self.ttl = ttl
        # Per process: URLs die with the process, as the objects they point at do.
        self._signer = hmac.new(secrets.token_bytes(32), digestmod=hashlib.sha256)
        """Keyed once; every signature starts from a copy (cheaper than keying anew)."""
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._total = 0
        self.max_total_bytes = max_total_bytes
        self._lock = threading.Lock()

    # --- BlobStore ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        _check_key(key)
        if len(data) > self.max_bytes:
            raise BlobTooLarge(key, len(data), self.max_bytes)
        now = self.clock.now()
        with self._lock:
            self._purge(now)
            self._drop(key)
            self._objects[key] = (bytes(data), now + self.ttl)
            self._total += len(data)
            while self._total > self.max_total_bytes and len(self._objects) > 1:
                self._drop(next(iter(self._objects)))  # the oldest first

    def delete(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._objects.pop(key, None)
        if entry is not None:
            self._total -= len(entry[0])

    def get(self, key: str, max_bytes: int) -> bytes | None:
        _check_key(key)
        with self._lock:
            entry = self._objects.get(key)
        if entry is None or entry[1] <= self.clock.now():
            return None
        if len(entry[0]) > max_bytes:
            raise BlobTooLarge(key, len(entry[0]), max_bytes)
        return entry[0]

    def download_url(self, key: str, expires_in: float) -> str:
        return self._url("GET", key, expires_in)

    def upload_url(self, key: str, expires_in: float) -> str:
        return self._url("PUT", key, expires_in)

    # --- The gateway's side -------------------------------------------------------------------

    def refusal(
        self, method: str, key: str, query: Mapping[str, str], size: int | None = None
    ) -> Answer | None:
        """Why a request to a blob URL is refused, or None: the gateway asks before it reads
        a body (``size`` from Content-Length, when the client sent one)."""
        if method not in SIGNED_METHODS:
            return _error(405, "Method Not Allowed")
        if not KEY_PATTERN.match(key):
            return _error(404, "Not Found")
        expires = query.get("expires", "")
        if not expires.isdigit() or not self._signature_valid(method, key, expires, query):
            return _error(403, "Forbidden")
        if int(expires) < self.clock.now():
            return _error(403, "Request has expired")
        if method == "PUT" and size is not None and size > self.max_bytes:
            return _error(413, f"Objects are at most {self.max_bytes} bytes")
        return None

    def serve(self, method: str, key: str, query: Mapping[str, str], body: bytes | None) -> Answer:
        """Answer one request to a signed URL, as S3 would answer a presigned one."""
        refused = self.refusal(method, key, query, None if body is None else len(body))
        if refused is not None:
            return refused
        if method == "PUT":
            self.put(key, body or b"")
            return 200, b"", "text/plain"
        data = self.get(key, self.max_bytes)
        if data is None:
            return _error(404, "Not Found")
        return 200, data, "application/octet-stream"

    # --- Signing ------------------------------------------------------------------------------

    def _signature(self, method: str, key: str, expires: str) -> str:
        signer = self._signer.copy()
        signer.update(f"{method}\n{key}\n{expires}".encode())
        return base64.urlsafe_b64encode(signer.digest()).decode("ascii").rstrip("=")

    def _signature_valid(
        self, method: str, key: str, expires: str, query: Mapping[str, str]
    ) -> bool:
        given = query.get("sig", "")
        return hmac.compare_digest(given.encode(), self._signature(method, key, expires).encode())

    def _url(self, method: str, key: str, expires_in: float) -> str:
        _check_key(key)  # which also makes the key its own URL path: no character needs quoting
        expires = str(math.ceil(self.clock.now() + max(expires_in, 1.0)))
        signature = self._signature(method, key, expires)
        return f"{self.base_url}{BLOB_PATH}{key}?expires={expires}&sig={signature}"

    def _purge(self, now: float) -> None:
        """Drop expired objects (called under the lock on every write: memory stays bounded by
        a day's uploads without a sweeper thread)."""
        for key in [k for k, (_, until) in self._objects.items() if until <= now]:
            self._drop(key)
