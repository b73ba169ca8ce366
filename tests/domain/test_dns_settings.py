"""The DNS job reads its settings from the Lambda's environment and refuses incomplete ones
before it talks to anybody."""

from __future__ import annotations

import pytest

from hatchway_domain.dns_reconcile import InvalidDnsSettings, Settings

REQUIRED = {
    "DOMAIN_NAME": "T.Example.Test.",
    "CLOUDFLARE_ZONE_ID": "023e105f4ecef8ad9ca31a8372d0c353",
    "STACK_NAME": "hatchway",
}


def test_everything_the_template_passes_is_read() -> None:
    settings = Settings.from_env(
        {
            **REQUIRED,
            "HTTP_API_TARGET": "d-abc123.execute-api.eu-west-1.amazonaws.com",
            "CONNECT_API_TARGET": "d-ws456.execute-api.eu-west-1.amazonaws.com",
            "CERTIFICATE_ARNS": (
                "arn:aws:acm:eu-west-1:1:certificate/a, arn:aws:acm:eu-west-1:1:certificate/b"
            ),
            "CLOUDFLARE_API_TOKEN_SECRET": "hatchway/cloudflare",
            "DNS_NAME_SERVERS": "192.0.2.53 198.51.100.53",
            "DNS_PORT": "5353",
        }
    )

    assert settings == Settings(
        domain="t.example.test",
        zone_id="023e105f4ecef8ad9ca31a8372d0c353",
        http_target="d-abc123.execute-api.eu-west-1.amazonaws.com",
        stack_name="hatchway",
        connect_target="d-ws456.execute-api.eu-west-1.amazonaws.com",
        certificate_arns=(
            "arn:aws:acm:eu-west-1:1:certificate/a",
            "arn:aws:acm:eu-west-1:1:certificate/b",
        ),
        token_source="hatchway/cloudflare",
        name_servers=("192.0.2.53", "198.51.100.53"),
        dns_port=5353,
    )
    assert settings.marker == "managed by hatchway stack hatchway"


def test_optional_settings_may_be_absent_or_empty() -> None:
    settings = Settings.from_env({**REQUIRED, "CONNECT_API_TARGET": " ", "CERTIFICATE_ARNS": ""})

    assert settings.http_target is None
    assert settings.connect_target is None
    assert settings.certificate_arns == ()
    assert settings.custom_hostnames == ()
    assert settings.name_servers == ()


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_each_required_setting_is_required(missing: str) -> None:
    env = {key: value for key, value in REQUIRED.items() if key != missing}

    with pytest.raises(InvalidDnsSettings, match="the DNS job needs"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("CLOUDFLARE_ZONE_ID", "zones/../accounts", "not a Cloudflare zone id"),
        ("DNS_PORT", "53x", "must be a port number"),
        ("DNS_PORT", "65536", "must be a port number"),
    ],
)
def test_malformed_settings_are_refused(name: str, value: str, complaint: str) -> None:
    with pytest.raises(InvalidDnsSettings, match=complaint):
        Settings.from_env({**REQUIRED, name: value})
