"""``make cost``: counts every AWS operation one visitor request costs on the DynamoDB-mode path
and prices it from the relay's one table of list prices.

The relay runs behind the local gateway with the production adapters against moto's server
(DynamoDB and S3), a real ``hatchway http`` agent forwards to a local app that answers after
50 ms, and every operation is counted where it happens: boto3 calls in this process, whichever
thread makes them (DynamoDB capacity units from the items on the wire, ``@connections`` posts by
size), S3 requests at moto's server (the agent's presigned ones too), WebSocket messages at the
gateway's sockets, Lambda invocations with their wall and CPU time at the gateway, bytes sent
out to the internet, and the bytes the relay's loggers write.

Beyond the cases it measures what one more second of the app's latency adds (the 1 KB case again
with the app answering a second later), the CPU a cold start costs (the handler module imported
in a fresh interpreter), and prints each function's memory table: what its measured CPU work
costs in latency and dollars at each candidate memory size.

    make cost                       # or: .venv/bin/python bench/cost.py [--requests N]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

# moto and boto3 want credentials; these never reach AWS (every client has a loopback endpoint).
os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

import cost_gateway  # noqa: E402
import cost_meter  # noqa: E402
import cost_pricing as pricing  # noqa: E402
import cost_sockets  # noqa: E402
from cost_app import APP_DELAY_SECONDS, CostApp, json_text, random_bytes, run_cost_app  # noqa: E402

from hatchway import protocol  # noqa: E402
from hatchway_relay import prices  # noqa: E402

TOKEN = "hw_cost-token-0123456789"
SUBDOMAIN = "cost"
KB = 1024
MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    method: str
    path: str
    body: bytes
    response_bytes: int
    requests: int
    content_type: str = "application/json"


def cases() -> list[Case]:
    return [
        Case(
            "1kb",
            "1 KB JSON request, 1 KB JSON response",
            "POST",
            "/json/1024",
            json_text(KB, seed=1),
            KB,
            50,
        ),
        Case(
            "10kb",
            "10 KB JSON request, 10 KB JSON response",
            "POST",
            "/json/10240",
            json_text(10 * KB, seed=2),
            10 * KB,
            50,
        ),
        Case(
            "100kb",
            "small GET, 100 KB random-bytes response",
            "GET",
            f"/bytes/{100 * KB}",
            b"",
            100 * KB,
            20,
        ),
        Case("1mb", "small GET, 1 MB random-bytes response", "GET", f"/bytes/{MB}", b"", MB, 10),
        Case(
            "4mb-request",
            "4 MB random-bytes request, small JSON response",
            "POST",
            "/upload",
            random_bytes(4 * MB, seed=4),
            len(b'{"ok":true}'),
            5,
            "application/octet-stream",
        ),
    ]


# --- The stack: moto, the relay behind the local gateway, the app and the agent --------------


@dataclass
class Stack:
    relay_port: int
    app: CostApp
    meter: cost_meter.Meter
    settings: cost_gateway.LambdaSettings


@contextmanager
def moto_server() -> Iterator[tuple[str, object]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}", server
    finally:
        server.stop()


@contextmanager
def stack() -> Iterator[Stack]:
    import boto3

    from hatchway_local.server import run_local
    from support.processes import AgentProcess
    from support.socket_app import run_socket_app

    settings = cost_gateway.template_settings(ROOT / "template.yaml")
    meter = cost_meter.Meter()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        endpoint, moto = stack.enter_context(moto_server())
        cost_meter.install_server_meter(moto, meter, settings.blob_expiry_days)
        sockets = cost_gateway.SocketMeter(meter)
        sockets.install()
        stack.callback(sockets.uninstall)
        probe = cost_meter.DynamoProbe(
            boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        )
        boto = cost_meter.BotoMeter(meter, probe)
        boto.install()
        stack.callback(boto.uninstall)
        log_handler = cost_gateway.install_log_meter(meter, settings.log_level)
        stack.callback(logging.getLogger("hatchway").removeHandler, log_handler)
        app = stack.enter_context(run_cost_app())
        server = stack.enter_context(
            run_local(
                store="dynamodb",
                dynamodb_endpoint=endpoint,
                blob_store="s3",
                s3_endpoint=endpoint,
                table_name=f"hatchway-cost-{uuid.uuid4().hex[:8]}",
                tokens=(TOKEN,),
            )
        )
        # The access-log lines the template's AccessLogs (on by default) would ingest.
        cost_gateway.install_access_log_meter(
            server.gateway.access_log, meter, settings.access_log_days
        )
        lambdas = cost_gateway.LambdaMeter(meter, settings, cost_gateway.emf_line_bytes())
        gateway = server.gateway
        assert gateway.ws_handler is not None and gateway.http_handler is not None
        gateway.set_handlers(
            lambdas.wrap(gateway.ws_handler, "WebSocket"),
            lambdas.wrap(gateway.http_handler, "HTTP"),
        )
        assert gateway.socket_handler is not None
        gateway.set_socket_handler(lambdas.wrap(gateway.socket_handler, "VisitorSocket"))
        visitors, agents = gateway.sockets.connections, gateway.agents.connections

        def side(ws: object) -> str | None:
            if any(c.ws is ws for c in agents.values()):
                return "agent"
            return "visitor" if any(c.ws is ws for c in visitors.values()) else None

        sockets.side = side
        socket_app = stack.enter_context(run_socket_app())
        agent = AgentProcess(
            str(app.port),
            server.agent_url,
            TOKEN,
            SUBDOMAIN,
            env={"HATCHWAY_CONFIG": str(Path(tmp) / "config.toml"), "HATCHWAY_INSPECT": "off"},
        )
        stack.callback(agent.kill)
        agent.start(timeout=30)
        # A second agent, for a visitor's WebSocket to an app that echoes (cost_sockets).
        socket_agent = AgentProcess(
            str(socket_app.port),
            server.agent_url,
            TOKEN,
            cost_sockets.SOCKET_SUBDOMAIN,
            env={"HATCHWAY_CONFIG": str(Path(tmp) / "config.toml"), "HATCHWAY_INSPECT": "off"},
        )
        stack.callback(socket_agent.kill)
        socket_agent.start(timeout=30)
        yield Stack(server.port, app, meter, settings)


# --- Visitors ---------------------------------------------------------------------------------


class Visitor:
    """One keep-alive HTTP client, as a browser or a webhook sender would hold. It accepts
    gzip, as browsers, curl's ``--compressed`` and Python's ``requests`` do."""

    def __init__(self, port: int, host: str | None) -> None:
        self.port = port
        self.host = host
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(self, case: Case) -> float:
        """One request; the seconds it took. Fails loudly on anything but the expected answer."""
        headers = {"Content-Type": case.content_type} if case.body else {}
        headers["Accept-Encoding"] = "gzip, deflate"
        if self.host:
            headers["Host"] = self.host
        started = time.perf_counter()
        try:
            self.connection.request(case.method, case.path, body=case.body or None, headers=headers)
            response = self.connection.getresponse()
            body = response.read()
            if response.getheader("content-encoding") == "gzip":
                body = gzip.decompress(body)
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise
        seconds = time.perf_counter() - started
        if response.status != 200 or len(body) != case.response_bytes:
            error = response.getheader("x-hatchway-error") or ""
            raise SystemExit(
                f"{case.key}: expected 200 with {case.response_bytes} bytes, got "
                f"{response.status} {error} with {len(body)} bytes: {body[:300]!r}"
            )
        return seconds

    def close(self) -> None:
        self.connection.close()


def app_latency(app: CostApp, case: Case, requests: int) -> float:
    """The shortest wait a relay could bill: the app's own round trip, asked directly."""
    visitor = Visitor(app.port, None)
    try:
        visitor.send(case)  # connect outside the measurement
        return statistics.mean(visitor.send(case) for _ in range(requests))
    finally:
        visitor.close()


