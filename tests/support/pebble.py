"""Debian's ``pebble`` ACME server as a test fixture: its own throwaway TLS identity, a config in a
temp dir, free loopback ports, DNS-01 lookups sent to the test's DNS server, explicit readiness.

Pebble validates for real (``PEBBLE_VA_NOSLEEP`` only removes its random wait), regenerates its
issuing root at every start (fetch it with :meth:`Pebble.root_pem`), and never reaches beyond
loopback: its only upstream is the ``-dnsserver`` given here.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEBBLE_BINARY = "pebble"
"""Debian's package installs it on PATH (``apt-get install pebble``)."""

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
"""How long pebble may take to answer its directory URL after being started."""
POLL_INTERVAL = 0.05
"""Pause between readiness probes."""
PROBE_TIMEOUT = 2.0
"""Timeout of one HTTPS request to pebble (readiness probe, root download)."""
STOP_TIMEOUT = 5.0
"""How long pebble may take to exit after SIGTERM before it is killed."""
TLS_IDENTITY_DAYS = 1
"""Validity of the throwaway CA and listener certificate: they never outlive a test run."""
START_ATTEMPTS = 3
"""Starts tried, each on fresh ports, when another process took a port pebble was given."""
DEFAULT_VALIDITY = datetime.timedelta(days=90)
"""Lifetime of the certificates pebble issues: Let's Encrypt's, so renewal windows look real."""


class PortTaken(RuntimeError):
    """A port chosen for pebble was bound by someone else before pebble could bind it."""


def free_port() -> int:
    """An ephemeral loopback port nobody listens on right now (pebble needs a number up front)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def write_tls_identity(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a ``localhost``/``127.0.0.1`` certificate it signs, as PEM files.

    Debian's pebble package lacks the listener certificate of upstream's test tree. Returns the
    paths of the CA certificate (for ``REQUESTS_CA_BUNDLE``), the listener certificate and key.
    """
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(minutes=5)
    not_after = now + datetime.timedelta(days=TLS_IDENTITY_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("hatchway test pebble listener CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "listener-ca.pem"
    cert_path = directory / "listener-cert.pem"
    key_path = directory / "listener-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class Pebble:
    """A running pebble on loopback; a context manager that starts it on enter, stops it on exit.

    ``dns_server`` is where pebble sends its DNS-01 TXT lookups (the test's authoritative DNS).
    """

    def __init__(
        self,
        dns_server: tuple[str, int],
        *,
        validity: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> None:
        self.dns_server = dns_server
        self.validity = validity
        self._tmp = Path(tempfile.mkdtemp(prefix="hatchway-pebble-"))
        self.ca_bundle, cert_path, key_path = write_tls_identity(self._tmp)
        self._listener = cert_path, key_path
        self.port = self.management_port = 0
        self.directory_url = self.management_url = ""
        self.config_path = self._tmp / "pebble-config.json"
        self.log_path = self._tmp / "pebble.log"
        self._ssl = ssl.create_default_context(cafile=str(self.ca_bundle))
        self._process: subprocess.Popen[bytes] | None = None

    def _configure(self) -> None:
        """Fresh free ports and the config naming them."""
        self.port = free_port()
        self.management_port = free_port()
        self.directory_url = f"https://{HOST}:{self.port}/dir"
        self.management_url = f"https://{HOST}:{self.management_port}"
        cert_path, key_path = self._listener
        config = {
            "pebble": {
                "listenAddress": f"{HOST}:{self.port}",
                "managementListenAddress": f"{HOST}:{self.management_port}",
                "certificate": str(cert_path),
                "privateKey": str(key_path),
                # Where pebble would connect for HTTP-01/TLS-ALPN-01; only DNS-01 is used here,
                # but both must be ports nothing else answers on.
                "httpPort": free_port(),
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                "certificateValidityPeriod": int(self.validity.total_seconds()),
            }
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    def __enter__(self) -> Pebble:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start pebble and wait until it answers; retried on new ports if one was taken."""
        binary = shutil.which(PEBBLE_BINARY)
        if binary is None:
            raise RuntimeError("pebble is not installed: apt-get install -y pebble")
        for attempt in range(1, START_ATTEMPTS + 1):
            self._configure()
            self._launch(binary)
            try:
                self._wait_ready()
                return
            except PortTaken:
                self._stop_process()
                if attempt == START_ATTEMPTS:
                    raise

    def _launch(self, binary: str) -> None:
        env = {
            **os.environ,
            "PEBBLE_VA_NOSLEEP": "1",
            # Every order gets fresh authorizations, so every issuance does a real challenge.
            "PEBBLE_AUTHZREUSE": "0",
            # certbot retries a rejected nonce, but a deterministic run is easier to read.
            "PEBBLE_WFE_NONCEREJECT": "0",
        }
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "-config",
                    str(self.config_path),
                    "-dnsserver",
                    f"{self.dns_server[0]}:{self.dns_server[1]}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                if "address already in use" in self.log_text():
                    raise PortTaken(self.log_text())
                raise RuntimeError(
                    f"pebble exited with {self._process.returncode}:\n{self.log_text()}"
                )
            try:
                json.loads(self._get(self.directory_url))
                return
            except (OSError, ValueError) as error:
                last_error = error
            time.sleep(POLL_INTERVAL)
        raise RuntimeError(
            f"pebble did not answer {self.directory_url} within {START_TIMEOUT} s "
            f"({last_error!r}):\n{self.log_text()}"
        )

    def _get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT, context=self._ssl) as response:
            body: bytes = response.read()
            return body

    def root_pem(self) -> bytes:
        """The root pebble issues under in this run (regenerated at every start)."""
        return self._get(f"{self.management_url}/roots/0")

    def root_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.root_pem())

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _stop_process(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)

    def close(self) -> None:
        self._stop_process()
        shutil.rmtree(self._tmp, ignore_errors=True)
