"""TLS for the self-hosted gateway (``hatchway-local --tls letsencrypt``): a certificate for
``*.<domain>`` and ``<domain>``, obtained and renewed by certbot with Cloudflare DNS-01 through
the very code the scheduled Lambda job runs, its state kept in a local directory, and served
from one ``ssl.SSLContext`` that takes the renewed certificate in place, without a restart.

An ACME server whose roots are not public (Let's Encrypt's staging directory, an in-house CA)
needs its roots trusted twice: by certbot for the server's own HTTPS, and by the chain check
that keeps a certificate no client would trust from being served. ``trust_bundle`` writes one
file with both: the public roots plus the extra ones.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

    from hatchway_domain.certificates import CertificateFiles, Settings
    from hatchway_domain.secrets import ApiToken

log = logging.getLogger("hatchway.local.tls")

RENEW_CHECK_SECONDS = 12 * 3600
"""How often the gateway asks whether its certificate is due (renewal starts 30 days out)."""

STOP_TIMEOUT_SECONDS = 10.0
"""How long closing waits for the renewal thread."""

TRUST_ROOTS_ENV = "ACME_TRUST_ROOTS"
"""Extra roots, as the scheduled job reads them too: PEM files, separated by ``os.pathsep``."""

LETS_ENCRYPT_STAGING_ROOTS = (
    "https://letsencrypt.org/certs/staging/letsencrypt-stg-root-x1.pem",
    "https://letsencrypt.org/certs/staging/letsencrypt-stg-root-x2.pem",
)
"""Where Let's Encrypt publishes its staging roots ("(STAGING) Pretend Pear X1" and "Bogus
Broccoli X2"), which no trust store holds: fetched over verified HTTPS when the staging
directory is asked for without roots of its own, and kept beside certbot's state."""

STAGING_ROOTS_FILE = "letsencrypt-staging-roots.pem"
TRUST_BUNDLE_FILE = "acme-trust-roots.pem"

FETCH_TIMEOUT_SECONDS = 15.0
"""How long one download of a staging root may take."""

Fetch = Callable[[str], bytes]


class TrustRootsError(ValueError):
    """Extra trust roots cannot be used; the message names the file and what is wrong."""


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as answer:
        return bytes(answer.read())


def extra_root_files(given: Sequence[Path], environ: Mapping[str, str]) -> list[Path]:
    """The extra roots asked for: ``--acme-trust-roots`` files, else ``$ACME_TRUST_ROOTS``,
    plus ``$SSL_CERT_FILE`` (the private CA an agent on this machine already trusts)."""
    files = list(given)
    if not files:
        files = [Path(p) for p in environ.get(TRUST_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    ssl_cert_file = environ.get("SSL_CERT_FILE", "").strip()
    if ssl_cert_file and Path(ssl_cert_file) not in files:
        files.append(Path(ssl_cert_file))
    return files


def _pem_certificates(data: bytes, where: str) -> bytes:
    from hatchway_domain.cert_checks import load_certificates
    from hatchway_domain.cert_errors import CertificateError

    try:
        found = load_certificates(data)
    except CertificateError:
        found = []
    if not found:
        raise TrustRootsError(f"{where} holds no PEM certificate")
    return data if data.endswith(b"\n") else data + b"\n"


def staging_roots(state_dir: Path, fetch: Fetch = _download) -> bytes:
    """Let's Encrypt's staging roots, downloaded once and kept in ``state_dir``."""
    kept = state_dir / STAGING_ROOTS_FILE
    if kept.exists():
        return kept.read_bytes()
    pem = b"".join(_pem_certificates(fetch(url), url) for url in LETS_ENCRYPT_STAGING_ROOTS)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    kept.write_bytes(pem)
    return pem


def trust_bundle(
    extra: Sequence[Path],
    acme_directory: str,
    state_dir: Path,
    *,
    fetch: Fetch = _download,
) -> Path | None:
    """One PEM file holding the public roots and the extra ones (plus Let's Encrypt's staging
    roots for its staging directory), for certbot's HTTPS and for the chain check; None when
    nothing beyond the public roots is needed."""
    from hatchway_domain.certificates import LETS_ENCRYPT_STAGING

    parts: list[bytes] = []
    for path in extra:
        try:
            parts.append(_pem_certificates(path.read_bytes(), str(path)))
        except OSError as exc:
            raise TrustRootsError(f"cannot read the trust roots {path}: {exc.strerror}") from None
    if acme_directory == LETS_ENCRYPT_STAGING and not extra:
        parts.append(staging_roots(state_dir, fetch))
    if not parts:
        return None
    import certifi

    bundle = state_dir / TRUST_BUNDLE_FILE
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    bundle.write_bytes(Path(certifi.where()).read_bytes().rstrip(b"\n") + b"\n" + b"".join(parts))
    return bundle


class ManagedCertificate:
    """The gateway's certificate: ``refresh()`` obtains or renews it and loads it into
    ``context``; ``start_renewals()`` keeps doing that in the background."""

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        token: ApiToken,
        *,
        roots: Sequence[x509.Certificate] | None = None,
    ) -> None:
        from hatchway_domain.cert_state import DirectoryStateStore

        self.settings = settings
        self.state_dir = state_dir
        self.token = token
        self.roots = roots
        self.state = DirectoryStateStore(state_dir / "certbot")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> CertificateFiles:
        """Obtain or renew (when due) and serve the result to every new connection."""
        from hatchway_domain.certificates import obtain_or_renew

        files = obtain_or_renew(self.settings, self.state, self.token, roots=self.roots)
        self._load(files.fullchain_pem, files.privkey_pem)
        log.info("serving the certificate valid until %s (%s)", files.not_after, files.reason)
        return files

    def _load(self, fullchain: bytes, privkey: bytes) -> None:
        # ssl reads certificates from files only: a private directory, removed at once.
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.TemporaryDirectory(dir=self.state_dir) as private:
            chain_path, key_path = Path(private) / "fullchain.pem", Path(private) / "privkey.pem"
            for path, data in ((chain_path, fullchain), (key_path, privkey)):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    out.write(data)
            self.context.load_cert_chain(chain_path, key_path)

    def start_renewals(self) -> None:
        def renew() -> None:
            while not self._stop.wait(RENEW_CHECK_SECONDS):
                try:
                    self.refresh()
                except Exception:  # keep serving the current certificate; try again later
                    log.exception("certificate renewal failed; the current one stays in use")

        self._thread = threading.Thread(target=renew, name="hatchway-tls-renewal", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)
