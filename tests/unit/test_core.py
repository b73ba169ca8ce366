"""The relay core, specified with fakes: MemoryStore, a poster that delivers to fake agents, and a
fake clock. No sockets, no threads (except where a race is the point)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import threading
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway import protocol
from hatchway.protocol import codec
from hatchway_local.platform import wire_header
from hatchway_relay import admin, restarts, shares, visits
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.core import Relay, RelayConfig, Reply, Visit, error_reply
from hatchway_relay.ports import Claim, PostFailed, TokenLimits
from hatchway_relay.replies import AwaitChunk, StreamCut, StreamedReply
from hatchway_relay.tokens import hash_token
from hatchway_relay.visits import run_blocking
from support.fake_clock import FakeClock
from support.relay_fakes import App, FakeAgent, FakeBlobs, FakePoster, agent_message, echo_app

TOKEN_A = "hw_token-a"
TOKEN_B = "hw_token-b"


class Harness:
    def __init__(
        self,
        response_timeout: float = 28.0,
        custom_hostnames: dict[str, str] | None = None,
        streams: bool = False,
    ) -> None:
        self.clock = FakeClock()
        self.store = MemoryStore(self.clock)
        self.poster = FakePoster()
        self.blobs = FakeBlobs()
        self.relay = Relay(
            self.store,
            self.poster,
            self.clock,
            RelayConfig(
                path_url="http://relay.test/t/{name}/",
                subdomain_url="http://{name}.t.example.test/",
                domain="t.example.test",
                custom_hostnames=custom_hostnames or {},
                response_timeout=response_timeout,
                streams=streams,
            ),
            blobs=self.blobs,
        )
        self.relay.add_token(TOKEN_A, "laptop")
        self.relay.add_token(TOKEN_B, "someone else")

    def agent(
        self,
        connection_id: str,
        name: str | None = "myapp",
        token: str = TOKEN_A,
        app: App = echo_app,
        instance: str = "",
        live: bool = True,
        pool: bool = False,
    ) -> FakeAgent:
        assert self.relay.connect(connection_id, token)
        agent = FakeAgent(self.relay, connection_id, app, self.blobs, live=live)
        self.poster.agents[connection_id] = agent
        spec = protocol.TunnelSpec(name, pool=pool)
        agent.send(protocol.Hello((spec,), instance=instance))
        return agent

    def get(self, url_path: str = "/", host: str = "myapp.t.example.test", **kw: object) -> Visit:
        path, _, query = url_path.partition("?")
        return Visit(
            method=kw.get("method", "GET"),
            host=host,
            path=path,
            query=query,
            headers=tuple(kw.get("headers", ())),
            body=kw.get("body", b""),
        )  # type: ignore[arg-type]


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_hello_is_welcomed_with_both_urls(h: Harness) -> None:
    agent = h.agent("c1", "myapp")
    assert agent.last() == protocol.Welcome(
        (
            protocol.TunnelInfo(
                "myapp", "http://myapp.t.example.test/", "http://relay.test/t/myapp/"
            ),
        ),
        heartbeat_seconds=protocol.HEARTBEAT_SECONDS,
        now=h.clock.now(),  # the relay's clock, which request deadlines are on
    )


def test_without_a_name_the_relay_picks_a_valid_random_one(h: Harness) -> None:
    agent = h.agent("c1", None)
    welcome = agent.last()
    assert isinstance(welcome, protocol.Welcome)
    assert protocol.validate_name(welcome.tunnels[0].name)


@pytest.mark.parametrize(
    ("host", "path", "forwarded"),
    [
        ("myapp.t.example.test", "/a/b", "/a/b"),
        ("MyApp.T.Example.Test:443", "/", "/"),
        ("abc.execute-api.eu-west-1.amazonaws.com", "/t/myapp/a/b", "/a/b"),
        ("127.0.0.1:8080", "/t/myapp/", "/"),
        ("127.0.0.1:8080", "/t/myapp/%2F%2Fx", "/%2F%2Fx"),
    ],
)
def test_routes_by_subdomain_or_path(h: Harness, host: str, path: str, forwarded: str) -> None:
    agent = h.agent("c1")
    reply = h.relay.visit(h.get(path + "?q=1&q=2", host=host))
    assert reply.status == 200
    assert agent.requests[-1].path == forwarded
    assert agent.requests[-1].query == "q=1&q=2"


def test_path_mode_without_trailing_slash_redirects(h: Harness) -> None:
    h.agent("c1")
    reply = h.relay.visit(h.get("/t/myapp?x=1", host="127.0.0.1:8080"))
    assert (reply.status, dict(reply.headers)["location"]) == (308, "/t/myapp/?x=1")


@pytest.mark.parametrize(
    ("host", "path", "code"),
    [
        ("other.t.example.test", "/", "tunnel-not-found"),
        ("127.0.0.1:8080", "/t/other/", "tunnel-not-found"),
        ("127.0.0.1:8080", "/", "no-tunnel-in-url"),
        ("a.b.t.example.test", "/", "no-tunnel-in-url"),
    ],
)
def test_unknown_names_are_404_with_an_explanation(
    h: Harness, host: str, path: str, code: str
) -> None:
    h.agent("c1")
    reply = h.relay.visit(h.get(path, host=host))
    assert reply.status == 404
    assert dict(reply.headers)["x-hatchway-error"] == code
    assert b"tunnel" in reply.body


def test_request_and_response_cross_byte_exact(h: Harness) -> None:
    agent = h.agent("c1")
    body = bytes(range(256)) * 400  # several frames
    headers = (("x-a", "1,2"), ("cookie", "a=1; b=2"), ("connection", "keep-alive"))
    reply = h.relay.visit(h.get("/p%C3%A9?x=%20", method="PUT", headers=headers, body=body))
    seen = agent.requests[-1]
    assert (seen.method, seen.path, seen.query, seen.body) == ("PUT", "/p%C3%A9", "x=%20", body)
    assert seen.headers == (  # hop-by-hop dropped; the scheme the relay was reached by added
        ("x-a", "1,2"),
        ("cookie", "a=1; b=2"),
        ("x-forwarded-proto", "http"),
    )
    assert reply.status == 200 and reply.body == body
    assert dict(reply.headers)["x-seen"] == "PUT /p%C3%A9?x=%20"


def test_body_over_the_ceiling_is_413_and_never_reaches_the_agent(h: Harness) -> None:
    agent = h.agent("c1")
    at_limit = h.relay.visit(h.get("/", method="POST", body=b"x" * protocol.MAX_BODY_BYTES))
    over = h.relay.visit(h.get("/", method="POST", body=b"x" * (protocol.MAX_BODY_BYTES + 1)))
    assert at_limit.status == 200
    assert over.status == 413 and b"visitor" in over.body
    assert len(agent.requests) == 1


def test_agent_gone_is_502_and_drops_exactly_that_connection(h: Harness) -> None:
    h.agent("c1", "myapp")
    h.agent("c2", "other", token=TOKEN_B)
    del h.poster.agents["c1"]  # the socket vanished without a $disconnect: posts now get 410
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502 and dict(reply.headers)["x-hatchway-error"] == "agent-gone"
    assert h.store.get_connection("c1") is None and h.store.get_claim("myapp") is None
    assert h.store.get_connection("c2") is not None
    assert h.relay.visit(h.get("/", host="other.t.example.test")).status == 200


def test_silent_agent_gets_504_at_the_configured_deadline() -> None:
    h = Harness(response_timeout=3.0)
    h.agent("c1", app=lambda request: None)
    started = h.clock.now()
    reply = h.relay.visit(h.get("/slow"))
    assert reply.status == 504 and b"did not answer within 3 s" in reply.body
    assert h.clock.now() - started == pytest.approx(3.0)


def test_agent_that_disconnects_while_a_request_waits_gets_502() -> None:
    h = Harness(response_timeout=20.0)

    def disconnect_instead_of_answering(request: protocol.Request) -> None:
        h.relay.disconnect("c1")

    h.agent("c1", app=disconnect_instead_of_answering)
    started = h.clock.now()
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502 and b"disconnected before answering" in reply.body
    assert h.clock.now() - started < 1.0


def test_local_app_fault_is_502_naming_the_local_app(h: Harness) -> None:
    def refused(request: protocol.Request) -> protocol.Response:
        fault = protocol.Fault("local app", "connection refused by http://127.0.0.1:3000")
        return protocol.Response(request.id, 502, fault=fault)

    h.agent("c1", app=refused)
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502
    assert dict(reply.headers)["x-hatchway-error"] == "local-app-error"
    assert b"local app failed" in reply.body and b"connection refused" in reply.body


def test_a_response_for_another_connections_request_is_ignored(h: Harness) -> None:
    intruder = h.agent("c2", "other", token=TOKEN_B)

    def answer_then_intrude(request: protocol.Request) -> protocol.Response:
        intruder.send(protocol.Response(request.id, 200, body=b"forged"))
        return protocol.Response(request.id, 201, body=b"genuine")

    h.agent("c1", app=answer_then_intrude)
    reply = h.relay.visit(h.get("/"))
    assert (reply.status, reply.body) == (201, b"genuine")


def test_another_token_cannot_take_a_live_name(h: Harness) -> None:
    h.agent("c1", "myapp")
    second = h.agent("c2", "myapp", token=TOKEN_B)
    assert second.last() == protocol.Error("name_taken", second.last().message)  # type: ignore[union-attr]
    assert "held by another token" in second.last().message  # type: ignore[union-attr]
    assert h.store.get_claim("myapp").connection_id == "c1"  # type: ignore[union-attr]


def test_same_token_reconnect_takes_the_name_back(h: Harness) -> None:
    h.agent("c1", "myapp")
    second = h.agent("c2", "myapp")
    assert isinstance(second.last(), protocol.Welcome)
    h.relay.disconnect("c1")  # the old connection's late $disconnect must not release it
    h.relay.visit(h.get("/"))
    assert len(second.requests) == 1


def test_name_of_a_dead_connection_can_be_taken_over(h: Harness) -> None:
    h.agent("c1", "myapp")
    h.store.delete_connection("c1")  # the record is gone but the claim was never released
    second = h.agent("c2", "myapp", token=TOKEN_B)
    assert isinstance(second.last(), protocol.Welcome)


def test_claim_expires_without_pings_and_pings_renew_it(h: Harness) -> None:
    agent = h.agent("c1", "myapp")
    h.clock.advance(protocol.CLAIM_LEASE_SECONDS - 1)
    agent.send(protocol.Ping(7.0))
    assert agent.last() == protocol.Pong(7.0)
    h.clock.advance(protocol.CLAIM_LEASE_SECONDS - 1)
    assert h.relay.visit(h.get("/")).status == 200
    h.clock.advance(2)
    assert h.relay.visit(h.get("/")).status == 404


def test_two_tokens_racing_for_one_name_exactly_one_wins() -> None:
    for _ in range(20):
        h = Harness()
        agents = {}
        for cid, token in (("c1", TOKEN_A), ("c2", TOKEN_B)):
            assert h.relay.connect(cid, token)
            agents[cid] = FakeAgent(h.relay, cid, echo_app)
            h.poster.agents[cid] = agents[cid]
        barrier = threading.Barrier(2)

        def hello(agent: FakeAgent, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            agent.send(protocol.Hello((protocol.TunnelSpec("contested"),)))

        threads = [threading.Thread(target=hello, args=(a,)) for a in agents.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        outcomes = sorted(type(a.last()).__name__ for a in agents.values())
        assert outcomes == ["Error", "Welcome"]
        winner = next(c for c, a in agents.items() if isinstance(a.last(), protocol.Welcome))
        assert h.store.get_claim("contested").connection_id == winner  # type: ignore[union-attr]


@pytest.mark.parametrize("token", [None, "", "hw_wrong", TOKEN_A + "x"])
def test_unknown_tokens_are_refused(h: Harness, token: str | None) -> None:
    assert h.relay.connect("c9", token) is False
    assert h.store.get_connection("c9") is None


def test_tokens_are_stored_only_as_hashes(h: Harness) -> None:
    records = h.store.list_tokens()
    assert {r.token_hash for r in records} == {hash_token(TOKEN_A), hash_token(TOKEN_B)}
    assert all(TOKEN_A not in repr(r) and TOKEN_B not in repr(r) for r in records)


def test_malformed_frames_get_an_error_and_the_session_survives(h: Harness) -> None:
    agent = h.agent("c1")
    for bad in ["{not json", '{"type":"nope"}', '{"type":"hello","version":99,"tunnels":[]}']:
        h.relay.on_message("c1", bad)
        assert isinstance(agent.last(), protocol.Error)
    assert h.relay.visit(h.get("/")).status == 200


def test_disconnect_releases_only_its_own_names(h: Harness) -> None:
    h.agent("c1", "myapp")
    h.agent("c2", "other", token=TOKEN_B)
    h.relay.disconnect("c1")
    assert h.store.get_claim("myapp") is None
    assert h.store.get_claim("other").connection_id == "c2"  # type: ignore[union-attr]


def test_connecting_notes_the_tokens_use_at_most_once_a_minute(h: Harness) -> None:
    record = h.relay.add_token("hw_token-z", "laptop")
    assert record.last_used == 0
    assert h.relay.connect("z1", "hw_token-z")
    noted = h.store.get_token(record.token_hash)
    assert noted is not None and noted.last_used == h.clock.now()
    h.clock.advance(30)
    assert h.relay.connect("z2", "hw_token-z")
    assert h.store.get_token(record.token_hash) == noted  # a burst of reconnects: one write
    h.clock.advance(31)
    assert h.relay.connect("z3", "hw_token-z")
    assert h.store.get_token(record.token_hash).last_used == h.clock.now()  # type: ignore[union-attr]
    assert not h.relay.connect("z4", "hw_token-zz")


def test_a_token_whose_use_cannot_be_noted_still_connects(h: Harness) -> None:
    record = h.relay.add_token("hw_token-z", "laptop")

    def failing(token_hash: str, now: float) -> None:
        raise RuntimeError("AccessDenied: an older stack's authorizer may not write")

    h.store.note_token_use = failing  # type: ignore[method-assign]
    assert h.relay.admit("hw_token-z") == record
    assert h.relay.connect("z1", "hw_token-z")


def test_a_reserved_name_is_only_for_its_token() -> None:
    h = Harness()
    h.relay.add_token("hw_token-c", "owner", reserved=("mine",))
    intruder = h.agent("c1", "mine", token=TOKEN_A)
    assert isinstance(intruder.last(), protocol.Error)
    assert "reserved for another token" in intruder.last().message  # type: ignore[union-attr]
    owner = h.agent("c2", "mine", token="hw_token-c")
    assert isinstance(owner.last(), protocol.Welcome)


def test_a_name_reserved_by_another_token_cannot_be_reserved_again(h: Harness) -> None:
    h.relay.add_token("hw_token-c", reserved=("mine",))
    with pytest.raises(protocol.ProtocolError, match="reserved for another token"):
        h.relay.add_token("hw_token-d", reserved=("mine",))


# --- Custom hostnames: a user's own name serving one reserved tunnel ---------------------------

HOSTNAMES = {"api.mycompany.test": "mine", "hooks.mycompany.test": "mine", "www.other.test": "x"}


@pytest.fixture
def hosted() -> Harness:
    h = Harness(custom_hostnames=HOSTNAMES)
    h.relay.add_token("hw_token-c", "owner", reserved=("mine",))
    return h


def test_the_welcome_lists_the_custom_hostnames_first(hosted: Harness) -> None:
    owner = hosted.agent("c1", "mine", token="hw_token-c")
    info = owner.last().tunnels[0]  # type: ignore[union-attr]
    assert info.custom_urls == ("https://api.mycompany.test/", "https://hooks.mycompany.test/")
    assert info.public_urls[0] == "https://api.mycompany.test/"
    assert info.public_urls[-1] == "http://relay.test/t/mine/"


@pytest.mark.parametrize(
    ("host", "path", "forwarded"),
    [
        ("api.mycompany.test", "/v1/x", "/v1/x"),
        ("API.MyCompany.test:443", "/", "/"),
        ("hooks.mycompany.test", "/t/other/a", "/t/other/a"),  # the path is the app's own
    ],
)
def test_a_custom_hostname_routes_to_its_tunnel_whatever_the_path(
    hosted: Harness, host: str, path: str, forwarded: str
) -> None:
    owner = hosted.agent("c1", "mine", token="hw_token-c")
    hosted.agent("c2", "other", token=TOKEN_B)
    reply = hosted.relay.visit(hosted.get(path, host=host))
    assert reply.status == 200
    assert owner.requests[-1].path == forwarded


def test_an_unreserved_tunnel_behind_a_custom_hostname_is_claimed_by_nobody(
    hosted: Harness,
) -> None:
    agent = hosted.agent("c1", "x", token=TOKEN_A)
    error = agent.last()
    assert isinstance(error, protocol.Error) and error.code == "name_taken"
    assert "serves www.other.test" in error.message
    assert "hatchway-admin reserve x" in error.message
    reply = hosted.relay.visit(hosted.get("/", host="www.other.test"))
    assert reply.status == 404
    assert dict(reply.headers)["x-hatchway-error"] == "tunnel-not-found"


def test_another_token_cannot_claim_a_custom_hostnames_tunnel(hosted: Harness) -> None:
    intruder = hosted.agent("c1", "mine", token=TOKEN_A)
    assert "reserved for another token" in intruder.last().message  # type: ignore[union-attr]


# --- Tunnel guards: enforced before anything reaches the agent ---------------------------------

SECRET = "whsec_core-test"
CREDENTIALS_HASH = protocol.hash_basic_auth("alice:pw", b"0" * protocol.BASIC_AUTH_SALT_BYTES)


def guarded_agent(h: Harness, spec: protocol.TunnelSpec) -> FakeAgent:
    assert h.relay.connect("c1", TOKEN_A)
    agent = FakeAgent(h.relay, "c1", echo_app)
    h.poster.agents["c1"] = agent
    agent.send(protocol.Hello((spec,)))
    return agent


def basic(credentials: str) -> tuple[str, str]:
    return ("authorization", "Basic " + base64.b64encode(credentials.encode()).decode())


def github_signature(body: bytes) -> tuple[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return ("x-hub-signature-256", f"sha256={digest}")


def test_the_welcome_confirms_the_guards_and_the_claim_holds_them(h: Harness) -> None:
    spec = protocol.TunnelSpec(
        "myapp", basic_auth=CREDENTIALS_HASH, webhook="github", webhook_secret=SECRET
    )
    agent = guarded_agent(h, spec)
    welcome = agent.last()
    assert isinstance(welcome, protocol.Welcome)
    assert welcome.tunnels[0].guards == ("basic_auth", "webhook:github")
    held = h.store.get_claim("myapp")
    assert held is not None
    assert (held.basic_auth, held.webhook, held.webhook_secret) == (
        CREDENTIALS_HASH,
        "github",
        SECRET,
    )


@pytest.mark.parametrize(
    ("spec", "headers", "body", "status"),
    [
        pytest.param(
            protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH), (), b"", 401, id="no auth"
        ),
        pytest.param(
            protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH),
            (basic("alice:nope"),),
            b"",
            401,
            id="wrong password",
        ),
        pytest.param(
            protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH),
            (basic("alice:pw"),),
            b"",
            200,
            id="right password",
        ),
        pytest.param(
            protocol.TunnelSpec("myapp", webhook="github", webhook_secret=SECRET),
            (),
            b"{}",
            401,
            id="unsigned webhook",
        ),
        pytest.param(
            protocol.TunnelSpec("myapp", webhook="github", webhook_secret=SECRET),
            (github_signature(b"{ }"),),
            b"{}",
            403,
            id="badly signed webhook",
        ),
        pytest.param(
            protocol.TunnelSpec("myapp", webhook="github", webhook_secret=SECRET),
            (github_signature(b"{}"),),
            b"{}",
            200,
            id="signed webhook",
        ),
    ],
)
def test_refused_visitors_never_reach_the_agent(
    h: Harness,
    spec: protocol.TunnelSpec,
    headers: tuple[tuple[str, str], ...],
    body: bytes,
    status: int,
) -> None:
    agent = guarded_agent(h, spec)
    reply = h.relay.visit(h.get("/hook", method="POST", headers=headers, body=body))
    assert reply.status == status
    assert len(agent.requests) == (1 if status == 200 else 0)
    if status == 401 and spec.basic_auth:
        # Each tunnel its own realm: a browser never sends one tunnel's password to another.
        assert dict(reply.headers)["www-authenticate"].startswith('Basic realm="hatchway: myapp"')
    if status != 200:
        assert b"-- hatchway relay" in reply.body  # the relay's own page, not the app's


def test_the_tunnel_password_is_consumed_by_the_relay(h: Harness) -> None:
    agent = guarded_agent(h, protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH))
    h.relay.visit(h.get("/", headers=(basic("alice:pw"), ("x-other", "1"))))
    assert agent.requests[-1].headers == (("x-other", "1"), ("x-forwarded-proto", "http"))


def test_a_new_hello_without_guards_lifts_them(h: Harness) -> None:
    guarded_agent(h, protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH))
    again = h.agent("c2", "myapp")  # the same token reconnects with a plain tunnel
    assert h.relay.visit(h.get("/")).status == 200 and len(again.requests) == 1


# --- One message each way, large bodies through the blob store --------------------------------


def test_a_request_and_its_response_are_one_message_each(h: Harness) -> None:
    h.agent("c1")
    posted_before = len(h.poster.posted)
    body = b'{"k": "v"}' * 5000  # 50 KB of JSON: compressed inline
    assert h.relay.visit(h.get("/", method="POST", body=body)).body == body
    assert len(h.poster.posted) - posted_before == 1 and h.blobs.puts == 0


@pytest.mark.parametrize(
    ("size", "through_blobs"),
    [
        (protocol.MAX_INLINE_BODY_BYTES, False),
        (protocol.MAX_INLINE_BODY_BYTES + 1, True),
        (4 * 1024 * 1024, True),
    ],
)
def test_request_bodies_above_a_message_go_through_the_blob_store(
    h: Harness, size: int, through_blobs: bool
) -> None:
    agent = h.agent("c1")
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    reply = h.relay.visit(h.get("/", method="POST", body=body))
    assert reply.status == 200 and reply.body == body
    assert agent.requests[-1].body == body
    assert (h.blobs.puts == 1) is through_blobs
    assert all(len(text) <= protocol.MAX_MESSAGE_BYTES for _, text in h.poster.posted)


def test_a_large_response_is_uploaded_returned_whole_and_then_deleted(h: Harness) -> None:
    body = random.Random(1).randbytes(1024 * 1024)  # incompressible
    h.agent("c1", app=lambda r: protocol.Response(r.id, 200, body=body))
    reply = h.relay.visit(h.get("/big"))
    assert reply.status == 200 and reply.body == body
    assert h.blobs.objects == {}  # read once, then deleted: no storage billed for it


def test_a_large_request_body_is_deleted_once_answered(h: Harness) -> None:
    h.agent("c1")
    body = random.Random(2).randbytes(200_000)
    assert h.relay.visit(h.get("/", method="POST", body=body)).body == body
    assert h.blobs.puts >= 1 and h.blobs.objects == {}


def _uploading(size: int, blobs: FakeBlobs) -> App:
    def app(request: protocol.Request) -> protocol.Response:
        assert request.upload_url is not None
        blobs.objects[blobs.at(request.upload_url)] = b"z" * size
        return protocol.Response(request.id, 200, uploaded=size)

    return app


def test_a_response_above_the_lambda_ceiling_is_413_naming_the_limit(h: Harness) -> None:
    h.agent("c1", app=_uploading(protocol.MAX_BODY_BYTES + 1, h.blobs))
    reply = h.relay.visit(h.get("/huge"))
    assert reply.status == 413
    assert dict(reply.headers)["x-hatchway-error"] == "response-too-large"
    assert str(protocol.MAX_BODY_BYTES).encode() in reply.body and b"redirect" in reply.body


def test_with_redirect_a_response_above_the_ceiling_is_a_302_to_the_blob(h: Harness) -> None:
    assert h.relay.connect("c1", TOKEN_A)
    agent = FakeAgent(h.relay, "c1", _uploading(20 * 1024 * 1024, h.blobs), h.blobs)
    h.poster.agents["c1"] = agent
    agent.send(protocol.Hello((protocol.TunnelSpec("myapp", large_responses="redirect"),)))
    reply = h.relay.visit(h.get("/huge"))
    assert reply.status == 302
    location = dict(reply.headers)["location"]
    # Kept for the visitor to fetch: the bucket's lifecycle rule removes it later.
    assert len(h.blobs.objects[h.blobs.at(location)]) == 20 * 1024 * 1024


def test_an_upload_the_blob_store_does_not_hold_is_a_coded_502(h: Harness) -> None:
    h.agent("c1", app=lambda r: protocol.Response(r.id, 200, uploaded=10))
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502 and dict(reply.headers)["x-hatchway-error"] == "agent-bad-response"


def test_without_a_blob_store_bodies_above_a_message_are_413() -> None:
    h = Harness()
    h.relay.blobs = None
    h.agent("c1")
    reply = h.relay.visit(h.get("/", method="POST", body=b"x" * (protocol.MAX_BODY_BYTES // 2)))
    assert reply.status == 413 and b"visitor" in reply.body


# --- Who may answer, and how often --------------------------------------------------------------


def test_a_forgery_alone_leaves_the_visitor_waiting_for_the_real_agent(h: Harness) -> None:
    intruder = h.agent("c2", "other", token=TOKEN_B)

    def frozen_after_a_forgery(request: protocol.Request) -> None:
        intruder.send(protocol.Response(request.id, 200, body=b"forged"))

    h.agent("c1", app=frozen_after_a_forgery, live=False)
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502 and b"forged" not in reply.body


def test_the_first_answer_stays_and_a_repeat_or_another_changes_nothing(h: Harness) -> None:
    def answer_three_times(request: protocol.Request) -> protocol.Response:
        agent.send(protocol.Response(request.id, 200, body=b"one"))
        agent.send(protocol.Response(request.id, 200, body=b"one"))  # delivered twice
        agent.send(protocol.Response(request.id, 500, body=b"two"))
        return protocol.Response(request.id, 200, body=b"one")

    agent = h.agent("c1", app=answer_three_times)
    reply = h.relay.visit(h.get("/"))
    assert (reply.status, reply.body) == (200, b"one")
    assert not [m for m in agent.received if isinstance(m, protocol.Error)]


def test_an_answer_after_the_deadline_is_kept_by_nobody(h: Harness) -> None:
    held: list[protocol.Request] = []
    agent = h.agent("c1", app=lambda r: held.append(r) or None)  # type: ignore[func-returns-value]
    h.relay.config = RelayConfig(
        path_url="http://relay.test/t/{name}/", domain="t.example.test", response_timeout=2.0
    )
    assert h.relay.visit(h.get("/")).status == 504
    h.clock.advance(10.0)
    agent.send(protocol.Response(held[0].id, 200, body=b"late"))
    assert h.store.wait_response(held[0].id, h.clock.now()) is None


class FailingPoster(FakePoster):
    def post(self, connection_id: str, text: str) -> None:
        if codec.decode(text).__class__ is protocol.Request:
            raise PostFailed(connection_id, "LimitExceededException")
        super().post(connection_id, text)


def test_a_post_that_fails_for_another_reason_than_gone_is_a_coded_502() -> None:
    h = Harness()
    failing = FailingPoster()
    h.poster = h.relay.poster = failing  # type: ignore[assignment]
    h.agent("c1")
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502
    assert dict(reply.headers)["x-hatchway-error"] == "relay-post-failed"
    assert h.store.get_connection("c1") is not None  # not gone: kept


# --- Deadlines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received_ago", "time_left", "waited"),
    [
        (0.0, None, 28.0),
        (6.0, None, 22.0),  # a cold start spent 6 s of the gateway's budget
        (0.0, 10.0, 9.0),  # the function has 10 s left; it keeps one for itself
    ],
)
def test_the_wait_ends_before_the_gateway_and_the_function_give_up(
    received_ago: float, time_left: float | None, waited: float
) -> None:
    h = Harness()
    h.agent("c1", app=lambda r: None)
    started = h.clock.now()
    visit = h.get("/")
    visit = Visit(
        **{**visit.__dict__, "received_at": started - received_ago, "time_left": time_left}
    )
    assert h.relay.visit(visit).status == 504
    assert h.clock.now() - started == pytest.approx(waited, abs=0.6)


def test_the_request_carries_its_deadline_to_the_agent(h: Harness) -> None:
    agent = h.agent("c1")
    now = h.clock.now()
    h.relay.visit(h.get("/"))
    assert agent.requests[-1].deadline == pytest.approx(now + 28.0)


# --- Counts come from pings, not from a write per request ---------------------------------------


def test_pings_carry_the_served_counts(h: Harness) -> None:
    agent = h.agent("c1")
    for _ in range(3):
        h.relay.visit(h.get("/"))
    claim = h.store.get_claim("myapp")
    assert claim is not None and claim.served == 0  # nothing written per request
    agent.send(protocol.Ping(1.0, (("myapp", 3),)))
    claim = h.store.get_claim("myapp")
    assert claim is not None and claim.served == 3


def test_pings_carry_each_tunnels_errors_and_latency(h: Harness) -> None:
    agent = h.agent("c1")
    health = protocol.TunnelHealth((("local-app-refused", 2), ("app-5xx", 1)), 14, 90)
    # Health for a name this connection does not hold is not stored anywhere.
    agent.send(protocol.Ping(1.0, (("myapp", 5),), (("myapp", health), ("other", health))))
    assert agent.last() == protocol.Pong(1.0)
    claim = h.store.get_claim("myapp")
    assert claim is not None
    assert (claim.served, claim.errors) == (5, (("app-5xx", 1), ("local-app-refused", 2)))
    assert (claim.latency_p50_ms, claim.latency_p95_ms) == (14, 90)
    assert h.store.get_claim("other") is None
    # A ping without health (an older agent, or nothing answered) says there is none to show.
    agent.send(protocol.Ping(2.0, (("myapp", 6),)))
    claim = h.store.get_claim("myapp")
    assert claim is not None and (claim.served, claim.errors, claim.latency_p50_ms) == (6, (), None)


def test_a_pool_members_ping_reports_its_own_health(h: Harness) -> None:
    agents = pool_of_three(h)
    health = protocol.TunnelHealth((("local-app-timeout", 1),), 2500, 2500)
    agents[1].send(protocol.Ping(1.0, (("myapp", 1),), (("myapp", health),)))
    claim = h.store.get_claim("myapp")
    assert claim is not None
    assert [(m.served, m.errors, m.latency_p95_ms) for m in claim.members] == [
        (0, (), None),
        (1, (("local-app-timeout", 1),), 2500),
        (0, (), None),
    ]


def test_an_agent_fault_may_ask_for_413(h: Harness) -> None:
    def too_large(request: protocol.Request) -> protocol.Response:
        return protocol.Response(request.id, 413, fault=protocol.Fault("local app", "too big"))

    h.agent("c1", app=too_large)
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 413 and dict(reply.headers)["x-hatchway-error"] == "response-too-large"


# --- A silent agent, a lost name, a lost write --------------------------------------------------


def test_an_agent_that_neither_answers_nor_marks_is_unresponsive_within_10_s() -> None:
    h = Harness()
    h.agent("c1", app=lambda r: None, live=False)  # stopped: no answer, no mark
    started = h.clock.now()
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502
    assert dict(reply.headers)["x-hatchway-error"] == "agent-unresponsive"
    assert h.clock.now() - started == pytest.approx(protocol.AGENT_SILENCE_SECONDS, abs=0.6)
    assert h.clock.now() - started < 10


def test_a_slow_app_behind_a_live_agent_gets_the_full_deadline() -> None:
    h = Harness()
    h.agent("c1", app=lambda r: None, live=True)  # marks the request as being worked on
    started = h.clock.now()
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 504 and h.clock.now() - started == pytest.approx(28.0)


def test_a_quick_answer_costs_no_mark(h: Harness) -> None:
    h.agent("c1")
    h.relay.visit(h.get("/"))
    assert not any('"working"' in text for _, text in h.poster.posted)


def test_a_mark_for_another_connections_request_is_ignored() -> None:
    h = Harness()
    intruder = h.agent("c2", "other", token=TOKEN_B)

    def frozen_but_vouched_for(request: protocol.Request) -> None:
        intruder.send(protocol.Working(request.id))  # cannot vouch for another's request

    h.agent("c1", app=frozen_but_vouched_for, live=False)
    assert h.relay.visit(h.get("/")).status == 502


def test_another_process_of_the_same_token_is_refused_while_the_holder_lives(
    h: Harness,
) -> None:
    h.agent("c1", instance="first")
    second = h.agent("c2", instance="second")
    refusal = second.last()
    assert isinstance(refusal, protocol.Error) and refusal.code == "name_taken"
    assert "another agent using your token" in refusal.message
    claim = h.store.get_claim("myapp")
    assert claim is not None and claim.connection_id == "c1"


def test_the_same_process_reconnecting_takes_its_name_back(h: Harness) -> None:
    h.agent("c1", instance="first")
    again = h.agent("c2", instance="first")  # a reconnect or a rotation
    assert isinstance(again.last(), protocol.Welcome)
    claim = h.store.get_claim("myapp")
    assert claim is not None and claim.connection_id == "c2"


def test_a_restarted_process_takes_the_name_of_a_dead_one(h: Harness) -> None:
    h.agent("c1", instance="first")
    h.store.put_connection(
        replace(h.store.get_connection("c1"), expires_at=h.clock.now() - 1)  # type: ignore[arg-type]
    )
    assert isinstance(h.agent("c2", instance="second").last(), protocol.Welcome)


def test_a_ping_that_finds_its_name_gone_tells_the_agent(h: Harness) -> None:
    agent = h.agent("c1")
    assert h.store.release_claim("myapp", "c1")  # lost: e.g. its lease ran out meanwhile
    agent.send(protocol.Ping(1.0))
    lost = agent.last()
    assert isinstance(lost, protocol.Error) and lost.code == "name_lost"
    assert "myapp" in lost.message


class CopyingStore(MemoryStore):
    """Hands answers back as other bytes, as a store that reads them from elsewhere does."""

    def wait_response(self, request_id: str, until: float, hint: float = 0.0) -> bytes | None:
        answer = super().wait_response(request_id, until, hint)
        return None if answer is None else bytes(bytearray(answer))


@pytest.mark.parametrize("copying", [False, True], ids=["same bytes", "copied bytes"])
def test_an_answer_is_decoded_once_from_what_the_store_holds(
    copying: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = Harness()
    if copying:
        h.store = h.relay.store = CopyingStore(h.clock)  # type: ignore[misc]
        h.relay.add_token(TOKEN_A)
    h.agent("c1")
    read_back: list[bytes] = []
    original = codec.unpack_stored

    def counted(data: bytes) -> tuple[protocol.Response, bytes | None]:
        read_back.append(data)
        return original(data)

    monkeypatch.setattr(codec, "unpack_stored", counted)
    reply = h.relay.visit(h.get("/hello", method="POST", body=b"hi"))
    assert (reply.status, reply.body) == (200, b"hi")
    assert ("x-seen", "POST /hello") in reply.headers
    assert len(read_back) == 1


# --- A warm relay remembers a claim for a moment -----------------------------------------------


class CountingStore(MemoryStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.claim_reads = 0

    def get_claim(self, name: str) -> Claim | None:
        self.claim_reads += 1
        return super().get_claim(name)


def counting_harness() -> tuple[Harness, CountingStore]:
    h = Harness()
    store = CountingStore(h.clock)
    h.store = h.relay.store = store  # type: ignore[misc]
    h.relay.add_token(TOKEN_A)
    h.relay.add_token(TOKEN_B)
    return h, store


def test_a_busy_tunnel_reads_its_claim_once_a_second() -> None:
    h, store = counting_harness()
    h.agent("c1")
    reads = store.claim_reads
    for _ in range(5):
        assert h.relay.visit(h.get("/")).status == 200
        h.clock.advance(0.1)
    assert store.claim_reads - reads == 1
    h.clock.advance(1.0)
    assert h.relay.visit(h.get("/")).status == 200
    assert store.claim_reads - reads == 2


def test_a_remembered_claim_whose_connection_is_gone_is_read_afresh() -> None:
    h, _ = counting_harness()
    h.agent("c1", instance="laptop")
    assert h.relay.visit(h.get("/")).status == 200  # remembers c1
    del h.poster.agents["c1"]  # c1's socket died without a $disconnect...
    h.agent("c2", instance="laptop")  # ...and the agent is back on a new connection
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 200  # not agent-gone: the relay followed the name to c2
    assert h.store.get_connection("c1") is None


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (413, "response-too-large"),
        (503, "tunnel-busy"),
        (504, "local-app-timeout"),
        (500, "local-app-error"),
        (302, "local-app-error"),
    ],
)
def test_a_fault_keeps_only_the_statuses_that_say_what_happened(
    h: Harness, status: int, code: str
) -> None:
    def faulty(request: protocol.Request) -> protocol.Response:
        return protocol.Response(request.id, status, fault=protocol.Fault("local app", "no"))

    h.agent("c1", app=faulty)
    reply = h.relay.visit(h.get("/"))
    assert (reply.status, dict(reply.headers)["x-hatchway-error"]) == (
        status if status in (413, 503, 504) else 502,
        code,
    )


def test_a_head_response_keeps_the_apps_content_length(h: Harness) -> None:
    def head(request: protocol.Request) -> protocol.Response:
        return protocol.Response(request.id, 200, (("Content-Length", "1234"),))

    h.agent("c1", app=head)
    assert ("Content-Length", "1234") in h.relay.visit(h.get("/", method="HEAD")).headers
    assert "Content-Length" not in dict(h.relay.visit(h.get("/", method="GET")).headers)


# --- Who may reach what --------------------------------------------------------------------------


def test_one_hello_cannot_claim_a_name_twice(h: Harness) -> None:
    assert h.relay.connect("c1", TOKEN_A)
    agent = FakeAgent(h.relay, "c1", echo_app, h.blobs)
    h.poster.agents["c1"] = agent
    agent.send(protocol.Hello((protocol.TunnelSpec("myapp"), protocol.TunnelSpec("myapp"))))
    refusal = agent.last()
    assert isinstance(refusal, protocol.Error) and "more than once" in refusal.message
    assert h.store.get_claim("myapp") is None


def access_agent(h: Harness, rules: protocol.AccessRules) -> FakeAgent:
    assert h.relay.connect("c1", TOKEN_A)
    agent = FakeAgent(h.relay, "c1", echo_app, h.blobs)
    h.poster.agents["c1"] = agent
    agent.send(protocol.Hello((protocol.TunnelSpec("myapp", access=rules),)))
    welcome = agent.last()
    assert isinstance(welcome, protocol.Welcome)
    return agent


def from_ip(h: Harness, source_ip: str, headers: protocol.Headers = ()) -> Visit:
    return replace(h.get("/", headers=headers), source_ip=source_ip)


@pytest.mark.parametrize(
    ("allow", "deny", "source_ip", "admitted"),
    [
        pytest.param((), (), "198.51.100.7", True, id="no rules"),
        pytest.param(("203.0.113.0/24",), (), "203.0.113.9", True, id="IPv4 allowed"),
        pytest.param(("203.0.113.0/24",), (), "198.51.100.7", False, id="IPv4 not on the list"),
        pytest.param((), ("203.0.113.0/24",), "203.0.113.9", False, id="IPv4 denied"),
        pytest.param(("2001:db8::/32",), (), "2001:db8::1", True, id="IPv6 allowed"),
        pytest.param(("2001:db8::/32",), (), "2001:dead::1", False, id="IPv6 not on the list"),
        pytest.param((), ("2001:db8::/32",), "2001:db8:1::5", False, id="IPv6 denied"),
        pytest.param(("10.0.0.0/8",), ("10.1.0.0/16",), "10.1.2.3", False, id="deny wins"),
        pytest.param(("10.0.0.0/8",), ("10.1.0.0/16",), "10.2.2.3", True, id="allowed, not denied"),
        pytest.param(("203.0.113.5",), (), "::ffff:203.0.113.5", True, id="IPv4 as mapped IPv6"),
        pytest.param(("203.0.113.0/24",), (), "", False, id="no address: refused"),
    ],
)
def test_address_rules_are_checked_on_the_address_the_platform_saw(
    h: Harness, allow: tuple[str, ...], deny: tuple[str, ...], source_ip: str, admitted: bool
) -> None:
    agent = access_agent(h, protocol.AccessRules(allow, deny))
    spoofed = (("x-forwarded-for", "203.0.113.9, 2001:db8::1, 10.2.2.3"),)
    reply = h.relay.visit(from_ip(h, source_ip, spoofed))
    assert (reply.status == 200) is admitted
    if not admitted:
        assert reply.status == 403 and dict(reply.headers)["x-hatchway-error"] == "address-refused"
    assert len(agent.requests) == (1 if admitted else 0)


def test_the_welcome_confirms_the_access_rules(h: Harness) -> None:
    rules = protocol.AccessRules(("203.0.113.0/24",), rate=5)
    welcome = access_agent(h, rules).last()
    assert isinstance(welcome, protocol.Welcome)
    assert welcome.tunnels[0].guards == ("ip_rules", "rate_limit")


def test_a_burst_over_the_rate_limit_gets_429_and_never_reaches_the_app(h: Harness) -> None:
    agent = access_agent(h, protocol.AccessRules(rate=2, burst=3))
    statuses = [h.relay.visit(h.get("/")).status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert len(agent.requests) == 3
    limited = h.relay.visit(h.get("/"))
    assert dict(limited.headers)["retry-after"] == "1"
    assert dict(limited.headers)["x-hatchway-error"] == "rate-limited"
    h.clock.advance(1.0)  # two more tokens a second
    assert [h.relay.visit(h.get("/")).status for _ in range(3)] == [200, 200, 429]


def test_the_app_learns_the_visitors_address_and_scheme_from_the_relay_only(h: Harness) -> None:
    agent = h.agent("c1")
    claimed = (("X-Forwarded-For", "10.9.9.9"), ("X-Forwarded-Proto", "https"))
    h.relay.visit(from_ip(h, "198.51.100.7", claimed))
    headers = agent.requests[-1].headers
    assert ("x-forwarded-for", "10.9.9.9, 198.51.100.7") in headers  # appended, as proxies do
    assert ("x-forwarded-proto", "http") in headers  # overwritten: the relay here is plain HTTP
    assert [n for n, _ in headers].count("x-forwarded-proto") == 1


def cookie_app(request: protocol.Request) -> protocol.Response:
    return protocol.Response(
        request.id,
        200,
        (
            ("Set-Cookie", "session=victim; Path=/; HttpOnly"),
            ("Set-Cookie", "pref=1; Domain=relay.test; Path=/settings"),
            ("Set-Cookie", "plain=1"),
            ("Service-Worker-Allowed", "/"),
        ),
    )


def test_path_mode_keeps_a_tunnels_cookies_and_workers_under_its_own_path(h: Harness) -> None:
    h.agent("c1", app=cookie_app)
    reply = h.relay.visit(h.get("/t/myapp/login", host="relay.test"))
    assert [v for n, v in reply.headers if n == "Set-Cookie"] == [
        "session=victim; HttpOnly; Path=/t/myapp/",
        "pref=1; Path=/t/myapp/settings",
        "plain=1; Path=/t/myapp/",
    ]
    assert "Service-Worker-Allowed" not in dict(reply.headers)


def test_subdomain_mode_leaves_cookies_as_the_app_set_them(h: Harness) -> None:
    h.agent("c1", app=cookie_app)
    reply = h.relay.visit(h.get("/login"))
    assert ("Set-Cookie", "session=victim; Path=/; HttpOnly") in reply.headers
    assert ("Service-Worker-Allowed", "/") in reply.headers


def stripe_headers(body: bytes, ts: int) -> tuple[tuple[str, str], ...]:
    signature = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return (("stripe-signature", f"t={ts},v1={signature}"),)


def test_a_signed_stripe_delivery_goes_through_once(h: Harness) -> None:
    spec = protocol.TunnelSpec("myapp", webhook="stripe", webhook_secret=SECRET)
    agent = guarded_agent(h, spec)
    body = b'{"id":"evt_1"}'
    headers = stripe_headers(body, int(h.clock.now()))
    first = h.relay.visit(h.get("/hook", method="POST", headers=headers, body=body))
    replay = h.relay.visit(h.get("/hook", method="POST", headers=headers, body=body))
    assert (first.status, replay.status) == (200, 409)
    assert dict(replay.headers)["x-hatchway-error"] == "webhook-replayed"
    assert len(agent.requests) == 1
    fresh = stripe_headers(body, int(h.clock.now()) + 1)  # Stripe's own retry is signed anew
    assert h.relay.visit(h.get("/hook", method="POST", headers=fresh, body=body)).status == 200


# --- Share links ---------------------------------------------------------------------------------


def share_agent(h: Harness) -> FakeAgent:
    return guarded_agent(h, protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH))


def create_share(h: Harness, agent: FakeAgent, **options: object) -> tuple[str, str]:
    """(link, secret) of a new share link made through the agent's connection."""
    op = protocol.ShareOp("create", "myapp", **{"expires_in": 7200.0, **options})  # type: ignore[arg-type]
    agent.send(op)
    reply = agent.last()
    assert isinstance(reply, protocol.ShareReply) and reply.link
    return reply.link, reply.link.rsplit("=", 1)[1]


