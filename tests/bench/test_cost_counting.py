"""The arithmetic and the meters behind ``make cost``: DynamoDB item sizes, billing-unit rounding,
API Gateway metering, data transfer, Lambda duration at a memory size's CPU share, cold starts, the
memory table and the summary line. No relay runs; one test waits a real second."""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import cost_gateway
import cost_meter
import cost_pricing as pricing
from cost_app import json_text

from hatchway_relay import prices


@pytest.mark.parametrize(
    ("number", "size"),
    [
        ("0", 1),
        ("7", 2),
        ("12", 2),
        ("123", 3),
        ("1000000", 2),  # trailing zeros are trimmed
        ("0.0012", 2),  # and leading ones
        ("-12", 3),
        ("1790000000", 3),
        ("1.5e3", 2),
        ("1790001234", 6),
        ("12345678901234567890123456789012345678", 20),
    ],
)
def test_number_sizes(number: str, size: int) -> None:
    assert pricing.number_size(number) == size


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("item", "size"),
    [
        (None, 0),
        ({}, 0),
        ({"pk": {"S": "abc"}}, 2 + 3),
        ({"pk": {"S": "é"}}, 2 + 2),  # UTF-8 bytes, not characters
        ({"n": {"N": "1234"}}, 1 + 3),
        ({"b": {"B": _b64(b"\x00" * 100)}}, 1 + 100),  # raw bytes, not base64 text
        ({"ok": {"BOOL": True}, "z": {"NULL": True}}, 2 + 1 + 1 + 1),
        ({"l": {"L": []}}, 1 + 3),
        ({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}, 1 + 3 + (2 + 1) + (2 + 1)),
        ({"m": {"M": {"k": {"S": "v"}}}}, 1 + 3 + (1 + 1 + 1)),
        ({"ss": {"SS": ["a", "bc"]}}, 2 + 3),
        ({"ns": {"NS": ["1", "22"]}}, 2 + 2 + 2),
        ({"bs": {"BS": [_b64(b"xy"), _b64(b"z")]}}, 2 + 3),
        ({"pk": {"S": "r#" + "a" * 30}, "sk": {"S": "-"}, "ttl": {"N": "1790000000"}}, 43),
    ],
)
def test_item_sizes(item: dict | None, size: int) -> None:
    assert pricing.item_size(item) == size


@pytest.mark.parametrize(
    ("before", "after", "transactional", "units"),
    [
        (0, 0, False, 1),  # a refused write on no item still takes one
        (0, 1024, False, 1),
        (0, 1025, False, 2),
        (5000, 100, False, 5),  # the larger of before and after
        (0, 9 * 1024, False, 9),
        (0, 1024, True, 2),  # transactions bill double
        (0, 3000, True, 6),
    ],
)
def test_write_units(before: int, after: int, transactional: bool, units: int) -> None:
    assert pricing.write_units(before, after, transactional) == units


@pytest.mark.parametrize(
    ("size", "consistent", "units"),
    [
        (0, True, 1.0),  # a miss still bills one strong read
        (0, False, 0.5),
        (4096, True, 1.0),
        (4097, True, 2.0),
        (10 * 1024, False, 1.5),
    ],
)
def test_read_units(size: int, consistent: bool, units: float) -> None:
    assert pricing.read_units(size, consistent) == units


@pytest.mark.parametrize(
    ("nbytes", "websocket", "http_api"),
    [
        (0, 1, 1),
        (1, 1, 1),
        (32 * 1024, 1, 1),
        (32 * 1024 + 1, 2, 1),
        (128 * 1024, 4, 1),
        (512 * 1024, 16, 1),
        (512 * 1024 + 1, 17, 2),
        (4 * 1024 * 1024 + 600, 129, 9),
    ],
)
def test_metering_units(nbytes: int, websocket: int, http_api: int) -> None:
    assert pricing.websocket_units(nbytes) == websocket
    assert pricing.http_api_units(nbytes) == http_api


@pytest.mark.parametrize(
    ("seconds", "billed_ms"),
    [(0.0, 1), (0.0001, 1), (0.001, 1), (0.0010001, 2), (0.0504, 51), (1.0, 1000)],
)
def test_lambda_billing_rounds_up_to_the_millisecond(seconds: float, billed_ms: int) -> None:
    assert pricing.lambda_billed_ms(seconds) == billed_ms


def test_lambda_gb_seconds_at_the_template_memory() -> None:
    assert pricing.lambda_gb_seconds(1000, 512) == 0.5
    assert pricing.lambda_gb_seconds(50, 1024) == 0.05


