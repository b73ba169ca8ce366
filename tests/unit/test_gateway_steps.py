"""HTTP invocations run on the gateway's loop as steps (the store in memory), and the watched
memory store's watches that wake them: posts go out before the wait, an answer, a gone connection or
the wait's end resumes the visit, no thread is parked per visitor, and Lambda's rules (an
execution outliving the visitor's timeout) still hold."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import websocket

from hatchway.protocol import b64
from hatchway_local.concurrency import HTTP_FUNCTION
from hatchway_local.gateway import Gateway
from hatchway_local.local_poster import LocalPoster
from hatchway_local.platform import GatewayLimits, base64_size
from hatchway_local.server import bind, serve_gateway
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.answer_items import ANSWER
from hatchway_relay.handlers.http import HandlerSteps
from hatchway_relay.visits import AwaitAnswer
from support.visitor import visit

Event = dict[str, Any]

WAIT_SECONDS = 10.0
"""Bound on every wait for something the gateway does on its own."""

CONNECTION = "agent-connection"
"""The connection id the stub relay says it posted each request to."""


def answer(store: MemoryStore, request_id: str, connection_id: str, stored: bytes) -> None:
    """What the answer integration's write does to the item of ``request_id``'s answer."""
    store.update_answer(
        request_id, connection_id, lambda item: {**item, ANSWER: {"B": b64.encode(stored)}}
    )


class StubRelay:
    """A relay reduced to its waiting: each visitor request (``?id&wait``) is posted to the
    agent's connection and answered with whatever the wait finds."""

    def __init__(self, gw: Gateway, store: MemoryStore) -> None:
        self.gw = gw
        self.store = store
        self.poster = LocalPoster(gw)
        self.agent_connection = ""
        self.agent_connected = threading.Event()
        self.bodies: list[object] = []

    def ws(self, event: Event, context: object) -> Event:
        route = event["requestContext"]["routeKey"]
        if route == "$connect":
            self.agent_connection = event["requestContext"]["connectionId"]
            self.agent_connected.set()
        elif route == "$default":  # the agent's answer: "<request id> <text>"
            request_id, _, text = event["body"].partition(" ")
            answer(self.store, request_id, CONNECTION, text.encode())
        return {"statusCode": 200}

    def http(self, event: Event, context: object) -> Event:
        raise AssertionError("HTTP invocations must run as steps")

    def steps(self, event: Event, context: object) -> HandlerSteps:
        query = dict(p.split("=") for p in event["rawQueryString"].split("&"))
        request_id = query["id"]
        if "raise" in query:
            raise RuntimeError("a bug in the relay")
        if "reverse" in query:  # the body as the steps get it, reversed, as bytes
            self.bodies.append(event.get("body"))
            return {"statusCode": 200, "body": event["body"][::-1], "isBase64Encoded": True}
        self.store.expect_response(request_id, CONNECTION, time.time() + 60)
        try:
            if self.agent_connection:
                self.poster.post(self.agent_connection, request_id)
            answer = yield AwaitAnswer(request_id, time.time() + float(query["wait"]))
        finally:
            self.store.forget_response(request_id)
        body = "no answer" if answer is None else answer.decode()
        return {"statusCode": 200 if answer else 504, "body": body}


@contextmanager
def stepping_gateway(**limits: Any) -> Iterator[tuple[Gateway, StubRelay, int]]:
    store = MemoryStore()
    gw = Gateway({"127.0.0.1", "localhost"}, GatewayLimits(**limits), websocket_on_loop=True)
    relay = StubRelay(gw, store)
    gw.set_handlers(relay.ws, relay.http, relay.steps, answers=store)
    sock = bind("127.0.0.1", 0)
    with serve_gateway(gw, sock):
        yield gw, relay, sock.getsockname()[1]


def echoing_agent(port: int, relay: StubRelay, answers: int) -> threading.Thread:
    """An agent that answers each request it is posted with "<id> answer to <id>"."""
    agent = websocket.create_connection(f"ws://127.0.0.1:{port}/connect", timeout=WAIT_SECONDS)
    assert relay.agent_connected.wait(WAIT_SECONDS)

    def answer() -> None:
        try:
            for _ in range(answers):
                request_id = agent.recv()
                agent.send(f"{request_id} answer to {request_id}")
        finally:
            agent.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def test_visits_post_first_then_wake_on_their_answers_without_a_thread_each() -> None:
    visitors = 24
    with stepping_gateway() as (_, relay, port):
        agent = echoing_agent(port, relay, visitors)
        with ThreadPoolExecutor(visitors) as pool:
            futures = [
                pool.submit(visit, port, "GET", f"/?id=r{i}&wait=30", "app.localhost")
                for i in range(visitors)
            ]
            answers = [f.result(WAIT_SECONDS) for f in futures]
        agent.join(WAIT_SECONDS)
        threads = [t.name for t in threading.enumerate()]
    assert [a.text for a in answers] == [f"answer to r{i}" for i in range(visitors)]
    assert not [name for name in threads if name.startswith("gw-http")]


