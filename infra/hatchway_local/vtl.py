"""API Gateway's mapping templates, rendered as API Gateway renders them: Velocity (airspeed, a
maintained Python implementation of it) with the ``$input``, ``$util`` and ``$context``
variables a WebSocket API's request template gets. The local gateway runs template.yaml's own
templates through this, never a Python copy of what they do: airspeed parses each template once,
and ``vtl_compile`` turns airspeed's parse tree into closures that evaluate it as airspeed does
(airspeed itself renders what the compiler does not know, and any render that raises).

What API Gateway documents and the relay's templates could use is here; JSONPath is the subset
API Gateway's examples use (``$``, ``.name``, ``['name']``, ``[index]``). A value that Java
would render as ``null`` is None, which Velocity shows as the reference's own text.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import airspeed

from hatchway_local.vtl_compile import compile_template

# Backslash first, so that the backslashes the others add are not escaped again. Each is one
# ``str.replace`` (C speed): a ``str.translate`` through a dict spent about 30 ns a character,
# 4 ms on a 100 KB answer's base64, where "/" is common; this takes 0.2 ms.
_BACKSLASHED = (("\\", "\\\\"), ("'", "\\'"), ('"', '\\"'), ("/", "\\/"))
_CONTROL = re.compile("[\x00-\x1f]")
_CONTROL_ESCAPES = {
    **{chr(c): f"\\u{c:04X}" for c in range(0x20)},
    "\b": "\\b",
    "\n": "\\n",
    "\t": "\\t",
    "\f": "\\f",
    "\r": "\\r",
}
_NOT_ASCII = re.compile("[^\x00-\x7f]")


def _control_escape(match: re.Match[str]) -> str:
    return _CONTROL_ESCAPES[match.group()]


def _utf16_escapes(match: re.Match[str]) -> str:
    units = match.group().encode("utf-16-be", "surrogatepass")
    return "".join(f"\\u{units[i]:02X}{units[i + 1]:02X}" for i in range(0, len(units), 2))


def escape_javascript(text: str) -> str:
    """``$util.escapeJavaScript``: Java's ``StringEscapeUtils.escapeJavaScript`` (Commons Lang
    2), which API Gateway uses. Quotes, backslash and slash are escaped with a backslash,
    control characters with their short or ``\\uXXXX`` escape, everything beyond ASCII as
    ``\\uXXXX`` per UTF-16 unit. Its ``\\'`` is not a JSON escape."""
    for plain, escaped in _BACKSLASHED:
        if plain in text:
            text = text.replace(plain, escaped)
    # 32 substring searches (memchr) cost less than one pass of a character-class regex.
    if any(control in text for control in _CONTROL_ESCAPES):
        text = _CONTROL.sub(_control_escape, text)
    if not text.isascii():
        text = _NOT_ASCII.sub(_utf16_escapes, text)
    return text


_PATH_STEP = re.compile(r"\.([A-Za-z_$][\w$-]*)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]")


def json_path(document: Any, expression: str) -> Any:
    """The value ``expression`` selects in ``document``, or None where it selects nothing."""
    if not expression.startswith("$"):
        raise ValueError(f"JSONPath {expression!r} does not start at the root ($)")
    value, position = document, 1
    while position < len(expression):
        step = _PATH_STEP.match(expression, position)
        if step is None:
            raise ValueError(f"JSONPath {expression!r}: only .name, ['name'] and [n] steps")
        name, quoted, index = step.groups()
        if index is not None:
            in_range = isinstance(value, list) and int(index) < len(value)
            value = value[int(index)] if in_range else None
        else:
            key = name if name is not None else quoted
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
        position = step.end()
    return value


class _Input:
    """``$input``: the message body, as text and through JSONPath."""

    def __init__(self, body: str) -> None:
        self.body = body
        self._document: Any = None
        self._parsed = False

    def _parsed_body(self) -> Any:
        if not self._parsed:
            try:
                self._document = json.loads(self.body)
            except ValueError:
                self._document = None
            self._parsed = True
        return self._document

    def path(self, expression: str) -> Any:
        return json_path(self._parsed_body(), expression)

    def json(self, expression: str) -> str:
        return json.dumps(json_path(self._parsed_body(), expression), separators=(",", ":"))


class _Util:
    """``$util``, as API Gateway documents it for mapping templates."""

    @staticmethod
    def escapeJavaScript(value: Any) -> str | None:
        return None if value is None else escape_javascript(_text(value))

    @staticmethod
    def base64Encode(value: Any) -> str | None:
        if value is None:
            return None
        return base64.b64encode(_text(value).encode("utf-8", "replace")).decode("ascii")

    @staticmethod
    def base64Decode(value: Any) -> str | None:
        if value is None:
            return None
        return base64.b64decode(_text(value), validate=True).decode("utf-8", "replace")

    @staticmethod
    def parseJson(value: Any) -> Any:
        return None if value is None else json.loads(_text(value))

    @staticmethod
    def urlEncode(value: Any) -> str | None:
        return None if value is None else urllib.parse.quote_plus(_text(value))

    @staticmethod
    def urlDecode(value: Any) -> str | None:
        return None if value is None else urllib.parse.unquote_plus(_text(value))


def _text(value: Any) -> str:
    """A value as Java's ``toString`` would show it where the template passes a non-string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


@functools.lru_cache(maxsize=16)
def _compiled(template: str) -> tuple[airspeed.Template, Callable[[dict[str, Any]], str] | None]:
    """A template parsed once (parsing costs far more than rendering), and compiled to
    closures where ``vtl_compile`` knows all its nodes."""
    parsed = airspeed.Template(template)
    parsed.ensure_compiled()
    return parsed, compile_template(parsed)


def variables(body: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """What a template sees: ``$input``, ``$util`` and ``$context``."""
    return {"input": _Input(body), "util": _Util(), "context": context}


def render(template: str, body: str, context: Mapping[str, Any]) -> str:
    """``template`` applied to one WebSocket message ``body`` with ``$context`` ``context``."""
    parsed, compiled = _compiled(template)
    if compiled is not None:
        # A render that raises is airspeed's to do again: it raises its own error.
        with contextlib.suppress(Exception):
            return compiled(variables(body, context))
    return str(parsed.merge(variables(body, context)))
