"""Standard base64 for bodies, through pybase64's SIMD code when it is installed, else the
standard library: the same text out and the same bytes back either way.

Bodies cross base64 wherever JSON or Lambda's payload format carries them (inline message
bodies, the HTTP API's events and results). CPython's codec does about 300 MB/s; pybase64
(``pip install 'hatchway[fast]'``; the local gateway always has it) is 10 to 30 times faster
on large bodies. It is never required: the Lambda functions and a plain agent use the
standard library.

pybase64's strict decoding refuses a little more than the standard library's (excess padding
after a complete group, for one): whatever it refuses is decoded again by the standard
library, so that what is accepted, the bytes it gives and the errors raised are the standard
library's.
"""

from __future__ import annotations

import base64
import binascii
from types import ModuleType

_fast: ModuleType | None
try:
    import pybase64 as _fast
except ImportError:  # the standard library alone: slower, identical
    _fast = None

FAST = _fast is not None
"""Whether pybase64's C code is in use."""


def encode(data: bytes) -> str:
    """``data`` as base64 text, padded, without newlines."""
    if _fast is not None:
        text: str = _fast.b64encode_as_string(data)
        return text
    return base64.b64encode(data).decode("ascii")


def decode(text: str | bytes) -> bytes:
    """Strict: anything but padded base64 raises ``binascii.Error`` (a ``ValueError``)."""
    if _fast is not None:
        try:
            raw: bytes = _fast.b64decode(text, validate=True)
            return raw
        except (binascii.Error, ValueError):
            pass  # the standard library decides, and words the error
    return binascii.a2b_base64(text, strict_mode=True)


def decode_lenient(text: str | bytes) -> bytes:
    """As ``base64.b64decode`` without ``validate``: characters outside the alphabet are
    skipped (what AWS's own decoding of a payload tolerates)."""
    if _fast is not None:
        try:
            raw: bytes = _fast.b64decode(text, validate=True)
            return raw
        except (binascii.Error, ValueError):
            pass
    return binascii.a2b_base64(text)
