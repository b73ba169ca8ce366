"""``hatchway-local`` refuses to start without what its options need, and says what that is:
no plain HTTP where HTTPS was asked for, no hostname it could not serve; extra trust roots for
ACME servers whose roots are not public (Let's Encrypt's staging roots fetched by a stand-in)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hatchway_domain.certificates import LETS_ENCRYPT_STAGING, Settings
from hatchway_local import cli, tls


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


# --- Trust roots for ACME servers whose roots are not public ------------------------------


def _self_signed_pem(common_name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def test_staging_is_lets_encrypts_staging_directory() -> None:
    args = cli.build_parser().parse_args(["--tls", "letsencrypt", "--acme-directory", "staging"])
    settings = Settings(domains=("t.example.test",), acme_directory=args.acme_directory)
    assert settings.acme_directory == LETS_ENCRYPT_STAGING


def test_staging_roots_are_fetched_once_from_lets_encrypt_and_bundled(tmp_path: Path) -> None:
    asked: list[str] = []
    roots = {
        url: _self_signed_pem(f"staging root {i}")
        for i, url in enumerate(tls.LETS_ENCRYPT_STAGING_ROOTS)
    }

    def fetch(url: str) -> bytes:
        asked.append(url)
        return roots[url]

    bundle = tls.trust_bundle([], LETS_ENCRYPT_STAGING, tmp_path, fetch=fetch)
    assert bundle is not None
    text = bundle.read_bytes()
    assert text.startswith(Path(certifi.where()).read_bytes().rstrip(b"\n"))
    assert all(pem in text for pem in roots.values())
    assert asked == list(tls.LETS_ENCRYPT_STAGING_ROOTS)
    # A restart reuses the kept roots: nothing is downloaded again.
    tls.trust_bundle([], LETS_ENCRYPT_STAGING, tmp_path, fetch=fetch)
    assert len(asked) == 2
    # Public roots alone need no bundle; roots given explicitly replace the download.
    assert tls.trust_bundle([], "https://acme-v02.api.letsencrypt.org/directory", tmp_path) is None
    mine = tmp_path / "mine.pem"
    mine.write_bytes(_self_signed_pem("in-house root"))
    explicit = tls.trust_bundle([mine], LETS_ENCRYPT_STAGING, tmp_path / "other", fetch=fetch)
    assert explicit is not None and mine.read_bytes() in explicit.read_bytes()
    assert len(asked) == 2


def test_extra_roots_come_from_the_flag_or_the_environment_plus_ssl_cert_file(
    tmp_path: Path,
) -> None:
    a, b, c = (tmp_path / n for n in ("a.pem", "b.pem", "c.pem"))
    env = {"ACME_TRUST_ROOTS": f"{a}{os.pathsep}{b}", "SSL_CERT_FILE": str(c)}
    assert tls.extra_root_files([], env) == [a, b, c]
    assert tls.extra_root_files([a], env) == [a, c]
    assert tls.extra_root_files([], {}) == []
    assert tls.extra_root_files([c], {"SSL_CERT_FILE": str(c)}) == [c]


def test_unusable_trust_roots_are_refused_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_pem = tmp_path / "roots.txt"
    not_pem.write_text("not a certificate")
    with pytest.raises(tls.TrustRootsError, match=r"roots\.txt holds no PEM certificate"):
        tls.trust_bundle([not_pem], "https://acme.test/dir", tmp_path)
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "cf-x")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    argv = ["--tls", "letsencrypt", "--domain", "t.example.test", "--token", "hw_t"]
    assert cli.main([*argv, "--acme-trust-roots", str(tmp_path / "missing.pem")]) == 2
    assert "cannot read the trust roots" in capsys.readouterr().err


def test_help_names_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for default in (
        "(default: 127.0.0.1)",
        "(default: 8080)",
        "(default: $XDG_STATE_HOME/hatchway/local.db)",
        "(default: 30)",
    ):
        assert default in shown
    assert "(default: None)" not in shown
