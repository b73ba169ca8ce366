"""The agent tunes glibc's malloc itself (one arena, a fixed mmap threshold), leaving alone each
setting the user made through its environment variable."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from hatchway import arenas

GLIBC = platform.libc_ver()[0] == "glibc"
ALL = ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]


def tuned_in_a_child(**environment: str) -> list[str]:
    """What ``tune_malloc`` applies in a fresh process (the settings are process-wide)."""
    env = {k: v for k, v in os.environ.items() if k not in ALL} | environment
    code = "from hatchway.arenas import tune_malloc; print(','.join(tune_malloc()))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return [name for name in done.stdout.strip().split(",") if name]


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
@pytest.mark.parametrize(
    ("environment", "applied"),
    [
        ({}, ALL),
        ({"MALLOC_ARENA_MAX": "4"}, ["MALLOC_MMAP_THRESHOLD_"]),
        ({"MALLOC_MMAP_THRESHOLD_": "1048576"}, ["MALLOC_ARENA_MAX"]),
        ({"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "1048576"}, []),
    ],
)
def test_each_setting_the_user_made_is_left_alone(
    environment: dict[str, str], applied: list[str]
) -> None:
    assert tuned_in_a_child(**environment) == applied


def test_a_c_library_without_mallopt_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    class NoMallopt:
        def __init__(self, name: object) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    assert arenas.tune_malloc() == []
