"""The Lambda handlers driven by API-Gateway-shaped events (captured shapes in ``events/``):
WebSocket connect/message/disconnect and HTTP API payload 2.0, in and out."""

from __future__ import annotations

import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from hatchway import protocol
from hatchway.protocol import codec
from hatchway_local.integrations import MemoryWrites
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.core import Relay, RelayConfig
from hatchway_relay.handlers import authorizer as authorizer_handlers
from hatchway_relay.handlers import http as http_handlers
from hatchway_relay.handlers import websocket as ws_handlers
from hatchway_relay.ports import SystemClock, TokenLimits
from hatchway_relay.tokens import hash_token
from support.relay_fakes import ROUTES, TABLE, FakeAgent, FakePoster

EVENTS = Path(__file__).parent / "events"
TOKEN = "hw_handler-test-token"
CONNECTION_ID = "L0SM9cOFvHcCIhw="


def event(name: str) -> dict[str, Any]:
    """A captured event, received by the gateway just now (the relay's deadline counts from
    ``timeEpoch``)."""
    loaded = copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))
    if "timeEpoch" in loaded.get("requestContext", {}):
        loaded["requestContext"]["timeEpoch"] = int(time.time() * 1000)
    return loaded


class HandlerAgent(FakeAgent):
    """A fake agent whose messages travel as API Gateway routes them (template.yaml): answers
    through the answer integration, the rest as ``$default`` events through the WebSocket
    handler."""

    ws_handler: ws_handlers.Handler

    def send(self, message: protocol.Message) -> None:
        message_event = event("ws_message")
        message_event["body"] = codec.encode(message)
        route = ROUTES.select(message_event["body"])
        if route is None:
            assert self.ws_handler(message_event, None) == {"statusCode": 200}
            return
        assert isinstance(self.relay.store, MemoryStore)
        context = message_event["requestContext"]
        route.apply(message_event["body"], context, MemoryWrites(self.relay.store, TABLE))


@pytest.fixture
def wired() -> tuple[Relay, ws_handlers.Handler, http_handlers.Handler, FakePoster]:
    poster = FakePoster()
    relay = Relay(
        MemoryStore(),
        poster,
        SystemClock(),
        RelayConfig(
            path_url="https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/t/{name}/",
            subdomain_url="https://{name}.t.example.com/",
            domain="t.example.com",
            response_timeout=5.0,
        ),
    )
    relay.add_token(TOKEN)
    return relay, ws_handlers.make_handler(relay), http_handlers.make_handler(relay), poster


def connect(ws: ws_handlers.Handler, token: str | None = TOKEN, via: str = "header") -> dict:
    connect_event = event("ws_connect")
    if via == "header" and token:
        connect_event["headers"]["Authorization"] = f"Bearer {token}"
    else:
        del connect_event["headers"]["Authorization"]
        if token:
            connect_event["queryStringParameters"] = {"token": token}
    return ws(connect_event, None)


def serve(wired: tuple, app: Any) -> HandlerAgent:
    relay, ws, _, poster = wired
    assert connect(ws) == {"statusCode": 200}
    agent = HandlerAgent(relay, CONNECTION_ID, app)
    agent.ws_handler = ws
    poster.agents[CONNECTION_ID] = agent
    agent.send(protocol.Hello((protocol.TunnelSpec("myapp"),)))
    assert isinstance(agent.last(), protocol.Welcome)
    return agent


@pytest.mark.parametrize(
    ("token", "via", "status"),
    [
        (TOKEN, "header", 200),
        (TOKEN, "query", 200),
        ("hw_wrong", "header", 401),
        (None, "none", 401),
    ],
)
def test_connect_checks_the_token(wired: tuple, token: str | None, via: str, status: int) -> None:
    _, ws, _, _ = wired
    assert connect(ws, token, via)["statusCode"] == status


