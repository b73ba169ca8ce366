"""Per-tunnel options as users type them, the header rules the agent applies around the forwarder,
and the router that hands each request to its own tunnel. No sockets: the forwarder is a
function that records what it was given."""

from __future__ import annotations

import pytest

from hatchway import protocol
from hatchway.protocol import Request, Response
from hatchway.serving.forward import Target
from hatchway.serving.tunnels import OptionError, Pipeline, Router, describe, tunnel_options

VISITOR_HEADERS = (
    ("host", "myapp.t.example.com"),
    ("cookie", "a=1"),
    ("x-trace", "abc"),
    ("Accept", "*/*"),
)


class Recorder:
    """A stand-in forwarder: records each request and answers with fixed headers."""

    def __init__(self, headers: protocol.Headers = (), fault: protocol.Fault | None = None):
        self.seen: list[Request] = []
        self.headers = headers
        self.fault = fault

    def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        return Response(request.id, 200, self.headers, b"ok", fault=self.fault)


def request(tunnel: str = "myapp", headers: protocol.Headers = VISITOR_HEADERS) -> Request:
    return Request("r1", tunnel, "GET", "/x", "q=1", headers)


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        pytest.param({}, VISITOR_HEADERS, id="nothing changed by default (Host preserved)"),
        pytest.param(
            {"host_header": "rewrite"},
            (("Host", "localhost:3000"), *VISITOR_HEADERS[1:]),
            id="host rewritten to the target",
        ),
        pytest.param(
            {"host_header": "app.internal:8443"},
            (("Host", "app.internal:8443"), *VISITOR_HEADERS[1:]),
            id="host set to a value",
        ),
        pytest.param(
            {"request_header_remove": ["Cookie", "X-TRACE"]},
            (VISITOR_HEADERS[0], VISITOR_HEADERS[3]),
            id="removal ignores case",
        ),
        pytest.param(
            {"request_header_add": ["X-Env: dev", "X-Env: second", "X-Empty:"]},
            (*VISITOR_HEADERS, ("X-Env", "dev"), ("X-Env", "second"), ("X-Empty", "")),
            id="additions appended in order, repeats kept",
        ),
        pytest.param(
            {"request_header_remove": ["x-trace"], "request_header_add": ["X-Trace: mine"]},
            (*VISITOR_HEADERS[:2], VISITOR_HEADERS[3], ("X-Trace", "mine")),
            id="remove then add replaces",
        ),
    ],
)
def test_request_header_rules(options: dict[str, object], sent: protocol.Headers) -> None:
    forward = Recorder()
    pipeline = Pipeline(tunnel_options("localhost:3000", **options), forward)  # type: ignore[arg-type]
    pipeline(request())
    assert forward.seen[0].headers == sent
    assert (forward.seen[0].path, forward.seen[0].query, forward.seen[0].body) == ("/x", "q=1", b"")


def test_rewrite_brackets_an_ipv6_target() -> None:
    forward = Recorder()
    Pipeline(tunnel_options("http://[::1]:8080", host_header="rewrite"), forward)(request())
    assert forward.seen[0].headers[0] == ("Host", "[::1]:8080")


