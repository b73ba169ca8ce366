"""Counting every billed AWS call of the relay as it happens: boto3 calls in this process
(DynamoDB and ``@connections``), requests at moto's server (S3, the agent's presigned ones too,
and a check that no DynamoDB write bypassed the boto3 count), and the meter they all add to
(``cost_gateway`` counts what happens at the local gateway: invocations, messages, logs)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import botocore.client
import cost_pricing as pricing
from botocore.exceptions import ClientError

from hatchway_relay import prices

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
HEARTBEAT = "(heartbeat) "
CONNECTION = "(connection) "
OVERHEADS = (HEARTBEAT, CONNECTION)


@dataclass
class Tally:
    count: int = 0
    units: float = 0.0
    bytes: int = 0


@dataclass(frozen=True)
class Key:
    """An operation as the bill names it, with its unit and the price of one unit."""

    operation: str
    unit: str
    price: float


@dataclass
class Usage:
    """A function's invocations for visitor requests, with their wall and thread CPU time."""

    invocations: int = 0
    wall: float = 0.0
    cpu: float = 0.0


@dataclass
class Meter:
    """Thread-safe tallies per operation, reset before each case and read after it."""

    tallies: dict[Key, Tally] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """Operations the meter failed to count: a report with any of them would undercount."""
    usage: dict[str, Usage] = field(default_factory=dict)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_usage(self, function: str, wall: float, cpu: float) -> None:
        with self.lock:
            usage = self.usage.setdefault(function, Usage())
            usage.invocations += 1
            usage.wall += wall
            usage.cpu += cpu

    def profiles(self, requests: int) -> list[pricing.Profile]:
        """Per function: invocations per visitor request, wall and CPU seconds per invocation."""
        with self.lock:
            return [
                pricing.Profile(
                    name, u.invocations / requests, u.wall / u.invocations, u.cpu / u.invocations
                )
                for name, u in sorted(self.usage.items())
                if u.invocations
            ]

    def add(self, key: Key, units: float, nbytes: int = 0, count: int = 1) -> None:
        prefix = getattr(call_state, "overhead", "")
        if prefix and not key.operation.startswith(OVERHEADS):
            # Heartbeats, connects and disconnects: billed per connection, not per request.
            key = Key(prefix + key.operation, key.unit, key.price)
        with self.lock:
            tally = self.tallies.setdefault(key, Tally())
            tally.count += count
            tally.units += units
            tally.bytes += nbytes

    def reset(self) -> None:
        """Forget the per-request tallies; per-connection ones add up over the whole run."""
        with self.lock:
            self.usage = {}
            self.tallies = {
                k: v for k, v in self.tallies.items() if k.operation.startswith(OVERHEADS)
            }

    def snapshot(self) -> dict[Key, Tally]:
        with self.lock:
            return {k: Tally(v.count, v.units, v.bytes) for k, v in self.tallies.items()}

    def lines(self, requests: int, prefix: str = "") -> list[pricing.Line]:
        """Per visitor request, or with ``prefix`` (``HEARTBEAT``...) per such event."""
        chosen = [
            (k, t)
            for k, t in self.snapshot().items()
            if (k.operation.startswith(prefix) if prefix else not k.operation.startswith(OVERHEADS))
        ]
        return [
            pricing.Line(
                k.operation.removeprefix(prefix),
                t.count / requests,
                t.units / requests,
                k.unit,
                k.price,
                t.bytes / requests,
            )
            for k, t in sorted(chosen, key=lambda kv: kv[0].operation)
        ]

    @contextlib.contextmanager
    def invocation(self) -> Iterator[None]:
        with self.lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self.lock:
                self.in_flight -= 1

    def wait_idle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until no handler has run for ``quiet`` seconds: messages that arrive after the
        visitor's answer (acks, late frames) belong to the case too."""
        deadline = time.monotonic() + timeout
        last_busy = time.monotonic()
        before = self.snapshot()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.snapshot()
            if self.in_flight or now != before:
                last_busy = time.monotonic()
                before = now
            elif time.monotonic() - last_busy >= quiet:
                return


# --- Per-thread bookkeeping: the call in progress and time spent measuring ---------------------

call_state = threading.local()
"""The call in progress on this thread: what the meters attribute the work they see to."""


def measuring_seconds() -> float:
    """Seconds this thread spent on the meter's own work; subtracted from billed durations."""
    return float(getattr(call_state, "measuring", 0.0))


def measuring_cpu() -> float:
    """Thread CPU seconds this thread spent on the meter's own work (probes, sizing items):
    subtracted from an invocation's CPU, which sets its duration at smaller memory sizes."""
    return float(getattr(call_state, "measuring_cpu", 0.0))


