"""How fast any two CPython processes can relay requests on this machine: the floor under
``make bench``'s columns.

A bare relay and a bare agent, each one asyncio loop, stand where ``hatchway-local`` and
``hatchway http`` stand: visitors' HTTP/1.1 requests go to the relay, which passes each as a
JSON head and the body's raw bytes over one length-prefixed TCP stream to the agent, which asks
the origin on a kept connection and sends the answer back the same way. They split HTTP by hand
and check, store, limit and log nothing, and speak no WebSocket; like Hatchway, each holds a
whole body before passing it on. Whatever the real tunnel does on top of that, it cannot be
faster than this pair.

The same pair again, measured on ``make bench``'s two body columns only (1 MB GETs, 100 KB
POSTs echoed), passes each body larger than a message carries (Hatchway's
``MAX_INLINE_BODY_BYTES``) by way of a blob store on the relay, as API Gateway's message limit
makes Hatchway pass it: the relay keeps a request's body for the agent to GET, and the agent
PUTs an answer's there for the relay to take. No relay under that limit can pass those bodies
faster.

A third pair measures what the relay's real work adds: the same bare transports, but the
relay runs its real Lambda handlers for each request (the HTTP handler as the local gateway's
steps, the WebSocket handler for each answer, the in-memory store and blob store, as
``hatchway-local`` has them, its blob URLs answered as the gateway answers them), and the agent
decodes and encodes the real protocol messages (``hatchway.protocol.codec``), fetching and
uploading bodies through those URLs as the real agent does. No aiohttp, no WebSocket framing,
no threads, no display: what is left is what any gateway that runs the relay's handlers, and
any agent that speaks its protocol, must spend.

Two more pairs run the real ``hatchway-local``: one with the real agent (``hatchway http``), one
with an agent of one event loop that speaks the real protocol over a real WebSocket and does
nothing else (``agent_on_one_loop``), bodies through the blob store included. Between them is
the most that serving the agent from one loop could win. Every process here runs on uvloop
where it is installed, as ``hatchway-local`` does.

The last pairs are the peers the goals were set against, as ``make bench`` starts them
(``run.PEERS``): ``ssh -R``, an OpenSSH server and a client holding a remote forward to the
origin, and localtunnel's server and client; measured in the same run.

Every pair is measured on every column (the blob path's pair on the body columns only). Beside
them it prints each pair's CPU per request, relay and agent, read from ``/proc`` (for a peer,
its server with any process it forwards a connection in, and its client).

Last, the "with handlers" pair's own work is timed with every socket taken out
(``handler_cpu``): each side's CPU per request in one process. At c=1 nothing overlaps, so no
design that runs these handlers and this codec, whatever its I/O, answers faster than direct
plus that time; it is printed against what the p50 goal leaves above direct.

The floor's own relays and agents are in ``floor_roles.py``.

    .venv/bin/python bench/floor.py            # every column, as ratios to direct
    .venv/bin/python bench/floor.py --pair "bare floor" --pair Hatchway   # some pairs only

The same origin (``origin.py``) and wrk as ``make bench``, alternating direct and floor within
each round; medians of the rounds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import floor_roles  # noqa: E402
import run  # noqa: E402
import wrk  # noqa: E402
from children import Child, free_port  # noqa: E402

ROUNDS = 3
P50_GOAL = next(column.goal for column in run.COLUMNS if column.key == "p50")
"""The p50 goal at c=1, as a multiple of direct: ``make bench``'s."""
SECONDS = 10.0


HANDLER_REQUESTS = 20_000
"""Requests timed in one process by ``handler_cpu``."""

_NO_PORT = 9
"""The port in the URLs ``handler_cpu``'s relay builds; nothing is sent to it."""


@dataclass(frozen=True)
class HandlerCpu:
    """CPU per request of the work the "with handlers" pair does besides its I/O, in µs."""

    relay: float
    """The relay's side: the event as the gateway builds it, the HTTP handler's steps, the
    WebSocket handler for the answer, the reply's bytes."""
    agent: float
    """The agent's side: decoding the request, encoding the answer (``hatchway.protocol.codec``)."""


