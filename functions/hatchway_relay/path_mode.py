"""Keeping path-mode tunnels apart where the browser allows it.

Every ``/t/<name>/`` tunnel on a relay's bare URL is the same web origin: the browser cannot
tell them apart, so one tunnel's pages can read another's (only subdomain mode isolates them;
the README says so). What the relay can do, it does on every path-mode response: a cookie stays
under its own tunnel's path (its ``Path`` is moved under ``/t/<name>``, its ``Domain`` dropped, so
no tunnel's cookie is sent to another or to every subdomain), and a service worker cannot claim a
scope outside its tunnel (``Service-Worker-Allowed`` is removed; by default a worker's scope is
the path of its script).
"""

from __future__ import annotations

from hatchway import protocol

DROPPED_HEADERS = frozenset({"service-worker-allowed"})
"""Response headers that would let a tunnel's pages act beyond ``/t/<name>/``."""


def scoped_cookie(set_cookie: str, prefix: str) -> str:
    """A ``Set-Cookie`` value kept under ``prefix`` (``/t/<name>``): its Path moved under it
    (``Path=/`` becomes ``Path=/t/<name>/``), no Domain attribute."""
    pair, *attributes = set_cookie.split(";")
    kept = []
    path = None
    for attribute in attributes:
        key, _, value = attribute.strip().partition("=")
        lowered = key.strip().lower()
        if lowered == "domain":
            continue
        if lowered == "path":
            path = value.strip()
            continue
        kept.append(attribute.strip())
    inner = path if path and path.startswith("/") else "/"
    return "; ".join([pair.strip(), *kept, f"Path={prefix}{inner}"])


def scoped_headers(headers: protocol.Headers, prefix: str) -> protocol.Headers:
    """A path-mode response's headers as the visitor gets them (see the module's text)."""
    return tuple(
        (name, scoped_cookie(value, prefix) if name.lower() == "set-cookie" else value)
        for name, value in headers
        if name.lower() not in DROPPED_HEADERS
    )
