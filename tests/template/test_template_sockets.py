"""Visitors' WebSockets in ``template.yaml``: the visitor-socket API and its function, the IAM
each side of the flow gets, and the optional CloudFront front (``VisitorFront``), whose
viewer-request function is run here under node with a stub of CloudFront's ``cloudfront``
module."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
NODE = shutil.which("node")
NODE_SECONDS = 30
"""Ample for one node start running every case; a hung harness fails instead of waiting."""


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    template, problems = decode(str(TEMPLATE))
    assert not problems
    return json.loads(json.dumps(template, default=str))


def resource(sam: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(sam["Resources"][name])


def statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in function["Properties"].get("Policies", [])
        if isinstance(policy, dict)
        for statement in policy.get("Statement", [])
    ]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def manage_connections(function: dict[str, Any]) -> set[str]:
    """The ``@connections`` ARNs (as ``!Sub`` text) a function may manage."""
    return {
        arn["Fn::Sub"]
        for statement in statements(function)
        if "execute-api:ManageConnections" in as_list(statement["Action"])
        for arn in as_list(statement["Resource"])
    }


def table_grants(function: dict[str, Any]) -> dict[str, list[str]]:
    grants: dict[str, list[str]] = {}
    for statement in statements(function):
        for action in as_list(statement["Action"]):
            if action.startswith("dynamodb:"):
                assert action not in grants, action
                assert statement["Resource"] == {"Fn::GetAtt": ["RelayTable", "Arn"]}
                condition = statement["Condition"]["ForAllValues:StringLike"]
                grants[action] = condition["dynamodb:LeadingKeys"]
    return grants


PREFIX = "arn:aws:execute-api:${AWS::Region}:${AWS::AccountId}:"
POST_TO_AGENTS = PREFIX + "${WebSocketApi}/${StageName}/POST/@connections/*"
POST_TO_VISITORS = PREFIX + "${VisitorSocketApi}/${StageName}/POST/@connections/*"
CLOSE_VISITORS = PREFIX + "${VisitorSocketApi}/${StageName}/DELETE/@connections/*"


# ---------------------------------------------------------------------------------------------
# The visitor-socket API


def test_the_visitor_socket_api_has_the_three_routes_on_one_lambda_integration(
    sam: dict[str, Any],
) -> None:
    api = resource(sam, "VisitorSocketApi")
    assert api["Type"] == "AWS::ApiGatewayV2::Api"
    assert api["Properties"]["ProtocolType"] == "WEBSOCKET"
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in sam["Resources"].values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
        and r["Properties"]["ApiId"] == {"Ref": "VisitorSocketApi"}
    }
    assert set(routes) == {"$connect", "$default", "$disconnect"}
    for key, route in routes.items():
        assert route["Target"] == {"Fn::Sub": "integrations/${VisitorSocketIntegration}"}, key
        # Visitors are anonymous: the relay applies the tunnel's own rules in $connect.
        assert route.get("AuthorizationType", "NONE") == "NONE", key
        assert "AuthorizerId" not in route, key
    integration = resource(sam, "VisitorSocketIntegration")["Properties"]
    assert integration["ApiId"] == {"Ref": "VisitorSocketApi"}
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert "${VisitorSocketFunction.Arn}" in integration["IntegrationUri"]["Fn::Sub"]


def test_the_visitor_socket_stage_deploys_itself_logs_and_is_throttled(
    sam: dict[str, Any],
) -> None:
    stage = resource(sam, "VisitorSocketStage")
    properties = stage["Properties"]
    assert properties["ApiId"] == {"Ref": "VisitorSocketApi"}
    assert properties["StageName"] == {"Ref": "StageName"}
    assert properties["AutoDeploy"] is True
    assert stage["DependsOn"] == "ApiGatewayLogsRoleReady"  # the account's logs role first
    assert properties["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "VisitorSocketMessagesPerSecond"},
        "ThrottlingBurstLimit": {"Ref": "VisitorSocketMessagesBurst"},
    }
    parameters = sam["Parameters"]
    rate = parameters["VisitorSocketMessagesPerSecond"]
    burst = parameters["VisitorSocketMessagesBurst"]
    assert rate["MinValue"] == burst["MinValue"] == 1
    assert burst["Default"] >= 2 * rate["Default"]
    condition, settings, otherwise = properties["AccessLogSettings"]["Fn::If"]
    assert (condition, otherwise) == ("WithAccessLogs", {"Ref": "AWS::NoValue"})
    assert settings["DestinationArn"] == {"Fn::GetAtt": ["VisitorSocketAccessLogs", "Arn"]}
    # The agents' format, so that one reader serves both WebSocket APIs' lines.
    agents = resource(sam, "WebSocketStage")["Properties"]["AccessLogSettings"]["Fn::If"][1]
    assert settings["Format"] == agents["Format"]
    group = resource(sam, "VisitorSocketAccessLogs")
    assert group["Condition"] == "WithAccessLogs"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
    assert sam["Outputs"]["VisitorSocketAccessLogGroup"]["Value"] == {
        "Ref": "VisitorSocketAccessLogs"
    }


def test_the_visitor_socket_function_is_built_and_wired_like_the_relays_others(
    sam: dict[str, Any],
) -> None:
    function = resource(sam, "VisitorSocketFunction")
    assert function["Type"] == "AWS::Serverless::Function"
    assert "Condition" not in function
    properties = function["Properties"]
    assert properties["Handler"] == "hatchway_relay.aws.visitor_socket_handler"
    # Code, layer, runtime and architecture come from Globals, as for every relay function.
    for key in ("CodeUri", "Layers", "Runtime", "Architectures"):
        assert key not in properties, key
    assert properties["Timeout"] <= 29  # API Gateway's WebSocket integration timeout
    assert (
        properties["LoggingConfig"]
        == resource(sam, "WebSocketFunction")["Properties"]["LoggingConfig"]
    )
    assert resource(sam, "VisitorSocketLogs")["Properties"]["LogGroupName"] == {
        "Fn::Sub": "/aws/lambda/${VisitorSocketFunction}"
    }
    # Globals give it the table, the agents' management URL, the domain and custom hostnames.
    globals_ = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert {"TABLE_NAME", "WEBSOCKET_MANAGEMENT_URL", "DOMAIN_NAME", "CUSTOM_HOSTNAMES"} <= set(
        globals_
    )
    visitor_url = {
        "Fn::Sub": "https://${VisitorSocketApi}.execute-api.${AWS::Region}.amazonaws.com/"
        "${StageName}"
    }
    assert properties["Environment"]["Variables"] == {
        "VISITOR_SOCKET_MANAGEMENT_URL": visitor_url,
        "SECRETS_KEY": {"Ref": "SecretsKey"},
        "HATCHWAY_FRONT_SECRET": {
            "Fn::If": [
                "WithVisitorFront",
                {"Fn::Sub": "{{resolve:secretsmanager:${VisitorFrontSecret}:SecretString}}"},
                "",
            ]
        },
    }
    websocket = resource(sam, "WebSocketFunction")["Properties"]["Environment"]["Variables"]
    assert websocket["VISITOR_SOCKET_MANAGEMENT_URL"] == visitor_url
    permission = resource(sam, "VisitorSocketPermission")["Properties"]
    assert permission["FunctionName"] == {"Ref": "VisitorSocketFunction"}
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert permission["SourceArn"] == {
        "Fn::Sub": "arn:aws:execute-api:${AWS::Region}:${AWS::AccountId}:${VisitorSocketApi}/*"
    }


@pytest.mark.parametrize(
    ("function", "allowed"),
    [
        # Passes the visitor's upgrade, messages and goodbye to the agent; closes a visitor's
        # socket (too large a message, the agent gone) or sends it a message of the relay's own.
        ("VisitorSocketFunction", {POST_TO_AGENTS, POST_TO_VISITORS, CLOSE_VISITORS}),
        # Posts the app's messages to visitors and closes them when the app does.
        ("WebSocketFunction", {POST_TO_AGENTS, POST_TO_VISITORS, CLOSE_VISITORS}),
        # Visitors' HTTP requests go to the agents; an agent connection it finds gone takes
        # its visitors' sockets with it (closed, never sent anything).
        ("HttpFunction", {POST_TO_AGENTS, CLOSE_VISITORS}),
        ("AuthorizerFunction", set()),
    ],
)
def test_each_function_manages_only_the_connections_its_side_needs(
    sam: dict[str, Any], function: str, allowed: set[str]
) -> None:
    assert manage_connections(resource(sam, function)) == allowed


def test_the_visitor_socket_function_touches_visits_and_sockets_only(
    sam: dict[str, Any],
) -> None:
    function = resource(sam, "VisitorSocketFunction")
    # What an HTTP visit reads and writes, plus the visitor's socket item (vsock#, the
    # DynamoDB store's layout); no tokens, no answers written, no Scan or Query.
    assert table_grants(function) == {
        "dynamodb:GetItem": ["name#*", "conn#*", "req#*", "share#*", "relay", "vsock#*"],
        # conn#: the carrying connection's list of its sockets (dynamo_sockets).
        "dynamodb:UpdateItem": ["share#*", "name#*", "conn#*"],
        "dynamodb:PutItem": ["seen#*", "relay", "vsock#*"],
        "dynamodb:DeleteItem": ["conn#*", "name#*", "vsock#*"],
    }
    templates = {
        name
        for policy in function["Properties"]["Policies"]
        if isinstance(policy, dict)
        for name in policy
        if name != "Statement"
    }
    assert templates == {"KMSDecryptPolicy"}  # opens webhook secrets; cannot seal


# ---------------------------------------------------------------------------------------------
# The front (VisitorFront=cloudfront)

FRONT = {
    "VisitorFrontDistribution": "AWS::CloudFront::Distribution",
    "VisitorFrontSecret": "AWS::SecretsManager::Secret",
    "VisitorFrontFunction": "AWS::CloudFront::Function",
}


def test_the_front_is_a_parameter_off_by_default_and_all_of_it_conditional(
    sam: dict[str, Any],
) -> None:
    parameter = sam["Parameters"]["VisitorFront"]
    assert parameter["Default"] == "none"
    assert parameter["AllowedValues"] == ["none", "cloudfront"]
    assert sam["Conditions"]["WithVisitorFront"] == {
        "Fn::Equals": [{"Ref": "VisitorFront"}, "cloudfront"]
    }
    for name, kind in FRONT.items():
        assert sam["Resources"][name]["Type"] == kind
        assert sam["Resources"][name]["Condition"] == "WithVisitorFront", name
    front_kinds = set(FRONT.values()) | {"AWS::CloudFront::OriginRequestPolicy"}
    unconditional = [
        name
        for name, r in sam["Resources"].items()
        if r["Type"] in front_kinds and r.get("Condition") != "WithVisitorFront"
    ]
    assert unconditional == []
    for output in ("VisitorFrontDomain", "VisitorFrontUrl"):
        assert sam["Outputs"][output]["Condition"] == "WithVisitorFront"


def test_the_front_certificate_is_a_us_east_1_acm_arn_required_on_a_domain(
    sam: dict[str, Any],
) -> None:
    import re

    pattern = re.compile(sam["Parameters"]["VisitorFrontCertificate"]["AllowedPattern"])
    good = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-0000-4e5f-8a9b-0c1d2e3f4a5b"
    assert pattern.match("") and pattern.match(good)
    assert not pattern.match(good.replace("us-east-1", "eu-west-1"))  # CloudFront's region only
    rule = sam["Rules"]["VisitorFrontOnADomainNeedsACertificate"]
    assert rule["RuleCondition"] == {
        "Fn::And": [
            {"Fn::Equals": [{"Ref": "VisitorFront"}, "cloudfront"]},
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "DomainName"}, ""]}]},
        ]
    }
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "VisitorFrontCertificate"}, ""]}]
    }


def origins(sam: dict[str, Any]) -> dict[str, dict[str, Any]]:
    config = resource(sam, "VisitorFrontDistribution")["Properties"]["DistributionConfig"]
    return {origin["Id"]: origin for origin in config["Origins"]}


def test_the_distribution_sends_everything_uncached_to_the_http_api_by_default(
    sam: dict[str, Any],
) -> None:
    config = resource(sam, "VisitorFrontDistribution")["Properties"]["DistributionConfig"]
    behavior = config["DefaultCacheBehavior"]
    assert set(origins(sam)) == {"http-api", "visitor-sockets"}
    assert behavior["TargetOriginId"] == "http-api"
    assert origins(sam)["http-api"]["DomainName"] == {
        "Fn::Sub": "${HttpApi}.execute-api.${AWS::Region}.amazonaws.com"
    }
    assert set(behavior["AllowedMethods"]) == {
        "GET",
        "HEAD",
        "OPTIONS",
        "PUT",
        "PATCH",
        "POST",
        "DELETE",
    }
    assert behavior["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # CachingDisabled
    # AllViewerExceptHostHeader: the APIs answer only to their own names; it also carries
    # CloudFront-Viewer-Address, the visitor's address the relay uses.
    assert behavior["OriginRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"
    assert behavior["ViewerProtocolPolicy"] in ("redirect-to-https", "https-only")
    (association,) = behavior["FunctionAssociations"]
    assert association == {
        "EventType": "viewer-request",
        "FunctionARN": {"Fn::GetAtt": ["VisitorFrontFunction", "FunctionMetadata.FunctionARN"]},
    }
    for origin in origins(sam).values():
        assert origin["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    # On a domain: the tunnels' wildcard with the operator's us-east-1 certificate.
    assert config["Aliases"] == {
        "Fn::If": ["WithDomain", [{"Fn::Sub": "*.${DomainName}"}], {"Ref": "AWS::NoValue"}]
    }
    condition, certificate, default = config["ViewerCertificate"]["Fn::If"]
    assert condition == "WithDomain"
    assert certificate["AcmCertificateArn"] == {"Ref": "VisitorFrontCertificate"}
    assert certificate["SslSupportMethod"] == "sni-only"
    assert default == {"CloudFrontDefaultCertificate": True}


def test_only_the_socket_origin_carries_the_generated_secret(sam: dict[str, Any]) -> None:
    socket = origins(sam)["visitor-sockets"]
    assert socket["DomainName"] == {
        "Fn::Sub": "${VisitorSocketApi}.execute-api.${AWS::Region}.amazonaws.com"
    }
    assert socket["OriginPath"] == {"Fn::Sub": "/${StageName}"}
    assert socket["OriginCustomHeaders"] == [
        {
            "HeaderName": "x-hatchway-front",
            "HeaderValue": {
                "Fn::Sub": "{{resolve:secretsmanager:${VisitorFrontSecret}:SecretString}}"
            },
        }
    ]
    # The HTTP API forwards every header to the HTTP function, which passes them to the app.
    assert "OriginCustomHeaders" not in origins(sam)["http-api"]
    generated = resource(sam, "VisitorFrontSecret")["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32
    assert generated["ExcludePunctuation"] is True  # a plain header value
    # Never in clear in the template or an output.
    assert "VisitorFrontSecret" not in json.dumps(sam["Outputs"])


def test_the_dns_job_points_the_tunnels_at_the_front_when_it_is_on(sam: dict[str, Any]) -> None:
    assert sam["Conditions"]["WithVisitorFrontOnDomain"] == {
        "Fn::And": [{"Condition": "WithVisitorFront"}, {"Condition": "WithDomain"}]
    }
    front = {
        "Fn::If": [
            "WithVisitorFrontOnDomain",
            {"Fn::GetAtt": ["VisitorFrontDistribution", "DomainName"]},
            "",
        ]
    }
    env = resource(sam, "DnsReconcileFunction")["Properties"]["Environment"]["Variables"]
    # hatchway_domain's Settings read it as the *.<domain> target; empty: the HTTP API's
    # custom domain, found at run time.
    assert env["HTTP_API_TARGET"] == front
    # Turning the front on or off re-runs the job at deploy time.
    assert resource(sam, "DnsReconcileAtDeploy")["Properties"]["FrontTarget"] == front


def test_the_dns_settings_read_the_target_the_template_sets() -> None:
    from hatchway_domain import dns_reconcile

    settings = dns_reconcile.Settings.from_env(
        {
            "DOMAIN_NAME": "t.example.com",
            "CLOUDFLARE_ZONE_ID": "0" * 32,
            "STACK_NAME": "hatchway",
            "HTTP_API_TARGET": "d111111abcdef8.cloudfront.net",
        }
    )
    assert settings.http_target == "d111111abcdef8.cloudfront.net"
    records = {r.name: r.content for r in settings_records(settings)}
    assert records["*.t.example.com"] == "d111111abcdef8.cloudfront.net"


def settings_records(settings: Any) -> Any:
    from hatchway_domain import dns_plan

    return dns_plan.desired_records(settings.layout())


# ---------------------------------------------------------------------------------------------
# The CloudFront Function, run under node

FUNCTION_IMPORT = "import cf from 'cloudfront';"

HARNESS = """
const selected = [];
const cf = {
  selectRequestOriginById: (id) => { selected.push(id); },
  updateRequestOrigin: () => { throw new Error('updateRequestOrigin is not used'); },
};
%(code)s
const events = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const results = events.map((event) => {
  selected.length = 0;
  const request = handler(event);
  return {request: request, origins: selected.slice()};
});
process.stdout.write(JSON.stringify(results));
"""


def function_code(sam: dict[str, Any]) -> str:
    return str(resource(sam, "VisitorFrontFunction")["Properties"]["FunctionCode"])


def event(
    uri: str,
    headers: dict[str, str],
    querystring: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A viewer-request event as CloudFront Functions pass it (header names lower-case)."""
    return {
        "version": "1.0",
        "context": {"eventType": "viewer-request"},
        "viewer": {"ip": "198.51.100.7"},
        "request": {
            "method": "GET",
            "uri": uri,
            "querystring": querystring or {},
            "headers": {name: {"value": value} for name, value in headers.items()},
            "cookies": {},
        },
    }


