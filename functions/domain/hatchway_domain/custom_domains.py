"""Custom hostnames on API Gateway: each hostname a user brings (``api.mycompany.com``) gets a
certificate, a regional custom domain mapped to the stack's HTTP API, and so a target for its
CNAME. CloudFormation cannot loop over a parameter's list, so the DNS job keeps these in step
with the stack's ``CustomHostnames`` on every run, one idempotent step at a time:

1. a certificate: with ``acm`` the job requests one (DNS-validated; the validation record goes
   into Cloudflare with the rest), with ``letsencrypt`` the certificate job imports one;
2. once it is issued, the custom domain (tagged as this stack's) and its API mapping;
3. the domain's regional target, which the DNS job writes as the hostname's CNAME.

Domains tagged as this stack's whose hostname left the list are deleted with their mappings.
A domain of the same name that is not the stack's is never touched: that is a conflict.
Certificates are left in ACM when a hostname goes (public ACM certificates cost nothing).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from .dns_plan import HOSTNAME_PATTERN, normalise_name

logger = logging.getLogger(__name__)

OWNER_TAG: Final = "hatchway:custom-hostname-of"
"""Tag on the custom domains and certificates the job creates; its value is the stack name."""
SECURITY_POLICY: Final = "TLS_1_2"
MAX_PAGES: Final = 50
"""Pages of domain names or certificates listed at most, so a run always ends."""
USABLE_STATUSES: Final = ("PENDING_VALIDATION", "ISSUED")


class CustomDomainError(Exception):
    """API Gateway or ACM refused a step; the message names the hostname and the step."""


class InvalidHostnameSettings(CustomDomainError, ValueError):
    """The hostname list or the API it maps to is configured wrongly: nothing was changed."""


def hostnames_in(text: str) -> tuple[str, ...]:
    """The hostnames of ``HOSTNAME=TUNNEL`` pairs (the template's ``CustomHostnames``); the
    tunnel names are the relay's business."""
    hostnames: list[str] = []
    for pair in (p for p in re.split(r"[,\s]+", text) if p):
        hostname = normalise_name(pair.partition("=")[0])
        if not HOSTNAME_PATTERN.match(hostname) or hostname.startswith("*."):
            raise InvalidHostnameSettings(
                f"custom hostname {hostname!r} is not a hostname (like api.mycompany.com)"
            )
        if hostname not in hostnames:
            hostnames.append(hostname)
    return tuple(hostnames)


@dataclass(frozen=True)
class Certificate:
    arn: str
    status: str
    """``ISSUED`` or ``PENDING_VALIDATION``."""

    @property
    def issued(self) -> bool:
        return self.status == "ISSUED"


def certificates_by_name(acm: Any) -> dict[str, list[Certificate]]:
    """Every usable ACM certificate, by the name it is for (issued ones first)."""
    found: dict[str, list[Certificate]] = {}
    paginator = acm.get_paginator("list_certificates")
    pages = paginator.paginate(
        CertificateStatuses=list(USABLE_STATUSES), PaginationConfig={"MaxItems": 1000 * MAX_PAGES}
    )
    for page in pages:
        for summary in page.get("CertificateSummaryList", []):
            certificate = Certificate(summary["CertificateArn"], summary.get("Status", ""))
            found.setdefault(str(summary.get("DomainName", "")).lower(), []).append(certificate)
    for certificates in found.values():
        certificates.sort(key=lambda c: not c.issued)
    return found


@dataclass(frozen=True)
class Settings:
    hostnames: tuple[str, ...]
    api_id: str
    """The HTTP API visitors reach; every custom domain maps its root to it."""
    stage: str
    stack_name: str
    request_certificates: bool = True
    """True (``acm``): request DNS-validated certificates. False (``letsencrypt``): wait for the
    certificate job to import one."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """``CUSTOM_HOSTNAMES`` (``HOSTNAME=TUNNEL`` pairs), ``HTTP_API_ID``, ``HTTP_API_STAGE``
        (default ``$default``), ``STACK_NAME``, ``CERTIFICATE_SOURCE`` (``acm`` by default)."""
        hostnames = hostnames_in(env.get("CUSTOM_HOSTNAMES", ""))
        api_id = env.get("HTTP_API_ID", "").strip()
        stack_name = env.get("STACK_NAME", "").strip()
        if hostnames and not (api_id and stack_name):
            raise InvalidHostnameSettings(
                "custom hostnames need HTTP_API_ID and STACK_NAME: the API they map to and the "
                "stack that owns their domains"
            )
        return cls(
            hostnames=hostnames,
            api_id=api_id,
            stage=env.get("HTTP_API_STAGE", "").strip() or "$default",
            stack_name=stack_name,
            request_certificates=env.get("CERTIFICATE_SOURCE", "acm").strip() != "letsencrypt",
        )


@dataclass(frozen=True)
class HostnameState:
    """Where one hostname stands after the run."""

    hostname: str
    certificate: Certificate | None = None
    target: str | None = None
    """The regional target its CNAME points at; None until the custom domain exists."""
    waiting_for: str = ""
    """Why it is not served yet, in words (empty once it has a target)."""
    problem: str = ""
    """A step that failed; the alarm's business."""


@dataclass(frozen=True)
class Outcome:
    hostnames: tuple[HostnameState, ...] = ()
    requested: tuple[str, ...] = ()
    created: tuple[str, ...] = ()
    mapped: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def targets(self) -> dict[str, str]:
        """Hostname -> regional target, for every hostname whose domain exists."""
        return {s.hostname: s.target for s in self.hostnames if s.target}

    @property
    def validating(self) -> tuple[str, ...]:
        """ARNs of certificates waiting for their DNS validation record."""
        return tuple(
            s.certificate.arn
            for s in self.hostnames
            if s.certificate is not None and not s.certificate.issued
        )

    @property
    def failures(self) -> tuple[str, ...]:
        """The steps that failed, in words: what the alarm is about."""
        return (
            *(f"custom hostname {s.hostname}: {s.problem}" for s in self.hostnames if s.problem),
            *self.problems,
        )

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def lines(self) -> list[str]:
        lines = [f"requested a certificate for {h}" for h in self.requested]
        lines += [f"created the custom domain {h}" for h in self.created]
        lines += [f"mapped {h} to the HTTP API" for h in self.mapped]
        lines += [f"moved {h} to its issued certificate" for h in self.updated]
        lines += [f"removed the custom domain {h} (no longer listed)" for h in self.removed]
        for state in self.hostnames:
            if state.waiting_for:
                lines.append(f"custom hostname {state.hostname}: waiting for {state.waiting_for}")
            elif state.target:
                lines.append(f"custom hostname {state.hostname} is served at {state.target}")
        return lines + list(self.failures)


def _refused(step: str, error: Exception) -> str:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "unknown")
        said = error.response.get("Error", {}).get("Message", "")
        return f"API Gateway or ACM refused to {step} ({code}: {said})"
    return f"could not {step} ({type(error).__name__})"


