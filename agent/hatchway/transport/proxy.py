"""How the agent reaches a host outside this machine: directly, or through the HTTP proxy the
environment names. Used for the relay's WebSocket and for blob transfers alike.

The proxy is ``https_proxy`` for a TLS connection (wss://, https://) and ``http_proxy`` for a
plain one (either case), as curl reads them, unless ``no_proxy`` names the host or a domain it
is in (or is ``*``); a host on loopback is never reached through a proxy. The agent asks the
proxy for a tunnel (``CONNECT``) and speaks TLS, when the URL asks for it, inside the tunnel;
``user:password@`` in the proxy's URL is sent as Basic proxy credentials.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from hatchway.transport.http1 import Connection

if TYPE_CHECKING:
    import ssl

MAX_REFUSAL_BYTES = 64 * 1024
"""Most of a refusal's body (a proxy's to a CONNECT, the relay's to a WebSocket handshake)
read, and dropped, before the connection is closed."""


class ProxyRefused(ConnectionError):
    """The proxy answered the CONNECT with a status other than 2xx."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None
    """A ``Proxy-Authorization`` value, from the proxy URL's user and password."""


def authority(host: str, port: int) -> str:
    """``host:port`` as a Host header or a CONNECT gives it (IPv6 literals bracketed)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_for(host: str, secure: bool, environ: Mapping[str, str] = os.environ) -> Proxy | None:
    """The HTTP proxy the environment names for ``host``, or None to connect directly;
    ``ValueError`` for a proxy URL that is not http://."""
    host = host.lower()
    if _is_loopback(host):
        return None
    name = "https_proxy" if secure else "http_proxy"
    value = environ.get(name) or environ.get(name.upper())
    if not value or _bypassed(host, environ.get("no_proxy") or environ.get("NO_PROXY") or ""):
        return None
    parts = urlsplit(value if "://" in value else f"http://{value}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{name} {value!r}: only http:// proxies are supported")
    credentials = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        credentials = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return Proxy(parts.hostname, parts.port or 80, credentials)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        return False


def _bypassed(host: str, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (``*``, or names and ``.domain``s, comma-separated) covers ``host``."""
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*":
            return True
        domain = entry.lstrip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def open_connection(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    timeout: float,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """An HTTP/1.1 connection to ``host:port`` (over TLS with ``tls``), through the
    environment's proxy when it names one; every step times out after ``timeout`` seconds."""
    proxy = proxy_for(host, tls is not None, environ)
    if proxy is None:
        return Connection.open(host, port, timeout, tls)
    conn = Connection.open(proxy.host, proxy.port, timeout)
    try:
        headers = [("Host", authority(host, port))]
        if proxy.authorization:
            headers.append(("Proxy-Authorization", proxy.authorization))
        conn.send("CONNECT", authority(host, port), headers)
        reply = conn.receive("CONNECT", MAX_REFUSAL_BYTES)
        if not 200 <= reply.status < 300:
            where = authority(proxy.host, proxy.port)
            raise ProxyRefused(
                reply.status, f"the proxy at {where} answered HTTP {reply.status} to CONNECT"
            )
        sock, already = conn.detach()
        if already:
            raise ConnectionError("the proxy sent bytes of its own into the tunnel")
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        return Connection(sock)
    except BaseException:
        conn.close()
        raise
