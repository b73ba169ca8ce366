"""TLS for the self-hosted gateway (``hatchway-local --tls letsencrypt``): a certificate for
``*.<domain>`` and ``<domain>``, obtained and renewed by certbot with Cloudflare DNS-01 through
the very code the scheduled Lambda job runs, its state kept in a local directory, and served
from one ``ssl.SSLContext`` that takes the renewed certificate in place, without a restart.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Sequence
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
