"""The dashboard's charts and domain status: CloudWatch, ACM and CloudFormation under moto, the
local relay's in-memory metrics (in process and through its admin API), and the SVG drawing."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import boto3
import pytest
from moto import mock_aws

from hatchway_local.admin_api import AdminServer, NoMetricsKept, RemoteMetrics
from hatchway_local.dashboard import charts
from hatchway_local.dashboard.metrics import (
    AwsDomainSource,
    Chart,
    CloudWatchReader,
    LocalReader,
    Query,
    RelayCharts,
    Series,
    StackInfo,
    stack_info,
    window_bounds,
)
from hatchway_relay.adapters.memory_metrics import MemoryMetrics
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.metrics import record_visit
from support.aws_credentials import use_fake_credentials

REGION = "eu-west-1"
NAMESPACE = "Hatchway/hatchway"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    use_fake_credentials(monkeypatch, REGION)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def put(cloudwatch: Any, name: str, value: float, minutes_ago: float, **dimensions: str) -> None:
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": name,
                "Dimensions": [
                    {"Name": k, "Value": v} for k, v in {"service": "relay", **dimensions}.items()
                ],
                "Value": value,
                "Unit": "Milliseconds" if name == "WaitTime" else "Count",
                "Timestamp": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago),
            }
        ],
    )


def by_key(found: Any) -> dict[str, Chart]:
    return {chart.key: chart for chart in found.charts}


def test_cloudwatch_metrics_become_the_four_charts(aws: boto3.session.Session) -> None:
    cloudwatch = aws.client("cloudwatch")
    for minutes_ago, requests in ((1, 5), (2, 7), (30, 3)):
        put(cloudwatch, "Requests", requests, minutes_ago)
    put(cloudwatch, "Responses5xx", 2, 1)
    put(cloudwatch, "Responses4xx", 1, 2)
    put(cloudwatch, "WaitTime", 40, 1)
    put(cloudwatch, "WaitTime", 120, 1)
    put(cloudwatch, "Errors", 2, 1, Cause="agent-gone")
    put(cloudwatch, "Errors", 1, 2, Cause="local-app")
    put(cloudwatch, "Requests", 1000, 60 * 5)  # outside the hour, inside the day

    source = RelayCharts(CloudWatchReader(cloudwatch, NAMESPACE))
    hour = by_key(source.charts("hour", time.time()))
    assert hour["requests"].series[0].total == 15
    assert hour["requests"].summary == "15 requests in the last hour"
    assert [s.total for s in hour["responses"].series] == [1, 2]
    assert hour["wait"].series[1].points[-1][1] == 120  # the maximum
    assert hour["wait"].series[0].points[-1][1] == 80  # the average
    assert {s.label: s.total for s in hour["errors"].series} == {"agent-gone": 2, "local-app": 1}
    assert hour["errors"].summary == "agent-gone 2, local-app 1"
    assert by_key(source.charts("day", time.time()))["requests"].series[0].total == 1015


def test_on_a_stack_what_the_http_api_counts_is_read_from_its_own_metrics(
    aws: boto3.session.Session,
) -> None:
    # The relay does not log Requests, 4xx, 5xx or WaitTime on AWS: API Gateway counts them.
    cloudwatch = aws.client("cloudwatch")
    for name, value in (("Count", 9), ("4xx", 1), ("5xx", 2), ("Latency", 70)):
        cloudwatch.put_metric_data(
            Namespace="AWS/ApiGateway",
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "ApiId", "Value": "abc123"}],
                    "Value": value,
                    "Timestamp": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
                }
            ],
        )
    put(cloudwatch, "Errors", 2, 1, Cause="agent-gone")
    source = RelayCharts(CloudWatchReader(cloudwatch, NAMESPACE, http_api="abc123"))
    hour = by_key(source.charts("hour", time.time()))
    assert hour["requests"].series[0].total == 9
    assert [s.total for s in hour["responses"].series] == [1, 2]
    assert hour["wait"].series[0].points[-1][1] == 70
    assert {s.label: s.total for s in hour["errors"].series} == {"agent-gone": 2}


def test_points_are_aligned_to_the_window_and_its_period(aws: boto3.session.Session) -> None:
    put(aws.client("cloudwatch"), "Requests", 4, 3)
    now = time.time()
    start, end, period = window_bounds("hour", now)
    (points,) = CloudWatchReader(aws.client("cloudwatch"), NAMESPACE).fetch(
        [Query("Requests", "Requests", "Sum")], start, end, period
    )
    assert len(points) == 1
    stamp, value = points[0]
    assert (stamp - start) % period == 0 and start <= stamp < end and value == 4


def test_the_local_relays_metrics_chart_the_same_way_in_process_and_over_its_admin_api() -> None:
    metrics = MemoryMetrics()
    for status, cause in ((200, None), (200, None), (502, "agent-gone"), (404, None)):
        record_visit(metrics, status, cause, 0.05)
    admin = AdminServer(MemoryStore(), metrics=metrics).start()
    try:
        for reader in (metrics, RemoteMetrics(admin.url, admin.key)):
            hour = by_key(RelayCharts(LocalReader(reader)).charts("hour", time.time()))
            assert hour["requests"].series[0].total == 4
            assert [s.total for s in hour["responses"].series] == [1, 1]
            assert {s.label for s in hour["errors"].series} == {"agent-gone", "local-app"}
            assert hour["wait"].series[0].points[-1][1] == pytest.approx(50)
    finally:
        admin.close()


def test_a_local_relay_without_metrics_says_so_through_its_admin_api() -> None:
    admin = AdminServer(MemoryStore()).start()
    try:
        with pytest.raises(NoMetricsKept, match="keeps no metrics"):
            RemoteMetrics(admin.url, admin.key).dimension_values("Errors", "Cause")
    finally:
        admin.close()


# --- The deployed stack's domain --------------------------------------------------------------


def lambda_runs(cloudwatch: Any, function: str, hours_ago: float, failed: bool) -> None:
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)
    for name, value in (("Invocations", 1), ("Errors", 1 if failed else 0)):
        cloudwatch.put_metric_data(
            Namespace="AWS/Lambda",
            MetricData=[
                {
                    "MetricName": name,
                    "Dimensions": [{"Name": "FunctionName", "Value": function}],
                    "Value": value,
                    "Timestamp": stamp,
                }
            ],
        )


def test_certificates_jobs_and_alarms_of_a_stack_with_a_domain(
    aws: boto3.session.Session,
) -> None:
    acm, cloudwatch = aws.client("acm"), aws.client("cloudwatch")
    wildcard = acm.request_certificate(DomainName="*.t.example.com", ValidationMethod="DNS")
    acm.request_certificate(DomainName="elsewhere.example.org", ValidationMethod="DNS")
    lambda_runs(cloudwatch, "hatchway-dns", 0.4, failed=False)
    lambda_runs(cloudwatch, "hatchway-dns", 0.1, failed=True)
    cloudwatch.put_metric_alarm(
        AlarmName="hatchway-DomainJobsAlarm",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Statistic="Sum",
        Period=3600,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(
        AlarmName="hatchway-DomainJobsAlarm", StateValue="ALARM", StateReason="a run failed"
    )
    stack = StackInfo(
        "hatchway",
        NAMESPACE,
        domain="t.example.com",
        dns_function="hatchway-dns",
        alarms=("hatchway-DomainJobsAlarm",),
    )
    status = AwsDomainSource(acm, cloudwatch, stack).domain(time.time())

    (certificate,) = status.certificates  # the other domain's certificate is not the stack's
    assert (certificate.domain, certificate.arn) == ("*.t.example.com", wildcard["CertificateArn"])
    assert certificate.status == "PENDING_VALIDATION" and certificate.warn
    (job,) = status.jobs
    assert (job.job, job.result) == ("dns", "failed")
    assert job.detail == "2 runs, 1 failed in the last 1 h"
    (alarm,) = status.alarms
    assert (alarm.name, alarm.state) == ("hatchway-DomainJobsAlarm", "ALARM")
    assert "ACM renews them itself" in " ".join(status.notes)


def test_a_stack_without_a_domain_says_so(aws: boto3.session.Session) -> None:
    source = AwsDomainSource(aws.client("acm"), aws.client("cloudwatch"), StackInfo("s", "ns"))
    status = source.domain(time.time())
    assert status.certificates == () and status.jobs == ()
    assert "no DomainName" in status.notes[0]


def test_a_job_that_did_not_run_lately_says_so(aws: boto3.session.Session) -> None:
    stack = StackInfo("s", "ns", domain="t.example.com", certificate_function="hatchway-certs")
    status = AwsDomainSource(aws.client("acm"), aws.client("cloudwatch"), stack).domain(time.time())
    assert [(j.job, j.result) for j in status.jobs] == [("certificates", "no run in the last 48 h")]


STACK_TEMPLATE = {
    "Parameters": {
        "DomainName": {"Type": "String"},
        "CustomHostnames": {"Type": "String", "Default": ""},
    },
    "Resources": {
        "RelayTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            },
        },
    },
    "Outputs": {
        "TableName": {"Value": {"Ref": "RelayTable"}},
        "MetricsNamespace": {"Value": "Hatchway/hatchway"},
    },
}


def test_what_the_dashboard_needs_is_read_from_the_stack(aws: boto3.session.Session) -> None:
    cloudformation = aws.client("cloudformation")
    cloudformation.create_stack(
        StackName="hatchway",
        TemplateBody=json.dumps(STACK_TEMPLATE),
        Parameters=[
            {"ParameterKey": "DomainName", "ParameterValue": "t.example.com"},
            {"ParameterKey": "CustomHostnames", "ParameterValue": "api.example.org=shop"},
        ],
    )
    info = stack_info(cloudformation, "hatchway")
    assert info.namespace == "Hatchway/hatchway"
    assert info.table == aws.client("dynamodb").list_tables()["TableNames"][0]
    assert info.hostnames == ("*.t.example.com", "connect.t.example.com", "api.example.org")
    assert (info.alarms, info.dns_function) == ((), "")
    with pytest.raises(LookupError, match="cannot read stack"):
        stack_info(cloudformation, "no-such-stack")


class PagedResources:
    """CloudFormation's answers for a stack with the resources moto cannot create (alarms,
    functions, certificates), two pages of them."""

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        return {"Stacks": [{"Outputs": [], "Parameters": []}]}

    def list_stack_resources(self, StackName: str, NextToken: str = "") -> dict[str, Any]:
        def resource(logical: str, kind: str, physical: str) -> dict[str, str]:
            return {
                "LogicalResourceId": logical,
                "ResourceType": kind,
                "PhysicalResourceId": physical,
            }

        if not NextToken:
            return {
                "StackResourceSummaries": [
                    resource("DnsReconcileFunction", "AWS::Lambda::Function", "s-dns"),
                    resource("HttpErrorRateAlarm", "AWS::CloudWatch::Alarm", "s-http-5xx"),
                ],
                "NextToken": "page-2",
            }
        return {
            "StackResourceSummaries": [
                resource("CertificateRenewalFunction", "AWS::Lambda::Function", "s-certs"),
                resource("DomainJobsAlarm", "AWS::CloudWatch::Alarm", "s-domain-jobs"),
                resource("WildcardCertificate", "AWS::CertificateManager::Certificate", "arn:w"),
            ]
        }


def test_functions_alarms_and_certificates_are_found_among_the_stacks_resources() -> None:
    info = stack_info(PagedResources(), "s")
    assert (info.dns_function, info.certificate_function) == ("s-dns", "s-certs")
    assert info.alarms == ("s-domain-jobs", "s-http-5xx")
    assert info.certificate_arns == ("arn:w",)
    assert info.namespace == "Hatchway/s"  # the template's, when the output is missing


# --- Drawing ----------------------------------------------------------------------------------


def test_a_chart_is_well_formed_svg_with_its_labels_escaped() -> None:
    start = 1_700_000_000.0
    chart = Chart(
        "errors",
        "Errors <by> cause",
        "errors",
        (
            Series("<script>alert(1)</script>", ((start, 3.0), (start + 60, 7.0))),
            Series("one", ((start + 120, 1.0),)),
        ),
        start,
        start + 3600,
        60,
        "",
    )
    svg = charts.render(chart)
    root = ElementTree.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "<script" not in svg
    labels = [e.text for e in root.iter() if e.get("data-series") is not None]
    assert labels == ["<script>alert(1)</script>", "one"]
    assert "10" in svg  # the axis top: 7 rounds up to 10


def test_an_empty_chart_says_there_is_no_data() -> None:
    chart = Chart("requests", "Requests", "requests", (Series("Requests", ()),), 0, 3600, 60, "")
    assert "no data in this window" in charts.render(chart)


def test_a_day_charts_axis_names_the_days() -> None:
    end = 1_700_000_000.0 - 1_700_000_000.0 % 900
    chart = Chart(
        "requests", "Requests", "requests", (Series("Requests", ()),), end - 86400, end, 900, ""
    )
    svg = charts.render(chart)
    assert "13 Nov 22:00 UTC" in svg and "14 Nov 22:00 UTC" in svg
