"""``make cost``: counts every AWS operation one visitor request costs on the DynamoDB-mode path
and prices it from the relay's one table of list prices.

The relay runs behind the local gateway with the production adapters against moto's server
(DynamoDB and S3), a real ``hatchway http`` agent forwards to a local app that answers after
50 ms, and every operation is counted where it happens: boto3 calls in this process (DynamoDB
capacity units from the items on the wire, ``@connections`` posts by size), S3 requests at moto's
server (the agent's presigned ones too), Lambda invocations and their durations at the gateway,
and the bytes the relay's loggers write.

    make cost                       # or: .venv/bin/python bench/cost.py [--requests N]
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import statistics
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

import cost_meter  # noqa: E402
import cost_pricing as pricing  # noqa: E402
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
    settings: cost_meter.LambdaSettings


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

    settings = cost_meter.template_settings(ROOT / "template.yaml")
    meter = cost_meter.Meter()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        endpoint, moto = stack.enter_context(moto_server())
        cost_meter.install_s3_meter(moto, meter, settings.blob_expiry_days)
        probe = cost_meter.DynamoProbe(
            boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        )
        boto = cost_meter.BotoMeter(meter, probe)
        boto.install()
        stack.callback(boto.uninstall)
        log_handler = cost_meter.install_log_meter(meter, settings.log_level)
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
        lambdas = cost_meter.LambdaMeter(meter, settings, cost_meter.emf_line_bytes())
        gateway = server.gateway
        assert gateway.ws_handler is not None and gateway.http_handler is not None
        gateway.set_handlers(
            lambdas.wrap(gateway.ws_handler, "WebSocket"),
            lambdas.wrap(gateway.http_handler, "HTTP"),
        )
        agent = AgentProcess(
            str(app.port),
            server.agent_url,
            TOKEN,
            SUBDOMAIN,
            env={"HATCHWAY_CONFIG": str(Path(tmp) / "config.toml"), "HATCHWAY_INSPECT": "off"},
        )
        stack.callback(agent.kill)
        agent.start(timeout=30)
        yield Stack(server.port, app, meter, settings)


# --- Visitors ---------------------------------------------------------------------------------


class Visitor:
    """One keep-alive HTTP client, as a browser or a webhook sender would hold."""

    def __init__(self, port: int, host: str | None) -> None:
        self.port = port
        self.host = host
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(self, case: Case) -> float:
        """One request; the seconds it took. Fails loudly on anything but the expected answer."""
        headers = {"Content-Type": case.content_type} if case.body else {}
        if self.host:
            headers["Host"] = self.host
        started = time.perf_counter()
        try:
            self.connection.request(case.method, case.path, body=case.body or None, headers=headers)
            response = self.connection.getresponse()
            body = response.read()
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


@dataclass
class Result:
    case: Case
    requests: int
    lines: list[pricing.Line]
    seconds: float

    @property
    def per_million(self) -> float:
        return pricing.total_per_million(self.lines)


def run_case(stack: Stack, case: Case, requests: int) -> Result:
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
    return Result(case, requests, stack.meter.lines(requests), statistics.mean(took))


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


def print_report(
    results: list[Result], floor: list[pricing.Line], latency: float, stack: Stack
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
    print_lines("floor: what the platform charges for one proxied request", floor)
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
    print()
    print(
        pricing.summary_line(
            {r.case.key: r.per_million for r in results}, pricing.total_per_million(floor)
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests", type=int, help="requests per case (default: 50 small, 10 at 1 MB, 5 at 4 MB)"
    )
    args = parser.parse_args()
    # moto's server logs every request it serves; the report is what this prints.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    chosen = cases()
    with stack() as running:
        latency = app_latency(running.app, chosen[0], 20)
        results = []
        for case in chosen:
            requests = args.requests or case.requests
            print(f"{case.key}: {requests} requests ...", flush=True)
            results.append(run_case(running, case, requests))
    # Reported once everything has stopped, so that the summary is the last line printed.
    floor = pricing.floor_lines(latency, running.settings.memory_mb)
    print_report(results, floor, latency, running)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
