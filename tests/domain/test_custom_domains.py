"""Custom hostnames' API Gateway domains, kept in step with the stack by the DNS job: ACM and
API Gateway under moto (botocore's Stubber where moto leaves out what API Gateway answers).

A hostname gets a certificate, then (once issued) a custom domain tagged as the stack's and
mapped to the HTTP API, then its target; every run is idempotent; a domain that is not the
stack's is never touched; a hostname that leaves the list takes its domain with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import moto.settings
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from hatchway_domain import aws, dns_reconcile
from hatchway_domain.custom_domains import (
    OWNER_TAG,
    Certificate,
    HostnameState,
    InvalidHostnameSettings,
    Outcome,
    Settings,
    hostnames_in,
    owned_domains,
    reconcile,
)
from support.aws_credentials import use_fake_credentials
from support.certificates import self_signed

REGION = "eu-west-1"
STACK = "hatchway-test"
HOST = "api.mycompany.test"
OTHER_HOST = "hooks.mycompany.test"


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any, str]]:
    """(apigatewayv2, acm, id of the stack's HTTP API)."""
    use_fake_credentials(monkeypatch, REGION)
    with mock_aws():
        apigateway = boto3.client("apigatewayv2", region_name=REGION)
        api_id = apigateway.create_api(Name="visitors", ProtocolType="HTTP")["ApiId"]
        yield apigateway, boto3.client("acm", region_name=REGION), api_id


def settings(api_id: str, *hostnames: str, **overrides: Any) -> Settings:
    return Settings(
        hostnames=hostnames, api_id=api_id, stage="$default", stack_name=STACK, **overrides
    )


def acm_validates_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto issues a requested certificate once it is older than this many seconds."""
    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", -1)


def issued_certificates(acm: Any, monkeypatch: pytest.MonkeyPatch, *hostnames: str) -> None:
    """Certificates an earlier run requested and ACM has issued since."""
    acm_validates_at_once(monkeypatch)
    for hostname in hostnames:
        acm.request_certificate(DomainName=hostname, ValidationMethod="DNS")


def test_a_new_hostname_first_gets_a_certificate_to_validate(
    clients: tuple[Any, Any, str],
) -> None:
    apigateway, acm, api_id = clients

    first = reconcile(settings(api_id, HOST), apigateway=apigateway, acm=acm)
    again = reconcile(settings(api_id, HOST), apigateway=apigateway, acm=acm)

    assert first.requested == (HOST,) and again.requested == ()
    (state,) = first.hostnames
    assert state.certificate is not None and not state.certificate.issued
    assert first.validating == again.validating == (state.certificate.arn,)
    assert state.waiting_for == "ACM to validate its certificate" and state.target is None
    assert first.targets == {} and not first.failed
    tags = acm.list_tags_for_certificate(CertificateArn=state.certificate.arn)["Tags"]
    assert {"Key": OWNER_TAG, "Value": STACK} in tags
    assert apigateway.get_domain_names()["Items"] == []


def test_once_issued_the_domain_is_created_tagged_and_mapped_to_the_http_api(
    clients: tuple[Any, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apigateway, acm, api_id = clients
    reconcile(settings(api_id, HOST), apigateway=apigateway, acm=acm)
    acm_validates_at_once(monkeypatch)

    outcome = reconcile(settings(api_id, HOST), apigateway=apigateway, acm=acm)
    again = reconcile(settings(api_id, HOST), apigateway=apigateway, acm=acm)

    assert (outcome.created, outcome.mapped) == ((HOST,), (HOST,))
    assert (again.created, again.mapped, again.requested) == ((), (), ())
    domain = apigateway.get_domain_name(DomainName=HOST)
    assert domain["Tags"] == {OWNER_TAG: STACK}
    (configuration,) = domain["DomainNameConfigurations"]
    assert configuration["CertificateArn"] == outcome.hostnames[0].certificate.arn  # type: ignore[union-attr]
    assert (configuration["EndpointType"], configuration["SecurityPolicy"]) == (
        "REGIONAL",
        "TLS_1_2",
    )
    (mapping,) = apigateway.get_api_mappings(DomainName=HOST)["Items"]
    assert (mapping["ApiId"], mapping["Stage"]) == (api_id, "$default")
    assert outcome.validating == ()
    # moto leaves the regional target out of its answers: the CNAME waits for it.
    assert outcome.hostnames[0].waiting_for == "API Gateway to give the domain its target"


def test_with_letsencrypt_the_job_waits_for_the_imported_certificate(
    clients: tuple[Any, Any, str],
) -> None:
    apigateway, acm, api_id = clients
    chosen = settings(api_id, HOST, request_certificates=False)

    before = reconcile(chosen, apigateway=apigateway, acm=acm)
    arn = acm.import_certificate(**self_signed(HOST))["CertificateArn"]
    after = reconcile(chosen, apigateway=apigateway, acm=acm)

    assert before.requested == () and acm.list_certificates()["CertificateSummaryList"] != []
    assert before.hostnames[0].waiting_for == "the certificate job to import one"
    assert after.created == (HOST,)
    config = apigateway.get_domain_name(DomainName=HOST)["DomainNameConfigurations"][0]
    assert config["CertificateArn"] == arn


def test_a_domain_of_that_name_that_is_not_the_stacks_is_left_alone_and_reported(
    clients: tuple[Any, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apigateway, acm, api_id = clients
    issued_certificates(acm, monkeypatch, HOST)
    theirs = acm.import_certificate(**self_signed(OTHER_HOST))["CertificateArn"]
    apigateway.create_domain_name(
        DomainName=OTHER_HOST,
        DomainNameConfigurations=[{"CertificateArn": theirs, "EndpointType": "REGIONAL"}],
    )

    outcome = reconcile(settings(api_id, HOST, OTHER_HOST), apigateway=apigateway, acm=acm)

    assert outcome.failed and outcome.created == (HOST,)
    (failure,) = outcome.failures
    assert failure.startswith(f"custom hostname {OTHER_HOST}: an API Gateway custom domain")
    assert "is not this stack's" in failure
    assert apigateway.get_api_mappings(DomainName=OTHER_HOST)["Items"] == []
    domain = apigateway.get_domain_name(DomainName=OTHER_HOST)
    assert domain["DomainNameConfigurations"][0]["CertificateArn"] == theirs


def test_a_hostname_that_leaves_the_list_takes_only_its_own_domain_with_it(
    clients: tuple[Any, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apigateway, acm, api_id = clients
    issued_certificates(acm, monkeypatch, HOST, OTHER_HOST)
    reconcile(settings(api_id, HOST, OTHER_HOST), apigateway=apigateway, acm=acm)
    arn = acm.import_certificate(**self_signed("x.other.test"))["CertificateArn"]
    for name, tags in (("x.other.test", {OWNER_TAG: "another-stack"}), ("y.other.test", {})):
        apigateway.create_domain_name(
            DomainName=name,
            DomainNameConfigurations=[{"CertificateArn": arn, "EndpointType": "REGIONAL"}],
            Tags=tags,
        )

    outcome = reconcile(settings(api_id, HOST), apigateway=apigateway, acm=acm)

    assert outcome.removed == (OTHER_HOST,) and not outcome.failed
    left = {item["DomainName"] for item in apigateway.get_domain_names()["Items"]}
    assert left == {HOST, "x.other.test", "y.other.test"}
    assert owned_domains(apigateway, STACK) == [HOST]


def test_the_issued_certificate_replaces_another_on_the_stacks_domain(
    clients: tuple[Any, Any, str],
) -> None:
    # moto has no UpdateDomainName; API Gateway's own answers, stubbed.
    _, acm, api_id = clients
    arn = acm.import_certificate(**self_signed(HOST))["CertificateArn"]
    stubbed = boto3.client("apigatewayv2", region_name=REGION)
    old = {"CertificateArn": "arn:aws:acm:eu-west-1:1:certificate/old", "EndpointType": "REGIONAL"}
    target = "d-custom789.execute-api.eu-west-1.amazonaws.com"
    new = {"CertificateArn": arn, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"}
    with Stubber(stubbed) as stub:
        stub.add_response("get_domain_names", {"Items": []}, {})
        stub.add_response(
            "get_domain_name",
            {"DomainName": HOST, "DomainNameConfigurations": [old], "Tags": {OWNER_TAG: STACK}},
            {"DomainName": HOST},
        )
        stub.add_response(
            "update_domain_name",
            {
                "DomainName": HOST,
                "DomainNameConfigurations": [{**new, "ApiGatewayDomainName": target}],
            },
            {"DomainName": HOST, "DomainNameConfigurations": [new]},
        )
        stub.add_response(
            "get_api_mappings",
            {"Items": [{"ApiId": api_id, "ApiMappingId": "m1", "Stage": "$default"}]},
            {"DomainName": HOST},
        )
        outcome = reconcile(settings(api_id, HOST), apigateway=stubbed, acm=acm)
        stub.assert_no_pending_responses()

    assert outcome.updated == (HOST,) and outcome.mapped == ()
    assert outcome.targets == {HOST: target}
    assert f"custom hostname {HOST} is served at {target}" in outcome.lines()


def test_a_refused_step_is_reported_for_its_hostname_and_the_others_go_on(
    clients: tuple[Any, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    apigateway, acm, api_id = clients
    issued_certificates(acm, monkeypatch, HOST, OTHER_HOST)
    original = apigateway.create_domain_name

    def refuse_one(**kwargs: Any) -> Any:
        if kwargs["DomainName"] == OTHER_HOST:
            raise apigateway.exceptions.TooManyRequestsException(
                {"Error": {"Code": "TooManyRequestsException", "Message": "slow down"}},
                "CreateDomainName",
            )
        return original(**kwargs)

    monkeypatch.setattr(apigateway, "create_domain_name", refuse_one)
    outcome = reconcile(settings(api_id, OTHER_HOST, HOST), apigateway=apigateway, acm=acm)

    assert outcome.created == (HOST,)
    assert outcome.failures == (
        f"custom hostname {OTHER_HOST}: API Gateway or ACM refused to create or update the "
        "custom domain (TooManyRequestsException: slow down)",
    )


def test_the_dns_job_gets_the_cnames_and_the_validation_records_it_needs() -> None:
    base = dns_reconcile.Settings(
        domain="t.mycompany.test",
        zone_id="0" * 32,
        stack_name=STACK,
        certificate_arns=("arn:wildcard",),
    )
    outcome = Outcome(
        hostnames=(
            HostnameState(HOST, Certificate("arn:a", "ISSUED"), target="d-a.example"),
            HostnameState(OTHER_HOST, Certificate("arn:b", "PENDING_VALIDATION"), waiting_for="x"),
        )
    )

    merged = aws.with_custom_domains(base, outcome)

    assert merged.certificate_arns == ("arn:wildcard", "arn:b")
    assert merged.custom_hostnames == ((HOST, "d-a.example"),)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ()),
        ({"CUSTOM_HOSTNAMES": "API.MyCompany.test=a, hooks.mycompany.test=b"}, (HOST, OTHER_HOST)),
    ],
)
def test_settings_come_from_the_template(env: dict[str, str], expected: tuple[str, ...]) -> None:
    read = Settings.from_env(
        {"HTTP_API_ID": "abc123", "STACK_NAME": STACK, "CERTIFICATE_SOURCE": "acm", **env}
    )
    assert read.hostnames == expected
    assert (read.api_id, read.stage, read.request_certificates) == ("abc123", "$default", True)
    assert not Settings.from_env({"CERTIFICATE_SOURCE": "letsencrypt"}).request_certificates


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CUSTOM_HOSTNAMES": "*.mycompany.test=a", "HTTP_API_ID": "x"}, "is not a hostname"),
        ({"CUSTOM_HOSTNAMES": "api.mycompany.test=a"}, "need HTTP_API_ID and STACK_NAME"),
    ],
)
def test_settings_that_cannot_work_are_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidHostnameSettings, match=says):
        Settings.from_env({"STACK_NAME": STACK, **env})


def test_only_the_hostnames_of_the_pairs_matter_here() -> None:
    assert hostnames_in(" a.example.test=x,a.example.test=y b.example.test ") == (
        "a.example.test",
        "b.example.test",
    )
