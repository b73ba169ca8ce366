"""The dashboard's charts and the domain's health: the ``MetricsSource`` port and its adapters.

The relay counts ``Requests``, ``Responses4xx``, ``Responses5xx``, ``WaitTime`` and ``Errors``
by ``Cause`` (see ``hatchway_relay.metrics``) with the dimension ``service=relay``; on AWS the
first four are the HTTP API's own (``AWS/ApiGateway`` by ``ApiId``), read from there.
``RelayCharts`` turns them into the same four charts from either reader: ``CloudWatchReader``
(``GetMetricData`` and ``ListMetrics`` on the stack's namespace) or ``LocalReader`` (a
``MemoryMetrics``, in process or through ``hatchway-local``'s admin API). ``AwsDomainSource``
reads the certificates' expiry (ACM) and the domain jobs' last runs and alarms (CloudWatch).
Every boto3 client is passed in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from hatchway_relay.metrics import COUNTED_BY_API_GATEWAY

WINDOWS: Mapping[str, tuple[int, int]] = {"hour": (3600, 60), "day": (86400, 900)}
"""Chart windows: (seconds shown, seconds a point). 60 points an hour, 96 a day."""

RELAY_DIMENSIONS: Mapping[str, str] = {"service": "relay"}
"""The dimension every relay metric carries (the functions' ``POWERTOOLS_SERVICE_NAME``)."""

MAX_CAUSES = 8
"""Error causes charted at most (the busiest); CloudWatch bills each metric read."""

CERTIFICATE_WARNING_DAYS = 21
"""A certificate expiring sooner than this is flagged (renewal starts 30 days ahead)."""


@dataclass(frozen=True)
class Query:
    """One line of a chart: a metric, its statistic and extra dimensions."""

    label: str
    name: str
    stat: str
    dimensions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Series:
    label: str
    points: tuple[tuple[float, float], ...]
    """(period start, value), oldest first; periods without data are absent."""

    @property
    def total(self) -> float:
        return sum(v for _, v in self.points)


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    series: tuple[Series, ...]
    start: float
    end: float
    period: int
    summary: str
    """One line under the chart, e.g. "1,204 requests in the last hour"."""


@dataclass(frozen=True)
class ChartSet:
    window: str
    charts: tuple[Chart, ...] = ()
    note: str = ""
    """Why there are no charts, or what to know about them."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CertificateRow:
    domain: str
    arn: str
    status: str
    not_after: float | None
    days_left: int | None
    warn: bool


@dataclass(frozen=True)
class JobRow:
    job: str
    last_run: float | None
    """The start of the latest period in which the job ran."""
    result: str
    """``succeeded``, ``failed`` or ``no run in the last …``."""
    detail: str


@dataclass(frozen=True)
class AlarmRow:
    name: str
    state: str
    since: float | None
    reason: str


@dataclass(frozen=True)
class DomainStatus:
    certificates: tuple[CertificateRow, ...] = ()
    jobs: tuple[JobRow, ...] = ()
    alarms: tuple[AlarmRow, ...] = ()
    notes: tuple[str, ...] = ()
    """What could not be read, and why (shown on the page)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class MetricsSource(Protocol):
    def charts(self, window: str, now: float) -> ChartSet: ...
    def domain(self, now: float) -> DomainStatus: ...


class MetricsReader(Protocol):
    """Where the relay's data points are: CloudWatch or a ``MemoryMetrics``."""

    def fetch(
        self, queries: Sequence[Query], start: float, end: float, period: int
    ) -> list[tuple[tuple[float, float], ...]]:
        """Each query's points, in the order asked."""
        ...

    def causes(self, since: float) -> list[str]:
        """The values of ``Cause`` seen on ``Errors``."""
        ...


def _count(value: float) -> str:
    return f"{value:,.0f}"


def window_bounds(window: str, now: float) -> tuple[float, float, int]:
    """(start, end, period) of a chart window ending now, aligned to its period."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}: use {' or '.join(WINDOWS)}")
    span, period = WINDOWS[window]
    end = (math.floor(now / period) + 1) * period
    return end - span, end, period


class RelayCharts:
    """``MetricsSource`` for the relay's own metrics, read through any ``MetricsReader``;
    ``domain`` comes from ``domain_source`` (or says there is none)."""

    def __init__(
        self,
        reader: MetricsReader,
        domain_source: DomainSource | None = None,
        no_domain: str = "",
    ) -> None:
        self.reader = reader
        self.domain_source = domain_source
        self.no_domain = no_domain

    def charts(self, window: str, now: float) -> ChartSet:
        start, end, period = window_bounds(window, now)
        causes = self.reader.causes(start)[: MAX_CAUSES * 4]
        groups: list[tuple[str, str, str, list[Query]]] = [
            ("requests", "Requests", "requests", [Query("Requests", "Requests", "Sum")]),
            (
                "responses",
                "4xx and 5xx answers",
                "answers",
                [
                    Query("4xx", "Responses4xx", "Sum"),
                    Query("5xx", "Responses5xx", "Sum"),
                ],
            ),
            (
                "wait",
                "Wait time",
                "ms",
                [
                    Query("average", "WaitTime", "Average"),
                    Query("maximum", "WaitTime", "Maximum"),
                ],
            ),
            (
                "errors",
                "Errors by cause",
                "errors",
                [Query(cause, "Errors", "Sum", {"Cause": cause}) for cause in causes],
            ),
        ]
        flat = [q for *_, queries in groups for q in queries]
        fetched = iter(self.reader.fetch(flat, start, end, period) if flat else [])
        charts = []
        for key, title, unit, queries in groups:
            series = tuple(Series(q.label, next(fetched)) for q in queries)
            if key == "errors":  # the busiest causes only
                series = tuple(sorted(series, key=lambda s: -s.total)[:MAX_CAUSES])
            charts.append(
                Chart(key, title, unit, series, start, end, period, _summary(key, series, window))
            )
        return ChartSet(window, tuple(charts))

    def domain(self, now: float) -> DomainStatus:
        if self.domain_source is None:
            return DomainStatus(notes=(self.no_domain,) if self.no_domain else ())
        return self.domain_source.domain(now)


def _summary(key: str, series: tuple[Series, ...], window: str) -> str:
    last = f"in the last {window}"
    if key == "requests":
        return f"{_count(series[0].total)} requests {last}"
    if key == "responses":
        return f"{_count(series[0].total)} 4xx and {_count(series[1].total)} 5xx {last}"
    if key == "wait":
        averages = series[0].points
        if not averages:
            return f"no requests {last}"
        peak = max((v for _, v in series[1].points), default=0.0)
        return f"latest average {averages[-1][1]:,.0f} ms, peak {peak:,.0f} ms {last}"
    if not series:
        return f"no errors {last}"
    return ", ".join(f"{s.label} {_count(s.total)}" for s in series)


class NoMetrics:
    """For a relay whose metrics cannot be read: every answer says why."""

    def __init__(self, note: str) -> None:
        self.note = note

    def charts(self, window: str, now: float) -> ChartSet:
        window_bounds(window, now)  # still refuses an unknown window
        return ChartSet(window, note=self.note)

    def domain(self, now: float) -> DomainStatus:
        return DomainStatus(notes=(self.note,))


# --- Readers --------------------------------------------------------------------------------


class CloudWatchReader:
    """The stack's relay metrics in CloudWatch: one ``GetMetricData`` call a refresh (every
    query in it, billed per metric read) and one ``ListMetrics`` for the causes."""

    def __init__(
        self,
        cloudwatch: Any,
        namespace: str,
        dimensions: Mapping[str, str] = RELAY_DIMENSIONS,
        http_api: str = "",
    ) -> None:
        self.cloudwatch = cloudwatch
        self.namespace = namespace
        self.dimensions = dict(dimensions)
        self.http_api = http_api
        """The stack's HTTP API: what it counts itself is read from ``AWS/ApiGateway``."""

    def _dimensions(self, extra: Mapping[str, str]) -> list[dict[str, str]]:
        return [{"Name": k, "Value": v} for k, v in {**self.dimensions, **extra}.items()]

    def _metric(self, query: Query) -> dict[str, Any]:
        counted = COUNTED_BY_API_GATEWAY.get(query.name)
        if counted is not None and self.http_api:
            return {
                "Namespace": "AWS/ApiGateway",
                "MetricName": counted,
                "Dimensions": [{"Name": "ApiId", "Value": self.http_api}],
            }
        return {
            "Namespace": self.namespace,
            "MetricName": query.name,
            "Dimensions": self._dimensions(query.dimensions),
        }

    def fetch(
        self, queries: Sequence[Query], start: float, end: float, period: int
    ) -> list[tuple[tuple[float, float], ...]]:
        metric_queries = [
            {
                "Id": f"q{i}",
                "MetricStat": {
                    "Metric": self._metric(q),
                    "Period": period,
                    "Stat": q.stat,
                },
                "ReturnData": True,
            }
            for i, q in enumerate(queries)
        ]
        found: dict[str, dict[float, float]] = {f"q{i}": {} for i in range(len(queries))}
        for batch in range(0, len(metric_queries), 500):  # GetMetricData's most per call
            kwargs: dict[str, Any] = {
                "MetricDataQueries": metric_queries[batch : batch + 500],
                "StartTime": dt.datetime.fromtimestamp(start, dt.UTC),
                "EndTime": dt.datetime.fromtimestamp(end, dt.UTC),
                "ScanBy": "TimestampAscending",
            }
            while True:
                page = self.cloudwatch.get_metric_data(**kwargs)
                for result in page.get("MetricDataResults", []):
                    points = found[result["Id"]]
                    for stamp, value in zip(
                        result.get("Timestamps", []), result.get("Values", []), strict=False
                    ):
                        # Aligned to the period: a period is one point, however it is stamped.
                        slot = start + (stamp.timestamp() - start) // period * period
                        points[slot] = points.get(slot, 0.0) + float(value)
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        return [tuple(sorted(found[f"q{i}"].items())) for i in range(len(queries))]

    def causes(self, since: float) -> list[str]:
        causes: set[str] = set()
        kwargs: dict[str, Any] = {
            "Namespace": self.namespace,
            "MetricName": "Errors",
            "Dimensions": self._dimensions({}),
        }
        while True:
            page = self.cloudwatch.list_metrics(**kwargs)
            for metric in page.get("Metrics", []):
                for dimension in metric.get("Dimensions", []):
                    if dimension["Name"] == "Cause":
                        causes.add(dimension["Value"])
            if not page.get("NextToken"):
                return sorted(causes)
            kwargs["NextToken"] = page["NextToken"]


