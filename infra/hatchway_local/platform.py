"""The platform as the local gateway reproduces it: API Gateway's and Lambda's limits, each a
named constant saying where its number comes from, and the shapes of what they put in events
and on the wire (ids, times, a decoded path, header values, their own error bodies)."""

from __future__ import annotations

import base64
import os
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import web

from hatchway import protocol
from hatchway_local.concurrency import FUNCTIONS
from hatchway_local.lambda_context import InvocationContext

LAMBDA_MAX_EVENT_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit (6 MB), for the event and for the result."""

WEBSOCKET_MAX_MESSAGE_BYTES = protocol.MAX_MESSAGE_BYTES
"""WebSocket API message limit (128 KB): a client's larger message closes its socket with 1009,
and ``@connections`` POSTs above it are refused."""

WEBSOCKET_MAX_FRAME_BYTES = protocol.MAX_FRAME_BYTES
"""WebSocket API frame limit (32 KB): a client's larger frame closes its socket with 1009."""

MAX_REQUEST_BODY_BYTES = LAMBDA_MAX_EVENT_BYTES // 4 * 3
"""The largest visitor body whose base64 fits in a Lambda event: a larger one is refused with
413 from its ``Content-Length`` before a byte of it is read (a chunked one, once it passes
this). The rest of the event counts too; the whole event is checked again before invoking."""

HTTP_INTEGRATION_TIMEOUT_SECONDS = 30.0
"""HTTP API integration timeout (not raisable on AWS). Its 503 is the last resort: the relay
answers its own coded 504 before it, from the deadline the event and the context give it."""

HTTP_FUNCTION_TIMEOUT_SECONDS = 30.0
"""The HTTP function's ``Timeout`` in the template: what its context counts down from."""

WEBSOCKET_FUNCTION_TIMEOUT_SECONDS = 29.0
"""The WebSocket function's ``Timeout`` in the template."""

REQUEST_HEADERS_SECONDS = 10.0
"""A visitor's connection must deliver a request's headers this soon after it opens (or after
the previous response); otherwise it is closed, as API Gateway drops idle client connections.
Idle kept-alive connections close after as long."""

REQUEST_BODY_IDLE_SECONDS = 10.0
"""A body that sends nothing for this long is abandoned: 408, and the connection closes."""

REQUEST_BODY_SECONDS = 60.0
"""A whole body must arrive within this long (4.5 MB at ~75 KB/s), however steadily it trickles."""

LINGERING_CLOSE_SECONDS = 2.0
"""After refusing a request whose body was not read, the rest is read and discarded this long
before the connection closes, so that the client sees the answer rather than a reset."""

INTEGRATION_THREADS = 16
"""Threads making API Gateway's own service calls (the answer integration's DynamoDB writes)
when the store blocks: a connection's messages in flight are bounded anyway."""

MAX_PENDING_MESSAGES = 16
"""``$default`` invocations one WebSocket connection may have running or waiting at once.
Beyond it the gateway stops reading that socket: its TCP window fills and the client's sends
block, the way a per-connection rate limit holds one agent back on AWS, so one flooding
client can neither grow this process nor take the account's executions from others."""

WEBSOCKET_IDLE_SECONDS = 600.0
"""WebSocket API idle connection timeout."""

CLOSE_HANDSHAKE_SECONDS = 1.0
"""How long a server-side close waits for the client's close frame before dropping the socket."""

CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED_DATA = 1003  # API Gateway refuses binary frames from clients
CLOSE_MESSAGE_TOO_BIG = 1009

HTTP_INTEGRATION_ERROR = "Internal Server Error"
"""HTTP API's body for a failed or throttled Lambda integration (status 500)."""

WEBSOCKET_INTEGRATION_ERROR = "Internal server error"
"""What WebSocket API sends the client when a message's Lambda invocation fails or is
throttled, with the connection and request ids."""

BODY_FIELD_BYTES = len(', "body": ""')
"""What a body adds to an event's JSON besides its base64 text (which JSON never escapes)."""


_ids = random.Random(os.urandom(32))
"""Request ids need to be unique, not secret: a seeded generator saves a system call per id
(``uuid4`` reads the kernel's randomness each time, a tenth of the gateway's time per request)."""


def request_id() -> str:
    """16 hex digits, like the ids this gateway put in events before."""
    return format(_ids.getrandbits(64), "016x")


_clf_cache: tuple[int, str] = (0, "")


def request_time(now: float) -> str:
    """``requestTime`` in API Gateway's CLF format, formatted once per second."""
    global _clf_cache
    second = int(now)
    if _clf_cache[0] != second:
        _clf_cache = (second, time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second)))
    return _clf_cache[1]


