"""The documented commands as a user types them: ``hatchway-local``, ``hatchway http`` and
``make demo``'s script, each a real process on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import BIN, AgentProcess, Process
from support.visitor import visit

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers


def start_relay(started: list[Process], port: int, env: dict[str, str], *args: str) -> Process:
    relay = Process([str(BIN / "hatchway-local"), "--port", str(port), *args], env)
    started.append(relay)
    relay.wait_for(r"^hatchway-local ready")
    return relay


def test_quickstart_needs_no_token_flags(
    app: LocalApp, agent_config: dict[str, str], unused_port: int, started: list[Process]
) -> None:
    relay = start_relay(started, unused_port, agent_config)
    printed = "\n".join(relay.output)
    saved = Path(agent_config["HATCHWAY_CONFIG"]).read_text()
    token = saved.split('token = "')[1].split('"')[0]
    assert token in printed  # shown once, so it can be used elsewhere
    assert f"ws://127.0.0.1:{unused_port}/connect" in printed

    agent = Process(
        [
            str(BIN / "hatchway"),
            "http",
            str(app.port),
            "--server",
            f"ws://127.0.0.1:{unused_port}/connect",
        ],
        agent_config,
    )
    started.append(agent)
    url = agent.wait_for(rf"http://(\S+)\.localhost:{unused_port}/").group(1)
    answer = visit(unused_port, "GET", "/echo/hi", f"{url}.localhost:{unused_port}")
    assert answer.status == 200 and app.requests[-1].target == "/echo/hi"
    agent.wait_for(r"GET /echo/hi 200 \d+")  # one log line per forwarded request
    assert token not in "\n".join(agent.drain())
    assert agent.stop() == 0  # Ctrl-C closes the tunnel cleanly

    # A second start reuses the saved token instead of printing a new one.
    relay.popen.send_signal(signal.SIGTERM)
    assert relay.popen.wait(10) == 0
    again = start_relay(started, unused_port, agent_config)
    assert token not in "\n".join(again.output)
    assert Path(agent_config["HATCHWAY_CONFIG"]).read_text() == saved


def test_the_agent_says_at_once_when_nothing_listens_on_its_target(
    relay: LocalServer, agent_config: dict[str, str], unused_port: int, started: list[Process]
) -> None:
    agent = AgentProcess(str(unused_port), relay.agent_url, TOKEN, "e2e", env=agent_config)
    started.append(agent)
    agent.start()  # the tunnel still starts: the app may come up later
    seen = "\n".join(agent.output)
    if f"nothing answers at http://127.0.0.1:{unused_port} yet" not in seen:
        agent.wait_for(rf"nothing answers at http://127\.0\.0\.1:{unused_port} yet")


def test_refused_token_exits_nonzero_with_a_clear_message(
    relay: LocalServer, app: LocalApp, agent_config: dict[str, str]
) -> None:
    agent = AgentProcess(str(app.port), relay.agent_url, "hw_not-a-real-token", env=agent_config)
    assert agent.popen.wait(15) != 0
    assert "token" in "\n".join(agent.drain()).lower()


def test_name_held_by_another_token_exits_nonzero(
    make_relay: Callable[..., LocalServer],
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
    agent_config: dict[str, str],
) -> None:
    relay = make_relay(tokens=("hw_e2e-token-0123456789", "hw_second-token-987654"))
    start_agent(relay, str(app.port), subdomain="taken")
    rival = AgentProcess(
        str(app.port), relay.agent_url, "hw_second-token-987654", "taken", env=agent_config
    )
    assert rival.popen.wait(15) != 0
    assert "taken" in "\n".join(rival.drain())


def test_local_gateway_on_dynamodb_serves_a_tunnel(
    moto_endpoint: str,
    app: LocalApp,
    agent_config: dict[str, str],
    unused_port: int,
    started: list[Process],
) -> None:
    start_relay(
        started,
        unused_port,
        agent_config,
        "--token",
        "hw_dynamo-token-1234",
        "--store",
        "dynamodb",
        "--dynamodb-endpoint",
        moto_endpoint,
    )
    agent = AgentProcess(
        str(app.port),
        f"ws://127.0.0.1:{unused_port}/connect",
        "hw_dynamo-token-1234",
        "dyn",
        env=agent_config,
    )
    started.append(agent)
    agent.start()
    assert visit(unused_port, "GET", "/t/dyn/echo", f"127.0.0.1:{unused_port}").status == 200


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def test_demo_prints_a_url_that_answers_and_stops_on_ctrl_c(
    agent_config: dict[str, str], started: list[Process]
) -> None:
    demo = Process([sys.executable, str(ROOT / "scripts" / "demo.py")], agent_config)
    started.append(demo)
    demo.wait_for(r"Hatchway demo is up", timeout=60)
    demo.wait_for(r"http://demo\.localhost:\d+/")
    demo.wait_for(r"^Inspector .*: http://127\.0\.0\.1:\d+/$")
    demo.wait_for(r"curl -d 'hello=world' http://127\.0\.0\.1:\d+/t/demo/")
    demo.wait_for(r"Ctrl-C stops everything")
    # Everything runs until Ctrl-C: no token on the relay's or the agent's command line,
    # where `ps` shows it.
    command_lines = [cmdline(pid) for pid in descendants(demo.popen.pid)]
    hatchway = [line for line in command_lines if b"hatchway" in line]
    assert len(hatchway) >= 2  # hatchway-local and hatchway http
    assert not [line for line in hatchway if b"--token" in line or b"hw_" in line]
    demo.popen.send_signal(signal.SIGINT)
    assert demo.popen.wait(30) == 0


def test_the_sample_app_answers_get_head_and_echoes_a_post(
    started: list[Process], unused_port: int
) -> None:
    port = unused_port
    app = Process([sys.executable, str(ROOT / "scripts" / "sample_app.py"), str(port)])
    started.append(app)
    app.wait_for("sample app ready")
    host = f"127.0.0.1:{port}"
    page = visit(port, "GET", "/", host)
    assert page.status == 200 and b"Hello from your laptop" in page.body
    head = visit(port, "HEAD", "/", host)
    assert head.status == 200 and head.body == b""
    assert int(head.header("content-length") or 0) > 0  # the page it would have sent
    echoed = visit(port, "POST", "/hook", host, [("Content-Type", "application/json")], b'{"a": 1}')
    assert (echoed.status, echoed.body) == (200, b'{"a": 1}')
    assert echoed.header("content-type") == "application/json"


def test_revoking_the_token_cuts_the_tunnel_and_stops_the_agent(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess, tmp_path: Path
) -> None:
    host = f"e2e.localhost:{relay.port}"
    assert visit(relay.port, "GET", "/echo/before", host).status == 200
    admin_file = tmp_path / "local-admin.json"
    relay.admin.write_admin_file(admin_file)
    (token,) = relay.store.list_tokens()  # type: ignore[attr-defined]

    admin = [sys.executable, str(ROOT / "scripts" / "hatchway_admin.py"), "--local"]
    revoke = subprocess.run(
        [*admin, "--admin-file", str(admin_file), "token", "revoke", token.token_id],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert revoke.returncode == 0, revoke.stderr
    assert "1 open connection(s) cut" in revoke.stdout
    assert visit(relay.port, "GET", "/echo/after", host).status == 404
    assert app.requests[-1].target == "/echo/before"
    assert tunnel.popen.wait(30) != 0  # its reconnect is refused: the agent stops, and says why
    assert "refused the token" in "\n".join(tunnel.drain())


def test_a_restart_keeps_tokens_and_reservations_even_after_kill_9(
    app: LocalApp, agent_config: dict[str, str], unused_port: int, started: list[Process]
) -> None:
    """The self-hosted box: what an operator creates survives a crash of hatchway-local."""
    relay = start_relay(started, unused_port, agent_config)

    def admin(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "hatchway_admin.py"), "--local", *args],
            env={**os.environ, **agent_config},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    created = admin("token", "create", "--name", "laptop", "--reserve", "mine")
    token = created.split()[1]
    relay.popen.send_signal(signal.SIGKILL)
    relay.popen.wait(10)
    start_relay(started, unused_port, agent_config)
    assert " laptop " in admin("token", "list")

    server = f"ws://127.0.0.1:{unused_port}/connect"
    env = {**agent_config, "HATCHWAY_TOKEN": token}
    agent = Process(
        [str(BIN / "hatchway"), "http", str(app.port), "--server", server, "--subdomain", "mine"],
        env,
    )
    started.append(agent)
    agent.wait_for(rf"http://mine\.localhost:{unused_port}/")
    assert visit(unused_port, "GET", "/echo/kept", f"mine.localhost:{unused_port}").status == 200
    # The reservation survived too: another token cannot take the name.
    other = Process(
        [str(BIN / "hatchway"), "http", str(app.port), "--server", server, "--subdomain", "mine"],
        agent_config,  # the token hatchway-local saved for the agent: not the reserving one
    )
    started.append(other)
    assert other.popen.wait(30) != 0
    assert "reserved" in "\n".join(other.drain())


README_ADMIN_LINES = (
    "scripts/hatchway-admin --local token create --name ci",
    "scripts/hatchway-admin --local token list",
    "scripts/hatchway-admin --local tunnels",
)
"""The operator's commands for a running hatchway-local, as docs/local-gateway.md shows them."""


def test_the_readme_admin_commands_run_as_written(
    app: LocalApp,
    agent_config: dict[str, str],
    unused_port: int,
    started: list[Process],
    tmp_path: Path,
) -> None:
    # hatchway-local writes its admin file to $XDG_STATE_HOME, where --local looks for it.
    env = {**agent_config, "XDG_STATE_HOME": str(tmp_path / "state")}
    start_relay(started, unused_port, env)

    def shell(line: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            line,
            shell=True,
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
        return done

    created = shell(README_ADMIN_LINES[0]).stdout
    assert created.startswith("token hw_") and "shown once" in created
    listed = shell(README_ADMIN_LINES[1]).stdout
    assert " ci " in listed
    # The token hatchway-local saved is the agent's without a flag.
    server = f"ws://127.0.0.1:{unused_port}/connect"
    agent = Process(
        [str(BIN / "hatchway"), "http", str(app.port), "--server", server, "--subdomain", "readme"],
        env,
    )
    started.append(agent)
    agent.wait_for(r"Forwarding\s+http://readme\.localhost")
    assert "readme" in shell(README_ADMIN_LINES[2]).stdout
