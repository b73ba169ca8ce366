"""Runs certbot in-process for one DNS-01 issuance through certbot-dns-cloudflare, with its
directories in a private run directory, and contains what certbot does to the process: the root
logger, ``sys.excepthook``, the environment and its directory locks.

certbot assumes it owns the process (one run, then exit). Here it runs once per renewal in a
long-lived Lambda container or gateway, so each run is serialised by a lock and everything it
changes globally is put back afterwards. The Cloudflare token only exists in a 0600 credentials
file inside the run directory, deleted when the run ends; certbot's logs are checked for it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .cert_errors import IssuanceFailed
from .secrets import ApiToken

logger = logging.getLogger(__name__)

KEY_TYPE: Final = "ecdsa"
ELLIPTIC_CURVE: Final = "secp256r1"
"""The pinned key type, as certbot spells it (see ``cert_checks.KEY_CURVE``)."""
CREDENTIALS_MODE: Final = 0o600
RUN_DIRECTORY_MODE: Final = 0o700
MAX_LOG_BACKUPS: Final = 2
"""certbot rotates its log at 1 MB: keep at most this many old ones (bounds the run dir)."""
LOG_ERROR_LINE: Final = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+:(ERROR|CRITICAL):[^:]*:(?P<message>.*)$"
)
"""An error record in certbot's log file (its format: time:level:logger:message)."""
MAX_DETAIL_CHARS: Final = 2000
"""At most this much of certbot's explanation goes into an error (it ends up in alarms and logs)."""

_CERTBOT_LOCK = threading.Lock()
"""certbot mutates process-wide state (logging, environment, display): one run at a time."""


