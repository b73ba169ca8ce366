"""``hatchway-local --tls letsencrypt`` as a user starts it, against an ACME server whose roots
are not public (pebble, on loopback): the extra roots come from ``--acme-trust-roots`` or from
``ACME_TRUST_ROOTS`` and ``SSL_CERT_FILE``, the certificate is kept, and a restart serves the
same one instead of placing a new order. DNS-01 goes through the fake Cloudflare API to the
test's authoritative DNS server, which pebble asks."""

from __future__ import annotations

import http.client
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.authoritative_dns import AuthoritativeDNS
from support.fake_cloudflare import FakeCloudflare
from support.pebble import Pebble, free_port
from support.processes import BIN, Process

ZONE = "t.example.test"
ZONE_ID = "7a6b5c4d3e2f10011223344556677889"
TOKEN = f"cf-token-{uuid.uuid4().hex}"
AGENT_TOKEN = "hw_local-tls-token-5c1f"
ISSUE_TIMEOUT = 90.0
"""certbot's run (account, order, DNS-01 through the fake API, pebble's checks) before ready."""


@pytest.fixture(scope="module")
def cloudflare_api() -> Iterator[FakeCloudflare]:
    with FakeCloudflare({ZONE: ZONE_ID}, token=TOKEN) as api:
        yield api


@pytest.fixture(scope="module")
def pebble(cloudflare_api: FakeCloudflare) -> Iterator[Pebble]:
    with AuthoritativeDNS(cloudflare_api.store, [ZONE]) as dns, Pebble(dns.address) as server:
        yield server


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a name of the test zone, connected to 127.0.0.1; TLS still checks the name."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def served_certificate(port: int, trusting: ssl.SSLContext) -> tuple[int, bytes]:
    """The status of ``GET /`` on an unclaimed tunnel over verified HTTPS, and the DER of the
    certificate the gateway presented."""
    connection = PinnedHTTPSConnection(f"nobody.{ZONE}", port, context=trusting, timeout=10)
    try:
        connection.request("GET", "/")
        answer = connection.getresponse()
        answer.read()
        assert answer.getheader("x-hatchway-error") == "tunnel-not-found"
        der = connection.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert der is not None
        return answer.status, der
    finally:
        connection.close()


def start_gateway(env: dict[str, str], port: int, pebble: Pebble, *extra: str) -> Process:
    process = Process(
        [
            str(BIN / "hatchway-local"),
            "--domain",
            ZONE,
            "--port",
            str(port),
            "--token",
            AGENT_TOKEN,
            "--tls",
            "letsencrypt",
            "--acme-directory",
            pebble.directory_url,
            "--dns-propagation-seconds",
            "0",
            *extra,
        ],
        env,
    )
    try:
        process.wait_for(r"^hatchway-local ready", timeout=ISSUE_TIMEOUT)
    except BaseException:
        process.kill()
        raise
    return process


def test_private_acme_roots_from_the_flag_or_the_environment_are_trusted_and_kept(
    pebble: Pebble, cloudflare_api: FakeCloudflare, tmp_path: Path
) -> None:
    root = tmp_path / "pebble-root.pem"
    root.write_bytes(pebble.root_pem())
    env = {
        "CLOUDFLARE_API_TOKEN": TOKEN,
        "CLOUDFLARE_BASE_URL": cloudflare_api.base_url,
        "HATCHWAY_CONFIG": str(tmp_path / "agent.toml"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "SSL_CERT_FILE": "",
        "ACME_TRUST_ROOTS": "",
        "REQUESTS_CA_BUNDLE": "",
    }
    trusting = ssl.create_default_context(cadata=pebble.root_pem().decode())
    port = free_port()

    # 1. The flag, twice: pebble's HTTPS listener CA and its issuing root.
    first = start_gateway(
        env,
        port,
        pebble,
        "--acme-trust-roots",
        str(pebble.ca_bundle),
        "--acme-trust-roots",
        str(root),
    )
    try:
        status, issued = served_certificate(port, trusting)
        assert status == 404
    finally:
        assert first.stop() == 0
    output = "\n".join(first.drain())
    assert "neither in the chain nor a known root" not in output
    assert TOKEN not in output

    # 2. The environment, as for the scheduled job and any private CA: a restart finds the kept
    #    certificate valid against the same roots and serves it without a new order.
    env |= {"ACME_TRUST_ROOTS": str(pebble.ca_bundle), "SSL_CERT_FILE": str(root)}
    second = start_gateway(env, port, pebble)
    try:
        status, again = served_certificate(port, trusting)
        assert status == 404
        assert again == issued
    finally:
        assert second.stop() == 0
    assert TOKEN not in "\n".join(second.drain())
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