@contextlib.contextmanager
def _measuring() -> Iterator[None]:
    depth = getattr(call_state, "depth", 0)
    if depth:  # nested: the outermost one counts the time
        yield
        return
    started, cpu = time.perf_counter(), time.thread_time()
    call_state.probing = True
    call_state.depth = 1
    try:
        yield
    finally:
        call_state.probing = False
        call_state.depth = 0
        call_state.measuring = measuring_seconds() + time.perf_counter() - started
        call_state.measuring_cpu = measuring_cpu() + time.thread_time() - cpu


# --- DynamoDB: capacity units from the items on the wire --------------------------------------

READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


class DynamoProbe:
    """Reads an item's current size with an unmetered client, so that a write can be billed
    on the larger of the item before and after it, as DynamoDB bills it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.schemas: dict[str, list[str]] = {}

    def key_names(self, table: str) -> list[str]:
        if table not in self.schemas:
            with _measuring():
                described = self.client.describe_table(TableName=table)
            self.schemas[table] = [k["AttributeName"] for k in described["Table"]["KeySchema"]]
        return self.schemas[table]

    def size(self, table: str, key: dict[str, Any]) -> int:
        with _measuring():
            found = self.client.get_item(TableName=table, Key=key, ConsistentRead=True)
        return pricing.item_size(found.get("Item"))

    def key_of(self, table: str, action: str, spec: dict[str, Any]) -> dict[str, Any]:
        if "Key" in spec:
            return dict(spec["Key"])
        item = spec.get("Item") or {}
        return {name: item[name] for name in self.key_names(table) if name in item}


@dataclass
class _Write:
    table: str
    key: dict[str, Any]
    transactional: bool
    label: str
    before: int = 0


def _dynamo_writes(probe: DynamoProbe, op: str, body: dict[str, Any]) -> list[_Write]:
    if op in ("PutItem", "UpdateItem", "DeleteItem"):
        table = body["TableName"]
        return [_Write(table, probe.key_of(table, op, body), False, op)]
    writes = []
    if op == "BatchWriteItem":
        for table, requests in body.get("RequestItems", {}).items():
            for request in requests:
                ((action, spec),) = request.items()
                writes.append(_Write(table, probe.key_of(table, action, spec), False, op))
    if op == "TransactWriteItems":
        for entry in body.get("TransactItems", []):
            ((action, spec),) = entry.items()
            table = spec["TableName"]
            label = f"TransactWriteItems {action}"
            writes.append(_Write(table, probe.key_of(table, action, spec), True, label))
    return writes


def _dynamo_reads(op: str, request: dict[str, Any], response: dict[str, Any]) -> float:
    consistent = bool(request.get("ConsistentRead"))
    if op == "GetItem":
        return pricing.read_units(pricing.item_size(response.get("Item")), consistent)
    if op in ("Query", "Scan"):
        total = sum(pricing.item_size(item) for item in response.get("Items", []))
        return pricing.read_units(total, consistent)
    if op == "BatchGetItem":
        units = 0.0
        for table, items in response.get("Responses", {}).items():
            strong = bool(request.get("RequestItems", {}).get(table, {}).get("ConsistentRead"))
            units += sum(pricing.read_units(pricing.item_size(i), strong) for i in items)
        return units
    if op == "TransactGetItems":
        sizes = [pricing.item_size(r.get("Item")) for r in response.get("Responses", [])]
        return sum(2 * pricing.read_units(size) for size in sizes)
    return 0.0


NO_LAMBDA = "no Lambda (API Gateway integration)"


def _function() -> str:
    """The function whose invocation made the call (set by ``LambdaMeter``). A call made with
    no invocation around it is API Gateway's own: a route whose AWS service integration writes
    to the table."""
    return str(getattr(call_state, "function", "") or NO_LAMBDA)


def _read_bytes(response: dict[str, Any]) -> int:
    items = [response.get("Item")] if "Item" in response else response.get("Items", [])
    return sum(pricing.item_size(item) for item in items)


def _json_body(raw: bytes | str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


METERED_HEADER = "X-Hatchway-Metered"
"""Set on every DynamoDB request the boto3 meter counted, so that moto's server can tell a write
that reached the table some other way (``ServerMeter`` refuses the report then)."""


class BotoMeter:
    """Patches ``BaseClient._make_api_call`` in this process so that every boto3 client, however
    it was built and whichever thread calls it (a Lambda's, or the gateway's own for an AWS
    service integration), reports its DynamoDB calls (with capacity units from the raw JSON
    items) and its ``@connections`` posts (with their bytes)."""

    def __init__(self, meter: Meter, probe: DynamoProbe) -> None:
        self.meter = meter
        self.probe = probe
        self.original: Any = None

    def install(self) -> None:
        self.original = botocore.client.BaseClient._make_api_call
        meter_self = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            return meter_self._call(client, operation, params)

        botocore.client.BaseClient._make_api_call = counted  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self.original is not None:
            botocore.client.BaseClient._make_api_call = self.original  # type: ignore[method-assign]

    def _hook(self, client: Any) -> None:
        # The raw request and response bodies: resource clients turn items into Python values
        # before ``_make_api_call`` returns, and sizes are defined on the wire format.
        if getattr(client, "_cost_hooked", False):
            return

        def before(params: dict[str, Any], **_: Any) -> None:
            call = getattr(call_state, "call", None)
            if call is not None:
                call["request"] = params.get("body")

        def after(http_response: Any, **_: Any) -> None:
            call = getattr(call_state, "call", None)
            if call is not None:
                call["response"] = http_response.content

        def mark(request: Any, **_: Any) -> None:
            request.headers[METERED_HEADER] = "1"

        client.meta.events.register("before-call.dynamodb", before)
        client.meta.events.register("after-call.dynamodb", after)
        client.meta.events.register("before-send.dynamodb", mark)
        client._cost_hooked = True

    def _call(self, client: Any, operation: str, params: dict[str, Any]) -> Any:
        service = client.meta.service_model.service_name
        if getattr(call_state, "probing", False):
            return self.original(client, operation, params)
        if service == "apigatewaymanagementapi":
            return self._post(client, operation, params)
        if service != "dynamodb":
            # S3 is counted at the server, where the agent's presigned requests arrive too.
            return self.original(client, operation, params)
        self._hook(client)
        call_state.call = {}
        writes: list[_Write] = []
        try:
            if operation in WRITES:
                # Serialising with the same converter boto3 uses gives the wire-format keys.
                with _measuring():
                    request = _wire_params(client, operation, params)
                    writes = _dynamo_writes(self.probe, operation, request)
                    for write in writes:
                        write.before = self.probe.size(write.table, write.key)
            return self.original(client, operation, params)
        finally:
            call = call_state.call
            call_state.call = None
            try:
                with _measuring():
                    self._account(operation, call, writes)
            except Exception as exc:  # never break the relay; fail the report instead
                self.meter.errors.append(f"DynamoDB {operation}: {exc!r}")

    def _account(self, operation: str, call: dict[str, Any], writes: list[_Write]) -> None:
        request = _json_body(call.get("request"))
        response = _json_body(call.get("response"))
        if operation in READS:
            units = _dynamo_reads(operation, request, response)
            label = f"DynamoDB {operation}, {_function()}"
            self.meter.add(Key(label, "RRU", prices.DYNAMODB_RRU), units, _read_bytes(response))
        elif writes:
            for write in writes:
                after = self.probe.size(write.table, write.key)
                units = pricing.write_units(write.before, after, write.transactional)
                refused = response.get("__type", "").endswith("ConditionalCheckFailedException")
                label = f"DynamoDB {write.label}, {_function()}" + (" (refused)" if refused else "")
                self.meter.add(
                    Key(label, "WRU", prices.DYNAMODB_WRU), units, max(write.before, after)
                )
        else:
            # Control-plane calls (DescribeTable...) are not billed per request.
            self.meter.add(Key(f"DynamoDB {operation}", "call", 0.0), 0)

    def _post(self, client: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation != "PostToConnection":
            # GetConnection and DeleteConnection are not metered as messages.
            self.meter.add(Key(f"@connections {operation}", "call", 0.0), 0)
            return self.original(client, operation, params)
        data = params.get("Data") or b""
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
        try:
            return self.original(client, operation, params)
        except ClientError:
            self.meter.add(Key("@connections post (failed)", "message", 0.0), 0, size)
            raise
        finally:
            # The message itself is billed where it leaves the gateway (``SocketMeter``); the
            # post's bytes are shown, unpriced: WebSocket APIs bill no data transfer.
            key = Key("@connections posts (no transfer charge)", "post", 0.0)
            self.meter.add(key, 1, size)


def _wire_params(client: Any, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """The request as DynamoDB JSON, whether ``params`` came from a resource (Python values)
    or a low-level client (typed values already)."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()

    def typed(value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (kind,) = value
            if kind in {"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"}:
                return _b64_binary(value)
        return _b64_binary(serializer.serialize(value))

    def item(attributes: dict[str, Any]) -> dict[str, Any]:
        return {name: typed(value) for name, value in attributes.items()}

    def spec(body: dict[str, Any]) -> dict[str, Any]:
        out = dict(body)
        for field_name in ("Key", "Item"):
            if field_name in out:
                out[field_name] = item(out[field_name])
        return out

    if operation == "BatchWriteItem":
        return {
            "RequestItems": {
                table: [{a: spec(s) for a, s in r.items()} for r in requests]
                for table, requests in params.get("RequestItems", {}).items()
            }
        }
    if operation == "TransactWriteItems":
        return {
            "TransactItems": [
                {a: spec(s) for a, s in entry.items()} for entry in params.get("TransactItems", [])
            ]
        }
    return spec(params)


def _b64_binary(value: dict[str, Any]) -> dict[str, Any]:
    """Binary values as the wire carries them (base64 text), so sizing sees one form."""
    ((kind, inner),) = value.items()
    if kind == "B" and not isinstance(inner, str):
        return {"B": base64.b64encode(bytes(inner)).decode()}
    if kind == "BS":
        return {
            "BS": [b if isinstance(b, str) else base64.b64encode(bytes(b)).decode() for b in inner]
        }
    if kind == "M":
        return {"M": {k: _b64_binary(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_b64_binary(v) for v in inner]}
    return value


# --- moto's server: S3 requests (the agent's presigned ones included), unmetered writes -------


class ServerMeter:
    """WSGI middleware around moto's server: counts S3 requests and the bytes the agent
    downloads, and refuses the report if a DynamoDB write arrives that the boto3 meter did not
    count (made by something other than boto3 in this process). It also serves one request at a
    time: moto's backends are not thread-safe, while DynamoDB and S3 apply each request
    atomically."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], meter: Meter, stored_days: float
    ) -> None:
        self.app = app
        self.meter = meter
        self.stored_days = stored_days
        self.lock = threading.Lock()
        self.stored: dict[str, tuple[int, float]] = {}
        """Objects put and not deleted yet: their size and when they were put."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            operation = target.rsplit(".", 1)[-1]
            metered = "HTTP_" + METERED_HEADER.upper().replace("-", "_")
            if operation in WRITES and not environ.get(metered):
                self.meter.errors.append(f"DynamoDB {operation} not counted by the boto3 meter")
            s3 = _is_s3(environ)
            if s3:
                self._count(environ)
            body = list(self.app(environ, start_response))
            if s3 and environ.get("REQUEST_METHOD") == "GET" and _presigned(environ):
                # Read from outside AWS: the agent's download is transfer out to the internet.
                size = sum(len(chunk) for chunk in body)
                key = Key(f"{pricing.TRANSFER}, S3 to the agent", "GB", prices.DATA_TRANSFER_OUT_GB)
                self.meter.add(key, pricing.transfer_gb(size), size)
            return body

    def _count(self, environ: dict[str, Any]) -> None:
        method = environ.get("REQUEST_METHOD", "GET")
        who = "agent, presigned" if _presigned(environ) else "relay"
        size = int(environ.get("CONTENT_LENGTH") or 0)
        path = environ.get("PATH_INFO", "")
        storage = Key(f"S3 storage, {self.stored_days:g} days", "GB-month", prices.S3_GB_MONTH)
        if method in ("PUT", "POST"):
            self.meter.add(Key(f"S3 PUT ({who})", "request", prices.S3_PUT), 1, size)
            # Counted as kept until the lifecycle rule; a DELETE later takes that back.
            self.meter.add(storage, pricing.s3_gb_months(size, self.stored_days), size)
            self.stored[path] = (size, time.monotonic())
        elif method == "DELETE":
            self.meter.add(Key(f"S3 DELETE ({who})", "request", 0.0), 1)
            if path in self.stored:
                kept, since = self.stored.pop(path)
                days = (time.monotonic() - since) / 86_400
                refund = pricing.s3_gb_months(kept, days) - pricing.s3_gb_months(
                    kept, self.stored_days
                )
                self.meter.add(storage, refund, 0, count=0)
        elif method in ("GET", "HEAD"):
            self.meter.add(Key(f"S3 {method} ({who})", "request", prices.S3_GET), 1)
        else:
            self.meter.add(Key(f"S3 {method} ({who})", "request", 0.0), 0)


def _presigned(environ: dict[str, Any]) -> bool:
    return "X-Amz-Signature=" in environ.get("QUERY_STRING", "")


def _is_s3(environ: dict[str, Any]) -> bool:
    if environ.get("HTTP_X_AMZ_TARGET"):
        return False  # DynamoDB's JSON protocol
    scope = environ.get("HTTP_AUTHORIZATION", "") + urllib.parse.unquote(
        environ.get("QUERY_STRING", "")
    )
    return "/s3/aws4_request" in scope


def install_server_meter(server: Any, meter: Meter, expiration_days: int) -> ServerMeter:
    """Wrap a started ``ThreadedMotoServer``'s WSGI app. An object lives until the lifecycle
    rule expires it: S3 rounds the expiry up to the next midnight UTC, half a day on average."""
    middleware = ServerMeter(server._server.app, meter, expiration_days + 0.5)
    server._server.app = middleware
    return middleware
