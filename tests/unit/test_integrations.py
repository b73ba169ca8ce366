"""The WebSocket API's answer route as template.yaml declares it, rendered as API Gateway renders
it: route selection, Velocity with ``$input``/``$util``/``$context``, Java's JavaScript
escaping, and DynamoDB's evaluation of the resulting ``UpdateItem``. Every agent input, however
hostile, either stores the agent's own answer under its own connection or is refused; it never
writes anything else."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway import protocol
from hatchway.protocol import codec
from hatchway_local.dynamodb_update import ValidationError, apply_update
from hatchway_local.integrations import (
    IntegrationFailed,
    MemoryWrites,
    load_routes,
    template_text,
)
from hatchway_local.vtl import escape_javascript, json_path, render
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.answer_items import ANSWER, WORKING, answer_key, parse_answer_key

TABLE = "relay-table"
ROUTES = load_routes(TABLE)
CONTEXT = {"connectionId": "L0SM9cOFvHcCIhw=", "requestTimeEpoch": 1_800_000_000_123}


def rendered(message: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(message)
    route = ROUTES.select(text)
    assert route is not None
    request: dict[str, Any] = json.loads(render(route.template, text, CONTEXT))
    return request


# --- Route selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "route"),
    [
        ('{"type":"response","id":"r1","stored":""}', "response"),
        ('{"type":"working","id":"r1"}', "working"),
        ('{"type":"ping","ts":1}', None),
        ('{"type":"hello"}', None),
        ('{"type":5}', None),
        ('{"id":"r1"}', None),
        ("not json", None),
        ("[1,2]", None),
    ],
)
def test_answers_and_marks_take_their_route_and_everything_else_goes_to_the_function(
    body: str, route: str | None
) -> None:
    selected = ROUTES.select(body)
    assert (selected.route_key if selected else None) == route


def test_the_routes_come_from_the_template_this_package_ships() -> None:
    template = template_text()
    assert 'RouteSelectionExpression: "$request.body.type"' in template
    assert set(ROUTES.services) == {"response", "working"}
    assert {route.action for route in ROUTES.services.values()} == {"UpdateItem"}


# --- The rendered request -------------------------------------------------------------------------


def test_an_answer_becomes_one_update_of_its_item_that_keeps_the_first_answer() -> None:
    stored = codec.stored_answer(protocol.Response("r" * 40, 200, body=b"hello"))
    message = json.loads(codec.encode(protocol.Response("r" * 40, 200, body=b"hello")))
    request = rendered(message)
    assert request["TableName"] == TABLE
    assert request["Key"] == {
        name: {"S": value} for name, value in answer_key("r" * 40, CONTEXT["connectionId"]).items()
    }
    assert request["UpdateExpression"] == (
        "SET a = if_not_exists(a, :a), #ttl = if_not_exists(#ttl, :ttl)"
    )
    assert request["ExpressionAttributeNames"] == {"#ttl": "ttl"}
    values = request["ExpressionAttributeValues"]
    assert base64.b64decode(values[":a"]["B"]) == stored
    assert values[":ttl"] == {"N": str(1_800_000_000 + 3600)}


def test_a_mark_becomes_one_update_of_the_same_item() -> None:
    request = rendered({"type": "working", "id": "r1"})
    assert request["Key"]["sk"] == {"S": "answer#" + CONTEXT["connectionId"]}
    assert request["UpdateExpression"] == "SET w = :w, #ttl = if_not_exists(#ttl, :ttl)"
    assert request["ExpressionAttributeValues"][":w"] == {"BOOL": True}


# --- Java's escaping, as API Gateway's $util.escapeJavaScript does it -----------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain-_09AZaz", "plain-_09AZaz"),
        ("a/b+c=", "a\\/b+c="),
        ('say "hi"', 'say \\"hi\\"'),
        ("it's", "it\\'s"),
        ("back\\slash", "back\\\\slash"),
        ("\b\t\n\f\r", "\\b\\t\\n\\f\\r"),
        ("\x00\x1f", "\\u0000\\u001F"),
        ("\x7f", "\x7f"),
        ("é", "\\u00E9"),
        ("☃", "\\u2603"),
        ("😀", "\\uD83D\\uDE00"),
        ("\ud800", "\\uD800"),
    ],
)
def test_escape_javascript_is_javas(text: str, escaped: str) -> None:
    assert escape_javascript(text) == escaped


_JAVA_ESCAPES = {
    ord("'"): "\\'",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
    ord("/"): "\\/",
    **{c: f"\\u{c:04X}" for c in range(0x20)},
    **{ord(c): "\\" + short for c, short in zip("\b\t\n\f\r", "btnfr", strict=True)},
}


@given(st.text())
def test_escape_javascript_escapes_each_character_on_its_own(text: str) -> None:
    """The escape is a function of each character alone (as Java's loop over the string is):
    whatever order the work is done in, no escape is escaped again."""
    per_character = "".join(
        _JAVA_ESCAPES.get(ord(c), c) if c.isascii() else escape_javascript(c) for c in text
    )
    assert escape_javascript(text) == per_character


@given(st.text())
def test_escaped_text_stays_inside_its_json_string(text: str) -> None:
    escaped = escape_javascript(text)
    if "'" in text:
        # \' is not JSON: DynamoDB refuses the whole request, so nothing can be injected.
        with pytest.raises(ValueError):
            json.loads(f'"{escaped}"')
    else:
        assert json.loads(f'"{escaped}"') == text


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("$", {"a": {"b": [1, {"c": "x"}]}}),
        ("$.a.b[1].c", "x"),
        ("$['a']['b'][0]", 1),
        ("$.missing", None),
        ("$.a.b[5]", None),
        ("$.a.b.c", None),
    ],
)
def test_json_path_selects_as_api_gateway_does(path: str, value: object) -> None:
    assert json_path({"a": {"b": [1, {"c": "x"}]}}, path) == value


# --- Hostile agents -------------------------------------------------------------------------------


def apply(store: MemoryStore, message: object, connection_id: str = "c1") -> None:
    text = json.dumps(message)
    route = ROUTES.select(text)
    assert route is not None
    context = {**CONTEXT, "connectionId": connection_id}
    route.apply(text, context, MemoryWrites(store, TABLE))


@pytest.mark.parametrize(
    ("message", "refused"),
    [
        pytest.param(
            {"type": "response", "id": 'r1", "x": "', "stored": "eA=="}, False, id="id breaks out"
        ),
        pytest.param(
            {"type": "response", "id": "r1", "stored": 'eA=="}, "b": {"S": "x'}, True, id="body"
        ),
        pytest.param({"type": "response", "id": "r1'", "stored": "eA=="}, True, id="quote"),
        pytest.param({"type": "response", "id": "r1", "stored": ["eA=="]}, True, id="list"),
        pytest.param(
            {"type": "response", "id": "r1", "stored": "not base64"}, True, id="not base64"
        ),
    ],
)
def test_a_hostile_answer_is_refused_or_lands_where_nobody_reads_it(
    message: dict[str, Any], refused: bool
) -> None:
    store = MemoryStore()
    store.expect_response("r1", "c1", 2e9)
    if refused:
        with pytest.raises(IntegrationFailed):
            apply(store, message)
    else:  # a key of its own (the quotes stay inside the id), which no visitor waits for
        apply(store, message)
    assert store.wait_response("r1", 0.0) is None


@given(
    request_id=st.text(max_size=60),
    stored=st.one_of(st.text(max_size=60), st.integers(), st.none()),
    kind=st.sampled_from(["response", "working"]),
)
def test_no_input_writes_anything_but_its_own_connections_answer_item(
    request_id: str, stored: object, kind: str
) -> None:
    text = json.dumps({"type": kind, "id": request_id, "stored": stored})
    route = ROUTES.select(text)
    assert route is not None
    writes: list[dict[str, Any]] = []

    class Recorder:
        def update_item(self, request: dict[str, Any]) -> None:
            writes.append(request)

    try:
        route.apply(text, CONTEXT, Recorder())
    except IntegrationFailed:
        return  # the template made no JSON: API Gateway's call fails, nothing written
    (request,) = writes
    assert request["TableName"] == TABLE
    key = parse_answer_key(request["Key"])
    assert key is not None and key[1] == CONTEXT["connectionId"]
    allowed = {"a", "w", "#ttl"}
    assert set(request["ExpressionAttributeValues"]) <= {":a", ":w", ":ttl"}
    assert {clause.split("=")[0].strip() for clause in _clauses(request)} <= allowed


def _clauses(request: dict[str, Any]) -> list[str]:
    expression: str = request["UpdateExpression"]
    assert expression.startswith("SET ")
    return [c for c in expression[4:].replace("(a, :a)", "").replace("(#ttl, :ttl)", "").split(",")]


# --- DynamoDB's UpdateItem, evaluated in memory ---------------------------------------------------


def test_if_not_exists_keeps_the_first_value_and_set_overwrites() -> None:
    request = {
        "UpdateExpression": "SET a = if_not_exists(a, :a), w = :w",
        "ExpressionAttributeValues": {":a": {"B": "eA=="}, ":w": {"BOOL": True}},
    }
    first = apply_update({}, request)
    again = apply_update(
        first, {**request, "ExpressionAttributeValues": {":a": {"B": "eQ=="}, ":w": {"BOOL": True}}}
    )
    assert first == again == {"a": {"B": "eA=="}, "w": {"BOOL": True}}


@pytest.mark.parametrize(
    "request_",
    [
        {"UpdateExpression": "REMOVE a"},
        {"UpdateExpression": "SET a = :a"},
        {"UpdateExpression": "SET a = :a", "ExpressionAttributeValues": {":a": {"B": "!!"}}},
        {"UpdateExpression": "SET a = :a", "ExpressionAttributeValues": {":a": {"N": "1x"}}},
        {"UpdateExpression": "SET a = :a, a = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}},
        {"UpdateExpression": "SET #x = :a", "ExpressionAttributeValues": {":a": {"S": "x"}}},
        {
            "UpdateExpression": "SET a = :a",
            "ConditionExpression": "attribute_not_exists(a)",
            "ExpressionAttributeValues": {":a": {"S": "x"}},
        },
    ],
    ids=["remove", "no value", "bad base64", "bad number", "twice", "no name", "condition"],
)
def test_what_dynamodb_would_refuse_is_refused(request_: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        apply_update({}, request_)


def test_an_answer_item_holds_the_answer_and_the_mark_apart() -> None:
    assert (ANSWER, WORKING) == ("a", "w")
    assert parse_answer_key({"pk": {"S": "name#x"}, "sk": {"S": "claim"}}) is None
    assert parse_answer_key({"pk": {"S": "req#r1"}, "sk": {"S": "answer#c1"}}) == ("r1", "c1")
