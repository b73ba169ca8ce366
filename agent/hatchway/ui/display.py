"""What the agent tells its user while it runs: the session's live status (shared by the terminal
and the inspector's ``/api/status``), and three ways to show it.

* ``Screen``: a status screen like ngrok's, redrawn in place with ANSI escapes when stdout is a
  terminal (session status, relay, public URLs, inspector, connections, latency, then a rolling
  request log). No curses: cursor-home, clear-to-end-of-line and the alternate screen suffice.
* ``LineLog``: one plain line per event, for pipes and log files.
* ``JsonLog``: one JSON object per event, for machines (``--log-format json``).

No secret is ever shown: tunnels are described by ``tunnels.describe``.
"""

from __future__ import annotations

import http
import json
import logging
import textwrap
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from hatchway import protocol
from hatchway.protocol import Request, Response
from hatchway.serving import recent
from hatchway.serving.tunnels import Handler, TunnelOptions, describe
from hatchway.version import __version__

LATENCY_WINDOW_SECONDS = 60.0
"""Latency percentiles cover the requests finished in this last stretch of time."""

MAX_LATENCY_SAMPLES = 10_000
"""Samples kept for the percentiles: bounds memory under heavy load (the oldest go first)."""

SCREEN_REFRESH_SECONDS = 1.0
"""The status screen redraws at least this often, so that the latency window moves on."""

SCREEN_MIN_REDRAW_SECONDS = 0.1
"""...and at most this often: a burst of requests costs one redraw, not one each."""

SCREEN_LOG_LINES = 200
"""Request lines the screen remembers; it shows as many as fit under the status."""

DEFAULT_SCREEN_SIZE = (100, 30)
"""Columns and lines assumed when the terminal does not say."""

LABEL_WIDTH = 30
"""Width of the screen's left column, like ngrok's."""

REQUEST_WIDTH = 40
"""Columns a request log line gives time, method and path (clipped to fit) before its duration,
so that durations line up whatever the path or the status text."""

DURATION_WIDTH = 6
"""Digits a request's milliseconds are right-aligned in."""

MAX_STATUS_ROWS = 4
"""Rows the session status may wrap over (a reconnect reason is often longer than a line)."""

PATH_MODE_NOTE = (
    "only a path-mode URL (/t/<name>/): an app that links to absolute paths (/static/app.css) "
    "sends visitors outside its tunnel there; give the relay a domain for subdomain URLs"
)
"""Shown once when a tunnel has no URL of its own host, only a path under the relay's."""

Clock = Callable[[], float]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (``fraction`` 0.5 for p50); None without values."""
    return recent.percentile(sorted(values), fraction) if values else None


def fault_note(response: Response) -> str | None:
    """What went wrong, for a log line, when the agent answered instead of the local app."""
    if response.fault is None:
        return None
    if response.fault.side == "local app":
        return f"local app down: {response.fault.message}"
    return f"{response.fault.side} failed: {response.fault.message}"


def pool_lines(welcome: protocol.Welcome, tunnels: Sequence[TunnelOptions]) -> list[str]:
    """One line per pooled tunnel: how many agents serve it (or that the relay cannot pool)."""
    lines = []
    for info, options in zip(welcome.tunnels, tunnels, strict=False):
        if info.pool_size:
            agents = "agent" if info.pool_size == 1 else "agents"
            lines.append(f"Pool        {info.name}: {info.pool_size} {agents} serve it")
        elif options.pool:
            lines.append(f"Pool        {info.name}: this relay does not pool names (upgrade it)")
    return lines


def only_path_mode(info: protocol.TunnelInfo) -> bool:
    """Whether every URL of a tunnel is a path under the relay's own host (``/t/<name>/``)."""
    return all(url.rstrip("/").endswith(f"/t/{info.name}") for url in info.public_urls)


