"""``EmfMetrics``: the ``Metrics`` port over aws-lambda-powertools, which writes CloudWatch
Embedded Metric Format lines to the function's log. No API call is made and nothing is billed
while nobody uses the relay. What the HTTP API counts itself is not written again
(``metrics.COUNTED_BY_API_GATEWAY``)."""

from __future__ import annotations

from collections.abc import Mapping

from aws_lambda_powertools import Metrics as PowertoolsMetrics
from aws_lambda_powertools import single_metric
from aws_lambda_powertools.metrics import MetricUnit

from hatchway_relay.metrics import COUNTED_BY_API_GATEWAY


class EmfMetrics:
    """Plain data points join the invocation's batch (flushed by ``log_metrics``); a point with
    its own dimensions goes out at once, so that it does not split every other metric too."""

    def __init__(self, metrics: PowertoolsMetrics, service: str) -> None:
        self.metrics = metrics
        self.service = service

    def add(
        self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None
    ) -> None:
        if name in COUNTED_BY_API_GATEWAY:
            return
        if not dimensions:
            self.metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)
            return
        with single_metric(
            name=name,
            unit=MetricUnit(unit),
            value=value,
            namespace=self.metrics.namespace,
            default_dimensions={"service": self.service},
        ) as metric:
            for key, dimension in dimensions.items():
                metric.add_dimension(key, dimension)
