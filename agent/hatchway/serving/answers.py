"""Answers the agent sent recently, kept for a short while so that one the platform could not
take (API Gateway's ``Undelivered`` frame) can be sent again."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from hatchway.protocol import Response

KEEP_ANSWERS_SECONDS = 3.0
"""How long a sent answer is kept: API Gateway's frame for a message it could not take comes
back within moments (the connection resends what it sent in its last two seconds)."""

MAX_KEPT_ANSWERS = 256
"""Most answers kept at once; the oldest are forgotten first."""

MAX_KEPT_ANSWER_BYTES = 8 * 1024 * 1024
"""Most body bytes kept at once (answers carry at most an inline body; large ones were
uploaded and are kept as the small message that says so)."""


class RecentAnswers:
    """Sent answers by request id, bounded by age, count and bytes. Thread-safe."""

    def __init__(
        self,
        keep_seconds: float = KEEP_ANSWERS_SECONDS,
        max_count: int = MAX_KEPT_ANSWERS,
        max_bytes: int = MAX_KEPT_ANSWER_BYTES,
    ) -> None:
        self.keep_seconds = keep_seconds
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, tuple[float, Response]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, response: Response, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        size = len(response.body)
        if size > self.max_bytes:
            return
        with self._lock:
            self._drop(response.id)
            self._kept[response.id] = (now, response)
            self._bytes += size
            self._expire(now)

    def recent(self, within: float, now: float | None = None) -> list[Response]:
        """The answers sent in the last ``within`` seconds, oldest first; they are forgotten,
        so that each is sent again at most once."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            due = [rid for rid, (sent, _) in self._kept.items() if now - sent <= within]
            answers = [self._kept[rid][1] for rid in due]
            for request_id in due:
                self._drop(request_id)
            return answers

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def _drop(self, request_id: str) -> None:
        kept = self._kept.pop(request_id, None)
        if kept is not None:
            self._bytes -= len(kept[1].body)

    def _expire(self, now: float) -> None:
        while self._kept:
            request_id, (sent, _) = next(iter(self._kept.items()))
            if (
                now - sent <= self.keep_seconds
                and len(self._kept) <= self.max_count
                and self._bytes <= self.max_bytes
            ):
                return
            self._drop(request_id)
