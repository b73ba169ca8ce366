"""A burst larger than a tunnel's limit on the agent: a page's assets through a slow dev server,
200 visitors at once, half of them to an endpoint that takes half a second. The requests past
the 48 the agent serves at once wait their turn and are all served; none is refused. The
local gateway (both store modes), the real agent and app."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from hatchway.serving.inflight import MAX_TUNNEL_REQUESTS
from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e

VISITORS = {"memory": 200, "dynamodb": 100}
"""With DynamoDB, 100: moto's server runs one call at a time, so a burst's answers, marks and
every visitor's polls queue behind each other there (at 200, seconds behind), as they do not on
DynamoDB itself. 100 at once still overflow the agent's limit of 48 twice over."""

SLOW_SECONDS = 0.5


def test_a_burst_past_the_tunnels_limit_waits_its_turn_and_is_served_whole(
    make_relay: Callable[..., LocalServer],
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
    store_mode: str,
) -> None:
    relay = make_relay()
    start_agent(relay, str(app.port))
    visitors = VISITORS[store_mode]
    paths = [f"/slow?s={SLOW_SECONDS:g}" if n % 2 else f"/echo/{n}" for n in range(visitors)]

    def one(path: str) -> Answer:
        return visit(relay.port, "GET", path, f"e2e.localhost:{relay.port}")

    with ThreadPoolExecutor(visitors) as pool:
        answers = list(pool.map(one, paths))
    assert visitors >= 2 * MAX_TUNNEL_REQUESTS
    failed = [(a.status, a.header("x-hatchway-error")) for a in answers if a.status != 200]
    assert failed == []
    assert [a.body == b"slow" for a in answers[1::2]] == [True] * (visitors // 2)
    assert sorted(s.target for s in app.requests) == sorted(paths)  # each exactly once
