"""``hatchway-local`` refuses to start without what its options need, and says what that is:
no plain HTTP where HTTPS was asked for, no hostname it could not serve."""

from __future__ import annotations

import pytest

from hatchway_local import cli


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ([], {"CLOUDFLARE_API_TOKEN": "cf-x"}, "needs --domain"),
        (["--domain", "t.example.test"], {}, "set CLOUDFLARE_API_TOKEN"),
        (
            ["--domain", "t.example.test", "--acme-directory", "http://127.0.0.1:1/dir"],
            {"CLOUDFLARE_API_TOKEN": "cf-x"},
            "must be an https URL",
        ),
    ],
)
def test_tls_without_its_settings_is_refused(
    args: list[str],
    env: dict[str, str],
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["--tls", "letsencrypt", "--token", "hw_test-token", "--port", "0", *args])
    err = capsys.readouterr().err
    assert code == 2 and says in err
    assert "cf-x" not in err


def test_a_custom_hostname_that_cannot_be_served_is_refused_before_listening(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["--custom-hostname", "*.mycompany.test=x", "--token", "hw_t", "--port", "0"])
    assert code == 2
    assert "'*.mycompany.test' is not a hostname" in capsys.readouterr().err
