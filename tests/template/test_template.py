"""``template.yaml`` checked offline: cfn-lint on the SAM template, the SAM → CloudFormation
translation linted again (it catches bad Refs inside Globals that plain cfn-lint misses), and
the security properties a reviewer would look for, walked in the translated template."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint, lint_file
from cfnlint.decode import decode
from samtranslator.translator.transform import transform

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
PLACEHOLDER_CODE = "s3://placeholder-bucket/code.zip"


class NoManagedPolicies:
    """The translator's policy loader: no AWS call, no managed policy names needed."""

    def load(self, *args: object, **kwargs: object) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    template, problems = decode(str(TEMPLATE))
    assert not problems
    return json.loads(json.dumps(template, default=str))


@pytest.fixture(scope="module")
def translated(sam: dict[str, Any]) -> dict[str, Any]:
    template = json.loads(json.dumps(sam))
    # Local code paths become S3 URIs, as `sam package` would make them.
    template.get("Globals", {}).get("Function", {}).update(CodeUri=PLACEHOLDER_CODE)
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in properties:
                properties[key] = PLACEHOLDER_CODE
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        return dict(transform(template, {}, NoManagedPolicies()))


def test_sam_template_is_lint_clean() -> None:
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["eu-west-1", "us-east-1"]))
    assert [str(m) for m in matches] == []


def test_translated_cloudformation_is_lint_clean(translated: dict[str, Any]) -> None:
    matches = lint(json.dumps(translated), config=ManualArgs(regions=["eu-west-1"]))
    assert [str(m) for m in matches] == []


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def statements(translated: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for role in resources(translated, "AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            found += policy["PolicyDocument"]["Statement"]
    return found


MANAGED_CONNECTIONS = {
    "arn:aws:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/${StageName}/POST/@connections/*",
    "arn:aws:execute-api:${AWS::Region}:${AWS::AccountId}:${VisitorSocketApi}/${StageName}/POST/@connections/*",
    "arn:aws:execute-api:${AWS::Region}:${AWS::AccountId}:${VisitorSocketApi}/${StageName}/DELETE/@connections/*",
}
"""Posting to agents; posting to and closing visitors' sockets (tests/template/
test_template_sockets.py pins which function may do which)."""


def test_manage_connections_is_scoped_to_posting_on_this_stage(translated: dict[str, Any]) -> None:
    scoped = [
        s for s in statements(translated) if "execute-api:ManageConnections" in str(s["Action"])
    ]
    assert scoped, "some function must be allowed to post to agents"
    for statement in scoped:
        resources = statement["Resource"]
        for resource in resources if isinstance(resources, list) else [resources]:
            assert resource["Fn::Sub"] in MANAGED_CONNECTIONS


def test_dynamodb_statements_name_the_table(translated: dict[str, Any]) -> None:
    dynamo = [s for s in statements(translated) if "dynamodb:" in json.dumps(s["Action"])]
    assert dynamo
    for statement in dynamo:
        assert "RelayTable" in json.dumps(statement["Resource"])


def test_every_lambda_permission_has_a_source_arn(translated: dict[str, Any]) -> None:
    permissions = resources(translated, "AWS::Lambda::Permission")
    assert permissions
    for name, permission in permissions.items():
        assert "SourceArn" in permission["Properties"], name


def test_table_is_on_demand_with_ttl(sam: dict[str, Any]) -> None:
    (table,) = resources(sam, "AWS::DynamoDB::Table").values()
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}


def test_functions_run_python_3_13_on_arm64(translated: dict[str, Any]) -> None:
    functions = resources(translated, "AWS::Lambda::Function")
    assert functions
    for function in functions.values():
        assert function["Properties"]["Runtime"] == "python3.13"
        assert function["Properties"]["Architectures"] == ["arm64"]


def test_http_function_times_out_after_the_cores_own_504(sam: dict[str, Any]) -> None:
    from hatchway import protocol

    timeout = sam["Resources"]["HttpFunction"]["Properties"]["Timeout"]
    assert protocol.RESPONSE_TIMEOUT_SECONDS < timeout <= 30


def test_every_named_handler_exists(sam: dict[str, Any]) -> None:
    handlers = [
        r["Properties"]["Handler"] for r in resources(sam, "AWS::Serverless::Function").values()
    ]
    assert handlers
    for handler in handlers:
        module, _, function = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function)), handler


def test_connect_route_is_guarded_by_the_token_authorizer(sam: dict[str, Any]) -> None:
    # The agents' API; visitors' sockets are anonymous (test_template_sockets.py).
    routes = {
        name: route
        for name, route in resources(sam, "AWS::ApiGatewayV2::Route").items()
        if route["Properties"]["ApiId"] == {"Ref": "WebSocketApi"}
    }
    (connect,) = [r for r in routes.values() if r["Properties"]["RouteKey"] == "$connect"]
    assert connect["Properties"]["AuthorizationType"] == "CUSTOM"
    authorizer = sam["Resources"][connect["Properties"]["AuthorizerId"]["Ref"]]
    assert authorizer["Properties"]["AuthorizerType"] == "REQUEST"
    assert "AuthorizerFunction.Arn" in json.dumps(authorizer["Properties"]["AuthorizerUri"])
    others = [r for r in routes.values() if r["Properties"]["RouteKey"] != "$connect"]
    assert all("AuthorizerId" not in r["Properties"] for r in others)  # only $connect may have one


def test_every_parameter_is_documented(sam: dict[str, Any]) -> None:
    for name, parameter in sam["Parameters"].items():
        assert parameter.get("Description"), name
        assert "Default" in parameter, name


def test_point_in_time_recovery_follows_its_parameter(sam: dict[str, Any]) -> None:
    (table,) = resources(sam, "AWS::DynamoDB::Table").values()
    setting = table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
    assert setting == {"Fn::If": ["WithPointInTimeRecovery", True, False]}


