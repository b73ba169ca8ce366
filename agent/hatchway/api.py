"""The Python API: open a tunnel from code, e.g. in a test that needs a webhook to reach it.

    import hatchway

    with hatchway.connect(3000, subdomain="demo") as tunnel:
        print(tunnel.url)                      # ready: connect() returned after the welcome
        exchange = tunnel.wait_for_request()   # or tunnel.on_request(callback)

Settings resolve as on the command line: argument > environment (``HATCHWAY_SERVER``,
``HATCHWAY_TOKEN``) > config file > default. Refusals raise the typed errors exported by
``hatchway``: ``TokenRefused``, ``NameTaken``, ``RelayUnreachable``. A ``Tunnel`` is thread-safe:
callbacks run on the agent's worker threads, and every method may be called from any thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hatchway import protocol
from hatchway.config import resolve_rotate_after, resolve_settings
from hatchway.errors import TokenRefused
from hatchway.service import Service
from hatchway.serving.session import CONNECT_TIMEOUT_SECONDS, MAX_STOP_GRACE_SECONDS
from hatchway.serving.tunnels import tunnel_options
from hatchway.ui.display import Listener

log = logging.getLogger("hatchway.api")

MAX_RECENT_REQUESTS = 100
"""Exchanges ``Tunnel.requests`` keeps by default; older ones are forgotten."""

WAIT_TIMEOUT_SECONDS = 30.0
"""How long ``Tunnel.wait_for_request`` waits by default."""


@dataclass(frozen=True)
class Exchange:
    """One request the tunnel served, the response the visitor got, and how long it took."""

    request: protocol.Request
    response: protocol.Response
    elapsed_ms: float

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def target(self) -> str:
        """Path and query as the local app saw them."""
        return self.request.target

    @property
    def status(self) -> int:
        return self.response.status


RequestCallback = Callable[[Exchange], object]


class _Recorder(Listener):
    """Keeps the recent exchanges and runs the user's callbacks, as requests are served."""

    def __init__(self, max_requests: int) -> None:
        self.recent: deque[Exchange] = deque(maxlen=max_requests)
        self.callbacks: list[RequestCallback] = []
        self.arrived = threading.Condition()

    @property
    def may_wait(self) -> bool:
        return bool(self.callbacks)  # the user's callbacks may do anything

    def request(
        self, request: protocol.Request, response: protocol.Response, elapsed_ms: float
    ) -> None:
        exchange = Exchange(request, response, elapsed_ms)
        with self.arrived:
            self.recent.append(exchange)
            self.arrived.notify_all()
            callbacks = list(self.callbacks)
        for callback in callbacks:
            try:
                callback(exchange)
            except Exception:  # the user's callback must not break the tunnel
                log.exception("on_request callback %r failed", callback)


