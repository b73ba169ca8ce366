"""The Cloudflare token comes from Secrets Manager or SSM by a simple rule, in either of two
shapes, and stays out of reprs and error messages; the job's settings come from its
environment and refuse what would break later."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from hatchway_domain.cert_errors import InvalidSettings, TokenUnavailable
from hatchway_domain.certificates import (
    DEFAULT_PROPAGATION_SECONDS,
    LETS_ENCRYPT_PRODUCTION,
    LETS_ENCRYPT_STAGING,
    Settings,
)
from hatchway_domain.secrets import ApiToken, read_cloudflare_token
from support.aws_credentials import use_fake_credentials

TOKEN = "cf-unit-token-5b1f0d8e2a"
REGION = "eu-west-1"


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    use_fake_credentials(monkeypatch)
    with mock_aws():
        secretsmanager = boto3.client("secretsmanager", region_name=REGION)
        ssm = boto3.client("ssm", region_name=REGION)
        secretsmanager.create_secret(Name="plain", SecretString=f"{TOKEN}\n")
        secretsmanager.create_secret(Name="json-token", SecretString=json.dumps({"token": TOKEN}))
        secretsmanager.create_secret(
            Name="json-api-token", SecretString=json.dumps({"api_token": TOKEN, "zone": "z"})
        )
        secretsmanager.create_secret(Name="json-other", SecretString=json.dumps({"key": TOKEN}))
        ssm.put_parameter(Name="/hatchway/cf-token", Value=TOKEN, Type="SecureString")
        ssm.put_parameter(Name="hatchway-cf-token", Value=TOKEN, Type="SecureString")
        yield {"secretsmanager": secretsmanager, "ssm": ssm}


@pytest.mark.parametrize(
    "source",
    ["plain", "json-token", "json-api-token", "/hatchway/cf-token", "ssm:hatchway-cf-token"],
)
def test_the_token_is_read_from_either_service_in_either_shape(
    clients: dict[str, Any], source: str
) -> None:
    assert read_cloudflare_token(source, **clients).reveal() == TOKEN


def test_a_secret_is_found_by_its_arn_too(clients: dict[str, Any]) -> None:
    arn = clients["secretsmanager"].describe_secret(SecretId="plain")["ARN"]

    assert read_cloudflare_token(arn, **clients).reveal() == TOKEN


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("missing", "ResourceNotFoundException"),
        ("/missing", "ParameterNotFound"),
        ("json-other", "without a token or api_token string key"),
    ],
)
def test_a_token_that_cannot_be_read_says_where_it_looked_and_never_shows_a_value(
    clients: dict[str, Any], source: str, said: str
) -> None:
    with pytest.raises(TokenUnavailable) as refused:
        read_cloudflare_token(source, **clients)

    assert source.lstrip("/") in str(refused.value) and said in str(refused.value)
    assert TOKEN not in str(refused.value)


def test_the_token_masks_itself() -> None:
    token = ApiToken(TOKEN)

    assert TOKEN not in repr(token) and TOKEN not in str(token) and TOKEN not in f"{token}"
    assert token.redact(f"Bearer {TOKEN}") == "Bearer ********"


def test_the_job_reads_its_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CERT_DOMAINS": "connect.T.Example.com., api.example.org",
            "ACME_DIRECTORY": "staging",
            "ACME_EMAIL": "ops@example.com",
            "DNS_PROPAGATION_SECONDS": "45",
            "CERT_STATE_BUCKET": "state-bucket",
            "CLOUDFLARE_API_TOKEN_SECRET": "hatchway/cloudflare",
            "CERT_ARN_PARAMETER": "/hatchway/cert-arn",
            "ACME_CA_BUNDLE": "",
        }
    )

    assert settings.domains == ("connect.t.example.com", "api.example.org")
    assert settings.cert_name == "connect.t.example.com"
    assert settings.acme_directory == LETS_ENCRYPT_STAGING
    assert (settings.email, settings.propagation_seconds) == ("ops@example.com", 45)
    assert (settings.state_bucket, settings.state_prefix) == ("state-bucket", "certbot/")
    assert settings.token_source == "hatchway/cloudflare"
    assert settings.certificate_arn_parameter == "/hatchway/cert-arn"
    assert settings.acme_ca_bundle is None
    assert settings.renew_within == datetime.timedelta(days=30)


def test_defaults_are_lets_encrypt_production_and_the_wildcards_base_name() -> None:
    settings = Settings.from_env({"CERT_DOMAINS": "*.t.example.com t.example.com"})

    assert settings.acme_directory == LETS_ENCRYPT_PRODUCTION
    assert settings.cert_name == "t.example.com"
    assert settings.email is None
    assert settings.propagation_seconds == DEFAULT_PROPAGATION_SECONDS


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"CERT_DOMAINS": "not a domain!"},
        {"CERT_DOMAINS": "a.example.com,a.example.com"},
        {"CERT_DOMAINS": "a.example.com", "ACME_DIRECTORY": "http://acme.example.com/dir"},
        {"CERT_DOMAINS": "a.example.com", "DNS_PROPAGATION_SECONDS": "soon"},
        {"CERT_DOMAINS": "a.example.com", "DNS_PROPAGATION_SECONDS": "-1"},
        {"CERT_DOMAINS": "a.example.com", "CERT_NAME": "../a"},
    ],
    ids=[
        "no-domains",
        "bad-domain",
        "duplicate",
        "plain-http",
        "bad-seconds",
        "negative-seconds",
        "bad-name",
    ],
)
def test_settings_that_would_break_later_are_refused_now(env: dict[str, str]) -> None:
    with pytest.raises(InvalidSettings):
        Settings.from_env(env)


def test_by_default_a_chain_must_end_at_a_root_lets_encrypt_chains_to() -> None:
    roots = Settings(domains=("t.example.com",)).trust_roots()

    names = {r.subject.rfc4514_string() for r in roots}
    assert {"CN=ISRG Root X1,O=Internet Security Research Group,C=US"} <= names
    assert {"CN=ISRG Root X2,O=Internet Security Research Group,C=US"} <= names


@pytest.mark.parametrize("source", ["json-api-token", "/hatchway/cf-token"])
def test_reading_the_token_logs_nothing_of_it_even_at_debug_level(
    clients: dict[str, Any], source: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")

    read_cloudflare_token(source, **clients)

    assert "GetSecretValue" in caplog.text or "GetParameter" in caplog.text
    assert TOKEN not in caplog.text
