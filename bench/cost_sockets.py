"""``make cost``'s visitor WebSocket case: what one message each way costs on a socket a visitor
holds open to the local app through the tunnel (a hot-reload update, a chat line).

A real WebSocket client sends 1 KB text messages through the local gateway's visitor-socket API
to a real WebSocket app behind a second ``hatchway http`` agent, which echoes each one back.
Every operation is counted as for a request (``cost_meter``, ``cost_gateway``): the visitor's
message and its ``$default`` invocation, the relay's post to the agent, the agent's message back
through the agents' API and its invocation, the relay's post to the visitor and its
acknowledgement to the agent, the DynamoDB reads of the socket's pair, and the bytes sent out.
The open and the close are per socket, like an agent's hello: they are left out of the figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cost_meter
import cost_pricing as pricing
import websocket

SOCKET_SUBDOMAIN = "costws"
MESSAGE_BYTES = 1024
"""What the visitor sends each time: the app echoes it back."""
COMMAND = "echo:"
"""The test app echoes what follows this (``support.socket_app``)."""


@dataclass
class SocketResult:
    messages: int
    lines: list[pricing.Line]
    seconds: float
    """Mean round trip, visitor to app and back, through the tunnel."""

    @property
    def per_million(self) -> float:
        """Dollars per million round trips (one message each way)."""
        return pricing.total_per_million(self.lines)


@contextmanager
def visitor_socket(relay_port: int) -> Iterator[websocket.WebSocket]:
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{relay_port}/ws",
        host=f"{SOCKET_SUBDOMAIN}.localhost:{relay_port}",
        timeout=30,
    )
    try:
        if ws.recv() != "hello":  # the app speaks first
            raise SystemExit("socket case: the app's first message did not arrive")
        yield ws
    finally:
        ws.close()


def round_trip(ws: websocket.WebSocket, text: str) -> float:
    started = time.perf_counter()
    ws.send(COMMAND + text)
    echoed = ws.recv()
    if echoed != text:
        raise SystemExit(f"socket case: expected the echo of {len(text)} bytes, got {echoed!r:.80}")
    return time.perf_counter() - started


def run_socket_case(
    relay_port: int, meter: cost_meter.Meter, messages: int, init_cpu: float, memory_of: object
) -> SocketResult:
    text = "x" * (MESSAGE_BYTES - len(COMMAND))
    with visitor_socket(relay_port) as ws:
        for _ in range(2):  # warm: connections, clients
            round_trip(ws, text)
        meter.wait_idle()
        meter.reset()
        took = [round_trip(ws, text) for _ in range(messages)]
        meter.wait_idle()
        if meter.errors:
            raise SystemExit(f"socket case: operations the meter could not count: {meter.errors}")
        profiles = meter.profiles(messages)
        lines = meter.lines(messages)
    lines += pricing.cold_start_lines(profiles, init_cpu, memory_of)  # type: ignore[arg-type]
    return SocketResult(messages, lines, statistics.mean(took))
