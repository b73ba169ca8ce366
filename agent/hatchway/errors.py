"""The agent's typed errors: each says what failed and what the user can do about it."""

from __future__ import annotations


class HatchwayError(Exception):
    """Base class for every error the agent raises to its user."""


class TokenRefused(HatchwayError):
    """The relay does not know this token."""


class NameTaken(HatchwayError):
    """The tunnel name is held by another token."""


class RelayUnreachable(HatchwayError):
    """The relay could not be reached at all."""


class SessionError(HatchwayError):
    """The relay ended the session for another reason (protocol mismatch, bad frames)."""
