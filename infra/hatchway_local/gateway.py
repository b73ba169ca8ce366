"""An API Gateway emulator on aiohttp: the agents' WebSocket API, the HTTP API (payload 2.0)
and the visitor-socket WebSocket API on one port, invoking the relay's real Lambda handlers; the
agents' ``@connections`` management API is served on a loopback listener of its own
(``management``), never to visitors. Each WebSocket API is a ``socket_api.SocketApi``; the
gateway plays the front that sends a visitor's upgrade to the visitor-socket API (CloudFront's
job on AWS).

It builds the event shapes API Gateway sends, enforces the platform's limits, and runs every
handler invocation with a Lambda-like context (``lambda_context``).

Where the handlers block (a DynamoDB store, the HTTP poster), invocations run in worker threads:
an HTTP one blocks until the agent's response arrives through WebSocket invocations, and
WebSocket ones have threads of their own (sharing one bounded pool would deadlock as soon as
visitors filled it). Over the in-memory store nothing blocks, so invocations run on the event
loop itself (``websocket_on_loop``, ``set_handlers(http_steps=...)``): a WebSocket invocation
runs to its end, its posts going out when it returns; an HTTP invocation runs as the relay's
steps (``visits.VisitSteps``), its post sent and its wait for the answer awaited on the loop.
That takes every thread hand-off off a visitor's path, and the GIL contention of a thread per
visitor with it, while the same handler code runs. Whether an invocation may run at all follows
Lambda's rules either way (``concurrency``): one account pool, reservations, throttling, and
an execution that goes on after the visitor's timeout. On its bare hosts it also answers a
``MemoryBlobStore``'s signed URLs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from aiohttp import web

from hatchway.protocol import b64
from hatchway_local.access_log import AccessLog, VisitorOutcome, agent_context, visitor_context
from hatchway_local.blob_urls import serve_blob
from hatchway_local.concurrency import (
    HTTP_FUNCTION,
    VISITOR_SOCKET_FUNCTION,
    WEBSOCKET_FUNCTION,
    ConcurrencyPool,
    LambdaConcurrency,
    Throttled,
)
from hatchway_local.integrations import (
    AnswerWrites,
    IntegrationFailed,
    ServiceRoute,
    WebSocketRoutes,
)
from hatchway_local.management import management_app, new_key
from hatchway_local.platform import (
    BODY_FIELD_BYTES,
    HTTP_INTEGRATION_ERROR,
    INTEGRATION_FAILED,
    INTEGRATION_THREADS,
    INTEGRATION_THROTTLED,
    INTEGRATION_TIMED_OUT,
    LAMBDA_MAX_EVENT_BYTES,
    LINGERING_CLOSE_SECONDS,
    MAX_REQUEST_BODY_BYTES,
    WEBSOCKET_MAX_MESSAGE_BYTES,
    GatewayLimits,
    base64_size,
    event_bound,
    json_error,
    lambda_context,
    lambda_path,
    request_id,
    request_time,
    with_lambda_head,
)
from hatchway_local.socket_api import SocketApi, SocketConnection, front_headers, integration_error
from hatchway_local.steps import Execution
from hatchway_local.streaming import ChunkSource, write_streamed
from hatchway_relay.adapters.memory_blobs import BLOB_PATH, MemoryBlobStore
from hatchway_relay.handlers.http import SteppingHandler
from hatchway_relay.sockets import FRONT_HEADERS
from hatchway_relay.visits import AwaitAnswer

log = logging.getLogger("hatchway.local")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
"""A Lambda handler: the event and the context in, the result out."""


class AnswerWatch(Protocol):
    """A store whose answers a coroutine can wait for (``MemoryStore``)."""

    def watch_response(self, request_id: str, wake: Callable[[], None]) -> None: ...

    def wait_response(self, request_id: str, until: float, hint: float = 0.0) -> bytes | None: ...


async def _flush(sends: list[Coroutine[Any, Any, None]]) -> None:
    """Write the posts an invocation made on the loop. One that fails is an agent gone
    meanwhile, whose ``$disconnect`` cleans up; the rest are still written."""
    try:
        for send in sends:
            try:
                await send
            except Exception as exc:
                log.debug("a post after an invocation failed: %s", exc)
    finally:
        for send in sends:
            send.close()  # not awaited when cancelled: no "never awaited" warning


def _ignore_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a background post to a gone agent is not an error


class _BodyTooLarge(Exception):
    """A visitor's body passed ``MAX_REQUEST_BODY_BYTES`` while it was being read."""