APP_HEADERS = (("Server", "dev"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"))


@pytest.mark.parametrize(
    ("options", "returned"),
    [
        pytest.param({}, APP_HEADERS, id="untouched by default"),
        pytest.param({"response_header_remove": ["server"]}, APP_HEADERS[1:], id="removed"),
        pytest.param(
            {"response_header_add": ["Cache-Control: no-store"]},
            (*APP_HEADERS, ("Cache-Control", "no-store")),
            id="added",
        ),
        pytest.param(
            {"response_header_remove": ["Set-Cookie"], "response_header_add": ["X-A: 1"]},
            (APP_HEADERS[0], ("X-A", "1")),
            id="every repeat removed",
        ),
    ],
)
def test_response_header_rules(options: dict[str, object], returned: protocol.Headers) -> None:
    pipeline = Pipeline(tunnel_options("3000", **options), Recorder(APP_HEADERS))  # type: ignore[arg-type]
    response = pipeline(request())
    assert response.headers == returned and response.body == b"ok"


def test_an_agent_fault_keeps_its_own_headers() -> None:
    fault = protocol.Fault("local app", "connection refused by http://127.0.0.1:3000")
    pipeline = Pipeline(
        tunnel_options("3000", response_header_add=["X-A: 1"]), Recorder((("x-b", "2"),), fault)
    )
    assert pipeline(request()).headers == (("x-b", "2"),)


def test_added_headers_past_the_protocol_limit_are_an_agent_fault() -> None:
    adds = [f"X-{i}: v" for i in range(protocol.MAX_HEADERS)]
    forward = Recorder()
    response = Pipeline(tunnel_options("3000", request_header_add=adds), forward)(request())
    assert response.status == 502 and response.fault is not None
    assert response.fault.side == "agent" and not forward.seen


def test_the_router_hands_each_request_to_its_own_tunnel() -> None:
    web, api = Recorder(), Recorder()
    router = Router([web, api])
    router.bind(
        protocol.Welcome(
            (
                protocol.TunnelInfo("myweb", None, "http://r/t/myweb/"),
                protocol.TunnelInfo("quick-fox-12", None, "http://r/t/quick-fox-12/"),
            )
        )
    )
    router(request("quick-fox-12"))
    router(request("myweb"))
    router(request("myweb"))
    assert (len(web.seen), len(api.seen)) == (2, 1)
    stray = router(request("other"))
    assert stray.status == 502 and stray.fault is not None
    assert "no tunnel named 'other'" in stray.fault.message


@pytest.mark.parametrize(
    ("target", "options", "says"),
    [
        ("nope", {}, "port"),
        ("https://localhost:3000", {}, "http://"),
        ("3000", {"subdomain": "Bad_Name"}, "subdomain"),
        ("3000", {"host_header": "two words"}, "host-header"),
        ("3000", {"host_header": "a\r\nX: y"}, "host-header"),
        ("3000", {"request_header_add": ["NoColon"]}, "request-header-add"),
        ("3000", {"request_header_add": ["Bad Name: v"]}, "not a header name"),
        ("3000", {"request_header_add": ["Host: x"]}, "--host-header"),
        ("3000", {"response_header_add": ["Connection: close"]}, "response-header-add"),
        ("3000", {"response_header_remove": ["a b"]}, "response-header-remove"),
        ("3000", {"basic_auth": "alice"}, "user:password"),
        ("3000", {"basic_auth": ":pw"}, "user:password"),
        ("3000", {"basic_auth": "a:" + "p" * protocol.MAX_BASIC_AUTH_LENGTH}, "at most"),
        ("3000", {"verify_webhook": "gitlab", "webhook_secret": "s"}, "github, slack, stripe"),
        ("3000", {"verify_webhook": "github"}, "go together"),
        ("3000", {"webhook_secret": "s3cret-value"}, "go together"),
        (
            "3000",
            {"verify_webhook": "slack", "webhook_secret": "x" * 300},
            "webhook-secret",
        ),
        ("3000", {"large_responses": "Redirect"}, "large-responses"),
    ],
)
def test_unusable_options_are_refused_naming_the_option(
    target: str, options: dict[str, object], says: str
) -> None:
    with pytest.raises(OptionError) as refused:
        tunnel_options(target, **options)  # type: ignore[arg-type]
    assert says in str(refused.value)
    assert "s3cret-value" not in str(refused.value)


def test_options_build_the_hello_spec_with_a_hashed_password() -> None:
    options = tunnel_options(
        "3000",
        subdomain="shop",
        basic_auth="alice:pw",
        verify_webhook="github",
        webhook_secret="gh-secret",
    )
    spec = options.spec()
    assert (spec.name, spec.webhook, spec.webhook_secret) == ("shop", "github", "gh-secret")
    assert spec.basic_auth is not None and spec.basic_auth.startswith(protocol.BASIC_AUTH_SCHEME)
    assert spec.basic_auth != options.spec().basic_auth  # a fresh salt each time
    for text in (repr(options), str(describe(options))):
        assert "alice:pw" not in text and "gh-secret" not in text
    assert options.target == Target("127.0.0.1", 3000)


@pytest.mark.parametrize(
    ("mode", "limit"),
    [
        (None, protocol.MAX_BODY_BYTES),
        ("refuse", protocol.MAX_BODY_BYTES),
        ("redirect", protocol.MAX_BLOB_BYTES),
    ],
)
def test_large_responses_set_the_hello_and_the_response_limit(mode: str | None, limit: int) -> None:
    options = tunnel_options("3000", large_responses=mode)
    assert options.spec().large_responses == (mode or "refuse")
    assert options.max_response_bytes == limit
    assert ("large_responses" in describe(options)) == (mode == "redirect")
