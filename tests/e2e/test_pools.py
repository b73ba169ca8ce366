"""Several agents serving one name (a pool) through the real local gateway, in both store modes:
three in-process agent sessions, each forwarding to its own local app, share the load without
crossing answers; one dies mid-load and nobody who arrives after the relay knows it sees a
failure; an agent that did not ask for a pool is refused and told about ``--pool``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from hatchway import protocol
from hatchway.errors import NameTaken
from hatchway.serving.forward import Forwarder, Target
from hatchway.serving.session import Session
from hatchway_local.server import LocalServer
from support.local_app import LocalApp, run_local_app
from support.visitor import visit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("isolated_settings")]

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers
NAME = "shop"
MEMBERS = 3
REQUESTS = 1000
VISITORS = 16
"""Visitor requests in flight at once (a bounded pool of client threads)."""

FAIR_SHARE = 0.2
"""Each of three members serves at least this share of a steady load."""

REMOVAL_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.02


@dataclass
class Member:
    app: LocalApp
    session: Session

    def nonces(self) -> set[str]:
        return {_nonce(seen.target) for seen in list(self.app.requests)}


def _nonce(target: str) -> str:
    return target.partition("nonce=")[2]


@pytest.fixture
def pool(relay: LocalServer) -> Iterator[list[Member]]:
    """Three agents of one token on ``NAME``, each with its own local app; ready when each has
    its welcome."""
    with ExitStack() as stack:
        members = []
        for _ in range(MEMBERS):
            app = stack.enter_context(run_local_app())
            forwarder = Forwarder(Target("127.0.0.1", app.port), timeout=10)
            stack.callback(forwarder.close)
            session = Session(
                relay.agent_url, TOKEN, forwarder, (protocol.TunnelSpec(NAME, pool=True),)
            )
            stack.enter_context(session.start())
            members.append(Member(app, session))
        yield members


@dataclass
class Outcome:
    nonce: str
    started: float
    status: int
    error: str
    echoed: str


def one_request(relay: LocalServer) -> Outcome:
    nonce = uuid.uuid4().hex
    started = time.monotonic()
    answer = visit(
        relay.port, "GET", f"/t/{NAME}/echo?nonce={nonce}", f"127.0.0.1:{relay.port}", timeout=20
    )
    echoed = ""
    if answer.status == 200:
        echoed = _nonce(json.loads(answer.body)["target"])
    return Outcome(nonce, started, answer.status, answer.header("x-hatchway-error") or "", echoed)


def load(relay: LocalServer, count: int, on_done: Callable[[int], None] = lambda n: None) -> list:
    """``count`` visitor requests, ``VISITORS`` at a time; their outcomes in completion order."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def run() -> None:
        outcome = one_request(relay)
        with lock:
            outcomes.append(outcome)
            done = len(outcomes)
        on_done(done)

    with ThreadPoolExecutor(VISITORS) as visitors:
        for future in [visitors.submit(run) for _ in range(count)]:
            future.result()
    return outcomes


def members_listed(relay: LocalServer) -> int:
    claim = relay.store.get_claim(NAME)
    return len(claim.members) if claim is not None else 0


def test_three_agents_share_one_name_without_crossing_answers(
    relay: LocalServer, pool: list[Member]
) -> None:
    welcome = pool[-1].session.welcome
    assert welcome is not None and welcome.tunnels[0].pool_size == MEMBERS
    assert welcome.tunnels[0].pooled_since > 0

    outcomes = load(relay, REQUESTS)

    assert [o for o in outcomes if o.status != 200] == []
    assert all(o.echoed == o.nonce for o in outcomes), "an answer reached the wrong visitor"
    served = [member.nonces() for member in pool]
    assert sum(len(s) for s in served) == REQUESTS
    assert set.union(*served) == {o.nonce for o in outcomes}  # each served exactly once
    for share in served:
        assert len(share) >= FAIR_SHARE * REQUESTS, [len(s) for s in served]


def crash(session: Session) -> None:
    """The agent's process dies: its socket drops without a close frame, and nothing of it
    reconnects."""
    session._closing.set()
    current = session._current
    assert current is not None
    current.link.abort()


def test_a_member_killed_mid_load_fails_nobody_who_arrives_after_its_removal(
    relay: LocalServer, pool: list[Member]
) -> None:
    killed = threading.Event()
    removed_at: list[float] = []

    def kill_once(done: int) -> None:
        if done == REQUESTS // 4 and not killed.is_set():
            killed.set()
            crash(pool[1].session)

    def watch_removal() -> None:
        # The moment the relay knows: the claim no longer lists the dead member.
        assert killed.wait(REMOVAL_TIMEOUT_SECONDS * 4)
        deadline = time.monotonic() + REMOVAL_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if members_listed(relay) == MEMBERS - 1:
                removed_at.append(time.monotonic())
                return
            time.sleep(POLL_SECONDS)

    watcher = threading.Thread(target=watch_removal, daemon=True)
    watcher.start()
    outcomes = load(relay, REQUESTS, kill_once)
    watcher.join(REMOVAL_TIMEOUT_SECONDS)

    assert removed_at, "the relay never removed the dead member from the pool"
    after = [o for o in outcomes if o.started > removed_at[0]]
    assert len(after) > REQUESTS // 4  # the load went on well past the removal
    assert [o for o in after if o.status != 200] == []
    failed = [o for o in outcomes if o.status != 200]
    # Only requests the dead member held when it died may fail, and they say so.
    assert {o.error for o in failed} <= {"agent-gone"}
    assert len(failed) <= VISITORS
    assert all(o.echoed == o.nonce for o in outcomes if o.status == 200)
    alive = [pool[0], pool[2]]
    assert all(len(member.nonces()) > len(after) // 4 for member in alive)


def test_an_agent_without_pool_is_refused_and_told_about_pool(
    relay: LocalServer, pool: list[Member]
) -> None:
    with run_local_app() as app:
        forwarder = Forwarder(Target("127.0.0.1", app.port), timeout=10)
        try:
            with pytest.raises(NameTaken, match="--pool"):
                Session(relay.agent_url, TOKEN, forwarder, (NAME,)).start()
        finally:
            forwarder.close()
    assert members_listed(relay) == MEMBERS
