"""Certificates made on the spot: chains for the checks the certificate job runs, and throwaway
certificates to import into ACM under moto."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue(
    subject: str,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None = None,
    *,
    names: tuple[str, ...] = (),
    ca: bool = False,
    days: int = 90,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """A certificate for ``key``, signed by ``issuer`` (self-signed without one), valid from a
    day before ``now`` (the current time by default) for ``days`` days after it."""
    now = now or datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def self_signed(name: str) -> dict[str, bytes]:
    """A throwaway certificate and key for ``name``, as ``acm.import_certificate`` takes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    return {"Certificate": pem(issue(name, key, names=(name,), days=1)), "PrivateKey": key_pem(key)}
