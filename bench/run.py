"""Tunnel vs direct, measured in one run on loopback against the same origin app with wrk.

Starts the origin (``origin.py``, one worker per CPU), ``hatchway-local`` (with its default
SQLite store, in a temporary directory, or ``--store memory``) and ``hatchway http`` as separate
processes, then drives wrk (installed from Debian if missing) at the origin directly and through
the tunnel, alternating within each round so that drift hits both alike. Four columns, each the
median of the rounds and a ratio to direct:

* p50 and p99 latency at c=1 on one keep-alive connection, 1 KB GETs;
* requests per second at c=32, 1 KB GETs;
* MiB/s of 1 MB GETs at c=4 (incompressible bodies);
* requests per second of 100 KB POST echoes at c=8;

and each also through the two peers the goals are set against, so that "ahead of" each is read
in the same run: ``ssh -R``, an OpenSSH server on loopback and a client holding a remote
forward to the origin (``openssh.py``; Debian's ``openssh-server`` is installed if missing),
and localtunnel, its server and its client from npm (``localtunnel.py``; pinned, installed if
missing);

plus the agent's and the gateway's peak RSS and CPU, and beside them those of a second agent
with its inspector on (its default ``--inspect-memory``), on a tunnel of its own that gets
the same load right after the first (its figures are not in the throughput table), and those
of each peer's client, the process that stands where the agent stands. Then,
apart (the agents' memory is read before it), the stretch: MiB/s of 10 MB GETs at c=4, which
the relay's functions refuse (their limit is 4.25 MiB) and a tunnel started with
``--large-responses redirect`` answers with a 302 to the blob store; ``hey`` follows it (wrk
cannot), so it measures direct as well. The table goes to stdout and, as Markdown for
docs/benchmarks.md, to ``--markdown`` (default /tmp/readme-bench.md).

    make bench                       # or: .venv/bin/python bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import localtunnel  # noqa: E402
import openssh  # noqa: E402
import wrk  # noqa: E402
from children import Child, free_port  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "hw_bench-token-0123456789"
TUNNEL = "bench"
INSPECTED_TUNNEL = "bench-inspect"
"""The second agent's tunnel: the same load with the inspector on, for its memory."""
ONE_MIB = 1024 * 1024
LARGE_BYTES = ONE_MIB
"""The "1 MB" GET's body."""
POST_BYTES = 100 * 1024
SECONDS = 10.0
"""Length of one wrk run."""
ROUNDS = 3
"""Runs per column and system; the median is reported."""
STRETCH_BYTES = 10 * ONE_MIB
"""The stretch GET's body: above what the functions carry, served through the blob store."""
STRETCH_CONNECTIONS = 4
WARMUP_SECONDS = 2.0
"""A short c=32 run through the tunnel before measuring: first connections, caches, imports."""


INSPECTED_AGENT = "agent, inspector on (hatchway http --inspect)"
"""The second agent's row in the usage table."""


@dataclass(frozen=True)
class Forward:
    """A peer (or, in ``floor.py``, any pair), started and ready: its processes, and where and
    how visitors reach the origin through it."""

    children: list[Child]
    """The server (a relay) first, the client (an agent) last."""
    base: str
    host: str | None = None
    """The Host header the peer routes by, where it routes by name."""

    @property
    def client(self) -> Child:
        """The process on the developer's side, where the agent stands for Hatchway."""
        return self.children[-1]


def start_ssh(origin_port: int, state: Path) -> Forward:
    """``ssh -R``: an OpenSSH server of its own and a client forwarding a port on it."""
    started, port = openssh.start_forward(origin_port, state)
    return Forward(started, f"http://127.0.0.1:{port}")


def start_localtunnel(origin_port: int, state: Path) -> Forward:
    """localtunnel's server and client (``state`` is not needed: it keeps nothing)."""
    started, port, host = localtunnel.start_tunnel(origin_port)
    return Forward(started, f"http://127.0.0.1:{port}", host)


def peer_client_row(name: str) -> str:
    """A peer's client's row in the usage table, beside the agents."""
    return f"{name} client"


