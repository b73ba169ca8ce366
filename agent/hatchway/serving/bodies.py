"""What the agent can tell about a body from its first bytes: whether zlib could shrink it."""

from __future__ import annotations

COMPRESSIBILITY_SAMPLE_BYTES = 256
"""Bytes of a response body looked at before zlib is tried on all of it (a larger sample cost
10 us per request and told nothing more)."""

INCOMPRESSIBLE_DISTINCT_BYTES = 128
"""A sample using at least this many of the 256 byte values is random or already compressed
(media, archives, encrypted data): zlib cannot shrink it by the eighth that would make it
travel compressed, and trying cost more than the rest of encoding the message. In 256 bytes,
random data shows about 161 values and zlib's own output about 144; English, Russian or Chinese
text, JSON and HTML 60 or fewer."""


def looks_compressible(body: bytes) -> bool:
    """Whether zlib is worth trying on ``body`` (from a sample of its first bytes)."""
    return len(set(body[:COMPRESSIBILITY_SAMPLE_BYTES])) < INCOMPRESSIBLE_DISTINCT_BYTES
