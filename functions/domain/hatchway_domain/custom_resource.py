"""CloudFormation custom resources served by a scheduled job's function, so that one
``sam deploy`` runs the job once right away instead of waiting for its first schedule.

The answer always goes to the pre-signed ``ResponseURL``, also when the job fails: a stack that
hears nothing waits an hour before it gives up. A failure's reason is the exception's message,
which the jobs keep free of secrets.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("hatchway.domain")

RESPONSE_TIMEOUT_SECONDS = 30.0
"""How long the PUT of the answer to CloudFormation may take."""

MAX_REASON_CHARS = 1000
"""CloudFormation shows the reason in the stack's events; the whole response must stay < 4 KB."""

Job = Callable[[Mapping[str, Any]], Mapping[str, str]]
"""Runs for Create and Update with the resource's properties; returns the attributes that
``!GetAtt`` can read."""

Put = Callable[[str, bytes], None]


def is_custom_resource_event(event: Mapping[str, Any]) -> bool:
    return "RequestType" in event and "ResponseURL" in event


def put_response(url: str, body: bytes) -> None:
    """PUT the answer to the pre-signed S3 URL (which signs no content type: send none)."""
    request = urllib.request.Request(
        url, data=body, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(body))}
    )
    with urllib.request.urlopen(request, timeout=RESPONSE_TIMEOUT_SECONDS) as answer:
        answer.read()


def handle(
    event: Mapping[str, Any],
    job: Job,
    *,
    on_delete: Callable[[Mapping[str, Any]], None] | None = None,
    put: Put = put_response,
) -> None:
    """Run ``job`` for Create/Update (``on_delete`` for Delete, if given) and answer
    CloudFormation either way."""
    properties = dict(event.get("ResourceProperties") or {})
    physical_id = str(event.get("PhysicalResourceId") or event["LogicalResourceId"])
    status, reason, data = "SUCCESS", "", {}
    try:
        if event["RequestType"] in ("Create", "Update"):
            data = dict(job(properties))
        elif on_delete is not None:
            on_delete(properties)
    except Exception as exc:
        log.exception("%s of %s failed", event["RequestType"], event["LogicalResourceId"])
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS]
    body = {
        "Status": status,
        "Reason": reason or "see the function's log",
        "PhysicalResourceId": physical_id,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": data,
    }
    put(str(event["ResponseURL"]), json.dumps(body).encode())
