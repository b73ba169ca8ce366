"""What the inspector may keep in memory: its own limits, apart from the inspector package so
that reading them (the CLI's help, the config) does not load the inspector's server."""

from __future__ import annotations

INSPECT_MEMORY_BYTES = 32 * 1024**2
"""What the inspector keeps of all exchanges together by default (``--inspect-memory``)."""

MAX_INSPECT_MEMORY_BYTES = 1024**3
"""The most ``--inspect-memory`` may give the inspector (1 GiB)."""
