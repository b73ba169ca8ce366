"""What the loopback web pages share (the agent's inspector and the operator's dashboard): the
Host check that keeps them to this machine, their static files and security headers, and their
answers, JSON and byte bodies with their length and those headers (``JsonReplies``).

Nothing here imports ``http.server``: that brings ``ssl`` (4.2 MiB of OpenSSL) into the agent.
``JsonReplies`` answers on a handler that has ``BaseHTTPRequestHandler``'s ways to write (the
dashboard's) or ``loopback_http.RequestHandler`` (the inspector's)."""

from __future__ import annotations

import ipaddress
import json
import pkgutil
from http import HTTPStatus
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any

Headers = tuple[tuple[str, str], ...]

PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
"""A page's routes, each served from a file of its package's ``static/`` folder."""

PAGE_SECURITY_HEADERS: Headers = (
    # The pages render data only through textContent; the policy is a second wall: no inline
    # script, nothing from another origin, images only from data: URIs.
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def page_files(package: str) -> dict[str, tuple[bytes, str]]:
    """Each route of ``PAGE_FILES`` with its file's bytes and content type, read once.

    Read through the package's loader (``pkgutil``), which finds them in a folder or a zip as
    ``importlib.resources`` does, without the modules (``zipfile``, ``tempfile``, ``shutil``,
    compression) and 0.7 MiB that ``importlib.resources`` brings into the agent."""
    files: dict[str, tuple[bytes, str]] = {}
    for route, (name, kind) in PAGE_FILES.items():
        data = pkgutil.get_data(package, f"static/{name}")
        if data is None:
            raise FileNotFoundError(f"{package} cannot read its static/{name}")
        files[route] = (data, kind)
    return files


def is_loopback_host(host_header: str) -> bool:
    """Whether a Host header names this machine's loopback (with or without a port)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JsonReplies:
    """A request handler's ways to answer; ``security_headers`` go on every answer. Mixed in
    before a handler class that writes as ``BaseHTTPRequestHandler`` does."""

    security_headers: Headers = ()

    if TYPE_CHECKING:  # what the handler it is mixed into provides
        command: str
        close_connection: bool
        wfile: BufferedIOBase

        def send_response(self, code: int, message: str | None = None) -> None: ...

        def send_header(self, keyword: str, value: str) -> None: ...

        def end_headers(self) -> None: ...

    def _json(self, status: int, payload: Any, headers: Headers = ()) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8", headers)

    def _error(self, status: int, message: str, headers: Headers = ()) -> None:
        if self.command == "POST":
            self.close_connection = True  # its body may be unread: the connection cannot go on
        self._json(status, {"error": message, "status": status}, headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: Headers = ()) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (*self.security_headers, *headers):
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
