"""Hatchway agent: give a local HTTP app a public URL through your own Hatchway relay.

    import hatchway

    with hatchway.connect(3000, subdomain="demo") as tunnel:
        print(tunnel.url)

This package also holds ``hatchway.protocol``, the wire protocol the relay functions import, so
importing ``hatchway`` stays free of the agent's own dependencies: the Python API (``connect``,
``Tunnel``, ``Exchange``) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hatchway.errors import HatchwayError, NameTaken, RelayUnreachable, SessionError, TokenRefused
from hatchway.version import __version__

if TYPE_CHECKING:
    from hatchway.api import Exchange, Tunnel, connect

__all__ = [
    "Exchange",
    "HatchwayError",
    "NameTaken",
    "RelayUnreachable",
    "SessionError",
    "TokenRefused",
    "Tunnel",
    "__version__",
    "connect",
]

_API = frozenset({"connect", "Tunnel", "Exchange"})


def __getattr__(name: str) -> Any:
    """Loads the Python API (the session and all it needs) only when it is first used."""
    if name in _API:
        from hatchway import api

        return getattr(api, name)
    raise AttributeError(f"module 'hatchway' has no attribute {name!r}")
