"""How the service wires its forwarders: large bodies pass straight through to the relay's blob
store whether or not the inspector is on, and with it on they keep their first bytes for it."""

from __future__ import annotations

import pytest

from hatchway.config import Settings
from hatchway.service import Service
from hatchway.serving.tunnels import tunnel_options


@pytest.mark.parametrize(("inspect", "kept"), [(None, False), ("127.0.0.1:0", True)])
def test_large_bodies_pass_through_with_the_inspector_on_or_off(
    inspect: str | None, kept: bool
) -> None:
    tunnels = [tunnel_options("3000", subdomain="one"), tunnel_options("3001", subdomain="two")]
    service = Service(Settings("ws://127.0.0.1:9", "hw_token"), tunnels, inspect=inspect)
    try:
        assert [(f.pass_large_bodies, f.keep_passed_prefix) for f in service.forwarders] == [
            (True, kept),
            (True, kept),
        ]
    finally:
        service.close()