INIT_PROBE = """
import resource
import sys
# Lambda's runtime has no pyOpenSSL (certbot brings it into this venv), and botocore imports
# it, with all of cryptography, wherever it is installed.
sys.modules["OpenSSL"] = None
import hatchway_relay.aws as aws
aws._handlers()  # the clients and the relay, built on a cold start's first invocation
usage = resource.getrusage(resource.RUSAGE_SELF)
print(usage.ru_utime + usage.ru_stime)
"""


INIT_PROBES = 7
"""Fresh interpreters whose import CPU is measured: a cold start's CPU varies by a fifth from one
to the next on a shared machine, and the median of seven moves far less than that of three."""


def init_cpu_seconds(runs: int = INIT_PROBES) -> float:
    """CPU seconds of a cold start on one full core: a fresh interpreter importing the handler
    module (``hatchway_relay.aws``, the one every function names) and building its clients, as
    on a first invocation; the median of ``runs``. CPU time rather than wall time, so that the
    other work on a shared machine does not count."""
    env = dict(
        os.environ,
        TABLE_NAME="hatchway-cost",
        BLOB_BUCKET="hatchway-cost-blobs",
        SECRETS_KEY="alias/hatchway-cost",
        WEBSOCKET_MANAGEMENT_URL="https://abc123.execute-api.us-east-1.amazonaws.com/prod",
        PATH_URL="https://abc123.execute-api.us-east-1.amazonaws.com/t/{name}/",
    )
    seconds = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", INIT_PROBE], env=env, capture_output=True, text=True, check=True
        )
        seconds.append(float(done.stdout.split()[-1]))
    return statistics.median(seconds)


