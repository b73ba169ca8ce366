"""What the relay counts for each visitor request, and how those counts reach CloudWatch."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from aws_lambda_powertools import Metrics

from hatchway_relay.adapters.emf_metrics import EmfMetrics
from hatchway_relay.metrics import record_visit


class Recorded:
    def __init__(self) -> None:
        self.points: list[tuple[str, float, str, dict[str, str]]] = []

    def add(
        self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None
    ) -> None:
        self.points.append((name, value, unit, dict(dimensions or {})))


@pytest.mark.parametrize(
    ("status", "code", "errors"),
    [
        (200, None, []),
        (304, None, []),
        (
            404,
            "tunnel-not-found",
            [("Responses4xx", {}), ("Errors", {"Cause": "tunnel-not-found"})],
        ),
        (404, None, [("Responses4xx", {}), ("Errors", {"Cause": "local-app"})]),
        (500, None, [("Responses5xx", {}), ("Errors", {"Cause": "local-app"})]),
        (
            504,
            "local-app-timeout",
            [("Responses5xx", {}), ("Errors", {"Cause": "local-app-timeout"})],
        ),
        (502, "agent-gone", [("Responses5xx", {}), ("Errors", {"Cause": "agent-gone"})]),
    ],
)
def test_each_visit_is_counted_with_its_cause(
    status: int, code: str | None, errors: list[tuple[str, dict[str, str]]]
) -> None:
    recorded = Recorded()
    record_visit(recorded, status, code, 0.25)
    assert recorded.points[:2] == [
        ("Requests", 1, "Count", {}),
        ("WaitTime", 250.0, "Milliseconds", {}),
    ]
    assert [(name, dims) for name, _, _, dims in recorded.points[2:]] == errors


def test_emf_keeps_dimensioned_points_apart_from_the_batch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    powertools = Metrics(namespace="Hatchway/test", service="relay")
    emf = EmfMetrics(powertools, "relay")
    emf.add("ActiveTunnels", 2, "Count")
    emf.add("Errors", 1, "Count", {"Cause": "agent-gone"})
    powertools.flush_metrics()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_metric = {r["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]: r for r in lines}
    assert by_metric["Errors"]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [
        ["service", "Cause"]
    ]
    assert by_metric["Errors"]["Cause"] == "agent-gone"
    tunnels = by_metric["ActiveTunnels"]["_aws"]["CloudWatchMetrics"][0]
    assert tunnels["Dimensions"] == [["service"]] and tunnels["Namespace"] == "Hatchway/test"


@pytest.mark.parametrize(
    ("status", "code", "logged"),
    [(200, None, set()), (404, None, {"Errors"}), (504, "local-app-timeout", {"Errors"})],
)
def test_emf_logs_only_what_api_gateway_cannot_count(
    status: int, code: str | None, logged: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # Requests, 4xx, 5xx and latency come free from the HTTP API's own metrics: a line of
    # them in every request's log would be billed for nothing.
    powertools = Metrics(namespace="Hatchway/test", service="relay")
    record_visit(EmfMetrics(powertools, "relay"), status, code, 0.25)
    powertools.flush_metrics(raise_on_empty_metrics=False)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    names = {m["Name"] for r in lines for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == logged