def idempotency_token(stack_name: str, hostname: str) -> str:
    """The same request twice within ACM's hour asks for one certificate, not two."""
    return hashlib.sha256(f"{stack_name}\n{hostname}".encode()).hexdigest()[:32]


def _domain(apigateway: Any, hostname: str) -> dict[str, Any] | None:
    try:
        return dict(apigateway.get_domain_name(DomainName=hostname))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "NotFoundException":
            return None
        raise


def _configuration(domain: dict[str, Any]) -> dict[str, Any]:
    return dict((domain.get("DomainNameConfigurations") or [{}])[0])


def _configurations(certificate_arn: str) -> list[dict[str, str]]:
    return [
        {
            "CertificateArn": certificate_arn,
            "EndpointType": "REGIONAL",
            "SecurityPolicy": SECURITY_POLICY,
        }
    ]


class _Run:
    """One pass over the hostnames; collects what it did."""

    def __init__(self, settings: Settings, apigateway: Any, acm: Any) -> None:
        self.settings, self.apigateway, self.acm = settings, apigateway, acm
        self.requested: list[str] = []
        self.created: list[str] = []
        self.mapped: list[str] = []
        self.updated: list[str] = []

    def certificate(self, hostname: str, known: Sequence[Certificate]) -> Certificate | None:
        if known:
            return known[0]
        if not self.settings.request_certificates:
            return None
        answer = self.acm.request_certificate(
            DomainName=hostname,
            ValidationMethod="DNS",
            IdempotencyToken=idempotency_token(self.settings.stack_name, hostname),
            Tags=[{"Key": OWNER_TAG, "Value": self.settings.stack_name}],
        )
        self.requested.append(hostname)
        return Certificate(answer["CertificateArn"], "PENDING_VALIDATION")

    def domain(self, hostname: str, certificate: Certificate) -> dict[str, Any] | HostnameState:
        domain = _domain(self.apigateway, hostname)
        if domain is None:
            domain = dict(
                self.apigateway.create_domain_name(
                    DomainName=hostname,
                    DomainNameConfigurations=_configurations(certificate.arn),
                    Tags={OWNER_TAG: self.settings.stack_name},
                )
            )
            self.created.append(hostname)
        elif (domain.get("Tags") or {}).get(OWNER_TAG) != self.settings.stack_name:
            return HostnameState(
                hostname,
                certificate,
                problem="an API Gateway custom domain of that name exists and is not this "
                "stack's; it was left alone (delete it, or remove the hostname from "
                "CustomHostnames)",
            )
        elif _configuration(domain).get("CertificateArn") != certificate.arn:
            domain = dict(
                self.apigateway.update_domain_name(
                    DomainName=hostname, DomainNameConfigurations=_configurations(certificate.arn)
                )
            )
            self.updated.append(hostname)
        return domain

    def mapping(self, hostname: str) -> None:
        mappings = self.apigateway.get_api_mappings(DomainName=hostname).get("Items", [])
        if any(
            m.get("ApiId") == self.settings.api_id and not m.get("ApiMappingKey") for m in mappings
        ):
            return
        self.apigateway.create_api_mapping(
            ApiId=self.settings.api_id, DomainName=hostname, Stage=self.settings.stage
        )
        self.mapped.append(hostname)

    def hostname(self, hostname: str, known: Sequence[Certificate]) -> HostnameState:
        step = "request a certificate"
        try:
            certificate = self.certificate(hostname, known)
            if certificate is None:
                return HostnameState(hostname, waiting_for="the certificate job to import one")
            if not certificate.issued:
                return HostnameState(
                    hostname, certificate, waiting_for="ACM to validate its certificate"
                )
            step = "create or update the custom domain"
            domain = self.domain(hostname, certificate)
            if isinstance(domain, HostnameState):
                return domain
            step = "map the custom domain to the HTTP API"
            self.mapping(hostname)
        except (ClientError, BotoCoreError) as error:
            return HostnameState(hostname, problem=_refused(step, error))
        target = _configuration(domain).get("ApiGatewayDomainName")
        if not target:
            return HostnameState(
                hostname, certificate, waiting_for="API Gateway to give the domain its target"
            )
        return HostnameState(hostname, certificate, target=str(target))