PEERS: dict[str, Callable[[int, Path], Forward]] = {
    "ssh -R": start_ssh,
    "localtunnel": start_localtunnel,
}
"""The peers measured beside the tunnel, by the name their columns carry."""


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    unit: str
    path: str
    connections: int
    goal: float
    """The tunnel/direct ratio to reach: ahead of `ssh -R` (OpenSSH) on every column and of
    localtunnel on 1 MB GETs, as both measured side by side with direct on a quiet 2-core
    machine (p50 3.4x, c=32 0.110, 1 MB 0.114 for localtunnel and 0.158 for Hatchway then, POST
    0.107)."""
    post: bool = False
    higher_is_better: bool = True


COLUMNS = (
    Column("p50", "p50 latency c=1, 1 KB", "µs", "/bytes/1024", 1, 3.4, higher_is_better=False),
    Column("rps", "req/s c=32, 1 KB", "req/s", "/bytes/1024", 32, 0.11),
    Column("mib", "1 MB GET MiB/s c=4", "MiB/s", f"/bytes/{LARGE_BYTES}", 4, 0.16),
    Column("echo", "100 KB POST echo req/s c=8", "req/s", "/echo", 8, 0.11, post=True),
)


@dataclass
class Samples:
    """Every round's figures per column (plus p99 beside p50)."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.values.setdefault(key, []).append(value)

    def median(self, key: str) -> float:
        return statistics.median(self.values[key])


@dataclass
class Usage:
    """A process's CPU share over each tunnel run, and its peak RSS."""

    cpu_percent: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0


def measure(
    wrk_bin: str,
    column: Column,
    base: str,
    seconds: float,
    samples: Samples,
    host: str | None = None,
    script: Path | None = None,
) -> None:
    report = wrk.run(
        wrk_bin,
        base + column.path,
        column.connections,
        seconds,
        host,
        script if column.post else None,
    )
    samples.add(column.key, figure(column, report))
    if column.key == "p50":
        samples.add("p99", report.p99_us)


def figure(column: Column, report: wrk.Report) -> float:
    """What ``column`` reports of a wrk run: µs at p50, MiB/s for 1 MB GETs, else requests/s."""
    if column.key == "p50":
        return float(report.p50_us)
    if column.key == "mib":
        return float(report.requests_per_second * LARGE_BYTES / ONE_MIB)
    return float(report.requests_per_second)


def measured_tunnel(
    wrk_bin: str,
    column: Column,
    base: str,
    seconds: float,
    samples: Samples,
    host: str | None,
    script: Path,
    watched: dict[str, Child],
    usage: dict[str, Usage],
) -> None:
    """One tunnel run, with the CPU each watched process spent during it."""
    before = {name: child.cpu_seconds() for name, child in watched.items()}
    started = time.monotonic()
    measure(wrk_bin, column, base, seconds, samples, host, script)
    wall = time.monotonic() - started
    for name, child in watched.items():
        usage[name].cpu_percent.append(100 * (child.cpu_seconds() - before[name]) / wall)


def ratio(column: Column, value: float) -> str:
    """A ratio to direct as the table shows it: a multiple for latency, a fraction for rates."""
    return f"{value:.1f}x" if column.key == "p50" else f"{value:.3f}"


def verdict(column: Column, value: float) -> str:
    met = value <= column.goal if not column.higher_is_better else value >= column.goal
    return "yes" if met else "no"


