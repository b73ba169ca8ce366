"""The dashboard's server: loopback only, Host-checked, every change behind the page's CSRF token
and a same-origin ``Origin``, a new token answered once and never again, revoking only once
confirmed, the page's security headers, and no secret in the logs."""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hatchway_local.dashboard import Sources
from hatchway_local.dashboard.data import StoreSource
from hatchway_local.dashboard.metrics import LocalReader, NoMetrics, RelayCharts
from hatchway_local.dashboard.server import DashboardServer
from hatchway_relay.adapters.memory_metrics import MemoryMetrics
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.metrics import record_visit
from hatchway_relay.ports import Claim, ConnectionRecord


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Dashboard:
    server: DashboardServer
    store: MemoryStore
    port: int

    def request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        host: str | None = None,
        csrf: str | None = "page",
        origin: str | None = "same",
        content_type: str = "application/json",
    ) -> Answer:
        headers = {"Host": host or f"127.0.0.1:{self.port}"}
        if method == "POST":
            headers["Content-Type"] = content_type
            if csrf is not None:
                headers["X-CSRF-Token"] = self.server.csrf_token if csrf == "page" else csrf
            if origin is not None:
                headers["Origin"] = f"http://{headers['Host']}" if origin == "same" else origin
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = None if payload is None else json.dumps(payload).encode()
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def create(self, label: str = "laptop", **extra: Any) -> Answer:
        return self.request("POST", "/api/tokens", {"label": label, **extra})


@pytest.fixture
def dashboard() -> Iterator[Dashboard]:
    store = MemoryStore()
    metrics = MemoryMetrics()
    record_visit(metrics, 200, None, 0.02)
    sources = Sources(StoreSource(store), RelayCharts(LocalReader(metrics)), "test relay", 0.1, 0.1)
    with DashboardServer(sources) as server:
        url = server.start(0)
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        yield Dashboard(server, store, port)


def test_it_listens_on_loopback_and_serves_the_page_with_its_csrf_token(
    dashboard: Dashboard,
) -> None:
    assert dashboard.server.url == f"http://127.0.0.1:{dashboard.port}/"
    page = dashboard.request("GET", "/")
    assert page.status == 200
    token = re.search(rb'name="hatchway-csrf" content="([^"]+)"', page.body)
    assert token and token.group(1).decode() == dashboard.server.csrf_token
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert b"<script>" not in page.body  # no inline script: the policy would block it anyway
    assert dashboard.request("GET", "/app.js").status == 200


def test_two_servers_have_two_csrf_tokens(dashboard: Dashboard) -> None:
    other = DashboardServer(dashboard.server.sources)
    assert other.csrf_token != dashboard.server.csrf_token


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io", ""])
def test_a_host_that_is_not_loopback_is_refused(dashboard: Dashboard, host: str) -> None:
    for method, path in (("GET", "/"), ("GET", "/api/state"), ("POST", "/api/tokens")):
        answer = dashboard.request(method, path, {"label": "x"}, host=host or " ")
        assert answer.status == 403, (method, path)
    assert dashboard.store.list_tokens() == []


@pytest.mark.parametrize("host", ["localhost", "[::1]", "127.0.0.1"])
def test_loopback_names_are_served(dashboard: Dashboard, host: str) -> None:
    assert dashboard.request("GET", "/api/state", host=f"{host}:{dashboard.port}").status == 200


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"csrf": None}, 403, "CSRF token"),
        ({"csrf": "guessed"}, 403, "CSRF token"),
        ({"origin": "http://evil.example"}, 403, "another site"),
        ({"content_type": "text/plain"}, 415, "JSON"),
    ],
)
def test_a_change_without_the_pages_credentials_is_refused(
    dashboard: Dashboard, change: dict[str, Any], status: int, message: str
) -> None:
    dashboard.create("laptop")
    (token_id,) = [r.token_id for r in dashboard.store.list_tokens()]
    attempts = [
        ("/api/tokens", {"label": "intruder"}),
        (f"/api/tokens/{token_id}/revoke", {"confirm": token_id}),
        ("/api/reservations", {"name": "stolen", "token_id": token_id}),
    ]
    for path, payload in attempts:
        answer = dashboard.request("POST", path, payload, **change)
        assert answer.status == status, path
        assert message in answer.json()["error"]
    assert [r.label for r in dashboard.store.list_tokens()] == ["laptop"]
    assert dashboard.store.get_reservation("stolen") is None


