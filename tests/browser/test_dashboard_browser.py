"""The operator's dashboard in a real browser, against a running ``hatchway-local`` (its admin
API, a real agent, a real local app, visitors over loopback) and against a moto-backed stack
(DynamoDB, CloudWatch, ACM). What an operator sees: tokens listed, one created and shown once,
a tunnel's request count and charts rising while traffic flows, revoking asked twice and the
tunnel gone without a reload, and a page that loads nothing from elsewhere."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from playwright.sync_api import Page, expect

from hatchway.serving.forward import Forwarder, Target
from hatchway.serving.session import Session
from hatchway_local.admin_api import RemoteStore
from hatchway_local.dashboard import DashboardServer, Sources, dashboard_sources
from hatchway_local.dashboard.data import StoreSource
from hatchway_local.dashboard.metrics import (
    AwsDomainSource,
    CloudWatchReader,
    RelayCharts,
    StackInfo,
)
from hatchway_local.server import LocalServer, run_local
from hatchway_relay import admin
from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table
from hatchway_relay.adapters.memory_metrics import MemoryMetrics
from hatchway_relay.handlers import http as http_handlers
from hatchway_relay.handlers import websocket as ws_handlers
from hatchway_relay.ports import Claim, ConnectionRecord, TokenLimits, TunnelReport
from support.aws_credentials import use_fake_credentials
from support.browser_page import ARTIFACTS, PageWatch
from support.local_app import LocalApp, run_local_app
from support.visitor import visit

pytestmark = pytest.mark.e2e

HEARTBEAT_SECONDS = 0.3
"""The agent reports its served counts this often (in production: every few minutes)."""
REFRESH_SECONDS = 0.5


def keep_metrics(relay: LocalServer) -> MemoryMetrics:
    """The local relay's in-memory metrics, wired as ``run_local`` wires them where it does."""
    if relay.admin.metrics is None:
        relay.admin.metrics = MemoryMetrics()
        relay.gateway.set_handlers(
            ws_handlers.make_handler(relay.relay),
            http_handlers.make_handler(relay.relay, relay.admin.metrics),
        )
    return relay.admin.metrics


@dataclass
class LocalStack:
    relay: LocalServer
    app: LocalApp
    dashboard: DashboardServer

    @property
    def url(self) -> str:
        assert self.dashboard.url is not None
        return self.dashboard.url

    def visit(self, tunnel: str, count: int) -> None:
        port = self.relay.port
        for n in range(count):
            answer = visit(port, "GET", f"/t/{tunnel}/echo/{n}", f"127.0.0.1:{port}")
            assert answer.status == 200, answer.text


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalStack]:
    with run_local(response_timeout=10.0) as relay, run_local_app() as app:
        keep_metrics(relay)
        admin_file = tmp_path / "local-admin.json"
        relay.admin.write_admin_file(admin_file)
        sources = dashboard_sources(
            RemoteStore.from_admin_file(admin_file),
            local=True,
            admin_file=admin_file,
            refresh_seconds=REFRESH_SECONDS,
        )
        with DashboardServer(sources) as dashboard:
            dashboard.start(0)
            yield LocalStack(relay, app, dashboard)


