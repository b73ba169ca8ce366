"""Certificate renewal end to end, on loopback only: certbot and certbot-dns-cloudflare write the
DNS-01 TXT records through the fake Cloudflare API, pebble validates them by asking the test's
authoritative DNS server, the state round-trips through S3 and the result lands in ACM (both
under moto), and the Cloudflare token shows up nowhere it should not.
"""

from __future__ import annotations

import dataclasses
import datetime
import http.client
import io
import json
import socket
import ssl
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from moto import mock_aws

import hatchway
from hatchway_domain.cert_errors import (
    CertificateError,
    IncompleteChain,
    IssuanceFailed,
    KeyMismatch,
)
from hatchway_domain.cert_state import ARCHIVE_KEY, DirectoryStateStore
from hatchway_domain.certbot_runner import CertbotRequest, CertbotRun, run_certbot
from hatchway_domain.certificates import (
    RENEW_WITHIN,
    Report,
    Settings,
    obtain_or_renew,
    run,
    run_each,
    with_custom_hostnames,
)
from hatchway_domain.secrets import ApiToken
from hatchway_local.server import run_local
from hatchway_local.tls import ManagedCertificate
from support.authoritative_dns import AuthoritativeDNS
from support.aws_credentials import use_fake_credentials
from support.fake_cloudflare import FakeCloudflare, RecordStore
from support.local_app import run_local_app
from support.pebble import Pebble

