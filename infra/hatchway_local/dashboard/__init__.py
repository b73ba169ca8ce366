"""The operator's dashboard: one relay's tokens, reserved names, live tunnels and metrics on a
web page at 127.0.0.1, served by ``hatchway-admin ... dashboard``.

``dashboard_sources`` wires what the page reads for where the relay is (a deployed stack, its
table alone, or a running ``hatchway-local``); ``serve_dashboard`` serves it until interrupted.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from hatchway_local.dashboard.data import DashboardSource, StoreSource
from hatchway_local.dashboard.metrics import (
    AwsDomainSource,
    ChartSet,
    CloudWatchReader,
    DomainStatus,
    LocalReader,
    MetricsSource,
    NoMetrics,
    RelayCharts,
    stack_info,
)
from hatchway_local.dashboard.server import DEFAULT_PORT, DashboardServer, Sources
from hatchway_relay.admin import AdminStore

__all__ = [
    "DEFAULT_PORT",
    "DashboardServer",
    "DashboardSource",
    "MetricsSource",
    "Sources",
    "dashboard_sources",
    "serve_dashboard",
]

LOCAL_REFRESH_SECONDS = 2.0
"""The local relay's store is in memory: the page may ask often."""

AWS_REFRESH_SECONDS = 5.0
"""Each refresh of a deployed stack's page is three queries of its table's listings index."""

AWS_METRICS_SECONDS = 60.0
"""CloudWatch's finest period is a minute, and every metric read is billed."""


def dashboard_sources(
    store: AdminStore,
    *,
    stack: str | None = None,
    region: str | None = None,
    local: bool = False,
    admin_file: Path | None = None,
    refresh_seconds: float | None = None,
    boto3_session: Any = None,
) -> Sources:
    """What the dashboard reads, for the relay ``store`` belongs to: with ``stack``, its
    CloudWatch metrics, certificates and domain jobs too; with ``local``, the local relay's
    in-memory metrics (through the admin API in ``admin_file``)."""
    metrics: MetricsSource
    if local:
        from hatchway_local.admin_api import RemoteMetrics, default_admin_file

        remote = RemoteMetrics.from_admin_file(admin_file or default_admin_file())
        metrics = RelayCharts(
            LocalReader(remote),
            no_domain="hatchway-local has no certificates or domain jobs of a stack's "
            "(its --tls certificate is renewed in process)",
        )
        return Sources(
            StoreSource(store),
            _LocalMetrics(metrics),
            "hatchway-local",
            refresh_seconds or LOCAL_REFRESH_SECONDS,
            refresh_seconds or LOCAL_REFRESH_SECONDS,
        )
    if stack is None:
        return Sources(
            StoreSource(store),
            NoMetrics(
                "charts, certificates and domain jobs are shown for a deployed stack: "
                "open the dashboard with --stack NAME instead of --table"
            ),
            "DynamoDB table",
            refresh_seconds or AWS_REFRESH_SECONDS,
            AWS_METRICS_SECONDS,
        )
    import boto3

    session = boto3_session or boto3.session.Session(region_name=region)
    info = stack_info(session.client("cloudformation"), stack)
    cloudwatch = session.client("cloudwatch")
    return Sources(
        StoreSource(store),
        RelayCharts(
            CloudWatchReader(cloudwatch, info.namespace, http_api=info.http_api),
            AwsDomainSource(session.client("acm"), cloudwatch, info),
        ),
        f"stack {stack}",
        refresh_seconds or AWS_REFRESH_SECONDS,
        AWS_METRICS_SECONDS,
    )


class _LocalMetrics:
    """The local relay's charts, or a note when it keeps no metrics (started without them)."""

    def __init__(self, charts: RelayCharts) -> None:
        self.charts_source = charts

    def charts(self, window: str, now: float) -> ChartSet:
        from hatchway_local.admin_api import NoMetricsKept

        try:
            return self.charts_source.charts(window, now)
        except NoMetricsKept:
            return NoMetrics(
                "this hatchway-local keeps no metrics; metrics are available for deployed "
                "stacks (hatchway-admin --stack NAME dashboard)"
            ).charts(window, now)

    def domain(self, now: float) -> DomainStatus:
        return self.charts_source.domain(now)


def serve_dashboard(
    sources: Sources,
    port: int = DEFAULT_PORT,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
) -> int:
    """Serve the dashboard on 127.0.0.1 until interrupted (or ``stop`` is set); 0 when done."""
    server = DashboardServer(sources)
    url = server.start(port)
    print(f"dashboard for {sources.title}: {url}  (127.0.0.1 only; Ctrl-C stops it)", file=out)
    out.flush()
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
