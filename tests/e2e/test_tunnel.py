"""A visitor, the local gateway running the real handlers, the real agent process and a real
local app, in both store modes: what a user of ``hatchway http`` sees."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from hatchway import protocol
from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e


def via(relay: LocalServer, mode: str, target: str, name: str = "e2e") -> tuple[str, str]:
    """(request target, Host header) for tunnel ``name`` in subdomain or path mode."""
    if mode == "subdomain":
        return target, f"{name}.localhost:{relay.port}"
    return f"/t/{name}{target}", f"127.0.0.1:{relay.port}"


def through(
    relay: LocalServer, method: str, target: str, mode: str = "subdomain", **kw: object
) -> Answer:
    request_target, host = via(relay, mode, target)
    return visit(relay.port, method, request_target, host, **kw)  # type: ignore[arg-type]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_agent_prints_both_public_urls(relay: LocalServer, tunnel: AgentProcess) -> None:
    assert tunnel.urls == [
        f"http://e2e.localhost:{relay.port}/",
        f"http://127.0.0.1:{relay.port}/t/e2e/",
    ]


@pytest.mark.parametrize("mode", ["subdomain", "path"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_methods_reach_the_app_with_their_bodies(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess, method: str, mode: str
) -> None:
    body = f"{method} body".encode() if method not in ("GET", "HEAD") else None
    answer = through(relay, method, "/echo/x", mode, body=body)
    assert answer.status == 200
    seen = app.requests[-1]
    assert (seen.method, seen.target, seen.body) == (method, "/echo/x", body or b"")
    if method == "HEAD":
        assert answer.body == b""
    else:
        assert json.loads(answer.body)["body_sha256"] == sha(body or b"")


@pytest.mark.parametrize(
    "target",
    [
        "/echo/caf%C3%A9/%E2%9C%93",
        "/echo/%252F/%20space/100%25",
        "/echo/hash%23/%22q%22",
        "/echo?a=1&a=2&b=&c=%26%3D",
        "/echo/?q=caf%C3%A9&q=%E2%9C%93",
        "/echo/semi;colon/~tilde/!$'()*+,",
    ],
)
def test_paths_and_queries_arrive_byte_exact(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess, target: str
) -> None:
    # The gateway decodes the path as the HTTP API does; the relay re-encodes it.
    assert through(relay, "GET", target).status == 200
    assert app.requests[-1].target == target


@pytest.mark.parametrize(
    ("sent", "arrives"),
    [
        pytest.param("/echo/a%2Fb", "/echo/a/b", id="an encoded slash is a slash"),
        pytest.param("/echo/a%3Fb?x=1", "/echo/a?x=1", id="an encoded ? cuts the path"),
    ],
)
def test_what_the_http_api_decodes_beyond_recovery(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess, sent: str, arrives: str
) -> None:
    # AWS's HTTP API hands Lambda these paths decoded; the README says so. The local gateway
    # does the same, so a tunnel behaves alike in both places.
    assert through(relay, "GET", sent).status == 200
    assert app.requests[-1].target == arrives


def test_headers_reach_the_app_in_order_with_repeats_joined_as_api_gateway_does(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess
) -> None:
    headers = [
        ("X-Rep", "1"),
        ("X-Rep", "2"),
        ("X-Single", "v"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
    ]
    through(relay, "GET", "/echo", headers=headers)
    seen = {k.lower(): v for k, v in app.requests[-1].headers}
    assert seen["x-rep"] == "1,2"  # payload 2.0 joins repeated headers with commas
    assert seen["x-single"] == "v"
    assert seen["cookie"] == "a=1; b=2"
    assert seen["host"] == f"e2e.localhost:{relay.port}"  # Host as the visitor sent it
    assert "connection" not in seen or seen["connection"].lower() == "keep-alive"


def test_multiple_set_cookie_stay_separate(relay: LocalServer, tunnel: AgentProcess) -> None:
    answer = through(relay, "GET", "/cookies")
    assert len(answer.all("Set-Cookie")) == 3
    assert answer.header("X-Multi") in ("a,b", "a, b")


@pytest.mark.parametrize("size", [0, 1024 * 1024, 4 * 1024 * 1024])
def test_binary_bodies_cross_both_ways_intact(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess, size: int
) -> None:
    upload = random.Random(size).randbytes(size)
    answer = through(
        relay,
        "POST",
        "/upload",
        body=upload,
        headers=[("Content-Type", "application/octet-stream")],
    )
    assert answer.status == 200
    assert sha(app.requests[-1].body) == sha(upload)
    assert sha(answer.body) == sha(upload)
    download = through(relay, "GET", f"/bytes?n={size}&seed=3")
    assert len(download.body) == size
    assert sha(download.body) == sha(app.expected_bytes(size, 3))


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses_pass_through(
    relay: LocalServer, tunnel: AgentProcess, status: int
) -> None:
    answer = through(relay, "GET", f"/status/{status}")
    assert (answer.status, answer.body) == (status, b"")


def test_redirects_are_passed_through_untouched(relay: LocalServer, tunnel: AgentProcess) -> None:
    answer = through(relay, "GET", "/redirect")
    assert answer.status == 302
    assert answer.header("Location") == "/echo/after"


def test_64_concurrent_requests_each_get_their_own_response(
    relay: LocalServer, tunnel: AgentProcess
) -> None:
    def one(i: int) -> tuple[int, bytes, bytes]:
        body = f"request {i} ".encode() * (i * 37 + 1)
        answer = through(relay, "POST", f"/upload?i={i}", body=body)
        return answer.status, body, answer.body

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert all(status == 200 for status, _, _ in results)
    assert all(sent == got for _, sent, got in results)


def test_unknown_name_is_404(relay: LocalServer, tunnel: AgentProcess) -> None:
    answer = visit(relay.port, "GET", "/", f"nobody.localhost:{relay.port}")
    assert answer.status == 404 and "nobody" in answer.text


def test_local_app_down_is_502_saying_the_local_app_refused(
    relay: LocalServer, start_agent: Callable[..., AgentProcess], unused_port: int
) -> None:
    start_agent(relay, str(unused_port))
    answer = through(relay, "GET", "/")
    assert answer.status == 502
    assert "local app" in answer.text and "refused" in answer.text
    assert str(unused_port) in answer.text


def test_oversized_body_is_413_and_never_reaches_the_app(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess
) -> None:
    answer = through(relay, "POST", "/upload", body=b"x" * (protocol.MAX_BODY_BYTES + 1))
    assert answer.status == 413
    assert not [r for r in app.requests if r.target == "/upload"]


@pytest.mark.parametrize(
    ("target", "host", "statuses"),
    [
        # The agent refuses a '//host' path itself (many apps read it as another host).
        ("/t/e2e//evil.example/steal", "127.0.0.1:{port}", {400}),
        # Absolute-form and '//' request lines: whatever the gateway makes of them, the app
        # only ever sees an origin-form path on its own host.
        ("//evil.example/steal", "e2e.localhost:{port}", {200, 400, 404}),
        ("http://evil.example/steal", "e2e.localhost:{port}", {200, 400, 404}),
    ],
)
def test_hostile_targets_never_leave_the_agents_target(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess, target: str, host: str, statuses: set
) -> None:
    answer = visit(relay.port, "GET", target, host.format(port=relay.port))
    assert answer.status in statuses
    for seen in app.requests:
        assert seen.target.startswith("/") and not seen.target.startswith("//")
        assert "://" not in seen.target


def test_slow_app_gets_504_at_the_configured_deadline(
    make_relay: Callable[..., LocalServer], app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    relay = make_relay(response_timeout=2.0)
    start_agent(relay, str(app.port))
    started = time.monotonic()
    answer = through(relay, "GET", "/slow?s=20")
    elapsed = time.monotonic() - started
    assert answer.status == 504 and "did not answer within 2 s" in answer.text
    assert 2.0 <= elapsed < 5.0


def test_agent_killed_mid_request_is_502_within_2_seconds(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess
) -> None:
    result: list[Answer] = []
    request = threading.Thread(target=lambda: result.append(through(relay, "GET", "/slow?s=20")))
    request.start()
    app.wait_for_request("/slow?s=20", timeout=10)
    killed_at = time.monotonic()
    tunnel.kill()
    request.join(10)
    assert result and result[0].status == 502, result
    assert time.monotonic() - killed_at < 2.0
    assert "agent" in result[0].text


def test_agent_reconnects_and_keeps_its_url(relay: LocalServer, tunnel: AgentProcess) -> None:
    assert through(relay, "GET", "/echo").status == 200
    (connection_id,) = relay.connection_ids()
    relay.close_connection(connection_id)
    deadline = time.monotonic() + 5.0
    answer = None
    while time.monotonic() < deadline:
        answer = through(relay, "GET", "/echo", timeout=5)
        if answer.status == 200:
            break
        time.sleep(0.05)  # bounded poll: the loop ends at the 5 s deadline
    assert answer is not None and answer.status == 200
    assert relay.connection_ids() != [connection_id]