def test_lines_price_units_per_million() -> None:
    line = pricing.Line("DynamoDB PutItem", 1, 4, "WRU", prices.DYNAMODB_WRU)
    assert line.per_million == pytest.approx(2.5)
    lines = [line, pricing.Line("HTTP API", 1, 1, "request", prices.HTTP_API_REQUEST)]
    assert pricing.total_per_million(lines) == pytest.approx(3.5)


def test_floor_is_the_platform_minimum() -> None:
    # 1 HTTP API request + 2 messages + 1 invocation (API Gateway stores the answer) + 50 ms
    # at 512 MB.
    floor = pricing.total_per_million(pricing.floor_lines(0.05, 512))
    expected = 1.0 + 2.0 + 0.2 + 0.025 * prices.LAMBDA_ARM_GB_SECOND * 1e6
    assert floor == pytest.approx(expected)


def test_summary_line_format() -> None:
    figures = {"1kb": 4.2, "10kb": 6.789, "100kb": 10.0, "1mb": 101.255, "4mb-request": 19.1}
    assert pricing.summary_line(figures, 3.7349, 87.891, 2.301) == (
        "cost-per-million 1kb=4.20 10kb=6.79 100kb=10.00 1mb=101.25 4mb-request=19.10 "
        "floor=3.73 transfer-1mb=87.89 wait-1s=2.30"
    )


def test_summary_line_needs_every_case() -> None:
    with pytest.raises(KeyError):
        pricing.summary_line({"1kb": 1.0}, 1.0, 0.0, 0.0)


@pytest.mark.parametrize("size", [64, 1024, 10 * 1024, 100 * 1024])
def test_json_bodies_are_valid_json_of_the_exact_size(size: int) -> None:
    body = json_text(size)
    assert len(body) == size
    records = json.loads(body)
    assert isinstance(records, list) and records


