"""The dashboard's HTTP server: the page and its JSON API, on loopback only, stdlib only.

One ``ThreadingHTTPServer`` in a daemon thread. Routes:

* ``GET /`` (and ``/app.js``, ``/style.css``): the page; it carries this process's CSRF token.
* ``GET /api/state``: tokens, reserved names and live tunnels (the page polls it).
* ``GET /api/metrics?window=hour|day``: the relay's charts, each an SVG, with a summary line.
* ``GET /api/domain``: certificates' expiry, the domain jobs' last runs, the stack's alarms.
* ``POST /api/tokens``: a new token, answered once with the token itself (201).
* ``POST /api/tokens/{id}/revoke`` with ``{"confirm": id}``: delete it, cut its tunnels.
* ``POST /api/reservations`` ``{"name", "token_id"}``; ``POST /api/reservations/{name}/release``.

The page manages who may use the relay, so beyond listening on loopback the server answers
only requests whose ``Host`` is a loopback name (a DNS-rebinding page cannot read it), and a
state-changing request needs JSON, an ``Origin`` of this very page when one is sent, and the
per-process CSRF token in ``X-CSRF-Token``. Nothing a request carries is logged.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import re
import secrets
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from hatchway import protocol
from hatchway.ui.json_replies import (
    PAGE_SECURITY_HEADERS,
    JsonReplies,
    is_loopback_host,
    page_files,
)
from hatchway_local.dashboard import charts
from hatchway_local.dashboard.data import DashboardSource, Refused, Snapshot, parse_limits
from hatchway_local.dashboard.metrics import WINDOWS, ChartSet, DomainStatus, MetricsSource

log = logging.getLogger("hatchway.dashboard")

HOST = "127.0.0.1"
"""The dashboard never listens elsewhere: it creates and revokes tokens."""

DEFAULT_PORT = 4050
"""Where it listens unless told otherwise (the agent's inspector has 4040)."""

PORT_TRIES = 20
"""Ports tried, counting up from the one asked for, when it is taken."""

MAX_BODY_BYTES = 16 * 1024
"""Largest request body accepted (a new token's form is a few hundred bytes)."""

SOCKET_TIMEOUT_SECONDS = 30.0

DOMAIN_CACHE_SECONDS = 300.0
"""Certificates and job runs change daily at most: read them every five minutes."""

CSRF_HEADER = "X-CSRF-Token"

SECURITY_HEADERS = (*PAGE_SECURITY_HEADERS, ("X-Frame-Options", "DENY"))

_REVOKE = re.compile(r"^/api/tokens/([0-9a-f]{1,64})/revoke$")
_RELEASE = re.compile(r"^/api/reservations/([a-z0-9-]{1,63})/release$")

T = TypeVar("T")


class DashboardError(Exception):
    """The dashboard cannot listen where asked."""


@dataclass(frozen=True)
class Sources:
    """What one dashboard shows: the relay's state, its metrics, and what to call it."""

    data: DashboardSource
    metrics: MetricsSource
    title: str
    refresh_seconds: float = 5.0
    """How often the page asks for the tunnels and tokens again."""
    metrics_seconds: float = 60.0
    """How often the charts are read again (each CloudWatch read is billed)."""


class _Cached:
    """One value, read again at most every ``seconds`` whatever the number of open pages."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, read: Callable[[], T]) -> T:
        with self._lock:
            found = self._values.get(key)
            if found is not None and time.monotonic() - found[0] < self.seconds:
                value: T = found[1]
                return value
            value = read()
            self._values[key] = (time.monotonic(), value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    app: DashboardServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN (a DNS query); the name is not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class DashboardServer:
    """Serves one relay's dashboard; ``start`` binds, ``close`` stops."""

    def __init__(self, sources: Sources, csrf_token: str | None = None) -> None:
        self.sources = sources
        self.csrf_token = csrf_token or secrets.token_urlsafe(32)
        self.url: str | None = None
        self.snapshots = _Cached(sources.refresh_seconds * 0.8)
        self.chart_sets = _Cached(sources.metrics_seconds * 0.9)
        self.domains = _Cached(DOMAIN_CACHE_SECONDS)
        self.static = page_files("hatchway_local.dashboard")
        page, kind = self.static["/"]
        self.static["/"] = (self._page(page), kind)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _page(self, template: bytes) -> bytes:
        values = {
            "{{csrf}}": self.csrf_token,
            "{{title}}": self.sources.title,
            "{{refresh_ms}}": str(round(self.sources.refresh_seconds * 1000)),
            "{{metrics_ms}}": str(round(self.sources.metrics_seconds * 1000)),
        }
        text = template.decode()
        for placeholder, value in values.items():
            text = text.replace(placeholder, _html_attribute(value))
        return text.encode()

    def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:``port`` (or the next free port); return the page's URL."""
        last = min(65535, port + PORT_TRIES - 1) if port else 0
        for candidate in range(port, last + 1):
            try:
                self._httpd = _HTTPServer((HOST, candidate), _Handler)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise DashboardError(
                        f"the dashboard cannot listen on {HOST}:{candidate}: {exc.strerror}"
                    ) from None
        else:
            raise DashboardError(
                f"ports {port}-{last} on {HOST} are all taken; choose another with --port"
            )
        self._httpd.app = self
        self.url = f"http://{HOST}:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="hatchway-dashboard", daemon=True
        )
        self._thread.start()
        return self.url

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> DashboardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Reads, shared by every open page -----------------------------------------------------

    def snapshot(self) -> Snapshot:
        return self.snapshots.get("state", self.sources.data.snapshot)

    def chart_set(self, window: str) -> ChartSet:
        return self.chart_sets.get(window, lambda: self.sources.metrics.charts(window, time.time()))

    def domain(self) -> DomainStatus:
        return self.domains.get("domain", lambda: self.sources.metrics.domain(time.time()))


