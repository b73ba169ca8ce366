"""Counting what the relay costs where the local gateway runs it: Lambda invocations with
their wall and CPU time (and the bytes each answer sends to the internet), WebSocket messages
where they cross the gateway's sockets, and the log bytes the relay's loggers write
(``cost_meter`` counts the AWS calls themselves)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cost_pricing as pricing
from cost_meter import (
    CONNECTION,
    HEARTBEAT,
    Handler,
    Key,
    Meter,
    call_state,
    measuring_cpu,
    measuring_seconds,
)

from hatchway_relay import prices

# --- Lambda: invocations and billed duration at the gateway ----------------------------------


@dataclass(frozen=True)
class LambdaSettings:
    """What the template says about the relay functions' billing and logging."""

    memory_mb: int
    """The HTTP (waiting) function's memory: the template's Globals unless it sets its own."""
    log_level: str
    platform_log_bytes: int
    """Bytes of START/END/REPORT lines per invocation (0 when SystemLogLevel is WARN)."""
    blob_expiry_days: int
    websocket_memory_mb: int = 0
    """The WebSocket function's memory (0: the same as ``memory_mb``)."""
    access_log_days: int = 0
    """``AccessLogRetentionDays``' default: how long an access-log line is stored."""
    visitor_socket_memory_mb: int = 0
    """The visitor-socket function's memory (0: the same as ``memory_mb``)."""

    def memory_of(self, function: str) -> int:
        if function == "WebSocket" and self.websocket_memory_mb:
            return self.websocket_memory_mb
        if function == "VisitorSocket" and self.visitor_socket_memory_mb:
            return self.visitor_socket_memory_mb
        return self.memory_mb


PLATFORM_LOG_BYTES = 300
"""Lambda's START, END and REPORT lines of one invocation, together, in text format."""


def template_settings(template: Path) -> LambdaSettings:
    """Read from ``template.yaml`` as text: its short-form tags (``!Ref``) need no YAML loader,
    and only a few scalars are wanted."""
    text = template.read_text()
    globals_block = text.split("\nGlobals:", 1)[-1].split("\nResources:", 1)[0]
    memory = re.search(r"^\s+MemorySize:\s*(\d+)", globals_block, re.M)
    level = re.search(r"^  LogLevel:\n(?:    .*\n)*?    Default:\s*(\w+)", text, re.M)
    quiet = re.search(r"SystemLogLevel:\s*WARN", text)
    expiry = re.search(r"ExpirationInDays:\s*(\d+)", text)
    retention = re.search(
        r"^  AccessLogRetentionDays:\n(?:    .*\n)*?    Default:\s*(\d+)", text, re.M
    )
    default = int(memory.group(1)) if memory else 128
    return LambdaSettings(
        _function_memory(text, "HttpFunction") or default,
        level.group(1) if level else "INFO",
        0 if quiet else PLATFORM_LOG_BYTES,
        int(expiry.group(1)) if expiry else 1,
        _function_memory(text, "WebSocketFunction") or default,
        int(retention.group(1)) if retention else 0,
        _function_memory(text, "VisitorSocketFunction") or default,
    )


def _function_memory(text: str, function: str) -> int | None:
    """A function's own ``MemorySize``, if its resource block sets one."""
    block = re.search(rf"^  {function}:\n((?:    .*\n|\s*\n)*)", text, re.M)
    memory = re.search(r"^      MemorySize:\s*(\d+)", block.group(1), re.M) if block else None
    return int(memory.group(1)) if memory else None


def _body_bytes(message: dict[str, Any]) -> int:
    body = message.get("body") or ""
    return len(base64.b64decode(body)) if message.get("isBase64Encoded") else len(body.encode())


