"""The Python API against the real local gateway and a real local app, in both store modes:
``hatchway.connect`` is ready when it returns, records what it served, calls back, closes
cleanly, and raises the typed errors.

The ``tunnel`` fixture below is the pattern a user copies to test webhooks against their app.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hatchway
from hatchway_local.server import LocalServer
from hatchway_relay import admin
from support.local_app import LocalApp
from support.visitor import visit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("isolated_settings")]

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers
OTHER_TOKEN = "hw_e2e-other-token-987654"


@pytest.fixture
def relay(make_relay: Callable[..., LocalServer]) -> LocalServer:
    return make_relay(tokens=(TOKEN, OTHER_TOKEN))


# --- The example fixture ----------------------------------------------------------------------


@pytest.fixture
def tunnel(relay: LocalServer, app: LocalApp) -> Iterator[hatchway.Tunnel]:
    """A public URL for the app under test, for as long as the test runs.

    In a user's suite, ``relay.agent_url`` and ``TOKEN`` come from their config file or
    HATCHWAY_SERVER / HATCHWAY_TOKEN, and ``app.port`` is their app's port.
    """
    with hatchway.connect(app.port, server=relay.agent_url, token=TOKEN) as opened:
        yield opened


def get(
    tunnel: hatchway.Tunnel,
    relay: LocalServer,
    target: str,
    method: str = "GET",
    body: bytes | None = None,
) -> int:
    """Send one request through the tunnel's path-form URL; the status."""
    path = f"/t/{tunnel.name}{target}"
    return int(visit(relay.port, method, path, f"127.0.0.1:{relay.port}", body=body).status)


def test_the_url_answers_as_soon_as_connect_returns(
    tunnel: hatchway.Tunnel, relay: LocalServer, app: LocalApp
) -> None:
    assert tunnel.public_url == f"http://{tunnel.name}.localhost:{relay.port}/"
    assert tunnel.urls == (tunnel.public_url, f"http://127.0.0.1:{relay.port}/t/{tunnel.name}/")
    host = f"{tunnel.name}.localhost:{relay.port}"
    assert visit(relay.port, "GET", "/echo/now", host).status == 200
    assert app.requests[-1].target == "/echo/now"


def test_the_url_is_one_the_callers_own_http_client_reaches(
    tunnel: hatchway.Tunnel, relay: LocalServer, app: LocalApp
) -> None:
    # <name>.localhost resolves in browsers and curl, not through the system resolver that
    # urllib uses: on hatchway-local, tunnel.url is the path form, which needs no resolver.
    assert tunnel.url == f"http://127.0.0.1:{relay.port}/t/{tunnel.name}/"
    with urllib.request.urlopen(tunnel.url + "echo/by-urllib?x=1", timeout=10) as answer:
        assert answer.status == 200
        assert json.loads(answer.read())["target"] == "/echo/by-urllib?x=1"
    assert app.requests[-1].target == "/echo/by-urllib?x=1"
    assert tunnel.url in tunnel.urls


def test_access_rules_and_rotation_are_api_arguments(relay: LocalServer, app: LocalApp) -> None:
    with hatchway.connect(
        app.port,
        server=relay.agent_url,
        token=TOKEN,
        allow_cidr=["203.0.113.0/24"],
        rate_limit="10/s",
        rotate_after=30,
    ) as tunnel:
        assert tunnel._service.session.rotate_after == 30
        answer = visit(relay.port, "GET", "/echo/walled", f"{tunnel.name}.localhost:{relay.port}")
        assert (answer.status, answer.header("x-hatchway-error")) == (403, "address-refused")
    assert app.requests == []
    with pytest.raises(ValueError, match="rotate-after"):
        hatchway.connect(app.port, server=relay.agent_url, token=TOKEN, rotate_after=0.1)
    with pytest.raises(ValueError, match="rate-limit"):
        hatchway.connect(app.port, server=relay.agent_url, token=TOKEN, rate_limit="lots")


def test_requests_are_recorded_and_can_be_waited_for(
    tunnel: hatchway.Tunnel, relay: LocalServer
) -> None:
    body = b'{"event": "push"}'
    assert get(tunnel, relay, "/echo/hook", method="POST", body=body) == 200
    exchange = tunnel.wait_for_request(lambda e: e.target == "/echo/hook", timeout=10)
    assert (exchange.method, exchange.status, exchange.request.body) == ("POST", 200, body)
    assert json.loads(exchange.response.body)["body_len"] == len(body)
    assert [e.target for e in tunnel.requests] == ["/echo/hook"]
    with pytest.raises(TimeoutError):
        tunnel.wait_for_request(lambda e: e.target == "/never", timeout=0.05)


def test_callbacks_hear_every_request_from_the_workers(
    tunnel: hatchway.Tunnel, relay: LocalServer
) -> None:
    heard: list[str] = []
    all_heard = threading.Event()

    @tunnel.on_request
    def remember(exchange: hatchway.Exchange) -> None:
        heard.append(exchange.target)
        if len(heard) == 3:
            all_heard.set()

    @tunnel.on_request
    def broken(exchange: hatchway.Exchange) -> None:
        raise RuntimeError("a bug in the user's callback")

    for i in range(3):
        assert get(tunnel, relay, f"/echo/{i}") == 200  # the broken callback changes nothing
    assert all_heard.wait(10)
    assert sorted(heard) == ["/echo/0", "/echo/1", "/echo/2"]


