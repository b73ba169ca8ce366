"""Composition root of the domain jobs on AWS Lambda: the entry points ``template.yaml`` names.

Each runs on its schedule (an EventBridge event) and once at deploy time (a CloudFormation
custom-resource event, answered through ``custom_resource``). A failed run raises, so the
function's Errors metric feeds the stack's alarm, and it changes nothing: records and
certificates stay as they were. Settings come from the function's environment (see each job's
``Settings.from_env``); the Cloudflare token is read from Secrets Manager or SSM at run time.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any

import boto3
import cloudflare
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from hatchway_domain import certificates, custom_domains, custom_resource, dns_reconcile
from hatchway_domain.secrets import read_cloudflare_token

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "domain"
logger = Logger(service=SERVICE)
metrics = Metrics(
    service=SERVICE,
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Hatchway",
)
# A run that fails, or a stack deletion, records no metric: not worth a warning in the log.
warnings.filterwarnings("ignore", message="No application metrics to publish")


# --- DNS reconcile ---------------------------------------------------------------------------


def regional_target(apigateway: Any, domain_name: str) -> str | None:
    """Where an API Gateway custom domain's records must point; None until it exists (the
    first deploy creates it only after its certificate is validated)."""
    try:
        found = apigateway.get_domain_name(DomainName=domain_name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NotFoundException":
            return None
        raise
    configurations = found.get("DomainNameConfigurations") or [{}]
    target = configurations[0].get("ApiGatewayDomainName")
    return str(target) if target else None


def wildcard_certificates(
    certificates: Mapping[str, list[custom_domains.Certificate]], domain: str
) -> tuple[str, ...]:
    """ARNs of the ACM certificates for ``*.<domain>``, pending or issued. Found by name, not
    by a template reference: the certificate waits for the very record this job writes."""
    return tuple(certificate.arn for certificate in certificates.get(f"*.{domain}", []))


def discovered(
    settings: dns_reconcile.Settings,
    apigateway: Any,
    acm: Any,
    certificates: Mapping[str, list[custom_domains.Certificate]] | None = None,
) -> dns_reconcile.Settings:
    """The stack's current targets and certificates, wherever the environment left them out.
    ``certificates``: ACM's listing by name, when the caller already has it."""
    if not settings.certificate_arns and certificates is None:
        certificates = custom_domains.certificates_by_name(acm)
    return dataclasses.replace(
        settings,
        http_target=settings.http_target or regional_target(apigateway, f"*.{settings.domain}"),
        connect_target=settings.connect_target
        or regional_target(apigateway, f"connect.{settings.domain}"),
        certificate_arns=settings.certificate_arns
        or wildcard_certificates(certificates or {}, settings.domain),
    )


def with_custom_domains(
    settings: dns_reconcile.Settings, outcome: custom_domains.Outcome
) -> dns_reconcile.Settings:
    """The records the custom hostnames need: their CNAMEs once their domains exist, and the
    validation records of their certificates until ACM has issued them."""
    return dataclasses.replace(
        settings,
        certificate_arns=tuple(dict.fromkeys((*settings.certificate_arns, *outcome.validating))),
        custom_hostnames=tuple(sorted(outcome.targets.items())),
    )


def _reconcile_dns() -> dns_reconcile.Report:
    acm = boto3.client("acm")
    apigateway = boto3.client("apigatewayv2")
    certificates = custom_domains.certificates_by_name(acm)  # listed once, for both steps
    hosted = custom_domains.reconcile(
        custom_domains.Settings.from_env(os.environ),
        apigateway=apigateway,
        acm=acm,
        certificates=certificates,
    )
    for line in hosted.lines():
        logger.info(line)
    settings = with_custom_domains(
        discovered(dns_reconcile.Settings.from_env(os.environ), apigateway, acm, certificates),
        hosted,
    )
    if not settings.token_source:
        raise dns_reconcile.InvalidDnsSettings("CLOUDFLARE_API_TOKEN_SECRET is not set")
    token = read_cloudflare_token(
        settings.token_source,
        secretsmanager=boto3.client("secretsmanager"),
        ssm=boto3.client("ssm"),
    )
    report = dns_reconcile.run(
        settings,
        cloudflare_client=cloudflare.Cloudflare(api_token=token.reveal()),
        acm_client=acm,
    )
    metrics.add_metric(name="DriftRepaired", unit=MetricUnit.Count, value=report.drift_repaired)
    for line in report.lines():
        logger.info(line)
    report.raise_if_failed()
    if hosted.failed:
        raise custom_domains.CustomDomainError("; ".join(hosted.failures))
    return report


def _remove_custom_domains() -> None:
    """On stack deletion: the custom domains the job created go before the API they map to."""
    apigateway = boto3.client("apigatewayv2")
    stack_name = os.environ.get("STACK_NAME", "")
    removed, problems = custom_domains.remove_domains(
        apigateway, custom_domains.owned_domains(apigateway, stack_name)
    )
    for name in removed:
        logger.info(f"removed the custom domain {name}")
    if problems:
        raise custom_domains.CustomDomainError("; ".join(problems))


@metrics.log_metrics
@logger.inject_lambda_context
def dns_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Make the zone's records owned by this stack match what the stack needs; repair drift;
    keep the custom hostnames' API Gateway domains in step with the stack."""
    if custom_resource.is_custom_resource_event(event):

        def at_deploy(properties: Mapping[str, Any]) -> Mapping[str, str]:
            return {"DriftRepaired": str(_reconcile_dns().drift_repaired)}

        custom_resource.handle(event, at_deploy, on_delete=lambda _: _remove_custom_domains())
        return {}
    return {"drift_repaired": _reconcile_dns().drift_repaired}


# --- Certificate renewal ----------------------------------------------------------------------


def _renew_certificates() -> tuple[certificates.Report, ...]:
    hostnames = custom_domains.hostnames_in(os.environ.get("CUSTOM_HOSTNAMES", ""))
    return certificates.run_each(
        certificates.with_custom_hostnames(certificates.Settings.from_env(os.environ), hostnames),
        s3=boto3.client("s3"),
        acm=boto3.client("acm"),
        secretsmanager=boto3.client("secretsmanager"),
        ssm=boto3.client("ssm"),
    )


@logger.inject_lambda_context
def certificate_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Obtain or renew the Let's Encrypt certificates (``connect.<domain>`` and each custom
    hostname) and keep ACM serving each under its ARN."""
    if custom_resource.is_custom_resource_event(event):

        def at_deploy(properties: Mapping[str, Any]) -> Mapping[str, str]:
            return {"CertificateArn": _renew_certificates()[0].certificate_arn}

        # On stack deletion the imported certificates stay in ACM, like the retained bucket
        # that holds their keys: deleting them would take a name's TLS down before its DNS.
        custom_resource.handle(event, at_deploy)
        return {}
    return {"certificates": [report.as_dict() for report in _renew_certificates()]}
