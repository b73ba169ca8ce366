"""What the relay counts, as a port: the core and the HTTP handler say what happened, an adapter
(CloudWatch EMF on AWS, nothing locally) decides where it goes.

The names are the contract with the template's alarms and the README:

    Requests        every visitor request the HTTP function answered
    Responses4xx    answered 4xx, whoever decided it (relay or local app)
    Responses5xx    answered 5xx, whoever decided it
    Errors          4xx/5xx by Cause: the relay's own error code (``x-hatchway-error``, e.g.
                    ``tunnel-not-found``, ``local-app-timeout``, ``agent-gone``) or
                    ``local-app`` when the app itself answered with the error status
    WaitTime        milliseconds the visitor waited on the relay (routing + agent + app)
    ActiveTunnels   sent with every agent heartbeat: the names that connection holds. Agents beat
                    once a minute, so the 1-minute Sum is the number of live tunnels.

On AWS the HTTP API already counts the first four for free (``AWS/ApiGateway``: ``Count``,
``4xx``, ``5xx``, ``Latency`` by ``ApiId``), so the relay logs only what API Gateway cannot
know: the cause of each error. Writing them too would be an embedded-metric line of about
270 bytes in every request's log, billed by CloudWatch Logs ($0.13 per million requests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

COUNTED_BY_API_GATEWAY: Mapping[str, str] = {
    "Requests": "Count",
    "Responses4xx": "4xx",
    "Responses5xx": "5xx",
    "WaitTime": "Latency",
}
"""The relay's metrics the HTTP API publishes itself (``AWS/ApiGateway``, dimension ``ApiId``),
by the name API Gateway gives them: read from there on AWS, not logged again."""

COUNT = "Count"
MILLISECONDS = "Milliseconds"

APP_CAUSE = "local-app"
"""The cause of an error status that the local app returned itself (no relay error code)."""


class Metrics(Protocol):
    def add(
        self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None
    ) -> None:
        """Record one data point; ``dimensions`` split it (e.g. by cause)."""
        ...


class NoMetrics:
    """Counts nothing: the default where no metrics backend is wired (the local gateway)."""

    def add(
        self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None
    ) -> None:
        pass


def record_visit(metrics: Metrics, status: int, error_code: str | None, seconds: float) -> None:
    """The metrics of one visitor request, once it is answered. Each one is bytes in the log
    of every request (CloudWatch Logs bills them): bytes moved are left to API Gateway's own
    ``DataProcessed`` metric, which costs nothing."""
    metrics.add("Requests", 1, COUNT)
    metrics.add("WaitTime", seconds * 1000, MILLISECONDS)
    if status >= 400:
        metrics.add("Responses5xx" if status >= 500 else "Responses4xx", 1, COUNT)
        metrics.add("Errors", 1, COUNT, {"Cause": error_code or APP_CAUSE})
