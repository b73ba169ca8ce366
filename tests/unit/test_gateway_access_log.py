"""The local gateway's access log, with stub handlers: one line per visitor request and per
agent connect, message and disconnect, in the template's own formats (the same field names and
quoting as API Gateway's), with the status, latency and integration error each outcome gives;
and the file it appends to."""

from __future__ import annotations

import json
import queue
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import websocket
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import strategies as st

from hatchway_local.access_log import (
    AccessLog,
    VisitorOutcome,
    agent_context,
    load_formats,
    render,
    visitor_context,
)
from hatchway_local.gateway import Gateway
from hatchway_local.integrations import CloudFormationLoader
from hatchway_local.platform import GatewayLimits
from hatchway_local.server import bind, serve_gateway
from support.visitor import visit

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
WAIT_SECONDS = 10.0

Event = dict[str, Any]


def template_format(resource: str) -> str:
    resources = yaml.load(TEMPLATE.read_text(), CloudFormationLoader)["Resources"]
    return str(resources[resource]["Properties"]["AccessLogSettings"]["Fn::If"][1]["Format"])


class Lines:
    """Every line the access log writes, as it writes it (a queue: an explicit signal)."""

    def __init__(self, log: AccessLog) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        log.listen(self._queue.put)

    def next(self) -> dict[str, str]:
        return dict(json.loads(self._queue.get(timeout=WAIT_SECONDS)))


@contextmanager
def gateway(
    http: Callable[[Event, object], Event] = lambda e, c: {"statusCode": 200, "body": "ok"},
    ws: Callable[[Event, object], Event | None] = lambda e, c: {"statusCode": 200},
    **limits: Any,
) -> Iterator[tuple[int, Lines]]:
    log = AccessLog()
    lines = Lines(log)
    gw = Gateway({"127.0.0.1"}, GatewayLimits(**limits), access_log=log)
    gw.set_handlers(ws, http)  # type: ignore[arg-type]
    sock = bind("127.0.0.1", 0)
    with serve_gateway(gw, sock):
        yield sock.getsockname()[1], lines


def visitor_keys() -> set[str]:
    return set(json.loads(template_format("HttpApi")))


def agent_keys() -> set[str]:
    return set(json.loads(template_format("WebSocketStage")))


def test_the_gateway_writes_the_templates_own_formats() -> None:
    formats = load_formats()
    assert formats.visitors == template_format("HttpApi")
    assert formats.agents == template_format("WebSocketStage")


def test_every_variable_the_template_asks_for_is_one_the_gateway_gives() -> None:
    request = make_mocked_request("GET", "/x", headers={"Host": "a.localhost"})
    outcome = VisitorOutcome("r", 1.0)
    visitor = visitor_context(request, web.Response(body=b"ok"), outcome)
    context = {
        "requestId": "r",
        "requestTimeEpoch": 1,
        "identity": {"sourceIp": "127.0.0.1"},
        "domainName": "localhost",
        "eventType": "CONNECT",
        "connectionId": "C1=",
    }
    agent = agent_context({"requestContext": context}, "$connect", 200, 1.0, 2.0, None)
    for resource, given in (("HttpApi", visitor), ("WebSocketStage", agent)):
        asked = set(re.findall(r"\$context\.([\w.]+)", template_format(resource)))
        assert asked <= set(given), asked - set(given)


def slow(seconds: float) -> Callable[[Event, object], Event]:
    def handler(event: Event, context: object) -> Event:
        time.sleep(seconds)  # a function that outlives the integration timeout
        return {"statusCode": 200}

    return handler


def fails(event: Event, context: object) -> Event:
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("handler", "limits", "status", "error"),
    [
        (lambda e, c: {"statusCode": 201, "body": "made"}, {}, "201", "-"),
        (lambda e, c: {"statusCode": 404, "body": "no tunnel"}, {}, "404", "-"),
        (fails, {}, "500", "The Lambda function failed"),
        (lambda e, c: {"no": "status"}, {}, "500", "The Lambda function failed"),
        (slow(1.0), {"integration_timeout": 0.2}, "503", "The integration timed out"),
    ],
)
def test_each_visitor_request_is_one_line_with_its_outcome(
    handler: Callable[[Event, object], Event],
    limits: dict[str, float],
    status: str,
    error: str,
) -> None:
    with gateway(http=handler, **limits) as (port, lines):
        before = time.time()
        answer = visit(port, "POST", "/t/app/a%20b?q=1", "app.localhost:8080", body=b"hello")
        entry = lines.next()
    assert set(entry) == visitor_keys()
    assert all(isinstance(value, str) for value in entry.values())
    assert (entry["method"], entry["path"], entry["host"]) == (
        "POST",
        "/t/app/a%20b",
        "app.localhost",
    )
    assert (entry["status"], entry["integrationError"]) == (status, error)
    assert entry["status"] == str(answer.status)
    assert entry["ip"] == "127.0.0.1"
    assert entry["responseBytes"] == str(len(answer.body))
    assert before * 1000 - 1 <= int(entry["time"]) <= time.time() * 1000
    assert 0 <= int(entry["latencyMs"]) <= (time.time() - before) * 1000 + 1
    assert re.fullmatch(r"[0-9a-f]{16}", entry["requestId"])