@dataclass
class Result:
    case: Case
    requests: int
    lines: list[pricing.Line]
    seconds: float
    profiles: list[pricing.Profile]

    @property
    def per_million(self) -> float:
        return pricing.total_per_million(self.lines)

    @property
    def transfer(self) -> float:
        return pricing.transfer_per_million(self.lines)


def run_case(stack: Stack, case: Case, requests: int, init_cpu: float) -> Result:
    visitor = Visitor(stack.relay_port, f"{SUBDOMAIN}.localhost:{stack.relay_port}")
    try:
        for _ in range(2):  # warm: pools, connections, the relay's adaptive poll timing
            visitor.send(case)
        stack.meter.wait_idle()
        stack.meter.reset()
        took = [visitor.send(case) for _ in range(requests)]
        stack.meter.wait_idle()
    finally:
        visitor.close()
    if stack.meter.errors:
        raise SystemExit(f"{case.key}: operations the meter could not count: {stack.meter.errors}")
    profiles = stack.meter.profiles(requests)
    lines = stack.meter.lines(requests)
    lines += pricing.cold_start_lines(profiles, init_cpu, stack.settings.memory_of)
    return Result(case, requests, lines, statistics.mean(took), profiles)


def run_slower(stack: Stack, case: Case, requests: int, init_cpu: float) -> Result:
    """The case again with the app answering one second later."""
    stack.app.delay = APP_DELAY_SECONDS + 1.0
    try:
        return run_case(stack, case, requests, init_cpu)
    finally:
        stack.app.delay = APP_DELAY_SECONDS


# --- Report -----------------------------------------------------------------------------------


def _money(value: float) -> str:
    return f"{value:,.4f}" if value < 0.01 else f"{value:,.2f}"


def print_lines(title: str, lines: list[pricing.Line]) -> None:
    print(title)
    print(
        f"  {'operation':48} {'count/req':>9} {'bytes/req':>10} {'units/req':>10} {'unit':>10} "
        f"{'$/M req':>9}"
    )
    for line in lines:
        nbytes = f"{line.nbytes:,.0f}" if line.nbytes else ""
        print(
            f"  {line.operation:48} {line.count:9.2f} {nbytes:>10} {line.units:10.4g} "
            f"{line.unit:>10} {_money(line.per_million):>9}"
        )
    total = _money(pricing.total_per_million(lines))
    print(f"  {'total':48} {'':9} {'':10} {'':10} {'':>10} {total:>9}")
    print()