def open_link(h: Harness, link: str, method: str = "GET") -> Reply:
    target = link.split("t.example.test", 1)[1]
    return h.relay.visit(h.get(target, method=method))


def with_cookie(h: Harness, path: str, cookie: str, method: str = "GET") -> Reply:
    return h.relay.visit(h.get(path, method=method, headers=(("cookie", f"theme=dark; {cookie}"),)))


def test_a_share_link_is_shown_once_and_stored_only_as_a_hash(h: Harness) -> None:
    agent = share_agent(h)
    link, secret = create_share(h, agent, path="/reports/")
    assert link.startswith("http://myapp.t.example.test/reports/?hatchway_share=")
    (record,) = h.store.list_shares(h.store.get_claim("myapp").token_id)  # type: ignore[union-attr]
    assert secret.split(".", 1)[1] not in repr(record) and record.secret_hash
    assert secret.split(".", 1)[1] not in record.secret_hash


def test_opening_a_link_trades_the_secret_for_a_cookie_and_skips_basic_auth(h: Harness) -> None:
    agent = share_agent(h)
    link, _ = create_share(h, agent, path="/reports/")
    opened = open_link(h, link + "&page=2")
    assert opened.status == 303
    headers = dict(opened.headers)
    assert headers["location"] == "/reports/?page=2"  # the secret leaves the address bar
    cookie = headers["set-cookie"]
    assert cookie.startswith("hatchway_share=") and "Path=/reports/" in cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert agent.requests == []  # the redirect is the relay's own
    reply = with_cookie(h, "/reports/q1", cookie.split(";")[0])
    assert reply.status == 200
    seen = agent.requests[-1]
    assert ("cookie", "theme=dark") in seen.headers  # the share cookie stays at the relay
    assert all("hatchway_share" not in value for _, value in seen.headers)
    assert h.relay.visit(h.get("/reports/q1")).status == 401  # no link: the password again


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("POST", "/reports/q1", "share-out-of-scope"),
        ("GET", "/admin", "share-out-of-scope"),
        ("GET", "/reportsX", "share-out-of-scope"),
    ],
)
def test_a_link_lets_in_only_its_methods_under_its_path(
    h: Harness, method: str, path: str, code: str
) -> None:
    agent = share_agent(h)
    link, _ = create_share(h, agent, path="/reports/", methods=("GET", "HEAD"))
    cookie = dict(open_link(h, link).headers)["set-cookie"].split(";")[0]
    reply = with_cookie(h, path, cookie, method=method)
    assert reply.status == 403 and dict(reply.headers)["x-hatchway-error"] == code
    assert b"GET, HEAD" in reply.body and b"/reports/" in reply.body


