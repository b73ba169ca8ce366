"""Bodies to and from the relay's blob store through the presigned URLs a request carries, with
the standard library only (S3 on AWS, the local gateway's memory store otherwise)."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse

BLOB_TIMEOUT_SECONDS = 30.0
"""Longest a blob transfer may stall on one socket operation when the caller gives no deadline."""

ERROR_SNIPPET_BYTES = 300
"""How much of the blob store's error body is quoted in an error (S3 explains itself in XML)."""


class BlobError(Exception):
    """The relay's blob store could not be reached, refused the transfer, or sent a bad body."""


def fetch(url: str, max_bytes: int, timeout: float = BLOB_TIMEOUT_SECONDS) -> bytes:
    """GET the body at a presigned ``url``; more than ``max_bytes`` is refused, from the
    Content-Length before reading when there is one, else by a bounded read."""
    conn, target = _connection(url, timeout)
    try:
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
    except (OSError, http.client.HTTPException) as exc:
        raise BlobError(f"the relay's blob store failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def upload(url: str, body: bytes, timeout: float = BLOB_TIMEOUT_SECONDS) -> None:
    """PUT ``body`` to a presigned ``url``. Only Host and Content-Length are sent: a presigned
    S3 PUT signs the host alone, and any header it did not sign (Content-Type) could void it."""
    conn, target = _connection(url, timeout)
    try:
        conn.putrequest("PUT", target, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        if not 200 <= response.status < 300:
            raise BlobError(_refusal("PUT", response))
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise BlobError(f"the relay's blob store failed: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the URL's host and the request target, kept exactly as presigned (the
    signature covers the query as written)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BlobError("the relay sent a blob URL that is not an http(s) URL")
    try:
        port = parts.port
    except ValueError:
        raise BlobError("the relay sent a blob URL with an invalid port") from None
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=timeout)
    return conn, target


def _refusal(method: str, response: http.client.HTTPResponse) -> str:
    try:
        detail = response.read(ERROR_SNIPPET_BYTES).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException):
        detail = ""
    return f"the relay's blob store answered {method} with HTTP {response.status}" + (
        f": {detail}" if detail else ""
    )
