"""The Lambda entry points named in template.yaml, built by the AWS composition root from the
environment, with moto behind boto3: authorizer → $connect → hello → visitor request → agent
response frames → HTTP result, exactly the calls API Gateway makes when deployed."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import io
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.apigatewaymanagementapi.models import apigatewaymanagementapi_backends
from moto.core import DEFAULT_ACCOUNT_ID

from hatchway import protocol
from hatchway.protocol import codec
from hatchway_local.integrations import DynamoDBWrites, load_routes
from hatchway_relay import admin, aws
from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table
from support.aws_credentials import use_fake_credentials
from support.lambda_context import LambdaContext

EVENTS = Path(__file__).parent / "events"
REGION = "eu-west-1"
API = "w9x8y7z6v5"
TOKEN = "hw_deployed-token-0001"


LAMBDA_CONTEXT = LambdaContext(function_name="hatchway-HttpFunction")


def event(name: str) -> dict[str, Any]:
    """A captured event, received by the gateway just now (the relay's deadline counts from
    ``timeEpoch``)."""
    loaded = copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))
    if "timeEpoch" in loaded.get("requestContext", {}):
        loaded["requestContext"]["timeEpoch"] = int(time.time() * 1000)
    return loaded


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_fake_credentials(monkeypatch, REGION)
    env = {
        "TABLE_NAME": "relay",
        # moto serves @connections at the API's root; on AWS the stage follows the host.
        "WEBSOCKET_MANAGEMENT_URL": f"https://{API}.execute-api.{REGION}.amazonaws.com",
        "PATH_URL": f"https://a1b2c3d4e5.execute-api.{REGION}.amazonaws.com/t/{{name}}/",
        "BLOB_BUCKET": "relay-blobs",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name=REGION)
        create_table(resource, "relay")
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket="relay-blobs", CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        monkeypatch.setenv("SECRETS_KEY", key)
        admin.register_token(DynamoStore(resource.Table("relay")), TOKEN, "laptop")
        aws.relay.cache_clear()
        aws._handlers.cache_clear()
        yield
        aws.relay.cache_clear()
        aws._handlers.cache_clear()


def posted_to(connection_id: str) -> list[protocol.Message]:
    """What the relay posted to the agent; moto concatenates messages with no separator."""
    backend = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID][REGION]
    # moto keys connections by the id as it appears in the URL path (percent-encoded).
    connection = backend.connections.get(urllib.parse.quote(connection_id, safe=""))
    data = connection.data.decode() if connection else ""
    decoder, frames, at = json.JSONDecoder(), [], 0
    while at < len(data):
        start = at
        _, at = decoder.raw_decode(data, at)
        frames.append(codec.decode(data[start:at]))
    return frames


def send_as_agent(message: protocol.Message, connection_id: str) -> None:
    """One agent message as the deployed WebSocket API takes it: an answer through the
    template's answer integration (one DynamoDB call, no Lambda), the rest through the
    WebSocket function's entry point."""
    agent_event = event("ws_message")
    agent_event["requestContext"]["connectionId"] = connection_id
    agent_event["requestContext"]["requestTimeEpoch"] = int(time.time() * 1000)
    agent_event["body"] = codec.encode(message)
    route = load_routes("relay").select(agent_event["body"])
    if route is None:
        assert aws.websocket_handler(agent_event, LAMBDA_CONTEXT) == {"statusCode": 200}
        return
    writes = DynamoDBWrites(boto3.client("dynamodb", region_name=REGION), "relay")
    route.apply(agent_event["body"], agent_event["requestContext"], writes)


def connect_agent(*specs: protocol.TunnelSpec) -> str:
    """An agent through the authorizer and $connect, welcomed for ``specs``: its connection id."""
    auth_event = event("ws_authorizer")
    auth_event["headers"]["Authorization"] = f"Bearer {TOKEN}"
    connect = event("ws_connect_authorized")
    connect["requestContext"]["authorizer"] = aws.authorizer_handler(auth_event, LAMBDA_CONTEXT)[
        "context"
    ]
    connection_id: str = connect["requestContext"]["connectionId"]
    assert aws.websocket_handler(connect, LAMBDA_CONTEXT) == {"statusCode": 200}
    send_as_agent(protocol.Hello(specs), connection_id)
    return connection_id


