"""The artifacts `sam build` made, run as Lambda runs them: every ``Handler`` the built template
names is imported from its own artifact directory plus its layers, under the runtime's Python
(3.13) with nothing else but boto3 (which the runtime provides), and called with a
captured-shape event. This proves the import paths, the shared protocol module and the
Powertools dependency really are in the zips.

DynamoDB and the @connections API are moto's server on loopback. ``make test`` builds first and
says where (``HATCHWAY_BUILD_DIR``, ``HATCHWAY_LAMBDA_PYTHON``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode
from moto.server import ThreadedMotoServer

from hatchway_relay import admin
from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table

EVENTS = Path(__file__).parents[1] / "handlers" / "events"
TOKEN = "hw_built-artifact-token-01"
REGION = "eu-west-1"
INVOKE_TIMEOUT_SECONDS = 60

# Runs inside the artifact's interpreter: import the handler as Lambda does, call it, print JSON.
RUNNER = """
import importlib, json, sys
request = json.load(sys.stdin)
module, _, name = request["handler"].rpartition(".")
handler = getattr(importlib.import_module(module), name)

class Context:
    function_name = "hatchway-smoke"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:hatchway-smoke"
    aws_request_id = "00000000-0000-4000-8000-000000000000"

try:
    result = {"ok": handler(request["event"], Context())}
except Exception as exc:
    result = {"raised": f"{type(exc).__name__}: {exc}"}
result["python"] = list(sys.version_info[:2])
result["protocol_from"] = sys.modules["hatchway.protocol"].__file__
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def built() -> tuple[Path, dict[str, Any], str]:
    build_dir, python = (
        os.environ.get("HATCHWAY_BUILD_DIR"),
        os.environ.get("HATCHWAY_LAMBDA_PYTHON"),
    )
    if not build_dir or not python:
        pytest.skip("run through `make test`, which builds the artifacts first")
    template_path = Path(build_dir) / "template.yaml"
    assert template_path.is_file(), f"{template_path} is missing: run `make build`"
    template, problems = decode(str(template_path))
    assert not problems
    return Path(build_dir), json.loads(json.dumps(template, default=str)), python


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    resource = boto3.resource(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    create_table(resource, "relay")
    admin.register_token(DynamoStore(resource.Table("relay")), TOKEN, "smoke")
    yield endpoint
    server.stop()


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def invoke(
    built: tuple[Path, dict[str, Any], str], endpoint: str, function: str, event: dict[str, Any]
) -> dict[str, Any]:
    build_dir, template, python = built
    properties = functions(template)[function]
    layers = properties.get("Layers") or template.get("Globals", {}).get("Function", {}).get(
        "Layers", []
    )
    # Lambda puts the function's code first, then each layer's python/ directory.
    paths = [build_dir / properties["CodeUri"]]
    for layer in layers:
        layer_properties = template["Resources"][layer["Ref"]]["Properties"]
        paths.append(build_dir / layer_properties["ContentUri"] / "python")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(str(p.resolve()) for p in paths),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "TABLE_NAME": "relay",
        "WEBSOCKET_MANAGEMENT_URL": endpoint,
        "VISITOR_SOCKET_MANAGEMENT_URL": endpoint,
        "PATH_URL": f"https://a1b2c3d4e5.execute-api.{REGION}.amazonaws.com/t/{{name}}/",
        "POWERTOOLS_SERVICE_NAME": "relay",
        "POWERTOOLS_METRICS_NAMESPACE": "Hatchway/smoke",
    }
    finished = subprocess.run(
        [python, "-s", "-c", RUNNER],
        input=json.dumps({"handler": properties["Handler"], "event": event}),
        capture_output=True,
        text=True,
        env=env,
        timeout=INVOKE_TIMEOUT_SECONDS,
        check=False,
    )
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"{function} did not run:\n{finished.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["python"] == [3, 13]
    # The protocol module comes from the layer, never from a copy inside the function.
    assert "ProtocolLayer" in result["protocol_from"]
    assert TOKEN not in finished.stdout + finished.stderr
    return result


