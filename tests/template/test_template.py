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


def test_manage_connections_is_scoped_to_posting_on_this_stage(translated: dict[str, Any]) -> None:
    scoped = [
        s for s in statements(translated) if "execute-api:ManageConnections" in str(s["Action"])
    ]
    assert scoped, "some function must be allowed to post to agents"
    for statement in scoped:
        resource = json.dumps(statement["Resource"])
        assert "${WebSocketApi}/${StageName}/POST/@connections/*" in resource
        assert '"*"' not in resource


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
    routes = resources(sam, "AWS::ApiGatewayV2::Route")
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
    (stage,) = resources(sam, "AWS::ApiGatewayV2::Stage").values()
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


def test_alarms_watch_5xx_rate_failures_and_throttles_and_notify_the_topic(
    sam: dict[str, Any],
) -> None:
    alarms = {
        name: alarm
        for name, alarm in resources(sam, "AWS::CloudWatch::Alarm").items()
        if "Metrics" in alarm["Properties"]
    }
    watched = {name: alarm_metrics(alarm) for name, alarm in alarms.items()}
    assert watched["HttpErrorRateAlarm"] == {
        ("Hatchway/<stack>", "Responses5xx"),
        ("Hatchway/<stack>", "Requests"),
    }
    assert watched["FunctionErrorsAlarm"] == {("AWS/Lambda", "Errors")}
    assert watched["ThrottlesAlarm"] == {("AWS/Lambda", "Throttles")}
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching"
        functions = json.dumps(alarm["Properties"]["Metrics"])
        if "AWS/Lambda" in functions:  # every relay function is watched
            for name, function in resources(sam, "AWS::Serverless::Function").items():
                if "Condition" not in function:
                    assert json.dumps({"Ref": name}) in functions
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
        assert secret_reads and all(
            "${CloudflareApiTokenSecret}" in json.dumps(s["Resource"]) for s in secret_reads
        )


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
    assert {a for s in unscoped for a in s["Action"]} == {
        "acm:ListCertificates",
        "acm:DescribeCertificate",
        "acm:RequestCertificate",
    }