class MemoryMetricsReads(Protocol):
    """What ``LocalReader`` needs: ``MemoryMetrics`` itself, or ``RemoteMetrics``."""

    def series(
        self,
        name: str,
        dimensions: dict[str, str] | None,
        start: float,
        end: float,
        period: int,
        stat: str,
    ) -> list[tuple[float, float]]: ...

    def dimension_values(self, name: str, dimension: str, since: float = 0.0) -> list[str]: ...


class LocalReader:
    """The local relay's ``MemoryMetrics`` (kept a day, a bucket a minute)."""

    def __init__(self, metrics: MemoryMetricsReads) -> None:
        self.metrics = metrics

    def fetch(
        self, queries: Sequence[Query], start: float, end: float, period: int
    ) -> list[tuple[tuple[float, float], ...]]:
        return [
            tuple(self.metrics.series(q.name, dict(q.dimensions), start, end, period, q.stat))
            for q in queries
        ]

    def causes(self, since: float) -> list[str]:
        return self.metrics.dimension_values("Errors", "Cause", since)


# --- The deployed stack's domain ------------------------------------------------------------


@dataclass(frozen=True)
class StackInfo:
    """What the dashboard needs to know of a deployed stack, from CloudFormation."""

    name: str
    namespace: str
    table: str = ""
    http_api: str = ""
    domain: str = ""
    custom_hostnames: tuple[str, ...] = ()
    dns_function: str = ""
    certificate_function: str = ""
    alarms: tuple[str, ...] = ()
    certificate_arns: tuple[str, ...] = ()

    @property
    def hostnames(self) -> tuple[str, ...]:
        """Names the stack's certificates cover."""
        if not self.domain:
            return self.custom_hostnames
        return (f"*.{self.domain}", f"connect.{self.domain}", *self.custom_hostnames)


