"""The agent's worker threads: tasks run with their arguments, a thread is started only when no
started one is idle and never beyond the limit, a closed pool drops what waits and refuses more,
and a failing task is logged without taking its thread down."""

from __future__ import annotations

import logging
import threading

import pytest

from hatchway.workers import Workers

WAIT = 10.0


def test_a_task_runs_with_its_arguments() -> None:
    workers = Workers(4)
    got: list[tuple[int, str]] = []
    done = threading.Event()

    def task(number: int, word: str) -> None:
        got.append((number, word))
        done.set()

    workers.submit(task, 7, "seven")
    assert done.wait(WAIT) and got == [(7, "seven")]
    workers.close()


def test_one_thread_serves_tasks_that_come_one_after_another() -> None:
    workers = Workers(8)
    for _ in range(20):
        done = threading.Event()
        workers.submit(done.set)
        assert done.wait(WAIT)
        # The thread counts itself idle just after its task returns: wait for that.
        for _ in range(10_000):
            if workers.idle:
                break
            threading.Event().wait(0.001)
        assert workers.idle == 1
    assert workers.threads == 1
    workers.close()


def test_never_more_threads_than_the_limit_and_every_task_runs() -> None:
    workers = Workers(3)
    release = threading.Event()
    finished = threading.Semaphore(0)

    def task() -> None:
        release.wait(WAIT)
        finished.release()

    for _ in range(7):
        workers.submit(task)
    assert workers.threads == 3
    release.set()
    assert all(finished.acquire(timeout=WAIT) for _ in range(7))
    assert workers.threads == 3
    workers.close()


def test_a_closed_pool_drops_waiting_tasks_and_refuses_new_ones() -> None:
    workers = Workers(1, name="closing-pool")
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def blocking() -> None:
        started.set()
        release.wait(WAIT)
        ran.append("first")

    workers.submit(blocking)
    assert started.wait(WAIT)
    workers.submit(ran.append, "queued")
    workers.close()
    release.set()
    with pytest.raises(RuntimeError, match="closed"):
        workers.submit(ran.append, "late")
    for thread in [t for t in threading.enumerate() if t.name.startswith("closing-pool")]:
        thread.join(WAIT)
    assert ran == ["first"]


def test_a_failing_task_is_logged_and_its_thread_serves_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    workers = Workers(1)
    done = threading.Event()

    def failing() -> None:
        raise ValueError("broken handler")

    with caplog.at_level(logging.ERROR, logger="hatchway.agent"):
        workers.submit(failing)
        workers.submit(done.set)
        assert done.wait(WAIT)
    assert "a worker's task failed" in caplog.text and "broken handler" in caplog.text
    assert workers.threads == 1
    workers.close()


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Workers(0)
