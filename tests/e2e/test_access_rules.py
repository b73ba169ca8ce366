"""Access rules from the agent's flags to the relay's answers: address allow- and deny-lists
matched on the address the gateway saw (never ``X-Forwarded-For``), a rate limit answered 429
with ``Retry-After``, and refused requests that never reach the local app. Both store modes; the
real ``hatchway`` CLI; a token given in the server URL is moved to the header and never shown."""

from __future__ import annotations

from collections.abc import Callable

from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import BIN, AgentProcess, Process
from support.visitor import visit

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers

Start = Callable[..., AgentProcess]


def host(relay: LocalServer, name: str) -> str:
    return f"{name}.localhost:{relay.port}"


def test_an_allow_list_without_the_visitor_refuses_it_before_the_app(
    relay: LocalServer, app: LocalApp, start_agent: Start
) -> None:
    start_agent(relay, str(app.port), "walled", extra=["--allow-cidr", "203.0.113.0/24"])
    answer = visit(relay.port, "GET", "/echo/walled", host(relay, "walled"))
    assert answer.status == 403
    assert answer.header("x-hatchway-error") == "address-refused"
    assert "127.0.0.1" in answer.text
    # A visitor cannot talk its way in by claiming an allowed address.
    for spoof in ("203.0.113.5", "203.0.113.5, 127.0.0.1", "127.0.0.1, 203.0.113.5"):
        spoofed = visit(
            relay.port,
            "GET",
            "/echo/spoofed",
            host(relay, "walled"),
            headers=[("X-Forwarded-For", spoof), ("X-Real-IP", "203.0.113.5")],
        )
        assert spoofed.status == 403, spoof
    path_mode = visit(relay.port, "GET", "/t/walled/echo/path", f"127.0.0.1:{relay.port}")
    assert path_mode.status == 403
    assert app.requests == []


def test_an_allow_list_with_the_visitor_lets_it_through(
    relay: LocalServer, app: LocalApp, start_agent: Start
) -> None:
    start_agent(
        relay,
        str(app.port),
        "open",
        extra=["--allow-cidr", "203.0.113.0/24", "--allow-cidr", "127.0.0.0/8"],
    )
    answer = visit(relay.port, "GET", "/echo/in", host(relay, "open"))
    assert answer.status == 200
    assert app.wait_for_request("/echo/in").method == "GET"


def test_a_deny_list_refuses_its_range_whatever_the_forwarded_headers_say(
    relay: LocalServer, app: LocalApp, start_agent: Start
) -> None:
    start_agent(relay, str(app.port), "denied", extra=["--deny-cidr", "127.0.0.0/8"])
    for headers in ([], [("X-Forwarded-For", "198.51.100.1")]):
        answer = visit(relay.port, "GET", "/echo/x", host(relay, "denied"), headers=headers)
        assert answer.status == 403
        assert answer.header("x-hatchway-error") == "address-refused"
    assert app.requests == []


def test_a_burst_over_the_rate_limit_gets_429_and_the_app_never_sees_the_excess(
    relay: LocalServer, app: LocalApp, start_agent: Start
) -> None:
    # One request a minute with a burst of three: the bucket cannot refill during the test.
    start_agent(relay, str(app.port), "limited", extra=["--rate-limit", "1/m", "--rate-burst", "3"])
    answers = [visit(relay.port, "GET", f"/echo/{i}", host(relay, "limited")) for i in range(8)]
    assert [a.status for a in answers] == [200] * 3 + [429] * 5
    for refused in answers[3:]:
        assert refused.header("x-hatchway-error") == "rate-limited"
        retry_after = refused.header("retry-after")
        assert retry_after is not None and 1 <= int(retry_after) <= 60
    assert sorted(seen.target for seen in app.requests) == ["/echo/0", "/echo/1", "/echo/2"]


def test_a_token_in_the_server_url_is_sent_as_a_header_and_never_printed(
    relay: LocalServer, app: LocalApp, agent_config: dict[str, str], started: list[Process]
) -> None:
    agent = Process(
        [
            str(BIN / "hatchway"),
            "http",
            str(app.port),
            "--server",
            f"{relay.agent_url}?token={TOKEN}",
            "--subdomain",
            "querytoken",
            "--log-format",
            "plain",
        ],
        agent_config,
    )
    started.append(agent)
    agent.wait_for(r"warning: the server URL carried the token in its query string")
    agent.wait_for(r"Forwarding\s+\S+querytoken")
    assert visit(relay.port, "GET", "/echo/q", host(relay, "querytoken")).status == 200
    agent.wait_for(r"GET /echo/q 200")
    assert not [line for line in agent.drain() if TOKEN in line]
