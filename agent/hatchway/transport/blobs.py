"""Bodies to and from the relay's blob store through the presigned URLs a request carries, with
the standard library and ``hatchway.transport.http1`` only (S3 on AWS, the local gateway's
memory store otherwise).

Connections go through the environment's HTTP proxy as the relay's WebSocket does (``proxy``),
and are kept alive and reused, a few per host: a transfer on a fresh connection paid a
TCP (and TLS) handshake each time. A kept connection the store closed meanwhile is replaced,
and the transfer tried once more on a fresh one (a GET or PUT of a presigned URL is safe to
repeat)."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hatchway.protocol import Fault, Headers, Request, Response
from hatchway.transport import proxy
from hatchway.transport.http1 import (
    BadReply,
    BodyStream,
    Connection,
    Pool,
    Reply,
    Truncated,
    client_tls,
)

log = logging.getLogger("hatchway.agent")

BLOB_TIMEOUT_SECONDS = 30.0
"""Longest a blob transfer may stall on one socket operation when the caller gives no deadline."""

ERROR_SNIPPET_BYTES = 300
"""How much of the blob store's error body is quoted in an error (S3 explains itself in XML)."""

KEPT_CONNECTIONS_PER_HOST = 8
"""Idle connections kept per blob store host."""

T = TypeVar("T")
_Key = tuple[str, str, int | None]
_pools: dict[_Key, Pool] = {}
_pools_lock = threading.Lock()


class BlobError(Exception):
    """The relay's blob store could not be reached, refused the transfer, or sent a bad body."""


def fetch(url: str, max_bytes: int, timeout: float = BLOB_TIMEOUT_SECONDS) -> bytes:
    """GET the body at a presigned ``url``; more than ``max_bytes`` is refused, from the
    Content-Length before reading when there is one, else by a bounded read."""
    where = _parse(url)

    def get(conn: Connection) -> Reply:
        conn.send("GET", where.target, [("Host", where.host)])
        return conn.receive("GET", max_bytes)

    reply = _transfer(where, timeout, get)
    if reply.status != 200:
        raise BlobError(_refusal("GET", reply))
    if reply.too_large:
        declared = reply.header("content-length")
        raise BlobError(
            f"the relay's blob store offered a body of {declared or 'more than ' + str(max_bytes)}"
            f" bytes; at most {max_bytes} are accepted"
        )
    return reply.body


def upload(url: str, body: bytes | BodyStream, timeout: float = BLOB_TIMEOUT_SECONDS) -> None:
    """PUT ``body`` to a presigned ``url``. Only Host and Content-Length are sent: a presigned
    S3 PUT signs the host alone, and any header it did not sign (Content-Type) could void it.
    A body still on its way from the local app (a ``BodyStream``) is passed on as it comes;
    the app's own failures while it does come as ``SourceFailed``, not as a ``BlobError``."""
    where = _parse(url)
    size = len(body) if isinstance(body, bytes) else body.size

    def put(conn: Connection) -> Reply:
        headers = [("Host", where.host), ("Content-Length", str(size))]
        conn.send("PUT", where.target, headers, body)
        return conn.receive("PUT", ERROR_SNIPPET_BYTES)

    # A stream can be read once: it is never sent again on a fresh connection.
    reply = _transfer(where, timeout, put, may_repeat=isinstance(body, bytes))
    if not 200 <= reply.status < 300:
        raise BlobError(_refusal("PUT", reply))


def upload_answer(
    request: Request, status: int, headers: Headers, body: bytes | BodyStream, timeout: float
) -> Response:
    """PUT a response's ``body`` to the request's upload URL: the response that says it was
    uploaded, or the agent's fault (logged) when the blob store failed."""
    assert request.upload_url is not None, "only a request with an upload URL can take it"
    try:
        upload(request.upload_url, body, timeout)
    except BlobError as exc:
        message = f"the response body could not be uploaded to the relay: {exc}"
        log.warning("request %s: %s", request.id, message)
        return Response(request.id, 502, fault=Fault("agent", message))
    size = len(body) if isinstance(body, bytes) else body.size
    return Response(request.id, status, headers, uploaded=size)


def _transfer(
    where: _Url, timeout: float, exchange: Callable[[Connection], T], may_repeat: bool = True
) -> T:
    """Run ``exchange`` on a kept connection to the URL's host (or a fresh one)."""
    try:
        return _pool(where.key).exchange(exchange, may_repeat=may_repeat, timeout=timeout)
    except Truncated as exc:
        raise BlobError(f"the relay's blob store closed the connection mid-body ({exc})") from None
    except (OSError, BadReply) as exc:
        raise BlobError(f"the relay's blob store failed: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # a proxy setting or a presigned URL that cannot be used as given
        raise BlobError(f"the relay's blob store cannot be reached: {exc}") from None


def _pool(key: _Key) -> Pool:
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            scheme, host, port = key
            tls = client_tls() if scheme == "https" else None
            pool = _pools[key] = Pool(
                lambda timeout: proxy.open_connection(
                    host, port or (443 if tls else 80), tls, timeout
                ),
                KEPT_CONNECTIONS_PER_HOST,
            )
        return pool


@dataclass(frozen=True)
class _Url:
    key: _Key
    """Scheme, host and port: which pool of kept connections serves it."""
    host: str
    """The Host header, as presigned (the signature covers it)."""
    target: str
    """The request target, exactly as presigned (the signature covers the query as written)."""


def _parse(url: str) -> _Url:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlobError("the relay sent a blob URL that is not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise BlobError("the relay sent a blob URL with an invalid port") from None
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return _Url((parts.scheme, parts.hostname, port), parts.netloc.rpartition("@")[2], target)


def _refusal(method: str, reply: Reply) -> str:
    detail = reply.body[:ERROR_SNIPPET_BYTES].decode("utf-8", "replace").strip()
    return f"the relay's blob store answered {method} with HTTP {reply.status}" + (
        f": {detail}" if detail else ""
    )