def test_tokens_tunnels_and_charts_of_a_local_relay(local: LocalStack, page: Page) -> None:
    existing = admin.create_token(RemoteStore(local.relay.admin.url, local.relay.admin.key), "ci")
    watch = PageWatch()
    watch.attach(page)
    page.goto(local.url)
    expect(page.locator("#live")).to_contain_text("live")
    expect(page.locator("#tokens tbody tr")).to_have_count(1)
    idle = page.locator(f'#tokens tr[data-token-id="{existing.record.token_id}"]')
    expect(idle).to_contain_text("no agent connected")
    expect(idle.locator("td.last-used")).to_have_text("never")
    page.evaluate("window.notReloaded = true")

    # Create a token: it is shown once, then gone from the page for good.
    page.fill("#create-label", "shop laptop")
    page.fill("#create-reserve", "shop")
    page.fill("#create-rate", "50")
    page.click("#create-submit")
    expect(page.locator("#new-token")).to_be_visible()
    token = page.locator("#new-token-value").inner_text()
    assert token.startswith("hw_")
    created = page.locator("#tokens tbody tr", has_text="shop laptop")
    expect(created).to_contain_text("50/s")
    expect(page.locator('#reservations tr[data-name="shop"]')).to_contain_text("shop laptop")
    page.click("#new-token-done")
    expect(page.locator("#new-token")).to_be_hidden()
    assert token not in page.content()

    # An agent with it serves "shop": the tunnel appears live, and its count rises with traffic.
    forwarder = Forwarder(Target("127.0.0.1", local.app.port), timeout=10)
    session = Session(
        local.relay.agent_url, token, forwarder, ("shop",), heartbeat=HEARTBEAT_SECONDS
    )
    with session.start():
        tunnel = page.locator('#tunnels tr[data-tunnel="shop"]')
        expect(tunnel).to_contain_text("shop laptop")
        expect(tunnel).to_contain_text("127.0.0.1")
        expect(created).to_contain_text("1 agent since")
        expect(page.locator('#reservations tr[data-name="shop"]')).to_contain_text("yes")
        local.visit("shop", 4)
        expect(tunnel.locator("td.served")).to_have_text("4")
        local.visit("shop", 6)
        expect(tunnel.locator("td.served")).to_have_text("10")
        expect(tunnel.locator("td.errors")).to_have_text("none")
        expect(tunnel.locator("td.latency")).to_have_text(re.compile(r"^\d+ / \d+ ms$"))
        expect(created.locator("td.last-used")).to_have_text("in use now")
        # The app fails one: its heartbeat brings the cause to the page.
        failed = visit(
            local.relay.port, "GET", "/t/shop/status/500", f"127.0.0.1:{local.relay.port}"
        )
        assert failed.status == 500
        expect(tunnel.locator("td.errors")).to_have_text("app-5xx 1")
        expect(tunnel.locator("td.served")).to_have_text("11")
        requests = page.locator('figure[data-chart="requests"] figcaption')
        expect(requests).to_contain_text("11 requests in the last hour")
        page.click("#window-day")
        expect(requests).to_contain_text("11 requests in the last day")
        expect(page.locator("#domain-notes")).to_contain_text("hatchway-local has no certificates")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "dashboard-local.png", full_page=True)

        # Revoking asks first; cancelling keeps everything.
        created.locator("button", has_text="Revoke").click()
        expect(page.locator("#confirm-revoke")).to_be_visible()
        expect(page.locator("#confirm-detail")).to_contain_text("It serves shop right now")
        page.click("#confirm-cancel")
        expect(page.locator("#confirm-revoke")).to_be_hidden()
        expect(tunnel).to_have_count(1)

        # Confirmed, the token goes and its tunnel disappears without a reload.
        created.locator("button", has_text="Revoke").click()
        page.click("#confirm-ok")
        expect(tunnel).to_have_count(0)
        expect(created).to_have_count(0)
        expect(page.locator("#tunnels-empty")).to_be_visible()
        expect(page.locator("#reservations tbody tr")).to_have_count(0)
        expect(page.locator("#tokens tbody tr")).to_have_count(1)
        assert page.evaluate("window.notReloaded") is True
    forwarder.close()

    page.reload()
    expect(page.locator("#tokens tbody tr")).to_have_count(1)
    assert token not in page.content()
    watch.assert_only(local.url.rstrip("/"))


# --- A deployed stack, under moto ---------------------------------------------------------------

REGION = "eu-west-1"
NAMESPACE = "Hatchway/hatchway"


def put_metric(
    cloudwatch: object, name: str, value: float, minutes_ago: float, **dims: str
) -> None:
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [
                    {"Name": k, "Value": v} for k, v in {"service": "relay", **dims}.items()
                ],
                "Value": value,
                "Timestamp": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago),
            }
        ],
    )