@dataclass(frozen=True)
class CertbotRun:
    """Where one certbot run keeps its directories: all under ``root``."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def credentials(self) -> Path:
        return self.root / "cloudflare.ini"

    def live(self, cert_name: str) -> Path:
        return self.config_dir / "live" / cert_name


@dataclass(frozen=True)
class CertbotRequest:
    """Everything one issuance needs, except the token."""

    domains: Sequence[str]
    cert_name: str
    server: str
    email: str | None
    propagation_seconds: int
    cloudflare_base_url: str | None = None
    """Cloudflare API base URL (tests: a fake on loopback); the SDK reads it from the env."""
    acme_ca_bundle: str | None = None
    """CA file trusted for the ACME server's TLS (tests: pebble's listener CA)."""


def certbot_argv(request: CertbotRequest, run: CertbotRun) -> list[str]:
    argv = [
        "certonly",
        "--non-interactive",
        "--quiet",
        "--agree-tos",
        "--no-eff-email",
        "--server",
        request.server,
        "--config-dir",
        str(run.config_dir),
        "--work-dir",
        str(run.work_dir),
        "--logs-dir",
        str(run.logs_dir),
        "--authenticator",
        "dns-cloudflare",
        # certbot stores this path verbatim in the renewal configuration: it must be absolute.
        "--dns-cloudflare-credentials",
        str(run.credentials.resolve()),
        "--dns-cloudflare-propagation-seconds",
        str(request.propagation_seconds),
        "--key-type",
        KEY_TYPE,
        "--elliptic-curve",
        ELLIPTIC_CURVE,
        "--cert-name",
        request.cert_name,
        # The decision to renew is made before certbot runs (with its own window and clock), so
        # certbot must not second-guess it, and may change the names of an existing lineage.
        "--force-renewal",
        "--renew-with-new-domains",
        "--no-directory-hooks",
        "--max-log-backups",
        str(MAX_LOG_BACKUPS),
    ]
    if request.email:
        argv += ["--email", request.email]
    else:
        argv.append("--register-unsafely-without-email")
    for domain in request.domains:
        argv += ["--domain", domain]
    return argv


def run_certbot(request: CertbotRequest, token: ApiToken, run: CertbotRun) -> None:
    """Obtain (or renew) the lineage ``request.cert_name`` into ``run.config_dir``.

    Raises :class:`IssuanceFailed` with certbot's explanation; the token never appears in it.
    """
    import certbot.main  # certbot's import is heavy; only the renewal path pays for it

    run.root.mkdir(mode=RUN_DIRECTORY_MODE, parents=True, exist_ok=True)
    argv = certbot_argv(request, run)
    env = {
        "CLOUDFLARE_BASE_URL": request.cloudflare_base_url,
        "REQUESTS_CA_BUNDLE": request.acme_ca_bundle,
    }
    with _CERTBOT_LOCK, _credentials_file(run.credentials, token):
        try:
            with _contained_process_state(env):
                result = certbot.main.main(argv)
        except SystemExit as exit_:
            raise IssuanceFailed(
                f"certbot rejected its arguments (exit {exit_.code})",
                _detail(run, token),
            ) from None
        except Exception as error:  # certbot raises its own errors and its libraries' too
            message = token.redact(str(error)) or type(error).__name__
            raise IssuanceFailed(
                f"certbot could not obtain the certificate for {', '.join(request.domains)} "
                f"from {request.server} ({message})",
                _detail(run, token),
            ) from None
        finally:
            _scrub_logs(run.logs_dir, token)
    if result:
        raise IssuanceFailed(f"certbot failed: {token.redact(str(result))}", _detail(run, token))


@contextmanager
def _credentials_file(path: Path, token: ApiToken) -> Iterator[None]:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, CREDENTIALS_MODE)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(f"dns_cloudflare_api_token = {token.reveal()}\n")
        yield
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def _contained_process_state(env: Mapping[str, str | None]) -> Iterator[None]:
    """Run certbot, then put back the root logger, excepthook, env and locks as they were."""
    root = logging.getLogger()
    handlers, level, excepthook = list(root.handlers), root.level, sys.excepthook
    # certbot lowers the root logger to DEBUG for its own log file; the process's handlers keep
    # the threshold they had, or every library's debug output would reach the process's logs.
    handler_levels = {handler: handler.level for handler in handlers}
    for handler in handlers:
        handler.setLevel(max(handler.level, level))
    saved_env = {name: os.environ.get(name) for name, value in env.items() if value is not None}
    for name, value in env.items():
        if value is not None:
            os.environ[name] = value
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        for handler, handler_level in handler_levels.items():
            handler.setLevel(handler_level)
        sys.excepthook = excepthook
        for name, old in saved_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        _release_certbot_locks()


def _release_certbot_locks() -> None:
    # certbot holds its directory locks until the process exits; here the directories are
    # deleted after every run, so the locks (open files) are released now instead of leaking.
    import certbot.util

    release = getattr(certbot.util, "_release_locks", None)
    if callable(release):
        release()


def _log_files(logs_dir: Path) -> list[Path]:
    return sorted(p for p in logs_dir.glob("*") if p.is_file()) if logs_dir.is_dir() else []


def _scrub_logs(logs_dir: Path, token: ApiToken) -> None:
    """Mask the token in certbot's log files, should any library ever have logged it."""
    secret = token.reveal().encode()
    for path in _log_files(logs_dir):
        data = path.read_bytes()
        if secret in data:
            path.write_bytes(data.replace(secret, b"********"))
            logger.warning("certbot's log %s contained the Cloudflare token; masked", path.name)


def _detail(run: CertbotRun, token: ApiToken) -> str:
    """certbot's own explanation from its log: what the ACME server or the DNS plugin reported."""
    try:
        lines = (run.logs_dir / "letsencrypt.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    found: list[str] = []
    for line in lines:
        if match := LOG_ERROR_LINE.match(line):
            found.append(match["message"].strip())
        elif (stripped := line.strip()).startswith(("Detail:", "Hint:")):
            found.append(stripped.removeprefix("Detail:").strip())
    text = "; ".join(dict.fromkeys(item for item in found if item))
    return token.redact(text)[:MAX_DETAIL_CHARS]
