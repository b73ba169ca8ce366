"""``tunnel_stats``: which cause each answer counts under (the forwarder's real faults
included), and the errors and latency percentiles a ping reports, within the protocol's
bounds."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hatchway import protocol
from hatchway.protocol import Fault, Request, Response, TunnelHealth
from hatchway.serving.forward import Forwarder, Target
from hatchway.serving.tunnel_stats import TunnelStats, cause_of
from support.local_app import LocalApp, run_local_app


def fault(status: int, side: str, message: str = "it failed") -> Response:
    return Response("r1", status, fault=Fault(side, message))


@pytest.mark.parametrize(
    ("response", "cause"),
    [
        pytest.param(Response("r1", 200), None, id="ok"),
        pytest.param(Response("r1", 304), None, id="not modified"),
        pytest.param(Response("r1", 404), None, id="the visitor's mistake"),
        pytest.param(Response("r1", 500), "app-5xx", id="app 500"),
        pytest.param(Response("r1", 503), "app-5xx", id="app 503"),
        pytest.param(
            Response("r1", 400, (("x-hatchway-error", "agent-refused"),)),
            "agent-refused",
            id="agent refused the target",
        ),
        pytest.param(fault(413, "local app"), "response-too-large", id="too large"),
        pytest.param(fault(503, "local app"), "tunnel-busy", id="tunnel busy"),
        pytest.param(fault(504, "local app"), "local-app-timeout", id="504 fault"),
        pytest.param(
            fault(502, "local app", "connection refused by http://127.0.0.1:1; is it running?"),
            "local-app-refused",
            id="refused",
        ),
        pytest.param(
            fault(502, "local app", "http://127.0.0.1:1 did not answer within 3 s"),
            "local-app-timeout",
            id="timed out",
        ),
        pytest.param(fault(502, "local app"), "local-app-error", id="other app fault"),
        pytest.param(fault(502, "agent"), "agent-error", id="agent fault"),
    ],
)
def test_each_answer_counts_under_its_cause(response: Response, cause: str | None) -> None:
    assert cause_of(response) == cause


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def app() -> Iterator[LocalApp]:
    with run_local_app() as running:
        yield running


@pytest.mark.parametrize(
    ("path", "query", "forwarder", "cause"),
    [
        pytest.param("/status/500", "", {}, "app-5xx", id="app 500"),
        pytest.param("/slow", "s=5", {"timeout": 0.2}, "local-app-timeout", id="slow"),
        pytest.param(
            "/bytes", "n=100", {"max_response_bytes": 10}, "response-too-large", id="large"
        ),
        pytest.param("/echo", "", {}, None, id="ok"),
    ],
)
def test_the_forwarders_real_answers_get_their_causes(
    app: LocalApp, path: str, query: str, forwarder: dict[str, float], cause: str | None
) -> None:
    target = Target("127.0.0.1", app.port)
    response = Forwarder(target, **forwarder).handle(  # type: ignore[arg-type]
        Request("r1", "shop", "GET", path, query)
    )
    assert cause_of(response) == cause


def test_an_app_that_is_not_running_is_local_app_refused() -> None:
    response = Forwarder(Target("127.0.0.1", unused_port())).handle(
        Request("r1", "shop", "GET", "/")
    )
    assert cause_of(response) == "local-app-refused"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_percentiles_come_from_the_answers_of_the_window() -> None:
    clock = Clock()
    stats = TunnelStats(window=60, clock=clock)
    assert stats.health() == ()
    for ms in range(1, 101):  # 1 ms to 100 ms
        stats.record("shop", Response("r1", 200), ms / 1000)
    assert stats.health() == (("shop", TunnelHealth((), 50, 95)),)
    clock.now += 30
    stats.record("shop", Response("r1", 200), 2.0)
    assert stats.health() == (("shop", TunnelHealth((), 51, 96)),)
    clock.now += 31  # the first hundred are older than the window now
    assert stats.health() == (("shop", TunnelHealth((), 2000, 2000)),)
    clock.now += 60
    assert stats.health() == ()  # nothing recent, no errors: nothing to say


def test_errors_stay_for_the_connections_life_and_the_latency_for_the_window() -> None:
    clock = Clock()
    stats = TunnelStats(window=60, clock=clock)
    stats.record("shop", Response("r1", 500), 0.004)
    stats.record("shop", fault(502, "local app", "connection refused by x"), 0.001)
    stats.record("shop", fault(502, "local app", "connection refused by x"), None)
    stats.record("api", Response("r1", 200), 0.010)
    assert stats.health() == (
        ("api", TunnelHealth((), 10, 10)),
        ("shop", TunnelHealth((("local-app-refused", 2), ("app-5xx", 1)), 1, 4)),
    )
    clock.now += 3600
    assert stats.health() == (("shop", TunnelHealth((("local-app-refused", 2), ("app-5xx", 1)))),)


def test_samples_counts_causes_and_tunnels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    stats = TunnelStats(max_samples=10, clock=Clock())
    for ms in range(100):
        stats.record("shop", Response("r1", 200), ms / 1000)
    assert stats.health() == (("shop", TunnelHealth((), 94, 99)),)  # the newest ten
    stats.record("shop", Response("r1", 200), 10 * protocol.MAX_LATENCY_MS)
    ((_, slow),) = stats.health()
    assert slow.p95_ms == protocol.MAX_LATENCY_MS

    # More causes than a ping carries: the most frequent go.
    monkeypatch.setattr(
        "hatchway.serving.tunnel_stats.cause_of", lambda r: r.fault and r.fault.message
    )
    causes = [f"cause-{i}" for i in range(protocol.MAX_ERROR_CAUSES + 3)]
    for n, cause in enumerate(causes):
        for _ in range(n + 1):
            stats.record("api", fault(502, "local app", cause), None)
    api = dict(stats.health())["api"]
    assert [c for c, _ in api.errors] == causes[::-1][: protocol.MAX_ERROR_CAUSES]

    # A relay naming more tunnels than a connection serves gets no larger ping for it.
    many = TunnelStats(clock=Clock())
    for n in range(protocol.MAX_TUNNELS_PER_CONNECTION + 5):
        many.record(f"t{n}", Response("r1", 500), 0.001)
    report = many.health()
    assert len(report) == protocol.MAX_TUNNELS_PER_CONNECTION
    protocol.Ping(1.0, (), report)  # valid as it is


def test_counts_are_capped_at_what_a_ping_carries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_REPORTED_COUNT", 3)
    stats = TunnelStats(clock=Clock())
    for _ in range(5):
        stats.record("shop", Response("r1", 500), None)
    assert stats.health() == (("shop", TunnelHealth((("app-5xx", 3),))),)