def render(
    direct: Samples,
    tunnel: Samples,
    usage: dict[str, Usage],
    rounds: int,
    seconds: float,
    peers: Mapping[str, Samples] | None = None,
) -> list[str]:
    """The results as a Markdown table (with each peer beside the tunnel, when it was
    measured), then the processes' usage."""
    measured = {name: samples for name, samples in (peers or {}).items() if samples.values}
    head = ["direct", "hatchway-local + agent", "tunnel/direct", "goal", "met"]
    align = ["---:", "---:", "---:", "---:", ":-:"]
    for name in measured:
        head += [name, f"{name}/direct", f"ahead of {name}"]
        align += ["---:", "---:", ":-:"]
    lines = [
        f"| measure (median of {rounds} x {seconds:g} s) | {' | '.join(head)} |",
        f"|---|{'|'.join(align)}|",
    ]
    for column in COLUMNS:
        d, t = direct.median(column.key), tunnel.median(column.key)
        r = t / d if d else 0.0
        goal = f"≤ {column.goal:g}x" if column.key == "p50" else f"≥ {column.goal:g}"
        cells = [f"{d:,.0f}", f"{t:,.0f}", ratio(column, r), goal, verdict(column, r)]
        for peer in measured.values():
            p = peer.median(column.key)
            ahead = t > p if column.higher_is_better else t < p
            cells += [f"{p:,.0f}", ratio(column, p / d if d else 0.0), "yes" if ahead else "no"]
        lines.append(f"| {column.label} ({column.unit}) | {' | '.join(cells)} |")
        if column.key == "p50":
            d99, t99 = direct.median("p99"), tunnel.median("p99")
            cells = [f"{d99:,.0f}", f"{t99:,.0f}", f"{t99 / d99:.1f}x", "", ""]
            for peer in measured.values():
                p99 = peer.median("p99")
                cells += [f"{p99:,.0f}", f"{p99 / d99:.1f}x", ""]
            lines.append(f"| p99 latency c=1, 1 KB (µs) | {' | '.join(cells)} |")
    lines += [
        "",
        "| process | peak RSS | peak CPU (of one core) | mean CPU |",
        "|---|---:|---:|---:|",
    ]
    for name, used in usage.items():
        lines.append(
            f"| {name} | {used.peak_rss_mib:.1f} MiB | {max(used.cpu_percent):.0f} % "
            f"| {statistics.mean(used.cpu_percent):.0f} % |"
        )
    if "stretch" in direct.values:
        d, t = direct.median("stretch"), tunnel.median("stretch")
        lines += [
            "",
            "| stretch (hey, follows the 302) | direct | hatchway-local + agent | tunnel/direct |",
            "|---|---:|---:|---:|",
            f"| 10 MB GET MiB/s c={STRETCH_CONNECTIONS}, --large-responses redirect | {d:,.0f} "
            f"| {t:,.0f} | {t / d:.3f} |",
        ]
    return lines


