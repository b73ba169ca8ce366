"""What ``hatchway-admin ... dashboard`` wires for each place a relay lives: a deployed stack
(CloudWatch and ACM beside its table), a table alone (no charts, and why), a running
``hatchway-local`` (its in-memory metrics, or why there are none), and ``serve_dashboard``."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from hatchway_local.admin_api import RemoteStore
from hatchway_local.dashboard import dashboard_sources, serve_dashboard
from hatchway_local.dashboard.metrics import RelayCharts
from hatchway_local.server import run_local
from hatchway_relay.adapters.memory_metrics import MemoryMetrics
from hatchway_relay.adapters.memory_store import MemoryStore
from support.aws_credentials import use_fake_credentials

TEMPLATE = {
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    "Outputs": {"MetricsNamespace": {"Value": "Hatchway/prod"}},
}


def test_a_stack_gets_cloudwatch_charts_and_its_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    use_fake_credentials(monkeypatch, "eu-west-1")
    with mock_aws():
        session = boto3.session.Session(region_name="eu-west-1")
        session.client("cloudformation").create_stack(
            StackName="prod", TemplateBody=json.dumps(TEMPLATE)
        )
        sources = dashboard_sources(MemoryStore(), stack="prod", boto3_session=session)
        assert sources.title == "stack prod"
        assert isinstance(sources.metrics, RelayCharts)
        assert sources.metrics_seconds == 60  # CloudWatch bills each read
        found = sources.metrics.charts("hour", time.time())
        assert [c.key for c in found.charts] == ["requests", "responses", "wait", "errors"]
        assert "no DomainName" in sources.metrics.domain(time.time()).notes[0]


def test_a_table_alone_says_charts_need_the_stack() -> None:
    sources = dashboard_sources(MemoryStore())
    found = sources.metrics.charts("hour", time.time())
    assert found.charts == () and "--stack" in found.note


def test_a_local_relay_shows_its_memory_metrics_or_says_it_keeps_none(tmp_path: Path) -> None:
    admin_file = tmp_path / "admin.json"
    with run_local() as relay:
        relay.admin.write_admin_file(admin_file)
        sources = dashboard_sources(
            RemoteStore.from_admin_file(admin_file), local=True, admin_file=admin_file
        )
        assert sources.refresh_seconds == 2.0
        if relay.admin.metrics is None:
            found = sources.metrics.charts("hour", time.time())
            assert found.charts == ()
            assert "metrics are available for deployed stacks" in found.note
            relay.admin.metrics = MemoryMetrics()
        relay.admin.metrics.add("Requests", 3, "Count")
        found = sources.metrics.charts("hour", time.time())
        assert found.charts[0].summary == "3 requests in the last hour"


def test_serve_dashboard_prints_its_url_and_stops() -> None:
    out, stop = io.StringIO(), threading.Event()
    sources = dashboard_sources(MemoryStore())
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(serve_dashboard(sources, 0, out, stop)))
    thread.start()
    deadline = time.monotonic() + 10
    while "http://" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    found = re.search(r"http://127\.0\.0\.1:\d+/", out.getvalue())
    assert found, out.getvalue()
    url = found.group(0)
    with urllib.request.urlopen(url + "api/state", timeout=10) as answer:
        assert json.loads(answer.read())["tokens"] == []
    stop.set()
    thread.join(10)
    assert done == [0]
