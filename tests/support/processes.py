"""Real processes for end-to-end tests: the ``hatchway`` CLI as a user runs it, with its output
read line by line so tests wait for explicit readiness instead of sleeping."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

BIN = Path(sys.executable).parent

URL_PATTERN = re.compile(r"https?://\S+/")


PIPE_DRAIN_SECONDS = 5.0
"""How long ``drain`` waits for an exited process's last lines to be read from its pipes."""


class Process:
    """A child process whose stdout and stderr lines are collected as they arrive."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream,), daemon=True)
            for stream in (self.popen.stdout, self.popen.stderr)
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """The first new line matching ``pattern``; fails with the output so far on timeout."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.popen.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if match := compiled.search(line):
                return match
        raise AssertionError(
            f"{self.argv[:3]} never printed /{pattern}/ (exit code {self.popen.poll()}):\n"
            + "\n".join(self.output)
        )

    def drain(self) -> list[str]:
        """Every line so far; once the process has exited, every line it wrote (the readers
        may still be catching up with the pipes when it ends)."""
        if self.popen.poll() is not None:
            for pump in self._pumps:
                pump.join(PIPE_DRAIN_SECONDS)
        while not self.lines.empty():
            self.output.append(self.lines.get_nowait())
        return self.output

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(10)

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise


class AgentProcess(Process):
    """``hatchway http TARGET`` started against a relay; ``start`` returns once it is serving."""

    def __init__(
        self,
        target: str,
        server: str,
        token: str | None,
        subdomain: str | None = None,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        # No token: the agent reads the one its config file holds (never on the command line,
        # where any user's `ps` would show it).
        argv = [str(BIN / "hatchway"), "http", target, "--server", server]
        argv += ["--token", token] if token is not None else []
        if subdomain:
            argv += ["--subdomain", subdomain]
        super().__init__([*argv, *extra], env)
        self.urls: list[str] = []

    def start(self, timeout: float = 15.0) -> AgentProcess:
        """Wait until both public URLs (subdomain and path form) are printed."""
        while len(self.urls) < 2:
            match = self.wait_for(r"Forwarding\s+(\S+)", timeout)
            self.urls.append(match.group(1))
        return self
