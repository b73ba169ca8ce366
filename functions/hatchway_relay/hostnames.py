"""Custom hostnames: names users bring (``api.mycompany.com``), each serving one reserved tunnel.

The relay reads them as ``HOSTNAME=TUNNEL`` pairs, comma or space separated: the template's
``CustomHostnames`` parameter, ``hatchway-local --custom-hostname``. A visitor's Host header that
equals one of them routes to its tunnel whatever the path; the tunnel's name must be reserved for
a token, so only that token's agent ever receives the hostname's traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from hatchway import protocol

HOSTNAME_PATTERN: Final = re.compile(
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z"
)
"""A full DNS name, lowercase, no wildcard and no trailing dot."""
MAX_HOSTNAME_CHARS: Final = 253
"""Longest DNS name (RFC 1035)."""
MAX_CUSTOM_HOSTNAMES: Final = 50
"""Hostnames one relay serves at most: each is an API Gateway custom domain (quota 120 per
account and region) with its own certificate."""


class InvalidHostnames(ValueError):
    """The hostname list cannot be served as written."""


def parse_custom_hostnames(text: str | Iterable[str]) -> dict[str, str]:
    """``"api.mycompany.com=myapp, hooks.mycompany.com=hooks"`` -> hostname -> tunnel name.

    Hostnames are lowercased; each appears once; a tunnel may serve several.
    """
    pairs = re.split(r"[,\s]+", text) if isinstance(text, str) else list(text)
    mapping: dict[str, str] = {}
    for pair in (p.strip() for p in pairs):
        if not pair:
            continue
        hostname, separator, tunnel = pair.partition("=")
        hostname = hostname.strip().rstrip(".").lower()
        tunnel = tunnel.strip()
        if not separator or not hostname or not tunnel:
            raise InvalidHostnames(
                f"custom hostname {pair!r} must read HOSTNAME=TUNNEL, e.g. api.mycompany.com=myapp"
            )
        if len(hostname) > MAX_HOSTNAME_CHARS or not HOSTNAME_PATTERN.match(hostname):
            raise InvalidHostnames(f"{hostname!r} is not a hostname (like api.mycompany.com)")
        if not protocol.NAME_PATTERN.match(tunnel):
            raise InvalidHostnames(
                f"{tunnel!r} (for {hostname}) is not a tunnel name: use 1-63 lowercase letters, "
                "digits or inner hyphens"
            )
        if hostname in mapping:
            raise InvalidHostnames(f"custom hostname {hostname} is listed twice")
        mapping[hostname] = tunnel
    if len(mapping) > MAX_CUSTOM_HOSTNAMES:
        raise InvalidHostnames(
            f"{len(mapping)} custom hostnames; one relay serves at most {MAX_CUSTOM_HOSTNAMES}"
        )
    return mapping


def hostnames_of(tunnel: str, mapping: Mapping[str, str]) -> tuple[str, ...]:
    """The custom hostnames that serve ``tunnel``, sorted."""
    return tuple(sorted(host for host, name in mapping.items() if name == tunnel))