def owned_domains(apigateway: Any, stack_name: str) -> list[str]:
    """The custom domains this job created for ``stack_name`` (by their tag)."""
    names: list[str] = []
    token: str | None = None
    for _ in range(MAX_PAGES):
        page = apigateway.get_domain_names(**({"NextToken": token} if token else {}))
        for item in page.get("Items", []):
            if (item.get("Tags") or {}).get(OWNER_TAG) == stack_name:
                names.append(str(item["DomainName"]))
        token = page.get("NextToken")
        if not token:
            break
    return names


def remove_domains(apigateway: Any, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Delete each domain with its API mappings; (removed, problems)."""
    removed: list[str] = []
    problems: list[str] = []
    for name in names:
        try:
            for mapping in apigateway.get_api_mappings(DomainName=name).get("Items", []):
                apigateway.delete_api_mapping(ApiMappingId=mapping["ApiMappingId"], DomainName=name)
            apigateway.delete_domain_name(DomainName=name)
        except (ClientError, BotoCoreError) as error:
            problems.append(
                f"custom hostname {name}: {_refused('remove its custom domain', error)}"
            )
            continue
        removed.append(name)
    return removed, problems


def reconcile(
    settings: Settings,
    *,
    apigateway: Any,
    acm: Any,
    certificates: Mapping[str, list[Certificate]] | None = None,
) -> Outcome:
    """Bring the stack's custom domains in step with ``settings.hostnames``.

    ``certificates`` is :func:`certificates_by_name`'s listing when the caller already has it.
    A step API Gateway or ACM refuses is reported for its hostname; the other hostnames go on.
    """
    try:
        if certificates is None:
            certificates = certificates_by_name(acm) if settings.hostnames else {}
        owned = owned_domains(apigateway, settings.stack_name)
    except (ClientError, BotoCoreError) as error:
        raise CustomDomainError(
            _refused("list the custom domains and certificates", error)
        ) from None
    run = _Run(settings, apigateway, acm)
    states = tuple(run.hostname(h, certificates.get(h, [])) for h in settings.hostnames)
    removed, problems = remove_domains(
        apigateway, [n for n in owned if n not in settings.hostnames]
    )
    outcome = Outcome(
        hostnames=states,
        requested=tuple(run.requested),
        created=tuple(run.created),
        mapped=tuple(run.mapped),
        updated=tuple(run.updated),
        removed=tuple(removed),
        problems=tuple(problems),
    )
    for line in outcome.lines():
        logger.info("%s", line)
    return outcome
