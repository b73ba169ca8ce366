"""What ``hatchway http`` prints, as a user sees it: plain lines when stdout is a pipe, JSON events
with ``--log-format json``, and the status screen when stdout is a terminal (a real
pseudo-terminal, read back byte by byte). Also the actionable errors and the inspector's address.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from hatchway.serving.session import STOP_GRACE_SECONDS
from hatchway.ui.display import CLEAR_BELOW, HOME
from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import BIN, Process
from support.visitor import visit

pytestmark = pytest.mark.e2e

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers
SCREEN_COLUMNS, SCREEN_LINES = 120, 40
READ_CHUNK = 65536
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def relay(make_relay: Callable[..., LocalServer]) -> LocalServer:
    return make_relay()


@pytest.fixture
def hatchway_env(tmp_path: Path) -> dict[str, str]:
    """The agent's own settings only: no config file of the developer's, no inherited tokens."""
    return {
        "HATCHWAY_CONFIG": str(tmp_path / "config.toml"),
        "HATCHWAY_TOKEN": "",
        "HATCHWAY_SERVER": "",
        "HATCHWAY_INSPECT": "",
    }


def hatchway(started: list[Process], env: dict[str, str], *argv: str) -> Process:
    process = Process([str(BIN / "hatchway"), *argv], env)
    started.append(process)
    return process


def http_args(relay: LocalServer, target: object, *extra: str) -> list[str]:
    return ["http", str(target), "--server", relay.agent_url, "--token", TOKEN, *extra]


memory_only = pytest.mark.parametrize("store_mode", ["memory"])


# --- Plain lines ------------------------------------------------------------------------------


@memory_only
def test_plain_lines_show_urls_requests_and_the_local_app_down(
    relay: LocalServer,
    app: LocalApp,
    unused_port: int,
    hatchway_env: dict[str, str],
    started: list[Process],
    store_mode: str,
) -> None:
    agent = hatchway(
        started, hatchway_env, *http_args(relay, unused_port, "--subdomain", "down", "--no-inspect")
    )
    agent.wait_for(
        rf"^Forwarding  http://down\.localhost:{relay.port}/ -> http://127\.0\.0\.1:{unused_port}$"
    )
    assert visit(relay.port, "GET", "/x?y=1", f"down.localhost:{relay.port}").status == 502
    line = agent.wait_for(r"^GET /x\?y=1 502 \d+ ms  \(local app down: (.*)\)$")
    assert f"http://127.0.0.1:{unused_port}" in line.group(1)  # the URL it tried
    assert "is the app running?" in line.group(1)
    assert agent.stop() == 0


@memory_only
def test_an_unreachable_relay_is_retried_with_the_backoff_shown(
    unused_port: int, hatchway_env: dict[str, str], started: list[Process], store_mode: str
) -> None:
    agent = hatchway(
        started,
        hatchway_env,
        "http",
        "3000",
        "--server",
        f"ws://127.0.0.1:{unused_port}/connect",
        "--token",
        TOKEN,
        "--no-inspect",
    )
    first = agent.wait_for(r"^hatchway: relay unreachable \((.*)\); retry 1 in (\d+\.\d) s$")
    assert f"127.0.0.1:{unused_port}" in first.group(1)
    agent.wait_for(r"retry 2 in \d+\.\d s")  # still trying, backing off
    assert agent.stop() == 0  # Ctrl-C while retrying ends cleanly


@memory_only
@pytest.mark.parametrize(
    ("token", "env", "says", "code"),
    [
        ("hw_unknown-token", {}, "hatchway config add-token", 1),
        (None, {}, "no token. Save one with `hatchway config add-token TOKEN`", 2),
    ],
)
def test_token_errors_say_how_to_get_one(
    relay: LocalServer,
    hatchway_env: dict[str, str],
    started: list[Process],
    token: str | None,
    env: dict[str, str],
    says: str,
    code: int,
    store_mode: str,
) -> None:
    argv = ["http", "3000", "--server", relay.agent_url, "--no-inspect"]
    agent = hatchway(
        started, {**hatchway_env, **env}, *argv, *(["--token", token] if token else [])
    )
    assert agent.popen.wait(15) == code
    assert says in "\n".join(agent.drain())


@memory_only
def test_the_inspector_says_where_it_is_when_its_port_was_taken(
    relay: LocalServer,
    app: LocalApp,
    hatchway_env: dict[str, str],
    started: list[Process],
    store_mode: str,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = hatchway(
            started,
            hatchway_env,
            *http_args(relay, app.port, "--subdomain", "insp", "--inspect", f"127.0.0.1:{port}"),
        )
        moved = agent.wait_for(
            rf"^Inspector   (http://127\.0\.0\.1:(\d+)/) \(127\.0\.0\.1:{port} was taken\)$"
        )
        agent.wait_for(r"Forwarding")
    assert int(moved.group(2)) != port
    assert visit(relay.port, "GET", "/echo", f"insp.localhost:{relay.port}").status == 200
    agent.wait_for(r"^GET /echo 200")
    with urllib.request.urlopen(moved.group(1) + "api/status", timeout=10) as answer:
        session = json.load(answer)["session"]
    assert session["inspector"] == moved.group(1)
    assert session["connections"] == {"open": 0, "total": 1}
    assert session["public_urls"][0] == f"http://insp.localhost:{relay.port}/"
    assert agent.stop() == 0


# --- JSON events ------------------------------------------------------------------------------


@memory_only
def test_json_log_is_one_event_per_line(
    relay: LocalServer,
    app: LocalApp,
    hatchway_env: dict[str, str],
    started: list[Process],
    store_mode: str,
) -> None:
    agent = hatchway(
        started,
        hatchway_env,
        *http_args(relay, app.port, "--subdomain", "js", "--no-inspect", "--log-format", "json"),
    )
    agent.wait_for(r'"event": "ready"')
    assert (
        visit(relay.port, "POST", "/echo/j", f"js.localhost:{relay.port}", body=b"hi").status == 200
    )
    agent.wait_for(r'"event": "request"')
    assert agent.stop() == 0
    agent.wait_for(r'"event": "closed"')
    events = [json.loads(line) for line in agent.drain() if line.startswith("{")]
    kinds = [event["event"] for event in events]
    assert kinds == ["start", "ready", "request", "stopping", "closed"]
    start, ready, request, stopping, _ = events
    assert (stopping["requests"], stopping["grace_seconds"]) == (0, STOP_GRACE_SECONDS)
    assert start["relay"] == relay.agent_url and start["inspector"] is None
    assert ready["tunnels"][0]["url"] == f"http://js.localhost:{relay.port}/"
    assert {k: request[k] for k in ("tunnel", "method", "target", "status", "fault")} == {
        "tunnel": "js",
        "method": "POST",
        "target": "/echo/j",
        "status": 200,
        "fault": None,
    }
    assert TOKEN not in "\n".join(agent.output)


# --- The status screen on a terminal ----------------------------------------------------------


class Terminal:
    """The master side of a pseudo-terminal: everything the agent drew, read as it arrives."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.raw = b""

    def read_until(self, done: Callable[[str], bool], timeout: float = 15.0) -> str:
        """Read until ``done(latest screen)``; fail with what was drawn on timeout."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if done(self.screen()):
                return self.screen()
            readable, _, _ = select.select([self.fd], [], [], remaining)
            if not readable:
                break
            try:
                chunk = os.read(self.fd, READ_CHUNK)
            except OSError:  # EIO: the agent closed the terminal
                break
            if not chunk:
                break
            self.raw += chunk
        if done(self.screen()):
            return self.screen()
        raise AssertionError(f"the screen never showed what was expected:\n{self.screen()}")

    def screen(self) -> str:
        """The last complete frame (cursor-home ... clear-below), colour codes removed; a frame
        still arriving is not looked at."""
        text = self.raw.decode("utf-8", "replace")
        end = text.rfind(CLEAR_BELOW)
        start = text.rfind(HOME, 0, max(end, 0))
        if start < 0:
            return ""
        return ANSI.sub("", text[start + len(HOME) : end]).replace("\r", "")


@memory_only
def test_the_status_screen_on_a_terminal(
    relay: LocalServer, app: LocalApp, hatchway_env: dict[str, str], store_mode: str
) -> None:
    master, slave = pty.openpty()
    argv = http_args(relay, app.port, "--subdomain", "tty", "--inspect", "127.0.0.1:0")
    agent = subprocess.Popen(
        [str(BIN / "hatchway"), *argv],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            **hatchway_env,
            "COLUMNS": str(SCREEN_COLUMNS),
            "LINES": str(SCREEN_LINES),
            "TERM": "xterm",
        },
    )
    os.close(slave)
    terminal = Terminal(master)
    try:
        shown = terminal.read_until(lambda s: f"http://tty.localhost:{relay.port}/" in s)
        assert re.search(r"Session Status\s+online", shown)
        assert re.search(rf"Relay\s+{re.escape(relay.agent_url)}", shown)
        assert f"http://127.0.0.1:{relay.port}/t/tty/ -> http://127.0.0.1:{app.port}" in shown
        assert re.search(r"Web Interface\s+http://127\.0\.0\.1:\d+/", shown)
        assert re.search(r"Connections\s+total\s+open\s*\n\s+0\s+0", shown)

        for i in range(3):
            assert (
                visit(relay.port, "GET", f"/echo/{i}", f"tty.localhost:{relay.port}").status == 200
            )
        shown = terminal.read_until(
            lambda s: "/echo/2" in s and re.search(r"\n\s+3\s+0", s) is not None
        )
        assert re.search(r"Latency \(last minute\)\s+p50\s+p90\s*\n\s+\d+ ms\s+\d+ ms", shown)
        log = [line for line in shown.splitlines() if "GET" in line]
        assert "/echo/2" in log[0] and "200 OK" in log[0]  # newest first

        assert b"\x1b[?1049h" in terminal.raw  # drawn on the alternate screen...
        agent.send_signal(signal.SIGINT)
        assert agent.wait(10) == 0
        terminal.read_until(lambda s: b"\x1b[?1049l" in terminal.raw)  # ...and left on exit
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
        os.close(master)
