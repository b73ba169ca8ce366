"""Tunnel vs direct, measured in one run on loopback against the same backend.

Starts a backend app, ``hatchway-local`` (memory store) and ``hatchway http`` as separate
processes, then drives ``hey`` (installed from Debian if missing) at the backend directly and
through the tunnel. Prints a table with the tunnel/direct ratio and the agent's peak RSS.

    make bench                       # or: .venv/bin/python bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.processes import BIN, AgentProcess, Process  # noqa: E402

TOKEN = "hw_bench-token-0123456789"
ONE_MIB = 1024 * 1024


@dataclass
class Scenario:
    label: str
    unit: str
    path: str
    requests: int
    concurrency: int
    method: str = "GET"
    body_bytes: int = 0
    response_bytes: int = 0


SCENARIOS = [
    Scenario("latency p50, 1 KB GET, c=1", "ms", "/bytes/1024", 2000, 1),
    Scenario("latency p99, 1 KB GET, c=1", "ms", "/bytes/1024", 0, 1),  # same run as p50
    Scenario("throughput, 1 KB GET, c=32", "req/s", "/bytes/1024", 10000, 32),
    Scenario(
        "throughput, 1 MB GET, c=4", "MiB/s", f"/bytes/{ONE_MIB}", 300, 4, response_bytes=ONE_MIB
    ),
    Scenario("throughput, 100 KB POST, c=8", "req/s", "/sink", 2000, 8, "POST", 100 * 1024),
]


def ensure_hey() -> str:
    found = shutil.which("hey")
    if found:
        return found
    print("installing hey (Debian package) for load generation ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "hey"], check=True)
    return shutil.which("hey") or "hey"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def hey(
    binary: str, url: str, scenario: Scenario, host: str | None, body: Path
) -> dict[str, float]:
    argv = [
        binary,
        "-n",
        str(scenario.requests),
        "-c",
        str(scenario.concurrency),
        "-m",
        scenario.method,
    ]
    argv += ["-disable-compression", "-t", "30"]
    if host:
        argv += ["-host", host]
    if scenario.body_bytes:
        argv += ["-D", str(body), "-T", "application/octet-stream"]
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    percentiles = {int(p): float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    bad = {c: n for c, n in codes if c != "200"}
    if bad or "Error distribution" in out:
        raise SystemExit(f"non-200 answers during '{scenario.label}' at {url}: {bad}\n{out}")
    return {"rps": rps, "p50": percentiles.get(50, 0.0), "p99": percentiles.get(99, 0.0)}


def measure(hey_bin: str, base: str, host: str | None, body: Path) -> list[float]:
    figures = []
    for scenario in SCENARIOS:
        if scenario.requests == 0:
            continue
        result = hey(hey_bin, base + scenario.path, scenario, host, body)
        if scenario.label.startswith("latency"):
            figures += [result["p50"], result["p99"]]
        elif scenario.unit == "MiB/s":
            figures.append(result["rps"] * scenario.response_bytes / ONE_MIB)
        else:
            figures.append(result["rps"])
    return figures


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests (smoke run)")
    args = parser.parse_args()
    if args.quick:
        for scenario in SCENARIOS:
            scenario.requests = max(
                scenario.requests // 10, scenario.concurrency * 2 if scenario.requests else 0
            )
    hey_bin = ensure_hey()

    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.bin"
        body.write_bytes(b"\xa5" * (100 * 1024))
        backend_port, relay_port = free_port(), free_port()
        backend = Process([sys.executable, str(HERE / "backend.py"), str(backend_port)])
        relay = Process([str(BIN / "hatchway-local"), "--port", str(relay_port), "--token", TOKEN])
        agent = None
        try:
            backend.wait_for("backend ready")
            relay.wait_for("hatchway-local ready")
            agent = AgentProcess(
                str(backend_port),
                f"ws://127.0.0.1:{relay_port}/connect",
                TOKEN,
                "bench",
                env={"HATCHWAY_CONFIG": str(Path(tmp) / "config.toml")},
            ).start()
            direct = measure(hey_bin, f"http://127.0.0.1:{backend_port}", None, body)
            tunnel = measure(
                hey_bin, f"http://127.0.0.1:{relay_port}", f"bench.localhost:{relay_port}", body
            )
            rss = peak_rss_mib(agent.popen.pid)
        finally:
            for process in (agent, relay, backend):
                if process is not None:
                    process.kill()

    rows = [s for s in SCENARIOS]
    print()
    print(f"{'measure':34} {'unit':>6} {'direct':>10} {'tunnel':>10} {'tunnel/direct':>14}")
    for scenario, d, t in zip(rows, direct, tunnel, strict=True):
        print(f"{scenario.label:34} {scenario.unit:>6} {d:10.2f} {t:10.2f} {t / d:13.2f}x")
    print(f"{'agent peak RSS':34} {'MiB':>6} {'':>10} {rss:10.1f} {'':>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