def test_template_settings_read_memory_level_and_platform_lines(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    base = (
        "Parameters:\n  LogLevel:\n    Type: String\n    Default: INFO\n"
        "Globals:\n  Function:\n    MemorySize: 512\n{extra}Resources:\n  X:\n"
        "    Properties:\n      MemorySize: 1024\n"
    )
    template.write_text(base.format(extra=""))
    loud = cost_gateway.template_settings(template)
    assert (loud.memory_mb, loud.log_level) == (512, "INFO")
    assert loud.platform_log_bytes == cost_gateway.PLATFORM_LOG_BYTES
    quiet = "    LoggingConfig:\n      LogFormat: JSON\n      SystemLogLevel: WARN\n"
    template.write_text(base.format(extra=quiet))
    assert cost_gateway.template_settings(template).platform_log_bytes == 0


def test_meter_keeps_per_connection_tallies_across_cases() -> None:
    meter = cost_meter.Meter()
    per_request = cost_meter.Key("DynamoDB GetItem", "RRU", prices.DYNAMODB_RRU)
    heartbeat = cost_meter.Key(cost_meter.HEARTBEAT + "DynamoDB UpdateItem", "WRU", 0.0)
    meter.add(per_request, 2)
    meter.add(heartbeat, 1)
    meter.reset()
    meter.add(per_request, 1)
    (line,) = meter.lines(2)
    assert (line.operation, line.count, line.units) == ("DynamoDB GetItem", 0.5, 0.5)
    (beat,) = meter.lines(1, cost_meter.HEARTBEAT)
    assert beat.operation == "DynamoDB UpdateItem"


def test_binary_sizes_whether_base64_text_or_parsed_bytes() -> None:
    assert pricing.item_size({"b": {"B": b"\x01" * 10}}) == 11
    assert pricing.item_size({"b": {"B": _b64(b"\x01" * 10)}}) == 11
    assert pricing.item_size({"bs": {"BS": [b"ab", _b64(b"c")]}}) == 2 + 3


def test_s3_storage_in_gb_months() -> None:
    assert pricing.s3_gb_months(pricing.GB, 30) == 1.0
    assert pricing.s3_gb_months(1024 * 1024, 1.5) == pytest.approx(1.5 / 30 / 1024)


# --- Data transfer out: priced from the bytes that leave AWS ---------------------------------


def _http_event(body: str = "") -> dict[str, Any]:
    return {
        "rawPath": "/bytes",
        "rawQueryString": "",
        "headers": {"host": "cost.example.com"},
        "body": body,
        "isBase64Encoded": False,
        "requestContext": {"http": {"method": "GET"}},
    }


def _settings(memory_mb: int) -> cost_gateway.LambdaSettings:
    return cost_gateway.LambdaSettings(memory_mb, "INFO", 0, 1, 256)


def test_a_1_mb_response_sent_to_visitors_costs_88_dollars_per_million_in_transfer() -> None:
    meter = cost_meter.Meter()
    body = base64.b64encode(b"x" * (1024 * 1024)).decode()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": body, "isBase64Encoded": True, "headers": {}}

    cost_gateway.LambdaMeter(meter, _settings(128)).wrap(handler, "HTTP")(_http_event(), None)
    lines = meter.lines(1)
    # 1 MiB at $0.09 per GiB, a million times: the decoded body, not its base64 text.
    assert pricing.transfer_per_million(lines) == pytest.approx(87.89, abs=0.01)
    (http_api,) = [line for line in lines if line.operation == "HTTP API requests"]
    assert http_api.units == 3  # and the HTTP API meters it in 512 KB steps on top


def test_the_agents_download_of_a_4_mb_request_body_from_s3_is_transfer_out() -> None:
    meter = cost_meter.Meter()
    body = b"\0" * (4 * 1024 * 1024)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return [body[: len(body) // 2], body[len(body) // 2 :]]

    server = cost_meter.ServerMeter(app, meter, 1.5)
    presigned = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/blobs/req-1",
        "QUERY_STRING": "X-Amz-Credential=k%2F20261201%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Signature=abc",
    }
    server(presigned, lambda *a: None)
    # The relay's own read of the same object (a Lambda in the region) is no transfer out.
    relay_get = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/blobs/req-1",
        "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=k/20261201/us-east-1/s3/aws4_request",
    }
    server(relay_get, lambda *a: None)
    lines = meter.lines(1)
    assert pricing.transfer_per_million(lines) == pytest.approx(351.56, abs=0.01)
    gets = [line for line in lines if line.operation.startswith("S3 GET")]
    assert sorted(line.operation for line in gets) == [
        "S3 GET (agent, presigned)",
        "S3 GET (relay)",
    ]


def test_websocket_messages_are_billed_per_32_kb_and_never_as_transfer() -> None:
    meter = cost_meter.Meter()
    sockets = cost_gateway.SocketMeter(meter)
    sockets.count("relay to agent", json.dumps({"type": "request", "body": "x" * 40_000}))
    sockets.count("agent to relay", json.dumps({"type": "ping", "ts": 1}))
    (line,) = meter.lines(1)
    assert (line.operation, line.units) == ("WebSocket messages, relay to agent", 2)
    assert line.per_million == pytest.approx(2.0)
    assert pricing.transfer_per_million(meter.lines(1)) == 0
    (beat,) = meter.lines(1, cost_meter.HEARTBEAT)  # per connection, not per request
    assert beat.operation == "WebSocket messages, agent to relay"


def test_a_visitors_socket_messages_are_the_apps_own_never_per_connection_overhead() -> None:
    meter = cost_meter.Meter()
    sockets = cost_gateway.SocketMeter(meter)
    # An app's message may look like the protocol's heartbeat: it is still per message.
    sockets.count("visitor to relay", json.dumps({"type": "ping", "ts": 1}), visitor=True)
    (line,) = meter.lines(1)
    assert (line.operation, line.units) == ("WebSocket messages, visitor to relay", 1)
    assert meter.lines(1, cost_meter.HEARTBEAT) == []


def test_the_summary_ends_with_a_socket_messages_price_when_measured() -> None:
    figures = {key: 1.0 for key in pricing.SUMMARY_KEYS}
    line = pricing.summary_line(figures, 3.0, 87.9, 2.3, 0.19, 6.084)
    assert line.endswith(" access-logs=0.19 socket-message=6.08")


def test_a_dynamodb_write_that_bypassed_the_boto3_meter_fails_the_report() -> None:
    meter = cost_meter.Meter()
    server = cost_meter.ServerMeter(lambda environ, start: [b"{}"], meter, 1.5)
    write = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.UpdateItem",
        "wsgi.input": io.BytesIO(b"{}"),
    }
    server({**write, "HTTP_X_HATCHWAY_METERED": "1"}, lambda *a: None)
    assert meter.errors == []
    server(write, lambda *a: None)
    assert meter.errors == ["DynamoDB UpdateItem not counted by the boto3 meter"]


