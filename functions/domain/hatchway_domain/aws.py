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
from collections.abc import Mapping
from typing import Any

import boto3
import cloudflare
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from hatchway_domain import certificates, custom_resource, dns_reconcile
from hatchway_domain.secrets import read_cloudflare_token

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "domain"
logger = Logger(service=SERVICE)
metrics = Metrics(
    service=SERVICE,
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Hatchway",
)


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


def wildcard_certificates(acm: Any, domain: str) -> tuple[str, ...]:
    """ARNs of the ACM certificates for ``*.<domain>``, pending or issued. Found by name, not
    by a template reference: the certificate waits for the very record this job writes."""
    arns: list[str] = []
    paginator = acm.get_paginator("list_certificates")
    statuses = ["PENDING_VALIDATION", "ISSUED"]
    for page in paginator.paginate(CertificateStatuses=statuses):
        for summary in page.get("CertificateSummaryList", []):
            if summary.get("DomainName") == f"*.{domain}":
                arns.append(summary["CertificateArn"])
    return tuple(arns)


def discovered(
    settings: dns_reconcile.Settings, apigateway: Any, acm: Any
) -> dns_reconcile.Settings:
    """The stack's current targets and certificates, wherever the environment left them out."""
    return dataclasses.replace(
        settings,
        http_target=settings.http_target or regional_target(apigateway, f"*.{settings.domain}"),
        connect_target=settings.connect_target
        or regional_target(apigateway, f"connect.{settings.domain}"),
        certificate_arns=settings.certificate_arns or wildcard_certificates(acm, settings.domain),
    )


def _reconcile_dns() -> dns_reconcile.Report:
    acm = boto3.client("acm")
    settings = discovered(
        dns_reconcile.Settings.from_env(os.environ), boto3.client("apigatewayv2"), acm
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
    return report


@metrics.log_metrics
@logger.inject_lambda_context
def dns_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Make the zone's records owned by this stack match what the stack needs; repair drift."""
    if custom_resource.is_custom_resource_event(event):

        def at_deploy(properties: Mapping[str, Any]) -> Mapping[str, str]:
            return {"DriftRepaired": str(_reconcile_dns().drift_repaired)}

        custom_resource.handle(event, at_deploy)
        return {}
    return {"drift_repaired": _reconcile_dns().drift_repaired}


# --- Certificate renewal ----------------------------------------------------------------------


def _renew_certificate() -> certificates.Report:
    return certificates.run(
        certificates.Settings.from_env(os.environ),
        s3=boto3.client("s3"),
        acm=boto3.client("acm"),
        secretsmanager=boto3.client("secretsmanager"),
        ssm=boto3.client("ssm"),
    )


@logger.inject_lambda_context
def certificate_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Obtain or renew the Let's Encrypt certificate and keep ACM serving it (same ARN)."""
    if custom_resource.is_custom_resource_event(event):

        def at_deploy(properties: Mapping[str, Any]) -> Mapping[str, str]:
            return {"CertificateArn": _renew_certificate().certificate_arn}

        # On stack deletion the imported certificate stays in ACM, like the retained bucket
        # that holds its key: deleting them would take a name's TLS down before its DNS.
        custom_resource.handle(event, at_deploy)
        return {}
    return _renew_certificate().as_dict()
