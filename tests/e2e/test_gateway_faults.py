"""The local gateway under faults and hostile clients, with the real relay, agent and app in both
store modes: deadlines that hold however late an invocation starts, a flooding agent that
cannot starve another tunnel, header bytes that cross unchanged, and a management API that no
visitor reaches (while the poster still does, over TLS too)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websocket
from cryptography.hazmat.primitives.asymmetric import ec

from hatchway import protocol
from hatchway.protocol import codec
from hatchway_local.platform import MAX_PENDING_MESSAGES
from hatchway_local.server import LocalServer, run_local
from support.certificates import issue, key_pem, pem
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.raw_http import RawClient
from support.visitor import visit

pytestmark = pytest.mark.e2e

FLOOD_TOKEN = "hw_e2e-flooding-agent-0123"

WAIT_SECONDS = 15.0
"""Bound on every wait in these tests."""


def coded(status: int, headers: list[tuple[str, str]]) -> str | None:
    """The relay's error code, if the answer is the relay's own (not the gateway's)."""
    return next((v for k, v in headers if k.lower() == "x-hatchway-error"), None)


# --- Deadlines: the relay answers before the gateway's last resort ------------------------------


def test_the_function_timeout_makes_the_relay_answer_its_504_before_the_gateways_503(
    make_relay: Callable[..., LocalServer], app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    """The relay's own timeout is longer than the integration timeout here; only the time its
    function has left (the Lambda context) can make it answer first."""
    # Wide margins (the relay stops at 2 s, the gateway at 8 s): a loaded CI machine's moto
    # calls must not turn the relay's answer into the gateway's.
    relay = make_relay(response_timeout=20.0, integration_timeout=8.0, http_function_timeout=3.0)
    start_agent(relay, str(app.port))
    started = time.monotonic()
    answer = visit(relay.port, "GET", "/slow?s=20", f"e2e.localhost:{relay.port}")
    took = time.monotonic() - started
    assert answer.status == 504 and coded(answer.status, answer.headers) is not None
    assert took < 8.0


def test_a_request_that_waited_before_its_invocation_still_answers_in_time(
    make_relay: Callable[..., LocalServer], app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    """A visitor whose body comes 2 s late: the deadline counts from the request's arrival
    (``timeEpoch``), so the relay's coded 504 beats the gateway's 503."""
    relay = make_relay(response_timeout=3.0, integration_timeout=4.0)
    start_agent(relay, str(app.port))
    with RawClient(relay.port, WAIT_SECONDS) as client:
        client.send(
            f"POST /slow?s=20 HTTP/1.1\r\nHost: e2e.localhost:{relay.port}\r\n".encode()
            + b"Content-Length: 4\r\n\r\n"
        )
        received = time.monotonic()
        time.sleep(2.0)  # the late body, on purpose
        client.send(b"late")
        answer = client.answer()
        took = time.monotonic() - received
    assert answer.status == 504 and answer.header("x-hatchway-error") is not None
    assert took < 4.0


# --- A flooding agent ----------------------------------------------------------------------------


def flood(relay: LocalServer, stop: threading.Event, sent: list[int]) -> None:
    """Pings as fast as the gateway takes them, never reading; ends at ``stop``, after 20,000,
    or when a send has blocked for a second (the gateway holding it back)."""
    ws = websocket.create_connection(
        relay.agent_url, header=[f"Authorization: Bearer {FLOOD_TOKEN}"], timeout=1.0
    )
    ping = codec.encode(protocol.Ping(ts=1.0))
    try:
        while sent[0] < 20_000 and not stop.is_set():
            ws.send(ping)
            sent[0] += 1
    except (TimeoutError, websocket.WebSocketTimeoutException, OSError):
        pass  # held back: exactly what should happen
    finally:
        stop.wait(WAIT_SECONDS)  # keep the connection (and its backlog) until the visits end
        ws.close()


def test_a_flooding_agent_neither_starves_another_tunnel_nor_passes_its_cap(
    make_relay: Callable[..., LocalServer], app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    # A small account pool: without a per-connection cap the flood would take all of it.
    relay = make_relay(tokens=("hw_e2e-token-0123456789", FLOOD_TOKEN), account_concurrency=24)
    start_agent(relay, str(app.port))
    stop, sent = threading.Event(), [0]
    flooder = threading.Thread(target=flood, args=(relay, stop, sent), daemon=True)
    flooder.start()
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while sent[0] < 1000 and flooder.is_alive():
            assert time.monotonic() < deadline, "the flood never started"
            time.sleep(0.01)
        statuses = [
            visit(relay.port, "GET", f"/echo/{i}", f"e2e.localhost:{relay.port}").status
            for i in range(10)
        ]
    finally:
        stop.set()
        flooder.join(WAIT_SECONDS)
    assert statuses == [200] * 10
    assert 0 < relay.gateway.peak_pending_messages <= MAX_PENDING_MESSAGES


FAIR_PROBES = 22
FAIR_PROBE_SECONDS = {"memory": 0.5, "dynamodb": 2.0}
"""Longest any other tunnel's request may take while a flood is worked through. In memory
its p99 is far below 0.5 s (the bound leaves room for a loaded machine; the unfair gateway
took 4-5 s). With DynamoDB the tests' moto serves one call at a time, so the flood's 16
invocations and the visitor share it: the bound there is a fair share of moto, not the loop."""


def test_a_connections_backlog_does_not_hold_up_another_tunnel(
    make_relay: Callable[..., LocalServer],
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
    store_mode: str,
) -> None:
    relay = make_relay(tokens=("hw_e2e-token-0123456789", FLOOD_TOKEN))
    start_agent(relay, str(app.port))
    assert visit(relay.port, "GET", "/echo/warm", f"e2e.localhost:{relay.port}").status == 200
    stop, sent = threading.Event(), [0]
    flooder = threading.Thread(target=flood, args=(relay, stop, sent), daemon=True)
    flooder.start()
    took: list[float] = []
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while sent[0] < 5000 and flooder.is_alive():  # a backlog the gateway works through
            assert time.monotonic() < deadline, "the flood never started"
            time.sleep(0.01)
        for i in range(FAIR_PROBES):
            started = time.monotonic()
            answer = visit(relay.port, "GET", f"/echo/p{i}", f"e2e.localhost:{relay.port}")
            took.append(time.monotonic() - started)
            assert answer.status == 200
    finally:
        stop.set()
        flooder.join(WAIT_SECONDS)
    assert max(took) < FAIR_PROBE_SECONDS[store_mode], sorted(took)[-3:]


# --- Header bytes ---------------------------------------------------------------------------------


def test_header_bytes_reach_the_app_exactly(
    relay: LocalServer, app: LocalApp, tunnel: object
) -> None:
    values = {"X-Utf8": b"caf\xc3\xa9", "X-Snowman": b"\xe2\x98\x83", "X-Invalid": b"a\xffb"}
    with RawClient(relay.port, WAIT_SECONDS) as client:
        lines = b"".join(f"{k}: ".encode() + v + b"\r\n" for k, v in values.items())
        client.send(
            f"GET /echo/headers HTTP/1.1\r\nHost: e2e.localhost:{relay.port}\r\n".encode()
            + lines
            + b"\r\n"
        )
        assert client.answer().status == 200
    seen = {k.lower(): v for k, v in app.wait_for_request("/echo/headers").headers}
    # http.server reads header bytes as Latin-1: encoding back gives the bytes on the wire.
    assert {k: seen[k.lower()].encode("latin-1") for k in values} == values


# --- The management API ---------------------------------------------------------------------------


def test_a_visitor_cannot_reach_the_management_api(
    relay: LocalServer, app: LocalApp, tunnel: AgentProcess
) -> None:
    """A forged frame POSTed to ``/@connections/<id>`` on the public port is a visitor request
    like any other (the relay's 404); the agent receives nothing and stays connected."""
    (connection_id,) = relay.connection_ids()
    forged = codec.encode(
        protocol.Request(id="forged", tunnel="e2e", method="GET", path="/echo/forged")
    ).encode()
    for method in ("POST", "GET", "DELETE"):
        answer = visit(
            relay.port,
            method,
            f"/@connections/{connection_id}",
            f"127.0.0.1:{relay.port}",
            body=forged,
        )
        assert answer.status == 404 and coded(answer.status, answer.headers) is not None
    assert visit(relay.port, "GET", "/echo/after", f"e2e.localhost:{relay.port}").status == 200
    assert [s.target for s in app.requests] == ["/echo/after"]
    assert relay.connection_ids() == [connection_id]


@pytest.fixture
def tls_context(tmp_path: Path) -> Iterator[ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = issue("localhost", key, names=("localhost", "connect.localhost"), days=1)
    (tmp_path / "cert.pem").write_bytes(pem(certificate))
    (tmp_path / "key.pem").write_bytes(key_pem(key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    yield context


def test_tls_is_served_with_the_dynamodb_store_too(
    moto_endpoint: str, tls_context: ssl.SSLContext
) -> None:
    """The DynamoDB mode's poster reaches the management API on its loopback listener in plain
    HTTP while agents and visitors get TLS: a ping is answered through it."""
    with run_local(
        store="dynamodb",
        dynamodb_endpoint=moto_endpoint,
        table_name="hatchway-tls",
        tokens=(FLOOD_TOKEN,),
        ssl_context=tls_context,
    ) as relay:
        ws = websocket.create_connection(
            f"wss://127.0.0.1:{relay.port}/connect",
            header=[f"Authorization: Bearer {FLOOD_TOKEN}"],
            sslopt={"cert_reqs": ssl.CERT_NONE, "check_hostname": False},
            timeout=WAIT_SECONDS,
        )
        try:
            ws.send(codec.encode(protocol.Ping(ts=42.0)))
            answer = codec.decode(ws.recv())
        finally:
            ws.close()
    assert isinstance(answer, protocol.Pong) and answer.ts == 42.0
