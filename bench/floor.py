"""How fast any two CPython processes can relay small requests on this machine: the floor under
``make bench``'s small-request columns.

A bare relay and a bare agent, each one asyncio loop, stand where ``hatchway-local`` and
``hatchway http`` stand: visitors' HTTP/1.1 requests go to the relay, which passes each as JSON
(body in base64) over one length-prefixed TCP stream to the agent, which asks the origin on a
kept connection and sends the answer back the same way. They split HTTP by hand and check,
store, limit and log nothing, and speak no WebSocket. Whatever the real tunnel does on top of
that, it cannot be faster than this pair.

    .venv/bin/python bench/floor.py            # p50 at c=1 and req/s at c=32, as ratios to direct

The same origin (``origin.py``) and wrk as ``make bench``, alternating direct and floor within
each round; medians of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import struct
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import wrk  # noqa: E402
from children import Child, free_port  # noqa: E402

ROUNDS = 3
SECONDS = 10.0
_LENGTH = struct.Struct("!I")
_SKIPPED = frozenset({"content-length", "connection"})


async def _read_message(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


def _write_message(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode()
    writer.write(_LENGTH.pack(len(data)) + data)


async def _read_http(reader: asyncio.StreamReader) -> tuple[str, list[list[str]], bytes]:
    """The first line, the headers and the body (Content-Length framing only)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = [
        [name, value.strip()] for name, _, value in (h.partition(":") for h in head[1:] if h)
    ]
    length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
    return head[0], headers, await reader.readexactly(length) if length else b""


def _http(first_line: str, headers: list[list[str]], body: bytes) -> bytes:
    lines = [first_line, *(f"{n}: {v}" for n, v in headers if n.lower() not in _SKIPPED)]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


async def relay(visitor_port: int, agent_port: int) -> None:
    """Visitors on ``visitor_port``; the one agent connects to ``agent_port``."""
    waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
    agent: list[asyncio.StreamWriter] = []
    ids = iter(range(1, 1 << 62))

    async def on_agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agent.append(writer)
        while True:
            answer = await _read_message(reader)
            waiting.pop(answer["id"]).set_result(answer)

    async def on_visitor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                first, headers, body = await _read_http(reader)
                method, target, _ = first.split(" ", 2)
                request_id = next(ids)
                waiting[request_id] = answered = loop.create_future()
                _write_message(
                    agent[0],
                    {
                        "id": request_id,
                        "method": method,
                        "target": target,
                        "headers": headers,
                        "body": base64.b64encode(body).decode(),
                    },
                )
                answer = await answered
                status_line = f"HTTP/1.1 {answer['status']} {answer['reason']}"
                writer.write(
                    _http(status_line, answer["headers"], base64.b64decode(answer["body"]))
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    await asyncio.start_server(on_agent, "127.0.0.1", agent_port)
    await asyncio.start_server(on_visitor, "127.0.0.1", visitor_port)
    print("floor relay ready", flush=True)
    await asyncio.Event().wait()


async def agent(relay_port: int, origin_port: int) -> None:
    """Serves the relay's requests against the origin, each on a kept connection."""
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)

    async def serve(request: dict[str, Any]) -> None:
        app = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", origin_port)
        first = f"{request['method']} {request['target']} HTTP/1.1"
        app[1].write(_http(first, request["headers"], base64.b64decode(request["body"])))
        status_line, headers, body = await _read_http(app[0])
        idle.append(app)
        _, status, reason = status_line.split(" ", 2)
        answer = {"id": request["id"], "status": int(status), "reason": reason}
        answer["headers"] = [h for h in headers if h[0].lower() not in _SKIPPED]
        _write_message(writer, {**answer, "body": base64.b64encode(body).decode()})

    print("floor agent ready", flush=True)
    tasks: set[asyncio.Task[None]] = set()
    while True:
        task = asyncio.get_running_loop().create_task(serve(await _read_message(reader)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def measure(rounds: int, seconds: float) -> None:
    binary = wrk.ensure_wrk()
    origin_port, relay_port, agent_port = free_port(), free_port(), free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    children = [Child([sys.executable, str(HERE / "origin.py"), str(origin_port)])]
    try:
        children[0].wait_for("origin ready")
        children.append(Child([*me, "relay", str(relay_port), str(agent_port)]))
        children[1].wait_for("floor relay ready")
        children.append(Child([*me, "agent", str(agent_port), str(origin_port)]))
        children[2].wait_for("floor agent ready")
        for child in children:
            child.quiet()
        urls = {
            "direct": f"http://127.0.0.1:{origin_port}/bytes/1024",
            "floor": f"http://127.0.0.1:{relay_port}/bytes/1024",
        }
        p50: dict[str, list[float]] = {name: [] for name in urls}
        rate: dict[str, list[float]] = {name: [] for name in urls}
        wrk.run(binary, urls["floor"], 32, 2.0)  # warm up
        for number in range(1, rounds + 1):
            print(f"round {number} of {rounds} ...", file=sys.stderr)
            for name, url in urls.items():
                p50[name].append(wrk.run(binary, url, 1, seconds).p50_us)
                rate[name].append(wrk.run(binary, url, 32, seconds).requests_per_second)
    finally:
        for child in reversed(children):
            child.kill()
    direct_p50, floor_p50 = (statistics.median(p50[n]) for n in urls)
    direct_rate, floor_rate = (statistics.median(rate[n]) for n in urls)
    print("| measure (median) | direct | bare floor | floor/direct |")
    print("|---|---:|---:|---:|")
    print(
        f"| p50 latency c=1, 1 KB (µs) | {direct_p50:,.0f} | {floor_p50:,.0f} | "
        f"{floor_p50 / direct_p50:.1f}x |"
    )
    print(
        f"| req/s c=32, 1 KB | {direct_rate:,.0f} | {floor_rate:,.0f} | "
        f"{floor_rate / direct_rate:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", choices=["relay", "agent"], help=argparse.SUPPRESS)
    parser.add_argument("ports", nargs="*", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args()
    if args.role == "relay":
        asyncio.run(relay(*args.ports))
    elif args.role == "agent":
        asyncio.run(agent(*args.ports))
    else:
        measure(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
