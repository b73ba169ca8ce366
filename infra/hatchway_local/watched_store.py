"""``WatchedMemoryStore``: the relay's memory store, with a way for a coroutine to wait for an
agent's answer.

The relay's visitor path waits for an answer with ``Store.wait_response``, which blocks its
thread. Behind ``hatchway-local`` with the store in memory, visits run as steps on the gateway's
event loop (``visits.VisitSteps``) instead, one coroutine per visitor rather than one parked
thread: each wait registers a wake-up here, called the moment the answer is stored or the
agent's connection goes away, the same two events that wake a blocked waiter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.ports import Clock

Wake = Callable[[], None]
"""Called from whichever thread stored the answer or dropped the connection; it must be quick
and thread-safe (the gateway's schedules the waiter on its loop)."""


class WatchedMemoryStore(MemoryStore):
    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self._watch_lock = threading.Lock()
        self._awaited_on: dict[str, str] = {}
        """The connection each awaited request was posted to."""
        self._wakes: dict[str, Wake] = {}

    def watch_response(self, request_id: str, wake: Wake) -> None:
        """Call ``wake`` once, when ``request_id``'s answer lands or its connection goes; at
        once if nobody expects that answer. A later watch of the same request replaces this
        one (a request has one waiter). The caller then looks with ``wait_response`` and a
        time already past, so an answer stored just before the watch is not missed."""
        with self._watch_lock:
            if request_id in self._awaited_on:
                self._wakes[request_id] = wake
                return
        wake()

    def expect_response(self, request_id: str, connection_id: str, expires_at: float) -> None:
        super().expect_response(request_id, connection_id, expires_at)
        with self._watch_lock:
            self._awaited_on[request_id] = connection_id

    def put_response(self, request_id: str, answer: bytes, expires_at: float) -> bool:
        stored = super().put_response(request_id, answer, expires_at)
        if stored:
            self._wake(request_id)
        return stored

    def delete_connection(self, connection_id: str) -> None:
        super().delete_connection(connection_id)
        with self._watch_lock:
            orphans = [r for r, c in self._awaited_on.items() if c == connection_id]
        for request_id in orphans:
            self._wake(request_id)

    def forget_response(self, request_id: str) -> None:
        super().forget_response(request_id)
        with self._watch_lock:
            self._awaited_on.pop(request_id, None)
            self._wakes.pop(request_id, None)

    def _wake(self, request_id: str) -> None:
        with self._watch_lock:
            wake = self._wakes.pop(request_id, None)
        if wake is not None:
            wake()