def stack_info(cloudformation: Any, stack: str) -> StackInfo:
    """Read a deployed stack's outputs, parameters and resources (``DescribeStacks`` and
    ``ListStackResources``); ``LookupError`` if it cannot be read."""
    from botocore.exceptions import ClientError

    from hatchway_relay.hostnames import InvalidHostnames, parse_custom_hostnames

    try:
        described = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        resources: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StackName": stack}
        while True:
            page = cloudformation.list_stack_resources(**kwargs)
            resources += page.get("StackResourceSummaries", [])
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
    except ClientError as exc:
        raise LookupError(f"cannot read stack {stack!r}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])
    }
    physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources}
    try:
        hostnames = tuple(parse_custom_hostnames(parameters.get("CustomHostnames", "")))
    except InvalidHostnames:
        hostnames = ()
    return StackInfo(
        name=stack,
        namespace=outputs.get("MetricsNamespace") or f"Hatchway/{stack}",
        table=outputs.get("TableName", ""),
        http_api=physical.get("HttpApi", ""),
        domain=parameters.get("DomainName", ""),
        custom_hostnames=hostnames,
        dns_function=physical.get("DnsReconcileFunction", ""),
        certificate_function=physical.get("CertificateRenewalFunction", ""),
        alarms=tuple(
            sorted(
                r.get("PhysicalResourceId", "")
                for r in resources
                if r.get("ResourceType") == "AWS::CloudWatch::Alarm" and r.get("PhysicalResourceId")
            )
        ),
        certificate_arns=tuple(
            r["PhysicalResourceId"]
            for r in resources
            if r.get("ResourceType") == "AWS::CertificateManager::Certificate"
            and r.get("PhysicalResourceId")
        ),
    )


