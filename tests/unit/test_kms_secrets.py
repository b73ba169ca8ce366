"""KmsSecretBox: webhook secrets sealed with the stack's KMS key, opened once per warm function;
moto stands in for KMS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from hatchway_relay.adapters.kms_secrets import SEALED_PREFIX, KmsSecretBox
from support.aws_credentials import use_fake_credentials


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    use_fake_credentials(monkeypatch, "eu-west-1")
    with mock_aws():
        client = boto3.client("kms", region_name="eu-west-1")
        yield client, client.create_key()["KeyMetadata"]["KeyId"]


def test_a_sealed_secret_is_ciphertext_and_opens_to_the_secret(kms: tuple[Any, str]) -> None:
    box = KmsSecretBox(*kms)
    sealed = box.seal("whsec_abc")
    assert sealed.startswith(SEALED_PREFIX) and "whsec_abc" not in sealed
    assert KmsSecretBox(*kms).open(sealed) == "whsec_abc"


def test_a_warm_function_asks_kms_once_per_secret(kms: tuple[Any, str]) -> None:
    client, key = kms
    calls: list[str] = []
    client.meta.events.register("before-call.kms.Decrypt", lambda **_: calls.append("decrypt"))
    box = KmsSecretBox(client, key)
    sealed = box.seal("whsec_abc")
    assert [box.open(sealed) for _ in range(5)] == ["whsec_abc"] * 5
    assert calls == ["decrypt"]


@pytest.mark.parametrize("value", ["", "plain-from-before-sealing"])
def test_empty_and_unsealed_values_pass_through(kms: tuple[Any, str], value: str) -> None:
    box = KmsSecretBox(*kms)
    assert box.open(value) == value
    assert box.seal("") == ""