KEY = {"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}

CASES = {
    "a plain GET keeps its path and origin": (
        event("/app/page", {"host": "MyApp.T.Example.com"}, {"x": {"value": "1"}}),
        {
            "uri": "/app/page",
            "origins": [],
            "host": "myapp.t.example.com",
            "target": "/app/page?x=1",
        },
    ),
    "a POST without a query": (
        event("/t/myapp/api", {"host": "d111.cloudfront.net"}),
        {
            "uri": "/t/myapp/api",
            "origins": [],
            "host": "d111.cloudfront.net",
            "target": "/t/myapp/api",
        },
    ),
    "an upgrade goes to the socket origin at its root": (
        event("/chat/room", {"host": "myapp.t.example.com:443", **KEY}, {"id": {"value": "7"}}),
        {
            "uri": "/",
            "origins": ["visitor-sockets"],
            "host": "myapp.t.example.com:443",
            "target": "/chat/room?id=7",
        },
    ),
    "what the visitor sent in the front's headers is overwritten": (
        event(
            "/ws",
            {
                "host": "myapp.t.example.com",
                "x-hatchway-host": "other.t.example.com",
                "x-hatchway-target": "/admin",
                "x-hatchway-front": "guessed",
                **KEY,
            },
        ),
        {
            "uri": "/",
            "origins": ["visitor-sockets"],
            "host": "myapp.t.example.com",
            "target": "/ws",
        },
    ),
    "repeated names and encoded values are kept": (
        event(
            "/s",
            {"host": "myapp.t.example.com"},
            {
                "a": {"value": "1", "multiValue": [{"value": "1"}, {"value": "3"}]},
                "b": {"value": "x%20y%26z"},
                "c%3D": {"value": "%E2%9C%93"},
                "flag": {"value": ""},
            },
        ),
        {
            "uri": "/s",
            "origins": [],
            "host": "myapp.t.example.com",
            "target": "/s?a=1&a=3&b=x%20y%26z&c%3D=%E2%9C%93&flag",
        },
    ),
}


@pytest.fixture(scope="module")
def ran(sam: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if NODE is None:
        pytest.skip("node is absent: apt-get install nodejs to run the front function's tests")
    code = function_code(sam)
    first, _, rest = code.partition("\n")
    # CloudFront requires the module's import on the first line; the harness stands in for it.
    assert first == FUNCTION_IMPORT
    script = tmp_path_factory.mktemp("front") / "harness.cjs"
    script.write_text(HARNESS % {"code": rest})
    names = list(CASES)
    finished = subprocess.run(
        [NODE, str(script)],
        input=json.dumps([CASES[name][0] for name in names]),
        capture_output=True,
        text=True,
        timeout=NODE_SECONDS,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    return dict(zip(names, json.loads(finished.stdout), strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_the_front_function_routes_and_tells_the_relay_what_was_asked(
    ran: dict[str, Any], case: str
) -> None:
    expected = CASES[case][1]
    result = ran[case]
    request = result["request"]
    assert request["uri"] == expected["uri"]
    assert result["origins"] == expected["origins"]
    headers = request["headers"]
    assert headers["x-hatchway-host"] == {"value": expected["host"]}
    assert headers["x-hatchway-target"] == {"value": expected["target"]}
    assert "x-hatchway-front" not in headers  # only CloudFront's origin header carries it
    # Everything else passes as the visitor sent it.
    sent = CASES[case][0]["request"]
    assert request["querystring"] == sent["querystring"]
    for name, value in sent["headers"].items():
        if not name.startswith("x-hatchway-"):
            assert headers[name] == value, name


def test_the_origin_the_function_selects_is_the_socket_apis(
    sam: dict[str, Any], ran: dict[str, Any]
) -> None:
    (selected,) = {o for r in ran.values() for o in r["origins"]}
    assert "${VisitorSocketApi}" in origins(sam)[selected]["DomainName"]["Fn::Sub"]


def test_the_function_runs_on_cloudfront_js_2(sam: dict[str, Any]) -> None:
    properties = resource(sam, "VisitorFrontFunction")["Properties"]
    # Origin selection (the cloudfront module) exists in runtime 2.0 only.
    assert properties["FunctionConfig"]["Runtime"] == "cloudfront-js-2.0"
    assert properties["AutoPublish"] is True
    assert function_code(sam).startswith(FUNCTION_IMPORT + "\n")
    # CloudFront Functions code is at most 10 KB.
    assert len(function_code(sam).encode()) < 10 * 1024