class DomainSource(Protocol):
    def domain(self, now: float) -> DomainStatus: ...


JOB_LOOKBACK: Mapping[str, tuple[int, int]] = {
    "dns": (3600, 300),
    "certificates": (2 * 86400, 3600),
}
"""Per job: how far back its runs are looked for, and in periods of what length (the DNS job
runs every 5 minutes, the certificate job once a day)."""


KEY_TYPES = (
    "RSA_1024",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "EC_prime256v1",
    "EC_secp384r1",
    "EC_secp521r1",
)
"""Every key type ACM lists certificates of."""


class AwsDomainSource:
    """Certificates (ACM ``ListCertificates``/``DescribeCertificate``) and the domain jobs'
    runs and the stack's alarms (CloudWatch ``GetMetricData``/``DescribeAlarms``): a handful of
    calls, made when the page asks (the server keeps the answer a few minutes)."""

    def __init__(self, acm: Any, cloudwatch: Any, stack: StackInfo) -> None:
        self.acm = acm
        self.cloudwatch = cloudwatch
        self.stack = stack

    def domain(self, now: float) -> DomainStatus:
        from botocore.exceptions import BotoCoreError, ClientError

        notes: list[str] = []
        certificates: tuple[CertificateRow, ...] = ()
        jobs: list[JobRow] = []
        alarms: tuple[AlarmRow, ...] = ()
        if not self.stack.domain and not self.stack.custom_hostnames:
            notes.append(
                "this stack has no DomainName: it serves path mode on the execute-api URL, "
                "with no certificates or domain jobs of its own"
            )
        else:
            try:
                certificates = self.certificates(now)
            except (BotoCoreError, ClientError) as exc:
                notes.append(f"certificates could not be read from ACM: {exc}")
        for job, function in (
            ("dns", self.stack.dns_function),
            ("certificates", self.stack.certificate_function),
        ):
            if not function:
                continue
            try:
                jobs.append(self.job(job, function, now))
            except (BotoCoreError, ClientError) as exc:
                notes.append(f"the {job} job's runs could not be read: {exc}")
        if self.stack.domain and not self.stack.certificate_function:
            notes.append(
                "certificates come from ACM (CertificateSource acm): ACM renews them itself"
            )
        if self.stack.alarms:
            try:
                alarms = self.alarms()
            except (BotoCoreError, ClientError) as exc:
                notes.append(f"alarms could not be read: {exc}")
        return DomainStatus(certificates, tuple(jobs), alarms, tuple(notes))

    def certificates(self, now: float) -> tuple[CertificateRow, ...]:
        wanted = set(self.stack.hostnames)
        arns = dict.fromkeys(self.stack.certificate_arns)
        # Without Includes, ACM lists RSA 2048 certificates only; imported ones may be EC.
        kwargs: dict[str, Any] = {"Includes": {"keyTypes": list(KEY_TYPES)}}
        while True:
            page = self.acm.list_certificates(**kwargs)
            for summary in page.get("CertificateSummaryList", []):
                if summary.get("DomainName") in wanted:
                    arns.setdefault(summary["CertificateArn"])
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        rows = []
        for arn in arns:
            found = self.acm.describe_certificate(CertificateArn=arn)["Certificate"]
            not_after = found.get("NotAfter")
            expiry = not_after.timestamp() if not_after else None
            days = None if expiry is None else math.floor((expiry - now) / 86400)
            status = str(found.get("Status", "UNKNOWN"))
            soon = days is not None and days < CERTIFICATE_WARNING_DAYS
            rows.append(
                CertificateRow(
                    domain=str(found.get("DomainName", "")),
                    arn=arn,
                    status=status,
                    not_after=expiry if status == "ISSUED" else None,
                    days_left=days if status == "ISSUED" else None,
                    warn=status != "ISSUED" or soon,
                )
            )
        return tuple(sorted(rows, key=lambda r: r.domain))

    def job(self, job: str, function: str, now: float) -> JobRow:
        lookback, period = JOB_LOOKBACK[job]
        end = (math.floor(now / period) + 1) * period
        start = end - lookback
        reader = CloudWatchReader(self.cloudwatch, "AWS/Lambda", {"FunctionName": function})
        invocations, errors = reader.fetch(
            [Query("runs", "Invocations", "Sum"), Query("failed", "Errors", "Sum")],
            start,
            end,
            period,
        )
        ran = [t for t, v in invocations if v > 0]
        if not ran:
            hours = lookback // 3600
            return JobRow(job, None, f"no run in the last {hours} h", f"function {function}")
        failed = dict(errors)
        latest = ran[-1]
        runs, failures = sum(v for _, v in invocations), sum(v for _, v in errors)
        return JobRow(
            job,
            latest,
            "failed" if failed.get(latest, 0) > 0 else "succeeded",
            f"{runs:.0f} runs, {failures:.0f} failed in the last {lookback // 3600} h",
        )

    def alarms(self) -> tuple[AlarmRow, ...]:
        rows = []
        names = list(self.stack.alarms)
        for batch in range(0, len(names), 100):  # DescribeAlarms takes 100 names at most
            page = self.cloudwatch.describe_alarms(AlarmNames=names[batch : batch + 100])
            for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
                since = alarm.get("StateUpdatedTimestamp")
                rows.append(
                    AlarmRow(
                        name=str(alarm["AlarmName"]),
                        state=str(alarm.get("StateValue", "")),
                        since=since.timestamp() if since else None,
                        reason=str(alarm.get("StateReason", "")),
                    )
                )
        return tuple(sorted(rows, key=lambda r: (r.state != "ALARM", r.name)))