def print_memory_table(profile: pricing.Profile, init_cpu: float, chosen: int) -> None:
    print(
        f"Memory, {profile.function} function (1kb case): {profile.invocations:.2f} invocations "
        f"per request, {profile.wall * 1000:.1f} ms each of which {profile.cpu * 1000:.1f} ms "
        f"CPU on a full core; cold start {init_cpu * 1000:.0f} ms CPU on a full core"
    )
    print(
        f"  {'MB':>6} {'vCPU':>6} {'CPU ms':>8} {'+latency':>9} {'duration $/M':>13} "
        f"{'+1 s wait $/M':>14} {'INIT ms':>8} {'INIT $/M':>9} {'total $/M':>10}"
    )
    for option in pricing.memory_options(profile, init_cpu):
        mark = "*" if option.memory_mb == chosen else " "
        print(
            f"{mark} {option.memory_mb:>5} {pricing.cpu_share(option.memory_mb):6.3f} "
            f"{option.cpu_ms:8.1f} {option.added_ms:8.1f}ms {option.duration:13.3f} "
            f"{option.wait_second:14.2f} {option.init_ms:8.0f} {option.init:9.3f} "
            f"{option.per_million:10.3f}"
        )
    print()


def print_report(
    results: list[Result],
    slower: Result,
    floor: list[pricing.Line],
    latency: float,
    init_cpu: float,
    stack: Stack,
    socket: cost_sockets.SocketResult,
) -> None:
    settings = stack.settings
    print()
    print(f"Prices: {prices.PRICES_SOURCE}, checked {prices.PRICES_CHECKED}")
    print(
        f"Template: MemorySize {settings.memory_mb} MB (HTTP), "
        f"{settings.websocket_memory_mb} MB (WebSocket), LogLevel {settings.log_level}, "
        f"Lambda platform log lines {settings.platform_log_bytes} bytes per invocation "
        f"({'SystemLogLevel WARN' if not settings.platform_log_bytes else 'not suppressed'})"
    )
    print(
        f"App: answers after {APP_DELAY_SECONDS * 1000:.0f} ms; measured directly "
        f"{latency * 1000:.1f} ms per request"
    )
    print()
    for result in results:
        print_lines(
            f"{result.case.key}: {result.case.label} — {result.requests} requests, "
            f"{result.seconds * 1000:.0f} ms each through the tunnel",
            result.lines,
        )
    print_lines(
        f"1kb, app 1 s slower: {slower.requests} requests, {slower.seconds * 1000:.0f} ms each "
        "through the tunnel",
        slower.lines,
    )
    print_lines(
        f"socket: a visitor's WebSocket, {cost_sockets.MESSAGE_BYTES}-byte text messages echoed "
        f"by the app — {socket.messages} round trips, {socket.seconds * 1000:.1f} ms each through "
        "the tunnel; per round trip (one message each way)",
        socket.lines,
    )
    print_lines("floor: what the platform charges for one proxied request", floor)
    print(
        f"Cold starts: one per {pricing.COLD_START_EVERY} invocations of each function, "
        f"{init_cpu * 1000:.0f} ms of CPU each on a full core (fresh interpreter importing the "
        "handler module and building its clients), stretched by the CPU share of the function's "
        "memory (1 vCPU at 1,769 MB)."
    )
    for profile in results[0].profiles:
        memory = settings.memory_of(profile.function)
        seconds = pricing.lambda_billed_ms(init_cpu / pricing.cpu_share(memory)) / 1000
        each = pricing.lambda_gb_seconds(round(seconds * 1000), memory)
        print(
            f"  {profile.function}: {seconds * 1000:.0f} ms at {memory} MB, "
            f"${each * prices.LAMBDA_ARM_GB_SECOND * 1e6:.2f} per million cold starts"
        )
    print()
    for profile in results[0].profiles:
        print_memory_table(profile, init_cpu, settings.memory_of(profile.function))
    overhead = stack.meter.lines(1, cost_meter.HEARTBEAT)
    beats = next((ln.count for ln in overhead if ln.operation.startswith("Lambda invocations")), 0)
    per_month = 30 * 24 * 60
    minutes = per_month * prices.WEBSOCKET_CONNECTION_MINUTE
    print(
        f"Per connected agent (not per request): {per_month:,} connection-minutes a month = "
        f"${minutes:.4f}/month."
    )
    if beats:
        each = pricing.total_per_million(overhead) / 1e6 / beats
        pings = per_month * 60 / protocol.HEARTBEAT_SECONDS
        print(
            f"  Heartbeats seen during the run: {beats:.0f}, ${each * 1e6:.2f} per million; one "
            f"every {protocol.HEARTBEAT_SECONDS:.0f} s is {pings:,.0f} a month = "
            f"${each * pings:.4f}/month."
        )
    print()
    print(
        f"{'case':14} {'$/M requests':>14} {'x floor':>9}\n"
        + "\n".join(
            f"{r.case.key:14} {r.per_million:14.2f} "
            f"{r.per_million / pricing.total_per_million(floor):8.1f}x"
            for r in results
        )
        + f"\n{'floor':14} {pricing.total_per_million(floor):14.2f}"
    )
    by_key = {r.case.key: r for r in results}
    wait = slower.per_million - by_key["1kb"].per_million
    access_lines = [
        ln for ln in by_key["1kb"].lines if ln.operation.startswith(pricing.ACCESS_LOGS)
    ]
    access_logs = pricing.access_logs_per_million(access_lines)
    line_bytes = next((ln.nbytes for ln in access_lines if ln.unit == "GB"), 0.0)
    print(
        f"Access logs (AccessLogs, on by default): {line_bytes:.0f} bytes a request (the visitor's "
        f"line and the agent's answer line), ${access_logs:.2f} per million requests, "
        f"{settings.access_log_days} days' storage included."
    )
    print(
        f"{'1kb +1 s':14} {slower.per_million:14.2f}   (one more second of app latency: "
        f"+${wait:.2f} per million)"
    )
    print()
    print(
        pricing.summary_line(
            {key: r.per_million for key, r in by_key.items()},
            pricing.total_per_million(floor),
            by_key["1mb"].transfer,
            wait,
            access_logs,
            socket.per_million,
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, help="requests per case (default: 50 small, 10 at 1 MB, 5 at 4 MB)"
    )
    parser.add_argument(
        "--slower-requests",
        type=int,
        default=20,
        help="requests of the 1 KB case with the app 1 s slower (default: 20)",
    )
    parser.add_argument(
        "--socket-messages",
        type=int,
        default=50,
        help="round trips on a visitor's WebSocket (default: 50)",
    )
    args = parser.parse_args()
    # moto's server logs every request it serves; the report is what this prints.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    chosen = cases()
    print("cold start: importing the handler module in fresh interpreters ...", flush=True)
    init_cpu = init_cpu_seconds()
    with stack() as running:
        latency = app_latency(running.app, chosen[0], 20)
        results = []
        for case in chosen:
            requests = args.requests or case.requests
            print(f"{case.key}: {requests} requests ...", flush=True)
            results.append(run_case(running, case, requests, init_cpu))
        print(f"1kb, app 1 s slower: {args.slower_requests} requests ...", flush=True)
        slower = run_slower(running, chosen[0], args.slower_requests, init_cpu)
        print(f"socket: {args.socket_messages} round trips ...", flush=True)
        socket = cost_sockets.run_socket_case(
            running.relay_port,
            running.meter,
            args.socket_messages,
            init_cpu,
            running.settings.memory_of,
        )
    # Reported once everything has stopped, so that the summary is the last line printed.
    floor = pricing.floor_lines(latency, running.settings.memory_mb)
    print_report(results, slower, floor, latency, init_cpu, running, socket)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
