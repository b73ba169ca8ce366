"""Which event loop the local gateway runs on: uvloop when installed, asyncio's on request or
where uvloop is missing, and a clear refusal for anything else."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from hatchway_local.event_loop import LOOP_ENVIRONMENT_VARIABLE, loop_kind, new_event_loop
from hatchway_local.server import run_local

GATEWAYS = 8


@pytest.mark.parametrize(
    ("choice", "environment", "kind"),
    [
        (None, None, "uvloop"),  # auto: uvloop is installed with hatchway-local
        ("auto", None, "uvloop"),
        ("uvloop", None, "uvloop"),
        ("asyncio", None, "asyncio"),
        (None, "asyncio", "asyncio"),
        ("uvloop", "asyncio", "uvloop"),  # the flag wins over the environment
    ],
)
def test_the_loop_is_the_one_asked_for(
    choice: str | None, environment: str | None, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if environment is None:
        monkeypatch.delenv(LOOP_ENVIRONMENT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(LOOP_ENVIRONMENT_VARIABLE, environment)
    loop = new_event_loop(choice)
    try:
        assert loop_kind(loop) == kind
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused_in_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(LOOP_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    loop = new_event_loop("auto")
    try:
        assert loop_kind(loop) == "asyncio"
    finally:
        loop.close()
    with pytest.raises(ValueError, match="uvloop event loop is not installed"):
        new_event_loop("uvloop")


@pytest.mark.parametrize("choice", ["trio", "UVLOOP", "asyncio "])
def test_an_unknown_loop_is_refused(choice: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENVIRONMENT_VARIABLE, choice)
    with pytest.raises(ValueError, match="unknown event loop"):
        new_event_loop()


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_a_stopped_gateway_leaves_no_descriptor_open(kind: str) -> None:
    """A test run starts hundreds of gateways in one process: each must give back its loop's
    descriptors, or the process runs out of them."""

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    with run_local(event_loop=kind):
        pass  # the first start imports and sets up what stays for the process
    before = open_descriptors()
    for _ in range(GATEWAYS):
        with run_local(event_loop=kind) as server:
            assert loop_kind(server.loop) == kind
    assert open_descriptors() - before < GATEWAYS  # a loop held 3 (asyncio) to 12 (uvloop)
