"""Reading access logs: whose tunnel a visitor's line is, which lines a query keeps, the
CloudWatch filter pattern that narrows them first, and how a line reads."""

from __future__ import annotations

import json

import pytest

from hatchway_relay.access_logs import (
    LogQuery,
    Routing,
    describe,
    filter_pattern,
    select,
    tunnel_of,
)

ROUTING = Routing("t.example.com", {"api.mycompany.com": "myapp"})


@pytest.mark.parametrize(
    ("host", "path", "tunnel"),
    [
        ("myapp.t.example.com", "/x", "myapp"),
        ("MyApp.T.Example.com:443", "/", "myapp"),
        ("abc123.execute-api.eu-west-1.amazonaws.com", "/t/myapp/x/y", "myapp"),
        ("abc123.execute-api.eu-west-1.amazonaws.com", "/t/myapp", "myapp"),
        ("api.mycompany.com", "/t/other/", "myapp"),  # a custom hostname wins over the path
        ("a.b.t.example.com", "/", None),  # two labels below the domain name no tunnel
        ("t.example.com", "/", None),
        ("abc123.execute-api.eu-west-1.amazonaws.com", "/x", None),
        ("abc123.execute-api.eu-west-1.amazonaws.com", "/t/Bad_Name/", None),
    ],
)
def test_a_visitors_line_belongs_to_the_tunnel_the_relay_routed_it_to(
    host: str, path: str, tunnel: str | None
) -> None:
    assert tunnel_of(host, path, ROUTING) == tunnel


def line(request_id: str, time_ms: int, host: str, path: str = "/", **more: str) -> str:
    fields = {"requestId": request_id, "time": str(time_ms), "ip": "203.0.113.9", "host": host}
    return json.dumps({**fields, "method": "GET", "path": path, "status": "200", **more})


def agent_line(request_id: str, time_ms: int) -> str:
    return json.dumps(
        {"requestId": request_id, "time": str(time_ms), "connectionId": "C1=", "route": "$connect"}
    )


LINES = [
    line("r3", 3_000, "myapp.t.example.com"),
    line("r1", 1_000, "api.mycompany.com"),
    line("r2", 2_000, "other.t.example.com"),
    agent_line("a1", 1_500),
    "START RequestId: not an access-log line",
    line("r4", 4_000, "x.execute-api.eu-west-1.amazonaws.com", "/t/myapp/"),
]


@pytest.mark.parametrize(
    ("query", "ids"),
    [
        (LogQuery(), ["r1", "r2", "r3", "r4"]),
        (LogQuery(tunnel="myapp"), ["r1", "r3", "r4"]),
        (LogQuery(tunnel="myapp", since=2.5), ["r3", "r4"]),
        (LogQuery(tunnel="myapp", limit=2), ["r3", "r4"]),  # the latest, oldest first
        (LogQuery(tunnel="nobody"), []),
        (LogQuery(agents=True), ["a1"]),
    ],
)
def test_a_query_keeps_its_lines_oldest_first(query: LogQuery, ids: list[str]) -> None:
    assert [entry["requestId"] for entry in select(LINES, query, ROUTING)] == ids


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        (LogQuery(), ""),
        (LogQuery(agents=True, tunnel="myapp"), ""),
        (LogQuery(tunnel="other"), '"other"'),
        (LogQuery(tunnel="myapp"), '?"myapp" ?"api.mycompany.com"'),
    ],
)
def test_the_filter_pattern_keeps_every_line_a_query_could_want(
    query: LogQuery, pattern: str
) -> None:
    assert filter_pattern(query, ROUTING) == pattern


@pytest.mark.parametrize(
    "query",
    [lambda: LogQuery(limit=0), lambda: LogQuery(limit=10_001), lambda: LogQuery(tunnel="A B")],
)
def test_queries_out_of_bounds_are_refused(query: object) -> None:
    with pytest.raises(ValueError):
        query()  # type: ignore[operator]


def test_a_line_reads_as_time_source_request_status_latency_and_error() -> None:
    entry = json.loads(
        line("r9", 1_700_000_000_000, "myapp.t.example.com", "/x", latencyMs="12")
        .replace('"status": "200"', '"status": "500"')
        .rstrip("}")
        + ', "integrationError": "The Lambda function failed"}'
    )
    assert describe(entry) == (
        "2023-11-14 22:13:20  203.0.113.9  GET myapp.t.example.com/x  500  12 ms  r9"
        "  error: The Lambda function failed"
    )
    agent = json.loads(agent_line("a9", 1_700_000_000_000))
    assert "$connect  connection C1=" in describe(agent)
    assert "error" not in describe({**agent, "integrationError": "-"})