def test_a_new_token_is_shown_once(dashboard: Dashboard) -> None:
    created = dashboard.create("ci runner", reserve="shop, hooks", limits={"rate": 5})
    assert created.status == 201
    shown = created.json()
    assert shown["token"].startswith("hw_") and shown["reserved"] == ["shop", "hooks"]
    assert "shown once" in shown["note"]
    state = dashboard.request("GET", "/api/state")
    assert shown["token"].encode() not in state.body
    (row,) = state.json()["tokens"]
    assert (row["token_id"], row["label"]) == (shown["token_id"], "ci runner")
    assert row["limits"]["rate"] == 5 and row["limits"]["burst"] == 0
    assert [r["name"] for r in state.json()["reservations"]] == ["hooks", "shop"]
    for path in ("/", "/api/metrics", "/api/domain"):
        assert shown["token"].encode() not in dashboard.request("GET", path).body


def test_a_refused_token_says_why(dashboard: Dashboard) -> None:
    dashboard.create("first", reserve=["shop"])
    taken = dashboard.create("second", reserve=["shop"])
    assert taken.status == 400
    assert "reserved for another token" in taken.json()["error"]
    assert dashboard.create("").status == 400
    assert dashboard.request("POST", "/api/tokens", ["not", "an", "object"]).status == 400


def test_revoking_needs_the_confirmation_and_then_cuts_the_tunnel(dashboard: Dashboard) -> None:
    token_id = dashboard.create("doomed").json()["token_id"]
    now = time.time()
    dashboard.store.put_connection(ConnectionRecord("c1", token_id, now, now + 600, ("shop",)))
    dashboard.store.claim_name(Claim("shop", "c1", token_id, now + 600), now)
    revoke = f"/api/tokens/{token_id}/revoke"

    for payload in ({}, {"confirm": "someone-else"}, {"confirm": True}):
        refused = dashboard.request("POST", revoke, payload)
        assert refused.status == 428
        assert "confirm" in refused.json()["error"]
    assert [t["name"] for t in dashboard.request("GET", "/api/state").json()["tunnels"]] == ["shop"]

    done = dashboard.request("POST", revoke, {"confirm": token_id})
    assert (done.status, done.json()) == (200, {"revoked": token_id, "connections_cut": 1})
    state = dashboard.request("GET", "/api/state").json()
    assert (state["tokens"], state["tunnels"]) == ([], [])
    assert dashboard.request("POST", revoke, {"confirm": token_id}).status == 404


def test_reserve_and_release(dashboard: Dashboard) -> None:
    token_id = dashboard.create("owner").json()["token_id"]
    reserved = dashboard.request(
        "POST", "/api/reservations", {"name": "docs", "token_id": token_id}
    )
    assert reserved.status == 201
    assert dashboard.store.get_reservation("docs") == token_id
    bad = dashboard.request("POST", "/api/reservations", {"name": "No!", "token_id": token_id})
    assert bad.status == 400
    release = "/api/reservations/docs/release"
    assert dashboard.request("POST", release, {"token_id": "0" * 12}).status == 404
    assert dashboard.request("POST", release, {"token_id": token_id}).status == 200
    assert dashboard.store.get_reservation("docs") is None


def test_metrics_come_as_svg_charts_and_an_unknown_window_is_refused(dashboard: Dashboard) -> None:
    found = dashboard.request("GET", "/api/metrics?window=day").json()
    assert [c["key"] for c in found["charts"]] == ["requests", "responses", "wait", "errors"]
    assert found["charts"][0]["summary"] == "1 requests in the last day"
    assert found["charts"][0]["svg"].startswith("<svg")
    assert dashboard.request("GET", "/api/metrics?window=year").status == 400


def test_a_relay_without_metrics_is_said_to_have_none() -> None:
    sources = Sources(StoreSource(MemoryStore()), NoMetrics("metrics need --stack"), "t", 1, 1)
    with DashboardServer(sources) as server:
        port = int(server.start(0).rstrip("/").rsplit(":", 1)[1])
        answer = Dashboard(server, MemoryStore(), port).request("GET", "/api/metrics").json()
    assert answer == {"window": "hour", "charts": [], "note": "metrics need --stack"}


def test_wrong_methods_and_unknown_paths(dashboard: Dashboard) -> None:
    assert dashboard.request("POST", "/api/state", {}).status == 405
    assert dashboard.request("GET", "/api/tokens").status == 405
    assert dashboard.request("GET", "/api/nothing").status == 404
    assert dashboard.request("GET", "/../etc/passwd").status == 404


def test_a_failing_store_is_reported_not_fatal(dashboard: Dashboard) -> None:
    def broken() -> Any:
        raise OSError("the table is gone")

    dashboard.server.sources.data.snapshot = broken  # type: ignore[method-assign]
    time.sleep(0.1)  # past the snapshot cache
    answer = dashboard.request("GET", "/api/state")
    assert answer.status == 502 and "the table is gone" in answer.json()["error"]
    assert dashboard.request("GET", "/").status == 200


def test_no_token_reaches_the_logs(dashboard: Dashboard, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = dashboard.create("secretive").json()["token"]
    dashboard.request("POST", "/api/tokens", {"label": "x"}, csrf="wrong-token")
    assert token not in caplog.text
    assert dashboard.server.csrf_token not in caplog.text