def test_an_integrations_write_with_no_lambda_around_it_is_billed() -> None:
    """API Gateway's service integration writes the answer itself: a boto3 call from a thread
    that runs no function still bills its write units."""
    import boto3
    from moto import mock_aws

    from hatchway_relay.adapters.dynamo_table import create_table

    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, "relay")
        meter = cost_meter.Meter()
        boto = cost_meter.BotoMeter(
            meter, cost_meter.DynamoProbe(boto3.client("dynamodb", region_name="us-east-1"))
        )
        boto.install()
        try:

            def integration() -> None:
                client.update_item(
                    TableName="relay",
                    Key={"pk": {"S": "req#abc"}, "sk": {"S": "answer#conn1"}},
                    UpdateExpression="SET a = if_not_exists(a, :a)",
                    ExpressionAttributeValues={":a": {"B": b"\1" * 2500}},
                )

            thread = threading.Thread(target=integration)
            thread.start()
            thread.join()
        finally:
            boto.uninstall()
    (line,) = meter.lines(1)
    assert line.operation == f"DynamoDB UpdateItem, {cost_meter.NO_LAMBDA}"
    assert line.units == 3  # 2.5 KB of answer plus its key: three 1 KB write units
    assert meter.errors == []


# --- Lambda duration at a memory size's CPU share --------------------------------------------


def test_cpu_share_is_one_vcpu_at_1769_mb_and_proportional_below() -> None:
    assert pricing.cpu_share(1769) == 1.0
    assert pricing.cpu_share(3538) == 1.0  # more vCPUs, but one thread runs no faster
    assert pricing.cpu_share(128) == pytest.approx(0.0724, abs=1e-4)
    # 60 ms of which 5 ms CPU on a full core: the wait stays, the CPU takes 13.8 times longer.
    assert pricing.seconds_at(0.060, 0.005, 128) == pytest.approx(0.055 + 0.0691, abs=1e-4)
    assert pricing.seconds_at(0.060, 0.005, 1769) == pytest.approx(0.060)


def test_one_more_waiting_second_from_two_metered_runs() -> None:
    """The difference of two metered bills, the app answering one second later in the second:
    at 512 MB a waiting second costs $6.67 per million in Lambda duration alone, at 128 MB a
    quarter of that."""

    def bill(delay: float, memory_mb: int) -> float:
        meter = cost_meter.Meter()

        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            time.sleep(delay)
            return {"statusCode": 200, "body": "{}", "headers": {}}

        cost_gateway.LambdaMeter(meter, _settings(memory_mb)).wrap(handler, "HTTP")(
            _http_event(), None
        )
        return pricing.total_per_million(meter.lines(1))

    assert bill(1.05, 512) - bill(0.05, 512) == pytest.approx(6.67, abs=0.1)
    options = {o.memory_mb: o for o in pricing.memory_options(pricing.Profile("HTTP", 1, 1, 0), 0)}
    assert options[128].wait_second == pytest.approx(1.67, abs=0.01)
    assert options[512].wait_second == pytest.approx(6.67, abs=0.01)


def test_invocations_record_wall_and_cpu_time_per_function() -> None:
    meter = cost_meter.Meter()

    def busy(event: dict[str, Any], context: Any) -> dict[str, Any]:
        until = time.thread_time() + 0.03
        while time.thread_time() < until:
            pass
        time.sleep(0.02)
        return {"statusCode": 200, "body": "{}", "headers": {}}

    wrapped = cost_gateway.LambdaMeter(meter, _settings(1769)).wrap(busy, "HTTP")
    wrapped(_http_event(), None)
    wrapped(_http_event(), None)
    (profile,) = meter.profiles(2)
    assert profile.function == "HTTP" and profile.invocations == 1.0
    assert 0.03 <= profile.cpu < 0.045
    assert profile.wall >= 0.05
    # Billed at 128 MB, the 30 ms of CPU take 415 ms: duration follows the CPU share.
    at_128 = cost_gateway.LambdaMeter(meter, _settings(128))
    meter.reset()
    at_128.wrap(busy, "HTTP")(_http_event(), None)
    (duration,) = [ln for ln in meter.lines(1) if ln.operation.startswith("Lambda duration")]
    assert 430 <= duration.nbytes <= 500  # billed milliseconds


# --- Cold starts -----------------------------------------------------------------------------


