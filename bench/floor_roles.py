"""The floor's own relays and agents: the processes ``floor.py`` starts as pairs in place of
``hatchway-local`` and ``hatchway http`` (``floor_roles.py ROLE PORT PORT``), each one event
loop, on uvloop where it is installed, as ``hatchway-local`` runs.

- ``relay`` and ``agent``: the bare pair. Visitors' HTTP/1.1 requests go to the relay, which
  passes each as a JSON head and the body's raw bytes over one length-prefixed TCP stream to
  the agent; the agent asks the origin on a kept connection and sends the answer back the same
  way. HTTP split by hand, nothing checked, stored, limited or logged.
- ``relay-blobs``: the bare relay passing a body larger than a message carries by way of a blob
  store on its visitor port, as API Gateway's message limit makes Hatchway pass it (the bare
  agent follows wherever the relay points).
- ``relay-handlers`` and ``agent-codec``: the bare transports, the relay running the relay's
  real Lambda handlers over its in-memory stores and the agent the real protocol codec.
- ``agent-loop``: an agent of one event loop speaking the real protocol to the real
  ``hatchway-local`` over a real WebSocket, and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run

_LENGTH = struct.Struct("!I")
_SKIPPED = frozenset({"content-length", "connection"})


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    return await reader.readexactly(size)


def _write_frame(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(_LENGTH.pack(len(data)) + data)


async def _read_message(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """A bare message: its JSON head, and the body's bytes after it."""
    frame = await _read_frame(reader)
    (size,) = _LENGTH.unpack_from(frame)
    head: dict[str, Any] = json.loads(frame[_LENGTH.size : _LENGTH.size + size])
    return head, frame[_LENGTH.size + size :]


def _write_message(writer: asyncio.StreamWriter, head: dict[str, Any], body: bytes) -> None:
    encoded = json.dumps(head).encode()
    size = _LENGTH.size + len(encoded) + len(body)
    writer.writelines([_LENGTH.pack(size), _LENGTH.pack(len(encoded)), encoded, body])


Answer = Callable[[str, list[list[str]], bytes, str], Awaitable[bytes]]
"""A relay's answer to one visitor request (first line, headers, body, the visitor's address):
the response's bytes."""


async def _listen(
    agent_port: int,
    on_agent: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    visitor_port: int,
    answer: Answer,
) -> None:
    """A relay's two listeners, then its readiness line; serves until killed. Each visitor's
    requests on a kept connection are answered in turn."""

    async def on_visitor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0]
        try:
            while True:
                writer.write(await answer(*await _read_http(reader), peer))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    await asyncio.start_server(on_agent, "127.0.0.1", agent_port)
    await asyncio.start_server(on_visitor, "127.0.0.1", visitor_port)
    print("floor relay ready", flush=True)
    await asyncio.Event().wait()


class Kept:
    """Kept connections to a port (the origin's, or the relay's blob store), one exchange at a
    time on each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def ask(
        self, first_line: str, headers: list[list[str]], body: bytes
    ) -> tuple[str, list[list[str]], bytes]:
        """The status line, headers and body answered to one request. A kept connection the
        server closed meanwhile (aiohttp closes one idle for 75 s, and a floor run pauses a
        pair for minutes) is dropped and the request sent on the next, or on a fresh one: the
        floor's requests, to its origin and to blob URLs, are all safe to repeat."""
        request = _http(first_line, headers, body)
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, request)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
        return await self._exchange(*await asyncio.open_connection("127.0.0.1", self.port), request)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[str, list[list[str]], bytes]:
        writer.write(request)
        answer = await _read_http(reader)
        self.idle.append((reader, writer))
        return answer