@dataclass
class GatewayLimits:
    integration_timeout: float = HTTP_INTEGRATION_TIMEOUT_SECONDS
    idle_timeout: float = WEBSOCKET_IDLE_SECONDS
    max_connection_seconds: float = float(protocol.MAX_CONNECTION_SECONDS)
    frame_bytes: int = WEBSOCKET_MAX_FRAME_BYTES
    message_bytes: int = WEBSOCKET_MAX_MESSAGE_BYTES
    http_function_timeout: float = HTTP_FUNCTION_TIMEOUT_SECONDS
    websocket_function_timeout: float = WEBSOCKET_FUNCTION_TIMEOUT_SECONDS
    headers_timeout: float = REQUEST_HEADERS_SECONDS
    body_idle_timeout: float = REQUEST_BODY_IDLE_SECONDS
    body_timeout: float = REQUEST_BODY_SECONDS
    pending_messages: int = MAX_PENDING_MESSAGES


EVENT_FIXED_BYTES = 2048
"""More than an HTTP event's JSON takes besides what the request brings (keys, ids, times)."""


def base64_size(size: int) -> int:
    """Length of the base64 text of ``size`` bytes (padded)."""
    return 4 * ((size + 2) // 3)


def event_bound(request: web.BaseRequest) -> int:
    """At least the length of ``request``'s event as JSON, body aside: each character can take
    12 (a surrogate pair escaped); the path and query, the host, the user agent and the source
    address appear more than once; each header or query field adds its punctuation."""
    headers = request.headers
    repeated = request.raw_path + headers.get("Host", "") + (request.remote or "")
    characters = 2 * len(repeated) + len(headers.get("User-Agent", ""))
    characters += sum(len(name) + len(value) for name, value in headers.items())
    fields = len(request.headers) + len(request.query)
    return 12 * characters + 16 * fields + EVENT_FIXED_BYTES


def json_error(status: int, message: str, close: bool = False) -> web.Response:
    response = web.json_response({"message": message}, status=status)
    if close:
        response.force_close()  # the request's body was not read: its bytes cannot be trusted
    return response


def wire_header(value: str) -> str:
    """A response header value as aiohttp can write it. aiohttp writes header text as UTF-8
    and cannot write bytes that are not UTF-8 (its C writer drops lone surrogates, its Python
    writer raises), so a value carrying such bytes (``surrogateescape``) gets U+FFFD for each
    instead; a Lambda result, being JSON text, cannot carry them to API Gateway either."""
    if value.isascii():  # the usual value, which holds no such bytes
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


ResponseKind = TypeVar("ResponseKind", bound=web.StreamResponse)


def with_lambda_head(
    response: ResponseKind, request: web.BaseRequest, result: dict[str, Any]
) -> ResponseKind:
    """``response`` with the status, headers and cookies of an HTTP API Lambda result."""
    response.set_status(int(result["statusCode"]))
    for name, value in (result.get("headers") or {}).items():
        key = name.lower()
        if key == "content-length" and request.method == "HEAD" and str(value).isdigit():
            # The length a GET would have: aiohttp sends no body for HEAD and keeps it.
            response.headers[name] = str(value)
        elif key not in ("content-length", "transfer-encoding", "connection"):
            response.headers.add(name, wire_header(str(value)))
    for cookie in result.get("cookies") or []:
        response.headers.add("Set-Cookie", wire_header(cookie))
    response.headers.setdefault("Server", "hatchway-local")
    return response


def lambda_path(raw_path: str) -> str:
    """The path as HTTP API hands it to Lambda: percent-decoded (UTF-8), and cut at a ``?``
    that decoding produced. Byte-exact paths cannot always be recovered from it; the relay
    re-encodes what it can."""
    return unquote(raw_path).partition("?")[0]


def new_connection_id() -> str:
    """Shaped like API Gateway's: 12 random bytes in base64 (``L0SM9cOFvHcCIhw=``-like)."""
    return base64.b64encode(secrets.token_bytes(10)).decode()


def lambda_context(function: str, timeout: float) -> InvocationContext:
    return InvocationContext(_FUNCTION_NAMES[function], timeout)


_FUNCTION_NAMES = {function: f"hatchway-{function}" for function in FUNCTIONS}


INTEGRATION_FAILED = "The Lambda function failed"
INTEGRATION_THROTTLED = "The Lambda function was throttled"
INTEGRATION_TIMED_OUT = "The integration timed out"
"""The integration errors the gateway's access logs give (``$context.integration.error``);
API Gateway words its own differently, and writes ``-`` when the integration did not fail."""
