"""The inspector's own small HTTP server (``hatchway.ui.loopback_http``): it keeps ``ssl`` out of
the agent, and it speaks HTTP/1.1 as a page and its scripts need: kept-alive connections,
HTTP/1.0 ones closed, ``Expect: 100-continue``, and heads past their limits refused in words."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.serving.forward import Forwarder
from hatchway.ui import loopback_http
from hatchway.ui.inspector import Inspector

READ_TIMEOUT_SECONDS = 10.0


NOT_LOADED_BY_A_RUNNING_AGENT = (
    # ``http.server`` imports ``http.client`` and with it ``ssl``: 4.2 MiB of OpenSSL in an
    # agent that speaks plain HTTP on loopback.
    "ssl",
    "_ssl",
    "http.server",
    "http.client",
    "email",
    # Only reading a config file that exists, writing one, or drawing the screen needs these;
    # ``importlib.resources`` brings ``zipfile``, ``tempfile`` and ``shutil``: 0.7 MiB.
    "tomllib",
    "tempfile",
    "shutil",
    "importlib.resources",
    "zipfile",
)


def test_an_agent_with_its_inspector_serving_loads_only_what_it_uses(tmp_path: Path) -> None:
    """Every module imported stays for the agent's whole life. A fresh interpreter, with the
    command's modules, no config file and the inspector's page served, shows what loads."""
    script = textwrap.dedent(
        f"""
        import json, socket, sys
        from pathlib import Path
        import hatchway.cli, hatchway.service
        from hatchway.config import load_config
        from hatchway.serving.forward import Forwarder, Target
        from hatchway.ui.inspector import Inspector

        assert load_config(Path({str(tmp_path / "missing.toml")!r})) == {{}}
        with Inspector(Forwarder(Target("127.0.0.1", 9)), dict) as inspector:
            port = int(inspector.start("127.0.0.1:0").rstrip("/").rsplit(":", 1)[1])
            for path in ("/", "/api/status"):
                with socket.create_connection(("127.0.0.1", port), 10) as sock:
                    sock.sendall(f"GET {{path}} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n".encode())
                    assert sock.recv(100).startswith(b"HTTP/1.1 200 OK"), path
        print(json.dumps(sorted(m for m in {NOT_LOADED_BY_A_RUNNING_AGENT!r} if m in sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == []


@pytest.fixture
def port(forwarder: Forwarder) -> Iterator[int]:
    with Inspector(forwarder, dict) as inspector:
        url = inspector.start("127.0.0.1:0")
        yield int(url.rstrip("/").rsplit(":", 1)[1])


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), READ_TIMEOUT_SECONDS) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def answers(received: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Each answer's status line, headers (lower-case names) and body, in order."""
    found = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        found.append((status, headers, rest[:length]))
        received = rest[length:]
    return found


def test_a_connection_is_kept_alive_until_the_client_says_close(port: int) -> None:
    get = b"GET /api/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    last = b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    (first, _, body), (second, headers, _) = answers(exchange(port, get + last))
    assert first == "HTTP/1.1 200 OK" and json.loads(body) == {"requests": []}
    assert second == "HTTP/1.1 200 OK" and headers["connection"] == "close"


def test_an_http_1_0_request_gets_one_answer_and_the_connection_closes(port: int) -> None:
    get = b"GET /api/requests HTTP/1.0\r\nHost: localhost\r\n\r\n"
    ((status, headers, _),) = answers(exchange(port, get * 2))
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"


def test_a_client_that_expects_100_continue_is_told_to_go_on(port: int) -> None:
    post = (
        b"POST /api/requests/7/replay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n{}"
    )
    received = exchange(port, post)
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n")


@pytest.mark.parametrize(
    ("request_head", "status", "words"),
    [
        (b"PUT /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 501, b"PUT is not served"),
        (b"GET /" + b"a" * loopback_http.MAX_REQUEST_LINE_BYTES + b" HTTP/1.1\r\n\r\n", 414, b""),
        (
            b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * (loopback_http.MAX_HEADERS + 1) + b"\r\n",
            431,
            b"more than 100 header lines",
        ),
        (b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n", 400, b""),
        (b"GET /api/status\r\n\r\n", 400, b"not METHOD TARGET HTTP/1.x"),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, b"not NAME: VALUE"),
    ],
    ids=["method", "long-line", "many-headers", "two-hosts", "not-http", "bad-header"],
)
def test_a_head_it_cannot_serve_is_refused_in_words_and_closed(
    port: int, request_head: bytes, status: int, words: bytes
) -> None:
    ((status_line, headers, body),) = answers(exchange(port, request_head))
    assert status_line.startswith(f"HTTP/1.1 {status} ")
    assert headers["connection"] == "close" and words in body
