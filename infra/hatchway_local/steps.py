"""An HTTP invocation run as the relay's steps (``visits.VisitSteps``) on the local gateway's
event loop, with no thread of its own: each step's posts are written, then its wait for the
agent's answer is awaited, as a blocking Lambda invocation would do them in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from hatchway_local.concurrency import HTTP_FUNCTION, ConcurrencyPool
from hatchway_relay.handlers.http import HandlerSteps
from hatchway_relay.visits import AwaitAnswer

log = logging.getLogger("hatchway.local")


class StepsHost(Protocol):
    """What an execution needs of the gateway running it."""

    concurrency: ConcurrencyPool
    loop_sends: list[Coroutine[Any, Any, None]] | None
    """Posts made by the invocation running on the loop right now, written once it returns."""

    async def answer(self, wait: AwaitAnswer, give_up: float | None = None) -> bytes | None: ...


class Execution:
    """An HTTP invocation running as steps (``visits.VisitSteps``) on the gateway's loop:
    each step's posts are written before its wait for the answer is awaited, and the last
    step's before the result counts. ``run`` may be interrupted (the visitor's timeout, a
    cancelled task) and called again to go on where it stopped; the execution gives its slot
    back once it has ended, however it ends."""

    def __init__(self, gateway: StepsHost, steps: HandlerSteps) -> None:
        self.gateway = gateway
        self.steps = steps
        self.sends: list[Coroutine[Any, Any, None]] = []
        """The current step's posts not yet written."""
        self.wait: AwaitAnswer | None = None
        self.answer: bytes | None = None
        self.result: dict[str, Any] | None = None
        self.ended = False

    async def run(self, give_up: float | None) -> dict[str, Any] | None:
        """The handler's result (None if it raised). ``TimeoutError`` if a wait is still
        going on at ``give_up``."""
        finished = False
        try:
            while True:
                while self.sends:
                    send = self.sends.pop(0)
                    try:
                        await send
                    except Exception as exc:  # an agent gone meanwhile: its $disconnect cleans up
                        log.debug("a post after an invocation failed: %s", exc)
                if self.ended:
                    finished = True
                    return self.result
                if self.wait is not None:
                    self.answer = await self.gateway.answer(self.wait, give_up)
                    self.wait = None
                self._step()
        except (TimeoutError, asyncio.CancelledError):
            if give_up is None:  # no one goes on after this: the steps end here
                finished = True
            raise
        except BaseException:
            finished = True
            raise
        finally:
            if finished:
                for send in self.sends:
                    send.close()
                self.steps.close()  # on cancellation, the relay's cleanup still runs
                self.gateway.concurrency.release(HTTP_FUNCTION)

    def _step(self) -> None:
        sends: list[Coroutine[Any, Any, None]] = []
        self.gateway.loop_sends = sends
        try:
            self.wait = self.steps.send(self.answer)
        except StopIteration as done:
            self.result, self.ended = done.value, True
        except Exception:
            log.exception("handler failed for a visitor's request")
            self.ended = True
        finally:
            self.gateway.loop_sends = None
        self.sends, self.answer = sends, None
