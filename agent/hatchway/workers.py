"""The threads an agent serves requests on: at most ``limit`` at once, more waiting in a queue.
A thread is started only when none of those started is idle, and stays for the next request.

``concurrent.futures.ThreadPoolExecutor`` does the same with a ``Future`` for every task, whose
condition variables and the pool's idle semaphore are pure Python: about 20 µs of the agent's
CPU for each request, where the agent wants no result back. Here a task is a call put on a
queue; one that raises is logged, not kept in a future nobody reads.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("hatchway.agent")

_Task = tuple[Callable[..., object], tuple[Any, ...]]


class Workers:
    """A bounded set of worker threads fed from one queue. Thread-safe."""

    def __init__(self, limit: int, name: str = "hatchway-worker") -> None:
        if limit < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.limit = limit
        self.name = name
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._idle = 0
        """Threads done with their last task and not yet promised a new one."""
        self._closed = False

    def submit(self, task: Callable[..., object], *args: Any) -> None:
        """Run ``task(*args)`` on a worker; ``RuntimeError`` once the pool is closed."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            number = 0  # of a thread to start, if one is needed
            if self._idle:
                self._idle -= 1
            elif self._started < self.limit:
                self._started += 1
                number = self._started
        self._queue.put((task, args))
        if number:
            threading.Thread(target=self._work, name=f"{self.name}-{number}", daemon=True).start()

    def close(self) -> None:
        """Drop the tasks not started yet; each thread ends once its current task returns."""
        with self._lock:
            self._closed = True
            started = self._started
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        for _ in range(started):
            self._queue.put(None)

    @property
    def threads(self) -> int:
        """Threads started so far (each lives until ``close``)."""
        with self._lock:
            return self._started

    @property
    def idle(self) -> int:
        """Threads done with their last task and not yet given another."""
        with self._lock:
            return self._idle

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            task, args = item
            try:
                task(*args)
            except Exception:
                log.exception("a worker's task failed")
            with self._lock:
                self._idle += 1
