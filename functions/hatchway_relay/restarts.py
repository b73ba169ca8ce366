"""Visitors of a tunnel whose lone agent is stopping (``protocol.Leaving``): held for a short
while in case an agent of the same token claims the name again (a restart), then served by the
new holder, or told that the agent was stopped on purpose.

A held visit reads the claim every ``HOLD_LOOK_SECONDS`` (one strongly consistent read each on
DynamoDB), only while a restart is under way. Between reads it pauses the way every visit waits,
with an ``AwaitAnswer`` (so the local gateway parks no thread for it): for an answer that never
comes, to a request id no agent was ever sent.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol

from hatchway_relay import request_ids
from hatchway_relay.config import RelayConfig
from hatchway_relay.ports import Claim, Clock, Store
from hatchway_relay.replies import AwaitAnswer, Reply, error_reply

HOLD_LOOK_SECONDS = 0.2
"""How often a held visitor's tunnel is looked up again: a restarted agent gets the visitors
this long after its hello at most."""

NOBODY = "restart-hold"
"""The connection a pause's id is bound to: no agent's (API Gateway's ids are base64)."""


class HoldParts(Protocol):
    """What a hold uses of the relay (``core.Relay``)."""

    store: Store
    clock: Clock
    config: RelayConfig

    @property
    def key(self) -> bytes: ...


HoldSteps = Generator[AwaitAnswer, bytes | None, Claim | Reply]


def hold(relay: HoldParts, left: Claim, deadline: float) -> HoldSteps:
    """Wait for the name of ``left`` (a claim whose agent left) to be claimed afresh, until the
    hold ends or the visitor's ``deadline``: the new claim, or the coded 503 that says the
    agent was stopped."""
    until = min(left.expires_at, deadline)
    pause = request_ids.new_request_id(relay.key, NOBODY, until)
    relay.store.expect_response(pause, NOBODY, until)
    try:
        while (now := relay.clock.now()) < until:
            look = min(until, now + HOLD_LOOK_SECONDS)
            yield AwaitAnswer(pause, look, look - now)
            now = relay.clock.now()
            claim = relay.store.get_claim(left.name)
            if claim is not None and claim.alive(now) and not claim.leaving(now):
                return claim
    finally:
        relay.store.forget_response(pause)
    return stopped(left.name, relay.config.restart_hold_seconds)


def stopped(name: str, hold_seconds: float) -> Reply:
    """The visitor's answer when no agent took the name back in time."""
    return error_reply(
        503,
        "agent-stopped",
        f"The agent serving tunnel {name!r} was stopped on purpose, and no agent took the name "
        f"back within {hold_seconds:g} s (a restart does). Try again shortly; if the tunnel "
        "stays down, its owner needs to start `hatchway http` again.",
    )
