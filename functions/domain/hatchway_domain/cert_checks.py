"""Checks a certificate bundle before anyone may serve it: the key is the certificate's, of the
pinned type, the chain leads to a known root, the names are exactly the ones asked for, and it
is valid now. Pure functions over PEM bytes.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.utils import CryptographyDeprecationWarning

from .cert_errors import (
    IncompleteChain,
    KeyMismatch,
    NameMismatch,
    NotCurrentlyValid,
    UnsupportedKey,
)

KEY_CURVE: Final = ec.SECP256R1
"""The pinned key type (ECDSA P-256): ACM re-import keeps the ARN only for the same key type."""
CLOCK_SKEW: Final = datetime.timedelta(minutes=5)
"""A certificate dated this far ahead of the local clock still counts as valid now (CAs that do
not backdate issue with ``notBefore`` = their own now)."""


@dataclass(frozen=True)
class ParsedCertificate:
    """What renewal decisions need from a leaf certificate."""

    names: frozenset[str]
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str
    """SHA-256 of the leaf's DER, hex: identifies exactly which certificate was imported."""


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check, split the way ACM wants it."""

    certificate_pem: bytes
    chain_pem: bytes
    fullchain_pem: bytes
    privkey_pem: bytes
    leaf: ParsedCertificate


def normalise_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def parse_leaf(certificate: x509.Certificate) -> ParsedCertificate:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = frozenset(normalise_name(n) for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = frozenset()
    return ParsedCertificate(
        names=names,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint=hashlib.sha256(
            certificate.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
    )


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise IncompleteChain(f"the certificate file does not parse as PEM: {error}") from None


def load_roots(path: str | Path) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (a CA file such as certifi's)."""
    with warnings.catch_warnings():
        # Public CA bundles carry a few legacy roots cryptography warns about (negative serial
        # numbers); they are only ever compared against, never served.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return load_certificates(Path(path).read_bytes())


def verify_bundle(
    fullchain_pem: bytes,
    privkey_pem: bytes,
    *,
    names: Iterable[str],
    roots: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> VerifiedBundle:
    """The bundle split for import, or a :class:`VerificationFailed` saying what is wrong."""
    certificates = load_certificates(fullchain_pem)
    leaf, chain = certificates[0], certificates[1:]
    check_key(leaf, privkey_pem)
    check_chain(leaf, chain, roots)
    parsed = parse_leaf(leaf)
    check_names(parsed, names)
    if not parsed.not_before - CLOCK_SKEW <= now < parsed.not_after:
        raise NotCurrentlyValid(
            f"the certificate is valid from {parsed.not_before:%Y-%m-%d %H:%M} to "
            f"{parsed.not_after:%Y-%m-%d %H:%M} UTC, not now ({now:%Y-%m-%d %H:%M})"
        )
    pem = serialization.Encoding.PEM
    return VerifiedBundle(
        certificate_pem=leaf.public_bytes(pem),
        chain_pem=b"".join(c.public_bytes(pem) for c in chain),
        fullchain_pem=b"".join(c.public_bytes(pem) for c in certificates),
        privkey_pem=privkey_pem,
        leaf=parsed,
    )


def check_key(leaf: x509.Certificate, privkey_pem: bytes) -> None:
    try:
        key = serialization.load_pem_private_key(privkey_pem, password=None)
    except (ValueError, TypeError):
        # The parser's message could quote key material: keep only the fact.
        raise KeyMismatch("the private key file does not parse as an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, KEY_CURVE):
        raise UnsupportedKey(f"the private key is not ECDSA {KEY_CURVE.name}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        subject = leaf.subject.rfc4514_string()
        raise KeyMismatch(f"the private key does not belong to the certificate for {subject}")


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_chain(
    leaf: x509.Certificate, chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> None:
    """Each certificate is signed by the next; the last is self-signed or signed by a root."""
    if not chain:
        raise IncompleteChain("the certificate comes without its intermediate chain")
    path = [leaf, *chain]
    for child, issuer in itertools.pairwise(path):
        if not _issued_by(child, issuer):
            raise IncompleteChain(
                f"{child.subject.rfc4514_string()} is not signed by the next certificate in the "
                f"chain ({issuer.subject.rfc4514_string()})"
            )
    last = path[-1]
    if last.issuer == last.subject and _issued_by(last, last):
        return
    if any(_issued_by(last, root) for root in roots if root.subject == last.issuer):
        return
    raise IncompleteChain(
        f"the chain ends at {last.subject.rfc4514_string()}, issued by "
        f"{last.issuer.rfc4514_string()}, which is neither in the chain nor a known root"
    )


def check_names(parsed: ParsedCertificate, names: Iterable[str]) -> None:
    wanted = frozenset(normalise_name(n) for n in names)
    if parsed.names != wanted:
        missing = ", ".join(sorted(wanted - parsed.names)) or "none"
        extra = ", ".join(sorted(parsed.names - wanted)) or "none"
        raise NameMismatch(
            f"the certificate's names differ from the ones asked for (missing: {missing}; "
            f"unexpected: {extra})"
        )
