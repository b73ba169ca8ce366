"""The DNS job's Lambda entry point as deployed: its environment as the template sets it, the
Cloudflare token read from Secrets Manager, the real ``cloudflare`` SDK against the fake
Cloudflare API (``CLOUDFLARE_BASE_URL``), propagation checked against the loopback DNS server,
ACM and API Gateway under moto, CloudFormation's answers PUT to a loopback bucket.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import moto.settings
import pytest
from moto import mock_aws

from hatchway_domain import aws
from hatchway_domain.custom_domains import OWNER_TAG
from hatchway_domain.dns_plan import ownership_marker
from support.authoritative_dns import AuthoritativeDNS
from support.aws_credentials import use_fake_credentials
from support.cloudformation import ResponseBucket, cfn_event
from support.fake_cloudflare import FakeCloudflare
from support.lambda_context import LambdaContext

pytestmark = pytest.mark.usefixtures("no_system_resolver")

ZONE = "example.test"
ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"
DOMAIN = f"t.{ZONE}"
CUSTOM_HOST = f"api.{ZONE}"
STACK = "hatchway-handler-test"
TOKEN = "cf-handler-token-5b1f9e"
SECRET = "hatchway/cloudflare"
REGION = "eu-west-1"
SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
CONTEXT = LambdaContext(function_name="hatchway-DnsReconcileFunction")


@pytest.fixture
def api() -> Iterator[FakeCloudflare]:
    with FakeCloudflare({ZONE: ZONE_ID}, token=TOKEN) as fake:
        yield fake


@pytest.fixture
def deployed(
    api: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Any, str]]:
    """The function's environment and the account it runs in: (apigatewayv2, acm, api id)."""
    with AuthoritativeDNS(api.store, [ZONE]) as dns_server, mock_aws():
        host, port = dns_server.address
        apigateway = boto3.client("apigatewayv2", region_name=REGION)
        acm = boto3.client("acm", region_name=REGION)
        api_id = apigateway.create_api(Name="visitors", ProtocolType="HTTP")["ApiId"]
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name=SECRET, SecretString=json.dumps({"api_token": TOKEN})
        )
        use_fake_credentials(monkeypatch, REGION)
        for key, value in {
            "DOMAIN_NAME": DOMAIN,
            "CLOUDFLARE_ZONE_ID": ZONE_ID,
            "CLOUDFLARE_API_TOKEN_SECRET": SECRET,
            "CLOUDFLARE_BASE_URL": api.base_url,
            "STACK_NAME": STACK,
            "HTTP_API_ID": api_id,
            "HTTP_API_STAGE": "$default",
            "CERTIFICATE_SOURCE": "acm",
            "CUSTOM_HOSTNAMES": f"{CUSTOM_HOST}=myapp",
            "DNS_NAME_SERVERS": host,
            "DNS_PORT": str(port),
        }.items():
            monkeypatch.setenv(key, value)
        yield apigateway, acm, api_id
    assert dns_server.errors == []


def owned_records(api: FakeCloudflare) -> dict[str, str]:
    marker = ownership_marker(STACK)
    return {
        record["name"]: record["content"]
        for record in api.store.records(ZONE_ID)
        if record.get("comment") == marker
    }


def test_a_scheduled_run_writes_the_validation_records_and_sets_up_the_custom_domain(
    deployed: tuple[Any, Any, str],
    api: FakeCloudflare,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    apigateway, acm, api_id = deployed
    wildcard = acm.request_certificate(
        DomainName=f"*.{DOMAIN}", SubjectAlternativeNames=[DOMAIN], ValidationMethod="DNS"
    )["CertificateArn"]

    first = aws.dns_handler(SCHEDULED, CONTEXT)

    requested = [
        c
        for c in acm.list_certificates()["CertificateSummaryList"]
        if c["DomainName"] == CUSTOM_HOST
    ]
    assert len(requested) == 1
    validation = {
        option["ResourceRecord"]["Name"].rstrip("."): option["ResourceRecord"]["Value"].rstrip(".")
        for arn in (wildcard, requested[0]["CertificateArn"])
        for option in acm.describe_certificate(CertificateArn=arn)["Certificate"][
            "DomainValidationOptions"
        ]
    }
    assert owned_records(api) == validation and len(validation) == 2
    assert first == {"drift_repaired": 2}

    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", -1)  # ACM has validated both
    second = aws.dns_handler(SCHEDULED, CONTEXT)

    assert second == {"drift_repaired": 1}  # the custom certificate's record is not needed now
    domain = apigateway.get_domain_name(DomainName=CUSTOM_HOST)
    assert domain["Tags"] == {OWNER_TAG: STACK}
    (mapping,) = apigateway.get_api_mappings(DomainName=CUSTOM_HOST)["Items"]
    assert mapping["ApiId"] == api_id
    out = capsys.readouterr().out
    emf = [json.loads(line) for line in out.splitlines() if '"_aws"' in line]
    assert [m["DriftRepaired"] for m in emf] in ([2, 1], [[2], [1]])  # one value, or a list
    assert f"custom hostname {CUSTOM_HOST}: waiting for ACM to validate its certificate" in (
        caplog.messages
    )
    assert f"created the custom domain {CUSTOM_HOST}" in caplog.messages
    assert TOKEN not in out and TOKEN not in caplog.text


def test_stack_deletion_removes_the_custom_domains_and_answers_cloudformation(
    deployed: tuple[Any, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apigateway, acm, _ = deployed
    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", -1)
    acm.request_certificate(DomainName=CUSTOM_HOST, ValidationMethod="DNS")
    with ResponseBucket() as bucket:
        aws.dns_handler(cfn_event("Create", bucket.url), CONTEXT)
        assert apigateway.get_domain_names()["Items"] != []

        aws.dns_handler(cfn_event("Delete", bucket.url), CONTEXT)

    assert [answer["Status"] for _, _, answer in bucket.received] == ["SUCCESS", "SUCCESS"]
    assert bucket.received[0][2]["Data"] == {"DriftRepaired": "0"}
    assert apigateway.get_domain_names()["Items"] == []


def test_a_failed_run_fails_the_invocation_so_the_alarm_sees_it(
    deployed: tuple[Any, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_ZONE_ID", "f" * 32)  # a zone the token cannot see

    with pytest.raises(Exception, match=f"cannot read Cloudflare zone {'f' * 32}"):
        aws.dns_handler(SCHEDULED, CONTEXT)
