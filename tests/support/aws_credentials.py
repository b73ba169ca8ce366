"""Credentials for boto3 clients that only ever talk to moto: never real ones, and set through
``monkeypatch`` so they leave with the test."""

from __future__ import annotations

import pytest

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def use_fake_credentials(monkeypatch: pytest.MonkeyPatch, region: str | None = None) -> None:
    """Fake credentials (and ``region`` as the default region, if given) for this test."""
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    if region is not None:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
