"""Imports a verified certificate into ACM and remembers where: the first import creates the
certificate, every later one re-imports into the same ``CertificateArn`` so API Gateway keeps
serving it without a deploy.

Which certificate was imported last (its ARN and fingerprint) is kept as a small JSON record in
the state store, optionally mirrored to an SSM parameter that other tools can read.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from .cert_checks import VerifiedBundle
from .cert_errors import AcmImportFailed, StateCorrupt
from .cert_state import StateStore

logger = logging.getLogger(__name__)

RECORD_KEY: Final = "acm-import.json"
"""Name of the import record in the state store."""
MANAGED_TAG: Final = {"Key": "hatchway:managed-by", "Value": "certificate-renewal"}
"""Tag on a certificate this job created (ACM accepts tags on the first import only)."""


@dataclass(frozen=True)
class ImportRecord:
    certificate_arn: str
    fingerprint: str
    """SHA-256 of the imported leaf: a mismatch with the lineage means an import is pending."""
    not_after: str


def load_record(state: StateStore) -> ImportRecord | None:
    data = state.load(RECORD_KEY)
    if data is None:
        return None
    try:
        return ImportRecord(**json.loads(data))
    except (ValueError, TypeError):
        raise StateCorrupt(f"the saved {RECORD_KEY} does not parse") from None


def save_record(state: StateStore, record: ImportRecord) -> None:
    state.save(RECORD_KEY, json.dumps(asdict(record), indent=2).encode())


def read_arn_parameter(ssm: Any, name: str) -> str | None:
    try:
        value = str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise
    return value if value.startswith("arn:") else None


def write_arn_parameter(ssm: Any, name: str, arn: str) -> None:
    ssm.put_parameter(Name=name, Value=arn, Type="String", Overwrite=True)


def import_certificate(acm: Any, bundle: VerifiedBundle, arn: str | None) -> str:
    """Import ``bundle``, into ``arn`` when given; returns the ARN ACM serves it under.

    A stored ARN ACM no longer knows (someone deleted the certificate; API Gateway cannot be
    using it then) falls back to a fresh import, reported in the log.
    """
    arguments: dict[str, Any] = {
        "Certificate": bundle.certificate_pem,
        "PrivateKey": bundle.privkey_pem,
        "CertificateChain": bundle.chain_pem,
    }
    try:
        if arn is not None:
            try:
                return str(
                    acm.import_certificate(CertificateArn=arn, **arguments)["CertificateArn"]
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
                logger.warning("ACM no longer has %s; importing a new certificate", arn)
        response = acm.import_certificate(Tags=[MANAGED_TAG], **arguments)
        return str(response["CertificateArn"])
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "unknown")
        message = error.response.get("Error", {}).get("Message", "")
        raise AcmImportFailed(
            f"ACM refused the certificate ({code}: {message}); the previous one keeps serving"
        ) from None
    except BotoCoreError as error:
        raise AcmImportFailed(
            f"ACM could not be reached ({type(error).__name__}); the previous certificate keeps "
            "serving"
        ) from None
