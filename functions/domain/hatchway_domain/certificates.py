"""Certificate renewal: decide whether a certificate is due, obtain it with certbot (DNS-01 on
Cloudflare), check it, keep certbot's state between runs, and import it into ACM under the same
ARN.

Two entry points share one path. :func:`obtain_or_renew` needs only a :class:`StateStore` and
the token, so the self-hosted gateway calls it with a local directory and serves the files
itself. :func:`run` is the scheduled Lambda's job: token from Secrets Manager or SSM, state in
S3, result into ACM. Nothing is published (state saved, ACM touched) before every check passed.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from cryptography import x509

from .acm_import import (
    ImportRecord,
    import_certificate,
    load_record,
    read_arn_parameter,
    save_record,
    write_arn_parameter,
)
from .cert_checks import (
    ParsedCertificate,
    VerifiedBundle,
    check_names,
    load_certificates,
    load_roots,
    normalise_name,
    parse_leaf,
    verify_bundle,
)
from .cert_errors import CertificateError, InvalidSettings, IssuanceFailed, NameMismatch
from .cert_state import ARCHIVE_KEY, S3StateStore, StateStore, pack_config, unpack_config
from .certbot_runner import CertbotRequest, CertbotRun, run_certbot
from .secrets import ApiToken, read_cloudflare_token

logger = logging.getLogger(__name__)

LETS_ENCRYPT_PRODUCTION: Final = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING: Final = "https://acme-staging-v02.api.letsencrypt.org/directory"
ACME_DIRECTORY_ALIASES: Final = {
    "production": LETS_ENCRYPT_PRODUCTION,
    "letsencrypt": LETS_ENCRYPT_PRODUCTION,
    "staging": LETS_ENCRYPT_STAGING,
}
RENEW_WITHIN: Final = datetime.timedelta(days=30)
"""Renew when the certificate expires within this long (Let's Encrypt's lifetime is 90 days)."""
DEFAULT_PROPAGATION_SECONDS: Final = 30
"""How long certbot waits after writing the TXT records before asking for validation."""
MAX_PROPAGATION_SECONDS: Final = 600
"""Above this the Lambda would time out before validation even starts."""
DEFAULT_STATE_PREFIX: Final = "certbot/"
"""S3 key prefix of the state; each certificate lives under ``<prefix><cert name>/``."""
DOMAIN_PATTERN: Final = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)
CERT_NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}\Z")

Clock = Callable[[], datetime.datetime]
Issuer = Callable[[CertbotRequest, ApiToken, CertbotRun], None]


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[,\s]+", value) if part)


@dataclass(frozen=True)
class Settings:
    """What certificate to keep, where from, and (for the Lambda) where its state lives."""

    domains: tuple[str, ...]
    """The names on the certificate, e.g. ``("*.t.example.com", "t.example.com")``."""
    cert_name: str = ""
    """certbot's lineage name; defaults to the first domain without its ``*.``."""
    acme_directory: str = LETS_ENCRYPT_PRODUCTION
    email: str | None = None
    propagation_seconds: int = DEFAULT_PROPAGATION_SECONDS
    renew_within: datetime.timedelta = RENEW_WITHIN
    cloudflare_base_url: str | None = None
    acme_ca_bundle: str | None = None
    """CA file for the ACME server's TLS (only for a private ACME server such as pebble)."""
    trust_roots_file: str | None = None
    """PEM roots the chain must end at; defaults to certifi's bundle (holds ISRG's roots)."""
    state_bucket: str | None = None
    state_prefix: str = DEFAULT_STATE_PREFIX
    token_source: str | None = None
    """Secrets Manager secret name/ARN, or SSM parameter (``/name`` or ``ssm:name``)."""
    certificate_arn_parameter: str | None = None
    """SSM parameter that mirrors the ACM certificate ARN, if wanted."""

    def __post_init__(self) -> None:
        domains = tuple(normalise_name(d) for d in self.domains)
        if not domains:
            raise InvalidSettings("no domain names to obtain a certificate for")
        for domain in domains:
            if not DOMAIN_PATTERN.match(domain):
                raise InvalidSettings(f"{domain!r} is not a domain name certbot can obtain")
        if len(set(domains)) != len(domains):
            raise InvalidSettings(f"duplicate domain names in {', '.join(domains)}")
        object.__setattr__(self, "domains", domains)
        cert_name = self.cert_name or domains[0].removeprefix("*.")
        if not CERT_NAME_PATTERN.match(cert_name):
            raise InvalidSettings(f"{cert_name!r} is not a usable certificate name")
        object.__setattr__(self, "cert_name", cert_name)
        directory = ACME_DIRECTORY_ALIASES.get(self.acme_directory, self.acme_directory)
        if not directory.startswith("https://"):
            raise InvalidSettings(f"the ACME directory must be an https URL, not {directory!r}")
        object.__setattr__(self, "acme_directory", directory)
        if not 0 <= self.propagation_seconds <= MAX_PROPAGATION_SECONDS:
            raise InvalidSettings(
                f"propagation seconds must be within 0..{MAX_PROPAGATION_SECONDS}, "
                f"not {self.propagation_seconds}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from the Lambda's environment:

        ``CERT_DOMAINS`` (comma or space separated, required), ``CERT_NAME``,
        ``ACME_DIRECTORY`` (URL, ``production`` or ``staging``), ``ACME_EMAIL``,
        ``DNS_PROPAGATION_SECONDS``, ``CERT_STATE_BUCKET``, ``CERT_STATE_PREFIX``,
        ``CLOUDFLARE_API_TOKEN_SECRET``, ``CERT_ARN_PARAMETER``, ``CLOUDFLARE_BASE_URL``,
        ``ACME_CA_BUNDLE``, ``ACME_TRUST_ROOTS``. Empty values count as unset.
        """

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        propagation = get("DNS_PROPAGATION_SECONDS")
        try:
            seconds = int(propagation) if propagation else DEFAULT_PROPAGATION_SECONDS
        except ValueError:
            raise InvalidSettings(
                f"DNS_PROPAGATION_SECONDS must be a whole number, not {propagation!r}"
            ) from None
        return cls(
            domains=_split(get("CERT_DOMAINS") or ""),
            cert_name=get("CERT_NAME") or "",
            acme_directory=get("ACME_DIRECTORY") or LETS_ENCRYPT_PRODUCTION,
            email=get("ACME_EMAIL"),
            propagation_seconds=seconds,
            cloudflare_base_url=get("CLOUDFLARE_BASE_URL"),
            acme_ca_bundle=get("ACME_CA_BUNDLE"),
            trust_roots_file=get("ACME_TRUST_ROOTS"),
            state_bucket=get("CERT_STATE_BUCKET"),
            state_prefix=get("CERT_STATE_PREFIX") or DEFAULT_STATE_PREFIX,
            token_source=get("CLOUDFLARE_API_TOKEN_SECRET"),
            certificate_arn_parameter=get("CERT_ARN_PARAMETER"),
        )

    def certbot_request(self) -> CertbotRequest:
        return CertbotRequest(
            domains=self.domains,
            cert_name=self.cert_name,
            server=self.acme_directory,
            email=self.email,
            propagation_seconds=self.propagation_seconds,
            cloudflare_base_url=self.cloudflare_base_url,
            acme_ca_bundle=self.acme_ca_bundle,
        )

    def trust_roots(self) -> list[x509.Certificate]:
        if self.trust_roots_file:
            return load_roots(self.trust_roots_file)
        import certifi

        return load_roots(certifi.where())


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str


def renewal_decision(
    current: ParsedCertificate | None,
    names: Sequence[str],
    now: datetime.datetime,
    renew_within: datetime.timedelta = RENEW_WITHIN,
) -> Decision:
    """Whether to obtain a certificate now, and why (or why not) in words for the report."""
    if current is None:
        return Decision(True, "no certificate yet")
    try:
        check_names(current, names)
    except NameMismatch as mismatch:
        return Decision(True, f"names changed: {mismatch}")
    left = current.not_after - now
    if left <= renew_within:
        return Decision(True, f"expires {current.not_after:%Y-%m-%d} (in {left.days} days)")
    return Decision(
        False,
        f"valid until {current.not_after:%Y-%m-%d} ({left.days} days left); renews within "
        f"{renew_within.days} days of expiry",
    )


@dataclass(frozen=True)
class CertificateFiles:
    """The certificate to serve, checked; ``renewed`` says whether this run obtained it."""

    fullchain_pem: bytes
    privkey_pem: bytes = field(repr=False)
    not_after: datetime.datetime
    renewed: bool
    reason: str
    bundle: VerifiedBundle = field(repr=False)

    @property
    def fingerprint(self) -> str:
        return self.bundle.leaf.fingerprint


def _read_lineage(run: CertbotRun, cert_name: str) -> tuple[bytes, bytes] | None:
    live = run.live(cert_name)
    try:
        return (live / "fullchain.pem").read_bytes(), (live / "privkey.pem").read_bytes()
    except OSError:
        return None


def _parse_current(files: tuple[bytes, bytes] | None) -> ParsedCertificate | None:
    if files is None:
        return None
    try:
        return parse_leaf(load_certificates(files[0])[0])
    except (CertificateError, ValueError):  # an unreadable lineage is replaced, not fatal
        logger.warning("the saved certificate does not parse; obtaining a new one")
        return None


def obtain_or_renew(
    settings: Settings,
    state: StateStore,
    token: ApiToken,
    *,
    now: Clock = utc_now,
    roots: Sequence[x509.Certificate] | None = None,
    workdir: str | Path | None = None,
    issue: Issuer = run_certbot,
) -> CertificateFiles:
    """The current certificate for ``settings.domains``, obtained or renewed first when due.

    certbot's state is restored from ``state`` into a private temp dir (under ``workdir``, by
    default the system's, ``/tmp`` on Lambda) and saved back only after a renewal passed every
    check. The temp dir, with the credentials file and certbot's logs, is always removed.
    """
    trusted = list(roots) if roots is not None else settings.trust_roots()
    started = now()
    with tempfile.TemporaryDirectory(prefix="hatchway-certbot-", dir=workdir) as tmp:
        run = CertbotRun(Path(tmp))
        archive = state.load(ARCHIVE_KEY)
        if archive is not None:
            unpack_config(archive, run.config_dir)
        current_files = _read_lineage(run, settings.cert_name)
        current = _parse_current(current_files)
        decision = renewal_decision(current, settings.domains, started, settings.renew_within)
        if not decision.due and current_files is not None:
            bundle = verify_bundle(
                *current_files, names=settings.domains, roots=trusted, now=started
            )
            logger.info("certificate %s not due: %s", settings.cert_name, decision.reason)
            return _files(bundle, renewed=False, reason=decision.reason)

        logger.info("obtaining certificate %s: %s", settings.cert_name, decision.reason)
        issue(settings.certbot_request(), token, run)
        fresh = _read_lineage(run, settings.cert_name)
        if fresh is None:
            raise IssuanceFailed(f"certbot finished but left no certificate {settings.cert_name}")
        bundle = verify_bundle(*fresh, names=settings.domains, roots=trusted, now=now())
        if current is not None and bundle.leaf.fingerprint == current.fingerprint:
            raise IssuanceFailed(f"certbot kept the old certificate {settings.cert_name}")
        state.save(ARCHIVE_KEY, pack_config(run.config_dir))
        logger.info(
            "obtained certificate %s valid until %s",
            settings.cert_name,
            f"{bundle.leaf.not_after:%Y-%m-%d}",
        )
        return _files(bundle, renewed=True, reason=decision.reason)


def _files(bundle: VerifiedBundle, *, renewed: bool, reason: str) -> CertificateFiles:
    return CertificateFiles(
        fullchain_pem=bundle.fullchain_pem,
        privkey_pem=bundle.privkey_pem,
        not_after=bundle.leaf.not_after,
        renewed=renewed,
        reason=reason,
        bundle=bundle,
    )


@dataclass(frozen=True)
class Report:
    """What one scheduled run did, for the log, the custom resource and the operator."""

    cert_name: str
    domains: tuple[str, ...]
    certificate_arn: str
    not_after: datetime.datetime
    renewed: bool
    imported: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "cert_name": self.cert_name,
            "domains": list(self.domains),
            "certificate_arn": self.certificate_arn,
            "not_after": self.not_after.isoformat(),
            "renewed": self.renewed,
            "imported": self.imported,
            "reason": self.reason,
        }


def state_store_for(settings: Settings, s3: Any) -> S3StateStore:
    if not settings.state_bucket:
        raise InvalidSettings("CERT_STATE_BUCKET is not set: certbot's state needs a bucket")
    return S3StateStore(s3, settings.state_bucket, f"{settings.state_prefix}{settings.cert_name}/")


def run(
    settings: Settings,
    *,
    s3: Any,
    acm: Any,
    secretsmanager: Any = None,
    ssm: Any = None,
    now: Clock = utc_now,
    roots: Sequence[x509.Certificate] | None = None,
    workdir: str | Path | None = None,
    issue: Issuer = run_certbot,
) -> Report:
    """The scheduled job: renew when due, then make ACM serve the current certificate.

    ACM is re-imported whenever the certificate it holds is not the lineage's current one (a
    renewal, or an import that failed last time), always into the same ARN.
    """
    if not settings.token_source:
        raise InvalidSettings("CLOUDFLARE_API_TOKEN_SECRET is not set")
    if settings.certificate_arn_parameter and ssm is None:
        raise InvalidSettings("CERT_ARN_PARAMETER is set but no SSM client was given")
    state = state_store_for(settings, s3)
    token = read_cloudflare_token(settings.token_source, secretsmanager=secretsmanager, ssm=ssm)
    files = obtain_or_renew(
        settings, state, token, now=now, roots=roots, workdir=workdir, issue=issue
    )
    record = load_record(state)
    imported = record is None or record.fingerprint != files.fingerprint
    if record is not None and not imported:
        arn = record.certificate_arn
    else:
        known = record.certificate_arn if record else None
        if known is None and settings.certificate_arn_parameter:
            known = read_arn_parameter(ssm, settings.certificate_arn_parameter)
        arn = import_certificate(acm, files.bundle, known)
        save_record(state, ImportRecord(arn, files.fingerprint, files.not_after.isoformat()))
        if settings.certificate_arn_parameter:
            write_arn_parameter(ssm, settings.certificate_arn_parameter, arn)
        logger.info("imported certificate %s into ACM as %s", settings.cert_name, arn)
    report = Report(
        cert_name=settings.cert_name,
        domains=settings.domains,
        certificate_arn=arn,
        not_after=files.not_after,
        renewed=files.renewed,
        imported=imported,
        reason=files.reason,
    )
    logger.info("certificate renewal: %s", report.as_dict())
    return report


def with_custom_hostnames(settings: Settings, hostnames: Sequence[str]) -> tuple[Settings, ...]:
    """The stack's own certificate, then one per custom hostname: each its own certbot lineage,
    state in S3 and ACM ARN, so one name's renewal never touches another's."""
    return (
        settings,
        *(
            dataclasses.replace(
                settings, domains=(hostname,), cert_name=hostname, certificate_arn_parameter=None
            )
            for hostname in hostnames
            if hostname not in settings.domains
        ),
    )


def run_each(all_settings: Sequence[Settings], **clients: Any) -> tuple[Report, ...]:
    """:func:`run` for every certificate. One failing does not keep the others from renewing;
    the run fails afterwards, naming each one that failed."""
    reports: list[Report] = []
    failures: list[str] = []
    for settings in all_settings:
        try:
            reports.append(run(settings, **clients))
        except (CertificateError, ClientError, BotoCoreError) as error:
            logger.warning("certificate %s failed: %s", settings.cert_name, error)
            failures.append(f"{settings.cert_name}: {type(error).__name__}: {error}")
    if failures:
        raise CertificateError("; ".join(failures))
    return tuple(reports)