def test_the_line_carries_the_request_id_the_function_saw() -> None:
    seen: list[str] = []

    def handler(event: Event, context: object) -> Event:
        seen.append(event["requestContext"]["requestId"])
        return {"statusCode": 200}

    with gateway(http=handler) as (port, lines):
        visit(port, "GET", "/", "app.localhost")
        assert lines.next()["requestId"] == seen[0]


def test_a_body_refused_before_any_invocation_is_logged_without_an_integration_error() -> None:
    with gateway() as (port, lines):
        answer = visit(port, "POST", "/", "app.localhost", body=b"x" * (5 * 1024 * 1024))
        entry = lines.next()
    assert (
        (entry["status"], entry["integrationError"])
        == ("413", "-")
        == (
            str(answer.status),
            "-",
        )
    )


def connect(port: int) -> websocket.WebSocket:
    return websocket.create_connection(f"ws://127.0.0.1:{port}/connect", timeout=5)


def test_an_agents_connect_message_and_disconnect_are_a_line_each() -> None:
    with gateway() as (port, lines):
        client = connect(port)
        connected = lines.next()
        client.send('{"type": "ping"}')
        message = lines.next()
        client.close()
        disconnected = lines.next()
    for entry in (connected, message, disconnected):
        assert set(entry) == agent_keys()
        assert entry["connectionId"] == connected["connectionId"] != "-"
        assert (entry["status"], entry["integrationError"], entry["ip"]) == (
            "200",
            "-",
            "127.0.0.1",
        )
        assert int(entry["latencyMs"]) >= 0
    assert [e["route"] for e in (connected, message, disconnected)] == [
        "$connect",
        "$default",
        "$disconnect",
    ]
    assert len({e["requestId"] for e in (connected, message, disconnected)}) == 3


def test_a_refused_connect_is_logged_with_its_status_and_a_failed_message_with_the_error() -> None:
    def refuse(event: Event, context: object) -> Event:
        if event["requestContext"]["routeKey"] == "$connect":
            return {"statusCode": 401}
        raise RuntimeError("boom")

    with gateway(ws=refuse) as (port, lines):
        with pytest.raises(websocket.WebSocketBadStatusException):
            connect(port)
        refused = lines.next()
    assert (refused["route"], refused["status"], refused["integrationError"]) == (
        "$connect",
        "401",
        "-",
    )

    def fail_messages(event: Event, context: object) -> Event:
        if event["requestContext"]["routeKey"] == "$default":
            raise RuntimeError("boom")
        return {"statusCode": 200}

    with gateway(ws=fail_messages) as (port, lines):
        client = connect(port)
        lines.next()
        client.send('{"type": "ping"}')
        failed = lines.next()
        client.close()
    assert (failed["route"], failed["status"], failed["integrationError"]) == (
        "$default",
        "500",
        "The Lambda function failed",
    )


def test_the_file_gets_every_line_and_is_rotated_past_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"
    log = AccessLog(path=path, max_file_bytes=300)  # about two lines
    context = {"requestId": "r", "status": 200}
    written = [log.visitor({**context, "requestId": f"r{i}"}) for i in range(4)]
    log.close()
    rotated = path.with_name("access.log.1").read_text().splitlines()
    current = path.read_text().splitlines()
    assert rotated + current == written
    assert rotated and current
    assert log.lines() == written


def test_a_restarted_gateway_counts_what_the_file_already_holds(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("x" * 299 + "\n")  # an earlier run's lines, at the limit
    log = AccessLog(path=path, max_file_bytes=300)
    line = log.visitor({"requestId": "after-restart", "status": 200})
    log.close()
    assert path.with_name("access.log.1").read_text().splitlines() == ["x" * 299, line]
    assert not path.exists() or path.read_text() == ""


def test_memory_keeps_only_the_latest_lines() -> None:
    log = AccessLog(kept=2)
    for i in range(3):
        log.agent({"requestId": f"r{i}"})
    assert [json.loads(line)["requestId"] for line in log.lines()] == ["r1", "r2"]


def test_text_stays_inside_its_json_string() -> None:
    log = AccessLog()
    line = log.visitor({"path": '/a"b\\c\n', "requestId": "r"})
    assert json.loads(line)["path"] == '/a"b\\c\n'


@hypothesis.given(
    st.dictionaries(
        st.sampled_from(["path", "requestId", "status", "identity.sourceIp"]),
        st.none() | st.text() | st.integers(),
    )
)
def test_each_value_is_written_as_json_would_write_it(context: dict[str, object]) -> None:
    line = render('{"path":"$context.path","id":"$context.requestId","s":$context.status}', context)
    expected = {
        name: "-" if context.get(key) in (None, "") else json.dumps(str(context[key]))[1:-1]
        for name, key in (("path", "path"), ("id", "requestId"), ("s", "status"))
    }
    path, request_id, status = expected["path"], expected["id"], expected["s"]
    assert line == '{"path":"' + path + '","id":"' + request_id + '","s":' + status + "}"