class _GatewayRunner(web.ServerRunner):
    """Closes the gateway's WebSocket connections where an application's runner would run
    its shutdown hooks: once the listener stops accepting, before open requests are awaited."""

    def __init__(self, gateway: Gateway, server: web.Server) -> None:
        super().__init__(server)
        self.gateway = gateway

    async def shutdown(self) -> None:
        await self.gateway.close_all()


class Gateway:
    """The emulator. Handlers are attached after construction (they need the poster, which
    needs the gateway)."""

    def __init__(
        self,
        bare_hosts: set[str],
        limits: GatewayLimits | None = None,
        concurrency: LambdaConcurrency | None = None,
        api_id: str = "local",
        blobs: MemoryBlobStore | None = None,
        websocket_on_loop: bool = False,
        access_log: AccessLog | None = None,
    ) -> None:
        self.bare_hosts = {h.lower() for h in bare_hosts}
        self.access_log = access_log
        """Where each visitor request's and agent event's line goes, as API Gateway's access
        logs (None: no access log)."""
        self.limits = limits or GatewayLimits()
        self.api_id = api_id
        self.blobs = blobs
        self.ws_handler: Handler | None = None
        self.http_handler: Handler | None = None
        self.http_steps: SteppingHandler | None = None
        self.answers: AnswerWatch | None = None
        self.chunks: ChunkSource | None = None
        """Where a streamed reply's body is read from (the relay's store)."""
        self.routes: WebSocketRoutes | None = None
        """The WebSocket API's service routes (template.yaml): messages they take are stored
        by their integration, with no Lambda invocation."""
        self.answer_writes: AnswerWrites | None = None
        self.concurrency = ConcurrencyPool(concurrency or LambdaConcurrency())
        self.websocket_on_loop = websocket_on_loop
        """Run WebSocket invocations on the event loop: only for handlers that never block
        (their store in memory, their posts through ``LocalPoster``)."""
        self.loop_sends: list[Coroutine[Any, Any, None]] | None = None
        """Posts made by the WebSocket invocation running on the loop right now; sent once it
        returns, before it counts as finished (as a Lambda's synchronous posts would be)."""
        self._loose_sends: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        """HTTP executions going on after their visitor stopped waiting."""
        # As many threads as executions may run, so an admitted invocation never queues.
        capacity = self.concurrency.config.capacity
        self.http_pool = ThreadPoolExecutor(
            max(1, capacity(HTTP_FUNCTION)), thread_name_prefix="gw-http"
        )
        self.ws_pool = ThreadPoolExecutor(
            max(1, capacity(WEBSOCKET_FUNCTION)), thread_name_prefix="gw-ws"
        )
        # API Gateway's own calls to AWS services: no Lambda, so no share of the account pool.
        self.integration_pool = ThreadPoolExecutor(
            INTEGRATION_THREADS, thread_name_prefix="gw-integration"
        )
        self.socket_handler: Handler | None = None
        """The visitor-socket function (``set_socket_handler``); without it a visitor's
        upgrade goes to the HTTP API, whose relay refuses it."""
        # Never on the loop: its $connect waits for the agent's answer, which arrives through
        # the agents' API on this very loop.
        self.socket_pool = ThreadPoolExecutor(
            max(1, capacity(VISITOR_SOCKET_FUNCTION)), thread_name_prefix="gw-socket"
        )
        self.agents = SocketApi(
            WEBSOCKET_FUNCTION,
            self._invoke,
            self.limits,
            api_id,
            binary=False,
            one_at_a_time=websocket_on_loop,
            log_line=self._log_agent,
        )
        """The agents' WebSocket API (``/connect`` on a bare host)."""
        self.sockets = SocketApi(
            VISITOR_SOCKET_FUNCTION,
            self._invoke,
            self.limits,
            api_id,
            binary=True,
            # Keeps a socket's messages in order on one box; API Gateway makes no such promise
            # (its invocations for one connection may run at once).
            one_at_a_time=True,
            log_line=self._log_socket,
        )
        """The visitor-socket API: every other upgrade, once ``set_socket_handler`` is done."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        """The thread id of the loop's thread (set with ``loop``)."""
        self.management_key = new_key()
        """The secret first path segment of the management API (``management``)."""
        self.management_url: str | None = None
        """Where the management API listens, key included, once served (``serve_gateway``)."""
        self.management_app = management_app(self, self.management_key, WEBSOCKET_MAX_MESSAGE_BYTES)

    def runner(self, loop: asyncio.AbstractEventLoop) -> web.BaseRunner:
        """The public listener's runner: aiohttp's low-level server, every request straight
        to ``dispatch`` (no router or application between: every path is the gateway's).
        aiohttp closes a connection whose request has not arrived when its keep-alive timer
        fires (armed when the connection opens and after each response, not reset by partial
        data), which makes that timer the headers timeout."""
        server = web.Server(
            self.dispatch,
            loop=loop,
            access_log=None,
            keepalive_timeout=self.limits.headers_timeout,
            lingering_time=LINGERING_CLOSE_SECONDS,
        )
        return _GatewayRunner(self, server)

    def set_handlers(
        self,
        ws_handler: Handler,
        http_handler: Handler,
        http_steps: SteppingHandler | None = None,
        answers: AnswerWatch | None = None,
    ) -> None:
        """Attach the functions. With ``http_steps`` (the HTTP handler as steps) and the store
        it waits on (``answers``), HTTP invocations run on the loop rather than in threads:
        only for handlers that never block but to wait for an answer."""
        self.ws_handler = ws_handler
        self.http_handler = http_handler
        self.http_steps = http_steps if answers is not None else None
        self.answers = answers

    def set_integrations(self, routes: WebSocketRoutes, writes: AnswerWrites) -> None:
        """Attach the WebSocket API's service routes and the store their integration writes
        to (``integrations``). Without them every message goes to the WebSocket function."""
        self.routes = routes
        self.answer_writes = writes
        self.agents.services = self._service

    def set_socket_handler(self, handler: Handler) -> None:
        """Attach the visitor-socket function: from now on a visitor's upgrade (any but an
        agent's ``/connect`` on a bare host) goes to the visitor-socket API."""
        self.socket_handler = handler
        self.concurrency.deploy(VISITOR_SOCKET_FUNCTION)

    @property
    def connections(self) -> dict[str, SocketConnection]:
        """The agents' live connections (what the management API acts on)."""
        return self.agents.connections

    @property
    def peak_pending_messages(self) -> int:
        """The most ``$default`` invocations any agent's connection ever had pending at once."""
        return self.agents.peak_pending_messages

    # --- Dispatch -----------------------------------------------------------------------------

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        host = request.headers.get("Host", "").lower()
        bare = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if bare in self.bare_hosts or host in self.bare_hosts:
            path = request.raw_path.split("?", 1)[0]
            if path == "/connect" and upgrade:
                return await self.agents.serve(request)
            if path.startswith(BLOB_PATH) and self.blobs is not None:
                return await serve_blob(request, self.blobs, path[len(BLOB_PATH) :])
        if upgrade and self.socket_handler is not None and "Sec-WebSocket-Key" in request.headers:
            # The front's job on AWS (CloudFront): a visitor's WebSocket goes to the
            # visitor-socket API, with the host and target it was sent to.
            return await self.sockets.serve(request, front_headers(request))
        return await self.http(request)

    # --- Invocations --------------------------------------------------------------------------

    async def _invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any] | None:
        """Run a handler like Lambda would: ``Throttled`` at once if the function has no free
        execution, None if the handler raised (logged)."""
        handler, pool, timeout = {
            WEBSOCKET_FUNCTION: (
                self.ws_handler,
                self.ws_pool,
                self.limits.websocket_function_timeout,
            ),
            HTTP_FUNCTION: (self.http_handler, self.http_pool, self.limits.http_function_timeout),
            VISITOR_SOCKET_FUNCTION: (
                self.socket_handler,
                self.socket_pool,
                self.limits.websocket_function_timeout,
            ),
        }[function]
        assert handler is not None, "handlers not attached"
        self.concurrency.acquire(function)
        if function == WEBSOCKET_FUNCTION and self.websocket_on_loop:
            return await self._invoke_on_loop(handler, event, timeout)

        def execute() -> dict[str, Any]:
            try:
                # Counted from when the execution starts, as Lambda's is: whatever the request
                # spent before (reading, waiting) is the event's timeEpoch's business.
                return handler(event, lambda_context(function, timeout))
            finally:
                self.concurrency.release(function)

        def never_started(future: Future[dict[str, Any]]) -> None:
            # An execution cancelled before it began (shutdown) still gives its slot back.
            if future.cancelled():
                self.concurrency.release(function)

        done: Future[dict[str, Any]] = pool.submit(execute)
        done.add_done_callback(never_started)
        try:
            # Shielded: a visitor's timeout does not stop the execution, as on Lambda, and its
            # slot stays taken until the handler returns.
            return await asyncio.shield(asyncio.wrap_future(done))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for %s", event.get("requestContext", {}).get("routeKey"))
            return None

    async def _invoke_on_loop(
        self, handler: Handler, event: dict[str, Any], timeout: float
    ) -> dict[str, Any] | None:
        """An admitted WebSocket invocation run on the loop; its execution (already counted)
        ends once the handler has returned and its posts have been written."""
        sends: list[Coroutine[Any, Any, None]] = []
        result: dict[str, Any] | None = None
        try:
            self.loop_sends = sends
            try:
                result = handler(event, lambda_context(WEBSOCKET_FUNCTION, timeout))
            except Exception:
                route = event.get("requestContext", {}).get("routeKey")
                log.exception("handler failed for %s", route)
            finally:
                self.loop_sends = None
            await _flush(sends)
            return result
        finally:
            self.concurrency.release(WEBSOCKET_FUNCTION)

    async def _invoke_steps(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """An HTTP invocation run as steps in the visitor's own task (no task of its own, no
        hand-off: the loop's cheapest path). ``TimeoutError`` once the integration timeout
        passes without a result; from then on (or if the visitor's task is cancelled) the
        execution goes on in the background and keeps its slot until the handler returns, as
        on Lambda."""
        assert self.http_steps is not None, "handlers not attached"
        self.concurrency.acquire(HTTP_FUNCTION)
        give_up = time.time() + self.limits.integration_timeout
        context = lambda_context(HTTP_FUNCTION, self.limits.http_function_timeout)
        execution = Execution(self, self.http_steps(event, context))
        try:
            result = await execution.run(give_up)
        except (TimeoutError, asyncio.CancelledError):
            task = asyncio.ensure_future(execution.run(None))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise
        if time.time() > give_up:  # too late: API Gateway has answered the visitor already
            raise TimeoutError
        return result

    async def answer(self, wait: AwaitAnswer, give_up: float | None = None) -> bytes | None:
        """What a blocking ``wait_response`` would give, awaited: the answer, or None by
        ``wait.until`` or once the agent's connection went. ``TimeoutError`` if ``give_up``
        comes first (the wait itself is then still to be done)."""
        assert self.answers is not None
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()
        """Its result: whether it was the timer that ended the wait."""

        def wake(timed_out: bool = False) -> None:
            if not ready.done():
                ready.set_result(timed_out)

        def wake_from_anywhere() -> None:
            if self.in_loop_thread():
                wake()
            else:
                loop.call_soon_threadsafe(wake)

        # Watched before the first look, so that nothing landing in between is missed. One
        # future and one timer: the cheapest wait asyncio has, on every visitor's path.
        self.answers.watch_response(wait.request_id, wake_from_anywhere)
        answer = self.answers.wait_response(wait.request_id, 0.0)  # a look, never a wait
        now = time.time()
        if answer is not None or wait.until <= now:
            return answer
        until = wait.until if give_up is None else min(wait.until, give_up)
        timer = loop.call_later(until - now, wake, True)
        try:
            timed_out = await ready
        finally:
            timer.cancel()
        answer = self.answers.wait_response(wait.request_id, 0.0)
        if answer is None and timed_out and until < wait.until:
            raise TimeoutError
        return answer

    def in_loop_thread(self) -> bool:
        return self.loop_thread == threading.get_ident()

    def post_on_loop(self, send: Coroutine[Any, Any, None]) -> None:
        """A post made on the loop's own thread, which cannot wait for it: sent when the
        invocation making it returns (else at once, in the background)."""
        if self.loop_sends is not None:
            self.loop_sends.append(send)
            return
        task = asyncio.ensure_future(send)
        self._loose_sends.add(task)
        task.add_done_callback(self._loose_sends.discard)
        task.add_done_callback(_ignore_failure)

    def _service(
        self, ws: web.WebSocketResponse, event: dict[str, Any]
    ) -> Coroutine[Any, Any, None] | None:
        """The agents' API's service routes: a message one of them takes is stored by its
        integration, with no Lambda invocation."""
        service = self.routes.select(event["body"]) if self.routes is not None else None
        return None if service is None else self._integrate(ws, service, event)

    async def _integrate(
        self, ws: web.WebSocketResponse, route: ServiceRoute, event: dict[str, Any]
    ) -> None:
        """One message on a service route: its mapping template rendered and the call made,
        as API Gateway makes it (no Lambda, no execution of the account's pool). A failed call
        is told to the client like a failed invocation."""
        assert self.answer_writes is not None, "integrations not attached"
        context = event["requestContext"]
        started = time.time()
        try:
            if self.websocket_on_loop:  # the store is in memory: nothing blocks
                route.apply(event["body"], context, self.answer_writes)
            else:
                await asyncio.get_running_loop().run_in_executor(
                    self.integration_pool,
                    route.apply,
                    event["body"],
                    context,
                    self.answer_writes,
                )
        except IntegrationFailed as exc:
            log.warning("integration failed for route %s: %s", route.route_key, exc)
            self._log_agent(event, route.route_key, 500, started, str(exc))
            await integration_error(ws, event)
            return
        self._log_agent(event, route.route_key, 200, started, None)

    def _log_agent(
        self, event: dict[str, Any], route: str, status: int, started: float, error: str | None
    ) -> None:
        """The WebSocket API's access-log line for one connect, message or disconnect."""
        if self.access_log is not None:
            self.access_log.agent(agent_context(event, route, status, started, time.time(), error))

    def _log_socket(
        self, event: dict[str, Any], route: str, status: int, started: float, error: str | None
    ) -> None:
        """The visitor-socket API's access-log line for one connect, message or disconnect."""
        if self.access_log is not None:
            self.access_log.visitor_socket(
                agent_context(event, route, status, started, time.time(), error)
            )

    async def send(self, connection_id: str, data: str) -> None:
        """Send one text message to an agent; KeyError if the connection is unknown or
        closed."""
        await self.agents.send(connection_id, data)

    async def close_connection(self, connection_id: str) -> bool:
        return await self.agents.close_connection(connection_id)

    async def close_all(self) -> None:
        await self.agents.close_all("Server shutting down")
        await self.sockets.close_all("Server shutting down")

    # --- HTTP API -----------------------------------------------------------------------------

    def _http_event(self, request: web.BaseRequest, body: bytes, received: float) -> dict[str, Any]:
        """The payload 2.0 event; ``received`` is when the request arrived, before its body was
        read or anything waited (``timeEpoch``: the relay's deadline counts from it).

        Header values are aiohttp's: bytes that are not UTF-8 decoded with ``surrogateescape``,
        so that encoding them the same way gives back exactly the bytes the visitor sent."""
        raw_path, _, raw_query = request.raw_path.partition("?")
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in request.headers.items():
            key = name.lower()
            if key == "cookie":
                cookies.extend(c.strip() for c in value.split(";") if c.strip())
            elif key in FRONT_HEADERS:  # the front's (CloudFront on AWS), never a visitor's
                continue
            elif key in headers:
                headers[key] = f"{headers[key]},{value}"
            else:
                headers[key] = value
        headers.setdefault("x-forwarded-for", request.remote or "")
        headers.setdefault("x-forwarded-proto", request.scheme)
        domain = request.headers.get("Host", "").rsplit(":", 1)[0]
        now = received
        query: dict[str, str] = {}
        for key, value in request.query.items() if raw_query else ():
            query[key] = f"{query[key]},{value}" if key in query else value
        path = lambda_path(raw_path)
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": self.api_id,
                "domainName": domain,
                "domainPrefix": domain.split(".", 1)[0],
                "http": {
                    "method": request.method,
                    "path": path,
                    "protocol": f"HTTP/{request.version.major}.{request.version.minor}",
                    "sourceIp": request.remote or "",
                    "userAgent": request.headers.get("User-Agent", ""),
                },
                "requestId": request_id(),
                "routeKey": "$default",
                "stage": "$default",
                "time": request_time(now),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": bool(body),
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if body:
            event["body"] = b64.encode(body)
        return event

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The body, within ``MAX_REQUEST_BODY_BYTES`` (else ``_BodyTooLarge``) and the body
        timeouts (else ``TimeoutError``)."""
        if not request.body_exists:
            return b""
        chunks: list[bytes] = []
        total = 0
        loop = asyncio.get_running_loop()
        # Timeout contexts rather than wait_for, which makes a task of every read.
        async with asyncio.timeout(self.limits.body_timeout):
            while True:
                async with asyncio.timeout_at(loop.time() + self.limits.body_idle_timeout):
                    chunk = await request.content.readany()
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_REQUEST_BODY_BYTES:
                    raise _BodyTooLarge
                chunks.append(chunk)
        return b"".join(chunks)

    async def http(self, request: web.BaseRequest) -> web.StreamResponse:
        """One visitor request, answered and logged as the HTTP API logs it."""
        outcome = VisitorOutcome(request_id(), time.time())
        response = await self._http(request, outcome.received, outcome)
        if self.access_log is not None:
            self.access_log.visitor(visitor_context(request, response, outcome))
        return response

    async def _http(
        self, request: web.BaseRequest, received: float, outcome: VisitorOutcome
    ) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_REQUEST_BODY_BYTES:
            return json_error(413, "Request Entity Too Large", close=True)
        try:
            body = await self._read_body(request)
        except _BodyTooLarge:
            return json_error(413, "Request Entity Too Large", close=True)
        except TimeoutError:
            return json_error(408, "Request Timeout", close=True)
        event = self._http_event(request, b"", received)
        event["requestContext"]["requestId"] = outcome.request_id
        # Sized without encoding the body into JSON: base64 text is written as it is. The rest
        # of the event is encoded to measure it only when a bound from its length could be over.
        body_size = base64_size(len(body)) + BODY_FIELD_BYTES if body else 0
        if (
            body_size + event_bound(request) > LAMBDA_MAX_EVENT_BYTES
            and len(json.dumps(event)) + body_size > LAMBDA_MAX_EVENT_BYTES
        ):
            return json_error(413, "Request Entity Too Large")
        if body:
            # Steps take the bytes as they are (no JSON between them and the gateway).
            steps = self.http_steps is not None
            event["body"] = body if steps else b64.encode(body)
            event["isBase64Encoded"] = True
        try:
            if self.http_steps is not None:
                result = await self._invoke_steps(event)
            else:
                async with asyncio.timeout(self.limits.integration_timeout):
                    result = await self._invoke(HTTP_FUNCTION, event)
        except TimeoutError:
            outcome.integration_error = INTEGRATION_TIMED_OUT
            return json_error(503, "Service Unavailable")
        except Throttled:
            # Lambda's 429 never reaches the visitor: HTTP API answers a plain 500.
            outcome.integration_error = INTEGRATION_THROTTLED
            return json_error(500, HTTP_INTEGRATION_ERROR)
        if not isinstance(result, dict) or "statusCode" not in result:
            outcome.integration_error = INTEGRATION_FAILED
            return json_error(500, HTTP_INTEGRATION_ERROR)
        body_steps = result.get("bodySteps")
        if body_steps is not None and self.chunks is not None:
            head = with_lambda_head(web.StreamResponse(), request, result)
            return await write_streamed(request, head, body_steps, self.chunks)
        return self._response(request, result)

    def _response(self, request: web.BaseRequest, result: dict[str, Any]) -> web.Response:
        raw = result.get("body") or ""
        if isinstance(raw, bytes):  # a result from steps (see make_stepping_handler)
            body = raw
        else:
            body = b64.decode_lenient(raw) if result.get("isBase64Encoded") else str(raw).encode()
        response = with_lambda_head(web.Response(), request, result)
        if response.status not in (204, 304):
            response.body = body  # aiohttp sends no body for HEAD itself
        return response
