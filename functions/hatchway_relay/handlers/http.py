"""The HTTP API's Lambda handler (payload format 2.0): visitor event in, relay reply out.

Payload 2.0 lowercases header names, joins repeated headers with commas and moves cookies into
their own list; the reply goes back the same way, with every ``Set-Cookie`` in ``cookies``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

from hatchway_relay.core import Relay, Reply, Visit
from hatchway_relay.metrics import Metrics, NoMetrics, record_visit

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def visit_from_event(event: dict[str, Any]) -> Visit:
    ctx = event.get("requestContext") or {}
    http = ctx.get("http") or {}
    headers = [(k.lower(), v) for k, v in (event.get("headers") or {}).items()]
    if event.get("cookies"):
        headers.append(("cookie", "; ".join(event["cookies"])))
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    host = (event.get("headers") or {}).get("host") or ctx.get("domainName", "")
    return Visit(
        method=http.get("method", "GET"),
        host=host,
        path=event.get("rawPath") or "/",
        query=event.get("rawQueryString") or "",
        headers=tuple(headers),
        body=raw,
        source_ip=http.get("sourceIp", ""),
    )


def result_from_reply(reply: Reply) -> dict[str, Any]:
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in reply.headers:
        key = name.lower()
        if key == "set-cookie":
            cookies.append(value)
        elif key in headers:
            headers[key] = f"{headers[key]},{value}"
        else:
            headers[key] = value
    result: dict[str, Any] = {
        "statusCode": reply.status,
        "headers": headers,
        "body": base64.b64encode(reply.body).decode("ascii"),
        "isBase64Encoded": True,
    }
    if cookies:
        result["cookies"] = cookies
    return result


def make_handler(relay: Relay, metrics: Metrics | None = None) -> Handler:
    counted = metrics or NoMetrics()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        visit = visit_from_event(event)
        started = time.monotonic()
        reply = relay.visit(visit)
        record_visit(
            counted,
            reply.status,
            next((v for k, v in reply.headers if k == "x-hatchway-error"), None),
            len(visit.body),
            len(reply.body),
            time.monotonic() - started,
        )
        return result_from_reply(reply)

    return handler
