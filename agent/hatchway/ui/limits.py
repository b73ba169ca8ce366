"""What the inspector may keep in memory: its own limits, apart from the inspector package so
that reading them (the CLI's help, the config) does not load the inspector's server."""

from __future__ import annotations

INSPECT_MEMORY_BYTES = 1 * 1024**2
"""What the inspector keeps of all exchanges together by default (``--inspect-memory``).

1 MiB holds the last 200 small exchanges (API calls with their heads) or the last 16 large
ones (32 KiB of each body, ``capture.MAX_BODY_BYTES``). Under ``make bench`` the agent with its
inspector on peaked at 28.0 to 29.3 MiB in four runs with this default, within its goal of 30
(32.2 at 2 MiB with 64 KiB a body, 70 at 32 MiB with 1 MiB a body), against 25.9 to 26.5 with
the inspector off: its share is the exchanges it keeps, the objects and heap around them, and its
own modules and thread (``docs/benchmarks.md``)."""

MAX_INSPECT_MEMORY_BYTES = 1024**3
"""The most ``--inspect-memory`` may give the inspector (1 GiB)."""
