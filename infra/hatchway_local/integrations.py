"""The WebSocket API's routes as template.yaml declares them, for the local gateway: how a
message selects its route, and the routes whose integration is an AWS service (DynamoDB) with
a request mapping template. Such a message is rendered through that very template (``vtl``) and
the resulting DynamoDB request applied to the relay's store, as API Gateway applies it: no
Lambda invocation, so no execution of the account's pool. Every other message goes to the
WebSocket function (``$default``).

The template ships inside this package (``template.yaml``, a link to the repository's own that
packaging copies), so what the tests exercise is what ``sam deploy`` deploys.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, cast

import yaml

from hatchway.protocol import b64
from hatchway_local import vtl
from hatchway_local.dynamodb_update import ValidationError, apply_update
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.answer_items import parse_answer_key

DEFAULT_ROUTE = "$default"

_TEMPLATE_FILE = "template.yaml"
_API = "WebSocketApi"
_DYNAMODB_ACTION = re.compile(r"^arn:aws:apigateway:[^:]+:dynamodb:action/(\w+)$")
_STACK_VALUES = {"AWS::Region": "local", "AWS::AccountId": "000000000000"}


class IntegrationFailed(Exception):
    """The integration could not do its work (the service refused or failed): API Gateway
    then tells the client in an error frame, as for a failed Lambda."""


class CloudFormationLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML with CloudFormation's short tags (``!Sub x`` reads as ``{"Fn::Sub": x}``). On
    libyaml's parser where PyYAML was built with it: the pure-Python one took 0.3 s a read."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _tagged)


def _sub(value: Any, variables: Mapping[str, str]) -> str:
    """A ``!Sub`` string (or a plain one) with the stack's variables put in."""
    text = value.get("Fn::Sub") if isinstance(value, dict) else value
    if not isinstance(text, str):
        raise ValueError(f"expected a string or !Sub string, got {value!r}")

    def variable(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ValueError(f"template variable ${{{name}}} has no local value")
        return variables[name]

    return re.sub(r"\$\{([^}!]+)\}", variable, text)


class AnswerWrites(Protocol):
    """Where an integration's DynamoDB requests go: the relay's store."""

    def update_item(self, request: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class ServiceRoute:
    """A route whose integration makes one DynamoDB call from a request mapping template."""

    route_key: str
    action: str
    template: str

    def apply(self, body: str, context: Mapping[str, Any], writes: AnswerWrites) -> None:
        """Render the template for one message and make the call; ``IntegrationFailed`` if
        the call fails or the rendered request is not one DynamoDB could read."""
        try:
            request = json.loads(vtl.render(self.template, body, context))
        except ValueError as exc:
            raise IntegrationFailed(f"the mapping template made no JSON: {exc}") from None
        if self.action != "UpdateItem" or not isinstance(request, dict):
            raise IntegrationFailed(f"DynamoDB {self.action} is not supported here")
        writes.update_item(request)


@dataclass(frozen=True)
class WebSocketRoutes:
    """The route selection expression and the service routes of the WebSocket API."""

    selection: tuple[str, ...]
    """The JSON path into the message body the route key is read from (``$request.body.x``)."""
    services: Mapping[str, ServiceRoute]

    def select(self, body: str) -> ServiceRoute | None:
        """The service route a message takes, or None for the WebSocket function (a body that
        is not JSON, or whose key names no route, goes to ``$default``, as on API Gateway)."""
        if not self.services:
            return None
        try:
            value: Any = json.loads(body)
        except ValueError:
            return None
        for step in self.selection:
            value = value.get(step) if isinstance(value, dict) else None
        return self.services.get(value) if isinstance(value, str) else None


def template_text() -> str:
    """The stack's template, as this package carries it."""
    return resources.files("hatchway_local").joinpath(_TEMPLATE_FILE).read_text("utf-8")


@functools.lru_cache(maxsize=4)
def stack_resources(text: str | None = None) -> Mapping[str, Any]:
    """The ``Resources`` of the stack's template (``text``, else the one this package carries),
    read once per process: every gateway a process starts reads the same. Not to be changed."""
    template = yaml.load(text if text is not None else template_text(), CloudFormationLoader)
    return cast(Mapping[str, Any], template["Resources"])


def load_routes(table_name: str, text: str | None = None) -> WebSocketRoutes:
    """The WebSocket API's routes from the stack's template (``text``, else the one this
    package carries), with ``${RelayTable}`` standing for ``table_name``."""
    resources_ = stack_resources(text)
    expression = resources_[_API]["Properties"]["RouteSelectionExpression"]
    if not expression.startswith("$request.body."):
        raise ValueError(f"route selection {expression!r}: only $request.body.<field> is known")
    variables = {"RelayTable": table_name, **_STACK_VALUES}
    services: dict[str, ServiceRoute] = {}
    for resource in resources_.values():
        properties = resource.get("Properties", {})
        if resource.get("Type") != "AWS::ApiGatewayV2::Route":
            continue
        if properties.get("ApiId") != {"Ref": _API}:
            continue
        target = properties.get("Target", {})
        target = target.get("Fn::Sub", "") if isinstance(target, dict) else ""
        integration = resources_.get(target.removeprefix("integrations/${").rstrip("}"), {})
        settings = integration.get("Properties", {})
        if settings.get("IntegrationType") != "AWS":
            continue  # the WebSocket function's routes
        action = _DYNAMODB_ACTION.match(_sub(settings["IntegrationUri"], _STACK_VALUES))
        if action is None:
            raise ValueError(f"route {properties['RouteKey']!r}: only DynamoDB integrations")
        selected = settings.get("TemplateSelectionExpression", "\\$default").replace("\\$", "$")
        services[properties["RouteKey"]] = ServiceRoute(
            properties["RouteKey"],
            action.group(1),
            _sub(settings["RequestTemplates"][selected], variables),
        )
    return WebSocketRoutes(tuple(expression.split(".")[2:]), services)


class DynamoDBWrites:
    """Integration calls made against a DynamoDB table (moto, or AWS itself), as API Gateway
    makes them: the very request the template rendered."""

    def __init__(self, client: Any, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def update_item(self, request: dict[str, Any]) -> None:
        if request.get("TableName") != self.table_name:
            raise IntegrationFailed("the request names another table")
        try:
            self.client.update_item(**_binary_as_bytes(request))
        except Exception as exc:  # botocore's errors: throttled, refused, unreachable
            raise IntegrationFailed(f"DynamoDB refused the write: {exc}") from None


def _binary_as_bytes(value: Any) -> Any:
    """A request in DynamoDB's wire JSON, as boto3's low-level client takes it: binary values
    as bytes (botocore base64-encodes them again on the wire, where API Gateway sends the
    template's base64 text as it is). Text that is not base64 is refused, as DynamoDB refuses
    it."""
    if isinstance(value, list):
        return [_binary_as_bytes(v) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"B"} and isinstance(value["B"], str):
        try:
            return {"B": b64.decode(value["B"])}
        except ValueError:
            raise IntegrationFailed("DynamoDB refused the write: invalid binary value") from None
    return {k: _binary_as_bytes(v) for k, v in value.items()}


class MemoryWrites:
    """Integration calls applied to the in-memory store: the request is evaluated as DynamoDB
    would evaluate it (``dynamodb_update``), on the answer items the integration's role may
    write (template.yaml grants it ``req#`` items only)."""

    def __init__(self, store: MemoryStore, table_name: str) -> None:
        self.store = store
        self.table_name = table_name

    def update_item(self, request: dict[str, Any]) -> None:
        if request.get("TableName") != self.table_name:
            raise IntegrationFailed("the request names another table")
        key = request.get("Key")
        answer = parse_answer_key(key) if isinstance(key, dict) else None
        if answer is None:
            raise IntegrationFailed("the integration's role may write answer items only")
        try:
            self.store.update_answer(*answer, lambda item: apply_update(item, request))
        except ValidationError as exc:
            raise IntegrationFailed(f"DynamoDB would refuse the write: {exc}") from None
