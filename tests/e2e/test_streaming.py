"""Streamed responses on the local gateway, in both store modes: a tunnel started with
``--stream`` passes server-sent events to the visitor as the app writes them; one started
without it answers a stream that outlasts the relay's wait with a 504 that says so."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import AgentProcess
from support.visitor import visit

pytestmark = pytest.mark.e2e

READ_SECONDS = 10.0
"""How long a visitor waits for the next event before the test fails."""


@contextmanager
def opened(relay: LocalServer, name: str, target: str) -> Iterator[http.client.HTTPResponse]:
    """A visitor's GET through tunnel ``name``, its response head read, its body not yet."""
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=READ_SECONDS)
    try:
        conn.request("GET", target, headers={"Host": f"{name}.localhost:{relay.port}"})
        yield conn.getresponse()
    finally:
        conn.close()


def next_event(response: http.client.HTTPResponse) -> bytes:
    """The next event: its line and the blank line that ends it."""
    return response.readline() + response.readline()


def test_events_reach_the_visitor_as_the_app_writes_them(
    relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(app.port), "live", extra=["--stream"])
    with opened(relay, "live", "/events?n=3") as response:
        assert response.status == 200
        assert response.getheader("content-type") == "text/event-stream"
        # The app holds its second event until the first has reached the visitor.
        assert next_event(response) == b"data: 0\n\n"
        app.next_event.release()
        assert next_event(response) == b"data: 1\n\n"
        app.next_event.release()
        assert next_event(response) == b"data: 2\n\n"
        assert response.read() == b""  # the body ended as the app ended it


def test_a_stream_the_app_cuts_is_cut_for_the_visitor(
    relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(app.port), "live", extra=["--stream"])
    with opened(relay, "live", "/events?n=2&end=cut") as response:
        assert next_event(response) == b"data: 0\n\n"
        app.next_event.release()
        assert next_event(response) == b"data: 1\n\n"
        with pytest.raises(http.client.IncompleteRead):
            response.read()  # never a whole body: the client knows it lost the end


def test_a_response_of_known_length_passes_whole_through_a_streaming_tunnel(
    relay: LocalServer, app: LocalApp, start_agent: Callable[..., AgentProcess]
) -> None:
    start_agent(relay, str(app.port), "live", extra=["--stream"])
    answer = visit(relay.port, "GET", "/repeat?n=5000", f"live.localhost:{relay.port}")
    assert (answer.status, answer.body) == (200, b"x" * 5000)


def test_without_stream_an_endless_stream_gets_a_504_that_says_so(
    make_relay: Callable[..., LocalServer],
    app: LocalApp,
    start_agent: Callable[..., AgentProcess],
) -> None:
    relay = make_relay(response_timeout=3.0)
    start_agent(relay, str(app.port), "whole")
    answer = visit(relay.port, "GET", "/events?n=2", f"whole.localhost:{relay.port}")
    app.next_event.release()  # the app may finish now: the visitor was answered already
    assert answer.status == 504
    assert dict(answer.headers)["x-hatchway-error"] == "local-app-timeout"
    assert b"still sending the body" in answer.body and b"--stream" in answer.body
