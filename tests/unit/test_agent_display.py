"""What the agent shows: the live status (counts, latency of the last minute), plain lines, JSON
events and the status screen's contents, each driven by hand with a fake clock."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from hatchway import protocol
from hatchway.errors import RelayUnreachable, TokenRefused
from hatchway.protocol import Fault, Request, Response
from hatchway.serving.tunnels import tunnel_options
from hatchway.ui.display import (
    LATENCY_WINDOW_SECONDS,
    JsonLog,
    LineLog,
    ListenerLogHandler,
    Screen,
    Status,
    percentile,
    pool_lines,
)

WELCOME = protocol.Welcome(
    (protocol.TunnelInfo("demo", "http://demo.localhost:8080/", "http://127.0.0.1:8080/t/demo/"),)
)
TWO = protocol.Welcome(
    (
        protocol.TunnelInfo("web", None, "http://r/t/web/"),
        protocol.TunnelInfo("backend", None, "http://r/t/backend/"),
    )
)
DOWN = Fault("local app", "connection refused by http://127.0.0.1:3000; is the app running?")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def status(*targets: str, clock: Clock | None = None) -> Status:
    options = [tunnel_options(t) for t in targets or ("3000",)]
    return Status("ws://relay.test/connect", options, clock or Clock())


def served(
    tunnel: str = "demo", status_code: int = 200, fault: Fault | None = None
) -> tuple[Request, Response]:
    return (
        Request("r1", tunnel, "GET", "/echo/hi", "x=1"),
        Response("r1", status_code, body=b"abc", fault=fault),
    )


@pytest.mark.parametrize(
    ("values", "p50", "p90"),
    [
        ([], None, None),
        ([7.0], 7.0, 7.0),
        ([1.0, 2.0], 1.0, 2.0),
        ([float(v) for v in range(1, 11)], 5.0, 9.0),
        ([float(v) for v in range(100, 0, -1)], 50.0, 90.0),
    ],
)
def test_percentiles_are_nearest_rank(
    values: list[float], p50: float | None, p90: float | None
) -> None:
    assert (percentile(values, 0.5), percentile(values, 0.9)) == (p50, p90)


def test_status_counts_open_and_total_and_times_the_last_minute() -> None:
    clock = Clock()
    live = status(clock=clock)
    inside = threading.Event()

    def handler(request: Request) -> Response:
        inside.set()
        assert live.counts() == (1, 0)  # open while the app works on it
        clock.now += 0.040
        return Response(request.id, 200)

    tracked = live.track(handler)
    tracked(served()[0])
    assert inside.is_set() and live.counts() == (0, 1)
    assert live.latency() == pytest.approx((40.0, 40.0))
    clock.now += LATENCY_WINDOW_SECONDS + 1
    assert live.latency() == (None, None)  # the window moved on; the total stays
    assert live.counts() == (0, 1)


def test_status_for_machines_has_urls_counts_latency_and_no_secrets() -> None:
    live = Status(
        "ws://relay.test/connect",
        [
            tunnel_options(
                "3000", basic_auth="alice:pw", verify_webhook="github", webhook_secret="s"
            )
        ],
        Clock(),
    )
    live.ready(WELCOME)
    shown = live.as_dict()
    assert shown["status"] == "online"
    assert shown["public_urls"] == ["http://demo.localhost:8080/", "http://127.0.0.1:8080/t/demo/"]
    assert shown["connections"] == {"open": 0, "total": 0}
    assert shown["tunnels"][0]["basic_auth"] == "alice:***"
    assert "alice:pw" not in json.dumps(shown)


def line_log(*targets: str) -> tuple[LineLog, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return LineLog(status(*targets), out, err), out, err


def test_plain_lines_one_per_request() -> None:
    log, out, err = line_log()
    log.status.ready(WELCOME)
    log.ready(WELCOME)
    log.request(*served(), 3.4)
    log.request(*served(status_code=502, fault=DOWN), 1.0)
    assert out.getvalue().splitlines() == [
        "Forwarding  http://demo.localhost:8080/ -> http://127.0.0.1:3000",
        "Forwarding  http://127.0.0.1:8080/t/demo/ -> http://127.0.0.1:3000",
        "GET /echo/hi?x=1 200 3 ms",
        "GET /echo/hi?x=1 502 1 ms  (local app down: connection refused by "
        "http://127.0.0.1:3000; is the app running?)",
    ]
    assert err.getvalue() == ""


class Writes(io.StringIO):
    """A stream that counts its writes: each is a system call on an unbuffered terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.mark.parametrize("kind", ["plain", "json"])