ZONE = "t.example.test"
ZONE_ID = "0f3e1c2d4b5a69788796a5b4c3d2e1f0"
DOMAINS = (f"*.{ZONE}", ZONE)
TOKEN = f"cf-token-{uuid.uuid4().hex}"
"""Unique per run, so finding it anywhere means it leaked from here."""
REGION = "eu-west-1"
BUCKET = "hatchway-certificates"
SECRET = "hatchway/cloudflare-api-token"
ARN_PARAMETER = "/hatchway/certificate-arn"
STATE_PREFIX = f"certbot/{ZONE}/"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection beyond loopback (a real ACME server, Cloudflare) fails the test."""
    connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise AssertionError(f"connection attempted to {address!r}")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(autouse=True)
def token_stays_secret(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[None]:
    """Every test here ends with the token absent from logs, output and files left behind."""
    caplog.set_level("DEBUG")
    yield
    out, err = capfd.readouterr()
    # In teardown ``caplog.text`` holds only teardown's records: read the test's own. (Setup is
    # left out: there the test itself puts the token into Secrets Manager, which botocore logs.)
    logged = [record.getMessage() for record in caplog.get_records("call")]
    assert logged, "the log capture saw nothing, so it proves nothing"
    assert not [message for message in logged if TOKEN in message]
    assert TOKEN not in out + err
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.fixture(scope="module")
def cloudflare_api() -> Iterator[FakeCloudflare]:
    with FakeCloudflare({ZONE: ZONE_ID}, token=TOKEN) as api:
        yield api


@pytest.fixture(scope="module")
def dns_server(cloudflare_api: FakeCloudflare) -> Iterator[AuthoritativeDNS]:
    with AuthoritativeDNS(cloudflare_api.store, [ZONE]) as server:
        yield server
    assert server.errors == []


@pytest.fixture(scope="module")
def pebble(dns_server: AuthoritativeDNS) -> Iterator[Pebble]:
    with Pebble(dns_server.address) as server:
        yield server


@pytest.fixture(scope="module")
def pebble_roots(pebble: Pebble) -> list[x509.Certificate]:
    return [pebble.root_certificate()]


def settings_for(pebble: Pebble, api: FakeCloudflare, **changes: Any) -> Settings:
    return dataclasses.replace(
        Settings(
            domains=DOMAINS,
            acme_directory=pebble.directory_url,
            propagation_seconds=0,
            cloudflare_base_url=api.base_url,
            acme_ca_bundle=str(pebble.ca_bundle),
            state_bucket=BUCKET,
            token_source=SECRET,
            certificate_arn_parameter=ARN_PARAMETER,
        ),
        **changes,
    )


@pytest.fixture
def settings(pebble: Pebble, cloudflare_api: FakeCloudflare) -> Settings:
    return settings_for(pebble, cloudflare_api)


@dataclasses.dataclass
class Aws:
    s3: Any
    acm: Any
    secretsmanager: Any
    ssm: Any

    def state_versions(self) -> list[str]:
        listing = self.s3.list_object_versions(Bucket=BUCKET, Prefix=STATE_PREFIX)
        return sorted(v["VersionId"] for v in listing.get("Versions", []))

    def served(self, arn: str) -> x509.Certificate:
        pem = self.acm.get_certificate(CertificateArn=arn)["Certificate"]
        return x509.load_pem_x509_certificate(pem.encode())

    def certificate_arns(self) -> list[str]:
        summaries = self.acm.list_certificates()["CertificateSummaryList"]
        return [s["CertificateArn"] for s in summaries]


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    use_fake_credentials(monkeypatch, REGION)
    with mock_aws():
        clients = Aws(*(boto3.client(n) for n in ("s3", "acm", "secretsmanager", "ssm")))
        clients.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        clients.s3.put_bucket_versioning(
            Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"}
        )
        clients.secretsmanager.create_secret(
            Name=SECRET, SecretString=json.dumps({"api_token": TOKEN})
        )
        yield clients


class Job:
    """Runs the scheduled job the way the Lambda does, each run in a fresh temp dir."""

    def __init__(self, aws: Aws, roots: list[x509.Certificate], tmp_path: Path) -> None:
        self.aws = aws
        self.roots = roots
        self.tmp_path = tmp_path
        self.runs = 0

    def __call__(
        self,
        settings: Settings,
        now: datetime.datetime | None = None,
        issue: Callable[[CertbotRequest, ApiToken, CertbotRun], None] = run_certbot,
    ) -> Report:
        self.runs += 1
        workdir = self.tmp_path / f"run-{self.runs}"
        workdir.mkdir()
        report = run(
            settings,
            s3=self.aws.s3,
            acm=self.aws.acm,
            secretsmanager=self.aws.secretsmanager,
            ssm=self.aws.ssm,
            roots=self.roots,
            workdir=workdir,
            issue=issue,
            **({"now": lambda: now} if now else {}),
        )
        assert list(workdir.iterdir()) == [], "the run directory is removed after each run"
        return report


@pytest.fixture
def job(aws: Aws, pebble_roots: list[x509.Certificate], tmp_path: Path) -> Job:
    return Job(aws, pebble_roots, tmp_path)


def names_of(certificate: x509.Certificate) -> set[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(san.value.get_values_for_type(x509.DNSName))


def due_at(report: Report) -> datetime.datetime:
    """A moment inside the renewal window of the certificate ``report`` describes."""
    return report.not_after - RENEW_WITHIN + datetime.timedelta(days=1)


def test_first_run_issues_a_wildcard_and_apex_certificate_and_imports_it_into_acm(
    job: Job,
    aws: Aws,
    settings: Settings,
    cloudflare_api: FakeCloudflare,
    caplog: pytest.LogCaptureFixture,
) -> None:
    writes_before = len(cloudflare_api.writes())

    report = job(settings)

    assert (report.renewed, report.imported, report.reason) == (True, True, "no certificate yet")
    served = aws.served(report.certificate_arn)
    assert names_of(served) == set(DOMAINS)
    assert served.not_valid_after_utc == report.not_after
    assert isinstance(served.public_key(), ec.EllipticCurvePublicKey)
    details = aws.acm.describe_certificate(CertificateArn=report.certificate_arn)["Certificate"]
    assert details["KeyAlgorithm"] == "EC_prime256v1"
    assert {"Key": "hatchway:managed-by", "Value": "certificate-renewal"} in (
        aws.acm.list_tags_for_certificate(CertificateArn=report.certificate_arn)["Tags"]
    )
    # DNS-01 went through the API: one TXT record per name written, then removed again.
    new_writes = cloudflare_api.writes()[writes_before:]
    assert [m for m, _ in new_writes].count("POST") == 2
    assert [m for m, _ in new_writes].count("DELETE") == 2
    assert [r for r in cloudflare_api.store.records(ZONE_ID) if r["type"] == "TXT"] == []
    # The state is stored encrypted, and holds no token (only the credentials file's path).
    head = aws.s3.head_object(Bucket=BUCKET, Key=STATE_PREFIX + ARCHIVE_KEY)
    assert head["ServerSideEncryption"] == "AES256"
    archive = aws.s3.get_object(Bucket=BUCKET, Key=STATE_PREFIX + ARCHIVE_KEY)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            file = tar.extractfile(member)
            assert file is None or TOKEN.encode() not in file.read(), member.name
    assert aws.ssm.get_parameter(Name=ARN_PARAMETER)["Parameter"]["Value"] == (
        report.certificate_arn
    )
    # The token check of this module saw the Cloudflare traffic: it would have seen the token.
    assert "dns_records" in caplog.text


def test_a_second_run_in_a_fresh_directory_finds_the_lineage_and_does_nothing_when_not_due(
    job: Job, aws: Aws, settings: Settings, cloudflare_api: FakeCloudflare
) -> None:
    first = job(settings)
    versions = aws.state_versions()
    calls = len(cloudflare_api.calls)

    second = job(settings)

    assert (second.renewed, second.imported) == (False, False)
    assert "renews within 30 days of expiry" in second.reason
    assert second.certificate_arn == first.certificate_arn
    assert second.not_after == first.not_after
    assert aws.state_versions() == versions
    assert len(cloudflare_api.calls) == calls
    assert aws.certificate_arns() == [first.certificate_arn]


def test_renewal_inside_the_window_reimports_under_the_same_arn(
    job: Job, aws: Aws, settings: Settings
) -> None:
    first = job(settings)
    before = aws.served(first.certificate_arn)
    outside = first.not_after - RENEW_WITHIN - datetime.timedelta(days=1)

    assert job(settings, now=outside).renewed is False
    renewed = job(settings, now=due_at(first))

    assert (renewed.renewed, renewed.imported) == (True, True)
    assert renewed.reason.startswith("expires ")
    assert renewed.certificate_arn == first.certificate_arn
    after = aws.served(first.certificate_arn)
    assert after.serial_number != before.serial_number
    assert names_of(after) == set(DOMAINS)
    assert aws.certificate_arns() == [first.certificate_arn]


def test_changed_names_are_obtained_at_once_into_the_same_lineage_and_arn(
    job: Job, aws: Aws, settings: Settings
) -> None:
    first = job(settings)
    wanted = (ZONE, f"connect.{ZONE}")

    changed = job(dataclasses.replace(settings, domains=wanted))

    assert changed.renewed and changed.reason.startswith("names changed")
    assert changed.certificate_arn == first.certificate_arn
    assert names_of(aws.served(first.certificate_arn)) == set(wanted)


def test_a_lost_import_record_reimports_into_the_arn_from_the_parameter(
    job: Job, aws: Aws, settings: Settings
) -> None:
    first = job(settings)
    aws.s3.delete_object(Bucket=BUCKET, Key=STATE_PREFIX + "acm-import.json")

    again = job(settings)

    assert (again.renewed, again.imported) == (False, True)
    assert again.certificate_arn == first.certificate_arn
    assert aws.certificate_arns() == [first.certificate_arn]


def test_the_self_hosted_gateway_keeps_its_state_in_a_directory(
    settings: Settings, pebble_roots: list[x509.Certificate], tmp_path: Path
) -> None:
    state = DirectoryStateStore(tmp_path / "state")
    token = ApiToken(TOKEN)

    first = obtain_or_renew(settings, state, token, roots=pebble_roots, workdir=tmp_path)
    again = obtain_or_renew(settings, state, token, roots=pebble_roots, workdir=tmp_path)

    assert (first.renewed, again.renewed) == (True, False)
    assert (again.fullchain_pem, again.privkey_pem) == (first.fullchain_pem, first.privkey_pem)
    leaf = x509.load_pem_x509_certificate(first.fullchain_pem)
    assert names_of(leaf) == set(DOMAINS)
    assert TOKEN not in repr(first) and b"PRIVATE KEY" not in repr(first).encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [ARCHIVE_KEY]


def replace_key(live: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    (live / "privkey.pem").resolve().write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def drop_chain(live: Path) -> None:
    (live / "fullchain.pem").resolve().write_bytes((live / "cert.pem").read_bytes())


@pytest.mark.parametrize(
    ("damage", "error"),
    [(replace_key, KeyMismatch), (drop_chain, IncompleteChain)],
    ids=["key-does-not-match", "chain-missing"],
)
def test_a_renewal_that_fails_verification_leaves_acm_and_the_state_untouched(
    job: Job,
    aws: Aws,
    settings: Settings,
    damage: Callable[[Path], None],
    error: type[Exception],
) -> None:
    first = job(settings)
    served = aws.served(first.certificate_arn)
    versions = aws.state_versions()

    def issue_damaged(request: CertbotRequest, token: ApiToken, run: CertbotRun) -> None:
        run_certbot(request, token, run)
        damage(run.live(request.cert_name))

    with pytest.raises(error):
        job(settings, now=due_at(first), issue=issue_damaged)

    assert aws.served(first.certificate_arn) == served
    assert aws.state_versions() == versions
    assert aws.certificate_arns() == [first.certificate_arn]
    # The next run still finds the good certificate and, not due, leaves everything as it is.
    assert job(settings).renewed is False


def test_issuance_fails_when_the_dns_server_pebble_asks_does_not_serve_the_txt_record(
    job: Job, aws: Aws, cloudflare_api: FakeCloudflare, pebble_roots: list[x509.Certificate]
) -> None:
    # The API still writes the TXT records, but into a store no DNS server that pebble asks
    # serves: validation must really look them up for this to fail.
    with (
        AuthoritativeDNS(RecordStore(), [ZONE]) as elsewhere,
        Pebble(elsewhere.address) as blind_pebble,
    ):
        settings = settings_for(blind_pebble, cloudflare_api)
        job.roots = [blind_pebble.root_certificate()]
        with pytest.raises(IssuanceFailed) as failure:
            job(settings)

    assert "TXT records for DNS challenge" in failure.value.detail
    assert aws.certificate_arns() == []
    assert aws.state_versions() == []


def test_each_custom_hostname_gets_its_own_certificate_and_one_failure_spares_the_others(
    aws: Aws, settings: Settings, pebble_roots: list[x509.Certificate], tmp_path: Path
) -> None:
    hostnames = [f"api.{ZONE}", f"broken.{ZONE}", ZONE]  # the apex is on the stack's own already
    every = with_custom_hostnames(settings, hostnames)
    assert [s.cert_name for s in every] == [ZONE, f"api.{ZONE}", f"broken.{ZONE}"]
    assert all(s.certificate_arn_parameter is None for s in every[1:])

    def refuse_broken(request: CertbotRequest, token: ApiToken, run: CertbotRun) -> None:
        if request.cert_name == f"broken.{ZONE}":
            raise IssuanceFailed("the ACME server refused the order", detail="refused")
        run_certbot(request, token, run)

    clients = {"s3": aws.s3, "acm": aws.acm, "secretsmanager": aws.secretsmanager, "ssm": aws.ssm}
    with pytest.raises(CertificateError, match=f"^broken.{ZONE}: IssuanceFailed") as failure:
        run_each(every, **clients, roots=pebble_roots, workdir=tmp_path, issue=refuse_broken)

    assert "api." not in str(failure.value)
    served = {frozenset(names_of(aws.served(arn))): arn for arn in aws.certificate_arns()}
    assert set(served) == {frozenset(DOMAINS), frozenset({f"api.{ZONE}"})}
    reports = run_each(every[:2], **clients, roots=pebble_roots, workdir=tmp_path)
    assert [r.certificate_arn for r in reports] == [
        served[frozenset(DOMAINS)],
        served[frozenset({f"api.{ZONE}"})],
    ]
    assert not any(r.renewed or r.imported for r in reports)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a name the test resolves itself, to 127.0.0.1: the name is still what TLS
    verifies and what the Host header says."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def test_the_self_hosted_gateway_serves_verified_https_with_the_issued_certificate(
    settings: Settings,
    pebble: Pebble,
    pebble_roots: list[x509.Certificate],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    managed = ManagedCertificate(settings, tmp_path / "tls", ApiToken(TOKEN), roots=pebble_roots)
    assert managed.refresh().renewed
    agent_token = "hw_tls-agent-token-7d1e"
    with (
        run_local(domain=ZONE, ssl_context=managed.context, tokens=(agent_token,)) as server,
        run_local_app() as app,
    ):
        assert server.agent_url.startswith("wss://")
        trusting = ssl.create_default_context(cadata=pebble.root_pem().decode())
        for host in (f"nobody.{ZONE}", ZONE):
            answer, body = https_get(host, server.port, "/t/nobody/", trusting)
            assert answer.status == 404 and b"hatchway relay" in body
            assert answer.getheader("x-hatchway-error") == "tunnel-not-found"

        # A client that does not trust pebble's root refuses the connection.
        strict = ssl.create_default_context()
        refused = PinnedHTTPSConnection(f"nobody.{ZONE}", server.port, context=strict, timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            refused.request("GET", "/")

        # An agent that trusts the root (SSL_CERT_FILE, as for any private CA) connects over
        # wss:// to the certificate's name, and visitors reach its app over verified HTTPS.
        root_file = tmp_path / "pebble-root.pem"
        root_file.write_bytes(pebble.root_pem())
        monkeypatch.setenv("SSL_CERT_FILE", str(root_file))
        monkeypatch.setenv("HATCHWAY_CONFIG", str(tmp_path / "agent.toml"))
        assert server.agent_url == f"wss://connect.{ZONE}:{server.port}/connect"
        resolve_to_loopback(monkeypatch, f"connect.{ZONE}")
        with hatchway.connect(
            app.port, subdomain="web", server=server.agent_url, token=agent_token
        ) as t:
            assert t.urls == (
                f"https://web.{ZONE}:{server.port}/",
                f"https://{ZONE}:{server.port}/t/web/",
            )
            answer, body = https_get(f"web.{ZONE}", server.port, "/echo/over-tls", trusting)
        assert answer.status == 200 and json.loads(body)["target"] == "/echo/over-tls"
    managed.close()
    assert not list((tmp_path / "tls").glob("*/privkey.pem"))  # the key file lived only to load it


def https_get(
    host: str, port: int, target: str, context: ssl.SSLContext
) -> tuple[http.client.HTTPResponse, bytes]:
    connection = PinnedHTTPSConnection(host, port, context=context, timeout=10)
    try:
        connection.request("GET", target)
        answer = connection.getresponse()
        return answer, answer.read()
    finally:
        connection.close()


def resolve_to_loopback(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The test's own name resolution: ``name`` is 127.0.0.1, every other lookup as before."""
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return original("127.0.0.1" if host == name else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
