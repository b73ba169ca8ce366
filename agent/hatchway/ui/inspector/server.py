"""The inspector's HTTP server: the page and its JSON API, on loopback only, stdlib only.

One ``loopback_http.LoopbackHTTPServer`` runs in a daemon thread (one more thread per open
connection), so the agent gains no dependency, nor ``http.server``'s ``ssl``. Routes:

* ``GET /`` (and ``/app.js``, ``/style.css``): the page, from the package's ``static/`` files.
* ``GET /api/requests?path=&method=&status=``: summaries, newest first.
* ``GET /api/requests/{id}``: one exchange with its bodies rendered (see ``views``).
* ``POST /api/requests/{id}/replay`` with optional JSON edits: 201 and the replay's summary.
* ``GET /api/status``: what the caller's status callable says, plus the capture's counts.
* ``GET /api/events``: Server-Sent Events, one ``request`` event per new exchange, a comment
  line every ``HEARTBEAT_SECONDS`` so that a vanished client is noticed (its write fails).

The captured requests may hold secrets and a replay acts on the local app, so beyond listening on
loopback the server answers only requests whose ``Host`` is a loopback name (a DNS-rebinding
page cannot read it) and refuses a POST whose ``Origin`` is another site (no cross-site replay).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import selectors
import socket
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any

from hatchway.errors import HatchwayError
from hatchway.ui.inspector import views
from hatchway.ui.inspector.capture import Capture, Exchange, SubscriptionEnded, UnknownExchange
from hatchway.ui.inspector.replay import ReplayRefused
from hatchway.ui.json_replies import (
    PAGE_SECURITY_HEADERS,
    JsonReplies,
    is_loopback_host,
    page_files,
)
from hatchway.ui.loopback_http import LoopbackHTTPServer, RequestHandler

log = logging.getLogger("hatchway.ui.inspector")

DEFAULT_ADDRESS = "127.0.0.1:4040"
"""Where the inspector listens unless told otherwise (ngrok's habit, so users find it)."""

PORT_TRIES = 20
"""Ports tried, counting up from the one asked for, when it is taken."""

HEARTBEAT_SECONDS = 15.0
"""Idle time after which an event stream sends a comment line, to notice a vanished client."""

MAX_EVENT_CLIENTS = 8
"""Event streams open at once (each holds a thread); more are answered 503."""

SOCKET_TIMEOUT_SECONDS = 30.0
"""A connection idle (or a client not reading) this long is closed."""

MAX_EDITS_BYTES = 8 * 1024 * 1024
"""Largest replay request body accepted: a 4.25 MiB request body, base64 and JSON-escaped."""


_REQUEST_PATH = re.compile(r"^/api/requests/([0-9]{1,18})(/replay)?$")

Replay = Callable[[int, Any], Exchange]
Status = Callable[[], dict[str, Any]]


class InspectorError(HatchwayError):
    """The inspector cannot listen where asked (not loopback, or no free port)."""


class NoFreePort(InspectorError):
    """Every port tried was taken: a tunnel may well run on without its inspector."""


def parse_address(address: str) -> tuple[str, int]:
    """``4040``, ``127.0.0.1:4040``, ``localhost:0`` or ``[::1]:4040`` → (host, port).

    Only loopback addresses are accepted: the inspector shows captured requests and replays them.
    """
    text = address.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, _, port_text = text.rpartition(":")
    host = "127.0.0.1" if host.lower() == "localhost" else host
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise InspectorError(
            f"inspector address {address!r}: the inspector listens on loopback only (it shows "
            "captured requests and can replay them); use 127.0.0.1:PORT, localhost:PORT or "
            "[::1]:PORT"
        )
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InspectorError(
            f"inspector address {address!r}: the port must be a number from 0 to 65535"
        )
    return host, int(port_text)


class _HTTPServer(LoopbackHTTPServer):
    # _serve() calls handle_request() only once the socket is readable; a zero timeout means it
    # never blocks there should the pending connection vanish before it is accepted.
    timeout = 0.0
    app: InspectorServer


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class InspectorServer:
    """Serves one capture; ``start`` binds (moving to a free port if needed), ``close`` stops."""

    def __init__(
        self,
        capture: Capture,
        replay: Replay,
        status: Status,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.capture = capture
        self.replay = replay
        self.status = status
        self.heartbeat_seconds = heartbeat_seconds
        self.url: str | None = None
        self.moved = False
        self.event_slots = threading.BoundedSemaphore(MAX_EVENT_CLIENTS)
        self.static = page_files("hatchway.ui.inspector")
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    def start(self, address: str = DEFAULT_ADDRESS) -> str:
        """Listen on ``address`` (or the next free port); return the URL actually bound."""
        if self._httpd is not None:
            raise InspectorError(f"the inspector is already listening on {self.url}")
        host, port = parse_address(address)
        self._httpd = self._bind(host, port)
        self._httpd.app = self
        bound = int(self._httpd.server_address[1])
        self.moved = port != 0 and bound != port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
        self._wake = socket.socketpair()
        self._thread = threading.Thread(
            target=_serve, args=(self._httpd, self._wake[0]), name="hatchway-inspector", daemon=True
        )
        self._thread.start()
        return self.url

    def _bind(self, host: str, port: int) -> _HTTPServer:
        kind = _HTTPServer6 if ":" in host else _HTTPServer
        last = min(65535, port + PORT_TRIES - 1) if port else 0
        for candidate in range(port, last + 1):
            try:
                return kind((host, candidate), _Handler)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise InspectorError(
                        f"the inspector cannot listen on {host}:{candidate}: {exc.strerror}"
                    ) from None
        raise NoFreePort(
            f"the inspector found ports {port}-{last} on {host} all taken; "
            "choose another with --inspect 127.0.0.1:PORT (or --no-inspect)"
        )

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None or self._wake is None or self._thread is None:
            return
        self._wake[1].send(b"x")
        self._thread.join(SOCKET_TIMEOUT_SECONDS)
        self.capture.close()  # wakes the event streams, which then end
        httpd.server_close()
        for end in self._wake:
            end.close()


def _serve(httpd: _HTTPServer, wake: socket.socket) -> None:
    """Accept connections until ``wake`` is readable. Unlike ``serve_forever`` this never polls:
    the thread sleeps while the inspector is idle, and ``close()`` takes effect at once."""
    with selectors.DefaultSelector() as selector:
        selector.register(httpd, selectors.EVENT_READ)
        selector.register(wake, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if wake in ready:
                return
            httpd.handle_request()  # the listening socket is readable: accept, hand to a thread


class _Handler(JsonReplies, RequestHandler):
    security_headers = PAGE_SECURITY_HEADERS

    timeout = SOCKET_TIMEOUT_SECONDS
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("inspector: " + format, *args)

    # --- Dispatch -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        if not is_loopback_host(self.headers.get("Host", "")):
            self._error(403, "the inspector answers only to loopback host names")
            return
        url = urllib.parse.urlsplit(self.path)
        route = self._resolve(url.path, url.query)
        try:
            if route is None:
                self._error(404, f"no such page or API: {url.path}")
            elif route[0] != method:
                self._error(405, f"use {route[0]} here", (("Allow", route[0]),))
            else:
                route[1]()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not kill the connection silently
            log.exception("inspector failed on %s %s", method, self.path)
            self._error(500, f"the inspector failed: {exc.__class__.__name__}: {exc}")

    def _resolve(self, path: str, query: str) -> tuple[str, Callable[[], None]] | None:
        """(the method the path takes, what serves it), or None for an unknown path."""
        app = self.server.app
        if path in app.static:
            return "GET", lambda: self._send(200, *app.static[path])
        if path == "/api/requests":
            return "GET", lambda: self._list(app, query)
        if path == "/api/status":
            return "GET", lambda: self._json(200, app.status())
        if path == "/api/events":
            return "GET", lambda: self._events(app)
        match = _REQUEST_PATH.match(path)
        if match is None:
            return None
        exchange_id = int(match.group(1))
        if match.group(2):
            return "POST", lambda: self._replay(app, exchange_id)
        return "GET", lambda: self._detail(app, exchange_id)

    # --- Routes -------------------------------------------------------------------------------

    def _list(self, app: InspectorServer, query: str) -> None:
        try:
            filters = views.Filters.from_query(urllib.parse.parse_qs(query))
        except ValueError as exc:
            self._error(400, str(exc))
            return
        rows = [views.summary(e) for e in app.capture.newest_first() if filters.matches(e)]
        self._json(200, {"requests": rows})

    def _detail(self, app: InspectorServer, exchange_id: int) -> None:
        exchange = app.capture.get(exchange_id)
        if exchange is None:
            self._error(404, _unknown(exchange_id))
            return
        self._json(200, views.detail(exchange))

    def _replay(self, app: InspectorServer, exchange_id: int) -> None:
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            self._error(403, f"replays from another site ({origin}) are refused")
            return
        if self.headers.get("Transfer-Encoding"):
            self._error(411, "send the edits with a Content-Length")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._error(400, "Content-Length is not a number")
            return
        if not 0 <= length <= MAX_EDITS_BYTES:
            self._error(413, f"the edits are {length} bytes; at most {MAX_EDITS_BYTES}")
            return
        raw = self.rfile.read(length)
        try:
            edits = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            self._error(400, f"the replay's edits are not JSON: {exc}")
            return
        try:
            replayed = app.replay(exchange_id, edits)
        except UnknownExchange:
            self._error(404, _unknown(exchange_id))
            return
        except ReplayRefused as exc:
            self._error(exc.status, str(exc))
            return
        self._json(201, views.summary(replayed), (("Location", f"/api/requests/{replayed.id}"),))

    def _events(self, app: InspectorServer) -> None:
        if not app.event_slots.acquire(blocking=False):
            self._error(503, f"at most {MAX_EVENT_CLIENTS} live views at once; close one")
            return
        subscription = app.capture.subscribe()
        try:
            self.close_connection = True  # the stream ends only with the connection
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            for name, value in self.security_headers:
                self.send_header(name, value)
            self.end_headers()
            # A reconnecting browser resynchronises by reloading the list (see app.js).
            self._write(b"retry: 1000\n\n")
            while True:
                try:
                    exchange = subscription.next(app.heartbeat_seconds)
                except SubscriptionEnded:
                    break
                if exchange is None:
                    self._write(b": heartbeat\n\n")
                    continue
                data = json.dumps(views.summary(exchange), separators=(",", ":"))
                self._write(f"id: {exchange.id}\nevent: request\ndata: {data}\n\n".encode())
        except (OSError, ValueError):  # the client went away (or its socket was closed)
            pass
        finally:
            subscription.close()
            app.event_slots.release()

    # --- Writing ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


def _unknown(exchange_id: int) -> str:
    return (
        f"no request {exchange_id}: it never existed or was forgotten (the inspector keeps the "
        "most recent ones only)"
    )
