"""One agent run wired together, for the CLI and the Python API alike: a forwarder and header
rules per tunnel behind a router, one session (one WebSocket) for all the tunnels, the live
status, the optional inspector, and the listeners that show what happens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from hatchway import protocol
from hatchway.config import Settings
from hatchway.errors import HatchwayError
from hatchway.protocol import Request, Response
from hatchway.serving.forward import Forwarder
from hatchway.serving.session import Session
from hatchway.serving.tunnels import Pipeline, Router, TunnelOptions
from hatchway.ui.display import Listener, Status
from hatchway.ui.limits import INSPECT_MEMORY_BYTES

if TYPE_CHECKING:  # imported when one is started: its web server is memory a plain agent saves
    from hatchway.ui.inspector import Inspector

log = logging.getLogger("hatchway.agent")


class Service:
    """Everything one ``hatchway http``/``start`` (or ``hatchway.connect``) runs.

    ``run()`` blocks until ``close()`` (or a fatal error, which it raises); ``start()`` runs in
    the background and returns once the relay welcomed the session.
    """

    def __init__(
        self,
        settings: Settings,
        tunnels: Sequence[TunnelOptions],
        listeners: Sequence[Listener] = (),
        *,
        inspect: str | None = None,
        inspect_memory: int = INSPECT_MEMORY_BYTES,
        retry_at_start: bool = False,
        **session_options: Any,
    ) -> None:
        self.settings = settings
        self.tunnels = tuple(tunnels)
        self.listeners = list(listeners)
        self.inspect = inspect
        self.forwarders = [
            # Large bodies pass straight through; the inspector shows their first bytes.
            Forwarder(
                t.target,
                max_response_bytes=t.max_response_bytes,
                pass_large_bodies=True,
                keep_passed_prefix=inspect is not None,
                # Uploads end when the relay stops waiting, as the session's own do.
                blob_timeout=lambda request: self.session.blob_timeout(request),
                stream=t.stream,
                time_left=lambda request: self.session.time_left(request),
            )
            for t in self.tunnels
        ]
        self.router = Router(
            [Pipeline(t, f.handle) for t, f in zip(self.tunnels, self.forwarders, strict=True)]
        )
        self.status = Status(settings.server, self.tunnels)
        self.inspector: Inspector | None = None
        if inspect is not None:
            from hatchway.ui.inspector import Inspector

            # Replays go through the router, so they reach the captured request's own tunnel
            # with its header rules; the inspector only ever calls ``handle`` on it.
            self.inspector = Inspector(
                cast(Forwarder, self.router),
                status=self.status.as_dict,
                max_total_bytes=inspect_memory,
            )
        self.session = Session(
            settings.server,
            settings.token or "",
            self.status.track(self.router),
            [t.spec() for t in self.tunnels],
            retry_at_start=retry_at_start,
            on_ready=self._ready,
            on_request_done=self._done,
            request_done_may_wait=self._listeners_may_wait,
            # Every wait of the router's forwarders is on an http1 socket.
            serve_on_reader=True,
            on_reconnecting=self._reconnecting,
            **session_options,
        )
        self._closed = False
        # A second close() (the main thread's, after a signal handler's) waits for the first to
        # finish, so the process never exits with the screen half restored or a line unprinted.
        self._close_lock = threading.Lock()

    # --- Running ------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until closed; raises the session's typed errors (after telling listeners)."""
        self._start_inspector()
        self._tell(lambda listener: listener.started())
        try:
            self.session.run()
        except HatchwayError as exc:
            error = exc
            self._tell(lambda listener: listener.fatal(error))
            raise
        finally:
            self.close()

    def start(self, timeout: float) -> Service:
        """Run in the background; return once welcomed, or close and raise why not."""
        self._start_inspector()
        self._tell(lambda listener: listener.started())
        try:
            self.session.start(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def stop(self, grace: float) -> None:
        """Leave gracefully (``Session.stop``: no new requests, those held answered within
        ``grace`` seconds), saying so, then ``close``. A ``close`` meanwhile cuts it short."""
        with self._close_lock:
            if self._closed:
                return
        held = self.session.in_flight
        self.status.set_state("stopping", f"finishing {held} request{'s' * (held != 1)}")
        self._tell(lambda listener: listener.stopping(held, grace))
        self.session.stop(grace)
        self.close()

    def close(self) -> None:
        """Stop everything; safe to call twice and from any thread; returns once all is done."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self.session.close()
            if self.inspector is not None:
                self.inspector.close()
            for forwarder in self.forwarders:
                forwarder.close()
            self.status.set_state("closed")
            self._tell(lambda listener: listener.close())

    # --- Session hooks ------------------------------------------------------------------------

    def _start_inspector(self) -> None:
        if self.inspector is None or self.inspect is None:
            return
        from hatchway.ui.inspector import InspectorError

        try:
            url = self.inspector.start(self.inspect)
        except InspectorError as exc:
            # The tunnel is what the user asked for; it runs on without its inspector.
            self.status.inspector_note = f"inspector not started: {exc}"
            self.inspector = None
            return
        self.status.inspector_url = url
        if self.inspector.moved:
            self.status.inspector_note = f"{self.inspect} was taken"

    def _ready(self, welcome: protocol.Welcome) -> None:
        self.router.bind(welcome)  # first: the connection serves nothing until this returns
        self.status.ready(welcome)
        self._tell(lambda listener: listener.ready(welcome))

    def _done(self, request: Request, response: Response, elapsed_ms: float) -> None:
        if self.inspector is not None:
            self.inspector.record(request, response, elapsed_ms)
        self._tell(lambda listener: listener.request(request, response, elapsed_ms))

    def _listeners_may_wait(self) -> bool:
        return any(listener.may_wait for listener in self.listeners)

    def _reconnecting(self, attempt: int, delay: float, error: BaseException | None) -> None:
        reason = f": {error}" if error else ""
        self.status.set_state("reconnecting", f"retry {attempt} in {delay:.1f} s{reason}")
        self._tell(lambda listener: listener.reconnecting(attempt, delay, error))

    def _tell(self, event: Callable[[Listener], None]) -> None:
        for listener in self.listeners:
            try:
                event(listener)
            except Exception:  # a display or callback bug must not stop the tunnel
                log.exception("a listener failed")
