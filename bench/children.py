"""The benchmark's child processes: started with their output read line by line until they say
they are ready (then only counted, so a chatty agent cannot grow the bench), and measured from
``/proc`` (CPU seconds, peak resident memory)."""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

READY_TIMEOUT_SECONDS = 30.0
"""How long a child may take to print its readiness line, and a peer's forward to answer its
first request."""

KEPT_LINES = 200
"""Lines kept of a child's output, for the message when it fails to start."""

READY_PATH = "/bytes/1"
"""What a forward is asked for to show it reaches the bench's origin."""


def free_port() -> int:
    """A loopback port nothing listens on (bound once here, then released for a child)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A process whose output is watched for readiness and otherwise discarded."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue(maxsize=KEPT_LINES)
        self.seen: list[str] = []
        self.discarded = 0
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                self.lines.put_nowait(line.rstrip("\n"))
            except queue.Full:
                self.discarded += 1

    def wait_for(self, pattern: str, timeout: float = READY_TIMEOUT_SECONDS) -> re.Match[str]:
        """The first new line matching ``pattern``; fails with the output so far on timeout."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.popen.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if match := compiled.search(line):
                return match
        raise SystemExit(
            f"{' '.join(self.argv[:3])} never printed /{pattern}/ "
            f"(exit code {self.popen.poll()}):\n" + "\n".join(self.seen[-KEPT_LINES:])
        )

    def unread(self) -> list[str]:
        """The lines printed since the last read, taken off the queue."""
        lines = []
        while True:
            try:
                lines.append(self.lines.get_nowait())
            except queue.Empty:
                return lines

    def quiet(self) -> None:
        """From now on the output is only drained, never kept."""
        self.unread()
        self.lines = queue.Queue(maxsize=1)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process and the processes it started (still running)
        have used so far: an OpenSSH server forwards in a process of its own per connection."""
        return sum(ticks for _, ticks in _tree(self.popen.pid)) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float:
        status = Path(f"/proc/{self.popen.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else 0.0

    def kill(self) -> None:
        """The process and every process it started that still runs."""
        if self.popen.poll() is None:
            for pid, _ in _tree(self.popen.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.popen.wait(10)


def _tree(root: int) -> list[tuple[int, int]]:
    """``root`` and its running descendants, each with the CPU ticks (user plus system) it has
    used, from ``/proc``."""
    children: dict[int, list[int]] = {}
    ticks: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        # ppid, utime and stime are fields 4, 14 and 15 of stat(5); 2, 12 and 13 after ") ".
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        ticks[pid] = int(fields[11]) + int(fields[12])
    found, waiting = [], [root]
    while waiting:
        pid = waiting.pop()
        found.append((pid, ticks.get(pid, 0)))
        waiting += children.get(pid, [])
    return found


def wait_until_answering(
    name: str,
    port: int,
    client: Child,
    host: str | None = None,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> None:
    """Until a request through a peer's forward on loopback ``port`` (with ``host`` as its Host
    header, when the peer routes by name) comes back 200; fails at once if the peer's client
    exits, with what it said."""
    deadline = time.monotonic() + timeout
    headers = {"Host": host} if host else {}
    while time.monotonic() < deadline:
        if client.popen.poll() is not None:
            said = "\n".join(client.unread())
            raise SystemExit(f"{name} exited with {client.popen.returncode}:\n{said}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", READY_PATH, headers=headers)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    raise SystemExit(f"{name} did not forward port {port} within {timeout:g} s")
