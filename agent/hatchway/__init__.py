"""Hatchway agent: give a local HTTP app a public URL through your own Hatchway relay.

    import hatchway

    with hatchway.connect(3000, subdomain="demo") as tunnel:
        print(tunnel.url)

The package has rooms by job; each may import only the rooms above it in this list:

* ``protocol``: the wire protocol, sans-IO; the only part the relay functions import.
* ``errors``, ``version``: what every room may name.
* ``transport``: sockets to the relay and the local app (HTTP/1.1, WebSocket, proxy, blobs).
* ``serving``: the session with the relay and what happens to each request.
* ``ui``: what the user sees (terminal display, inspector).
* The front doors, which wire the rooms together: ``cli`` (``hatchway ...``), ``api``
  (``hatchway.connect``), ``service`` (one running agent), ``config`` (flags, environment and
  config file), ``arenas`` (process memory settings).

Importing ``hatchway`` stays free of the agent's own dependencies: the Python API
(``connect``, ``Tunnel``, ``Exchange``) is loaded on first use.
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