def test_a_link_expires(h: Harness) -> None:
    agent = share_agent(h)
    link, _ = create_share(h, agent, expires_in=60.0)
    cookie = dict(open_link(h, link).headers)["set-cookie"].split(";")[0]
    assert with_cookie(h, "/", cookie).status == 200
    h.clock.advance(61)
    for reply in (with_cookie(h, "/", cookie), open_link(h, link)):
        assert dict(reply.headers)["x-hatchway-error"] == "share-expired"


def test_a_link_is_used_up_after_max_uses_opens(h: Harness) -> None:
    agent = share_agent(h)
    link, _ = create_share(h, agent, max_uses=2)
    assert [open_link(h, link).status for _ in range(3)][:2] == [303, 303]
    used_up = open_link(h, link)
    assert dict(used_up.headers)["x-hatchway-error"] == "share-used-up"
    agent.send(protocol.ShareOp("list", "myapp"))
    listing = agent.last()
    assert isinstance(listing, protocol.ShareReply) and listing.shares[0].uses == 2


def test_a_revoked_link_lets_nobody_in_and_only_its_owner_revokes(h: Harness) -> None:
    agent = share_agent(h)
    link, _ = create_share(h, agent)
    cookie = dict(open_link(h, link).headers)["set-cookie"].split(";")[0]
    share_id = cookie.split("=", 1)[1].split(".", 1)[0]
    other = h.agent("c9", "other", token=TOKEN_B)
    other.send(protocol.ShareOp("revoke", share_id=share_id))
    assert isinstance(other.last(), protocol.Error)  # not theirs
    agent.send(protocol.ShareOp("revoke", share_id=share_id))
    revoked = agent.last()
    assert isinstance(revoked, protocol.ShareReply) and revoked.shares[0].revoked
    assert dict(with_cookie(h, "/", cookie).headers)["x-hatchway-error"] == "share-revoked"