def test_a_wait_with_no_answer_ends_at_its_time() -> None:
    with stepping_gateway() as (_, _, port):
        started = time.monotonic()
        answer = visit(port, "GET", "/?id=lonely&wait=0.3", "app.localhost")
        elapsed = time.monotonic() - started
    assert (answer.status, answer.text) == (504, "no answer")
    assert 0.3 <= elapsed < WAIT_SECONDS


def test_a_gone_connection_wakes_its_waiter_from_another_thread() -> None:
    with stepping_gateway() as (gw, relay, port), ThreadPoolExecutor(1) as pool:
        future = pool.submit(visit, port, "GET", "/?id=orphan&wait=60", "app.localhost")
        wait_until(lambda: gw.concurrency.running(HTTP_FUNCTION) == 1)
        relay.store.delete_connection(CONNECTION)
        answer = future.result(WAIT_SECONDS)
    assert (answer.status, answer.text) == (504, "no answer")


def test_a_handler_that_raises_is_a_500_and_gives_its_slot_back() -> None:
    with stepping_gateway() as (gw, _, port):
        answer = visit(port, "GET", "/?id=bug&wait=1&raise=1", "app.localhost")
        assert answer.status == 500 and "Internal Server Error" in answer.text
        assert gw.concurrency.running(HTTP_FUNCTION) == 0


def test_an_execution_outlives_its_visitors_timeout_and_keeps_its_slot() -> None:
    with stepping_gateway(integration_timeout=0.2) as (gw, _, port):
        assert visit(port, "GET", "/?id=slow&wait=1.0", "app.localhost").status == 503
        assert gw.concurrency.running(HTTP_FUNCTION) == 1  # still waiting, as on Lambda
        wait_until(lambda: gw.concurrency.running(HTTP_FUNCTION) == 0)


# --- The watched store on its own -------------------------------------------------------------


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    for request_id, connection_id in (("a", "c1"), ("b", "c1"), ("c", "c2")):
        store.expect_response(request_id, connection_id, time.time() + 60)
    return store


def watcher(store: MemoryStore, request_id: str) -> threading.Event:
    woken = threading.Event()
    store.watch_response(request_id, woken.set)
    return woken


def test_an_answer_wakes_its_watcher_only(store: MemoryStore) -> None:
    a, b = watcher(store, "a"), watcher(store, "b")
    answer(store, "a", "c1", b"answer")
    assert a.is_set() and not b.is_set()
    assert store.wait_response("a", 0.0) == b"answer"


def test_a_gone_connection_wakes_the_watchers_of_its_requests(store: MemoryStore) -> None:
    a, b, c = watcher(store, "a"), watcher(store, "b"), watcher(store, "c")
    store.delete_connection("c1")
    assert (a.is_set(), b.is_set(), c.is_set()) == (True, True, False)


@pytest.mark.parametrize("request_id", ["unknown", "forgotten"])
def test_a_watch_nobody_expects_wakes_at_once(store: MemoryStore, request_id: str) -> None:
    store.expect_response("forgotten", "c1", time.time() + 60)
    store.forget_response("forgotten")
    assert watcher(store, request_id).is_set()


def test_a_forgotten_request_keeps_no_watcher(store: MemoryStore) -> None:
    woken = watcher(store, "a")
    store.forget_response("a")
    answer(store, "a", "c1", b"late")
    assert not woken.is_set() and store.wait_response("a", 0.0) is None


def test_bodies_pass_between_the_gateway_and_its_steps_as_bytes_both_ways() -> None:
    body = bytes(range(256)) * 400  # binary, 100 KB
    with stepping_gateway() as (_, relay, port):
        answer = visit(port, "POST", "/?id=r1&reverse=1", "app.localhost", body=body)
    assert relay.bodies == [body]  # not base64 text: no JSON lies between them
    assert answer.status == 200 and answer.body == body[::-1]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 1000, 4 * 1024 * 1024 + 1])
def test_a_body_is_sized_as_the_base64_lambda_would_get(size: int) -> None:
    assert base64_size(size) == len(base64.b64encode(bytes(size)))


def test_a_body_over_lambdas_event_limit_is_413_for_steps_too() -> None:
    from hatchway_local.platform import LAMBDA_MAX_EVENT_BYTES

    with stepping_gateway() as (_, relay, port):
        # The most the gateway reads at all (its Content-Length passes), but with the rest of
        # the event its base64 is over Lambda's limit.
        body = b"x" * (LAMBDA_MAX_EVENT_BYTES * 3 // 4)
        answer = visit(port, "POST", "/?id=r1&reverse=1", "app.localhost", body=body)
    assert answer.status == 413 and relay.bodies == []
