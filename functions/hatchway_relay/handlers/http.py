"""The HTTP API's Lambda handler (payload format 2.0): visitor event in, relay reply out.

Payload 2.0 lowercases header names, joins repeated headers with commas and moves cookies into
their own list; the reply goes back the same way, with every ``Set-Cookie`` in ``cookies``.

The HTTP API hands Lambda ``rawPath`` percent-decoded (and cut at a decoded ``?``). The path is
re-encoded here so the app sees what the visitor sent wherever that can be known: every
character that cannot stand raw in a path (space, ``%``, ``#``, ``?``, controls, non-ASCII as
UTF-8) is escaped; what a visitor may send raw stays raw. An encoded ``/`` (``%2F``) or ``?``
(``%3F``) cannot be told from the real thing once decoded: the README says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any
from urllib.parse import quote

from hatchway.protocol import b64
from hatchway_relay.core import Relay, Reply, Visit
from hatchway_relay.metrics import Metrics, NoMetrics, record_visit
from hatchway_relay.replies import StreamedReply
from hatchway_relay.sockets import FRONT_HEADERS
from hatchway_relay.visits import AwaitAnswer, run_blocking

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

HandlerSteps = Generator[AwaitAnswer, bytes | None, dict[str, Any]]
SteppingHandler = Callable[[dict[str, Any], Any], HandlerSteps]
"""The handler as steps (see ``visits.VisitSteps``): what the local gateway runs on its event
loop when the store is in memory."""


_RAW_IN_PATH = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '%#?"<>\\^`{|}')
"""Characters a path may carry unescaped (RFC 3986 pchar plus the brackets clients send raw)."""


def reencode_path(decoded: str) -> str:
    """The path as it was on the wire, from the HTTP API's decoded ``rawPath`` (see above)."""
    return quote(decoded, safe=_RAW_IN_PATH + "[]")


def visit_from_event(event: dict[str, Any], context: Any = None) -> Visit:
    ctx = event.get("requestContext") or {}
    http = ctx.get("http") or {}
    sent = event.get("headers") or {}
    # The front's headers (CloudFront's, on AWS) are never the app's.
    headers = [(k.lower(), v) for k, v in sent.items() if k.lower() not in FRONT_HEADERS]
    if event.get("cookies"):
        headers.append(("cookie", "; ".join(event["cookies"])))
    body = event.get("body") or ""
    if isinstance(body, bytes):  # from the local gateway's steps (see make_stepping_handler)
        raw = body
    else:
        raw = b64.decode_lenient(body) if event.get("isBase64Encoded") else body.encode("utf-8")
    # Behind the front (CloudFront) the API sees its own name as Host; the front passes the
    # visitor's on, as it does for sockets.
    host = sent.get("x-hatchway-host") or sent.get("host") or ctx.get("domainName", "")
    return Visit(
        method=http.get("method", "GET"),
        host=host,
        path=reencode_path(event.get("rawPath") or "/"),
        query=event.get("rawQueryString") or "",
        headers=tuple(headers),
        body=raw,
        source_ip=http.get("sourceIp", ""),
        received_at=ctx["timeEpoch"] / 1000 if isinstance(ctx.get("timeEpoch"), int) else None,
        time_left=_time_left(context),
    )


def _time_left(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else None


def result_from_reply(reply: Reply, body_as_bytes: bool = False) -> dict[str, Any]:
    """The Lambda result for ``reply``: its body base64-encoded, as the HTTP API needs it in
    JSON, or, with ``body_as_bytes``, the bytes themselves (see ``make_stepping_handler``)."""
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
        "body": reply.body if body_as_bytes else b64.encode(reply.body),
        "isBase64Encoded": True,
    }
    if cookies:
        result["cookies"] = cookies
    if isinstance(reply, StreamedReply):  # only where the front streams (RelayConfig.streams)
        result["bodySteps"] = reply.body_steps
    return result


def make_stepping_handler(
    relay: Relay, metrics: Metrics | None = None, body_as_bytes: bool = False
) -> SteppingHandler:
    """The handler as steps. ``body_as_bytes`` is for the local gateway, which runs the steps
    in its own process with no JSON in between: a reply's body goes out as bytes, not base64
    (an event's may come in as bytes either way; the gateway still sizes both as base64
    against Lambda's limits). Everything else is the Lambda handler's own path."""
    counted = metrics or NoMetrics()

    def handler(event: dict[str, Any], context: Any) -> HandlerSteps:
        visit = visit_from_event(event, context)
        started = time.monotonic()
        reply = yield from relay.visitors.visit_steps(visit)
        record_visit(
            counted,
            reply.status,
            next((v for k, v in reply.headers if k == "x-hatchway-error"), None),
            time.monotonic() - started,
        )
        return result_from_reply(reply, body_as_bytes)

    return handler


def make_handler(relay: Relay, metrics: Metrics | None = None) -> Handler:
    """The Lambda handler: the same steps, each wait blocking on the store."""
    steps = make_stepping_handler(relay, metrics)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return run_blocking(steps(event, context), relay.store)

    return handler