def _start(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` alongside, kept in ``tasks`` until it ends; a failure is told on stderr
    (a floor pair that drops a request silently would leave its relay waiting)."""
    task = asyncio.get_running_loop().create_task(work)
    tasks.add(task)

    def ended(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            print(f"a floor task failed: {task.exception()!r}", file=sys.stderr, flush=True)

    task.add_done_callback(ended)


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


BLOB_PATH = "/@blobs/"
"""Where a relay here answers blob URLs: where the local gateway answers its blob store's."""

BLOBS_HEADER = "x-floor-blobs"
"""On a visitor's response from a relay passing bodies by way of its blob store: how many of
the request's two bodies went that way."""


async def relay(visitor_port: int, agent_port: int, inline_bytes: int | None = None) -> None:
    """Visitors on ``visitor_port``; the one agent connects to ``agent_port``. With
    ``inline_bytes``, a body larger than that goes by way of a blob store kept on the visitor
    port, as the platform's message limit makes Hatchway's go: the relay keeps a request's for
    the agent to GET, and the agent PUTs an answer's for the relay to take."""
    waiting: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
    agent: list[asyncio.StreamWriter] = []
    ids = iter(range(1, 1 << 62))
    blobs: dict[str, bytes] = {}
    blob_base = f"http://127.0.0.1:{visitor_port}{BLOB_PATH}"

    async def on_agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agent.append(writer)
        while True:
            answer, body = await _read_message(reader)
            waiting.pop(answer["id"]).set_result((answer, body))

    def blob_store(method: str, key: str, body: bytes) -> bytes:
        if method == "PUT":
            blobs[key] = body
            return _http("HTTP/1.1 200 OK", [], b"")
        found = blobs.pop(key, None)
        if method != "GET" or found is None:
            return _http("HTTP/1.1 404 Not Found", [], b"")
        return _http("HTTP/1.1 200 OK", [], found)

    async def answer(first: str, headers: list[list[str]], body: bytes, peer: str) -> bytes:
        method, target, _ = first.split(" ", 2)
        if inline_bytes is not None and target.startswith(BLOB_PATH):
            return blob_store(method, target.removeprefix(BLOB_PATH), body)
        request_id = next(ids)
        waiting[request_id] = answered = asyncio.get_running_loop().create_future()
        head = {"id": request_id, "method": method, "target": target, "headers": headers}
        passed = 0
        if inline_bytes is not None:
            head["answer_url"] = f"{blob_base}a{request_id}"
            if len(body) > inline_bytes:
                blobs[f"r{request_id}"] = body
                head["body_url"], body, passed = f"{blob_base}r{request_id}", b"", 1
        _write_message(agent[0], head, body)
        reply, reply_body = await answered
        status_line = f"HTTP/1.1 {reply['status']} {reply['reason']}"
        if inline_bytes is None:
            return _http(status_line, reply["headers"], reply_body)
        if reply.get("blob"):
            reply_body, passed = blobs.pop(f"a{request_id}"), passed + 1
        return _http(status_line, [*reply["headers"], [BLOBS_HEADER, str(passed)]], reply_body)

    await _listen(agent_port, on_agent, visitor_port, answer)


async def relay_through_blobs(visitor_port: int, agent_port: int) -> None:
    """The bare relay, passing a body larger than a message carries inline (Hatchway's
    ``MAX_INLINE_BODY_BYTES``) by way of its blob store."""
    from hatchway.protocol import MAX_INLINE_BODY_BYTES

    await relay(visitor_port, agent_port, inline_bytes=MAX_INLINE_BODY_BYTES)


async def agent(relay_port: int, origin_port: int) -> None:
    """Serves the relay's requests against the origin, each on a kept connection. A body the
    relay passes by way of its blob store is fetched from there first; an answer's larger than
    a message carries inline goes there when the relay gave a place for it."""
    from hatchway.protocol import MAX_INLINE_BODY_BYTES

    origin, blobs = Kept(origin_port), _BlobClient()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)

    async def serve(request: dict[str, Any], request_body: bytes) -> None:
        if "body_url" in request:
            request_body = await blobs.ask("GET", request["body_url"])
        first = f"{request['method']} {request['target']} HTTP/1.1"
        status_line, headers, body = await origin.ask(first, request["headers"], request_body)
        _, status, reason = status_line.split(" ", 2)
        answer = {"id": request["id"], "status": int(status), "reason": reason}
        answer["headers"] = [h for h in headers if h[0].lower() not in _SKIPPED]
        if "answer_url" in request and len(body) > MAX_INLINE_BODY_BYTES:
            await blobs.ask("PUT", request["answer_url"], body)
            answer["blob"], body = True, b""
        _write_message(writer, answer, body)

    print("floor agent ready", flush=True)
    tasks: set[asyncio.Task[None]] = set()
    while True:
        _start(tasks, serve(*await _read_message(reader)))


FLOOR_TOKEN = "hw_floor-token-0123456789"
FLOOR_CONNECTION = "floor-connection"
FLOOR_TABLE = "hatchway"


def gateway_event(
    first_line: str, headers: list[list[str]], body: bytes, peer: str
) -> dict[str, Any]:
    """The payload 2.0 event the local gateway builds for a visitor's request (see
    ``hatchway_local.gateway``), body as bytes as its steps take it."""
    method, target, version = first_line.split(" ", 2)
    path, _, query = target.partition("?")
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    joined.setdefault("x-forwarded-for", peer)
    joined.setdefault("x-forwarded-proto", "http")
    domain = joined.get("host", "").rsplit(":", 1)[0]
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": unquote(path),
        "rawQueryString": query,
        "headers": joined,
        "requestContext": {
            "domainName": domain,
            "domainPrefix": domain.split(".", 1)[0],
            "http": {
                "method": method,
                "path": unquote(path),
                "protocol": version,
                "sourceIp": peer,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": format(random.getrandbits(64), "016x"),
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": bool(body),
        **({"body": body} if body else {}),
    }


class Handlers:
    """The relay's real Lambda handlers over its in-memory stores, as ``hatchway-local`` runs
    them, for visitors on ``port``: the HTTP handler as the local gateway's steps, and each of
    the agent's messages as the WebSocket API routes it (answers through the template's answer
    integration, the rest through the WebSocket handler); ``post`` carries each message for the
    agent."""

    def __init__(self, port: int, post: Callable[[str], None]) -> None:
        from hatchway import protocol
        from hatchway_local.integrations import MemoryWrites, load_routes
        from hatchway_relay.adapters.memory_blobs import MemoryBlobStore
        from hatchway_relay.adapters.memory_store import MemoryStore
        from hatchway_relay.core import Relay, RelayConfig
        from hatchway_relay.handlers import http as http_handlers
        from hatchway_relay.handlers import websocket as ws_handlers
        from hatchway_relay.ports import SystemClock

        class Poster:
            def post(self, connection_id: str, text: str) -> None:
                post(text)

        clock = SystemClock()
        self.store = MemoryStore(clock)
        base = f"http://127.0.0.1:{port}"
        config = RelayConfig(
            path_url=f"{base}/",
            subdomain_url=f"http://{{name}}.localhost:{port}/",
            domain="localhost",
            custom_hostnames={},
            custom_hostname_url=f"http://{{host}}:{port}/",
            inline_response_bytes=protocol.MAX_INLINE_RESPONSE_BYTES,
        )
        self.blobs = MemoryBlobStore(base, clock)
        relay = Relay(self.store, Poster(), clock, config, blobs=self.blobs)
        relay.add_token(FLOOR_TOKEN)
        self._routes = load_routes(FLOOR_TABLE)
        self._writes = MemoryWrites(self.store, FLOOR_TABLE)
        self._on_message = ws_handlers.make_handler(relay)
        self.visit = http_handlers.make_stepping_handler(relay, body_as_bytes=True)

    def connect(self) -> None:
        """The agent's ``$connect``, with the floor's token."""
        context = {"routeKey": "$connect", "connectionId": FLOOR_CONNECTION}
        headers = {"authorization": f"Bearer {FLOOR_TOKEN}"}
        self._on_message({"requestContext": context, "headers": headers}, None)

    def message(self, text: str) -> None:
        """One of the agent's messages, as the WebSocket API routes it."""
        route = self._routes.select(text)
        context: dict[str, Any]
        if route is None:
            context = {"routeKey": "$default", "connectionId": FLOOR_CONNECTION}
            self._on_message({"requestContext": context, "body": text}, None)
            return
        context = {
            "routeKey": route.route_key,
            "connectionId": FLOOR_CONNECTION,
            "requestTimeEpoch": int(time.time() * 1000),
        }
        route.apply(text, context, self._writes)


def http_result(result: dict[str, Any]) -> bytes:
    """The HTTP handler's result as the bytes a visitor gets."""
    fields = [[k, str(v)] for k, v in result.get("headers", {}).items()]
    fields += [["set-cookie", c] for c in result.get("cookies") or []]
    return _http(f"HTTP/1.1 {result['statusCode']} -", fields, result.get("body") or b"")


def _blob_answer(blobs: Any, method: str, target: str, body: bytes) -> bytes:
    """The local gateway's answer to a request for one of its blob store's signed URLs (see
    ``hatchway_local.blob_urls``), from the relay's ``MemoryBlobStore``."""
    path, _, query = target.partition("?")
    fields = dict(parse_qsl(query, keep_blank_values=True))
    key = unquote(path.removeprefix(BLOB_PATH))
    status, data, content_type = blobs.serve(method, key, fields, body if method == "PUT" else None)
    return _http(f"HTTP/1.1 {status} -", [["Content-Type", content_type]], data)


async def relay_with_handlers(visitor_port: int, agent_port: int) -> None:
    """The bare relay, running the relay's real handlers over its in-memory stores."""
    loop = asyncio.get_running_loop()
    agent: list[asyncio.StreamWriter] = []
    handlers = Handlers(visitor_port, lambda text: _write_frame(agent[0], text.encode()))
    store = handlers.store

    async def on_agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        agent.append(writer)
        handlers.connect()
        while True:
            handlers.message((await _read_frame(reader)).decode())

    async def answer(request_id: str, until: float) -> bytes | None:
        """The answer once stored, or None at ``until`` (one future and one timer per wait,
        as the local gateway has)."""
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        store.watch_response(request_id, wake)
        found = store.wait_response(request_id, 0.0)
        if found is None:
            timer = loop.call_later(max(0.0, until - time.time()), wake)
            await ready
            timer.cancel()
            found = store.wait_response(request_id, 0.0)
        return found

    async def run_visit(first: str, headers: list[list[str]], body: bytes, peer: str) -> bytes:
        method, target, _ = first.split(" ", 2)
        if target.startswith(BLOB_PATH):
            return _blob_answer(handlers.blobs, method, target, body)
        steps = handlers.visit(gateway_event(first, headers, body, peer), None)
        found: bytes | None = None
        try:
            while True:
                wait = steps.send(found)
                found = await answer(wait.request_id, wait.until)
        except StopIteration as done:
            return http_result(done.value)

    await _listen(agent_port, on_agent, visitor_port, run_visit)


def hello() -> str:
    """The agent's first message: it serves the tunnel ``bench``."""
    from hatchway import protocol
    from hatchway.protocol import codec

    return codec.encode(protocol.Hello((protocol.TunnelSpec("bench"),), instance="floor"))


async def pings(send: Callable[[str], Awaitable[None]], every: float | None = None) -> None:
    """Pings, as a real agent sends them (every ``HEARTBEAT_SECONDS`` by default): the relay
    drops a tunnel's claim that no ping renewed for ``CLAIM_LEASE_SECONDS``, and a floor run
    lasts longer than that."""
    from hatchway import protocol
    from hatchway.protocol import codec

    while True:
        await asyncio.sleep(protocol.HEARTBEAT_SECONDS if every is None else every)
        await send(codec.encode(protocol.Ping(time.time())))


def _target(request: Any) -> tuple[str, list[list[str]]]:
    """The first line and the headers the agent sends the origin for a ``protocol.Request``."""
    target = request.path + (f"?{request.query}" if request.query else "")
    return f"{request.method} {target} HTTP/1.1", [[n, v] for n, v in request.headers]


def codec_answer(
    request_id: str, status_line: str, headers: list[list[str]], body: bytes, uploaded: bool = False
) -> str:
    """The agent's answer message for the origin's response; ``uploaded``: its body was PUT to
    the request's upload URL, and the message says how large it is instead of carrying it."""
    from hatchway import protocol
    from hatchway.protocol import codec
    from hatchway.serving.bodies import looks_compressible

    kept = tuple((n, v) for n, v in headers if n.lower() not in _SKIPPED)
    kept += (("content-length", str(len(body))),)
    status = int(status_line.split(" ", 2)[1])
    if uploaded:
        return codec.encode(protocol.Response(request_id, status, kept, uploaded=len(body)))
    response = protocol.Response(request_id, status, kept, body)
    return codec.encode(response, looks_compressible(body))


class _BlobClient:
    """The agent's side of the relay's blob store: GETs and PUTs to its signed URLs, on kept
    connections."""

    def __init__(self) -> None:
        self._kept: dict[int, Kept] = {}

    async def ask(self, method: str, url: str, body: bytes = b"") -> bytes:
        address = urlsplit(url)
        assert address.port is not None, url
        kept = self._kept.setdefault(address.port, Kept(address.port))
        target = address.path + (f"?{address.query}" if address.query else "")
        host = [["Host", address.netloc]]
        status_line, _, found = await kept.ask(f"{method} {target} HTTP/1.1", host, body)
        if status_line.split(" ", 2)[1] != "200":
            raise RuntimeError(f"the relay's blob store answered {status_line} to {method} {url}")
        return found


async def _codec_serve(request: Any, origin: Kept, blobs: _BlobClient) -> str:
    """The answer message to a ``protocol.Request``, from the origin: its body fetched first
    from the blob store when the request points there, and the answer's put there when a
    message cannot carry it and zlib cannot shrink it (as the real agent judges)."""
    from hatchway import protocol
    from hatchway.serving.bodies import looks_compressible

    body = request.body
    if request.body_url is not None:
        body = await blobs.ask("GET", request.body_url)
    status_line, headers, body = await origin.ask(*_target(request), body)
    upload_url = request.upload_url
    too_large = len(body) > protocol.MAX_INLINE_RESPONSE_BYTES
    if upload_url is not None and too_large and not looks_compressible(body):
        await blobs.ask("PUT", upload_url, body)
        return codec_answer(request.id, status_line, headers, body, uploaded=True)
    return codec_answer(request.id, status_line, headers, body)


async def agent_with_codec(relay_port: int, origin_port: int) -> None:
    """The bare agent, reading and writing the relay's real protocol messages."""
    from hatchway import protocol
    from hatchway.protocol import codec

    origin, blobs = Kept(origin_port), _BlobClient()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
    _write_frame(writer, hello().encode())

    async def serve(request: protocol.Request) -> None:
        _write_frame(writer, (await _codec_serve(request, origin, blobs)).encode())

    async def send(text: str) -> None:
        _write_frame(writer, text.encode())

    print("floor agent ready", flush=True)
    tasks: set[asyncio.Task[None]] = set()
    _start(tasks, pings(send))
    while True:
        message = codec.decode(await _read_frame(reader))
        if isinstance(message, protocol.Request):
            _start(tasks, serve(message))


async def agent_on_one_loop(gateway_port: int, origin_port: int) -> None:
    """The agent-on-one-loop lever's ceiling: an agent of one event loop that speaks the real
    protocol to the real ``hatchway-local`` over a real WebSocket (aiohttp's client), and asks
    the origin and the blob store as the "with handlers" agent does. It does only that: no
    display, inspector, checks beyond the codec's, limits or reconnects, so a real agent on one
    loop could not be faster."""
    import aiohttp

    from hatchway import protocol
    from hatchway.protocol import codec

    origin, blobs = Kept(origin_port), _BlobClient()
    tasks: set[asyncio.Task[None]] = set()
    url = f"http://127.0.0.1:{gateway_port}/connect"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers={"Authorization": f"Bearer {run.TOKEN}"}) as ws,
    ):

        async def serve(request: protocol.Request) -> None:
            await ws.send_str(await _codec_serve(request, origin, blobs))

        await ws.send_str(hello())
        _start(tasks, pings(ws.send_str))
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = codec.decode(frame.data)
            if isinstance(message, protocol.Request):
                _start(tasks, serve(message))
            elif isinstance(message, protocol.Welcome):
                print("floor agent ready", flush=True)
    raise SystemExit("the gateway closed the agent's connection")


ROLES = {
    "relay": relay,
    "relay-blobs": relay_through_blobs,
    "agent": agent,
    "relay-handlers": relay_with_handlers,
    "agent-codec": agent_with_codec,
    "agent-loop": agent_on_one_loop,
}


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop where it is installed (``hatchway-local`` runs on it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=list(ROLES))
    parser.add_argument("ports", nargs="+", type=int)
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(ROLES[args.role](*args.ports))


if __name__ == "__main__":
    main()
