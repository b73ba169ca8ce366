"""How the benchmarks watch their processes: a process's CPU includes the processes it started,
as an OpenSSH server forwards each connection in a process of its own, and stopping a process
stops them too."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import children
from children import Child

SPIN_SECONDS = 0.3
"""CPU the started process must show before the test believes it is counted."""

WAIT_SECONDS = 20.0

PARENT = """
import subprocess, sys
spin = "print('spinning', flush=True)\\nwhile True:\\n    pass"
subprocess.run([sys.executable, "-c", spin])
"""


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a process ended and not yet collected does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_process_counts_and_takes_down_the_processes_it_started() -> None:
    parent = Child([sys.executable, "-c", PARENT])
    try:
        parent.wait_for("spinning")
        started = [pid for pid, _ in children._tree(parent.popen.pid) if pid != parent.popen.pid]
        deadline = time.monotonic() + WAIT_SECONDS
        while (used := parent.cpu_seconds()) < SPIN_SECONDS and time.monotonic() < deadline:
            time.sleep(0.05)
        # The parent itself only waits: what it shows is its child's spinning.
        assert used >= SPIN_SECONDS
        assert len(started) == 1
    finally:
        parent.kill()
    deadline = time.monotonic() + WAIT_SECONDS
    while running(started[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(started[0])
