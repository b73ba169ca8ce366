"""End-to-end fixtures: the local gateway (memory store, or DynamoDB on moto's server with the
production adapters), a real local app, and the ``hatchway`` CLI as a real process. All on
127.0.0.1 with ephemeral ports; readiness is always an explicit signal."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from hatchway_local.server import LocalServer, run_local
from support.local_app import LocalApp
from support.processes import AgentProcess, Process

TOKEN = "hw_e2e-token-0123456789"


@pytest.fixture(scope="session", autouse=True)
def aws_dummy_credentials() -> Iterator[None]:
    """DynamoDB mode talks to moto through boto3, which wants credentials; never real ones."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # moto's backend is not thread-safe (TransactWriteItems deep-copies tables that other
    # request threads are changing, and answers 500). DynamoDB applies each request atomically;
    # serving one request at a time gives the tests that, while requests still interleave.
    app = server._server.app  # type: ignore[union-attr]
    lock = threading.Lock()

    def one_request_at_a_time(environ: dict, start_response: Callable) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    server._server.app = one_request_at_a_time  # type: ignore[union-attr]
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["memory", "dynamodb"])
def store_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


RelayFactory = Callable[..., LocalServer]


@pytest.fixture
def make_relay(store_mode: str, request: pytest.FixtureRequest) -> Iterator[RelayFactory]:
    """Starts local gateways in the test's store mode; each gets its own DynamoDB table."""
    with ExitStack() as stack:

        def start(**options: object) -> LocalServer:
            if store_mode == "dynamodb":
                options.setdefault("dynamodb_endpoint", request.getfixturevalue("moto_endpoint"))
                options.setdefault("table_name", f"hatchway-{uuid.uuid4().hex[:8]}")
            options.setdefault("tokens", (TOKEN,))
            options.setdefault("response_timeout", 10.0)
            return stack.enter_context(run_local(store=store_mode, **options))  # type: ignore[arg-type]

        yield start


@pytest.fixture
def relay(make_relay: RelayFactory) -> LocalServer:
    return make_relay()


@pytest.fixture
def agent_config(tmp_path: Path) -> dict[str, str]:
    """Keeps the agent away from the developer's own config file, and hatchway-local from the
    developer's own state (its SQLite file and admin file live under $XDG_STATE_HOME)."""
    return {
        "HATCHWAY_CONFIG": str(tmp_path / "config.toml"),
        "HATCHWAY_INSPECT": "off",
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }


@pytest.fixture
def start_agent(agent_config: dict[str, str]) -> Iterator[Callable[..., AgentProcess]]:
    agents: list[AgentProcess] = []

    def start(
        relay: LocalServer, target: str, subdomain: str | None = "e2e", **kw: object
    ) -> AgentProcess:
        agent = AgentProcess(target, relay.agent_url, TOKEN, subdomain, env=agent_config, **kw)  # type: ignore[arg-type]
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.kill()


@pytest.fixture
def tunnel(
    relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> AgentProcess:
    return start_agent(relay, str(app.port))


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound once by us, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent in this process reads settings as the CLI does: keep the developer's own out."""
    monkeypatch.setenv("HATCHWAY_CONFIG", str(tmp_path / "config.toml"))
    for name in ("HATCHWAY_SERVER", "HATCHWAY_TOKEN", "HATCHWAY_INSPECT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.kill()
