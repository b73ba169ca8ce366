"""End to end, in both store modes: what the agent does under faults, overload and rotation. A
stopped agent is told from a slow app, rotation under load loses no request, and a second agent
with the same token and name is refused with a message that names the first."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from hatchway import protocol
from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers

RESPONSE_TIMEOUT = 20.0
"""The relay's deadline in these tests: far from the 8 s silence check, so the two never mix."""

ROTATION_BUDGET_SECONDS = 180.0
"""Longest the rotation test runs per store mode (about 1 rotation a second: ~100 s)."""

ROTATIONS = 100
MIN_ROTATIONS = ROTATIONS
"""Rotations the test must see, each under load, with not one request lost."""

LOAD_THREADS = 4
LOAD_PAUSE_SECONDS = 0.1
"""Steady load while rotating: each thread asks, waits for the answer, pauses (~30 req/s)."""


def get(relay: LocalServer, target: str, **kw: object) -> Answer:
    return visit(relay.port, "GET", target, f"e2e.localhost:{relay.port}", **kw)  # type: ignore[arg-type]


@pytest.fixture
def relay(make_relay: Callable[..., LocalServer]) -> LocalServer:
    return make_relay(response_timeout=RESPONSE_TIMEOUT)


def test_a_stopped_agent_is_reported_unresponsive_within_10_seconds(
    relay: LocalServer, tunnel: AgentProcess
) -> None:
    assert get(relay, "/echo/warm").status == 200
    tunnel.popen.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = get(relay, "/echo/frozen")
        elapsed = time.monotonic() - started
    finally:
        tunnel.popen.send_signal(signal.SIGCONT)
    assert answer.status == 502, answer.text
    assert answer.header("x-hatchway-error") == "agent-unresponsive"
    assert elapsed < 10.0
    assert get(relay, "/echo/resumed").status == 200  # it serves again once resumed


def test_requests_a_stopped_agent_finds_after_the_relay_gave_up_are_never_run(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess
) -> None:
    """Visitors told "failed" (502 agent-unresponsive at 8 s) may retry: the agent, resumed,
    must not run the requests they gave up on (a POST would run twice)."""
    assert get(relay, "/echo/warm").status == 200
    host = f"e2e.localhost:{relay.port}"
    tunnel.popen.send_signal(signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(3) as pool:
            answers = list(
                pool.map(
                    lambda i: visit(relay.port, "POST", f"/echo/late-{i}", host, body=b"pay"),
                    range(3),
                )
            )
    finally:
        tunnel.popen.send_signal(signal.SIGCONT)
    assert [(a.status, a.header("x-hatchway-error")) for a in answers] == [
        (502, "agent-unresponsive")
    ] * 3
    for _ in range(3):  # the resumed agent reads them, and says why it drops each
        tunnel.wait_for(r"dropped request \S+ \(POST /echo/late-\d on e2e\) unexecuted")
    assert get(relay, "/echo/resumed").status == 200  # it serves again once resumed
    assert [seen.target for seen in app.requests if "/late-" in seen.target] == []


def test_a_slow_app_behind_a_live_agent_gets_its_answer(
    relay: LocalServer, tunnel: AgentProcess
) -> None:
    seconds = protocol.AGENT_SILENCE_SECONDS + 1.5  # past the silence check, within the deadline
    answer = get(relay, f"/slow?s={seconds}")
    assert (answer.status, answer.body) == (200, b"slow"), answer.text


class ConnectionWatch:
    """Records every agent connection the gateway holds, polling its table until stopped."""

    def __init__(self, relay: LocalServer) -> None:
        self.relay = relay
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        # A rotated-out connection lives for seconds after its successor opens; 20 ms polls
        # cannot miss one.
        while not self.stop.wait(0.02):
            self.seen.update(self.relay.connection_ids())

    @property
    def rotations(self) -> int:
        return max(0, len(self.seen) - 1)


@pytest.fixture
def watch(relay: LocalServer) -> Iterator[ConnectionWatch]:
    watch = ConnectionWatch(relay)
    watch.thread.start()
    yield watch
    watch.stop.set()
    watch.thread.join(5)


@pytest.mark.timeout(ROTATION_BUDGET_SECONDS + 120)
def test_rotation_under_load_loses_no_request(
    relay: LocalServer,
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
    watch: ConnectionWatch,
) -> None:
    start_agent(relay, str(app.port), extra=["--rotate-after", "1"])
    stop = threading.Event()
    failures: list[str] = []
    served = [0] * LOAD_THREADS

    def load(worker: int) -> None:
        for n in range(1_000_000):
            if stop.is_set():
                return
            target = f"/echo/{worker}/{n}"
            try:
                answer = get(relay, target, timeout=RESPONSE_TIMEOUT + 5)
            except OSError as exc:
                failures.append(f"{target}: {exc}")
                continue
            if answer.status != 200 or json.loads(answer.body).get("target") != target:
                failures.append(f"{target}: {answer.status} {answer.text[:200]}")
            served[worker] += 1
            stop.wait(LOAD_PAUSE_SECONDS)

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + ROTATION_BUDGET_SECONDS
    while watch.rotations < ROTATIONS and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(RESPONSE_TIMEOUT + 10)
    rotations, requests = watch.rotations, sum(served)
    print(f"{rotations} rotations, {requests} requests, {len(failures)} failed")
    assert failures == [], failures[:10]
    assert rotations >= MIN_ROTATIONS and requests > 10 * rotations


def test_a_second_agent_with_the_same_token_and_name_is_refused_naming_the_first(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess, agent_config: dict[str, str]
) -> None:
    second = AgentProcess(str(app.port), relay.agent_url, TOKEN, "e2e", env=agent_config)
    try:
        second.wait_for(r"served by another agent using your token", timeout=15)
        assert second.popen.wait(15) != 0
    finally:
        second.kill()
    assert get(relay, "/echo/still-first").status == 200  # the first one serves on


def test_a_restarted_dynamodb_gateway_forgets_the_connections_of_its_earlier_run(
    moto_endpoint: str,
) -> None:
    from hatchway_local.server import run_local
    from hatchway_relay.ports import Claim, ConnectionRecord

    table = "hatchway-restart"
    with run_local(
        store="dynamodb", dynamodb_endpoint=moto_endpoint, table_name=table, tokens=(TOKEN,)
    ) as first:
        now = time.time()
        # What a killed gateway leaves behind: a live-looking connection holding a name.
        first.store.put_connection(ConnectionRecord("dead-1", "t1", now, now + 7200, ("shop",)))
        first.store.claim_name(Claim("shop", "dead-1", "t1", now + 600), now)
    with run_local(
        store="dynamodb", dynamodb_endpoint=moto_endpoint, table_name=table, tokens=(TOKEN,)
    ) as second:
        assert second.store.get_connection("dead-1") is None
        assert second.store.get_claim("shop") is None  # free for the restarted agent at once
