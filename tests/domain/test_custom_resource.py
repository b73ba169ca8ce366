"""The custom-resource wrapper answers CloudFormation on every path, over a real PUT to a
loopback stand-in for the pre-signed S3 URL, and never leaves a stack waiting."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from hatchway_domain.custom_resource import handle, is_custom_resource_event
from support.cloudformation import ResponseBucket, cfn_event


@pytest.fixture
def bucket() -> Iterator[ResponseBucket]:
    with ResponseBucket() as started:
        yield started


def failing_job(properties: Mapping[str, Any]) -> Mapping[str, str]:
    raise RuntimeError("the zone t.example.com was not found")


@pytest.mark.parametrize(
    ("request_type", "job", "status", "data", "reason"),
    [
        (
            "Create",
            lambda p: {"Changes": "3"},
            "SUCCESS",
            {"Changes": "3"},
            "see the function's log",
        ),
        ("Update", lambda p: {"Domain": p["Domain"]}, "SUCCESS", {"Domain": "t.example.com"}, ""),
        ("Create", failing_job, "FAILED", {}, "RuntimeError: the zone t.example.com was not found"),
        ("Delete", failing_job, "SUCCESS", {}, ""),  # the job does not run on Delete
    ],
)
def test_every_request_gets_an_answer(
    bucket: ResponseBucket,
    request_type: str,
    job: Any,
    status: str,
    data: dict[str, str],
    reason: str,
) -> None:
    handle(cfn_event(request_type, bucket.url, PhysicalResourceId="dns-1"), job)

    ((path, headers, answer),) = bucket.received
    assert path.endswith("X-Amz-Signature=s")
    assert headers.get("Content-Type", "") == ""  # the pre-signed URL signs no content type
    assert answer["Status"] == status and answer["Data"] == data
    assert answer["PhysicalResourceId"] == "dns-1"
    assert answer["RequestId"] == "req-1" and answer["StackId"].endswith("stack/hatchway/abc")
    assert reason in answer["Reason"]


def test_a_failing_delete_hook_is_reported_and_a_new_resource_gets_a_physical_id(
    bucket: ResponseBucket,
) -> None:
    handle(cfn_event("Delete", bucket.url), lambda p: {}, on_delete=failing_job)
    ((_, _, answer),) = bucket.received
    assert answer["Status"] == "FAILED"
    assert answer["PhysicalResourceId"] == "DnsReconcileNow"


def test_scheduled_events_are_not_custom_resource_events(bucket: ResponseBucket) -> None:
    assert is_custom_resource_event(cfn_event("Create", bucket.url))
    assert not is_custom_resource_event({"source": "aws.events", "detail-type": "Scheduled Event"})
