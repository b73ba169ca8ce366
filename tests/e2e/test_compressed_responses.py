"""What a browser gets through the tunnel: compressible responses gzip-encoded when it accepts
gzip (less traffic out of AWS to pay for), the app's bytes otherwise, in both store modes."""

from __future__ import annotations

import gzip
from collections.abc import Callable

import pytest

from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e

TEXT = b"x" * 20_000


def fetch(relay: LocalServer, name: str, *headers: tuple[str, str]) -> Answer:
    return visit(relay.port, "GET", "/repeat?n=20000", f"{name}.localhost:{relay.port}", headers)


def header(answer: Answer, name: str) -> str | None:
    return next((v for k, v in answer.headers if k.lower() == name), None)


def test_a_visitor_accepting_gzip_gets_the_body_gzipped(
    relay: LocalServer, tunnel: AgentProcess
) -> None:
    answer = fetch(relay, "e2e", ("Accept-Encoding", "gzip, deflate, br"))
    assert answer.status == 200
    assert header(answer, "content-encoding") == "gzip"
    assert header(answer, "vary") == "Accept-Encoding"
    assert len(answer.body) < len(TEXT) // 50
    assert header(answer, "content-length") == str(len(answer.body))
    assert gzip.decompress(answer.body) == TEXT


def test_a_visitor_not_accepting_gzip_gets_the_apps_bytes(
    relay: LocalServer, tunnel: AgentProcess
) -> None:
    answer = fetch(relay, "e2e")
    assert (answer.status, answer.body) == (200, TEXT)
    assert header(answer, "content-encoding") is None
    assert header(answer, "vary") == "Accept-Encoding"


def test_a_tunnel_started_with_no_gzip_passes_the_apps_bytes_to_everyone(
    relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(app.port), "raw", extra=["--no-gzip"])
    answer = fetch(relay, "raw", ("Accept-Encoding", "gzip"))
    assert (answer.status, answer.body) == (200, TEXT)
    assert header(answer, "content-encoding") is None and header(answer, "vary") is None