@pytest.mark.parametrize(
    "secret",
    ["nonsense", "abc.def", "", "x" * 200],
)
def test_a_wrong_or_forged_link_is_refused_as_unknown(h: Harness, secret: str) -> None:
    share_agent(h)
    reply = h.relay.visit(h.get(f"/?hatchway_share={secret}"))
    assert reply.status == 403
    assert dict(reply.headers)["x-hatchway-error"] == "share-unknown"


def test_another_token_cannot_share_a_tunnel_it_does_not_own(h: Harness) -> None:
    share_agent(h)
    other = h.agent("c9", "other", token=TOKEN_B)
    other.send(protocol.ShareOp("create", "myapp", expires_in=60.0))
    refusal = other.last()
    assert isinstance(refusal, protocol.Error) and refusal.code == "share_refused"


def test_a_path_mode_link_keeps_its_cookie_under_the_tunnel(h: Harness) -> None:
    agent = share_agent(h)
    link, _ = create_share(h, agent, path="/reports/")
    target = "/t/myapp" + link.split("t.example.test", 1)[1]
    opened = h.relay.visit(h.get(target, host="relay.test"))
    assert opened.status == 303
    assert dict(opened.headers)["location"] == "/t/myapp/reports/"
    assert "Path=/t/myapp/reports/" in dict(opened.headers)["set-cookie"]


