"""The inspector's JSON shapes: list summaries, details with bodies rendered for people, and the
list filters. Pure functions over captured exchanges; no I/O.

A body is shown as one of these ``kind``s (every view also has ``size``, the real size in bytes;
``stored``, the bytes kept; ``truncated``; and ``content_type``):

* ``empty``  - no body.
* ``json``   - ``text`` (as sent) and ``pretty`` (indented); only when the whole body was kept
  and parses.
* ``text``   - ``text``: a textual content type decoded with its charset, or an untyped body
  that is valid UTF-8 without NUL bytes.
* ``image``  - ``data_uri`` (``data:image/...;base64,...``) for the raster types in
  ``IMAGE_TYPES``, when the whole image was kept; SVG is shown as text, never rendered.
* ``binary`` - ``hex``: the first ``HEX_PREVIEW_BYTES`` bytes as lowercase hex digits.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hatchway.protocol import Headers
from hatchway.ui.inspector.capture import Body, Exchange

HEX_PREVIEW_BYTES = 512
"""Bytes of a binary body shown as hex."""

IMAGE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/avif",
        "image/x-icon",
        "image/vnd.microsoft.icon",
    }
)
"""Images previewed in the page. Raster formats only: an SVG can carry script."""

_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/graphql",
        "image/svg+xml",
    }
)
_STATUS_FILTER = re.compile(r"^[1-5](?:[0-9]{2}|xx)$")
FILTERS = ("path", "method", "status")
"""The query parameters ``GET /api/requests`` understands."""


def header(headers: Headers, name: str) -> str | None:
    """The first value of header ``name`` (case-insensitive), if any."""
    lowered = name.lower()
    return next((value for key, value in headers if key.lower() == lowered), None)


def summary(exchange: Exchange) -> dict[str, Any]:
    """One row of the list."""
    started = datetime.fromtimestamp(exchange.started_at, UTC)
    return {
        "id": exchange.id,
        "time": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "tunnel": exchange.tunnel,
        "method": exchange.method,
        "path": exchange.target,
        "status": exchange.status,
        "duration_ms": round(exchange.duration_ms, 1),
        "size": exchange.response_body.size,
        "request_size": exchange.request_body.size,
        "fault": (
            {"side": exchange.fault.side, "message": exchange.fault.message}
            if exchange.fault
            else None
        ),
        "replay_of": exchange.replay_of,
    }


def detail(exchange: Exchange) -> dict[str, Any]:
    """Everything about one exchange, bodies rendered (see the module docstring)."""
    return {
        **summary(exchange),
        "request": _message(exchange.request_headers, exchange.request_body),
        "response": _message(exchange.response_headers, exchange.response_body),
    }


def _message(headers: Headers, body: Body) -> dict[str, Any]:
    return {"headers": [[name, value] for name, value in headers], "body": body_view(body, headers)}


def body_view(body: Body, headers: Headers) -> dict[str, Any]:
    content_type = header(headers, "content-type")
    media, _, params = (content_type or "").partition(";")
    media = media.strip().lower()
    view: dict[str, Any] = {
        "size": body.size,
        "stored": len(body.data),
        "truncated": body.truncated,
        "content_type": content_type,
    }
    if body.size == 0:
        return {**view, "kind": "empty"}
    if media in IMAGE_TYPES and not body.truncated:
        encoded = base64.b64encode(body.data).decode("ascii")
        return {**view, "kind": "image", "data_uri": f"data:{media};base64,{encoded}"}
    text = _as_text(body, media, _charset(params))
    if text is None:
        return {**view, "kind": "binary", "hex": body.data[:HEX_PREVIEW_BYTES].hex()}
    if _is_json(media) and not body.truncated:
        try:
            pretty = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            pass
        else:
            return {**view, "kind": "json", "text": text, "pretty": pretty}
    return {**view, "kind": "text", "text": text}


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _is_textual(media: str) -> bool:
    return media.startswith("text/") or media in _TEXT_TYPES or media.endswith(("+json", "+xml"))


def _charset(params: str) -> str:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            name = value.strip().strip('"')
            try:
                return codecs.lookup(name).name
            except LookupError:
                break
    return "utf-8"


def _as_text(body: Body, media: str, charset: str) -> str | None:
    """The body as text if it is text; a cut-off last character of a truncated body is dropped."""
    decoder = codecs.getincrementaldecoder(charset)
    if _is_textual(media):
        return decoder("replace").decode(body.data, final=not body.truncated)
    if media:
        return None  # a declared non-text type (octet-stream, pdf, ...)
    try:
        text = decoder("strict").decode(body.data, final=not body.truncated)
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


@dataclass(frozen=True)
class Filters:
    """``path`` substring (case-insensitive), exact ``method``, ``status`` like 404 or 4xx."""

    path: str = ""
    method: str = ""
    status: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, Sequence[str]]) -> Filters:
        """Parse the list's query parameters; raise ValueError naming what is wrong."""
        unknown = sorted(set(query) - set(FILTERS))
        if unknown:
            raise ValueError(
                f"unknown filter {unknown[0]!r}; use {', '.join(FILTERS)} "
                "(e.g. ?path=/api&method=POST&status=4xx)"
            )
        values = {key: (query[key][-1] if query.get(key) else "").strip() for key in FILTERS}
        status = values["status"].lower()
        if status and not _STATUS_FILTER.match(status):
            raise ValueError(
                f"status filter {values['status']!r}: give a status such as 404 "
                "or a class such as 4xx"
            )
        return cls(values["path"], values["method"].upper(), status)

    def matches(self, exchange: Exchange) -> bool:
        if self.path and self.path.lower() not in exchange.target.lower():
            return False
        if self.method and exchange.method != self.method:
            return False
        if self.status.endswith("xx"):
            return str(exchange.status)[0] == self.status[0]
        return not self.status or str(exchange.status) == self.status
