"""A new AWS account's small Lambda quota (10 or 50 concurrent executions, nothing reservable):
slow apps' visitors hold every execution while they wait, and their answers still arrive,
because API Gateway stores them itself (the answer integration), with no Lambda. The local
gateway counts executions as Lambda does; both store modes, the real agent and app."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e

APP_SECONDS = 2.0
"""How long the app takes to answer each visitor."""


def at_once(relay: LocalServer, visitors: int) -> list[tuple[Answer, float]]:
    """``visitors`` requests to the slow app, all sent together; each answer and its time."""

    def one(_: int) -> tuple[Answer, float]:
        started = time.monotonic()
        answer = visit(relay.port, "GET", f"/slow?s={APP_SECONDS:g}", f"e2e.localhost:{relay.port}")
        return answer, time.monotonic() - started

    with ThreadPoolExecutor(visitors) as pool:
        return list(pool.map(one, range(visitors)))


def answered_by_the_app(answer: Answer) -> bool:
    return answer.status == 200 and answer.body == b"slow"


def test_a_quota_of_ten_serves_ten_slow_visitors_at_once(
    make_relay: Callable[..., LocalServer], app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    relay = make_relay(account_concurrency=10)
    start_agent(relay, str(app.port))
    answers = at_once(relay, 10)
    assert [answered_by_the_app(answer) for answer, _ in answers] == [True] * 10


@pytest.mark.parametrize(("quota", "visitors"), [(10, 25), (50, 50)])
def test_beyond_the_quota_each_visitor_gets_the_answer_or_an_immediate_refusal(
    make_relay: Callable[..., LocalServer],
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
    quota: int,
    visitors: int,
) -> None:
    relay = make_relay(account_concurrency=quota)
    start_agent(relay, str(app.port))
    answers = at_once(relay, visitors)
    # A refusal (API Gateway's 500 for a throttled invocation, the agent's 503 tunnel-busy)
    # comes before the app could have answered; never a wait that ends in a 502 or 504.
    failures = [
        (answer.status, answer.header("x-hatchway-error"), round(took, 1))
        for answer, took in answers
        if not answered_by_the_app(answer)
    ]
    assert [f for f in failures if f[0] in (502, 504) or f[2] >= APP_SECONDS] == []
    served = sum(answered_by_the_app(answer) for answer, _ in answers)
    # Every execution the account has serves a visitor; the agent serves 48 requests per
    # tunnel at once, and the rest wait their turn.
    assert served >= min(quota, visitors)