def _html_attribute(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


class _Handler(JsonReplies, BaseHTTPRequestHandler):
    security_headers = SECURITY_HEADERS

    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_SECONDS
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # paths only would be safe, but nothing here needs a request log

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        if not is_loopback_host(self.headers.get("Host", "")):
            self._error(403, "the dashboard answers only to loopback host names")
            return
        url = urllib.parse.urlsplit(self.path)
        route = self._resolve(app, url.path, urllib.parse.parse_qs(url.query))
        try:
            if route is None:
                self._error(404, f"no such page or API: {url.path}")
            elif route[0] != method:
                self._error(405, f"use {route[0]} here", (("Allow", route[0]),))
            elif method == "POST":
                body = self._checked_body(app)
                if body is not None:
                    route[1](body)
            else:
                route[1]({})
        except Refused as exc:
            self._error(exc.status, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # the store or AWS failed: say so, keep serving
            log.warning("dashboard: %s %s failed: %s", method, url.path, exc.__class__.__name__)
            self._error(502, f"reading or changing the relay failed: {exc}")

    def _resolve(
        self, app: DashboardServer, path: str, query: dict[str, list[str]]
    ) -> tuple[str, Callable[[dict[str, Any]], None]] | None:
        if path in app.static:
            return "GET", lambda _: self._send(200, *app.static[path])
        window = (query.get("window") or ["hour"])[0]
        routes: dict[str, tuple[str, Callable[[dict[str, Any]], None]]] = {
            "/api/state": ("GET", lambda _: self._json(200, app.snapshot().as_json())),
            "/api/metrics": ("GET", lambda _: self._metrics(app, window)),
            "/api/domain": ("GET", lambda _: self._json(200, app.domain().as_json())),
            "/api/tokens": ("POST", lambda body: self._create(app, body)),
            "/api/reservations": ("POST", lambda body: self._reserve(app, body)),
        }
        if path in routes:
            return routes[path]
        if match := _REVOKE.match(path):
            return "POST", lambda body: self._revoke(app, match.group(1), body)
        if match := _RELEASE.match(path):
            return "POST", lambda body: self._release(app, match.group(1), body)
        return None

    def _checked_body(self, app: DashboardServer) -> dict[str, Any] | None:
        """The JSON object of a state-changing request that passed every check, else None
        (answered)."""
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            self._error(403, f"changes from another site ({origin}) are refused")
            return None
        given = self.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), app.csrf_token.encode()):
            self._error(403, "the page's CSRF token is missing or stale: reload the dashboard")
            return None
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._error(415, "send JSON (Content-Type: application/json)")
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._error(400, "Content-Length is not a number")
            return None
        if not 0 <= length <= MAX_BODY_BYTES:
            self._error(413, f"the request is {length} bytes; at most {MAX_BODY_BYTES}")
            return None
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._error(400, "the request body is not JSON")
            return None
        if not isinstance(body, dict):
            self._error(400, "the request body must be a JSON object")
            return None
        return body

    # --- Routes -------------------------------------------------------------------------------

    def _metrics(self, app: DashboardServer, window: str) -> None:
        if window not in WINDOWS:
            raise Refused(f"unknown window {window!r}: use {' or '.join(WINDOWS)}")
        found = app.chart_set(window)
        payload = found.as_json()
        for chart, shown in zip(found.charts, payload["charts"], strict=True):
            shown["svg"] = charts.render(chart)
            del shown["series"]  # the image has them; the totals are in the summary
        self._json(200, payload)

    def _create(self, app: DashboardServer, body: dict[str, Any]) -> None:
        label = body.get("label")
        reserve = body.get("reserve") or []
        if not isinstance(label, str):
            raise Refused("give the token a label")
        if isinstance(reserve, str):
            reserve = [n for n in re.split(r"[,\s]+", reserve) if n]
        if not isinstance(reserve, list) or not all(isinstance(n, str) for n in reserve):
            raise Refused("reserve: a list of tunnel names")
        limits = body.get("limits")
        if limits is not None and not isinstance(limits, dict):
            raise Refused("limits: an object of rate, burst, max_tunnels, requests_per_day")
        created = app.sources.data.create_token(label, tuple(reserve), parse_limits(limits))
        app.snapshots.clear()
        log.info("dashboard: created token %s", created.row.token_id)
        self._json(
            201,
            {
                "token": created.token,
                "token_id": created.row.token_id,
                "label": created.row.label,
                "reserved": list(created.row.reserved),
                "note": "shown once: the relay keeps only its hash",
            },
        )

    def _revoke(self, app: DashboardServer, token_id: str, body: dict[str, Any]) -> None:
        if body.get("confirm") != token_id:
            raise Refused(
                f"revoking stops every tunnel of the token at once: confirm by sending "
                f'{{"confirm": "{token_id}"}}',
                428,
            )
        cut = app.sources.data.revoke_token(token_id)
        app.snapshots.clear()
        log.info("dashboard: revoked token %s (%d connections cut)", token_id, len(cut))
        self._json(200, {"revoked": token_id, "connections_cut": len(cut)})

    def _reserve(self, app: DashboardServer, body: dict[str, Any]) -> None:
        name, token_id = body.get("name"), body.get("token_id")
        if not isinstance(name, str) or not isinstance(token_id, str):
            raise Refused("give a name and the token id to reserve it for")
        try:
            protocol.validate_name(name.strip())
        except protocol.ProtocolError as exc:
            raise Refused(str(exc)) from None
        app.sources.data.reserve(name.strip(), token_id)
        app.snapshots.clear()
        self._json(201, {"reserved": name.strip(), "token_id": token_id})

    def _release(self, app: DashboardServer, name: str, body: dict[str, Any]) -> None:
        token_id = body.get("token_id")
        if not isinstance(token_id, str):
            raise Refused("give the id of the token that holds the reservation")
        app.sources.data.release(name, token_id)
        app.snapshots.clear()
        self._json(200, {"released": name})

    # --- Writing ------------------------------------------------------------------------------
