"""The domain jobs' composition root finds what the template cannot hand it without a cycle:
the wildcard certificate (by name) and the API Gateway domains' targets (once they exist)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from hatchway_domain import aws, dns_reconcile
from support.aws_credentials import use_fake_credentials

REGION = "eu-west-1"


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    use_fake_credentials(monkeypatch, REGION)
    with mock_aws():
        yield (
            boto3.client("apigatewayv2", region_name=REGION),
            boto3.client("acm", region_name=REGION),
        )


def settings(**overrides: Any) -> dns_reconcile.Settings:
    env = {"DOMAIN_NAME": "t.example.com", "CLOUDFLARE_ZONE_ID": "0" * 32, "STACK_NAME": "hw"}
    return dns_reconcile.Settings.from_env({**env, **overrides})


def test_before_the_domains_exist_only_the_certificate_is_found(clients: tuple[Any, Any]) -> None:
    apigateway, acm = clients
    arn = acm.request_certificate(
        DomainName="*.t.example.com",
        SubjectAlternativeNames=["t.example.com"],
        ValidationMethod="DNS",
    )["CertificateArn"]
    acm.request_certificate(DomainName="*.other.example.com", ValidationMethod="DNS")

    found = aws.discovered(settings(), apigateway, acm)

    assert found.certificate_arns == (arn,)
    assert found.http_target is None and found.connect_target is None


def test_the_domains_targets_are_read_from_api_gateway(clients: tuple[Any, Any]) -> None:
    # moto leaves ApiGatewayDomainName out of its answers; API Gateway's own shape, stubbed.
    _, acm = clients
    apigateway = boto3.client("apigatewayv2", region_name=REGION)
    with Stubber(apigateway) as stub:
        for name, target in (
            ("*.t.example.com", "d-http.execute-api.eu-west-1.amazonaws.com"),
            ("connect.t.example.com", "d-ws.execute-api.eu-west-1.amazonaws.com"),
        ):
            stub.add_response(
                "get_domain_name",
                {
                    "DomainName": name,
                    "DomainNameConfigurations": [
                        {"ApiGatewayDomainName": target, "EndpointType": "REGIONAL"}
                    ],
                },
                {"DomainName": name},
            )
        stub.add_client_error("get_domain_name", "NotFoundException", http_status_code=404)
        found = aws.discovered(settings(), apigateway, acm)
        assert aws.regional_target(apigateway, "nothing.t.example.com") is None

    assert found.http_target == "d-http.execute-api.eu-west-1.amazonaws.com"
    assert found.connect_target == "d-ws.execute-api.eu-west-1.amazonaws.com"


def test_targets_given_in_the_environment_win(clients: tuple[Any, Any]) -> None:
    apigateway, acm = clients
    given = settings(HTTP_API_TARGET="d-1.example.net", CERTIFICATE_ARNS="arn:one")
    found = aws.discovered(given, apigateway, acm)
    assert found.http_target == "d-1.example.net" and found.certificate_arns == ("arn:one",)
