"""The local inspector: records every exchange the session serves, shows them in a web page on
loopback, and replays them (as captured, or edited) to the local app.

Wiring, for the CLI and the Python API::

    inspector = Inspector(forwarder, status=lambda: {...})
    session = Session(..., on_request_done=inspector.record)
    print("Inspector", inspector.start("127.0.0.1:4040"))   # .moved if the port was taken
    ...
    inspector.close()

Faults reach the inspector through the same hook: the session hands ``on_request_done`` the
response it sent, whose ``fault`` says which side failed (the local app, or the agent).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from hatchway import protocol
from hatchway.serving.forward import Forwarder
from hatchway.ui.inspector.capture import (
    MAX_BODY_BYTES,
    MAX_REQUESTS,
    MAX_TOTAL_BYTES,
    Capture,
    Exchange,
    UnknownExchange,
)
from hatchway.ui.inspector.replay import ReplayRefused, build_request
from hatchway.ui.inspector.server import (
    DEFAULT_ADDRESS,
    HEARTBEAT_SECONDS,
    InspectorError,
    InspectorServer,
    NoFreePort,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "MAX_BODY_BYTES",
    "MAX_REQUESTS",
    "MAX_TOTAL_BYTES",
    "Exchange",
    "Inspector",
    "InspectorError",
    "NoFreePort",
    "ReplayRefused",
    "UnknownExchange",
]


class Inspector:
    """Capture + page + replay for one session's local app. Thread-safe."""

    def __init__(
        self,
        forwarder: Forwarder,
        status: Callable[[], dict[str, Any]],
        *,
        max_requests: int = MAX_REQUESTS,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_total_bytes: int = MAX_TOTAL_BYTES,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.forwarder = forwarder
        self.capture = Capture(max_requests, max_body_bytes, clock, max_total_bytes)
        self._session_status = status
        self._server = InspectorServer(self.capture, self.replay, self.status, heartbeat_seconds)
        self._replay_ids = itertools.count(1)
        self._replay_ids_lock = threading.Lock()

    @property
    def url(self) -> str | None:
        """Where the page is, once started."""
        return self._server.url

    @property
    def moved(self) -> bool:
        """Whether the port asked for was taken and the next free one was used."""
        return self._server.moved

    def record(
        self, request: protocol.Request, response: protocol.Response, elapsed_ms: float
    ) -> None:
        """The session's ``on_request_done`` hook (the new entry is ``capture.newest_first()[0]``
        until the next one lands)."""
        self.capture.add(request, response, elapsed_ms)

    def replay(self, exchange_id: int, edits: Any = None) -> Exchange:
        """Send a captured request to the local app again, ``edits`` (the API's JSON object)
        applied; the replay is recorded, marked with the id it replays, and returned.

        Raises UnknownExchange, or ReplayRefused with the reason and an HTTP status.
        """
        original = self.capture.get(exchange_id)
        if original is None:
            raise UnknownExchange(exchange_id)
        with self._replay_ids_lock:
            request_id = f"replay-{next(self._replay_ids)}"
        request = build_request(original, edits, request_id)
        started = time.monotonic()
        response = self.forwarder.handle(request)  # the one path to the target, byte-exact
        elapsed_ms = (time.monotonic() - started) * 1000
        return self.capture.add(request, response, elapsed_ms, replay_of=exchange_id)

    def status(self) -> dict[str, Any]:
        """The caller's session status, with the inspector's own state and counts."""
        capture = self.capture
        return {
            "session": self._session_status(),
            "inspector": {"url": self.url, "moved": self.moved},
            "requests": {
                "kept": len(capture),
                "recorded": capture.recorded,
                "replays": capture.replays,
                "faults": capture.faults,
                "max_requests": capture.max_requests,
                "max_body_bytes": capture.max_body_bytes,
            },
        }

    def start(self, address: str = DEFAULT_ADDRESS) -> str:
        """Serve the page on loopback ``address`` (port 0: any free port); return its URL.

        Raises InspectorError for a non-loopback address, NoFreePort (a subclass) when no
        nearby port is free."""
        return self._server.start(address)

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
