"""How ``make bench`` reads its load generators' reports: a run with any failure stops the
bench rather than becoming a figure. The tools are stood in for by scripts printing their
reports (no load is generated here)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import wrk

HEY_REPORT = """
Summary:
  Total:\t10.0312 secs
  Requests/sec:\t{rate}
  Total data:\t2097152000 bytes

Status code distribution:
{statuses}
{errors}
"""


def fake_tool(tmp_path: Path, output: str) -> str:
    report = tmp_path / "report.txt"
    report.write_text(output)
    tool = tmp_path / "tool"
    tool.write_text(f"#!/bin/sh\ncat '{report}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return str(tool)


def test_hey_gives_the_rate_of_a_run_where_every_answer_was_200(tmp_path: Path) -> None:
    output = HEY_REPORT.format(rate="39.7138", statuses="  [200]\t200 responses", errors="")
    assert wrk.hey_rate(fake_tool(tmp_path, output), "http://127.0.0.1:1/", 4, 1.0) == 39.7138


@pytest.mark.parametrize(
    ("statuses", "errors"),
    [
        ("  [200]\t190 responses\n  [502]\t10 responses", ""),
        ("  [302]\t200 responses", ""),  # a redirect hey did not follow
        ("  [200]\t200 responses", "Error distribution:\n  [3]\tGet ...: connection refused"),
        ("", ""),
    ],
)
def test_a_hey_run_with_any_failure_stops_the_bench(
    tmp_path: Path, statuses: str, errors: str
) -> None:
    output = HEY_REPORT.format(rate="39.7", statuses=statuses, errors=errors)
    with pytest.raises(SystemExit):
        wrk.hey_rate(fake_tool(tmp_path, output), "http://127.0.0.1:1/", 4, 1.0)
