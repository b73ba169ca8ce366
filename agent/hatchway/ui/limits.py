"""What the inspector may keep in memory: its own limits, apart from the inspector package so
that reading them (the CLI's help, the config) does not load the inspector's server."""

from __future__ import annotations

INSPECT_MEMORY_BYTES = 2 * 1024**2
"""What the inspector keeps of all exchanges together by default (``--inspect-memory``).

2 MiB holds the last 200 small exchanges (about 1 MiB of API calls with their heads) or the
last dozen large ones (64 KiB of each body, ``capture.MAX_BODY_BYTES``), and what the inspector
keeps adds about as much to the agent's peak RSS: at 32 MiB the agent peaked at 70 MiB under
``make bench`` instead of its goal of 30 (``docs/benchmarks.md``)."""

MAX_INSPECT_MEMORY_BYTES = 1024**3
"""The most ``--inspect-memory`` may give the inspector (1 GiB)."""