def _http_bytes(event: dict[str, Any], result: dict[str, Any] | None) -> tuple[int, int]:
    """Request and response sizes as the HTTP API meters them: line, headers and body."""
    raw = _body_bytes(event)
    headers = sum(len(k) + len(v) + 4 for k, v in (event.get("headers") or {}).items())
    request = len(event.get("rawPath") or "") + len(event.get("rawQueryString") or "") + 16
    request += headers + raw
    if not result:
        return request, 0
    size = _body_bytes(result)
    size += sum(len(k) + len(str(v)) + 4 for k, v in (result.get("headers") or {}).items())
    size += sum(len(c) + 14 for c in result.get("cookies") or [])
    return request, size


def _overhead(event: dict[str, Any]) -> str:
    """Connects, disconnects and heartbeats happen per connection, whatever the traffic."""
    context = event.get("requestContext") or {}
    if context.get("eventType") in ("CONNECT", "DISCONNECT"):
        return CONNECTION
    if "routeKey" in context and _message_type(event.get("body") or "") in ("ping", "pong"):
        return HEARTBEAT
    return ""


def _message_type(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return "frame"
    return str(parsed.get("type", "frame")) if isinstance(parsed, dict) else "frame"


class LambdaMeter:
    """Wraps the gateway's two handlers: each call is one Lambda invocation billed per started
    millisecond at the template's memory size, its CPU work stretched by that size's CPU share
    (measured here on a full core), and its event says what the HTTP API metered and sent out."""

    def __init__(
        self,
        meter: Meter,
        settings: LambdaSettings,
        emf_bytes: Callable[[dict[str, Any], dict[str, Any] | None, float], int] | None = None,
    ) -> None:
        self.meter = meter
        self.settings = settings
        self.emf_bytes = emf_bytes

    def wrap(self, handler: Handler, function: str) -> Handler:
        def timed(event: dict[str, Any], context: Any) -> dict[str, Any]:
            call_state.overhead = _overhead(event)
            call_state.function = function
            with self.meter.invocation():
                started, measured = time.perf_counter(), measuring_seconds()
                cpu_started, cpu_measured = time.thread_time(), measuring_cpu()
                result: dict[str, Any] | None = None
                try:
                    result = handler(event, context)
                    return result
                finally:
                    wall = time.perf_counter() - started - (measuring_seconds() - measured)
                    cpu = time.thread_time() - cpu_started - (measuring_cpu() - cpu_measured)
                    if not call_state.overhead:
                        self.meter.add_usage(function, wall, cpu)
                    memory = self.settings.memory_of(function)
                    seconds = pricing.seconds_at(wall, cpu, memory)
                    self._account(function, event, result, seconds)
                    call_state.overhead = ""
                    call_state.function = ""

        return timed

    def _account(
        self, function: str, event: dict[str, Any], result: dict[str, Any] | None, seconds: float
    ) -> None:
        # WebSocket messages are counted at the gateway's sockets (``SocketMeter``): a message
        # handled by a route's service integration invokes no function but is billed the same.
        if function == "HTTP":
            request, response = _http_bytes(event, result)
            units = pricing.http_api_units(request + response)
            key = Key("HTTP API requests", "512 KB req", prices.HTTP_API_REQUEST)
            self.meter.add(key, units, request + response)
            out = Key(f"{pricing.TRANSFER}, HTTP API responses", "GB", prices.DATA_TRANSFER_OUT_GB)
            self.meter.add(out, pricing.transfer_gb(response), response)
            if self.emf_bytes is not None:
                emf = self.emf_bytes(event, result, seconds)
                logs = Key("CloudWatch Logs, EMF metric lines", "GB", prices.LOGS_INGESTED_GB)
                self.meter.add(logs, emf / pricing.GB, emf)
        billed = pricing.lambda_billed_ms(seconds)
        invocations = Key(f"Lambda invocations, {function}", "invocation", prices.LAMBDA_REQUEST)
        self.meter.add(invocations, 1)
        duration = Key(
            f"Lambda duration, {function} ({self.settings.memory_of(function)} MB)",
            "GB-s",
            prices.LAMBDA_ARM_GB_SECOND,
        )
        memory = self.settings.memory_of(function)
        self.meter.add(duration, pricing.lambda_gb_seconds(billed, memory), billed)
        if self.settings.platform_log_bytes:
            nbytes = self.settings.platform_log_bytes
            platform = Key("CloudWatch Logs, Lambda platform lines", "GB", prices.LOGS_INGESTED_GB)
            self.meter.add(platform, nbytes / pricing.GB, nbytes)


# --- WebSocket messages: where they cross the gateway's sockets -------------------------------

_CONNECTION_TYPES = {"hello", "welcome", "share", "shares"}
_HEARTBEAT_TYPES = {"ping", "pong"}


def _message_overhead(text: str) -> str:
    """Hellos, welcomes, share lists and heartbeats are per connection, not per request."""
    kind = _message_type(text)
    if kind in _HEARTBEAT_TYPES:
        return HEARTBEAT
    return CONNECTION if kind in _CONNECTION_TYPES else ""


class SocketMeter:
    """Patches aiohttp's ``WebSocketResponse.receive`` and ``send_str`` in this process: every
    message an agent sends and every message the gateway delivers (``@connections`` posts,
    API Gateway's own error frames) is one billed WebSocket message per started 32 KB, whichever
    route, Lambda or service integration handles it."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.originals: tuple[Any, Any] | None = None
        self.side: Callable[[Any], str | None] = lambda ws: "agent"
        """Whose socket it is: an agent's ("agent"), a visitor's on the visitor-socket API
        ("visitor"), or neither (None: a test app's own, not the gateway's, is not billed)."""

    def install(self) -> None:
        from aiohttp import WSMsgType, web

        receive, send_str = web.WebSocketResponse.receive, web.WebSocketResponse.send_str
        self.originals = (receive, send_str)
        count = self.count

        async def counted_receive(ws: web.WebSocketResponse, timeout: float | None = None) -> Any:
            message = await receive(ws, timeout)
            side = self.side(ws)
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY) and side is not None:
                count(f"{side} to relay", message.data, side == "visitor")
            return message

        async def counted_send(
            ws: web.WebSocketResponse, data: str, compress: int | None = None
        ) -> None:
            await send_str(ws, data, compress)
            # After it went: a failed send is not delivered.
            side = self.side(ws)
            if side is None:
                return
            count(f"relay to {side}", data, side == "visitor")
            if side == "visitor":  # what a visitor's socket is sent leaves AWS
                out = Key(
                    f"{pricing.TRANSFER}, WebSocket messages to visitors",
                    "GB",
                    prices.DATA_TRANSFER_OUT_GB,
                )
                size = len(data.encode("utf-8"))
                self.meter.add(out, pricing.transfer_gb(size), size)

        web.WebSocketResponse.receive = counted_receive  # type: ignore[method-assign,assignment]
        web.WebSocketResponse.send_str = counted_send  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        from aiohttp import web

        if self.originals is not None:
            receive, send_str = self.originals
            web.WebSocketResponse.receive = receive  # type: ignore[method-assign]
            web.WebSocketResponse.send_str = send_str  # type: ignore[method-assign]

    def count(self, direction: str, data: str | bytes, visitor: bool = False) -> None:
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
        # A visitor's messages are the app's own, never the protocol's per-connection ones.
        prefix = _message_overhead(data) if isinstance(data, str) and not visitor else ""
        key = Key(f"{prefix}WebSocket messages, {direction}", "32 KB msg", prices.WEBSOCKET_MESSAGE)
        self.meter.add(key, pricing.websocket_units(size), size)


# --- Logs: what the relay's loggers write at the template's level -----------------------------


class LogBytes(logging.Handler):
    """Formats each record as the functions' JSON logger would and counts its bytes."""

    def __init__(self, meter: Meter, formatter: logging.Formatter) -> None:
        super().__init__()
        self.meter = meter
        self.setFormatter(formatter)
        self.key = Key("CloudWatch Logs, relay log lines", "GB", prices.LOGS_INGESTED_GB)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("hatchway.local"):
            return  # the emulator's own lines; there is no such thing on AWS
        size = len(self.format(record).encode("utf-8")) + 1
        self.meter.add(self.key, size / pricing.GB, size)


def lambda_log_formatter() -> logging.Formatter:
    """Powertools' JSON formatter with the keys ``inject_lambda_context`` adds on AWS, filled
    with values of realistic length."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    formatter = LambdaPowertoolsFormatter(service="relay")
    formatter.append_keys(
        cold_start=False,
        function_name="hatchway-HttpFunction-A1b2C3d4E5f6",
        function_memory_size="512",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:hatchway-HttpFunction-A1b2C3d4E5f6",
        function_request_id="6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        correlation_id="a1b2c3d4e5f6a7b8",
        xray_trace_id="1-6734a1b2-0123456789abcdef01234567",
    )
    return formatter


def install_log_meter(meter: Meter, level: str) -> LogBytes:
    handler = LogBytes(meter, lambda_log_formatter())
    handler.setLevel(level)
    relay_logger = logging.getLogger("hatchway")
    relay_logger.setLevel(level)
    relay_logger.addHandler(handler)
    return handler


def emf_line_bytes(
    namespace: str = "Hatchway/hatchway", service: str = "relay"
) -> Callable[..., int]:
    """The EMF line the HTTP function flushes per invocation on AWS (``record_visit`` through
    ``EmfMetrics``), serialised the way Powertools prints it: none for an answer that was no
    error, as the HTTP API counts requests, statuses and latency itself."""
    from aws_lambda_powertools import Metrics

    from hatchway_relay.adapters.emf_metrics import EmfMetrics
    from hatchway_relay.metrics import record_visit

    metrics = Metrics(namespace=namespace, service=service)
    emf = EmfMetrics(metrics, service)
    lock = threading.Lock()

    def measure(event: dict[str, Any], result: dict[str, Any] | None, seconds: float) -> int:
        status = int((result or {}).get("statusCode", 502))
        error = ((result or {}).get("headers") or {}).get("x-hatchway-error")
        with lock, _quiet_stdout():
            record_visit(emf, status, error, seconds)
            if not metrics.metric_set:  # what API Gateway counts itself is not logged
                return 0
            line = json.dumps(metrics.serialize_metric_set(), separators=(",", ":"))
            metrics.clear_metrics()
        return len(line) + 1

    return measure


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """A point with its own dimensions is printed at once by Powertools; keep it off the
    report (error answers only; the cases here are all 200s)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# --- Access logs: the line API Gateway writes per visitor request and per agent message -------


def install_access_log_meter(access_log: Any, meter: Meter, retention_days: int) -> None:
    """Count every line the gateway's access log writes (the template's formats, filled in as
    API Gateway fills them): its bytes ingested, and stored for the retention. An agent's
    ``$default`` message during a case is a heartbeat; connects and disconnects are per
    connection; the rest (visitors, answers) are per request."""
    stored_months = retention_days / pricing.DAYS_PER_MONTH

    def count(line: str) -> None:
        size = len(line.encode("utf-8"))  # a log event is the line, without a newline
        route = json.loads(line).get("route")
        prefix = (
            CONNECTION
            if route in ("$connect", "$disconnect")
            else HEARTBEAT
            if route == "$default"
            else ""
        )
        ingested = Key(f"{prefix}CloudWatch Logs, access log lines", "GB", prices.LOGS_INGESTED_GB)
        meter.add(ingested, size / pricing.GB, size)
        stored = Key(
            f"{prefix}CloudWatch Logs, access log storage ({retention_days} days)",
            "GB-month",
            prices.LOGS_STORED_GB_MONTH,
        )
        meter.add(stored, size / pricing.GB * stored_months, size)

    access_log.listen(count)
