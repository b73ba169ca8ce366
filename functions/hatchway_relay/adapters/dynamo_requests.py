"""How ``DynamoStore`` builds its requests: condition objects turned into expression strings
with placeholders of each request's own, update expressions, and a failed condition told apart
from other errors."""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import ConditionBase, ConditionExpressionBuilder
from botocore.exceptions import ClientError


def update_expression(sets: list[str], removes: list[str]) -> str:
    return "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")


def expressions(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with its condition objects turned into expression strings and placeholders.

    boto3's resource layer would do this itself, with one expression builder per client whose
    placeholder counters every thread resets: requests built at the same moment in two threads
    (the local gateway's workers) can get each other's placeholders, and a condition then
    compares the wrong attributes. A builder per request shares nothing.
    """
    builder = ConditionExpressionBuilder()
    built = dict(request)
    for key in ("ConditionExpression", "FilterExpression", "KeyConditionExpression"):
        condition = built.get(key)
        if isinstance(condition, ConditionBase):
            expression = builder.build_expression(
                condition, is_key_condition=key == "KeyConditionExpression"
            )
            built[key] = expression.condition_expression
            built["ExpressionAttributeNames"] = {
                **built.get("ExpressionAttributeNames", {}),
                **expression.attribute_name_placeholders,
            }
            if expression.attribute_value_placeholders:
                built["ExpressionAttributeValues"] = {
                    **built.get("ExpressionAttributeValues", {}),
                    **expression.attribute_value_placeholders,
                }
    return built


def condition_failed(exc: ClientError) -> bool:
    return bool(exc.response["Error"]["Code"] == "ConditionalCheckFailedException")