def test_a_request_line_goes_out_in_one_write(kind: str) -> None:
    out = Writes()
    live = status()
    log = LineLog(live, out, io.StringIO()) if kind == "plain" else JsonLog(live, out)
    log.request(*served(), 3.4)
    assert out.writes == 1
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 1


def test_plain_lines_name_the_tunnel_when_there_are_several() -> None:
    log, out, _ = line_log("3000", "8000")
    log.status.ready(TWO)
    log.request(*served("backend"), 2.0)
    assert out.getvalue() == "backend: GET /echo/hi?x=1 200 2 ms\n"


def test_plain_problems_go_to_stderr_with_the_backoff() -> None:
    log, out, err = line_log()
    log.status.inspector_url, log.status.inspector_note = "http://127.0.0.1:4041/", "4040 taken"
    log.started()
    log.reconnecting(2, 2.25, RelayUnreachable("cannot reach the relay at ws://x: refused"))
    log.reconnecting(3, 4.5, RelayUnreachable("cannot reach the relay at ws://x: refused"))
    log.fatal(TokenRefused("the relay refused the token"))
    assert out.getvalue() == "Inspector   http://127.0.0.1:4041/ (4040 taken)\n"
    assert err.getvalue().splitlines() == [
        "hatchway: relay unreachable (cannot reach the relay at ws://x: refused); retry 2 in 2.2 s",
        "hatchway: relay unreachable (cannot reach the relay at ws://x: refused); retry 3 in 4.5 s"
        "; nothing answers at that address: is the relay running there? (check --server, or "
        "start hatchway-local)",
        "hatchway: the relay refused the token",
    ]


def test_json_log_is_one_object_per_event() -> None:
    out = io.StringIO()
    live = status()
    log = JsonLog(live, out, clock=lambda: 1234.5)
    log.started()
    live.ready(WELCOME)
    log.ready(WELCOME)
    log.request(*served(status_code=502, fault=DOWN), 1.26)
    log.reconnecting(1, 0.5, None)
    log.fatal(TokenRefused("refused"))
    log.close()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == [
        "start",
        "ready",
        "request",
        "reconnecting",
        "error",
        "closed",
    ]
    assert all(e["time"] == 1234.5 for e in events)
    assert events[1]["tunnels"][0]["url"] == "http://demo.localhost:8080/"
    assert events[2] == {
        "event": "request",
        "time": 1234.5,
        "tunnel": "demo",
        "method": "GET",
        "target": "/echo/hi?x=1",
        "status": 502,
        "ms": 1.3,
        "bytes": 3,
        "fault": {"side": "local app", "message": DOWN.message},
    }
    assert events[4] == {
        "event": "error",
        "time": 1234.5,
        "kind": "TokenRefused",
        "message": "refused",
    }


def test_the_screen_shows_status_urls_counts_latency_then_newest_requests_first() -> None:
    clock = Clock()
    live = status(clock=clock)
    live.inspector_url = "http://127.0.0.1:4040/"
    screen = Screen(live, io.StringIO(), wall_clock=lambda: 0.0)
    assert "connecting" in "\n".join(screen.render(100, 30))
    live.ready(WELCOME)
    for path, ms in (("/first", 0.010), ("/second", 0.030)):
        started = clock.now

        def app(request: Request, ms: float = ms) -> Response:
            clock.now += ms
            return Response(request.id, 200)

        live.track(app)(Request("r", "demo", "GET", path))
        screen.request(Request("r", "demo", "GET", path), Response("r", 200), clock.now - started)
    rows = screen.render(100, 30)
    text = "\n".join(rows)
    for expected in (
        "Session Status                online",
        "Relay                         ws://relay.test/connect",
        "Web Interface                 http://127.0.0.1:4040/",
        "Forwarding                    http://demo.localhost:8080/ -> http://127.0.0.1:3000",
        "total   open",
        "2       0",
        "10 ms   30 ms",
    ):
        assert expected in text
    log_rows = [row for row in rows if "GET" in row]
    assert "/second" in log_rows[0] and "/first" in log_rows[1]
    assert all(len(row) <= 100 for row in rows[1:])


def test_the_screen_fits_the_terminal() -> None:
    screen = Screen(status(), io.StringIO(), wall_clock=lambda: 0.0)
    for i in range(50):
        screen.request(Request("r", "demo", "GET", f"/{i}" + "x" * 200), Response("r", 200), 1.0)
    rows = screen.render(40, 24)
    assert len(rows) <= 24
    assert all(len(row) <= 40 for row in rows[1:] if "\x1b" not in row)
    assert "/49" in "\n".join(rows)  # the newest survives the cut


