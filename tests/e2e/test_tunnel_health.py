"""A tunnel's errors by cause and recent latency, end to end in both store modes: a real agent
session serves two tunnels through the real local gateway, one to a running local app (some
answers fine, some the app's own 500s, some slow) and one to an app that is not running; after
the agent's next heartbeat the operator's dashboard shows each tunnel's causes and latency, and
its token as in use. Nothing is written per request: the figures ride on the ping's renewal."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from hatchway.protocol import Request, Response
from hatchway.serving.forward import Forwarder, Target
from hatchway.serving.session import Session
from hatchway_local.admin_api import RemoteStore
from hatchway_local.dashboard.data import Snapshot, StoreSource, TunnelRow
from hatchway_local.server import LocalServer
from hatchway_relay.adapters.dynamo_store import DynamoStore
from support.local_app import LocalApp, run_local_app
from support.visitor import visit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("isolated_settings")]

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers
HEARTBEAT_SECONDS = 0.5
"""The agent pings this often here (in production: every minute). The agent reconnects after
three heartbeats without a word from the relay, and a new connection counts from zero, as the
dashboard says ("since the agent connected"): at 0.2 s a machine busy enough to delay one pong
past 0.6 s (DynamoDB on moto's server) split this test's counts between two connections."""
REPORT_TIMEOUT_SECONDS = 15.0
POLL_SECONDS = 0.05

# (tunnel, path, status the visitor gets, the relay's error code) in the order sent
VISITS = [
    ("shop", "/echo/1", 200, None),
    ("shop", "/status/500", 500, None),
    ("shop", "/echo/2", 200, None),
    ("shop", "/slow?s=0.06", 200, None),
    ("shop", "/status/500", 500, None),
    ("shop", "/echo/3", 200, None),
    ("down", "/", 502, "local-app-error"),
    ("down", "/again", 502, "local-app-error"),
]


@pytest.fixture
def app() -> Iterator[LocalApp]:
    with run_local_app() as running:
        yield running


@pytest.fixture
def agent(relay: LocalServer, app: LocalApp, unused_port: int) -> Iterator[Session]:
    """One agent connection serving ``shop`` (its app runs) and ``down`` (nothing listens);
    ready once welcomed."""
    forwarders = {
        "shop": Forwarder(Target("127.0.0.1", app.port), timeout=10),
        "down": Forwarder(Target("127.0.0.1", unused_port), timeout=10),
    }

    def handle(request: Request) -> Response:
        return forwarders[request.tunnel].handle(request)

    with ExitStack() as stack:
        for forwarder in forwarders.values():
            stack.callback(forwarder.close)
        session = Session(
            relay.agent_url, TOKEN, handle, ("shop", "down"), heartbeat=HEARTBEAT_SECONDS
        )
        yield stack.enter_context(session.start())


def sources(relay: LocalServer) -> list[StoreSource]:
    """The dashboard's view of this relay: through hatchway-local's admin API (``hatchway-admin
    --local dashboard``), and for DynamoDB also straight from the table (a deployed stack's)."""
    found = [StoreSource(RemoteStore(relay.admin.url, relay.admin.key))]
    if isinstance(relay.store, DynamoStore):
        found.append(StoreSource(relay.store))
    return found


def wait_for(source: StoreSource, ready: Callable[[dict[str, TunnelRow]], bool]) -> Snapshot:
    """The first snapshot whose tunnels satisfy ``ready`` (a heartbeat or two away)."""
    return wait_for_snapshot(source, lambda s: ready({t.name: t for t in s.tunnels}))


def wait_for_snapshot(source: StoreSource, ready: Callable[[Snapshot], bool]) -> Snapshot:
    deadline = time.monotonic() + REPORT_TIMEOUT_SECONDS
    while True:
        snapshot = source.snapshot()
        if ready(snapshot):
            return snapshot
        if time.monotonic() > deadline:
            raise AssertionError(f"the dashboard never showed the reports: {snapshot.tunnels}")
        time.sleep(POLL_SECONDS)


def test_the_dashboard_shows_each_tunnels_errors_by_cause_and_latency(
    relay: LocalServer, agent: Session
) -> None:
    for tunnel, path, status, code in VISITS:
        answer = visit(relay.port, "GET", f"/t/{tunnel}{path}", f"127.0.0.1:{relay.port}")
        assert (answer.status, answer.header("x-hatchway-error")) == (status, code), answer.text

    for source in sources(relay):
        snapshot = wait_for(
            source,
            lambda t: t["shop"].served == 6 and t["down"].served == 2 and bool(t["down"].errors),
        )
        tunnels = {t.name: t for t in snapshot.tunnels}
        shop, down = tunnels["shop"], tunnels["down"]
        assert shop.errors == {"app-5xx": 2}  # the app's own 500s, not the visitor's 200s
        # The relay says local-app-error; the agent knows the app is not running.
        assert down.errors == {"local-app-refused": 2}
        assert shop.latency_p50_ms is not None and shop.latency_p95_ms is not None
        assert shop.latency_p95_ms >= 60  # the slow answer is the 95th percentile of six
        assert shop.latency_p50_ms <= shop.latency_p95_ms
        assert down.latency_p95_ms is not None
        (token,) = snapshot.tokens
        assert token.last_used == snapshot.taken_at and token.in_use_since is not None


def test_the_token_keeps_its_last_use_after_the_agent_left(
    relay: LocalServer, agent: Session
) -> None:
    (source, *_) = sources(relay)
    wait_for(source, lambda t: "shop" in t)
    agent.close()
    # The relay releases the names first, then forgets the connection: wait for both.
    snapshot = wait_for_snapshot(source, lambda s: not s.tunnels and not s.tokens[0].connections)
    (token,) = snapshot.tokens
    assert token.in_use_since is None
    assert token.last_used is not None and token.last_used <= snapshot.taken_at
    assert snapshot.taken_at - token.last_used < 60
