"""``ProtocolError``: input that breaks the protocol, with the HTTP status to answer it with."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Input that breaks the protocol. ``status`` is the HTTP status to answer a visitor with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
