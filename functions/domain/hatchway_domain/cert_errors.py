"""The typed errors of certificate renewal: each says what went wrong, on which side, and what
the operator can do; none ever carries the Cloudflare token.

Every one of them leaves the current certificate, the saved state and ACM untouched: renewal
only publishes a certificate after all checks passed.
"""

from __future__ import annotations


class CertificateError(Exception):
    """Base of every certificate renewal failure."""


class TokenUnavailable(CertificateError):
    """The Cloudflare API token could not be read from Secrets Manager or SSM."""


class IssuanceFailed(CertificateError):
    """certbot could not obtain the certificate from the ACME server (DNS-01 failed, rate
    limit, network...). ``detail`` holds certbot's own explanation, token redacted."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(f"{message}: {detail}" if detail else message)
        self.detail = detail


class StateCorrupt(CertificateError):
    """The saved certbot state could not be restored (unreadable or unsafe archive)."""


class VerificationFailed(CertificateError):
    """The certificate certbot produced must not be published."""


class KeyMismatch(VerificationFailed):
    """The private key does not belong to the certificate."""


class UnsupportedKey(VerificationFailed):
    """The key is not of the pinned type (ACM re-import cannot change the key type)."""


class IncompleteChain(VerificationFailed):
    """The chain does not lead from the certificate to a known root."""


class NameMismatch(VerificationFailed):
    """The certificate does not cover exactly the names asked for."""


class NotCurrentlyValid(VerificationFailed):
    """The certificate is expired or not yet valid."""


class AcmImportFailed(CertificateError):
    """ACM refused the certificate (the previous one keeps serving)."""


class InvalidSettings(CertificateError, ValueError):
    """The renewal job is configured wrongly (missing or malformed setting)."""
