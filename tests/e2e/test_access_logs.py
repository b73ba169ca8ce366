"""Access logs end to end: a visitor's request through a real agent to a real app is one
visitor line, and the agent's answer one line on the answer route, in both store modes."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable

import pytest

from hatchway_local.server import LocalServer
from support.processes import AgentProcess
from support.visitor import visit

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 10.0


@pytest.mark.parametrize(
    ("target", "host", "path"),
    [
        ("/echo/x?q=1", "e2e.localhost:{port}", "/echo/x"),
        ("/t/e2e/echo/x?q=1", "127.0.0.1:{port}", "/t/e2e/echo/x"),
    ],
)
def test_a_request_through_the_tunnel_is_a_visitor_line_and_an_answer_line(
    relay: LocalServer, tunnel: AgentProcess, target: str, host: str, path: str
) -> None:
    assert relay.gateway.access_log is not None
    lines: queue.Queue[str] = queue.Queue()
    relay.gateway.access_log.listen(lines.put)
    answer = visit(relay.port, "GET", target, host.format(port=relay.port))
    assert answer.status == 200
    seen: list[dict[str, str]] = []
    # Both lines, in whichever order the two paths write them (the answer may land first).
    while not (
        any("method" in e for e in seen) and any(e.get("route") == "response" for e in seen)
    ):
        seen.append(json.loads(lines.get(timeout=WAIT_SECONDS)))
    (visitor,) = [e for e in seen if "method" in e]
    assert (visitor["method"], visitor["path"], visitor["status"]) == ("GET", path, "200")
    assert visitor["integrationError"] == "-"
    assert visitor["responseBytes"] == str(len(answer.body))
    (answered,) = [e for e in seen if e.get("route") == "response"]
    assert (answered["status"], answered["integrationError"]) == (
        "200",
        "-",
    )
    assert answered["connectionId"] in relay.connection_ids()


def logged(relay: LocalServer, enough: Callable[[list[dict[str, str]]], bool]) -> list[dict]:
    """The access log's entries once ``enough`` holds for them: each new line is the signal to
    look again (an invocation's line is written once it returns, after what it sent)."""
    assert relay.gateway.access_log is not None
    written = threading.Event()
    relay.gateway.access_log.listen(lambda line: written.set())
    while True:
        written.clear()
        entries = [json.loads(line) for line in relay.gateway.access_log.lines()]
        if enough(entries):
            return entries
        assert written.wait(WAIT_SECONDS), "no further access-log line came"


def test_the_agents_connect_and_hello_are_logged(relay: LocalServer, tunnel: AgentProcess) -> None:
    (connection,) = relay.connection_ids()

    def events(entries: list[dict[str, str]]) -> list[tuple[str, str]]:
        return [(e["route"], e["status"]) for e in entries if e.get("connectionId") == connection]

    entries = logged(relay, lambda entries: len(events(entries)) >= 2)
    assert events(entries)[:2] == [("$connect", "200"), ("$default", "200")]