class Tunnel:
    """An open tunnel. Use it as a context manager, or call ``close()``."""

    def __init__(self, service: Service, recorder: _Recorder) -> None:
        self._service = service
        self._recorder = recorder
        # The reachable URL is worked out once per welcome: a name lookup is not free.
        self._url_lock = threading.Lock()
        self._url_for: protocol.TunnelInfo | None = None
        self._url = ""

    @property
    def name(self) -> str:
        return self._info().name

    @property
    def url(self) -> str:
        """A public URL this machine's own HTTP clients can reach: the first of :attr:`urls`
        whose host name resolves here. On ``hatchway-local`` that is the path form
        (``http://127.0.0.1:8080/t/<name>/``), because ``<name>.localhost`` resolves only in
        browsers and curl, not through the system resolver that urllib or requests use."""
        info = self._info()
        with self._url_lock:
            if self._url_for is not info:
                self._url_for, self._url = info, reachable_url(info.public_urls)
            return self._url

    @property
    def public_url(self) -> str:
        """The relay's preferred URL for visitors: a custom hostname's if the tunnel has one,
        else the subdomain form when the relay has a domain, else the path form."""
        return self._info().public_urls[0]

    @property
    def urls(self) -> tuple[str, ...]:
        """Every public URL of the tunnel, in the order of :attr:`public_url`'s preference."""
        return self._info().public_urls

    @property
    def inspector_url(self) -> str | None:
        return self._service.status.inspector_url

    @property
    def status(self) -> dict[str, Any]:
        """The same status the inspector's ``/api/status`` shows."""
        return self._service.status.as_dict()

    @property
    def requests(self) -> list[Exchange]:
        """The most recent exchanges, oldest first (a copy)."""
        with self._recorder.arrived:
            return list(self._recorder.recent)

    def on_request(self, callback: RequestCallback) -> RequestCallback:
        """Call ``callback(exchange)`` after each request (usable as a decorator)."""
        with self._recorder.arrived:
            self._recorder.callbacks.append(callback)
        return callback

    def wait_for_request(
        self,
        where: Callable[[Exchange], bool] | None = None,
        timeout: float = WAIT_TIMEOUT_SECONDS,
    ) -> Exchange:
        """The first exchange, among those kept, matching ``where`` (any, if None); waits up to
        ``timeout`` seconds for one to arrive. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        recorder = self._recorder
        with recorder.arrived:
            while True:
                for exchange in recorder.recent:
                    if where is None or where(exchange):
                        return exchange
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching request reached {self.url} in {timeout:g} s")
                recorder.arrived.wait(remaining)

    def close(self, grace: float = 0.0) -> None:
        """Stop serving; safe to call twice, from any thread. With ``grace`` (seconds), leave
        as ``hatchway http`` does on Ctrl-C first: take no new requests (a pool's other
        members get them; a lone tunnel's visitors wait a moment for one that takes the name
        back) and answer those in flight for at most that long. Without, requests in flight
        are cut short."""
        if not 0 <= grace <= MAX_STOP_GRACE_SECONDS:
            raise ValueError(f"grace: give 0 to {MAX_STOP_GRACE_SECONDS:g} seconds")
        if grace > 0:
            self._service.stop(grace)
        self._service.close()

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.url if self._service.session.welcome else "not connected"
        return f"<hatchway.Tunnel {where}>"

    def _info(self) -> protocol.TunnelInfo:
        welcome = self._service.session.welcome
        if welcome is None:
            raise RuntimeError("the tunnel is not connected")
        return welcome.tunnels[0]


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return True


def reachable_url(urls: tuple[str, ...]) -> str:
    """The first of ``urls`` whose host resolves on this machine, else the first of all."""
    for url in urls:
        host = urllib.parse.urlsplit(url).hostname
        if host and _resolves(host):
            return url
    return urls[0]


def connect(
    target: int | str,
    *,
    subdomain: str | None = None,
    server: str | None = None,
    token: str | None = None,
    host_header: str | None = None,
    request_header_add: Iterable[str] = (),
    request_header_remove: Iterable[str] = (),
    response_header_add: Iterable[str] = (),
    response_header_remove: Iterable[str] = (),
    basic_auth: str | None = None,
    verify_webhook: str | None = None,
    webhook_secret: str | None = None,
    large_responses: str | None = None,
    allow_cidr: Iterable[str] = (),
    deny_cidr: Iterable[str] = (),
    rate_limit: str | float | None = None,
    rate_burst: int | None = None,
    pool: bool = False,
    gzip: bool = True,
    stream: bool = False,
    rotate_after: float | None = None,
    inspect: str | bool = False,
    timeout: float = CONNECT_TIMEOUT_SECONDS,
    max_requests: int = MAX_RECENT_REQUESTS,
) -> Tunnel:
    """Open a tunnel to the local app ``target`` (a port, ``host:port`` or ``http://host:port``)
    and return once the relay welcomed it, so ``tunnel.url`` answers at once.

    The options are those of ``hatchway http``: ``allow_cidr``/``deny_cidr`` take lists of
    ranges such as ``["203.0.113.0/24"]``, ``rate_limit`` ``"20/s"``, ``"600/m"`` or a number
    of requests a second, ``rotate_after`` the seconds between connection rotations (else
    ``HATCHWAY_ROTATE_SECONDS``, else 1 h 50 min), ``pool`` True to share ``subdomain`` with
    other agents of the token that ask for it too, ``gzip`` False to send responses exactly as
    the app encoded them, ``stream`` True to pass responses of unknown length on as the app
    writes them (``hatchway-local``; a relay on AWS refuses it). ``inspect``: False (default) for no
    inspector, True for the configured address, or an address such as ``"127.0.0.1:4040"``.

    Raises ``TokenRefused`` (also when no token is configured at all), ``NameTaken``,
    ``RelayUnreachable``, and ``ValueError`` for an option that cannot be used.
    """
    options = tunnel_options(
        target,
        subdomain=subdomain,
        host_header=host_header,
        request_header_add=request_header_add,
        request_header_remove=request_header_remove,
        response_header_add=response_header_add,
        response_header_remove=response_header_remove,
        basic_auth=basic_auth,
        verify_webhook=verify_webhook,
        webhook_secret=webhook_secret,
        large_responses=large_responses,
        allow_cidr=allow_cidr,
        deny_cidr=deny_cidr,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        pool=pool,
        gzip=gzip,
        stream=stream,
    )
    settings = resolve_settings(server, token, inspect if isinstance(inspect, str) else None)
    rotate_seconds = resolve_rotate_after(rotate_after)
    for note in settings.notes:
        log.warning("%s", note)
    if not settings.token:
        raise TokenRefused(
            "no token: pass token=..., set HATCHWAY_TOKEN, or save one with "
            "`hatchway config add-token TOKEN`"
        )
    service = Service(
        settings,
        [options],
        inspect=settings.inspect if inspect is not False else None,
        connect_timeout=timeout,
        rotate_after=rotate_seconds,
    )
    recorder = _Recorder(max_requests)
    service.listeners.append(recorder)
    service.start(timeout)
    return Tunnel(service, recorder)