def test_full_round_trip_through_both_handlers(wired: tuple) -> None:
    def app(request: protocol.Request) -> protocol.Response:
        return protocol.Response(
            request.id,
            201,
            (
                ("content-type", "application/octet-stream"),
                ("set-cookie", "a=1; Path=/"),
                ("set-cookie", "b=2; HttpOnly"),
                ("x-multi", "a"),
                ("x-multi", "b"),
                ("transfer-encoding", "chunked"),
            ),
            request.body[::-1],
        )

    agent = serve(wired, app)
    _, _, http, _ = wired
    result = http(event("http_v2_post"), None)

    seen = agent.requests[-1]
    assert (seen.method, seen.path, seen.query) == (
        "POST",
        "/caf%C3%A9/upload",
        "tag=a&tag=b&q=%20x",
    )
    assert seen.body == bytes([0, 1, 2, 3, 254, 253, 252, 255, 0, 1, 2])
    headers = dict(seen.headers)
    assert headers["cookie"] == "session=abc; theme=dark"
    assert headers["x-repeated"] == "one,two"
    assert headers["host"] == "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
    assert "content-length" not in headers

    assert result["statusCode"] == 201
    assert result["isBase64Encoded"] is True
    assert base64.b64decode(result["body"]) == seen.body[::-1]
    # A path-mode tunnel's cookies stay under its own path (every /t/<name>/ is one origin).
    assert result["cookies"] == ["a=1; Path=/t/myapp/", "b=2; HttpOnly; Path=/t/myapp/"]
    assert result["headers"] == {"content-type": "application/octet-stream", "x-multi": "a,b"}


def test_subdomain_event_reaches_the_tunnel(wired: tuple) -> None:
    agent = serve(wired, lambda r: protocol.Response(r.id, 200, body=b"hi"))
    _, _, http, _ = wired
    result = http(event("http_v2_subdomain_get"), None)
    assert (result["statusCode"], base64.b64decode(result["body"])) == (200, b"hi")
    assert agent.requests[-1].path == "/"


def test_behind_the_front_the_visitors_host_routes_and_the_fronts_headers_stay_out(
    wired: tuple,
) -> None:
    agent = serve(wired, lambda r: protocol.Response(r.id, 200, body=b"hi"))
    _, _, http, _ = wired
    fronted = event("http_v2_subdomain_get")
    subdomain_host = fronted["headers"]["host"]
    fronted["headers"].update(
        {
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "x-hatchway-host": subdomain_host,
            "x-hatchway-target": "/",
            "cloudfront-viewer-address": "198.51.100.7:5123",
        }
    )
    assert http(fronted, None)["statusCode"] == 200
    names = {name for name, _ in agent.requests[-1].headers}
    assert not names & {"x-hatchway-host", "x-hatchway-target", "cloudfront-viewer-address"}


def test_unknown_tunnel_is_a_404_result(wired: tuple) -> None:
    _, _, http, _ = wired
    result = http(event("http_v2_subdomain_get"), None)
    assert result["statusCode"] == 404
    assert result["headers"]["x-hatchway-error"] == "tunnel-not-found"


def test_disconnect_releases_the_name(wired: tuple) -> None:
    relay, ws, http, _ = wired
    serve(wired, lambda r: protocol.Response(r.id, 200))
    assert ws(event("ws_disconnect"), None) == {"statusCode": 200}
    assert relay.store.get_connection(CONNECTION_ID) is None
    assert http(event("http_v2_subdomain_get"), None)["statusCode"] == 404


def test_plain_text_body_events_are_encoded_as_utf8(wired: tuple) -> None:
    agent = serve(wired, lambda r: protocol.Response(r.id, 200))
    _, _, http, _ = wired
    text_event = event("http_v2_subdomain_get")
    text_event.update(body="héllo", isBase64Encoded=False)
    text_event["requestContext"]["http"]["method"] = "POST"
    assert http(text_event, None)["statusCode"] == 200
    assert agent.requests[-1].body == "héllo".encode()


@pytest.mark.parametrize("key", ["authorization", "AUTHORIZATION"])
def test_bearer_header_is_case_insensitive(key: str) -> None:
    assert ws_handlers.bearer_token({"headers": {key: "Bearer abc"}}) == "abc"
    assert ws_handlers.bearer_token({"headers": {key: "Basic abc"}}) is None


