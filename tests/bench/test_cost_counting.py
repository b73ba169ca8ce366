"""The arithmetic behind ``make cost``: DynamoDB item sizes, billing-unit rounding, API Gateway
metering, Lambda duration and the summary line. No live runs, nothing timed."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

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
    # 1 HTTP API request + 2 messages + 2 invocations + 50 ms at 512 MB.
    floor = pricing.total_per_million(pricing.floor_lines(0.05, 512))
    expected = 1.0 + 2.0 + 0.4 + 0.025 * prices.LAMBDA_ARM_GB_SECOND * 1e6
    assert floor == pytest.approx(expected)


def test_summary_line_format() -> None:
    figures = {"1kb": 4.2, "10kb": 6.789, "100kb": 10.0, "1mb": 13.255, "4mb-request": 19.1}
    assert pricing.summary_line(figures, 3.7349) == (
        "cost-per-million 1kb=4.20 10kb=6.79 100kb=10.00 1mb=13.26 4mb-request=19.10 floor=3.73"
    )


def test_summary_line_needs_every_case() -> None:
    with pytest.raises(KeyError):
        pricing.summary_line({"1kb": 1.0}, 1.0)


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
    loud = cost_meter.template_settings(template)
    assert (loud.memory_mb, loud.log_level) == (512, "INFO")
    assert loud.platform_log_bytes == cost_meter.PLATFORM_LOG_BYTES
    quiet = "    LoggingConfig:\n      LogFormat: JSON\n      SystemLogLevel: WARN\n"
    template.write_text(base.format(extra=quiet))
    assert cost_meter.template_settings(template).platform_log_bytes == 0


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
