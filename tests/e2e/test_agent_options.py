"""Per-tunnel options through the whole stack (local gateway, real handlers, real agent, real local
apps), in both store modes where the relay is involved:

* named tunnels from the config file, several over one WebSocket, each routed to its own app;
* basic auth and webhook signatures enforced by the relay: refused requests never reach the app;
* header rules and Host modes applied by the agent, also to an inspector replay, which goes to
  the replayed request's own tunnel.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import hatchway
from hatchway.config import Settings, write_config
from hatchway.service import Service
from hatchway.serving.tunnels import tunnel_options
from hatchway.ui.display import Listener
from hatchway_local.server import LocalServer
from support.local_app import LocalApp, run_local_app
from support.processes import BIN, Process
from support.visitor import Answer, visit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("isolated_settings")]

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers
SECRET = "whsec_e2e-signing-secret"


@pytest.fixture
def apps() -> Iterator[list[LocalApp]]:
    with ExitStack() as stack:
        yield [stack.enter_context(run_local_app()) for _ in range(3)]


def through(
    relay: LocalServer,
    name: str,
    target: str,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
) -> Answer:
    """One visitor request to tunnel ``name`` in subdomain mode."""
    return visit(relay.port, method, target, f"{name}.localhost:{relay.port}", headers, body)


# --- Several named tunnels over one connection ------------------------------------------------


def test_named_tunnels_share_one_connection_and_each_reaches_its_own_app(
    relay: LocalServer, apps: list[LocalApp], tmp_path: Path
) -> None:
    web, shop, hooks = apps
    write_config(
        {
            "server": relay.agent_url,
            "token": TOKEN,
            "inspect": False,
            "tunnels": {
                "web": {"target": str(web.port), "subdomain": "web"},
                "shop": {"target": f"localhost:{shop.port}", "subdomain": "shop"},
                "hooks": {"target": str(hooks.port)},  # a random name
                "unused": {"target": "1"},
            },
        },
        tmp_path / "config.toml",
    )
    agent = Process(
        [str(BIN / "hatchway"), "start", "web", "shop", "hooks"],
        {"HATCHWAY_CONFIG": str(tmp_path / "config.toml")},
    )
    try:
        urls = [agent.wait_for(r"Forwarding\s+(http://(\S+?)\.localhost\S*)").group(2)]
        while len(urls) < 3:
            match = agent.wait_for(r"Forwarding\s+http://(\S+?)\.localhost")
            urls.append(match.group(1))
        assert urls[:2] == ["web", "shop"]
        assert len(relay.connection_ids()) == 1  # one WebSocket for all three

        for name in urls:
            assert through(relay, name, f"/echo/for-{name}").status == 200
        for app, name in zip(apps, urls, strict=True):
            assert [seen.target for seen in app.requests] == [f"/echo/for-{name}"]
        agent.wait_for(r"^shop: GET /echo/for-shop 200 \d+ ms$")  # lines name the tunnel
    finally:
        assert agent.stop() == 0


def test_start_all_serves_every_named_tunnel(
    relay: LocalServer, apps: list[LocalApp], tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    write_config(
        {
            "tunnels": {
                f"t{i}": {"target": str(app.port), "subdomain": f"all-{i}"}
                for i, app in enumerate(apps)
            }
        },
        config,
    )
    agent = Process(
        [str(BIN / "hatchway"), "start", "--all", "--no-inspect", "--server", relay.agent_url],
        {"HATCHWAY_CONFIG": str(config), "HATCHWAY_TOKEN": TOKEN},
    )
    try:
        for i in range(3):
            agent.wait_for(rf"Forwarding\s+http://all-{i}\.localhost")
        for i, app in enumerate(apps):
            assert through(relay, f"all-{i}", "/echo").status == 200
            assert len(app.requests) == 1
    finally:
        assert agent.stop() == 0


@pytest.mark.parametrize("store_mode", ["memory"])
def test_start_with_an_unknown_name_says_which_exist(
    relay: LocalServer, tmp_path: Path, store_mode: str
) -> None:
    config = tmp_path / "config.toml"
    write_config({"tunnels": {"web": {"target": "3000"}}}, config)
    agent = Process([str(BIN / "hatchway"), "start", "blog"], {"HATCHWAY_CONFIG": str(config)})
    assert agent.popen.wait(15) == 2
    assert "defines no tunnel 'blog'; it defines: web" in "\n".join(agent.drain())


# --- Guards enforced by the relay --------------------------------------------------------------


def basic(credentials: str) -> tuple[str, str]:
    return ("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())


def signed(message: bytes) -> str:
    return hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


BODY = b'{"id":"evt_1","type":"charge.succeeded"}'


def github(body: bytes = BODY) -> list[tuple[str, str]]:
    return [("X-Hub-Signature-256", "sha256=" + signed(body)), ("X-GitHub-Event", "push")]


def stripe(age: float = 0, body: bytes = BODY) -> list[tuple[str, str]]:
    stamp = str(int(time.time() - age))
    return [("Stripe-Signature", f"t={stamp},v1={signed(stamp.encode() + b'.' + body)}")]


def slack(age: float = 0, body: bytes = BODY) -> list[tuple[str, str]]:
    stamp = str(int(time.time() - age))
    return [
        ("X-Slack-Request-Timestamp", stamp),
        ("X-Slack-Signature", "v0=" + signed(b"v0:" + stamp.encode() + b":" + body)),
    ]


AUTH = {"basic_auth": "alice:s3cret pass"}
GITHUB = {"verify_webhook": "github", "webhook_secret": SECRET}
STRIPE = {"verify_webhook": "stripe", "webhook_secret": SECRET}
SLACK = {"verify_webhook": "slack", "webhook_secret": SECRET}
STALE = 10 * 60  # seconds: past the relay's five-minute tolerance

# Signed headers are made when the test runs, not when it is collected: the relay allows five
# minutes of clock skew, and a full run can take longer than that to reach a case.
GUARD_CASES = [
    pytest.param(AUTH, lambda: [], 401, id="basic auth: none given"),
    pytest.param(AUTH, lambda: [basic("alice:wrong")], 401, id="basic auth: wrong password"),
    pytest.param(AUTH, lambda: [basic("bob:s3cret pass")], 401, id="basic auth: wrong user"),
    pytest.param(AUTH, lambda: [basic("alice:s3cret pass")], 200, id="basic auth: right"),
    pytest.param(GITHUB, lambda: [], 401, id="github: unsigned"),
    pytest.param(GITHUB, lambda: github(b"tampered"), 403, id="github: signature of another body"),
    pytest.param(GITHUB, github, 200, id="github: signed"),
    pytest.param(STRIPE, lambda: [], 401, id="stripe: unsigned"),
    pytest.param(STRIPE, lambda: stripe(age=STALE), 403, id="stripe: stale timestamp"),
    pytest.param(STRIPE, lambda: stripe(body=b"{}"), 403, id="stripe: signature of another body"),
    pytest.param(STRIPE, stripe, 200, id="stripe: signed"),
    pytest.param(SLACK, lambda: slack(age=STALE), 403, id="slack: stale timestamp"),
    pytest.param(SLACK, slack, 200, id="slack: signed"),
]


@pytest.mark.parametrize(("options", "headers", "status"), GUARD_CASES)
def test_the_relay_enforces_guards_before_the_app_sees_anything(
    relay: LocalServer,
    app: LocalApp,
    options: dict[str, Any],
    headers: Callable[[], list[tuple[str, str]]],
    status: int,
) -> None:
    with hatchway.connect(
        app.port, subdomain="guarded", server=relay.agent_url, token=TOKEN, **options
    ) as tunnel:
        answer = through(
            relay, "guarded", "/echo/hook", method="POST", headers=headers(), body=BODY
        )
        assert answer.status == status
        if status == 200:
            seen = app.wait_for_request("/echo/hook")
            assert seen.body == BODY
            names = {name.lower() for name, _ in seen.headers}
            assert "authorization" not in names  # the tunnel's password stays at the relay
        else:
            assert app.requests == [] and tunnel.requests == []  # never reached the laptop
            assert answer.header("x-hatchway-error") is not None
            assert "relay" in answer.text
        if status == 401 and "basic_auth" in options:
            # Each tunnel its own realm: in path mode all tunnels share one origin.
            challenge = 'Basic realm="hatchway: guarded", charset="UTF-8"'
            assert answer.header("WWW-Authenticate") == challenge


# --- Header rules applied by the agent (the relay is not involved: memory store only) ----------


def echoed(answer: Answer) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(answer.body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    return seen


@pytest.mark.parametrize("store_mode", ["memory"])
@pytest.mark.parametrize(
    ("options", "host"),
    [
        pytest.param({}, "hdr.localhost:{relay}", id="preserve (default)"),
        pytest.param({"host_header": "preserve"}, "hdr.localhost:{relay}", id="preserve"),
        pytest.param({"host_header": "rewrite"}, "127.0.0.1:{app}", id="rewrite"),
        pytest.param({"host_header": "internal.test"}, "internal.test", id="a value"),
    ],
)
def test_host_header_modes(
    relay: LocalServer, app: LocalApp, options: dict[str, Any], host: str, store_mode: str
) -> None:
    with hatchway.connect(
        app.port, subdomain="hdr", server=relay.agent_url, token=TOKEN, **options
    ):
        answer = through(relay, "hdr", "/echo")
    assert echoed(answer)["host"] == [host.format(relay=relay.port, app=app.port)]


@pytest.mark.parametrize("store_mode", ["memory"])
def test_request_and_response_header_rules(
    relay: LocalServer, app: LocalApp, store_mode: str
) -> None:
    with hatchway.connect(
        app.port,
        subdomain="hdr",
        server=relay.agent_url,
        token=TOKEN,
        request_header_add=["X-Env: staging", "X-Trace: agent"],
        request_header_remove=["X-Trace", "Cookie"],
        response_header_add=["Cache-Control: no-store"],
        response_header_remove=["Set-Cookie", "X-Multi"],
    ):
        sent = echoed(
            through(relay, "hdr", "/echo", headers=[("X-Trace", "visitor"), ("Cookie", "a=1")])
        )
        cookies = through(relay, "hdr", "/cookies")
    assert sent["x-env"] == ["staging"] and sent["x-trace"] == ["agent"]
    assert "cookie" not in sent
    assert cookies.status == 200 and cookies.body == b"cookies"
    assert cookies.all("Set-Cookie") == [] and cookies.all("X-Multi") == []
    assert cookies.header("Cache-Control") == "no-store"


@pytest.fixture
def relay(make_relay: Callable[..., LocalServer]) -> LocalServer:
    return make_relay()


class _Served(Listener):
    """Tells when the agent has served a request: the inspector records it before listeners
    hear of it."""

    def __init__(self) -> None:
        self.one = threading.Event()

    def request(self, request: Any, response: Any, elapsed_ms: float) -> None:
        self.one.set()


@pytest.mark.parametrize("store_mode", ["memory"])
def test_an_inspector_replay_goes_to_its_own_tunnels_app(
    relay: LocalServer, apps: list[LocalApp], store_mode: str
) -> None:
    first, second, _ = apps
    tunnels = [
        tunnel_options(str(first.port), subdomain="one"),
        tunnel_options(str(second.port), subdomain="two", request_header_add=["X-Via: two"]),
    ]
    served = _Served()
    service = Service(
        Settings(relay.agent_url, TOKEN), tunnels, [served], inspect="127.0.0.1:0"
    ).start(timeout=10)
    try:
        assert through(relay, "two", "/echo/original").status == 200
        # The visitor may have its answer before the agent has recorded it.
        assert served.one.wait(timeout=10)
        inspector = service.inspector
        assert inspector is not None and inspector.url is not None
        (captured,) = inspector.capture.newest_first()
        replay = urllib.request.Request(
            f"{inspector.url}api/requests/{captured.id}/replay", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(replay, timeout=10) as answer:
            assert answer.status == 201
    finally:
        service.close()
    assert first.requests == []
    assert [seen.target for seen in second.requests] == ["/echo/original", "/echo/original"]
    assert all(("X-Via", "two") in seen.headers for seen in second.requests)  # same rules