@pytest.mark.parametrize(
    ("where", "token"),
    [("header", TOKEN), ("query", TOKEN), ("header", "hw_wrong"), ("none", None)],
)
def test_authorizer_allows_known_tokens_only(wired: tuple, where: str, token: str | None) -> None:
    relay = wired[0]
    authorizer = authorizer_handlers.make_handler(relay)
    auth_event = event("ws_authorizer")
    del auth_event["headers"]["Authorization"]
    if where == "header":
        auth_event["headers"]["Authorization"] = f"Bearer {token}"
    elif where == "query":
        auth_event["queryStringParameters"] = {"token": token}
    policy = authorizer(auth_event, None)  # never raises: a refusal is not a Lambda error
    (statement,) = policy["policyDocument"]["Statement"]
    assert statement == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow" if token == TOKEN else "Deny",
        "Resource": auth_event["methodArn"],
    }
    if token == TOKEN:
        assert policy["context"]["tokenId"] == policy["principalId"] == hash_token(TOKEN)[:12]
    else:
        assert "context" not in policy
    assert TOKEN not in json.dumps(policy) or token != TOKEN
    # An allowed connection notes the token's use (the dashboard's "last used").
    record = relay.store.get_token(hash_token(TOKEN))
    assert (record.last_used > 0) == (token == TOKEN)


@pytest.mark.parametrize(
    ("decoded", "forwarded"),
    [
        pytest.param("/a b", "/a%20b", id="space"),
        pytest.param("/100%", "/100%25", id="percent"),
        pytest.param("/café/ü", "/caf%C3%A9/%C3%BC", id="UTF-8"),
        pytest.param("/a#b", "/a%23b", id="hash"),
        pytest.param("/x;y=1/@z:!$&'()*+,=~._-", "/x;y=1/@z:!$&'()*+,=~._-", id="raw pchars"),
        pytest.param("/[v6]", "/[v6]", id="brackets stay raw"),
        pytest.param('/"<>\\^`{|}', "/%22%3C%3E%5C%5E%60%7B%7C%7D", id="never raw"),
    ],
)
def test_the_decoded_raw_path_is_re_encoded_for_the_app(
    wired: tuple, decoded: str, forwarded: str
) -> None:
    agent = serve(wired, lambda r: protocol.Response(r.id, 200))
    _, _, http, _ = wired
    path_event = event("http_v2_post")
    path_event["rawPath"] = "/t/myapp" + decoded  # what the HTTP API hands Lambda
    assert http(path_event, None)["statusCode"] == 200
    assert agent.requests[-1].path == forwarded


def test_the_wait_counts_from_when_the_gateway_received_the_request(wired: tuple) -> None:
    _, _, http, _ = wired
    serve(wired, lambda r: None)  # never answers
    late = event("http_v2_subdomain_get")
    late["requestContext"]["timeEpoch"] = int((time.time() - 4.8) * 1000)  # 5 s timeout
    started = time.monotonic()
    result = http(late, None)
    assert result["statusCode"] == 504
    assert time.monotonic() - started < 2.0


def test_connect_after_the_authorizer_trusts_its_token_id(wired: tuple) -> None:
    relay, ws, _, _ = wired
    connect_event = event("ws_connect_authorized")
    connect_event["requestContext"]["authorizer"]["tokenId"] = "abcdef123456"
    assert ws(connect_event, None) == {"statusCode": 200}
    assert relay.store.get_connection(CONNECTION_ID).token_id == "abcdef123456"


def test_the_authorizer_hands_a_tokens_limits_to_connect(wired: tuple) -> None:
    relay, ws, _, _ = wired
    relay.add_token("hw_limited-token", limits=TokenLimits(rate=5, max_tunnels=2))
    authorizer = authorizer_handlers.make_handler(relay)
    auth_event = event("ws_authorizer")
    auth_event["headers"]["Authorization"] = "Bearer hw_limited-token"
    context = authorizer(auth_event, None)["context"]
    assert all(isinstance(value, str) for value in context.values())  # API Gateway's rule
    connect_event = event("ws_connect_authorized")
    connect_event["requestContext"]["authorizer"] = context
    assert ws(connect_event, None) == {"statusCode": 200}
    limits = relay.store.get_connection(CONNECTION_ID).limits
    assert (limits.rate, limits.max_tunnels) == (5, 2)
