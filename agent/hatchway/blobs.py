"""Bodies to and from the relay's blob store through the presigned URLs a request carries, with
the standard library only (S3 on AWS, the local gateway's memory store otherwise).

Connections are kept alive and reused, a few per host: a transfer on a fresh connection paid a
TCP (and TLS) handshake each time. A kept connection the store closed meanwhile is replaced,
and the transfer tried once more on a fresh one (a GET or PUT of a presigned URL is safe to
repeat)."""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

BLOB_TIMEOUT_SECONDS = 30.0
"""Longest a blob transfer may stall on one socket operation when the caller gives no deadline."""

ERROR_SNIPPET_BYTES = 300
"""How much of the blob store's error body is quoted in an error (S3 explains itself in XML)."""

KEPT_CONNECTIONS_PER_HOST = 8
"""Idle connections kept per blob store host."""

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)

T = TypeVar("T")
_Key = tuple[str, str, int | None]
_idle: dict[_Key, list[http.client.HTTPConnection]] = {}
_idle_lock = threading.Lock()


class BlobError(Exception):
    """The relay's blob store could not be reached, refused the transfer, or sent a bad body."""


def fetch(url: str, max_bytes: int, timeout: float = BLOB_TIMEOUT_SECONDS) -> bytes:
    """GET the body at a presigned ``url``; more than ``max_bytes`` is refused, from the
    Content-Length before reading when there is one, else by a bounded read."""

    def get(conn: http.client.HTTPConnection, target: str) -> bytes:
        conn.putrequest("GET", target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        if response.status != 200:
            raise BlobError(_refusal("GET", response))
        declared = response.getheader("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise BlobError(
                f"the relay's blob store offered a body of {declared} bytes; at most "
                f"{max_bytes} are accepted"
            )
        body = response.read(max_bytes + 1)
        if len(body) > max_bytes:
            raise BlobError(
                f"the relay's blob store sent more than {max_bytes} bytes; that is the most "
                "accepted"
            )
        # read(n) stops quietly at a closed connection: a declared length proves completeness.
        if declared is not None and declared.isdigit() and len(body) != int(declared):
            raise BlobError(f"the relay's blob store closed after {len(body)} of {declared} bytes")
        return body

    return _transfer(url, timeout, get)


def upload(url: str, body: bytes, timeout: float = BLOB_TIMEOUT_SECONDS) -> None:
    """PUT ``body`` to a presigned ``url``. Only Host and Content-Length are sent: a presigned
    S3 PUT signs the host alone, and any header it did not sign (Content-Type) could void it."""

    def put(conn: http.client.HTTPConnection, target: str) -> None:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        if not 200 <= response.status < 300:
            raise BlobError(_refusal("PUT", response))
        response.read()

    _transfer(url, timeout, put)


def _transfer(
    url: str, timeout: float, exchange: Callable[[http.client.HTTPConnection, str], T]
) -> T:
    """Run ``exchange`` on a kept connection to the URL's host (or a fresh one), keeping the
    connection afterwards if it can carry another request."""
    key, target = _target(url)
    conn, reused = _checkout(key, timeout)
    try:
        try:
            result = exchange(conn, target)
        except _STALE:
            if not reused:
                raise
            conn.close()  # the store closed it while it was kept: once more, on a fresh one
            conn, reused = _connect(key, timeout), False
            result = exchange(conn, target)
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise BlobError(f"the relay's blob store failed: {type(exc).__name__}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    _checkin(key, conn)
    return result


def _checkout(key: _Key, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
    while True:
        with _idle_lock:
            kept = _idle.get(key)
            conn = kept.pop() if kept else None
        if conn is None:
            return _connect(key, timeout), False
        if conn.sock is not None and not _readable(conn.sock):
            conn.sock.settimeout(timeout)
            conn.timeout = timeout
            return conn, True
        conn.close()


def _readable(sock: socket.socket) -> bool:
    """An idle connection with something to read has been closed (or broken) by the store."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _checkin(key: _Key, conn: http.client.HTTPConnection) -> None:
    # http.client drops its socket itself once a response said it would close.
    if conn.sock is not None:
        with _idle_lock:
            kept = _idle.setdefault(key, [])
            if len(kept) < KEPT_CONNECTIONS_PER_HOST:
                kept.append(conn)
                return
    conn.close()


def _connect(key: _Key, timeout: float) -> http.client.HTTPConnection:
    scheme, host, port = key
    if scheme == "https":
        return http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _target(url: str) -> tuple[_Key, str]:
    """The URL's host and the request target, kept exactly as presigned (the signature covers
    the query as written)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlobError("the relay sent a blob URL that is not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise BlobError("the relay sent a blob URL with an invalid port") from None
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return (parts.scheme, parts.hostname, port), target


def _refusal(method: str, response: http.client.HTTPResponse) -> str:
    try:
        detail = response.read(ERROR_SNIPPET_BYTES).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        detail = ""
    return f"the relay's blob store answered {method} with HTTP {response.status}" + (
        f": {detail}" if detail else ""
    )
