"""The gateway's event loop: uvloop's when it is installed, else asyncio's own.

uvloop (libuv under asyncio's API) serves the same gateway with less CPU per request: in
``make bench``'s runs it raised the 1 KB requests a second at c=32 by about a sixth and took
about a seventh off the p50 at c=1. hatchway-local depends on it wherever uvloop publishes
wheels (not on Windows); ``--event-loop asyncio`` (or ``HATCHWAY_LOCAL_LOOP=asyncio``) keeps
asyncio's loop, which the tests run the gateway on too.
"""

from __future__ import annotations

import asyncio
import os

LOOP_ENVIRONMENT_VARIABLE = "HATCHWAY_LOCAL_LOOP"
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
"""``auto``: uvloop when it is installed, else asyncio."""


def new_event_loop(choice: str | None = None) -> asyncio.AbstractEventLoop:
    """A new loop of the kind ``choice`` names (by default ``$HATCHWAY_LOCAL_LOOP``, else
    ``auto``). ``ValueError`` for a name that is none of ``EVENT_LOOPS``, or for ``uvloop``
    when it is not installed."""
    choice = choice or os.environ.get(LOOP_ENVIRONMENT_VARIABLE) or "auto"
    if choice not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {choice!r}: use one of {', '.join(EVENT_LOOPS)}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError(
                    "the uvloop event loop is not installed: pip install uvloop, or use asyncio"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which kind of loop ``loop`` is."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
