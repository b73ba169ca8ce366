"""Stopping the real agent process with signals, through the local gateway in both store modes:
the first SIGTERM or Ctrl-C finishes what is in flight and exits 0, a second Ctrl-C quits at
once, a pool restarted one member at a time under load fails nobody, and visitors of a lone
agent restarted with the same name wait for it instead of failing."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from hatchway import protocol
from hatchway.serving.session import ROTATION_QUIET_SECONDS
from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e

StartAgent = Callable[..., AgentProcess]

EXIT_SECONDS = 10.0
"""Longest a stopping agent with nothing slow in flight may take to exit (it waits
``ROTATION_QUIET_SECONDS`` for the relay to be quiet, then closes)."""

VISITORS = 4
"""Visitor threads sending requests back to back for the whole of a restart."""


def through(relay: LocalServer, target: str, timeout: float = 30.0) -> Answer:
    return visit(relay.port, "GET", target, f"e2e.localhost:{relay.port}", timeout=timeout)


def in_background(call: Callable[[], Answer]) -> tuple[threading.Thread, list[Answer]]:
    result: list[Answer] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    return thread, result


@dataclass
class Load:
    """What visitors sending requests back to back got: every answer's status and error code."""

    outcomes: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failures(self) -> list[tuple[int, str]]:
        with self.lock:
            return [o for o in self.outcomes if o[0] != 200]

    def count(self) -> int:
        with self.lock:
            return len(self.outcomes)


@contextmanager
def continuous_load(relay: LocalServer) -> Iterator[Load]:
    """``VISITORS`` threads visiting the tunnel back to back until the block ends."""
    load, done = Load(), threading.Event()

    def visitor(number: int) -> None:
        sent = 0
        while not done.is_set():
            sent += 1
            answer = through(relay, f"/echo/{number}/{sent}")
            with load.lock:
                load.outcomes.append((answer.status, answer.header("x-hatchway-error") or ""))

    threads = [threading.Thread(target=visitor, args=(n,), daemon=True) for n in range(VISITORS)]
    for thread in threads:
        thread.start()
    try:
        yield load
    finally:
        done.set()
        for thread in threads:
            thread.join(30)


def wait_for_answers(load: Load, more: int, timeout: float = 15.0) -> None:
    """Until the visitors got ``more`` answers than they had (bounded)."""
    target = load.count() + more
    deadline = time.monotonic() + timeout
    while load.count() < target:
        assert time.monotonic() < deadline, f"the visitors got {load.count()} answers only"
        time.sleep(0.01)  # bounded by the deadline above; the visitors' threads do the work


def test_a_request_in_flight_when_sigterm_arrives_completes_with_200(
    relay: LocalServer, app: LocalApp, start_agent: StartAgent
) -> None:
    agent = start_agent(relay, str(app.port))
    thread, result = in_background(lambda: through(relay, "/slow?s=2"))
    app.wait_for_request("/slow?s=2", timeout=10)
    agent.popen.send_signal(signal.SIGTERM)
    agent.wait_for(r"stopping: finishing 1 request .*Ctrl-C again to quit now")
    thread.join(15)
    assert result and (result[0].status, result[0].body) == (200, b"slow"), result
    assert agent.popen.wait(EXIT_SECONDS) == 0


def test_a_second_sigint_quits_at_once(
    relay: LocalServer, app: LocalApp, start_agent: StartAgent
) -> None:
    agent = start_agent(relay, str(app.port))
    thread, result = in_background(lambda: through(relay, "/slow?s=20"))
    app.wait_for_request("/slow?s=20", timeout=10)
    agent.popen.send_signal(signal.SIGINT)
    agent.wait_for(r"stopping: finishing 1 request")
    quit_at = time.monotonic()
    agent.popen.send_signal(signal.SIGINT)
    assert agent.popen.wait(EXIT_SECONDS) == 128 + signal.SIGINT
    assert time.monotonic() - quit_at < 2.0
    thread.join(15)
    # The request was given up: its visitor is told the agent went, at once.
    assert result and result[0].header("x-hatchway-error") == "agent-gone", result


@pytest.mark.parametrize("members", [2, 3])
def test_a_pool_restarted_one_member_at_a_time_under_load_fails_no_request(
    relay: LocalServer, app: LocalApp, start_agent: StartAgent, members: int
) -> None:
    def member() -> AgentProcess:
        return start_agent(relay, str(app.port), extra=("--pool",))

    pool = [member() for _ in range(members)]
    with continuous_load(relay) as load:
        wait_for_answers(load, 20)
        for _ in range(members):  # each original member, oldest first
            old = pool.pop(0)
            old.popen.send_signal(signal.SIGTERM)
            assert old.popen.wait(EXIT_SECONDS + ROTATION_QUIET_SECONDS) == 0
            wait_for_answers(load, 20)  # the others carry the load alone for a while
            pool.append(member())
            wait_for_answers(load, 20)
    assert load.count() >= members * 40
    assert load.failures() == []


def test_a_lone_agent_restarted_within_the_hold_serves_the_visitors_who_came_meanwhile(
    relay: LocalServer, app: LocalApp, start_agent: StartAgent
) -> None:
    agent = start_agent(relay, str(app.port))
    with continuous_load(relay) as load:
        wait_for_answers(load, 20)
        agent.popen.send_signal(signal.SIGTERM)
        assert agent.popen.wait(EXIT_SECONDS) == 0
        stopped_at = time.monotonic()
        # A visitor who comes while no agent serves the name: held, not refused.
        thread, result = in_background(lambda: through(relay, "/echo/in-between"))
        restarted = start_agent(relay, str(app.port))
        assert time.monotonic() - stopped_at < protocol.RESTART_HOLD_SECONDS
        thread.join(30)
        assert result and result[0].status == 200, result
        wait_for_answers(load, 20)
    assert load.failures() == []
    restarted.popen.send_signal(signal.SIGTERM)
    assert restarted.popen.wait(EXIT_SECONDS) == 0