# --- The operator's limits per token ------------------------------------------------------------

TOKEN_C = "hw_token-c-limited"


def limited_agent(h: Harness, limits: TokenLimits, names: tuple[str, ...]) -> FakeAgent:
    h.relay.add_token(TOKEN_C, "limited", limits=limits)
    assert h.relay.connect("c7", TOKEN_C)
    agent = FakeAgent(h.relay, "c7", echo_app, h.blobs)
    h.poster.agents["c7"] = agent
    agent.send(protocol.Hello(tuple(protocol.TunnelSpec(n) for n in names)))
    return agent


def test_a_token_serves_at_most_its_max_tunnels(h: Harness) -> None:
    agent = limited_agent(h, TokenLimits(max_tunnels=1), ("one", "two"))
    refusal = agent.last()
    assert isinstance(refusal, protocol.Error) and "at most 1 tunnel at once" in refusal.message
    assert h.store.get_claim("one") is None


def test_a_tokens_rate_limit_counts_all_its_tunnels_together(h: Harness) -> None:
    agent = limited_agent(h, TokenLimits(rate=1, burst=2), ("one", "two"))
    assert isinstance(agent.last(), protocol.Welcome)
    hosts = ["one.t.example.test", "two.t.example.test", "one.t.example.test"]
    replies = [h.relay.visit(h.get("/", host=host)) for host in hosts]
    assert [r.status for r in replies] == [200, 200, 429]
    assert dict(replies[-1].headers)["x-hatchway-error"] == "token-rate-limited"
    assert len(agent.requests) == 2