def handler_cpu(origin_port: int, requests: int = HANDLER_REQUESTS) -> HandlerCpu:
    """Each side's CPU per request on the "with handlers" path with every socket taken out:
    one process, one thread, the handlers' messages handed over in memory and the origin's
    answer (asked once, on loopback) replayed for every request. No design that runs these
    handlers and this codec can spend less per request, whatever its I/O."""
    import http.client

    from hatchway.protocol import Request, codec

    origin = http.client.HTTPConnection("127.0.0.1", origin_port, timeout=10)
    origin.request("GET", "/bytes/1024")
    reply = origin.getresponse()
    status_line = f"HTTP/1.1 {reply.status} {reply.reason}"
    origin_headers = [[n, v] for n, v in reply.getheaders()]
    origin_body = reply.read()
    origin.close()

    posted: list[str] = []
    handlers = floor_roles.Handlers(_NO_PORT, posted.append)
    handlers.connect()
    handlers.message(floor_roles.hello())
    posted.clear()
    first = "GET /bytes/1024 HTTP/1.1"
    visitor = [["Host", "bench.localhost"], ["User-Agent", "wrk"]]
    relay_seconds = agent_seconds = 0.0
    timed_from = (0.0, 0.0)
    for number in range(requests + requests // 10):
        if number == requests // 10:  # the first tenth warms up
            relay_seconds = agent_seconds = 0.0
            timed_from = (time.thread_time(), time.perf_counter())
        start = time.perf_counter()
        steps = handlers.visit(floor_roles.gateway_event(first, visitor, b"", "127.0.0.1"), None)
        try:
            wait = steps.send(None)
        except StopIteration as done:
            unasked = floor_roles.http_result(done.value)[:60]
            raise RuntimeError(f"the handlers answered {unasked!r} without the agent") from None
        posted_at = time.perf_counter()
        request = codec.decode(posted.pop())
        assert isinstance(request, Request), request
        text = floor_roles.codec_answer(request.id, status_line, origin_headers, origin_body)
        answered_at = time.perf_counter()
        handlers.message(text)
        try:
            steps.send(handlers.store.wait_response(wait.request_id, 0.0))
            raise RuntimeError("the handler waited again for a stored answer")
        except StopIteration as done:
            reply_bytes = floor_roles.http_result(done.value)
        end = time.perf_counter()
        if not reply_bytes.endswith(origin_body):
            raise RuntimeError(f"the handlers answered {reply_bytes[:60]!r}")
        relay_seconds += (posted_at - start) + (end - answered_at)
        agent_seconds += answered_at - posted_at
    # The sides are told apart by the clock (a CPU clock per section would cost a system call
    # each), then scaled by the share of that time the thread was running.
    running = (time.thread_time() - timed_from[0]) / (time.perf_counter() - timed_from[1])
    per_request = running / requests * 1e6
    return HandlerCpu(relay_seconds * per_request, agent_seconds * per_request)


@dataclass
class CpuUse:
    """CPU seconds a pair's relay and agent used over some runs, and the requests they served."""

    relay: float = 0.0
    agent: float = 0.0
    requests: float = 0.0

    @property
    def relay_us(self) -> float:
        return self.relay / self.requests * 1e6

    @property
    def agent_us(self) -> float:
        return self.agent / self.requests * 1e6


@dataclass(frozen=True)
class Pair:
    """A relay and an agent standing where ``hatchway-local`` and ``hatchway http`` stand: each
    a role of this script or (None) Hatchway's own command; or else a peer of ``make bench``'s,
    its server as the relay and its client as the agent."""

    relay: str | None = None
    agent: str | None = None
    peer: str | None = None
    """A name in ``run.PEERS``."""
    small: bool = True
    """Measured on the small requests' columns too, not only on the body columns."""


PAIRS = {
    "bare floor": Pair("relay", "agent"),
    "bare floor, blob path": Pair("relay-blobs", "agent", small=False),
    "with handlers": Pair("relay-handlers", "agent-codec"),
    "Hatchway": Pair(),
    "Hatchway, agent on one loop": Pair(agent="agent-loop"),
    "ssh -R (OpenSSH)": Pair(peer="ssh -R"),
    "localtunnel": Pair(peer="localtunnel"),
}
"""The pairs measured, by column. The bare floor's blob path is the bare pair passing bodies
larger than a message carries by way of a blob store, as Hatchway must; its small requests
take the bare floor's path, so it is measured on the body columns only. The two Hatchway pairs
share the real gateway; the second's agent is the ceiling of an agent serving from one event
loop (``agent_on_one_loop``). The last two are the peers the goals were set against, measured
in the same run."""

HATCHWAY_TUNNEL = "bench"


def start_pair(pair: Pair, origin_port: int, state: Path) -> run.Forward:
    """``pair``'s two processes, ready, relay first; and where and how visitors reach its
    relay. Whatever started is stopped again if either never gets ready."""
    if pair.peer is not None:
        return run.PEERS[pair.peer](origin_port, state)
    me = [sys.executable, str(HERE / "floor_roles.py")]
    relay_port, agent_port = free_port(), free_port()
    env = {"HATCHWAY_CONFIG": str(state / "config.toml"), "XDG_STATE_HOME": str(state)}
    if pair.relay is None:
        relay_argv = [str(run.BIN / "hatchway-local"), "--port", str(relay_port)]
        relay_argv += ["--token", run.TOKEN]
        relay_ready = "hatchway-local ready"
        agent_port = relay_port  # agents connect to the gateway's own port
    else:
        relay_argv = [*me, pair.relay, str(relay_port), str(agent_port)]
        relay_ready = "floor relay ready"
    if pair.agent is None:
        agent_argv = [str(run.BIN / "hatchway"), "http", str(origin_port), "--no-inspect"]
        agent_argv += ["--server", f"ws://127.0.0.1:{agent_port}/connect", "--token", run.TOKEN]
        agent_argv += ["--subdomain", HATCHWAY_TUNNEL, "--log-format", "plain"]
        agent_ready = r"Forwarding\s+http://" + HATCHWAY_TUNNEL
    else:
        agent_argv = [*me, pair.agent, str(agent_port), str(origin_port)]
        agent_ready = "floor agent ready"
    started: list[Child] = []
    try:
        for argv, ready in ((relay_argv, relay_ready), (agent_argv, agent_ready)):
            started.append(Child(argv, env))
            started[-1].wait_for(ready)
    except BaseException:
        for child in reversed(started):
            child.kill()
        raise
    base = f"http://127.0.0.1:{relay_port}"
    return run.Forward(started, base, f"{HATCHWAY_TUNNEL}.localhost:{relay_port}")


SMALL = {column.key: column for column in run.COLUMNS if column.key in ("p50", "rps")}
BODIES = {column.key: column for column in run.COLUMNS if column.key in ("mib", "echo")}


def measure(rounds: int, seconds: float, names: list[str] | None = None) -> None:
    """Runs the pairs called ``names`` (default: all of them) against direct and prints the
    tables."""
    pairs = {name: PAIRS[name] for name in names or PAIRS}
    binary = wrk.ensure_wrk()
    origin_port = free_port()
    children = [Child([sys.executable, str(HERE / "origin.py"), str(origin_port)])]
    bases = {"direct": f"http://127.0.0.1:{origin_port}"}
    hosts: dict[str, str | None] = {"direct": None}
    state = tempfile.TemporaryDirectory()
    script = wrk.post_script(Path(state.name), random.Random(7).randbytes(run.POST_BYTES))
    sides: dict[str, tuple[Child, Child]] = {}
    usage: dict[tuple[str, str], CpuUse] = {}

    def timed(name: str, column: run.Column) -> float:
        """One wrk run of ``column`` on ``name``, its relay's and agent's CPU added to
        ``usage``: the column's figure (``run.figure``)."""
        pair = sides.get(name, ())
        before = [child.cpu_seconds() for child in pair]
        url = bases[name] + column.path
        post = script if column.post else None
        report = wrk.run(binary, url, column.connections, seconds, hosts[name], post)
        if pair:
            use = usage.setdefault((name, column.key), CpuUse())
            use.relay += pair[0].cpu_seconds() - before[0]
            use.agent += pair[1].cpu_seconds() - before[1]
            use.requests += report.requests_per_second * seconds
        return float(run.figure(column, report))  # ``run`` is untyped from here

    try:
        children[0].wait_for("origin ready")
        for name, pair in pairs.items():
            forward = start_pair(pair, origin_port, Path(state.name))
            children += forward.children
            sides[name] = (forward.children[0], forward.client)
            bases[name], hosts[name] = forward.base, forward.host
            wrk.run(binary, bases[name] + SMALL["rps"].path, 32, 2.0, hosts[name])  # warm up
        for child in children:
            child.quiet()
        figures: dict[str, dict[str, list[float]]] = {key: {} for key in (*SMALL, *BODIES)}
        for number in range(1, rounds + 1):
            print(f"round {number} of {rounds} ...", file=sys.stderr)
            for name in bases:
                if name == "direct" or pairs[name].small:
                    for key, column in SMALL.items():
                        figures[key].setdefault(name, []).append(timed(name, column))
                for key, column in BODIES.items():
                    figures[key].setdefault(name, []).append(timed(name, column))
        for child in children[1:]:  # the handlers' CPU is timed with the machine quiet
            child.kill()
        cpu = handler_cpu(origin_port)
    finally:
        for child in reversed(children):
            child.kill()
        state.cleanup()
    medians = {
        key: {name: statistics.median(values) for name, values in by_name.items()}
        for key, by_name in figures.items()
    }
    direct_p50 = medians["p50"]["direct"]
    print(f"| measure (median) | direct | {' | '.join(pairs)} |")
    print("|---|---:|" + "---:|" * len(pairs))
    for key, column in {**SMALL, **BODIES}.items():
        direct = medians[key]["direct"]
        cells = (
            _cell(medians[key][name], direct, column) if name in medians[key] else ""
            for name in pairs
        )
        print(f"| {column.label} ({column.unit}) | {direct:,.0f} | {' | '.join(cells)} |")
    print()
    print("| CPU per request (µs, all rounds) | relay c=1 | relay c=32 | agent c=1 | agent c=32 |")
    print("|---|---:|---:|---:|---:|")
    for name in (name for name, pair in pairs.items() if pair.small):
        quiet, busy = usage[name, "p50"], usage[name, "rps"]
        cpu_figures = (quiet.relay_us, busy.relay_us, quiet.agent_us, busy.agent_us)
        print(f"| {name} | {' | '.join(f'{figure:.0f}' for figure in cpu_figures)} |")
    print()
    print("| CPU per request (µs, all rounds) | relay 1 MB GET | relay echo ", end="")
    print("| agent 1 MB GET | agent echo |")
    print("|---|---:|---:|---:|---:|")
    for name in pairs:
        large, echo = usage[name, "mib"], usage[name, "echo"]
        cpu_figures = (large.relay_us, echo.relay_us, large.agent_us, echo.agent_us)
        print(f"| {name} | {' | '.join(f'{figure:.0f}' for figure in cpu_figures)} |")
    budget = (P50_GOAL - 1) * direct_p50
    print()
    print("| CPU per request, one process, no I/O | relay's handlers | agent's codec | both |")
    print("|---|---:|---:|---:|")
    both = cpu.relay + cpu.agent
    print(f'| "with handlers" path (µs) | {cpu.relay:.0f} | {cpu.agent:.0f} | {both:.0f} |')
    print()
    print(
        f"The p50 goal ({P50_GOAL}x direct) leaves the tunnel {budget:,.0f} µs a request above "
        f"direct in this run; the handlers and the codec alone spend {both:,.0f} µs of CPU."
    )


def _cell(value: float, direct: float, column: run.Column) -> str:
    """A figure and its ratio to direct, as ``make bench`` shows ratios."""
    return f"{value:,.0f} ({run.ratio(column, value / direct)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument(
        "--pair",
        action="append",
        choices=list(PAIRS),
        help="a pair to measure (repeatable; default: all of them)",
    )
    args = parser.parse_args()
    measure(args.rounds, args.seconds, args.pair)


if __name__ == "__main__":
    main()