def test_close_releases_the_name_and_is_idempotent(
    relay: LocalServer, app: LocalApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()
    disconnect = relay.relay.disconnect

    def noting(connection_id: str) -> None:
        disconnect(connection_id)
        released.set()

    monkeypatch.setattr(relay.relay, "disconnect", noting)
    opened = hatchway.connect(app.port, subdomain="closing", server=relay.agent_url, token=TOKEN)
    assert get(opened, relay, "/echo") == 200
    opened.close()
    opened.close()
    assert released.wait(10)  # the relay heard the socket close ($disconnect)
    assert visit(relay.port, "GET", "/t/closing/echo", f"127.0.0.1:{relay.port}").status == 404
    # The name is free for someone else at once.
    with hatchway.connect(
        app.port, subdomain="closing", server=relay.agent_url, token=OTHER_TOKEN
    ) as again:
        assert again.name == "closing"


def test_settings_come_from_the_environment_and_the_config_file(
    relay: LocalServer, app: LocalApp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "config.toml").write_text(f'server = "{relay.agent_url}"\n')
    monkeypatch.setenv("HATCHWAY_TOKEN", TOKEN)
    with hatchway.connect(app.port) as opened:
        assert get(opened, relay, "/echo") == 200


def test_typed_errors(relay: LocalServer, app: LocalApp, unused_port: int) -> None:
    with pytest.raises(hatchway.TokenRefused, match="refused the token"):
        hatchway.connect(app.port, server=relay.agent_url, token="hw_not-a-token")
    with pytest.raises(hatchway.TokenRefused, match="no token"):
        hatchway.connect(app.port, server=relay.agent_url)
    with (
        hatchway.connect(app.port, subdomain="mine", server=relay.agent_url, token=TOKEN),
        pytest.raises(hatchway.NameTaken, match="held by another token"),
    ):
        hatchway.connect(app.port, subdomain="mine", server=relay.agent_url, token=OTHER_TOKEN)
    with pytest.raises(hatchway.RelayUnreachable, match=str(unused_port)):
        hatchway.connect(app.port, server=f"ws://127.0.0.1:{unused_port}/connect", token=TOKEN)
    with pytest.raises(ValueError, match="basic-auth"):
        hatchway.connect(app.port, server=relay.agent_url, token=TOKEN, basic_auth="nocolon")


def test_the_inspector_can_be_asked_for_and_shows_the_status(
    relay: LocalServer, app: LocalApp
) -> None:
    with hatchway.connect(
        app.port, server=relay.agent_url, token=TOKEN, inspect="127.0.0.1:0"
    ) as opened:
        assert opened.inspector_url is not None
        assert get(opened, relay, "/echo") == 200
        opened.wait_for_request(timeout=10)
        with urllib.request.urlopen(opened.inspector_url + "api/status", timeout=10) as answer:
            status = json.load(answer)
        assert status["session"]["status"] == "online"
        assert status["session"]["public_urls"] == list(opened.urls)
        assert status["session"]["connections"]["total"] == 1
        assert status["requests"]["recorded"] == 1


def test_one_tunnel_object_is_safe_to_use_from_many_threads(
    tunnel: hatchway.Tunnel, relay: LocalServer
) -> None:
    errors: list[BaseException] = []

    def use(i: int) -> None:
        try:
            assert get(tunnel, relay, f"/echo/t{i}") == 200
            tunnel.wait_for_request(lambda e: e.target == f"/echo/t{i}", timeout=10)
            assert tunnel.url and tunnel.requests
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=use, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(tunnel.requests) == 16
    assert tunnel.status["connections"] == {"open": 0, "total": 16}


# --- Custom hostnames -------------------------------------------------------------------------


def test_a_custom_hostname_serves_its_reserved_tunnel(
    make_relay: Callable[..., LocalServer], app: LocalApp
) -> None:
    relay = make_relay(
        tokens=(TOKEN, OTHER_TOKEN), custom_hostnames={"hooks.mycompany.localhost": "hooks"}
    )
    with pytest.raises(hatchway.NameTaken, match="must first be reserved"):
        hatchway.connect(app.port, subdomain="hooks", server=relay.agent_url, token=TOKEN)
    owner = relay.relay.authorize(TOKEN)
    assert owner is not None
    admin.reserve(relay.store, owner.token_id, "hooks")

    with hatchway.connect(
        app.port, subdomain="hooks", server=relay.agent_url, token=TOKEN
    ) as tunnel:
        assert tunnel.public_url == f"http://hooks.mycompany.localhost:{relay.port}/"
        body = b'{"event": "push"}'
        host = f"hooks.mycompany.localhost:{relay.port}"
        answer = visit(relay.port, "POST", "/echo/deliveries?id=7", host, body=body)
        assert answer.status == 200
        echoed = json.loads(answer.body)
        assert echoed["target"] == "/echo/deliveries?id=7"
        assert echoed["body_len"] == len(body)
