"""What may be published: a bundle passes only when its key is the certificate's and of the pinned
type, its chain leads to a known root, its names are exactly the wanted ones and it is valid now.
Also when a certificate is due for renewal. Certificates here are made on the spot."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hatchway_domain.cert_checks import parse_leaf, verify_bundle
from hatchway_domain.cert_errors import (
    IncompleteChain,
    KeyMismatch,
    NameMismatch,
    NotCurrentlyValid,
    UnsupportedKey,
)
from hatchway_domain.certificates import RENEW_WITHIN, renewal_decision
from support.certificates import issue, key_pem, pem

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
NAMES = ("*.t.example.test", "t.example.test")


@dataclass
class Pki:
    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @property
    def fullchain(self) -> bytes:
        return pem(self.leaf) + pem(self.intermediate)


def make_pki(names: tuple[str, ...] = NAMES, days: int = 90) -> Pki:
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = issue("Test Root", root_key, ca=True, days=3650, now=NOW)
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = issue("Test Intermediate", intermediate_key, (root, root_key), ca=True, now=NOW)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue(
        names[0], leaf_key, (intermediate, intermediate_key), names=names, days=days, now=NOW
    )
    return Pki(root, intermediate, leaf, leaf_key)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def test_a_complete_bundle_is_split_for_acm(pki: Pki) -> None:
    bundle = verify_bundle(
        pki.fullchain, key_pem(pki.leaf_key), names=NAMES, roots=[pki.root], now=NOW
    )

    assert bundle.certificate_pem == pem(pki.leaf)
    assert bundle.chain_pem == pem(pki.intermediate)
    assert bundle.leaf.names == frozenset(NAMES)
    assert bundle.leaf.not_after == pki.leaf.not_valid_after_utc


def test_a_chain_that_carries_its_own_root_needs_no_known_roots(pki: Pki) -> None:
    fullchain = pki.fullchain + pem(pki.root)

    bundle = verify_bundle(fullchain, key_pem(pki.leaf_key), names=NAMES, roots=[], now=NOW)

    assert bundle.chain_pem == pem(pki.intermediate) + pem(pki.root)


def test_names_compare_without_case_or_trailing_dot(pki: Pki) -> None:
    names = ("*.T.Example.Test.", "t.example.test")

    verify_bundle(pki.fullchain, key_pem(pki.leaf_key), names=names, roots=[pki.root], now=NOW)


Case = tuple[bytes, bytes, tuple[str, ...], list[x509.Certificate]]
"""fullchain, key, wanted names, known roots"""


def new_key(curve: ec.EllipticCurve | None = None) -> bytes:
    return key_pem(ec.generate_private_key(curve or ec.SECP256R1()))


OTHER = make_pki()
"""A second, unrelated PKI."""
IMPOSTOR_ROOT = issue("Test Root", ec.generate_private_key(ec.SECP384R1()), ca=True, now=NOW)

REFUSALS: list[tuple[str, Callable[[Pki], Case], type[Exception]]] = [
    ("another-key", lambda p: (p.fullchain, new_key(), NAMES, [p.root]), KeyMismatch),
    ("garbage-key", lambda p: (p.fullchain, b"not a key", NAMES, [p.root]), KeyMismatch),
    (
        "rsa-key",
        lambda p: (p.fullchain, key_pem(rsa.generate_private_key(65537, 2048)), NAMES, [p.root]),
        UnsupportedKey,
    ),
    ("p384-key", lambda p: (p.fullchain, new_key(ec.SECP384R1()), NAMES, [p.root]), UnsupportedKey),
    ("no-chain", lambda p: (pem(p.leaf), key_pem(p.leaf_key), NAMES, [p.root]), IncompleteChain),
    (
        "wrong-intermediate",
        lambda p: (
            pem(p.leaf) + pem(OTHER.intermediate),
            key_pem(p.leaf_key),
            NAMES,
            [p.root, OTHER.root],
        ),
        IncompleteChain,
    ),
    (
        "unknown-root",
        lambda p: (p.fullchain, key_pem(p.leaf_key), NAMES, [OTHER.root]),
        IncompleteChain,
    ),
    (
        "root-with-same-name-other-key",
        lambda p: (p.fullchain, key_pem(p.leaf_key), NAMES, [IMPOSTOR_ROOT]),
        IncompleteChain,
    ),
    (
        "missing-name",
        lambda p: (p.fullchain, key_pem(p.leaf_key), (*NAMES, "connect.t.example.test"), [p.root]),
        NameMismatch,
    ),
    (
        "extra-name",
        lambda p: (p.fullchain, key_pem(p.leaf_key), NAMES[:1], [p.root]),
        NameMismatch,
    ),
]


@pytest.mark.parametrize(("case", "error"), [pytest.param(c, e, id=i) for i, c, e in REFUSALS])
def test_a_bundle_is_refused(pki: Pki, case: Callable[[Pki], Case], error: type[Exception]) -> None:
    fullchain, key, names, roots = case(pki)

    with pytest.raises(error):
        verify_bundle(fullchain, key, names=names, roots=roots, now=NOW)


@pytest.mark.parametrize(
    "now",
    [NOW - datetime.timedelta(days=2), NOW + datetime.timedelta(days=91)],
    ids=["not-yet-valid", "expired"],
)
def test_a_certificate_outside_its_validity_is_refused(pki: Pki, now: datetime.datetime) -> None:
    with pytest.raises(NotCurrentlyValid):
        verify_bundle(pki.fullchain, key_pem(pki.leaf_key), names=NAMES, roots=[pki.root], now=now)


def test_the_renewal_window_is_30_days() -> None:
    assert datetime.timedelta(days=30) == RENEW_WITHIN


@pytest.mark.parametrize(
    ("days_left", "due"),
    [(90, False), (31, False), (30, True), (1, True), (-3, True)],
)
def test_renewal_is_due_within_30_days_of_expiry(days_left: int, due: bool) -> None:
    current = parse_leaf(make_pki().leaf)
    now = current.not_after - datetime.timedelta(days=days_left)

    decision = renewal_decision(current, NAMES, now)

    assert decision.due is due


def test_renewal_is_due_at_once_without_a_certificate_or_when_the_names_changed() -> None:
    current = parse_leaf(make_pki().leaf)

    assert renewal_decision(None, NAMES, NOW).reason == "no certificate yet"
    changed = renewal_decision(current, ("t.example.test", "connect.t.example.test"), NOW)
    assert changed.due and "connect.t.example.test" in changed.reason