def event(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def test_every_function_in_the_built_template_is_covered(
    built: tuple[Path, dict[str, Any], str],
) -> None:
    assert set(functions(built[1])) == {
        "AuthorizerFunction",
        "WebSocketFunction",
        "VisitorSocketFunction",
        "HttpFunction",
        "DnsReconcileFunction",
        "CertificateRenewalFunction",
    }
    for properties in functions(built[1]).values():
        artifact = built[0] / properties["CodeUri"]
        assert (artifact / "aws_lambda_powertools").is_dir()
        assert not (artifact / "hatchway").exists()  # the protocol is the layer's, only


ELF_MACHINE_AARCH64 = 183
"""``e_machine`` of an ELF file built for arm64, the functions' architecture."""


@pytest.mark.parametrize("function", ["DnsReconcileFunction", "CertificateRenewalFunction"])
def test_the_domain_jobs_carry_their_dependencies_built_for_arm64(
    built: tuple[Path, dict[str, Any], str], function: str
) -> None:
    # Their compiled dependencies (cryptography, pydantic-core) are arm64 builds, so they cannot
    # be imported on this machine: check what is there instead of running it.
    build_dir, template, _ = built
    properties = functions(template)[function]
    artifact = build_dir / properties["CodeUri"]
    module = properties["Handler"].rpartition(".")[0]
    assert (artifact / (module.replace(".", "/") + ".py")).is_file()
    for package in ("certbot", "certbot_dns_cloudflare", "cloudflare", "dns", "cryptography"):
        assert (artifact / package / "__init__.py").is_file(), package
    extensions = list(artifact.rglob("*.so"))
    assert extensions
    for extension in extensions:
        header = extension.read_bytes()[:20]
        assert header[:4] == b"\x7fELF", extension
        assert int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64, extension


def test_the_authorizer_allows_a_known_token_and_refuses_others(
    built: tuple[Path, dict[str, Any], str], moto_endpoint: str
) -> None:
    allowed = event("ws_authorizer")
    allowed["headers"]["Authorization"] = f"Bearer {TOKEN}"
    result = invoke(built, moto_endpoint, "AuthorizerFunction", allowed)
    assert result["ok"]["policyDocument"]["Statement"][0]["Effect"] == "Allow"

    refused = event("ws_authorizer")
    refused["headers"]["Authorization"] = "Bearer hw_unknown"
    denied = invoke(built, moto_endpoint, "AuthorizerFunction", refused)
    # A refusal is a Deny policy, not a Lambda error: scanners must not page the operator.
    assert denied["ok"]["policyDocument"]["Statement"][0]["Effect"] == "Deny"


def test_the_websocket_function_registers_an_authorized_connection(
    built: tuple[Path, dict[str, Any], str], moto_endpoint: str
) -> None:
    connect = event("ws_connect_authorized")
    connect["requestContext"]["authorizer"] = {"tokenId": "abcdefabcdef"}
    assert invoke(built, moto_endpoint, "WebSocketFunction", connect)["ok"] == {"statusCode": 200}


def test_the_visitor_socket_function_answers_a_visitors_socket_with_the_relays_own_page(
    built: tuple[Path, dict[str, Any], str], moto_endpoint: str
) -> None:
    connect = event("ws_connect_authorized")
    connect["headers"].update(
        {
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "x-hatchway-host": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
            "x-hatchway-target": "/t/nobody-here/hmr",
        }
    )
    connect.pop("multiValueHeaders", None)
    result = invoke(built, moto_endpoint, "VisitorSocketFunction", connect)["ok"]
    assert result["statusCode"] == 404
    assert result["headers"]["x-hatchway-error"] == "tunnel-not-found"


def test_the_http_function_answers_with_the_relays_own_page(
    built: tuple[Path, dict[str, Any], str], moto_endpoint: str
) -> None:
    visitor = event("http_v2_post")
    visitor["rawPath"] = "/t/nobody-here/"
    result = invoke(built, moto_endpoint, "HttpFunction", visitor)["ok"]
    assert result["statusCode"] == 404
    assert result["headers"]["x-hatchway-error"] == "tunnel-not-found"