def test_a_tokens_daily_quota_resets_at_midnight_utc(h: Harness) -> None:
    agent = limited_agent(h, TokenLimits(requests_per_day=2), ("one",))
    assert isinstance(agent.last(), protocol.Welcome)
    statuses = [h.relay.visit(h.get("/", host="one.t.example.test")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    h.clock.advance(86_400)
    agent.send(protocol.Ping(h.clock.now()))  # the agent kept its claim alive meanwhile
    assert h.relay.visit(h.get("/", host="one.t.example.test")).status == 200


# --- Pools: several agents of one token serving one name ---------------------------------------


def pool_of_three(h: Harness, app: App = echo_app) -> list[FakeAgent]:
    return [h.agent(c, instance=f"i-{c}", pool=True, app=app) for c in ("p1", "p2", "p3")]


def test_pool_members_are_welcomed_with_the_pools_size_and_age(h: Harness) -> None:
    started = h.clock.now()
    sizes = []
    for agent in pool_of_three(h):
        h.clock.advance(1)
        welcome = agent.last()
        assert isinstance(welcome, protocol.Welcome)
        sizes.append((welcome.tunnels[0].pool_size, welcome.tunnels[0].pooled_since))
    assert sizes == [(1, started), (2, started), (3, started)]


def test_a_pool_spreads_requests_over_every_member(h: Harness) -> None:
    agents = pool_of_three(h)
    for _ in range(30):
        assert h.relay.visit(h.get("/")).status == 200
    assert [len(a.requests) for a in agents] == [10, 10, 10]  # taking turns


def test_a_member_with_requests_outstanding_is_passed_over() -> None:
    h, store = counting_harness()
    agents = pool_of_three(h)
    h.relay.visitors._count_outstanding("p1", +1)  # this function waits on p1 already
    reads = store.claim_reads
    for _ in range(10):
        assert h.relay.visit(h.get("/")).status == 200
    assert [len(a.requests) for a in agents] == [0, 5, 5]
    assert store.claim_reads - reads <= 1  # the member comes from the claim already read


def test_a_member_that_disconnects_fails_only_its_own_request_and_leaves_the_pool() -> None:
    h = Harness(response_timeout=20.0)
    leaving: list[str] = []

    def leave_instead_of_answering(request: protocol.Request) -> protocol.Response | None:
        if not leaving:
            leaving.append(request.id)
            h.relay.disconnect("p2")  # its socket closes with this request in flight
            del h.poster.agents["p2"]
            return None
        return echo_app(request)

    agents = [h.agent("p1", instance="a", pool=True), h.agent("p3", instance="c", pool=True)]
    agents.insert(1, h.agent("p2", instance="b", pool=True, app=leave_instead_of_answering))
    replies = [h.relay.visit(h.get("/")) for _ in range(30)]
    failed = [r for r in replies if r.status != 200]
    assert len(failed) == 1 and dict(failed[0].headers)["x-hatchway-error"] == "agent-gone"
    assert b"disconnected before answering" in failed[0].body
    claim = h.store.get_claim("myapp")
    assert claim is not None and [m.connection_id for m in claim.members] == ["p1", "p3"]
    assert len(agents[1].requests) == 1
    assert len(agents[0].requests) + len(agents[2].requests) == 29


def test_a_post_to_a_member_found_gone_falls_through_to_another() -> None:
    h, store = counting_harness()
    agents = pool_of_three(h)
    assert h.relay.visit(h.get("/")).status == 200  # the relay now remembers the pool
    del h.poster.agents["p2"]  # p2's socket died without a $disconnect
    reads = store.claim_reads
    replies = [h.relay.visit(h.get("/")) for _ in range(12)]
    assert [r.status for r in replies] == [200] * 12  # no visitor saw p2 go
    assert store.claim_reads == reads  # the other members came from the remembered claim
    claim = h.store.get_claim("myapp")
    assert claim is not None and [m.connection_id for m in claim.members] == ["p1", "p3"]
    assert h.store.get_connection("p2") is None
    assert len(agents[0].requests) + len(agents[2].requests) == 12 + 1 - len(agents[1].requests)


def test_when_every_member_is_gone_the_name_is_released(h: Harness) -> None:
    pool_of_three(h)
    assert h.relay.visit(h.get("/")).status == 200
    h.poster.agents.clear()
    # Each member is tried once and removed; the last one takes the claim with it, and the
    # visitor learns what a single agent's visitor learns when its agent went: no such tunnel.
    assert h.relay.visit(h.get("/")).status == 404
    assert h.store.get_claim("myapp") is None


def test_an_expired_member_is_not_routed_to(h: Harness) -> None:
    agents = pool_of_three(h)
    h.clock.advance(protocol.CLAIM_LEASE_SECONDS - 10)
    agents[0].send(protocol.Ping(1.0))
    agents[2].send(protocol.Ping(1.0))
    h.clock.advance(20)  # p2 stopped pinging: its lease ran out
    for _ in range(6):
        assert h.relay.visit(h.get("/")).status == 200
    assert len(agents[1].requests) == 0


def test_pongs_carry_the_pool_size_and_pings_renew_members(h: Harness) -> None:
    agents = pool_of_three(h)
    agents[0].send(protocol.Ping(5.0, (("myapp", 4),)))
    assert agents[0].last() == protocol.Pong(5.0, (("myapp", 3),))
    claim = h.store.get_claim("myapp")
    assert claim is not None and [m.served for m in claim.members] == [4, 0, 0]
    h.relay.disconnect("p3")
    agents[1].send(protocol.Ping(6.0))
    assert agents[1].last() == protocol.Pong(6.0, (("myapp", 2),))
    # A single agent's pong carries no pools.
    solo = h.agent("s1", "solo")
    solo.send(protocol.Ping(7.0))
    assert solo.last() == protocol.Pong(7.0)


def test_a_member_removed_from_the_pool_learns_it_at_its_next_ping(h: Harness) -> None:
    agents = pool_of_three(h)
    assert h.store.release_claim("myapp", "p2")
    agents[1].send(protocol.Ping(1.0))
    lost = agents[1].last()
    assert isinstance(lost, protocol.Error) and lost.code == "name_lost"


def test_the_same_instance_reconnecting_keeps_its_place_in_the_pool(h: Harness) -> None:
    pool_of_three(h)
    again = h.agent("p2-new", instance="i-p2", pool=True)  # p2's agent rotated its connection
    welcome = again.last()
    assert isinstance(welcome, protocol.Welcome) and welcome.tunnels[0].pool_size == 3
    claim = h.store.get_claim("myapp")
    assert claim is not None
    assert sorted(m.connection_id for m in claim.members) == ["p1", "p2-new", "p3"]
    h.relay.disconnect("p2")  # the old connection's late $disconnect changes nothing
    assert len(h.store.get_claim("myapp").members) == 3  # type: ignore[union-attr]


def refusal(agent: FakeAgent) -> str:
    message = agent.last()
    assert isinstance(message, protocol.Error) and message.code == "name_taken", message
    return message.message


def test_an_agent_without_pool_is_refused_a_pooled_name_and_told_about_pool(h: Harness) -> None:
    pool_of_three(h)
    message = refusal(h.agent("c9", instance="other"))
    assert "pool of 3 agent(s) using your token" in message and "--pool" in message
    assert len(h.store.get_claim("myapp").members) == 3  # type: ignore[union-attr]


def test_a_pooled_agent_is_refused_a_name_one_agent_holds_alone(h: Harness) -> None:
    h.agent("c1", instance="alone")
    message = refusal(h.agent("p1", instance="pooled", pool=True))
    assert "started without --pool" in message and "restart that agent with --pool" in message
    assert h.store.get_claim("myapp").connection_id == "c1"  # type: ignore[union-attr]


def test_an_agent_of_the_same_token_without_pool_is_told_about_pool(h: Harness) -> None:
    h.agent("c1", instance="first")
    assert "start both with --pool" in refusal(h.agent("c2", instance="second"))


def test_another_token_never_joins_a_pool(h: Harness) -> None:
    pool_of_three(h)
    message = refusal(h.agent("x1", token=TOKEN_B, instance="x", pool=True))
    assert "held by another token" in message
    claim = h.store.get_claim("myapp")
    assert claim is not None and {m.connection_id for m in claim.members} == {"p1", "p2", "p3"}


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        (protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH, pool=True), "a password"),
        (protocol.TunnelSpec("myapp", pool=True, gzip=False), "--no-gzip"),
    ],
)
def test_a_member_asking_for_other_options_is_refused_saying_which(
    h: Harness, spec: protocol.TunnelSpec, said: str
) -> None:
    pool_of_three(h)
    message = refusal(guarded_agent(h, spec))
    assert "other options" in message and f"this agent: {said})" in message


