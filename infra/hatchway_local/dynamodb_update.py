"""DynamoDB's ``UpdateItem``, evaluated in memory as DynamoDB evaluates it, for the part of its
grammar the relay's mapping templates use: ``SET`` clauses whose values are placeholders or
``if_not_exists(path, placeholder)``, with attribute names given directly or as ``#name``
placeholders. Anything else is refused as DynamoDB refuses a request it cannot parse, so a
template that drifts beyond this fails in tests instead of behaving differently from AWS.

Attribute values stay in DynamoDB's typed JSON form (``{"B": "<base64>"}``, ``{"N": "12"}``).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import Any

from hatchway.protocol import b64

Item = dict[str, dict[str, Any]]


class ValidationError(Exception):
    """What DynamoDB answers with ``ValidationException`` (HTTP 400)."""


_SCALAR_TYPES = frozenset({"S", "N", "B", "BOOL", "NULL"})
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?\Z")
_NAME = r"(?:#[A-Za-z0-9_]+|[A-Za-z][A-Za-z0-9_]*)"
_CLAUSE = re.compile(
    rf"\s*({_NAME})\s*=\s*(?:(:[A-Za-z0-9_]+)|if_not_exists\(\s*({_NAME})\s*,\s*(:[A-Za-z0-9_]+)\s*\))\s*"
)


def _value(values: Mapping[str, Any], placeholder: str) -> dict[str, Any]:
    value = values.get(placeholder)
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _SCALAR_TYPES:
        raise ValidationError(f"ExpressionAttributeValues {placeholder}: not a typed scalar")
    kind, raw = next(iter(value.items()))
    if kind == "B":
        try:
            b64.decode(raw)
        except (binascii.Error, ValueError, TypeError):
            raise ValidationError(f"{placeholder}: invalid base64 binary value") from None
    elif kind == "N" and not (isinstance(raw, str) and _NUMBER.match(raw)):
        raise ValidationError(f"{placeholder}: invalid number {str(raw)[:30]!r}")
    elif kind == "S" and not isinstance(raw, str):
        raise ValidationError(f"{placeholder}: S must be a string")
    elif kind in ("BOOL", "NULL") and not isinstance(raw, bool):
        raise ValidationError(f"{placeholder}: {kind} must be true or false")
    return value


def _name(names: Mapping[str, str], token: str) -> str:
    if not token.startswith("#"):
        return token
    name = names.get(token)
    if not isinstance(name, str) or not name:
        raise ValidationError(f"ExpressionAttributeNames has no {token}")
    return name


def apply_update(item: Item, request: Mapping[str, Any]) -> Item:
    """``item`` (empty where there is none) as ``request`` leaves it; ``ValidationError`` for
    what DynamoDB would refuse (the item is then unchanged: the caller keeps the old one)."""
    expression = request.get("UpdateExpression")
    if not isinstance(expression, str) or not expression.lstrip().upper().startswith("SET "):
        raise ValidationError("UpdateExpression: only SET clauses are evaluated here")
    if request.get("ConditionExpression") is not None:
        raise ValidationError("ConditionExpression is not evaluated here")
    names = request.get("ExpressionAttributeNames") or {}
    values = request.get("ExpressionAttributeValues") or {}
    if not isinstance(names, dict) or not isinstance(values, dict):
        raise ValidationError("ExpressionAttributeNames and -Values must be maps")
    for placeholder in values:  # every value is parsed, used or not, as DynamoDB does
        _value(values, placeholder)
    updated = dict(item)
    assigned: set[str] = set()
    text, position = expression.lstrip()[4:], 0
    while True:
        match = _CLAUSE.match(text, position)
        if match is None:
            raise ValidationError(f"UpdateExpression: cannot parse {text[position:][:60]!r}")
        target, direct, existing, fallback = match.groups()
        attribute = _name(names, target)
        if attribute in assigned:
            raise ValidationError(f"UpdateExpression: {attribute!r} is assigned twice")
        assigned.add(attribute)
        if direct is not None:
            updated[attribute] = _value(values, direct)
        else:
            # Evaluated on the item as it was before this request, as DynamoDB does.
            kept = item.get(_name(names, existing))
            updated[attribute] = kept if kept is not None else _value(values, fallback)
        position = match.end()
        if position == len(text):
            return updated
        if text[position] != ",":
            raise ValidationError(f"UpdateExpression: cannot parse {text[position:][:60]!r}")
        position += 1