def blob_key(url: str) -> str:
    """The S3 key a presigned URL names (path-style or virtual-hosted)."""
    path = urllib.parse.urlsplit(url).path.lstrip("/")
    return path.removeprefix("relay-blobs/")


def answer_once(
    connection_id: str, respond: Callable[[protocol.Request], protocol.Response]
) -> None:
    """Be the agent: wait (bounded) for the request the relay posts, answer it once."""
    for _ in range(2000):  # bounded: the request appears within a few polls
        for message in posted_to(connection_id):
            if isinstance(message, protocol.Request):
                send_as_agent(respond(message), connection_id)
                return
        threading.Event().wait(0.01)


@pytest.mark.usefixtures("deployed")
def test_a_full_round_trip_through_the_deployed_entry_points() -> None:
    auth_event = event("ws_authorizer")
    auth_event["headers"]["Authorization"] = f"Bearer {TOKEN}"
    policy = aws.authorizer_handler(auth_event, LAMBDA_CONTEXT)
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"

    connect = event("ws_connect_authorized")
    connect["requestContext"]["authorizer"] = policy["context"]
    connection_id = connect["requestContext"]["connectionId"]
    assert aws.websocket_handler(connect, LAMBDA_CONTEXT) == {"statusCode": 200}

    send_as_agent(protocol.Hello((protocol.TunnelSpec("myapp"),)), connection_id)
    (welcome,) = posted_to(connection_id)
    assert isinstance(welcome, protocol.Welcome)
    assert welcome.tunnels[0].path_url.endswith("/t/myapp/")

    body = bytes(range(256)) * 30  # compressible: inline, compressed, both ways
    s3 = boto3.client("s3", region_name=REGION)

    def reverse(request: protocol.Request) -> protocol.Response:
        seen = request.body
        if request.body_url:  # the real agent GETs the presigned URL; moto serves it in-process
            seen = s3.get_object(Bucket="relay-blobs", Key=blob_key(request.body_url))[
                "Body"
            ].read()
        return protocol.Response(request.id, 201, (("x-seen", request.path),), seen[::-1])

    answering = threading.Thread(target=answer_once, args=(connection_id, reverse))
    answering.start()
    visitor = event("http_v2_post")
    visitor["rawPath"] = "/t/myapp/up load"  # as the HTTP API delivers it: decoded
    visitor["body"] = base64.b64encode(body).decode()
    result = aws.http_handler(visitor, LAMBDA_CONTEXT)
    answering.join(10)

    assert result["statusCode"] == 201
    assert result["headers"]["x-seen"] == "/up%20load"
    assert base64.b64decode(result["body"]) == body[::-1]


@pytest.mark.usefixtures("deployed")
def test_a_large_request_body_travels_through_the_stacks_bucket() -> None:
    connection_id = connect_agent(protocol.TunnelSpec("myapp"))
    body = random.Random(7).randbytes(300_000)
    s3 = boto3.client("s3", region_name=REGION)
    seen: list[protocol.Request] = []

    def fetch_and_echo(request: protocol.Request) -> protocol.Response:
        seen.append(request)
        assert request.body_url and request.upload_url
        data = s3.get_object(Bucket="relay-blobs", Key=blob_key(request.body_url))["Body"].read()
        s3.put_object(Bucket="relay-blobs", Key=blob_key(request.upload_url), Body=data)
        return protocol.Response(request.id, 200, uploaded=len(data))

    answering = threading.Thread(target=answer_once, args=(connection_id, fetch_and_echo))
    answering.start()
    visitor = event("http_v2_post")
    visitor["rawPath"] = "/t/myapp/echo"
    visitor["body"] = base64.b64encode(body).decode()
    result = aws.http_handler(visitor, LAMBDA_CONTEXT)
    answering.join(10)
    assert result["statusCode"] == 200 and base64.b64decode(result["body"]) == body
    assert seen[0].body == b"" and seen[0].body_size == len(body)


