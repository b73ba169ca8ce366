"""Bodies too large for one WebSocket message, end to end: the relay's blob store (S3 on moto's
server, or the local gateway's own) hands the real agent presigned URLs, which it uses over HTTP;
the visitor sees nothing of it. Also what a message carries inline, and repeats of a request."""

from __future__ import annotations

import hashlib
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator

import pytest

from hatchway import protocol
from hatchway_local.server import LocalServer, run_local
from hatchway_relay.adapters.memory_blobs import MemoryBlobStore
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import Answer, visit

pytestmark = pytest.mark.e2e

TOKEN = "hw_e2e-token-0123456789"


@pytest.fixture(
    params=[("dynamodb", "s3"), ("dynamodb", "memory"), ("memory", "s3"), ("memory", "memory")],
    ids=["dynamodb+s3", "dynamodb+memory", "memory+s3", "memory+memory"],
)
def blob_relay(request: pytest.FixtureRequest, moto_endpoint: str) -> Iterator[LocalServer]:
    """The production adapters (DynamoDB) or the memory store, bodies through S3 (moto's
    server) or the gateway's memory blob store."""
    store, blobs = request.param
    options: dict[str, object] = {"store": store, "blob_store": blobs}
    if store == "dynamodb":
        options["dynamodb_endpoint"] = moto_endpoint
        options["table_name"] = f"hatchway-{random.Random().randrange(10**9)}"
    if blobs == "s3":
        options["s3_endpoint"] = moto_endpoint
        options["bucket"] = f"blobs-{random.Random().randrange(10**9)}"
    with run_local(tokens=(TOKEN,), response_timeout=20.0, **options) as server:  # type: ignore[arg-type]
        yield server


def test_visits_run_on_the_loop_only_when_nothing_they_call_blocks(
    blob_relay: LocalServer,
) -> None:
    # An S3 blob store, or DynamoDB, is reached over the network: visits then keep threads.
    in_memory = (
        isinstance(blob_relay.blobs, MemoryBlobStore) and blob_relay.gateway.websocket_on_loop
    )
    assert (blob_relay.gateway.http_steps is not None) == in_memory


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def post(relay: LocalServer, target: str, body: bytes) -> tuple[int, bytes]:
    answer = visit(relay.port, "POST", target, f"e2e.localhost:{relay.port}", body=body)
    return answer.status, answer.body


def get(relay: LocalServer, target: str) -> Answer:
    return visit(relay.port, "GET", target, f"e2e.localhost:{relay.port}")


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(protocol.MAX_INLINE_BODY_BYTES, id="at the inline limit"),
        pytest.param(protocol.MAX_INLINE_BODY_BYTES + 1, id="one byte over"),
        pytest.param(4 * 1024 * 1024, id="4 MB"),
    ],
)
def test_bodies_each_way_through_the_blob_store(
    blob_relay: LocalServer,
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
    size: int,
) -> None:
    start_agent(blob_relay, str(app.port))
    upload = random.Random(size).randbytes(size)  # incompressible: no zlib shortcut
    status, body = post(blob_relay, "/upload", upload)
    assert status == 200
    assert sha(app.requests[-1].body) == sha(upload)
    assert sha(body) == sha(upload)


def test_a_response_above_the_lambda_ceiling_is_413_by_default(
    blob_relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(blob_relay, str(app.port))
    size = protocol.MAX_BODY_BYTES + 1
    answer = visit(
        blob_relay.port, "GET", f"/bytes?n={size}&seed=1", f"e2e.localhost:{blob_relay.port}"
    )
    assert answer.status == 413
    assert answer.header("x-hatchway-error") == "response-too-large"
    assert "redirect" in answer.text


@pytest.mark.parametrize(
    ("target", "size"),
    [
        pytest.param(f"/bytes?n={20 * 1024 * 1024}&seed=2", 20 * 1024 * 1024, id="20 MB random"),
        # Compresses to a few KB, which would fit a message: it is still above the ceiling.
        pytest.param("/repeat?n=5000000&byte=x", 5_000_000, id="5 MB of one byte"),
    ],
)
def test_with_redirect_a_large_response_is_a_302_the_visitor_can_follow(
    blob_relay: LocalServer,
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
    target: str,
    size: int,
) -> None:
    start_agent(blob_relay, str(app.port), extra=["--large-responses", "redirect"])
    answer = visit(blob_relay.port, "GET", target, f"e2e.localhost:{blob_relay.port}")
    assert answer.status == 302
    location = answer.header("location") or ""
    assert location.startswith("http://127.0.0.1:")  # moto's server or the gateway: loopback
    scheme_host, _, location_target = location.removeprefix("http://").partition("/")
    port = int(scheme_host.rsplit(":", 1)[1])
    download = visit(port, "GET", "/" + location_target, scheme_host, timeout=60)
    assert download.status == 200
    expected = app.expected_bytes(size, 2) if target.startswith("/bytes") else b"x" * size
    assert sha(download.body) == sha(expected)


def test_an_expired_blob_url_is_refused(blob_relay: LocalServer) -> None:
    blobs = blob_relay.blobs
    if not isinstance(blobs, MemoryBlobStore):
        pytest.skip("moto's S3 checks neither the signature nor the expiry of presigned URLs")
    blobs.put("resp/expired", b"secret")
    url = blobs.download_url("resp/expired", expires_in=1)
    expires = int(urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["expires"][0])
    for _ in range(50):  # bounded: the URL's second runs out within about two seconds
        if time.time() > expires:
            break
        time.sleep(0.05)
    host_port, _, target = url.removeprefix("http://").partition("/")
    answer = visit(int(host_port.rsplit(":", 1)[1]), "GET", "/" + target, host_port)
    assert answer.status == 403


def test_a_request_delivered_twice_runs_once(
    blob_relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    # An SDK retry of a management post that had landed delivers the message twice.
    start_agent(blob_relay, str(app.port))
    poster = blob_relay.relay.poster
    original = poster.post

    def post_twice(connection_id: str, text: str) -> None:
        original(connection_id, text)
        if '"type":"request"' in text:
            original(connection_id, text)

    poster.post = post_twice  # type: ignore[method-assign]
    try:
        status, _ = post(blob_relay, "/upload", b"charge the card once")
    finally:
        poster.post = original  # type: ignore[method-assign]
    assert status == 200
    assert [r.body for r in app.requests].count(b"charge the card once") == 1