def test_cold_starts_at_one_per_hundred_invocations_stretched_by_the_cpu_share() -> None:
    profiles = [pricing.Profile("HTTP", 1.0, 0.06, 0.005), pricing.Profile("WebSocket", 0, 0, 0)]
    memory = {"HTTP": 128, "WebSocket": 256}
    (line,) = pricing.cold_start_lines(profiles, 0.5, memory.__getitem__)  # none for no calls
    # 500 ms of CPU on a full core take 6.91 s at 128 MB; one in a hundred requests pays it.
    assert line.operation == "Lambda INIT, HTTP (1/100 inv., 6911 ms)"  # 6,910.2 ms, rounded up
    assert line.count == pytest.approx(0.01)
    assert line.per_million == pytest.approx(0.01 * 6.910 * 0.125 * 13.3334, rel=1e-3)
    # Below 1,769 MB the CPU work costs the same at any size: only its latency changes.
    (full,) = pricing.cold_start_lines(profiles[:1], 0.5, lambda _: 1769)
    assert full.per_million == pytest.approx(line.per_million, rel=1e-3)
    (rare,) = pricing.cold_start_lines(profiles[:1], 0.5, memory.__getitem__, every=1000)
    assert rare.per_million == pytest.approx(line.per_million / 10)


# --- The memory table ------------------------------------------------------------------------


def test_memory_table_shows_the_latency_and_the_cost_of_each_size() -> None:
    profile = pricing.Profile("HTTP", 1.0, 0.060, 0.005)
    options = {o.memory_mb: o for o in pricing.memory_options(profile, 0.5)}
    assert list(options) == list(pricing.MEMORY_CANDIDATES)
    assert options[1769].added_ms == pytest.approx(0.0)
    assert options[128].cpu_ms == pytest.approx(69.1, abs=0.1)
    assert options[128].added_ms == pytest.approx(64.1, abs=0.1)
    # 55 ms of waiting plus 69 ms of CPU, at 128 MB: 21 cents per million requests.
    assert options[128].duration == pytest.approx(0.207, abs=0.001)
    assert options[512].duration == pytest.approx((0.055 + 0.01728) * 0.5 * 13.3334, abs=0.001)
    assert options[128].init_ms == pytest.approx(6910, abs=1)
    assert options[128].per_million == pytest.approx(
        options[128].duration + options[128].init, rel=1e-9
    )
    # Halving the memory halves what waiting costs; the CPU work costs the same.
    assert options[256].wait_second == pytest.approx(options[512].wait_second / 2)


def test_summary_line_ends_with_the_access_logs_part() -> None:
    figures = {"1kb": 4.2, "10kb": 6.789, "100kb": 10.0, "1mb": 101.255, "4mb-request": 19.1}
    line = pricing.summary_line(figures, 3.7349, 87.891, 2.301, 0.3049)
    assert line.endswith("wait-1s=2.30 access-logs=0.30")


def test_the_templates_access_log_retention_is_what_storage_is_priced_for() -> None:
    template = Path(__file__).resolve().parents[2] / "template.yaml"
    assert cost_gateway.template_settings(template).access_log_days == 30


def test_access_log_lines_are_priced_by_their_bytes_ingested_and_stored() -> None:
    from hatchway_local.access_log import AccessLog

    meter = cost_meter.Meter()
    log = AccessLog()
    cost_gateway.install_access_log_meter(log, meter, retention_days=30)
    visitor = log.visitor({"requestId": "r1", "status": 200, "domainName": "cost.localhost"})
    answer = log.agent({"requestId": "a1", "routeKey": "response", "eventType": "MESSAGE"})
    log.agent({"requestId": "p1", "routeKey": "$default", "eventType": "MESSAGE"})  # a ping
    log.agent({"requestId": "c1", "routeKey": "$connect", "eventType": "CONNECT"})
    per_request = {line.operation: line for line in meter.lines(requests=1)}
    size = len(visitor) + len(answer)
    ingested = per_request["CloudWatch Logs, access log lines"]
    assert (ingested.count, ingested.nbytes) == (2, size)
    assert ingested.per_million == pytest.approx(size / pricing.GB * prices.LOGS_INGESTED_GB * 1e6)
    stored = per_request["CloudWatch Logs, access log storage (30 days)"]
    assert stored.per_million == pytest.approx(
        size / pricing.GB * prices.LOGS_STORED_GB_MONTH * 1e6
    )
    assert pricing.access_logs_per_million(per_request.values()) == pytest.approx(
        ingested.per_million + stored.per_million
    )
    heartbeat = meter.lines(1, cost_meter.HEARTBEAT)
    connection = meter.lines(1, cost_meter.CONNECTION)
    assert [line.count for line in heartbeat] == [1, 1]
    assert [line.count for line in connection] == [1, 1]
