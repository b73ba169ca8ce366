"""Driving ``wrk`` (Debian's package, installed when missing) and reading its report: requests
per second and the latency percentiles, with any error or non-2xx answer failing the run. Where
a reply is a redirect to follow, which wrk cannot do, ``hey`` (also Debian's) is driven the
same way."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

WRK_TIMEOUT = "30s"
"""wrk's per-request timeout: a request slower than this counts as an error."""

MAX_WRK_THREADS = 2
"""wrk threads at most (one per connection below it): this machine class has two cores."""

_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}

POST_SCRIPT = """-- Sends the file's bytes as the body of every request.
local file = assert(io.open("{path}", "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/octet-stream"
"""


@dataclass(frozen=True)
class Report:
    requests_per_second: float
    p50_us: float
    p99_us: float


def ensure_wrk() -> str:
    return _ensure("wrk")


def ensure_hey() -> str:
    return _ensure("hey")


def _ensure(tool: str) -> str:
    found = shutil.which(tool)
    if found:
        return found
    print(f"installing {tool} (Debian package) for load generation ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", tool], check=True)
    return shutil.which(tool) or tool


def hey_rate(
    binary: str, url: str, connections: int, seconds: float, host: str | None = None
) -> float:
    """Requests per second from one ``hey`` run, which follows redirects (wrk does not); any
    answer but 200 after them, or any error, fails the run."""
    argv = [binary, "-z", f"{seconds:g}s", "-c", str(connections), "-t", "30"]
    if host:
        argv += ["-host", host]
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    statuses = re.findall(r"^\s+\[(\d{3})\]\s+\d+ responses", out, re.MULTILINE)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if statuses != ["200"] or "Error distribution" in out or not rate:
        raise SystemExit(f"hey saw failures at {url} (Host {host}):\n{out}")
    return float(rate.group(1))


def post_script(directory: Path, body: bytes) -> Path:
    """A wrk Lua script that POSTs ``body`` (kept in a file beside it)."""
    body_path = directory / "post-body.bin"
    body_path.write_bytes(body)
    script = directory / "post.lua"
    script.write_text(POST_SCRIPT.format(path=body_path))
    return script


def _microseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run(
    binary: str,
    url: str,
    connections: int,
    seconds: float,
    host: str | None = None,
    script: Path | None = None,
) -> Report:
    """One wrk run of ``seconds`` over ``connections`` keep-alive connections."""
    threads = min(connections, MAX_WRK_THREADS)
    argv = [binary, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s"]
    argv += ["--latency", "--timeout", WRK_TIMEOUT]
    if host:
        argv += ["-H", f"Host: {host}"]
    if script:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    problems = [
        line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line
    ]
    if problems:
        raise SystemExit(f"wrk saw failures at {url} (Host {host}): {problems}\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if not (rate and p50 and p99):
        raise SystemExit(f"could not read wrk's report:\n{out}")
    return Report(float(rate.group(1)), _microseconds(p50.group(1)), _microseconds(p99.group(1)))
