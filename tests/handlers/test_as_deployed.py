"""The Lambda entry points named in template.yaml, built by the AWS composition root from the
environment, with moto behind boto3: authorizer → $connect → hello → visitor request → agent
response frames → HTTP result, exactly the calls API Gateway makes when deployed."""

from __future__ import annotations

import base64
import copy
import io
import json
import threading
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
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use_fake_credentials(monkeypatch, REGION)
    env = {
        "TABLE_NAME": "relay",
        # moto serves @connections at the API's root; on AWS the stage follows the host.
        "WEBSOCKET_MANAGEMENT_URL": f"https://{API}.execute-api.{REGION}.amazonaws.com",
        "PATH_URL": f"https://a1b2c3d4e5.execute-api.{REGION}.amazonaws.com/t/{{name}}/",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        resource = boto3.resource("dynamodb", region_name=REGION)
        create_table(resource, "relay")
        admin.register_token(DynamoStore(resource.Table("relay")), TOKEN, "laptop")
        aws.relay.cache_clear()
        aws._handlers.cache_clear()
        yield
        aws.relay.cache_clear()
        aws._handlers.cache_clear()


def posted_to(connection_id: str) -> list[protocol.Frame]:
    """What the relay posted to the agent; moto concatenates messages with no separator."""
    backend = apigatewaymanagementapi_backends[DEFAULT_ACCOUNT_ID][REGION]
    # moto keys connections by the id as it appears in the URL path (percent-encoded).
    connection = backend.connections.get(urllib.parse.quote(connection_id, safe=""))
    data = connection.data.decode() if connection else ""
    decoder, frames, at = json.JSONDecoder(), [], 0
    while at < len(data):
        start = at
        _, at = decoder.raw_decode(data, at)
        frames.append(protocol.decode(data[start:at]))
    return frames


def send_as_agent(message: protocol.Message, connection_id: str) -> None:
    for text in protocol.encode(message):
        agent_event = event("ws_message")
        agent_event["requestContext"]["connectionId"] = connection_id
        agent_event["body"] = text
        assert aws.websocket_handler(agent_event, LAMBDA_CONTEXT) == {"statusCode": 200}


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

    body = bytes(range(256)) * 300  # several frames each way

    def agent() -> None:
        reassembler = protocol.Reassembler()
        for _ in range(2000):  # bounded: the request appears within a few polls
            for frame in posted_to(connection_id)[1:]:
                if isinstance(frame, protocol.Part):
                    try:
                        request = reassembler.feed(frame)
                    except protocol.ProtocolError:
                        continue  # a part seen on an earlier poll
                    if isinstance(request, protocol.Request):
                        reply = protocol.Response(
                            request.id, 201, (("x-seen", request.path),), request.body[::-1]
                        )
                        send_as_agent(reply, connection_id)
                        return
            threading.Event().wait(0.01)

    answering = threading.Thread(target=agent)
    answering.start()
    visitor = event("http_v2_post")
    visitor["rawPath"] = "/t/myapp/upload"
    visitor["body"] = base64.b64encode(body).decode()
    result = aws.http_handler(visitor, LAMBDA_CONTEXT)
    answering.join(10)

    assert result["statusCode"] == 201
    assert result["headers"]["x-seen"] == "/upload"
    assert base64.b64decode(result["body"]) == body[::-1]


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
    with pytest.raises(Exception, match="Unauthorized"):
        aws.authorizer_handler(refused, LAMBDA_CONTEXT)
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
    assert [r["Requests"] for r in metrics["Requests"]] == [[1.0]]
    assert [r["Responses4xx"] for r in metrics["Responses4xx"]] == [[1.0]]
    (error,) = metrics["Errors"]
    assert error["Cause"] == "tunnel-not-found" and error["service"] == "relay"
    assert "Responses5xx" not in metrics