@pytest.fixture
def aws_dashboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[DashboardServer, str]]:
    use_fake_credentials(monkeypatch, REGION)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        create_table(session.resource("dynamodb"), "relay")
        store = DynamoStore(session.resource("dynamodb").Table("relay"))
        laptop = admin.create_token(store, "laptop", ("web",), TokenLimits(requests_per_day=5000))
        admin.create_token(store, "ci")
        now = time.time()
        store.put_connection(
            ConnectionRecord(
                "c-1", laptop.record.token_id, now - 300, now + 600, ("web",), "192.0.2.8"
            )
        )
        store.claim_name(Claim("web", "c-1", laptop.record.token_id, now + 600), now)
        store.renew_claim(
            "web", "c-1", now + 600, TunnelReport(1234, (("local-app-timeout", 3),), 15, 240)
        )
        store.note_token_use(laptop.record.token_hash, now - 120)
        cloudwatch, acm = session.client("cloudwatch"), session.client("acm")
        for minutes_ago, count in ((1, 40), (5, 25), (20, 12)):
            put_metric(cloudwatch, "Requests", count, minutes_ago)
        put_metric(cloudwatch, "Responses5xx", 3, 5)
        put_metric(cloudwatch, "WaitTime", 85, 1)
        put_metric(cloudwatch, "Errors", 3, 5, Cause="local-app-timeout")
        acm.request_certificate(DomainName="*.t.example.com", ValidationMethod="DNS")
        stack = StackInfo("hatchway", NAMESPACE, "relay", domain="t.example.com")
        sources = Sources(
            StoreSource(store),
            RelayCharts(
                CloudWatchReader(cloudwatch, NAMESPACE), AwsDomainSource(acm, cloudwatch, stack)
            ),
            "stack hatchway",
            REFRESH_SECONDS,
            REFRESH_SECONDS,
        )
        with DashboardServer(sources) as dashboard:
            yield dashboard, dashboard.start(0)


def test_a_deployed_stacks_tables_and_cloudwatch_metrics(
    aws_dashboard: tuple[DashboardServer, str], page: Page
) -> None:
    _, url = aws_dashboard
    watch = PageWatch()
    watch.attach(page)
    page.goto(url)
    expect(page.locator("#relay-title")).to_have_text("stack hatchway")
    expect(page.locator("#tokens tbody tr")).to_have_count(2)
    laptop = page.locator("#tokens tbody tr", has_text="laptop")
    expect(laptop).to_contain_text("5000/day")
    expect(laptop).to_contain_text("web")
    expect(laptop.locator("td.last-used")).to_have_text("in use now")
    expect(page.locator("#tokens tbody tr", has_text="ci").locator("td.last-used")).to_have_text(
        "never"
    )
    tunnel = page.locator('#tunnels tr[data-tunnel="web"]')
    expect(tunnel.locator("td.served")).to_have_text("1234")
    expect(tunnel.locator("td.errors")).to_have_text("local-app-timeout 3")
    expect(tunnel.locator("td.latency")).to_have_text("15 / 240 ms")
    expect(tunnel).to_contain_text("192.0.2.8")
    expect(page.locator('figure[data-chart="requests"] figcaption')).to_contain_text(
        "77 requests in the last hour"
    )
    expect(page.locator('figure[data-chart="responses"] figcaption')).to_contain_text("3 5xx")
    expect(page.locator('figure[data-chart="errors"] figcaption')).to_contain_text(
        "local-app-timeout 3"
    )
    expect(page.locator('figure[data-chart="requests"] img')).to_have_attribute(
        "src", re.compile(r"^data:image/svg\+xml")
    )
    certificates = page.locator("#certificates")
    expect(certificates).to_contain_text("*.t.example.com")
    expect(certificates).to_contain_text("PENDING_VALIDATION")
    expect(page.locator("#domain-notes")).to_contain_text("ACM renews them itself")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "dashboard-aws.png", full_page=True)
    watch.assert_only(url.rstrip("/"))