class Status:
    """The live state of one agent run. Thread-safe; every display reads it."""

    def __init__(
        self, relay: str, tunnels: Sequence[TunnelOptions], clock: Clock = time.monotonic
    ) -> None:
        self.relay = relay
        self.tunnels = tuple(tunnels)
        self.clock = clock
        self.state = "connecting"
        self.detail = ""
        self.welcome: protocol.Welcome | None = None
        self.inspector_url: str | None = None
        self.inspector_note = ""
        self.open = 0
        self.total = 0
        self._latencies = recent.RecentValues(MAX_LATENCY_SAMPLES)
        self._lock = threading.Lock()

    def track(self, handler: Handler) -> Handler:
        """``handler`` counting requests open and served, and timing them."""

        def tracked(request: Request) -> Response:
            with self._lock:
                self.open += 1
            started = self.clock()
            try:
                return handler(request)
            finally:
                finished = self.clock()
                with self._lock:
                    self.open -= 1
                    self.total += 1
                    self._latencies.add(finished, (finished - started) * 1000)

        return tracked

    def latency(self) -> tuple[float | None, float | None]:
        """p50 and p90 in milliseconds of the requests finished within the window."""
        since = self.clock() - LATENCY_WINDOW_SECONDS
        with self._lock:
            window = self._latencies.since(since)
        return percentile(window, 0.5), percentile(window, 0.9)

    def counts(self) -> tuple[int, int]:
        """Requests open now, and served in all."""
        with self._lock:
            return self.open, self.total

    def set_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            self.state, self.detail = state, detail

    def ready(self, welcome: protocol.Welcome) -> None:
        with self._lock:
            self.welcome, self.state, self.detail = welcome, "online", ""

    def forwarding(self) -> list[tuple[str, str, str]]:
        """(tunnel name, public URL, local target) for every URL of every tunnel."""
        welcome = self.welcome
        if welcome is None:
            return []
        return [
            (info.name, url, options.target.url)
            for info, options in zip(welcome.tunnels, self.tunnels, strict=False)
            for url in info.public_urls
        ]

    def as_dict(self) -> dict[str, Any]:
        """The status for machines: the inspector's ``/api/status`` and the JSON log."""
        p50, p90 = self.latency()
        with self._lock:
            state, detail, welcome = self.state, self.detail, self.welcome
        open_now, total = self.counts()
        infos = list(welcome.tunnels) if welcome else []
        tunnels = []
        for index, options in enumerate(self.tunnels):
            info = infos[index] if index < len(infos) else None
            tunnels.append(
                {
                    **describe(options),
                    "name": info.name if info else options.subdomain,
                    "url": info.url if info else None,
                    "path_url": info.path_url if info else None,
                    "custom_urls": list(info.custom_urls) if info else [],
                }
            )
        return {
            "status": state + (f" ({detail})" if detail else ""),
            "relay": self.relay,
            "version": __version__,
            "public_urls": [url for _, url, _ in self.forwarding()],
            "target": ", ".join(dict.fromkeys(o.target.url for o in self.tunnels)),
            "tunnels": tunnels,
            "inspector": self.inspector_url,
            "connections": {"open": open_now, "total": total},
            "latency_ms": {"window_seconds": LATENCY_WINDOW_SECONDS, "p50": p50, "p90": p90},
        }


class Listener:
    """Hears the run's events; every method is a no-op here. Called from the session's threads."""

    @property
    def may_wait(self) -> bool:
        """Whether ``request`` may wait on something outside the agent (a user's callback).
        Those that do not are called on the thread that read the request, when it served it."""
        return False

    def started(self) -> None:
        """Everything is wired; the session is about to connect."""

    def ready(self, welcome: protocol.Welcome) -> None:
        """The relay welcomed the session (again, after a reconnect)."""

    def request(self, request: Request, response: Response, elapsed_ms: float) -> None:
        """One request was served."""

    def reconnecting(self, attempt: int, delay: float, error: BaseException | None) -> None:
        """The relay is unreachable or the connection dropped; next try in ``delay`` s."""

    def fatal(self, error: BaseException) -> None:
        """The run ends because of ``error`` (token refused, name taken...)."""

    def stopping(self, requests: int, grace: float) -> None:
        """Asked to stop: the agent takes no new requests and answers the ``requests`` it
        holds, for at most ``grace`` seconds, then closes."""

    def note(self, level: str, message: str) -> None:
        """A warning from the agent's own log (a dropped response, a silent relay...)."""

    def close(self) -> None:
        """The run is over."""