def test_websocket_stage_is_throttled(sam: dict[str, Any]) -> None:
    stage = sam["Resources"]["WebSocketStage"]
    settings = stage["Properties"]["DefaultRouteSettings"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= settings.keys()


def test_visitors_reach_the_http_function_on_every_path_including_the_root(
    translated: dict[str, Any],
) -> None:
    routes = resources(translated, "AWS::ApiGatewayV2::Route")
    body = json.dumps(resources(translated, "AWS::ApiGatewayV2::Api"))
    # SAM puts the HTTP API's routes in its OpenAPI body; "$default" matches "/" as well.
    assert "$default" in body or any(
        r["Properties"]["RouteKey"] == "$default" for r in routes.values()
    )
    assert "{proxy+}" not in body


def test_logs_expire_and_never_include_the_event(sam: dict[str, Any]) -> None:
    functions = resources(sam, "AWS::Serverless::Function")
    groups = resources(sam, "AWS::Logs::LogGroup")
    named = {json.dumps(g["Properties"]["LogGroupName"]) for g in groups.values()}
    for name in functions:
        assert json.dumps({"Fn::Sub": f"/aws/lambda/${{{name}}}"}) in named, name
    assert all(g["Properties"]["RetentionInDays"] for g in groups.values())
    assert "POWERTOOLS_LOGGER_LOG_EVENT" not in json.dumps(sam)  # events carry agents' tokens


def alarm_metrics(alarm: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (namespace if isinstance(namespace, str) else "Hatchway/<stack>", metric["MetricName"])
        for stat in alarm["Properties"]["Metrics"]
        if "MetricStat" in stat
        for metric in [stat["MetricStat"]["Metric"]]
        for namespace in [metric["Namespace"]]
    }


def lambda_metrics(alarm: dict[str, Any]) -> set[tuple[str, str]]:
    """(function, metric name) of every AWS/Lambda metric an alarm reads."""
    return {
        (dimension["Value"]["Ref"], metric["MetricName"])
        for stat in alarm["Properties"].get("Metrics", [])
        if "MetricStat" in stat
        for metric in [stat["MetricStat"]["Metric"]]
        if metric["Namespace"] == "AWS/Lambda"
        for dimension in metric["Dimensions"]
        if dimension["Name"] == "FunctionName"
    } | (
        {
            (dimension["Value"]["Ref"], alarm["Properties"]["MetricName"])
            for dimension in alarm["Properties"]["Dimensions"]
        }
        if alarm["Properties"].get("Namespace") == "AWS/Lambda"
        else set()
    )


def test_alarms_watch_5xx_rate_failures_and_throttles_and_notify_the_topic(
    sam: dict[str, Any],
) -> None:
    alarms = {
        name: alarm
        for name, alarm in resources(sam, "AWS::CloudWatch::Alarm").items()
        if "Metrics" in alarm["Properties"]
    }
    watched = {name: alarm_metrics(alarm) for name, alarm in alarms.items()}
    assert watched["HttpErrorRateAlarm"] == {("AWS/ApiGateway", "5xx"), ("AWS/ApiGateway", "Count")}
    http_api = {"Name": "ApiId", "Value": {"Ref": "HttpApi"}}
    assert all(
        stat["MetricStat"]["Metric"]["Dimensions"] == [http_api]
        for stat in alarms["HttpErrorRateAlarm"]["Properties"]["Metrics"]
        if "MetricStat" in stat
    )
    assert watched["FunctionErrorsAlarm"] == {("AWS/Lambda", "Errors")}
    assert watched["AuthorizerErrorsAlarm"] == {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Invocations"),
    }
    assert watched["ThrottlesAlarm"] == {("AWS/Lambda", "Throttles")}
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching"
    # Every relay function's failures and throttles are watched by some alarm.
    relay_functions = [
        name
        for name, function in resources(sam, "AWS::Serverless::Function").items()
        if "Condition" not in function
    ]
    for metric in ("Errors", "Throttles"):
        for name in relay_functions:
            assert any((name, metric) in lambda_metrics(alarm) for alarm in alarms.values()), (
                name,
                metric,
            )
    subscription = sam["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "WithAlarmEmail"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}


def test_metric_names_in_alarms_are_the_ones_the_relay_emits(sam: dict[str, Any]) -> None:
    from hatchway_relay import metrics

    documented = metrics.__doc__ or ""
    for alarm in resources(sam, "AWS::CloudWatch::Alarm").values():
        if "Metrics" not in alarm["Properties"]:
            continue
        for namespace, name in alarm_metrics(alarm):
            if namespace.startswith("Hatchway"):
                assert f"\n    {name} " in documented, name
    env = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == {"Fn::Sub": "Hatchway/${AWS::StackName}"}
    assert env["POWERTOOLS_SERVICE_NAME"] == "relay"


def test_outputs_give_every_next_step(sam: dict[str, Any]) -> None:
    outputs = sam["Outputs"]
    assert {"WebSocketUrl", "PublicBaseUrl", "TableName", "AdminCommand", "AlarmTopic"} <= set(
        outputs
    )
    assert "hatchway-admin --stack ${AWS::StackName}" in outputs["AdminCommand"]["Value"]["Fn::Sub"]
    for output in outputs.values():
        assert output["Description"]


# ---------------------------------------------------------------------------------------------
# Custom domain (DomainName): conditional resources


def test_domain_resources_exist_only_with_a_domain(sam: dict[str, Any]) -> None:
    with_domain = {
        "WildcardCertificate": "AWS::CertificateManager::Certificate",
        "TunnelsDomain": "AWS::ApiGatewayV2::DomainName",
        "TunnelsMapping": "AWS::ApiGatewayV2::ApiMapping",
        "AgentsDomain": "AWS::ApiGatewayV2::DomainName",
        "AgentsMapping": "AWS::ApiGatewayV2::ApiMapping",
        "DnsReconcileFunction": "AWS::Serverless::Function",
        "DnsReconcileAtDeploy": "Custom::DnsReconcile",
        "DomainJobsAlarm": "AWS::CloudWatch::Alarm",
    }
    with_letsencrypt = {
        "CertificateStateBucket": "AWS::S3::Bucket",
        "CertificateRenewalFunction": "AWS::Serverless::Function",
        "CertificateAtDeploy": "Custom::Certificate",
        "CertificateJobAlarm": "AWS::CloudWatch::Alarm",
    }
    for names, condition in ((with_domain, "WithDomain"), (with_letsencrypt, "WithLetsEncrypt")):
        for name, kind in names.items():
            assert sam["Resources"][name]["Type"] == kind
            assert sam["Resources"][name]["Condition"] == condition, name


def test_the_wildcard_uses_a_dns_validated_acm_certificate(sam: dict[str, Any]) -> None:
    certificate = sam["Resources"]["WildcardCertificate"]["Properties"]
    assert certificate["ValidationMethod"] == "DNS"
    assert certificate["DomainName"] == {"Fn::Sub": "*.${DomainName}"}
    tunnels = sam["Resources"]["TunnelsDomain"]["Properties"]["DomainNameConfigurations"][0]
    assert tunnels["CertificateArn"] == {"Ref": "WildcardCertificate"}
    assert tunnels["EndpointType"] == "REGIONAL" and tunnels["SecurityPolicy"] == "TLS_1_2"


def test_the_dns_job_does_not_wait_for_the_certificate_it_validates(sam: dict[str, Any]) -> None:
    # The certificate waits for the validation record the job writes: the job's function must
    # not reference it (or anything that needs it), or the first deploy never finishes.
    function = json.dumps(sam["Resources"]["DnsReconcileFunction"])
    for waiting in ("WildcardCertificate", "TunnelsDomain", "AgentsDomain"):
        assert waiting not in function
    assert "Schedule" in function


def test_certificate_state_bucket_is_private_encrypted_versioned_and_tls_only(
    sam: dict[str, Any],
) -> None:
    bucket = sam["Resources"]["CertificateStateBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    policy = sam["Resources"]["CertificateStateBucketPolicy"]["Properties"]["PolicyDocument"]
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_domain_jobs_read_only_their_own_secret(sam: dict[str, Any]) -> None:
    for name in ("DnsReconcileFunction", "CertificateRenewalFunction"):
        statements = [
            statement
            for policy in sam["Resources"][name]["Properties"]["Policies"]
            if "Statement" in policy
            for statement in policy["Statement"]
        ]
        secret_reads = [s for s in statements if "secretsmanager:GetSecretValue" in json.dumps(s)]
        # The name and Secrets Manager's random six-character suffix: "${name}*" would also
        # match every secret whose name starts with this one's.
        assert [s["Resource"] for s in secret_reads] == [
            {
                "Fn::Sub": "arn:aws:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
                "${CloudflareApiTokenSecret}-??????"
            }
        ], name


def test_custom_hostnames_reach_the_relay_and_the_domain_jobs(sam: dict[str, Any]) -> None:
    parameter = sam["Parameters"]["CustomHostnames"]
    pattern = re.compile(parameter["AllowedPattern"])
    for good in ("", "api.mycompany.com=myapp", "a.example.com=a, b.example.com=b"):
        assert pattern.match(good), good
    for bad in ("api.mycompany.com", "API.example.com=a", "a.example.com=a;rm"):
        assert not pattern.match(bad), bad
    relay_env = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert relay_env["CUSTOM_HOSTNAMES"] == {"Ref": "CustomHostnames"}
    dns_env = sam["Resources"]["DnsReconcileFunction"]["Properties"]["Environment"]["Variables"]
    assert dns_env["HTTP_API_ID"] == {"Ref": "HttpApi"} and dns_env["HTTP_API_STAGE"] == "$default"
    for at_deploy in ("DnsReconcileAtDeploy", "CertificateAtDeploy"):
        properties = sam["Resources"][at_deploy]["Properties"]
        assert properties["CustomHostnames"] == {"Ref": "CustomHostnames"}, at_deploy
    (assertion,) = sam["Rules"]["CustomHostnamesNeedADomain"]["Assertions"]
    assert "DomainName" in json.dumps(assertion["Assert"])


def test_the_dns_job_manages_only_custom_domains_and_tags(sam: dict[str, Any]) -> None:
    statements = [
        statement
        for policy in sam["Resources"]["DnsReconcileFunction"]["Properties"]["Policies"]
        for statement in policy.get("Statement", [])
    ]
    apigateway = [s for s in statements if "apigateway:" in json.dumps(s["Action"])]
    resources = [r["Fn::Sub"] for s in apigateway for r in s["Resource"]]
    prefix = "arn:aws:apigateway:${AWS::Region}::/"
    assert resources and all(r.startswith(prefix) for r in resources)
    assert {r.removeprefix(prefix).split("/")[0] for r in resources} == {"domainnames", "tags"}
    unscoped = [s for s in statements if s["Resource"] == "*"]
    assert {a for s in unscoped for a in as_list(s["Action"])} == {
        "acm:ListCertificates",
        "acm:DescribeCertificate",
        "acm:RequestCertificate",
    }
    # The one unscoped write can only make certificates tagged as this stack's.
    (request,) = [s for s in unscoped if "acm:RequestCertificate" in as_list(s["Action"])]
    assert request["Condition"] == request_tag(OWNER_TAG, {"Ref": "AWS::StackName"})


def as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def request_tag(key: str, value: Any) -> dict[str, Any]:
    """A creation allowed only with tag ``key`` = ``value`` and no other tag key."""
    return {
        "StringEquals": {f"aws:RequestTag/{key}": value},
        "ForAllValues:StringEquals": {"aws:TagKeys": [key]},
    }


def resource_tag(key: str, value: Any) -> dict[str, Any]:
    """A change allowed only to a resource already tagged ``key`` = ``value``."""
    return {"StringEquals": {f"aws:ResourceTag/{key}": value}}


OWNER_TAG = "hatchway:custom-hostname-of"
STACK = {"Ref": "AWS::StackName"}
MANAGED_TAG = "hatchway:managed-by"
CERTIFICATES = "arn:aws:acm:${AWS::Region}:${AWS::AccountId}:certificate/*"
DOMAINS = "arn:aws:apigateway:${AWS::Region}::/domainnames"


def test_the_tags_pinned_in_iam_are_the_ones_the_domain_jobs_write() -> None:
    from hatchway_domain import acm_import, custom_domains

    assert custom_domains.OWNER_TAG == OWNER_TAG  # its value: the stack's name (STACK_NAME)
    assert acm_import.MANAGED_TAG == {"Key": MANAGED_TAG, "Value": "certificate-renewal"}


def domain_job_grants(function: dict[str, Any]) -> dict[tuple[str, str], list[Any]]:
    """(action, resource) -> the condition of every statement that grants it (None: none)."""
    grants: dict[tuple[str, str], list[Any]] = {}
    for statement in sam_statements(function):
        for action in as_list(statement["Action"]):
            resources = statement["Resource"]
            for resource in resources if isinstance(resources, list) else [resources]:
                text = resource if isinstance(resource, str) else resource.get("Fn::Sub", "")
                grants.setdefault((action, text), []).append(statement.get("Condition"))
    return grants


@pytest.mark.parametrize(
    ("function", "action", "resource", "conditions"),
    [
        # The DNS job creates only with the stack's tag, changes and deletes only what has it.
        (
            "DnsReconcileFunction",
            "acm:RequestCertificate",
            "*",
            [request_tag(OWNER_TAG, STACK)],
        ),
        (
            "DnsReconcileFunction",
            "acm:AddTagsToCertificate",
            CERTIFICATES,
            [request_tag(OWNER_TAG, STACK)],
        ),
        ("DnsReconcileFunction", "apigateway:POST", DOMAINS, [request_tag(OWNER_TAG, STACK)]),
        (
            "DnsReconcileFunction",
            "apigateway:POST",
            "arn:aws:apigateway:${AWS::Region}::/tags/*",
            [request_tag(OWNER_TAG, STACK)],
        ),
        (
            "DnsReconcileFunction",
            "apigateway:POST",
            DOMAINS + "/*/apimappings",
            [resource_tag(OWNER_TAG, STACK)],
        ),
        (
            "DnsReconcileFunction",
            "apigateway:PATCH",
            DOMAINS + "/*",
            [resource_tag(OWNER_TAG, STACK)],
        ),
        (
            "DnsReconcileFunction",
            "apigateway:PATCH",
            DOMAINS + "/*/apimappings/*",
            [resource_tag(OWNER_TAG, STACK)],
        ),
        (
            "DnsReconcileFunction",
            "apigateway:DELETE",
            DOMAINS + "/*",
            [resource_tag(OWNER_TAG, STACK)],
        ),
        (
            "DnsReconcileFunction",
            "apigateway:DELETE",
            DOMAINS + "/*/apimappings/*",
            [resource_tag(OWNER_TAG, STACK)],
        ),
        # The certificate job re-imports only into its own certificates, creates only tagged.
        (
            "CertificateRenewalFunction",
            "acm:ImportCertificate",
            CERTIFICATES,
            [
                resource_tag(MANAGED_TAG, "certificate-renewal"),
                request_tag(MANAGED_TAG, "certificate-renewal"),
            ],
        ),
        (
            "CertificateRenewalFunction",
            "acm:AddTagsToCertificate",
            CERTIFICATES,
            [request_tag(MANAGED_TAG, "certificate-renewal")],
        ),
    ],
)
def test_domain_jobs_change_only_what_carries_their_tag(
    sam: dict[str, Any], function: str, action: str, resource: str, conditions: list[Any]
) -> None:
    assert domain_job_grants(sam["Resources"][function])[action, resource] == conditions


@pytest.mark.parametrize("function", ["DnsReconcileFunction", "CertificateRenewalFunction"])
def test_every_certificate_or_domain_write_of_the_domain_jobs_is_tag_bound(
    sam: dict[str, Any], function: str
) -> None:
    reads = {"apigateway:GET", "acm:ListCertificates", "acm:DescribeCertificate"}
    for (action, resource), conditions in domain_job_grants(sam["Resources"][function]).items():
        if action.split(":")[0] in ("acm", "apigateway") and action not in reads:
            assert all(
                "aws:RequestTag/" in json.dumps(c) or "aws:ResourceTag/" in json.dumps(c)
                for c in conditions
            ), (action, resource)


# ---------------------------------------------------------------------------------------------
# The data path at platform rules: blob bucket, concurrency, throttles, deploy order, logs

RELAY_FUNCTIONS = (
    "HttpFunction",
    "WebSocketFunction",
    "AuthorizerFunction",
    "VisitorSocketFunction",
)


def sam_statements(function: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in function["Properties"].get("Policies", [])
        if isinstance(policy, dict)
        for statement in policy.get("Statement", [])
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            ("PublicAccessBlockConfiguration",),
            {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        ),
        (
            ("BucketEncryption", "ServerSideEncryptionConfiguration"),
            [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}],
        ),
        (("OwnershipControls", "Rules"), [{"ObjectOwnership": "BucketOwnerEnforced"}]),
        (
            ("LifecycleConfiguration", "Rules"),
            [
                {
                    "Id": "expire-bodies",
                    "Status": "Enabled",
                    "ExpirationInDays": 1,
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }
            ],
        ),
        (("VersioningConfiguration",), None),  # an expired body must be gone, not kept
    ],
)
def test_blob_bucket_is_private_encrypted_and_expiring(
    sam: dict[str, Any], path: tuple[str, ...], expected: Any
) -> None:
    value: Any = sam["Resources"]["BlobBucket"]["Properties"]
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    assert value == expected


def test_blob_bucket_refuses_plain_http(sam: dict[str, Any]) -> None:
    policy = sam["Resources"]["BlobBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "BlobBucket"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [
        {"Fn::GetAtt": ["BlobBucket", "Arn"]},
        {"Fn::Sub": "${BlobBucket.Arn}/*"},
    ]


@pytest.mark.parametrize(
    ("function", "env", "actions"),
    [
        (
            "HttpFunction",
            {"Ref": "BlobBucket"},
            {"s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket"},
        ),
        ("WebSocketFunction", None, set()),
        ("AuthorizerFunction", None, set()),
        ("DnsReconcileFunction", None, set()),
        ("CertificateRenewalFunction", None, set()),
    ],
)
def test_only_the_http_function_may_touch_the_blob_bucket(
    sam: dict[str, Any], function: str, env: Any, actions: set[str]
) -> None:
    properties = sam["Resources"][function]["Properties"]
    assert properties.get("Environment", {}).get("Variables", {}).get("BLOB_BUCKET") == env
    on_bucket = [s for s in sam_statements(sam["Resources"][function]) if "BlobBucket" in str(s)]
    granted = {
        (action, json.dumps(s["Resource"]))
        for s in on_bucket
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {action for action, _ in granted} == actions
    objects, bucket = (
        json.dumps({"Fn::Sub": "${BlobBucket.Arn}/*"}),
        json.dumps({"Fn::GetAtt": ["BlobBucket", "Arn"]}),
    )
    for action, resource in granted:  # object reads and writes; listing only to tell 404s
        assert resource == (bucket if action == "s3:ListBucket" else objects)
    assert all(s["Effect"] == "Allow" for s in on_bucket)
    if not actions:
        assert "BlobBucket" not in json.dumps(sam["Resources"][function])
    assert "BlobBucket" not in json.dumps(sam["Globals"])


def test_only_the_http_functions_role_names_the_blob_bucket(translated: dict[str, Any]) -> None:
    roles = resources(translated, "AWS::IAM::Role")
    naming = {name for name, role in roles.items() if "BlobBucket" in json.dumps(role)}
    assert naming == {"HttpFunctionRole"}


def test_the_blob_bucket_name_is_an_output(sam: dict[str, Any]) -> None:
    assert sam["Outputs"]["BlobBucket"]["Value"] == {"Ref": "BlobBucket"}


@pytest.mark.parametrize(
    ("parameter", "condition", "function"),
    [
        ("WebSocketReservedConcurrency", "WithWebSocketReservation", "WebSocketFunction"),
        ("HttpMaxConcurrency", "WithHttpCap", "HttpFunction"),
    ],
)
def test_reserved_concurrency_is_optional_and_off_by_default(
    sam: dict[str, Any], translated: dict[str, Any], parameter: str, condition: str, function: str
) -> None:
    declared = sam["Parameters"][parameter]
    assert declared["Type"] == "Number"
    assert declared["Default"] == 0 and declared["MinValue"] == 0
    assert sam["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, "0"]}]}
    expected = {"Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}
    assert sam["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == expected
    deployed = translated["Resources"][function]["Properties"]
    assert deployed["ReservedConcurrentExecutions"] == expected
    # The quota rule, in the words an operator will meet it.
    description = " ".join(declared["Description"].split())
    for phrase in ("one pool per account", "minimum unreserved", "10 or 50", "Service Quotas"):
        assert phrase in description, (parameter, phrase)


def test_no_other_function_reserves_concurrency(sam: dict[str, Any]) -> None:
    reserving = {
        name
        for name, function in resources(sam, "AWS::Serverless::Function").items()
        if "ReservedConcurrentExecutions" in function["Properties"]
    }
    assert reserving == {
        "WebSocketFunction",
        "HttpFunction",
        "DnsReconcileFunction",
        "CertificateRenewalFunction",
    }
    assert "ReservedConcurrentExecutions" not in sam["Globals"]["Function"]


@pytest.mark.parametrize("function", ["DnsReconcileFunction", "CertificateRenewalFunction"])
def test_domain_jobs_may_reserve_one_execution_each_off_by_default(
    sam: dict[str, Any], translated: dict[str, Any], function: str
) -> None:
    declared = sam["Parameters"]["DomainJobsReservedConcurrency"]
    assert declared["Type"] == "Number"
    assert (declared["Default"], declared["MinValue"], declared["MaxValue"]) == (0, 0, 1)
    assert sam["Conditions"]["WithJobReservation"] == {
        "Fn::And": [
            {"Condition": "WithDomain"},
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "DomainJobsReservedConcurrency"}, "0"]}]},
        ]
    }
    expected = {"Fn::If": ["WithJobReservation", 1, {"Ref": "AWS::NoValue"}]}
    assert sam["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == expected
    assert translated["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == (
        expected
    )
    description = " ".join(declared["Description"].split())
    for phrase in ("one pool per account", "minimum unreserved", "10 or 50", "Service Quotas"):
        assert phrase in description, phrase


@pytest.mark.parametrize(
    ("resource", "rate", "burst"),
    [
        ("HttpApi", "VisitorRequestsPerSecond", "VisitorBurst"),
        ("WebSocketStage", "AgentMessagesPerSecond", "AgentMessagesBurst"),
    ],
)
def test_both_apis_are_throttled_by_parameters(
    sam: dict[str, Any], resource: str, rate: str, burst: str
) -> None:
    settings = sam["Resources"][resource]["Properties"]["DefaultRouteSettings"]
    assert settings == {
        "ThrottlingRateLimit": {"Ref": rate},
        "ThrottlingBurstLimit": {"Ref": burst},
    }
    for name in (rate, burst):
        assert sam["Parameters"][name]["Type"] == "Number"
        assert sam["Parameters"][name]["MinValue"] >= 1
    assert sam["Parameters"][burst]["Default"] >= sam["Parameters"][rate]["Default"]


def test_the_http_apis_stage_carries_the_visitor_throttle(translated: dict[str, Any]) -> None:
    stages = [
        stage
        for stage in resources(translated, "AWS::ApiGatewayV2::Stage").values()
        if stage["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    ]
    (stage,) = stages
    assert stage["Properties"]["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "VisitorRequestsPerSecond"},
        "ThrottlingBurstLimit": {"Ref": "VisitorBurst"},
    }


def test_the_stage_throttle_is_sized_from_message_counts(sam: dict[str, Any]) -> None:
    # One response message per visitor request (large bodies go through S3), plus pings: the
    # messages agents send must not be throttled below the visitor rate.
    parameters = sam["Parameters"]
    visitors = parameters["VisitorRequestsPerSecond"]["Default"]
    messages = parameters["AgentMessagesPerSecond"]["Default"]
    assert messages >= visitors
    assert parameters["AgentMessagesBurst"]["Default"] >= 2 * messages
    described = " ".join(parameters["AgentMessagesPerSecond"]["Description"].split())
    assert "VisitorRequestsPerSecond" in described and "silently" in described
    assert "128 KB" in described


@pytest.mark.parametrize(
    ("invoker", "function", "log_group"),
    [
        ("DnsReconcileAtDeploy", "DnsReconcileFunction", "DnsReconcileLogs"),
        ("CertificateAtDeploy", "CertificateRenewalFunction", "CertificateRenewalLogs"),
    ],
)
def test_deploy_time_invocations_wait_for_their_log_groups(
    sam: dict[str, Any], invoker: str, function: str, log_group: str
) -> None:
    custom = sam["Resources"][invoker]
    assert custom["Properties"]["ServiceToken"] == {"Fn::GetAtt": [function, "Arn"]}
    depends = custom.get("DependsOn", [])
    assert log_group in ([depends] if isinstance(depends, str) else depends)
    group = sam["Resources"][log_group]
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}
    conditions = {custom["Condition"], group["Condition"], sam["Resources"][function]["Condition"]}
    assert len(conditions) == 1, conditions


def test_every_custom_resource_is_covered_above(sam: dict[str, Any]) -> None:
    custom = {name for name, r in sam["Resources"].items() if r["Type"].startswith("Custom::")}
    assert custom == {"DnsReconcileAtDeploy", "CertificateAtDeploy"}


def test_no_zero_threshold_alarm_counts_authorizer_errors(sam: dict[str, Any]) -> None:
    # Scanners reach the authorizer; a refused token is a Deny answer, and whatever errors
    # remain page only as a share of connection attempts.
    alarms = resources(sam, "AWS::CloudWatch::Alarm")
    for name, alarm in alarms.items():
        if alarm["Properties"]["Threshold"] == 0:
            assert ("AuthorizerFunction", "Errors") not in lambda_metrics(alarm), name
    rate = alarms["AuthorizerErrorsAlarm"]["Properties"]
    assert rate["Threshold"] == {"Ref": "ErrorRatePercent"}
    (expression,) = [m["Expression"] for m in rate["Metrics"] if "Expression" in m]
    assert expression == "IF(attempts >= 10, 100 * FILL(errors, 0) / attempts, 0)"
    assert lambda_metrics(alarms["AuthorizerErrorsAlarm"]) == {
        ("AuthorizerFunction", "Errors"),
        ("AuthorizerFunction", "Invocations"),
    }


@pytest.mark.parametrize("function", RELAY_FUNCTIONS)
def test_relay_functions_log_json_without_platform_lines(
    sam: dict[str, Any], translated: dict[str, Any], function: str
) -> None:
    expected = {
        "LogFormat": "JSON",
        # Embedded metrics lines carry no level and count as INFO: never filter above it.
        "ApplicationLogLevel": {"Fn::If": ["WithDebugLogs", "DEBUG", "INFO"]},
        # START/END/REPORT are INFO; WARN keeps failures and timeouts only.
        "SystemLogLevel": "WARN",
    }
    assert sam["Resources"][function]["Properties"]["LoggingConfig"] == expected
    assert translated["Resources"][function]["Properties"]["LoggingConfig"] == expected
    assert sam["Conditions"]["WithDebugLogs"] == {"Fn::Equals": [{"Ref": "LogLevel"}, "DEBUG"]}
    env = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_LOG_LEVEL"] == {"Ref": "LogLevel"}


def test_log_level_choices_map_onto_lambdas_levels(sam: dict[str, Any]) -> None:
    # Python's names; Lambda's application level is only ever DEBUG or INFO (see above).
    assert sam["Parameters"]["LogLevel"]["AllowedValues"] == ["DEBUG", "INFO", "WARNING", "ERROR"]
    assert sam["Parameters"]["LogLevel"]["Default"] == "INFO"


def table_grants(function: dict[str, Any]) -> dict[str, list[str] | None]:
    """DynamoDB actions a function's own statements grant, with the leading keys each is
    limited to (None: the whole table)."""
    grants: dict[str, list[str] | None] = {}
    for statement in sam_statements(function):
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        for action in actions:
            if action.startswith("dynamodb:"):
                condition = statement.get("Condition", {}).get("ForAllValues:StringLike", {})
                grants[action] = condition.get("dynamodb:LeadingKeys")
    return grants


def policy_templates(function: dict[str, Any]) -> set[str]:
    return {
        name
        for policy in function["Properties"].get("Policies", [])
        if isinstance(policy, dict)
        for name in policy
        if name != "Statement"
    }


def test_the_visitor_facing_function_reads_no_tokens_and_writes_almost_nothing(
    sam: dict[str, Any],
) -> None:
    http = sam["Resources"]["HttpFunction"]
    assert not policy_templates(http) & {"DynamoDBCrudPolicy", "DynamoDBReadPolicy"}
    grants = table_grants(http)
    assert grants == {
        "dynamodb:GetItem": ["name#*", "conn#*", "req#*", "share#*", "relay", "vsock#*"],
        # A connection found gone: its claims, and its visitors' sockets (listed on it).
        "dynamodb:UpdateItem": ["share#*", "name#*", "conn#*"],
        "dynamodb:PutItem": ["seen#*", "relay"],
        "dynamodb:DeleteItem": ["conn#*", "name#*", "vsock#*"],
    }
    assert not any(
        "token#" in pattern for patterns in grants.values() for pattern in patterns or []
    )


def test_the_authorizer_reads_token_hashes_and_notes_their_use_only(sam: dict[str, Any]) -> None:
    authorizer = sam["Resources"]["AuthorizerFunction"]
    assert not policy_templates(authorizer)
    assert table_grants(authorizer) == {
        "dynamodb:GetItem": ["token#*"],
        "dynamodb:UpdateItem": ["token#*"],
    }
    (update,) = [s for s in sam_statements(authorizer) if s["Action"] == "dynamodb:UpdateItem"]
    # The one attribute it may change (with the key every request names): not limits, not
    # reserved names, not the token's id.
    assert update["Condition"]["ForAllValues:StringEquals"] == {
        "dynamodb:Attributes": ["pk", "sk", "last_used"]
    }


@pytest.mark.parametrize(
    ("function", "kms"),
    [
        ("WebSocketFunction", "KMSEncryptPolicy"),  # seals a secret at hello
        ("HttpFunction", "KMSDecryptPolicy"),  # opens it to check a delivery
    ],
)
def test_webhook_secrets_are_sealed_with_the_stacks_key(
    sam: dict[str, Any], function: str, kms: str
) -> None:
    resource = sam["Resources"][function]
    assert kms in policy_templates(resource)
    assert not policy_templates(resource) & {"KMSEncryptPolicy", "KMSDecryptPolicy"} - {kms}
    env = resource["Properties"]["Environment"]["Variables"]
    assert env["SECRETS_KEY"] == {"Ref": "SecretsKey"}
    key = sam["Resources"]["SecretsKey"]["Properties"]
    assert key["EnableKeyRotation"] is True


TABLE_ARN = {"Fn::GetAtt": ["RelayTable", "Arn"]}
LISTINGS_ARN = {"Fn::Sub": "${RelayTable.Arn}/index/Listings"}


def keyed_grants(function: dict[str, Any]) -> dict[str, tuple[Any, list[str]]]:
    """DynamoDB action -> (the resource it is granted on, the leading keys it is limited to),
    one statement per action."""
    grants: dict[str, tuple[Any, list[str]]] = {}
    for statement in sam_statements(function):
        for action in as_list(statement["Action"]):
            if action.startswith("dynamodb:"):
                assert action not in grants, action
                keys = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
                grants[action] = (statement["Resource"], keys)
    return grants


def test_the_websocket_function_touches_only_connections_names_and_share_links(
    sam: dict[str, Any],
) -> None:
    # Every agent reaches it: no token items, no answers (API Gateway's integration stores
    # them), no relay key, no Scan; it lists one token's share links through the index. The
    # visitors' sockets its agents carry: read, moved, deleted, never made (the visitor-socket
    # function makes them).
    websocket = sam["Resources"]["WebSocketFunction"]
    assert not policy_templates(websocket) & {
        "DynamoDBCrudPolicy",
        "DynamoDBReadPolicy",
        "DynamoDBWritePolicy",
    }
    assert keyed_grants(websocket) == {
        "dynamodb:GetItem": (TABLE_ARN, ["conn#*", "name#*", "share#*", "vsock#*"]),
        "dynamodb:PutItem": (TABLE_ARN, ["conn#*", "name#*", "share#*"]),
        "dynamodb:UpdateItem": (TABLE_ARN, ["conn#*", "name#*", "share#*", "vsock#*"]),
        "dynamodb:DeleteItem": (TABLE_ARN, ["conn#*", "name#*", "vsock#*"]),
        "dynamodb:Query": (LISTINGS_ARN, ["shares#*"]),
    }


@pytest.mark.parametrize(
    ("function", "queries"),
    [
        ("WebSocketFunction", {"dynamodb:Query": (LISTINGS_ARN, ["shares#*"])}),  # share list
        ("HttpFunction", {}),  # visitors: reads by key only
        ("AuthorizerFunction", {}),
    ],
)
def test_no_relay_function_scans_and_only_share_lists_query(
    sam: dict[str, Any], function: str, queries: dict[str, Any]
) -> None:
    grants = keyed_grants(sam["Resources"][function])
    assert {a: g for a, g in grants.items() if a in ("dynamodb:Query", "dynamodb:Scan")} == queries
    assert "/index/" not in json.dumps({a: g for a, g in grants.items() if a not in queries})


def test_the_table_has_the_sparse_listings_index_the_store_queries(sam: dict[str, Any]) -> None:
    from hatchway_relay.adapters import dynamo_store

    table = sam["Resources"]["RelayTable"]["Properties"]
    assert {"AttributeName": dynamo_store.LISTING_KEY, "AttributeType": "S"} in table[
        "AttributeDefinitions"
    ]
    assert table["GlobalSecondaryIndexes"] == [
        {
            "IndexName": dynamo_store.LISTING_INDEX,
            "KeySchema": [
                {"AttributeName": dynamo_store.LISTING_KEY, "KeyType": "HASH"},
                {"AttributeName": "pk", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]
    assert LISTINGS_ARN["Fn::Sub"].endswith("/index/" + dynamo_store.LISTING_INDEX)
    assert dynamo_store.SHARES_LISTING_PREFIX + "*" == "shares#*"


def test_the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(sam: dict[str, Any]) -> None:
    # CloudWatch cannot publish to a topic encrypted with alias/aws/sns: every alarm action
    # would fail with KMS AccessDenied.
    assert sam["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"] == {
        "Ref": "AlarmTopicKey"
    }
    assert "alias/aws/sns" not in json.dumps(sam)
    key = sam["Resources"]["AlarmTopicKey"]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    by_principal = {
        json.dumps(s["Principal"], sort_keys=True): s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
    }
    administer = by_principal[
        json.dumps({"AWS": {"Fn::Sub": "arn:aws:iam::${AWS::AccountId}:root"}})
    ]
    assert (administer["Effect"], administer["Action"]) == ("Allow", "kms:*")
    cloudwatch = by_principal[json.dumps({"Service": "cloudwatch.amazonaws.com"})]
    assert cloudwatch["Effect"] == "Allow"
    assert sorted(as_list(cloudwatch["Action"])) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert cloudwatch["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
    assert len(by_principal) == 2


# --- Answers: stored by API Gateway, with no Lambda on the way ---------------------------------


def test_answers_and_marks_have_routes_of_their_own_and_the_rest_reaches_the_function(
    sam: dict[str, Any],
) -> None:
    api = sam["Resources"]["WebSocketApi"]["Properties"]
    assert api["RouteSelectionExpression"] == "$request.body.type"
    routes = {
        route["Properties"]["RouteKey"]: route["Properties"]["Target"]
        for route in resources(sam, "AWS::ApiGatewayV2::Route").values()
        if route["Properties"]["ApiId"] == {"Ref": "WebSocketApi"}
    }
    answer_target = {"Fn::Sub": "integrations/${AnswerIntegration}"}
    assert routes["response"] == routes["working"] == answer_target
    function_target = {"Fn::Sub": "integrations/${WebSocketIntegration}"}
    assert [key for key, target in routes.items() if target != function_target] == [
        "response",
        "working",
    ]


def test_the_answer_integration_is_one_dynamodb_update_with_its_own_role(
    sam: dict[str, Any],
) -> None:
    integration = sam["Resources"]["AnswerIntegration"]["Properties"]
    assert integration["IntegrationType"] == "AWS"  # a service call: no Lambda, no execution
    assert integration["IntegrationUri"] == {
        "Fn::Sub": "arn:aws:apigateway:${AWS::Region}:dynamodb:action/UpdateItem"
    }
    assert integration["CredentialsArn"] == {"Fn::GetAtt": ["AnswerIntegrationRole", "Arn"]}
    assert integration["PassthroughBehavior"] == "NEVER"
    template = integration["RequestTemplates"][
        integration["TemplateSelectionExpression"].replace("\\$", "$")
    ]["Fn::Sub"]
    assert "$context.connectionId" in template  # the key names the sender: no forged answers
    assert "${RelayTable}" in template


def test_the_answer_role_may_update_answer_items_and_nothing_else(sam: dict[str, Any]) -> None:
    role = sam["Resources"]["AnswerIntegrationRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    (policy,) = role["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "dynamodb:UpdateItem"
    assert statement["Resource"] == {"Fn::GetAtt": ["RelayTable", "Arn"]}
    assert statement["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["req#*"]},
        "ForAllValues:StringEquals": {"dynamodb:Attributes": ["pk", "sk", "a", "w", "ttl"]},
    }


def test_no_relay_function_writes_answers(sam: dict[str, Any]) -> None:
    for name in ("WebSocketFunction", "HttpFunction", "AuthorizerFunction"):
        for statement in sam_statements(sam["Resources"][name]):
            actions = as_list(statement["Action"])
            keys = (
                statement.get("Condition", {})
                .get("ForAllValues:StringLike", {})
                .get("dynamodb:LeadingKeys", [])
            )
            writes = {"dynamodb:PutItem", "dynamodb:UpdateItem"} & set(actions)
            assert not (writes and "req#*" in keys), (name, statement)


# ---------------------------------------------------------------------------------------------
# Domain jobs: runs Lambda gave up on are kept and alarmed


@pytest.mark.parametrize("function", ["DnsReconcileFunction", "CertificateRenewalFunction"])
def test_a_domain_job_run_lambda_gives_up_on_lands_in_the_failure_queue(
    sam: dict[str, Any], translated: dict[str, Any], function: str
) -> None:
    properties = sam["Resources"][function]["Properties"]
    assert properties["DeadLetterQueue"] == {
        "Type": "SQS",
        "TargetArn": {"Fn::GetAtt": ["DomainJobFailures", "Arn"]},
    }
    # What SAM grants for it: sending to that queue, nothing else on SQS.
    role = translated["Resources"][f"{function}Role"]["Properties"]
    sqs = [
        s
        for policy in role["Policies"]
        for s in policy["PolicyDocument"]["Statement"]
        if "sqs:" in json.dumps(s["Action"])
    ]
    assert sqs == [
        {
            "Action": "sqs:SendMessage",
            "Resource": {"Fn::GetAtt": ["DomainJobFailures", "Arn"]},
            "Effect": "Allow",
        }
    ]


def test_the_failure_queue_is_encrypted_and_alarmed(sam: dict[str, Any]) -> None:
    queue = sam["Resources"]["DomainJobFailures"]
    assert queue["Condition"] == "WithDomain"
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    alarm = sam["Resources"]["DomainJobFailuresAlarm"]
    assert alarm["Condition"] == "WithDomain"
    properties = alarm["Properties"]
    assert (properties["Namespace"], properties["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert properties["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["DomainJobFailures", "QueueName"]}}
    ]
    assert properties["Threshold"] == 0 and properties["ComparisonOperator"] == (
        "GreaterThanThreshold"
    )
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]


# ---------------------------------------------------------------------------------------------
# Access logs


ACCESS_LOGS = [
    ("HttpApi", "VisitorAccessLogs", "VisitorAccessLogGroup"),
    ("WebSocketStage", "AgentAccessLogs", "AgentAccessLogGroup"),
]


def access_log_settings(sam: dict[str, Any], resource: str) -> dict[str, Any]:
    setting = sam["Resources"][resource]["Properties"]["AccessLogSettings"]
    condition, settings, otherwise = setting["Fn::If"]
    assert (condition, otherwise) == ("WithAccessLogs", {"Ref": "AWS::NoValue"})
    return dict(settings)


def test_access_logs_are_a_parameter_on_by_default(sam: dict[str, Any]) -> None:
    parameter = sam["Parameters"]["AccessLogs"]
    assert parameter["Default"] == "true" and parameter["AllowedValues"] == ["true", "false"]
    assert sam["Conditions"]["WithAccessLogs"] == {"Fn::Equals": [{"Ref": "AccessLogs"}, "true"]}
    assert sam["Parameters"]["AccessLogRetentionDays"]["Default"] == 30


@pytest.mark.parametrize(("resource", "group", "output"), ACCESS_LOGS)
def test_each_api_writes_its_access_log_to_a_group_of_its_own_that_expires(
    sam: dict[str, Any], translated: dict[str, Any], resource: str, group: str, output: str
) -> None:
    settings = access_log_settings(sam, resource)
    assert settings["DestinationArn"] == {"Fn::GetAtt": [group, "Arn"]}
    log_group = sam["Resources"][group]
    assert log_group["Condition"] == "WithAccessLogs"
    assert log_group["Properties"]["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
    assert sam["Outputs"][output] == {
        "Condition": "WithAccessLogs",
        "Description": sam["Outputs"][output]["Description"],
        "Value": {"Ref": group},
    }
    # What CloudFormation deploys (SAM moves the HTTP API's onto its default stage).
    stages = resources(translated, "AWS::ApiGatewayV2::Stage")
    assert any(
        json.dumps(stage["Properties"].get("AccessLogSettings"))
        == json.dumps(sam["Resources"][resource]["Properties"]["AccessLogSettings"])
        for stage in stages.values()
    )


COMMON_FIELDS = {
    "requestId": "$context.requestId",
    "time": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "status": "$context.status",
    "integrationError": "$context.integration.error",
}


@pytest.mark.parametrize(
    ("resource", "own"),
    [
        (
            "HttpApi",
            {
                "host": "$context.domainName",
                "method": "$context.httpMethod",
                "path": "$context.path",
                "latencyMs": "$context.responseLatency",
                "responseBytes": "$context.responseLength",
            },
        ),
        (
            "WebSocketStage",
            {
                # No host (always the API's own) and no eventType (the route says it): every
                # agent message writes a line, and CloudWatch Logs bills its bytes.
                "route": "$context.routeKey",
                "connectionId": "$context.connectionId",
                "latencyMs": "$context.integrationLatency",
            },
        ),
    ],
)
def test_access_log_lines_are_one_json_object_of_quoted_context_variables(
    sam: dict[str, Any], resource: str, own: dict[str, str]
) -> None:
    text = access_log_settings(sam, resource)["Format"]
    assert "\n" not in text  # API Gateway wants the format on one line
    # Every value quoted: a variable API Gateway has no value for prints "-", still JSON.
    assert json.loads(text) == {**COMMON_FIELDS, **own}
    assert re.fullmatch(r'\{("\w+":"\$context\.[\w.]+",?)+\}', text)


def test_the_account_logs_role_may_write_logs_in_this_account_and_region_only(
    sam: dict[str, Any],
) -> None:
    assert sam["Parameters"]["ApiGatewayLogsRole"]["AllowedValues"] == ["create", "existing"]
    assert sam["Conditions"]["WithApiGatewayLogsRole"] == {
        "Fn::And": [
            {"Condition": "WithAccessLogs"},
            {"Fn::Equals": [{"Ref": "ApiGatewayLogsRole"}, "create"]},
        ]
    }
    role = sam["Resources"]["ApiGatewayCloudWatchRole"]
    assert role["Condition"] == "WithApiGatewayLogsRole"
    # Other APIs of the account may log through it once it is the account's setting.
    assert role["DeletionPolicy"] == "Retain"
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    (policy,) = role["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert set(statement["Action"]) == {
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:DescribeLogGroups",
        "logs:DescribeLogStreams",
        "logs:PutLogEvents",
        "logs:GetLogEvents",
        "logs:FilterLogEvents",
    }
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*"
    }
    assert "Condition" not in statement
    account = sam["Resources"]["ApiGatewayAccountSettings"]
    assert account["Condition"] == "WithApiGatewayLogsRole"
    assert account["Properties"] == {
        "CloudWatchRoleArn": {"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}
    }
    # The WebSocket stage is made once the setting is there (when the stack makes it).
    assert sam["Resources"]["WebSocketStage"]["DependsOn"] == "ApiGatewayLogsRoleReady"
    ready = sam["Resources"]["ApiGatewayLogsRoleReady"]
    assert "Condition" not in ready
    assert ready["Metadata"]["Waits"] == {
        "Fn::If": ["WithApiGatewayLogsRole", {"Ref": "ApiGatewayAccountSettings"}, "none"]
    }


def test_no_function_may_read_the_access_logs(translated: dict[str, Any]) -> None:
    for name, role in resources(translated, "AWS::IAM::Role").items():
        if name == "ApiGatewayCloudWatchRole":
            continue
        for policy in role["Properties"].get("Policies", []):
            assert "logs:" not in json.dumps(policy["PolicyDocument"]), name


# ---------------------------------------------------------------------------------------------
# Customer-managed keys (optional)


def test_customer_managed_keys_are_off_by_default_and_cover_the_table_and_every_log_group(
    sam: dict[str, Any],
) -> None:
    assert sam["Parameters"]["CustomerManagedKeys"]["Default"] == "false"
    key = sam["Resources"]["DataKey"]
    assert key["Condition"] == "WithCustomerManagedKeys"
    assert key["Properties"]["EnableKeyRotation"] is True
    (table,) = resources(sam, "AWS::DynamoDB::Table").values()
    assert table["Properties"]["SSESpecification"] == {
        "Fn::If": [
            "WithCustomerManagedKeys",
            {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "DataKey"}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    groups = resources(sam, "AWS::Logs::LogGroup")
    assert len(groups) == 9
    for name, group in groups.items():
        assert group["Properties"]["KmsKeyId"] == {
            "Fn::If": [
                "WithCustomerManagedKeys",
                {"Fn::GetAtt": ["DataKey", "Arn"]},
                {"Ref": "AWS::NoValue"},
            ]
        }, name


def test_cloudwatch_logs_may_use_the_key_for_this_accounts_log_groups_only(
    sam: dict[str, Any],
) -> None:
    statements = sam["Resources"]["DataKey"]["Properties"]["KeyPolicy"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    assert set(by_sid) == {"AccountAdministersTheKey", "LogsEncryptLogGroups"}
    logs = by_sid["LogsEncryptLogGroups"]
    assert logs["Principal"] == {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}}
    assert logs["Condition"] == {
        "ArnLike": {
            "kms:EncryptionContext:aws:logs:arn": {
                "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*"
            }
        }
    }


# ---------------------------------------------------------------------------------------------
# The scanner's findings that are argued rather than fixed (checkov runs in `make lint`)


ARGUED = {
    "RelayTable": {"CKV_AWS_28", "CKV_AWS_119"},
    "BlobBucket": {"CKV_AWS_18", "CKV_AWS_21"},
    "AuthorizerFunction": {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173"},
    "WebSocketFunction": {"CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173"},
    "HttpFunction": {"CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173"},
    "DnsReconcileFunction": {"CKV_AWS_117", "CKV_AWS_173"},
    "CertificateRenewalFunction": {"CKV_AWS_117", "CKV_AWS_173"},
    "HttpApi": {"CKV_AWS_95"},
    "WebSocketStage": {"CKV_AWS_95"},
    "VisitorSocketStage": {"CKV_AWS_95"},
    "VisitorSocketFunction": {"CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117", "CKV_AWS_173"},
    "WildcardCertificate": {"CKV2_AWS_71"},
    "CertificateStateBucket": {"CKV_AWS_18"},
    "DomainJobFailures": {"CKV_AWS_27"},
}
"""Every finding skipped, by resource: a new skip is a change a reviewer sees here too."""


def test_every_skipped_finding_is_argued_in_one_line(sam: dict[str, Any]) -> None:
    skipped: dict[str, set[str]] = {}
    for name, resource in sam["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (name, skip)
            comment = skip["comment"]
            assert "\n" not in comment and 40 <= len(comment) <= 160, (name, skip["id"])
            skipped.setdefault(name, set()).add(skip["id"])
    assert skipped == ARGUED
