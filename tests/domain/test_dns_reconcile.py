"""The DNS reconcile job end to end on loopback: the real ``cloudflare`` SDK against the fake
Cloudflare API, ACM under moto, propagation checked against the test's authoritative DNS server.

It writes what the stack wants, repairs drift, deletes only its own leftovers, leaves every
foreign record alone (reporting one that sits on a wanted name), changes nothing on a second run
or in a dry run, and never lets the token out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import cloudflare
import pytest
from moto import mock_aws

from hatchway_domain.dns_plan import ownership_marker
from hatchway_domain.dns_reconcile import (
    InvalidDnsSettings,
    ReconcileError,
    Report,
    Settings,
    list_zone_records,
    main,
    run,
)
from hatchway_domain.propagation import PropagationCheck
from support.authoritative_dns import AuthoritativeDNS
from support.certificates import self_signed
from support.fake_cloudflare import FakeCloudflare

pytestmark = pytest.mark.usefixtures("no_system_resolver")

ZONE = "example.test"
ZONE_ID = "023e105f4ecef8ad9ca31a8372d0c353"
DOMAIN = "t.example.test"
HTTP_TARGET = "d-abc123.execute-api.eu-west-1.amazonaws.com"
CONNECT_TARGET = "d-ws456.execute-api.eu-west-1.amazonaws.com"
CUSTOM_HOST = "api.example.test"
CUSTOM_TARGET = "d-custom789.execute-api.eu-west-1.amazonaws.com"
STACK = "hatchway-test"
MARKER = ownership_marker(STACK)
TOKEN = "cf-secret-token-3c9a71e0"
REGION = "eu-west-1"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def api() -> Iterator[FakeCloudflare]:
    with FakeCloudflare({ZONE: ZONE_ID}, token=TOKEN) as fake:
        yield fake


@pytest.fixture
def dns_server(api: FakeCloudflare) -> Iterator[AuthoritativeDNS]:
    with AuthoritativeDNS(api.store, [ZONE]) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def client(api: FakeCloudflare) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(api_token=TOKEN, base_url=api.base_url, max_retries=0)


@pytest.fixture
def acm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("acm", region_name=REGION)


@pytest.fixture
def certificate_arn(acm: Any) -> str:
    return str(
        acm.request_certificate(
            DomainName=f"*.{DOMAIN}", SubjectAlternativeNames=[DOMAIN], ValidationMethod="DNS"
        )["CertificateArn"]
    )


@pytest.fixture
def validation_record(acm: Any, certificate_arn: str) -> tuple[str, str]:
    """(name, value) of the one CNAME ACM asks for, as moto reports it."""
    options = acm.describe_certificate(CertificateArn=certificate_arn)["Certificate"][
        "DomainValidationOptions"
    ]
    pairs = {(o["ResourceRecord"]["Name"], o["ResourceRecord"]["Value"]) for o in options}
    assert len(options) == 2 and len(pairs) == 1  # the wildcard and the apex share one record
    name, value = pairs.pop()
    return name.rstrip("."), value.rstrip(".")


def make_settings(certificate_arn: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "domain": DOMAIN,
        "zone_id": ZONE_ID,
        "http_target": HTTP_TARGET,
        "stack_name": STACK,
        "connect_target": CONNECT_TARGET,
        "certificate_arns": (certificate_arn,) if certificate_arn else (),
        "custom_hostnames": ((CUSTOM_HOST, CUSTOM_TARGET),),
    }
    values.update(overrides)
    return Settings(**values)


def propagation_check(
    server: AuthoritativeDNS, sleeps: list[float] | None = None
) -> PropagationCheck:
    host, port = server.address
    recorded = sleeps if sleeps is not None else []
    return PropagationCheck((host,), port=port, attempts=2, interval=0.0, sleep=recorded.append)


def reconcile(
    settings: Settings,
    client: cloudflare.Cloudflare,
    acm: Any,
    server: AuthoritativeDNS,
    *,
    dry_run: bool = False,
) -> Report:
    return run(
        settings,
        cloudflare_client=client,
        acm_client=acm,
        dry_run=dry_run,
        propagation=propagation_check(server),
    )


def zone(api: FakeCloudflare) -> set[tuple[str, str, str, bool, str | None]]:
    return {
        (r["type"], r["name"], r["content"], r["proxied"], r["comment"])
        for r in api.store.records(ZONE_ID)
    }


def wanted(validation: tuple[str, str]) -> set[tuple[str, str, str, bool, str | None]]:
    return {
        ("CNAME", f"*.{DOMAIN}", HTTP_TARGET, False, MARKER),
        ("CNAME", f"connect.{DOMAIN}", CONNECT_TARGET, False, MARKER),
        ("CNAME", validation[0], validation[1], False, MARKER),
        ("CNAME", CUSTOM_HOST, CUSTOM_TARGET, False, MARKER),
    }


def writes(api: FakeCloudflare) -> list[tuple[str, str]]:
    return [call for call in api.calls if call[0] in WRITES]


def test_first_run_creates_every_wanted_record_and_sees_it_served(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    acm: Any,
    dns_server: AuthoritativeDNS,
    certificate_arn: str,
    validation_record: tuple[str, str],
) -> None:
    report = reconcile(make_settings(certificate_arn), client, acm, dns_server)

    assert zone(api) == wanted(validation_record)
    assert len(report.created) == 4
    assert report.drift_repaired == 4
    assert report.unpropagated == () and report.propagation_error is None
    assert not report.failed


def test_second_run_plans_and_writes_nothing(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    acm: Any,
    dns_server: AuthoritativeDNS,
    certificate_arn: str,
) -> None:
    settings = make_settings(certificate_arn)
    reconcile(settings, client, acm, dns_server)
    api.calls.clear()

    report = reconcile(settings, client, acm, dns_server)

    assert writes(api) == []
    assert api.calls  # it did look
    assert (report.created, report.updated, report.deleted) == ((), (), ())
    assert report.drift_repaired == 0
    assert "every wanted record is in place" in report.lines()


def test_a_first_deploy_writes_the_validation_record_before_the_custom_domains_exist(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    acm: Any,
    dns_server: AuthoritativeDNS,
    certificate_arn: str,
    validation_record: tuple[str, str],
) -> None:
    # While ACM waits for validation, API Gateway cannot create the custom domains yet.
    waiting = make_settings(
        certificate_arn, http_target=None, connect_target=None, custom_hostnames=()
    )
    first = reconcile(waiting, client, acm, dns_server)
    validation_id = api.store.records()[0]["id"]

    later = reconcile(make_settings(certificate_arn), client, acm, dns_server)

    assert [r.record.name for r in first.created] == [validation_record[0]]
    assert len(later.created) == 3 and later.deleted == ()
    assert api.store.get(validation_id) is not None
    assert zone(api) == wanted(validation_record)


@pytest.mark.parametrize(
    ("drift", "method"),
    [
        pytest.param({"content": "d-hijacked.example.net"}, "PUT", id="changed target"),
        pytest.param({"proxied": True}, "PUT", id="proxy switched on"),
        pytest.param({"ttl": 3600}, "PUT", id="ttl changed"),
        pytest.param(None, "POST", id="deleted by hand"),
    ],
)
def test_drift_on_an_owned_record_is_repaired(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    dns_server: AuthoritativeDNS,
    drift: dict[str, Any] | None,
    method: str,
) -> None:
    settings = make_settings()
    reconcile(settings, client, None, dns_server)
    before = zone(api)
    wildcard = next(r for r in api.store.records() if r["name"] == f"*.{DOMAIN}")
    if drift is None:
        api.store.delete(wildcard["id"])
    else:
        api.store.update(wildcard["id"], **drift)
    api.calls.clear()

    report = reconcile(settings, client, None, dns_server)

    assert zone(api) == before
    assert [call[0] for call in writes(api)] == [method]
    assert report.drift_repaired == 1
    assert report.unpropagated == ()


def test_foreign_records_are_left_exactly_as_they_were(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    dns_server: AuthoritativeDNS,
) -> None:
    foreign = [
        api.store.add(ZONE_ID, "A", "www.example.test", "192.0.2.7"),
        api.store.add(ZONE_ID, "TXT", ZONE, "v=spf1 -all", comment="mail setup"),
        api.store.add(ZONE_ID, "CNAME", f"old.{DOMAIN}", "d-x.test", comment="managed by hatchway"),
        api.store.add(
            ZONE_ID, "CNAME", f"staging.{DOMAIN}", "d-y.test", comment=ownership_marker("staging")
        ),
        api.store.add(ZONE_ID, "TXT", f"_acme-challenge.{DOMAIN}", "certbot-token"),
    ]

    report = reconcile(make_settings(), client, None, dns_server)
    reconcile(make_settings(custom_hostnames=()), client, None, dns_server)

    for record in foreign:
        assert api.store.get(record["id"]) == record
    assert all(path.rsplit("/", 1)[1] not in {r["id"] for r in foreign} for _, path in writes(api))
    assert report.conflicts == ()


def test_a_foreign_record_on_a_wanted_name_is_a_reported_conflict_and_untouched(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    dns_server: AuthoritativeDNS,
) -> None:
    squatter = api.store.add(ZONE_ID, "CNAME", f"connect.{DOMAIN}", "someone-else.example.net")

    report = reconcile(make_settings(), client, None, dns_server)

    assert api.store.get(squatter["id"]) == squatter
    assert [c.wanted.name for c in report.conflicts] == [f"connect.{DOMAIN}"]
    assert ("CNAME", f"*.{DOMAIN}", HTTP_TARGET, False, MARKER) in zone(api)
    assert report.unpropagated == ()  # the conflicted name is not expected to be served
    assert report.failed
    with pytest.raises(ReconcileError, match=r"conflict: CNAME connect\.t\.example\.test"):
        report.raise_if_failed()


def test_owned_records_no_longer_wanted_are_deleted(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    dns_server: AuthoritativeDNS,
) -> None:
    reconcile(make_settings(), client, None, dns_server)
    custom = next(r for r in api.store.records() if r["name"] == CUSTOM_HOST)
    api.calls.clear()

    report = reconcile(
        make_settings(custom_hostnames=(), connect_target=None), client, None, dns_server
    )

    assert zone(api) == {("CNAME", f"*.{DOMAIN}", HTTP_TARGET, False, MARKER)}
    assert sorted(r.current.name for r in report.deleted) == [CUSTOM_HOST, f"connect.{DOMAIN}"]
    assert ("DELETE", f"/zones/{ZONE_ID}/dns_records/{custom['id']}") in writes(api)
    assert {method for method, _ in writes(api)} == {"DELETE"}


def test_dry_run_reports_the_plan_and_writes_nothing(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    acm: Any,
    dns_server: AuthoritativeDNS,
    certificate_arn: str,
) -> None:
    stale = api.store.add(ZONE_ID, "CNAME", f"gone.{DOMAIN}", "d-old.test", comment=MARKER)

    report = reconcile(make_settings(certificate_arn), client, acm, dns_server, dry_run=True)

    assert writes(api) == []
    assert api.store.records() == [stale]
    assert report.dry_run and report.drift_repaired == 0
    assert (len(report.created), len(report.deleted)) == (4, 1)
    lines = report.lines()
    assert lines[0].endswith("(dry run: nothing was written)")
    purpose = "tunnels, through the HTTP API custom domain"
    assert f"would create CNAME *.{DOMAIN} -> {HTTP_TARGET} ({purpose})" in lines
    assert any(line.startswith(f"would delete CNAME gone.{DOMAIN}") for line in lines)


def test_records_the_dns_servers_do_not_serve_are_reported_after_bounded_rounds(
    api: FakeCloudflare, client: cloudflare.Cloudflare
) -> None:
    # A name server fed from another store: it never sees what the API wrote.
    from support.fake_cloudflare import RecordStore

    with AuthoritativeDNS(RecordStore(), [ZONE]) as stale_server:
        sleeps: list[float] = []
        report = run(
            make_settings(custom_hostnames=()),
            cloudflare_client=client,
            acm_client=None,
            propagation=propagation_check(stale_server, sleeps),
        )

    assert sorted(r.name for r in report.unpropagated) == [f"*.{DOMAIN}", f"connect.{DOMAIN}"]
    assert sleeps == [0.0]
    assert report.failed
    assert f"not served yet by every authoritative name server: CNAME *.{DOMAIN}" in " ".join(
        report.lines()
    )


def test_validation_records_follow_acm(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    acm: Any,
    dns_server: AuthoritativeDNS,
) -> None:
    connect_arn = acm.request_certificate(DomainName=f"connect.{DOMAIN}", ValidationMethod="DNS")[
        "CertificateArn"
    ]
    imported_arn = acm.import_certificate(**self_signed(f"self.{DOMAIN}"))["CertificateArn"]
    expected = {
        (o["ResourceRecord"]["Name"].rstrip("."), o["ResourceRecord"]["Value"].rstrip("."))
        for o in acm.describe_certificate(CertificateArn=connect_arn)["Certificate"][
            "DomainValidationOptions"
        ]
    }

    reconcile(
        make_settings(certificate_arns=(connect_arn, imported_arn), custom_hostnames=()),
        client,
        acm,
        dns_server,
    )

    validation = {
        (r["name"], r["content"]) for r in api.store.records() if r["name"].startswith("_")
    }
    assert validation == expected


class PendingAcm:
    """ACM in the seconds after a request: the validation record is not published yet."""

    def describe_certificate(self, CertificateArn: str) -> dict[str, Any]:
        return {
            "Certificate": {
                "DomainValidationOptions": [
                    {"DomainName": DOMAIN, "ValidationMethod": "DNS", "ValidationStatus": "PENDING"}
                ]
            }
        }


@pytest.mark.parametrize(
    ("settings", "acm_client", "error", "complaint"),
    [
        pytest.param(
            make_settings("arn:aws:acm:eu-west-1:123456789012:certificate/pending"),
            PendingAcm(),
            ReconcileError,
            "has not published the DNS validation record",
            id="validation record not published yet",
        ),
        pytest.param(
            make_settings(custom_hostnames=(("api.other.test", CUSTOM_TARGET),)),
            None,
            InvalidDnsSettings,
            r"no Cloudflare zone the token can read holds api\.other\.test",
            id="hostname outside the zone",
        ),
        pytest.param(
            make_settings(custom_hostnames=((f"connect.{DOMAIN}", CUSTOM_TARGET),)),
            None,
            InvalidDnsSettings,
            "wanted twice",
            id="two wishes for one name",
        ),
    ],
)
def test_a_run_that_cannot_be_planned_writes_nothing(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    dns_server: AuthoritativeDNS,
    settings: Settings,
    acm_client: Any,
    error: type[ReconcileError],
    complaint: str,
) -> None:
    with pytest.raises(error, match=complaint):
        reconcile(settings, client, acm_client, dns_server)

    assert writes(api) == []


def test_a_custom_hostname_in_another_zone_of_the_token_is_kept_there(acm: Any) -> None:
    other_zone, other_id = "mycompany.test", "9d1c5b0a3e2f4d6c8b7a695847362514"
    hostname = f"api.{other_zone}"
    settings = make_settings(custom_hostnames=((hostname, CUSTOM_TARGET),))
    with (
        FakeCloudflare({ZONE: ZONE_ID, other_zone: other_id}, token=TOKEN) as api,
        AuthoritativeDNS(api.store, [ZONE, other_zone]) as server,
    ):
        client = cloudflare.Cloudflare(api_token=TOKEN, base_url=api.base_url, max_retries=0)
        api.store.add(other_id, "A", other_zone, "192.0.2.7")

        first = reconcile(settings, client, acm, server)
        mine = {(r["name"], r["content"], r["comment"]) for r in api.store.records(other_id)}
        gone = reconcile(make_settings(custom_hostnames=()), client, acm, server)

        assert first.zone_name == f"{ZONE}, {other_zone}" and not first.failed
        assert (hostname, CUSTOM_TARGET, MARKER) in mine
        assert [d.current.name for d in gone.deleted] == [hostname]
        left = [(r["type"], r["name"], r["comment"]) for r in api.store.records(other_id)]
        assert left == [("A", other_zone, None)]


def test_an_unknown_certificate_is_a_clear_error(
    client: cloudflare.Cloudflare, acm: Any, dns_server: AuthoritativeDNS
) -> None:
    missing = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"

    with pytest.raises(ReconcileError, match=r"cannot read certificate .* from ACM \(Resource"):
        reconcile(make_settings(missing), client, acm, dns_server)


def test_a_refused_token_fails_the_run_with_cloudflare_s_answer(
    api: FakeCloudflare, dns_server: AuthoritativeDNS
) -> None:
    wrong = cloudflare.Cloudflare(api_token="not-the-token", base_url=api.base_url, max_retries=0)

    with pytest.raises(ReconcileError, match=r"HTTP 403 \(9109: Invalid access token\)"):
        reconcile(make_settings(), wrong, None, dns_server)


def test_the_zone_is_listed_page_by_page(
    api: FakeCloudflare, client: cloudflare.Cloudflare
) -> None:
    for number in range(12):
        api.store.add(ZONE_ID, "TXT", f"r{number}.{ZONE}", str(number))

    records = list_zone_records(client, ZONE_ID, page_size=5)

    assert [r.content for r in records] == [str(n) for n in range(12)]
    assert api.calls == [("GET", f"/zones/{ZONE_ID}/dns_records")] * 3


def test_the_token_never_shows_in_logs_output_reports_or_errors(
    api: FakeCloudflare,
    client: cloudflare.Cloudflare,
    dns_server: AuthoritativeDNS,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logs included
    api.store.add(ZONE_ID, "CNAME", f"connect.{DOMAIN}", "squatter.example.net")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    host, port = dns_server.address
    argv = cli_args(api, "--name-server", host, "--dns-port", str(port))
    seen: list[str] = []

    report = reconcile(make_settings(), client, None, dns_server)
    seen += [repr(report), *report.lines(), repr(make_settings()), repr(client)]
    assert main(argv) == 1  # the conflict
    assert main([*argv, "--apply"]) == 1
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN + "-revoked")
    assert main(argv) == 1
    with pytest.raises(ReconcileError) as refused:
        reconcile(make_settings(), cloudflare.Cloudflare(
            api_token=TOKEN + "-revoked", base_url=api.base_url, max_retries=0
        ), None, dns_server)  # fmt: skip
    seen += [str(refused.value), repr(refused.value)]
    out, err = capsys.readouterr()

    assert "DEBUG" in {record.levelname for record in caplog.records}
    assert "9109" in err
    for text in [caplog.text, out, err, *seen]:
        assert TOKEN not in text


def cli_args(api: FakeCloudflare, *extra: str) -> list[str]:
    return [
        "--zone-id",
        ZONE_ID,
        "--domain",
        DOMAIN,
        "--http-target",
        HTTP_TARGET,
        "--connect-target",
        CONNECT_TARGET,
        "--stack-name",
        STACK,
        "--base-url",
        api.base_url,
        *extra,
    ]


def test_command_line_plans_by_default_and_applies_on_request(
    api: FakeCloudflare,
    dns_server: AuthoritativeDNS,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    host, port = dns_server.address
    argv = cli_args(api, "--custom-hostname", f"{CUSTOM_HOST}={CUSTOM_TARGET}")

    planned = main(argv)
    plan_out = capsys.readouterr().out
    applied = main([*argv, "--apply", "--name-server", host, "--dns-port", str(port)])
    apply_out = capsys.readouterr().out

    assert planned == 0 and applied == 0
    assert f"would create CNAME connect.{DOMAIN} -> {CONNECT_TARGET}" in plan_out
    assert "run again with --apply to make these changes" in plan_out
    assert f"created CNAME connect.{DOMAIN} -> {CONNECT_TARGET}" in apply_out
    assert {r["name"] for r in api.store.records()} == {
        f"*.{DOMAIN}",
        f"connect.{DOMAIN}",
        CUSTOM_HOST,
    }


def test_command_line_needs_the_token_in_the_environment(
    api: FakeCloudflare, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)

    assert main(cli_args(api)) == 2
    assert "CLOUDFLARE_API_TOKEN" in capsys.readouterr().err
    assert api.calls == []