class ListenerLogHandler(logging.Handler):
    """Sends the agent's log records to a listener, so that warnings appear where the user
    looks (on the status screen, in the JSON stream) instead of scribbling over the screen."""

    def __init__(self, listener: Listener, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.listener = listener

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.listener.note(record.levelname.lower(), record.getMessage())
        except Exception:  # logging must never raise into the code that logged
            self.handleError(record)


UNREACHABLE_HINT_AFTER = 3
"""From this retry on, a relay that refuses connections outright gets a hint: it may not be
running at that address at all (a typo in --server, or hatchway-local not started)."""


def _reconnect_text(attempt: int, delay: float, error: BaseException | None) -> str:
    reason = f" ({error})" if error else ""
    text = f"relay unreachable{reason}; retry {attempt} in {delay:.1f} s"
    if attempt >= UNREACHABLE_HINT_AFTER and "refused" in str(error).lower():
        text += (
            "; nothing answers at that address: is the relay running there? (check --server, "
            "or start hatchway-local)"
        )
    return text


def stopping_text(requests: int, grace: float) -> str:
    return (
        f"stopping: finishing {requests} request{'s' * (requests != 1)} (at most {grace:g} s), "
        "taking no new ones; Ctrl-C again to quit now"
    )


def _write_line(text: str, stream: TextIO, lock: threading.Lock) -> None:
    """``text`` and its newline in one write, under ``lock`` so that lines from worker threads
    never interleave. (``print`` writes the two apart, two system calls per request line on an
    unbuffered stream, such as any with ``PYTHONUNBUFFERED`` set.)"""
    with lock:
        stream.write(text + "\n")
        stream.flush()


class LineLog(Listener):
    """Plain lines: the URLs once, then one line per request; problems on ``err``."""

    def __init__(self, status: Status, out: TextIO, err: TextIO) -> None:
        self.status = status
        self.out = out
        self.err = err
        self._lock = threading.Lock()

    def _print(self, text: str, stream: TextIO | None = None) -> None:
        _write_line(text, stream or self.out, self._lock)

    def started(self) -> None:
        url, note = self.status.inspector_url, self.status.inspector_note
        if url:
            self._print(f"Inspector   {url}" + (f" ({note})" if note else ""))
        elif note:
            self._print(f"hatchway: {note}", self.err)

    def ready(self, welcome: protocol.Welcome) -> None:
        for _, url, target in self.status.forwarding():
            self._print(f"Forwarding  {url} -> {target}")
        for line in pool_lines(welcome, self.status.tunnels):
            self._print(line)
        if any(only_path_mode(info) for info in welcome.tunnels):
            self._print(f"hatchway: note: {PATH_MODE_NOTE}", self.err)

    def request(self, request: Request, response: Response, elapsed_ms: float) -> None:
        prefix = f"{request.tunnel}: " if len(self.status.tunnels) > 1 else ""
        line = f"{prefix}{request.method} {request.target} {response.status} {elapsed_ms:.0f} ms"
        note = fault_note(response)
        self._print(line + (f"  ({note})" if note else ""))

    def reconnecting(self, attempt: int, delay: float, error: BaseException | None) -> None:
        self._print(f"hatchway: {_reconnect_text(attempt, delay, error)}", self.err)

    def fatal(self, error: BaseException) -> None:
        self._print(f"hatchway: {error}", self.err)

    def stopping(self, requests: int, grace: float) -> None:
        self._print(f"hatchway: {stopping_text(requests, grace)}", self.err)

    def note(self, level: str, message: str) -> None:
        self._print(f"hatchway: {level}: {message}", self.err)


class JsonLog(Listener):
    """One JSON object per line and event: ``{"event": ..., "time": ..., ...}``."""

    def __init__(self, status: Status, out: TextIO, clock: Clock = time.time) -> None:
        self.status = status
        self.out = out
        self.clock = clock
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        text = json.dumps({"event": event, "time": round(self.clock(), 3), **fields})
        _write_line(text, self.out, self._lock)

    def started(self) -> None:
        self.emit(
            "start",
            relay=self.status.relay,
            version=__version__,
            tunnels=[describe(t) for t in self.status.tunnels],
            inspector=self.status.inspector_url,
            inspector_note=self.status.inspector_note or None,
        )

    def ready(self, welcome: protocol.Welcome) -> None:
        self.emit(
            "ready",
            tunnels=[
                {
                    "name": info.name,
                    "url": info.url,
                    "path_url": info.path_url,
                    "custom_urls": list(info.custom_urls),
                }
                for info in welcome.tunnels
            ],
        )

    def request(self, request: Request, response: Response, elapsed_ms: float) -> None:
        fault = response.fault
        self.emit(
            "request",
            tunnel=request.tunnel,
            method=request.method,
            target=request.target,
            status=response.status,
            ms=round(elapsed_ms, 1),
            bytes=response.size,
            fault={"side": fault.side, "message": fault.message} if fault else None,
        )

    def reconnecting(self, attempt: int, delay: float, error: BaseException | None) -> None:
        self.emit(
            "reconnecting",
            attempt=attempt,
            delay=round(delay, 3),
            error=str(error) if error else None,
        )

    def fatal(self, error: BaseException) -> None:
        self.emit("error", kind=type(error).__name__, message=str(error))

    def stopping(self, requests: int, grace: float) -> None:
        self.emit("stopping", requests=requests, grace_seconds=grace)

    def note(self, level: str, message: str) -> None:
        self.emit("log", level=level, message=message)

    def close(self) -> None:
        self.emit("closed")


# --- The status screen ------------------------------------------------------------------------

ENTER = "\x1b[?1049h\x1b[?25l"
"""Switch to the alternate screen (the shell's scrollback stays intact) and hide the cursor."""
LEAVE = "\x1b[?25h\x1b[?1049l"
HOME = "\x1b[H"
CLEAR_LINE_END = "\x1b[K"
CLEAR_BELOW = "\x1b[J"
BOLD, DIM, GREEN, YELLOW, RED, RESET = (
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[32m",
    "\x1b[33m",
    "\x1b[31m",
    "\x1b[0m",
)


def _terminal_size() -> tuple[int, int]:
    # Imported on the first frame of the screen: plain logs (a service, CI) never load
    # ``shutil`` and the compression modules it imports.
    import shutil

    size = shutil.get_terminal_size(DEFAULT_SCREEN_SIZE)
    return size.columns, size.lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


class Screen(Listener):
    """The full-screen status, redrawn in place from a background thread."""

    def __init__(
        self,
        status: Status,
        out: TextIO,
        size: Callable[[], tuple[int, int]] | None = None,
        wall_clock: Clock = time.time,
    ) -> None:
        self.status = status
        self.out = out
        self.size = size or _terminal_size
        self.wall_clock = wall_clock
        self.log: deque[str] = deque(maxlen=SCREEN_LOG_LINES)
        self.fatal_error: BaseException | None = None
        self._dirty = threading.Event()
        self._closed = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # Events mark the screen dirty; the drawing thread redraws (at most every 0.1 s).

    def started(self) -> None:
        with self._write_lock:
            self.out.write(ENTER)
            self.out.flush()
        self._thread = threading.Thread(target=self._run, name="hatchway-screen", daemon=True)
        self._thread.start()

    def ready(self, welcome: protocol.Welcome) -> None:
        self._dirty.set()

    def request(self, request: Request, response: Response, elapsed_ms: float) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.wall_clock()))
        try:
            phrase = http.HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        name = f"{request.tunnel:<12} " if len(self.status.tunnels) > 1 else ""
        line = _clip(f"{stamp}  {name}{request.method:<7} {request.target}", REQUEST_WIDTH)
        outcome = f"{elapsed_ms:>{DURATION_WIDTH}.0f} ms  " + f"{response.status} {phrase}".strip()
        note = fault_note(response)
        self.log.appendleft(f"{line:<{REQUEST_WIDTH}} {outcome}" + (f"  {note}" if note else ""))
        self._dirty.set()

    def reconnecting(self, attempt: int, delay: float, error: BaseException | None) -> None:
        self._dirty.set()

    def fatal(self, error: BaseException) -> None:
        self.fatal_error = error

    def stopping(self, requests: int, grace: float) -> None:
        self.note("note", stopping_text(requests, grace))

    def note(self, level: str, message: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.wall_clock()))
        self.log.appendleft(f"{stamp}  {level}: {message}")
        self._dirty.set()

    def close(self) -> None:
        self._closed.set()
        self._dirty.set()  # wakes the drawing thread now rather than at its next refresh
        if self._thread is not None:
            self._thread.join(SCREEN_REFRESH_SECONDS * 5)
            with self._write_lock:
                self.out.write(LEAVE)
                self.out.flush()
            self._thread = None

    def _run(self) -> None:
        while not self._closed.is_set():
            self.draw()
            self._dirty.wait(SCREEN_REFRESH_SECONDS)
            self._dirty.clear()
            self._closed.wait(SCREEN_MIN_REDRAW_SECONDS)

    def draw(self) -> None:
        columns, lines = self.size()
        rows = self.render(columns, lines)
        text = HOME + "".join(row + CLEAR_LINE_END + "\r\n" for row in rows) + CLEAR_BELOW
        with self._write_lock:
            if not self._closed.is_set():
                self.out.write(text)
                self.out.flush()

    def render(self, columns: int, lines: int) -> list[str]:
        """The screen as lines of at most ``columns`` visible characters (colour codes aside)."""
        status = self.status
        p50, p90 = status.latency()
        colour = {"online": GREEN, "closed": DIM}.get(status.state, YELLOW)
        state = status.state + (f" ({status.detail})" if status.detail else "")

        def row(label: str, value: str) -> str:
            return _clip(f"{label:<{LABEL_WIDTH}}{value}", columns)

        # A long state (a reconnect's reason) wraps under itself rather than being cut off.
        wrapped = textwrap.wrap(state, max(columns - LABEL_WIDTH, 20)) or [""]
        if len(wrapped) > MAX_STATUS_ROWS:
            wrapped = [*wrapped[: MAX_STATUS_ROWS - 1], " ".join(wrapped[MAX_STATUS_ROWS - 1 :])]
        head = [
            f"{BOLD}hatchway{RESET}{DIM}  (Ctrl+C to quit){RESET}",
            "",
            *(
                colour + row("Session Status" if i == 0 else "", part) + RESET
                for i, part in enumerate(wrapped)
            ),
            row("Relay", status.relay),
            row("Version", __version__),
        ]
        if status.inspector_url or status.inspector_note:
            shown = status.inspector_url or "off"
            note = f" ({status.inspector_note})" if status.inspector_note else ""
            head.append(row("Web Interface", shown + note))
        forwarding = status.forwarding()
        many = len(status.tunnels) > 1
        for name, url, target in forwarding:
            head.append(row("Forwarding", f"{url} -> {target}" + (f"  [{name}]" if many else "")))
        if not forwarding:
            for options in status.tunnels:
                head.append(row("Forwarding", f"(waiting for the relay) -> {options.target.url}"))
        welcome = status.welcome
        if welcome is not None:
            for line in pool_lines(welcome, status.tunnels):
                head.append(row("Pool", line.removeprefix("Pool").strip()))
        if welcome is not None and any(only_path_mode(info) for info in welcome.tunnels):
            for part in textwrap.wrap(PATH_MODE_NOTE, max(columns - LABEL_WIDTH, 20)):
                head.append(DIM + row("", part) + RESET)
        open_now, total = status.counts()
        head += [
            "",
            row("Connections", f"{'total':<8}{'open':<8}"),
            row("", f"{total:<8}{open_now:<8}"),
            row("Latency (last minute)", f"{'p50':<8}{'p90':<8}"),
            row("", f"{_ms(p50):<8}{_ms(p90):<8}"),
            "",
            "HTTP Requests",
            "-------------",
        ]
        room = max(lines - len(head) - 1, 0)
        return head + [_clip(entry, columns) for entry in list(self.log)[:room]]