def test_a_pool_needs_a_name() -> None:
    with pytest.raises(protocol.ProtocolError, match="a pool needs a name"):
        protocol.TunnelSpec(None, pool=True)


def test_a_pool_whose_members_all_died_is_cleared_for_a_single_agent(h: Harness) -> None:
    pool_of_three(h)
    for connection in ("p1", "p2", "p3"):
        h.store.delete_connection(connection)  # gone without a $disconnect
    agent = h.agent("c1", token=TOKEN_B)
    assert isinstance(agent.last(), protocol.Welcome)
    assert h.store.get_claim("myapp").connection_id == "c1"  # type: ignore[union-attr]


def test_a_pool_may_replace_a_dead_single_holder(h: Harness) -> None:
    h.agent("c1", instance="alone")
    h.store.delete_connection("c1")
    agent = h.agent("p1", pool=True, instance="pooled")
    assert isinstance(agent.last(), protocol.Welcome)
    assert h.store.get_claim("myapp").pool  # type: ignore[union-attr]


def test_a_pools_guards_are_the_ones_it_began_with(h: Harness) -> None:
    first = guarded_agent(h, protocol.TunnelSpec("myapp", basic_auth=CREDENTIALS_HASH, pool=True))
    assert isinstance(first.last(), protocol.Welcome)
    assert first.last().tunnels[0].guards == ("basic_auth",)  # type: ignore[union-attr]
    assert h.relay.visit(h.get("/")).status == 401
    assert h.relay.visit(h.get("/", headers=(basic("alice:pw"),))).status == 200
    # A second member may bring its own salted hash of a password: the pool keeps the first.
    assert h.relay.connect("c2", TOKEN_A)
    second = FakeAgent(h.relay, "c2", echo_app)
    h.poster.agents["c2"] = second
    other = protocol.hash_basic_auth("bob:pw", b"1" * protocol.BASIC_AUTH_SALT_BYTES)
    second.send(
        protocol.Hello((protocol.TunnelSpec("myapp", basic_auth=other, pool=True),), instance="2")
    )
    assert isinstance(second.last(), protocol.Welcome)
    assert h.relay.visit(h.get("/", headers=(basic("bob:pw"),))).status == 401


# --- A store that throttles ----------------------------------------------------------------------


def throttled(code: str, operation: str) -> ClientError:
    """What boto3 raises once its own retries of a throttled call ran out."""
    return ClientError({"Error": {"Code": code, "Message": "slow down"}}, operation)


class ThrottledClaims(MemoryStore):
    def get_claim(self, name: str) -> Claim | None:
        raise throttled("ProvisionedThroughputExceededException", "GetItem")


class ThrottledLooks(MemoryStore):
    """Throttles the first looks of every wait, then answers as usual."""

    def __init__(self, clock: FakeClock, failures: int) -> None:
        super().__init__(clock)
        self.failures = failures

    def wait_response(self, request_id: str, until: float, hint: float = 0.0) -> bytes | None:
        if self.failures:
            self.failures -= 1
            raise throttled("ThrottlingException", "GetItem")
        return super().wait_response(request_id, until, hint)


def with_store(store: MemoryStore) -> Harness:
    h = Harness()
    store._clock = h.clock  # type: ignore[attr-defined]
    h.store = h.relay.store = store  # type: ignore[misc]
    h.relay.add_token(TOKEN_A)
    return h


def test_a_throttled_store_before_the_request_left_is_a_coded_503_with_retry_after() -> None:
    h = with_store(MemoryStore())
    h.agent("c1")
    h.store.__class__ = ThrottledClaims  # throttling from now on
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 503
    assert dict(reply.headers)["x-hatchway-error"] == "relay-store-busy"
    assert dict(reply.headers)["retry-after"] == "1"
    assert b"store (DynamoDB)" in reply.body and b"did not reach the tunnel" in reply.body
    assert not [r for r in h.poster.posted if "request" in r[1]]  # nothing went to the agent


def test_a_throttled_blob_store_is_named_in_the_503() -> None:
    h = Harness()
    h.agent("c1")

    def slow_down(key: str, data: bytes) -> None:
        raise throttled("SlowDown", "PutObject")

    h.blobs.put = slow_down  # type: ignore[method-assign]
    reply = h.relay.visit(
        h.get("/", method="POST", body=b"x" * (protocol.MAX_INLINE_BODY_BYTES + 1))
    )
    assert reply.status == 503 and b"blob store (S3)" in reply.body


def test_throttled_looks_for_the_answer_are_ridden_out_once_the_request_left() -> None:
    h = with_store(ThrottledLooks(FakeClock(), failures=3))
    h.agent("c1", app=lambda r: protocol.Response(r.id, 200, body=b"ran once"))
    reply = h.relay.visit(h.get("/"))
    assert (reply.status, reply.body) == (200, b"ran once")


def test_other_store_failures_are_not_taken_for_throttling() -> None:
    h = with_store(MemoryStore())
    h.agent("c1")

    def broken(name: str) -> Claim | None:
        raise throttled("AccessDeniedException", "GetItem")

    h.store.get_claim = broken  # type: ignore[method-assign]
    with pytest.raises(ClientError):
        h.relay.visit(h.get("/"))


# --- Answers whose head cannot be written to a visitor ------------------------------------------


def stored_answer_with(request_id: str, headers: list[list[object]]) -> str:
    """An answer message as a buggy or hostile agent could send it, bypassing the codec."""
    head = {"type": "response", "id": request_id, "status": 200, "headers": headers}
    stored = json.dumps(head).encode() + b"\n"
    return json.dumps({"type": "response", "id": request_id, "stored": b64encode(stored).decode()})


def answer_headers(h: Harness, headers: list[list[object]]) -> Reply:
    def hostile(request: protocol.Request) -> None:
        agent_message(h.relay, "c1", stored_answer_with(request.id, headers))

    h.agent("c1", app=hostile, live=False)
    return h.relay.visit(h.get("/"))


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "\udc7f", "ok\r\nX-Injected: 1", "\x00"])
def test_an_answer_header_that_cannot_be_written_is_the_agents_bad_answer(value: str) -> None:
    reply = answer_headers(Harness(), [["x-bad", value]])
    assert reply.status == 502
    assert dict(reply.headers)["x-hatchway-error"] == "agent-bad-response"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(max_size=12), st.text(max_size=20)).map(list), min_size=1, max_size=3
    )
)
def test_any_answer_head_gives_a_writable_reply_or_a_coded_502(headers: list[list[object]]) -> None:
    reply = answer_headers(Harness(), headers)
    if reply.status == 502 and dict(reply.headers).get("x-hatchway-error") == "agent-bad-response":
        return
    for name, value in reply.headers:
        name.encode("ascii")  # names are tokens
        wire_header(value)  # what the gateway writes: must never raise


# --- What the relay answered itself counts under the tunnel ------------------------------------


class CountingRefusals(MemoryStore):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.writes = 0

    def count_refusals(self, name: str, counts: Mapping[str, int]) -> None:
        self.writes += 1
        super().count_refusals(name, counts)


def refusing_harness(flush_seconds: float) -> tuple[Harness, CountingRefusals]:
    h = Harness()
    store = CountingRefusals(h.clock)
    h.store = h.relay.store = store  # type: ignore[misc]
    h.relay.add_token(TOKEN_A)
    h.relay.config = replace(h.relay.config, refusal_flush_seconds=flush_seconds)
    return h, store


def refused(h: Harness) -> dict[str, int]:
    claim = h.store.get_claim("myapp")
    assert claim is not None
    return dict(claim.refused)


def test_refusals_and_the_relays_own_errors_count_under_the_tunnel() -> None:
    h, _ = refusing_harness(0.0)
    access_agent(h, protocol.AccessRules(rate=1, burst=1))
    statuses = [h.relay.visit(h.get("/")).status for _ in range(4)]
    assert statuses == [200, 429, 429, 429]
    assert refused(h) == {"rate-limited": 3}
    tunnel = admin.live_tunnels(h.store, h.clock.now())[0]
    assert dict(tunnel.errors) == {"rate-limited": 3}  # what hatchway-admin tunnels shows


def test_the_agents_own_fault_answers_are_not_counted_twice() -> None:
    h, store = refusing_harness(0.0)
    h.agent(
        "c1", app=lambda r: protocol.Response(r.id, 503, fault=protocol.Fault("local app", "busy"))
    )
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 503 and dict(reply.headers)["x-hatchway-error"] == "tunnel-busy"
    assert refused(h) == {} and store.writes == 0  # the agent's pings report it


def test_a_flood_of_refusals_costs_one_write_per_interval_and_none_are_lost() -> None:
    h, store = refusing_harness(10.0)
    access_agent(h, protocol.AccessRules(rate=1, burst=1))
    for _ in range(50):
        h.relay.visit(h.get("/"))
    assert store.writes == 1 and refused(h) == {"rate-limited": 1}  # the first, at once
    h.clock.advance(10.0)
    assert h.relay.visit(h.get("/")).status == 200  # the next visit brings the rest
    assert store.writes == 2 and refused(h) == {"rate-limited": 49}


# --- Pages a visitor reads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_second", "words"),
    [
        (5 / 60, "5 a minute"),
        (2.0, "2 a second"),
        (0.5, "30 a minute"),
        (1 / 3600, "1 an hour"),
        (10 / 86400, "10 a day"),
    ],
)
def test_a_rate_limit_page_says_the_rate_as_it_was_set(per_second: float, words: str) -> None:
    h = Harness()
    access_agent(h, protocol.AccessRules(rate=per_second, burst=1))
    assert h.relay.visit(h.get("/")).status == 200
    limited = h.relay.visit(h.get("/"))
    assert limited.status == 429
    assert f"takes at most {words} (bursts of 1)" in limited.body.decode()
    assert limited.body.startswith(b"429 Too Many Requests\n")