def emitted(output: str) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The JSON log records and, by metric name, the EMF records that carry each metric."""
    logs: list[dict[str, Any]] = []
    metrics: dict[str, list[dict[str, Any]]] = {}
    for line in output.splitlines():
        record = json.loads(line)  # every line the functions print is JSON
        if "_aws" not in record:
            logs.append(record)
            continue
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                metrics.setdefault(metric["Name"], []).append(record)
    return logs, metrics


@pytest.fixture
def lambda_output(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """Everything the functions print: log records (through Powertools' handler, which holds
    the stream it found at import) and EMF metric lines (printed)."""
    handler = aws.logger.registered_handler
    logs = io.StringIO()
    previous = handler.setStream(logs)  # type: ignore[attr-defined]
    capsys.readouterr()
    yield lambda: logs.getvalue() + capsys.readouterr().out
    handler.setStream(previous)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("deployed")
def test_logs_are_correlated_json_and_metrics_say_what_happened_without_secrets(
    lambda_output: Callable[[], str],
) -> None:
    refused = event("ws_authorizer")
    refused["queryStringParameters"] = {"token": "hw_a-token-that-must-not-be-logged"}
    denied = aws.authorizer_handler(refused, LAMBDA_CONTEXT)  # a Deny, not a Lambda error
    assert denied["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    auth_event = event("ws_authorizer")
    auth_event["headers"]["Authorization"] = f"Bearer {TOKEN}"
    policy = aws.authorizer_handler(auth_event, LAMBDA_CONTEXT)
    connect = event("ws_connect_authorized")
    connect["requestContext"]["authorizer"] = policy["context"]
    connection_id = connect["requestContext"]["connectionId"]
    aws.websocket_handler(connect, LAMBDA_CONTEXT)
    send_as_agent(protocol.Hello((protocol.TunnelSpec("myapp"),)), connection_id)
    send_as_agent(protocol.Ping(1.0), connection_id)
    missing = event("http_v2_post")
    missing["rawPath"] = "/t/nobody-here/"
    assert aws.http_handler(missing, LAMBDA_CONTEXT)["statusCode"] == 404

    output = lambda_output()
    assert TOKEN not in output and "hw_a-token-that-must-not-be-logged" not in output
    logs, metrics = emitted(output)
    assert logs and all(r["correlation_id"] and r["function_request_id"] for r in logs)
    assert any("agent connected" in r["message"] for r in logs)
    assert [r["ActiveTunnels"] for r in metrics["ActiveTunnels"]] == [[1.0]]
    (error,) = metrics["Errors"]
    assert error["Cause"] == "tunnel-not-found" and error["service"] == "relay"
    # Requests, their statuses and latency are the HTTP API's own metrics: never logged again.
    assert not {"Requests", "Responses4xx", "Responses5xx", "WaitTime"} & set(metrics)


@pytest.mark.usefixtures("deployed")
def test_a_webhook_secret_is_stored_sealed_and_still_checks_deliveries() -> None:
    secret = "whsec_never-in-the-table"
    connection_id = connect_agent(
        protocol.TunnelSpec("hooks", webhook="stripe", webhook_secret=secret)
    )

    items = boto3.resource("dynamodb", region_name=REGION).Table("relay").scan()["Items"]
    assert secret not in json.dumps(items, default=str)  # only KMS ciphertext is kept
    (claim,) = [item for item in items if item["pk"] == "name#hooks"]
    assert claim["webhook_secret"].startswith("kms:")

    body = b'{"id":"evt_1"}'
    stamp = str(int(time.time()))
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    answering = threading.Thread(
        target=answer_once,
        args=(connection_id, lambda r: protocol.Response(r.id, 200, body=b"ok")),
    )
    answering.start()
    delivery = event("http_v2_post")
    delivery["rawPath"] = "/t/hooks/stripe"
    delivery["body"] = base64.b64encode(body).decode()
    delivery["headers"]["stripe-signature"] = f"t={stamp},v1={signature}"
    assert aws.http_handler(delivery, LAMBDA_CONTEXT)["statusCode"] == 200
    answering.join(10)
    forged = copy.deepcopy(delivery)
    forged["headers"]["stripe-signature"] = f"t={stamp},v1={'0' * 64}"
    assert aws.http_handler(forged, LAMBDA_CONTEXT)["statusCode"] == 403
