"""A replay's request: a captured exchange plus optional edits (JSON from the API), checked field
by field so that a bad edit is refused with a message naming the field and what to send instead.

The request it builds goes to the local app through the session's ``Forwarder`` like any other,
so a replay can reach nothing but the configured target: the path must be a plain origin-form
path (``protocol.check_target``, which the forwarder enforces again).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from hatchway import protocol
from hatchway.protocol import ProtocolError
from hatchway.ui.inspector.capture import Exchange

EDIT_FIELDS = ("method", "path", "headers", "body", "body_base64")
"""What a replay may change. ``body`` is text (sent as UTF-8); ``body_base64`` is for bytes."""


class ReplayRefused(ValueError):
    """The edits (or the captured exchange) cannot make a request; ``status`` answers the API."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def build_request(original: Exchange, edits: Any, request_id: str) -> protocol.Request:
    """The request a replay of ``original`` sends, with ``edits`` (a JSON object) applied."""
    if edits is None:
        edits = {}
    if not isinstance(edits, dict):
        raise ReplayRefused("edits must be a JSON object with any of: " + ", ".join(EDIT_FIELDS))
    unknown = sorted(set(edits) - set(EDIT_FIELDS))
    if unknown:
        raise ReplayRefused(
            f"unknown edit {unknown[0]!r}; a replay can change: {', '.join(EDIT_FIELDS)}"
        )
    method = _method(edits.get("method", original.method))
    path, _, query = _string(edits, "path", original.target).partition("?")
    try:
        protocol.check_target(path, query)
    except ProtocolError:
        raise ReplayRefused(
            f"path {edits.get('path')!r} is refused: give a path on the local app that starts "
            "with a single '/', e.g. /api/items?x=1 (no scheme, host, '//', spaces or control "
            "characters); replays only ever go to the tunnel's target"
        ) from None
    headers = _headers(edits["headers"]) if "headers" in edits else original.request_headers
    body = _body(original, edits)
    if len(body) > protocol.MAX_BODY_BYTES:
        raise ReplayRefused(
            f"the body is {len(body)} bytes; a request carries at most {protocol.MAX_BODY_BYTES}",
            status=413,
        )
    try:
        return protocol.Request(request_id, original.tunnel, method, path, query, headers, body)
    except ProtocolError:  # everything else was checked above: only the method's form is left
        raise ReplayRefused(
            f"method {method!r} is not an HTTP method: use uppercase letters, digits or '-', "
            "e.g. GET, POST or M-SEARCH"
        ) from None


def _string(edits: dict[str, Any], name: str, default: str) -> str:
    value = edits.get(name, default)
    if not isinstance(value, str):
        raise ReplayRefused(f"{name} must be a string, not {type(value).__name__}")
    return value


def _method(value: Any) -> str:
    if not isinstance(value, str):
        raise ReplayRefused(f"method must be a string such as GET or POST, not {value!r}")
    return value.strip().upper()


def _headers(value: Any) -> protocol.Headers:
    if isinstance(value, dict):
        value = list(value.items())
    if not isinstance(value, list) or not all(
        isinstance(pair, list | tuple)
        and len(pair) == 2
        and all(isinstance(part, str) for part in pair)
        for pair in value
    ):
        raise ReplayRefused(
            'headers must be a list of [name, value] string pairs, e.g. [["Accept", "*/*"]], '
            "or an object of names to values"
        )
    headers = tuple((name, text) for name, text in value)
    try:
        protocol.validate_headers(headers, "the replay's edits")
    except ProtocolError as exc:
        raise ReplayRefused(f"headers refused: {exc}") from None
    return headers


def _body(original: Exchange, edits: dict[str, Any]) -> bytes:
    if "body" in edits and "body_base64" in edits:
        raise ReplayRefused("give body (text) or body_base64 (bytes), not both")
    if "body" in edits:
        return _string(edits, "body", "").encode("utf-8")
    if "body_base64" in edits:
        try:
            return base64.b64decode(_string(edits, "body_base64", ""), validate=True)
        except binascii.Error:
            raise ReplayRefused("body_base64 is not valid base64") from None
    if original.request_body.truncated:
        raise ReplayRefused(
            f"request {original.id}'s body was {original.request_body.size} bytes and only the "
            f"first {len(original.request_body.data)} were kept, so it cannot be replayed as "
            "captured; send the body (body or body_base64) with the replay",
            status=409,
        )
    return original.request_body.data