@pytest.mark.parametrize(
    ("status", "title"),
    [(403, "403 Forbidden"), (429, "429 Too Many Requests"), (413, "413 Content Too Large")],
)
def test_every_page_has_its_statuses_reason_phrase(status: int, title: str) -> None:
    assert error_reply(status, "x", "why").body.startswith(title.encode() + b"\n")


def test_the_bare_hosts_404_shows_this_relays_own_tunnel_urls() -> None:
    h = Harness()
    h.relay.config = replace(
        h.relay.config,
        subdomain_url="http://{name}.localhost:8080/",
        path_url="http://127.0.0.1:8080/t/{name}/",
        domain="localhost",
    )
    page = h.relay.visit(h.get("/", host="127.0.0.1:8080")).body.decode()
    assert "http://<name>.localhost:8080/ and at http://127.0.0.1:8080/t/<name>/" in page


# --- Streamed responses ------------------------------------------------------------------------


def body_of(reply: Reply, store: MemoryStore) -> bytes:
    """A streamed reply's body, as the local gateway reads it from the store."""
    assert isinstance(reply, StreamedReply) and reply.body_steps is not None
    steps, pieces, sent = reply.body_steps, [], None
    with contextlib.suppress(StopIteration):
        while True:
            step = steps.send(sent)
            if isinstance(step, AwaitChunk):
                sent = store.wait_chunk(step.request_id, step.seq, step.until)
            else:
                pieces.append(step)
                sent = None
    return b"".join(pieces)


def streaming_agent(h: Harness, chunks: list[protocol.Chunk]) -> FakeAgent:
    """An agent of a ``--stream`` tunnel whose app answers with a head and ``chunks``."""
    holder: list[FakeAgent] = []

    def app(request: protocol.Request) -> protocol.Response:
        for chunk in chunks:
            holder[0].send(replace(chunk, id=request.id))
        return protocol.Response(
            request.id, 200, (("content-type", "text/event-stream"),), streamed=True
        )

    agent = guarded_agent(h, protocol.TunnelSpec("myapp", stream=True))
    agent.app = app
    holder.append(agent)
    return agent


def test_a_relay_whose_front_cannot_stream_refuses_a_tunnel_that_asks_to(h: Harness) -> None:
    agent = guarded_agent(h, protocol.TunnelSpec("myapp", stream=True))
    message = agent.last()
    assert isinstance(message, protocol.Error) and message.code == "stream_unavailable"
    assert "--stream" in message.message and "buffers every Lambda response" in message.message
    assert h.store.get_claim("myapp") is None


def test_a_streamed_body_reaches_the_visitor_chunk_by_chunk_in_order() -> None:
    h = Harness(streams=True)
    streaming_agent(
        h,
        [
            protocol.Chunk("x", 1, b"data: 2\n\n"),  # chunks may land in any order
            protocol.Chunk("x", 0, b"data: 1\n\n"),
            protocol.Chunk("x", 2, end=True),
        ],
    )
    reply = h.relay.visit(h.get("/events"))
    assert reply.status == 200 and ("content-type", "text/event-stream") in reply.headers
    assert body_of(reply, h.store) == b"data: 1\n\ndata: 2\n\n"


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        (
            [protocol.Chunk("x", 0, b"a"), protocol.Chunk("x", 1, end=True, fault="app died")],
            "app died",
        ),
        ([protocol.Chunk("x", 0, b"a")], "sent nothing for"),
    ],
)
def test_a_streamed_body_that_breaks_off_is_cut_saying_why(
    chunks: list[protocol.Chunk], why: str
) -> None:
    h = Harness(streams=True)
    streaming_agent(h, chunks)
    with pytest.raises(StreamCut, match=why):
        body_of(h.relay.visit(h.get("/events")), h.store)


def test_a_streamed_answer_for_a_tunnel_that_did_not_ask_to_stream_is_a_bad_response() -> None:
    h = Harness(streams=True)
    h.agent("c1", app=lambda r: protocol.Response(r.id, 200, streamed=True))
    reply = h.relay.visit(h.get("/"))
    assert reply.status == 502 and ("x-hatchway-error", "agent-bad-response") in reply.headers


# --- Leaving: an agent that stops takes no new requests; a lone one's visitors wait a restart


HOLD = protocol.RESTART_HOLD_SECONDS


def test_a_pool_member_that_leaves_gets_no_new_requests_and_its_answer_in_flight_lands(
    h: Harness,
) -> None:
    def leave_while_answering(request: protocol.Request) -> protocol.Response:
        agents[1].send(protocol.Leaving())  # stopped with this request in flight
        return echo_app(request)

    agents = [h.agent("p1", instance="a", pool=True)]
    agents.append(h.agent("p2", instance="b", pool=True, app=leave_while_answering))
    agents.append(h.agent("p3", instance="c", pool=True))
    replies = [h.relay.visit(h.get("/")) for _ in range(3)]  # one turn each
    assert [r.status for r in replies] == [200, 200, 200]
    assert len(agents[1].requests) == 1
    claim = h.store.get_claim("myapp")
    assert claim is not None and [m.connection_id for m in claim.members] == ["p1", "p3"]
    h.clock.advance(visits.CLAIM_CACHE_SECONDS)  # what a warm relay remembers is gone by now
    replies = [h.relay.visit(h.get("/")) for _ in range(10)]
    assert [r.status for r in replies] == [200] * 10
    assert len(agents[1].requests) == 1  # never chosen again
    assert h.store.get_connection("p2") is not None  # connected, finishing its work


def test_a_lone_agent_restarted_within_the_hold_serves_the_visitors_held_meanwhile(
    h: Harness,
) -> None:
    stopping = h.agent("c1", instance="run-1")
    stopping.send(protocol.Leaving())
    h.relay.disconnect("c1")  # it answered what it held and closed
    del h.poster.agents["c1"]
    left = time = h.clock.now()
    steps = h.relay.visitors.visit_steps(h.get("/"))
    pause = next(steps)  # held: no agent to post to
    assert pause.until == pytest.approx(time + restarts.HOLD_LOOK_SECONDS)
    h.clock.advance(3.0)  # the process starts again, and says hello
    restarted = h.agent("c2", instance="run-2")
    assert isinstance(restarted.last(), protocol.Welcome)
    reply = run_blocking(steps, h.store)
    assert reply.status == 200 and len(restarted.requests) == 1
    assert h.clock.now() - left <= 3.0 + restarts.HOLD_LOOK_SECONDS  # found at the next look


@pytest.mark.parametrize(
    ("response_timeout", "held_for"),
    [
        pytest.param(28.0, HOLD, id="the hold ends first"),
        pytest.param(4.0, 4.0, id="the visitor's deadline ends first"),
    ],
)
def test_a_lone_agent_not_restarted_gets_its_visitors_a_coded_503_that_says_so(
    response_timeout: float, held_for: float
) -> None:
    h = Harness(response_timeout=response_timeout)
    h.agent("c1").send(protocol.Leaving())
    arrived = h.clock.now()
    reply = h.relay.visit(replace(h.get("/"), received_at=arrived))
    assert reply.status == 503
    assert dict(reply.headers)["x-hatchway-error"] == "agent-stopped"
    assert b"stopped on purpose" in reply.body and f"{HOLD:g} s".encode() in reply.body
    assert h.clock.now() - arrived == pytest.approx(held_for)
    h.clock.advance(max(0.0, arrived + HOLD - h.clock.now()))
    after = h.relay.visit(h.get("/"))  # the hold is over: nobody serves the name
    assert dict(after.headers)["x-hatchway-error"] == "tunnel-not-found"


def test_only_the_same_token_takes_a_left_name_back_during_the_hold(h: Harness) -> None:
    h.agent("c1").send(protocol.Leaving())
    intruder = h.agent("c2", token=TOKEN_B)
    assert isinstance(intruder.last(), protocol.Error)
    assert intruder.last().code == "name_taken"  # type: ignore[union-attr]
    h.clock.advance(HOLD)
    assert isinstance(h.agent("c3", token=TOKEN_B).last(), protocol.Welcome)


def test_a_left_connection_no_longer_touches_its_names(h: Harness) -> None:
    stopping = h.agent("c1")
    stopping.send(protocol.Leaving())
    stopping.send(protocol.Ping(1.0))  # its pings renew nothing, and lose nothing
    assert stopping.last() == protocol.Pong(1.0)
    h.relay.disconnect("c1")  # nor does its $disconnect release the name being held
    claim = h.store.get_claim("myapp")
    assert claim is not None and claim.leaving(h.clock.now())


def test_leaving_twice_or_unknown_changes_nothing_and_answers_nothing(h: Harness) -> None:
    stopping = h.agent("c1")
    welcomed = len(h.poster.posted)
    left = h.clock.now()
    stopping.send(protocol.Leaving())
    h.clock.advance(1.0)
    stopping.send(protocol.Leaving())  # said again (the platform may deliver it twice)
    claim = h.store.get_claim("myapp")
    assert claim is not None and (claim.left_at, claim.expires_at) == (left, left + HOLD)
    h.relay.on_message("never-connected", codec.encode(protocol.Leaving()))
    assert len(h.poster.posted) == welcomed  # nothing was said to anyone


# --- Visitors' WebSockets ----------------------------------------------------------------------


def test_a_websocket_upgrade_is_refused_in_words_and_never_reaches_the_app(h: Harness) -> None:
    agent = h.agent("c1")
    upgrade = (
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    )
    reply = h.relay.visit(h.get("/@vite/client", headers=upgrade))
    assert reply.status == 501
    assert ("x-hatchway-error", "websocket-unsupported") in reply.headers
    assert b"hot reload" in reply.body
    assert agent.requests == []


def test_a_share_links_id_never_starts_like_an_option() -> None:
    # `hatchway share revoke -abc` reads -abc as an option: one id in 64 began with "-".
    ids = [shares.new_secret()[0] for _ in range(2000)]
    assert all(i[0].isalnum() and len(i) == shares.ID_CHARS for i in ids)
    assert len(set(ids)) == len(ids)