def measure_stretch(
    hey_bin: str, direct_base: str, tunnel_base: str, host: str, seconds: float, rounds: int
) -> tuple[Samples, Samples]:
    """The 10 MB GET, direct and through the tunnel's redirect, alternating per round."""
    direct, tunnel = Samples(), Samples()
    path = f"/bytes/{STRETCH_BYTES}"
    for _ in range(rounds):
        for samples, base, name in ((direct, direct_base, None), (tunnel, tunnel_base, host)):
            rate = wrk.hey_rate(hey_bin, base + path, STRETCH_CONNECTIONS, seconds, name)
            samples.add("stretch", rate * STRETCH_BYTES / ONE_MIB)
    return direct, tunnel


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 3 s runs (smoke run)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument(
        "--no-inspected-agent",
        action="store_true",
        help="skip the second agent, the one with its inspector on",
    )
    parser.add_argument(
        "--peer",
        action="append",
        choices=tuple(PEERS),
        help="a peer to measure beside the tunnel (repeatable; default: all of them)",
    )
    parser.add_argument("--no-peer", action="store_true", help="measure no peer")
    parser.add_argument("--markdown", type=Path, default=Path("/tmp/readme-bench.md"))
    parser.add_argument(
        "--store",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="hatchway-local's store (default: sqlite, its own default)",
    )
    args = parser.parse_args()
    rounds, seconds = (1, 3.0) if args.quick else (args.rounds, args.seconds)
    wrk_bin = wrk.ensure_wrk()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        script = wrk.post_script(directory, random.Random(7).randbytes(POST_BYTES))
        origin_port, relay_port = free_port(), free_port()
        env = {"HATCHWAY_CONFIG": str(directory / "config.toml"), "XDG_STATE_HOME": tmp}
        origins = [
            Child([sys.executable, str(HERE / "origin.py"), str(origin_port)])
            for _ in range(os.cpu_count() or 1)
        ]
        children = list(origins)
        try:
            for origin in origins:
                origin.wait_for("origin ready")
            relay_argv = [str(BIN / "hatchway-local"), "--port", str(relay_port)]
            relay_argv += ["--token", TOKEN, "--store", args.store]
            relay = Child(relay_argv, env)
            children.append(relay)
            relay.wait_for("hatchway-local ready")

            def start_agent(tunnel: str, inspect: bool) -> Child:
                argv = [str(BIN / "hatchway"), "http", str(origin_port)]
                argv += ["--server", f"ws://127.0.0.1:{relay_port}/connect", "--token", TOKEN]
                argv += ["--subdomain", tunnel, "--log-format", "plain"]
                # Only bodies above what the functions carry change: the stretch GET's.
                argv += ["--large-responses", "redirect"]
                argv += ["--inspect", "127.0.0.1:0"] if inspect else ["--no-inspect"]
                child = Child(argv, env)
                children.append(child)
                child.wait_for(r"Forwarding\s+http://" + tunnel)
                child.quiet()
                return child

            agent = start_agent(TUNNEL, inspect=False)
            inspected = None if args.no_inspected_agent else start_agent(INSPECTED_TUNNEL, True)
            relay.quiet()
            forwards: dict[str, Forward] = {}
            for name in [] if args.no_peer else args.peer or list(PEERS):
                forwards[name] = PEERS[name](origin_port, directory)
                children += forwards[name].children
                for child in forwards[name].children:
                    child.quiet()

            direct_base = f"http://127.0.0.1:{origin_port}"
            tunnel_base = f"http://127.0.0.1:{relay_port}"
            host = f"{TUNNEL}.localhost:{relay_port}"
            watched = {"agent (hatchway http)": agent, "gateway (hatchway-local)": relay}
            usage = {name: Usage() for name in watched}
            direct, tunnel = Samples(), Samples()
            peers = {name: Samples() for name in forwards}
            wrk.run(wrk_bin, tunnel_base + COLUMNS[1].path, 32, WARMUP_SECONDS, host)
            inspected_host = f"{INSPECTED_TUNNEL}.localhost:{relay_port}"
            if inspected is not None:
                usage[INSPECTED_AGENT] = Usage()
                wrk.run(wrk_bin, tunnel_base + COLUMNS[1].path, 32, WARMUP_SECONDS, inspected_host)
            usage.update({peer_client_row(name): Usage() for name in forwards})
            for number in range(rounds):
                print(f"round {number + 1} of {rounds} ...", flush=True)
                for column in COLUMNS:
                    measure(wrk_bin, column, direct_base, seconds, direct, script=script)
                    for name, peer in forwards.items():
                        measured_tunnel(
                            wrk_bin,
                            column,
                            peer.base,
                            seconds,
                            peers[name],
                            peer.host,
                            script,
                            {peer_client_row(name): peer.client},
                            usage,
                        )
                    measured_tunnel(
                        wrk_bin, column, tunnel_base, seconds, tunnel, host, script, watched, usage
                    )
                    if inspected is not None:
                        measured_tunnel(
                            wrk_bin,
                            column,
                            tunnel_base,
                            seconds,
                            Samples(),  # its throughput is not reported, only its usage
                            inspected_host,
                            script,
                            {INSPECTED_AGENT: inspected},
                            usage,
                        )
            for name, child in watched.items():
                usage[name].peak_rss_mib = child.peak_rss_mib()
            if inspected is not None:
                usage[INSPECTED_AGENT].peak_rss_mib = inspected.peak_rss_mib()
            for name, peer in forwards.items():
                usage[peer_client_row(name)].peak_rss_mib = peer.client.peak_rss_mib()
            print("stretch: 10 MB GETs through the blob store ...", flush=True)
            stretch = measure_stretch(
                wrk.ensure_hey(), direct_base, tunnel_base, host, seconds, rounds
            )
            direct.values.update(stretch[0].values)
            tunnel.values.update(stretch[1].values)
        finally:
            for child in reversed(children):
                child.kill()

    lines = render(direct, tunnel, usage, rounds, seconds, peers)
    print()
    print("\n".join(lines))
    args.markdown.write_text("\n".join(lines) + "\n")
    print(f"\n(Markdown written to {args.markdown})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