def test_the_agents_warnings_reach_the_display_not_the_raw_terminal() -> None:
    out = io.StringIO()
    screen_out = io.StringIO()
    json_log = JsonLog(status(), out, clock=lambda: 1.0)
    screen = Screen(status(), screen_out, wall_clock=lambda: 0.0)
    logger = logging.getLogger("hatchway.test-display")
    handlers = [ListenerLogHandler(json_log), ListenerLogHandler(screen)]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        logger.info("not shown: below warning")
        logger.warning("relay silent for %d s; reconnecting", 180)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {
            "event": "log",
            "time": 1.0,
            "level": "warning",
            "message": "relay silent for 180 s; reconnecting",
        }
    ]
    assert "warning: relay silent for 180 s; reconnecting" in "\n".join(screen.render(100, 30))
    assert screen_out.getvalue() == ""  # nothing written outside a frame


def test_request_durations_line_up_whatever_the_status_text_and_path() -> None:
    screen = Screen(status(), io.StringIO(), wall_clock=lambda: 0.0)
    for code, path in ((200, "/"), (413, "/upload"), (431, "/" + "long-path/" * 12), (599, "/x")):
        screen.request(Request("r", "demo", "GET", path), Response("r", code), 7.0)
    rows = [row for row in screen.render(160, 40) if " GET " in row]
    assert len(rows) == 4
    assert len({row.index(" ms ") for row in rows}) == 1, "\n".join(rows)
    assert any("413 Request Entity Too Large" in row for row in rows)


def test_a_long_reconnect_reason_wraps_instead_of_being_cut() -> None:
    live = status()
    reason = (
        "cannot reach the relay at wss://connect.t.example.com/connect: "
        + "the TLS handshake failed because the certificate is not trusted; " * 3
        + "END-OF-REASON"
    )
    live.set_state("reconnecting", f"retry 3 in 4.0 s: {reason}")
    rows = Screen(live, io.StringIO(), wall_clock=lambda: 0.0).render(120, 40)
    text = "\n".join(rows)
    assert "END-OF-REASON" in text
    assert all(len(row.replace("\x1b[33m", "").replace("\x1b[0m", "")) <= 120 for row in rows)


def test_a_path_mode_only_tunnel_warns_about_absolute_links() -> None:
    out, err = io.StringIO(), io.StringIO()
    LineLog(status(), out, err).ready(TWO)
    assert "absolute paths" in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    live = status()
    live.ready(WELCOME)
    LineLog(live, out, err).ready(WELCOME)  # it has a subdomain URL too: no warning
    assert err.getvalue() == ""
    path_only = status("3000", "4000")
    path_only.ready(TWO)
    assert "absolute paths" in "\n".join(Screen(path_only, io.StringIO()).render(100, 40))


@pytest.mark.parametrize(
    ("pool_size", "asked", "lines"),
    [
        (0, False, []),
        (3, True, ["Pool        shop: 3 agents serve it"]),
        (1, True, ["Pool        shop: 1 agent serve it"]),
        (0, True, ["Pool        shop: this relay does not pool names (upgrade it)"]),
    ],
)
def test_a_pooled_tunnel_shows_how_many_agents_serve_it(
    pool_size: int, asked: bool, lines: list[str]
) -> None:
    info = protocol.TunnelInfo("shop", None, "http://relay.test/t/shop/", pool_size=pool_size)
    options = tunnel_options(3000, subdomain="shop", pool=asked)
    assert pool_lines(protocol.Welcome((info,)), [options]) == lines


@pytest.mark.parametrize(
    ("requests", "plain", "fields"),
    [
        (
            3,
            "hatchway: stopping: finishing 3 requests (at most 25 s), taking no new ones; "
            "Ctrl-C again to quit now\n",
            {"requests": 3, "grace_seconds": 25.0},
        ),
        (
            1,
            "hatchway: stopping: finishing 1 request (at most 2.5 s), taking no new ones; "
            "Ctrl-C again to quit now\n",
            {"requests": 1, "grace_seconds": 2.5},
        ),
    ],
)
def test_stopping_says_what_it_finishes_and_how_to_quit_at_once(
    requests: int, plain: str, fields: dict[str, float]
) -> None:
    grace = fields["grace_seconds"]
    out, err = io.StringIO(), io.StringIO()
    LineLog(status(), out, err).stopping(requests, grace)
    assert (out.getvalue(), err.getvalue()) == ("", plain)
    out = io.StringIO()
    JsonLog(status(), out, clock=lambda: 1.0).stopping(requests, grace)
    assert json.loads(out.getvalue()) == {"event": "stopping", "time": 1.0, **fields}
