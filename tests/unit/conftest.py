"""Fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hatchway.serving.forward import Forwarder, Target
from support.local_app import LocalApp


@pytest.fixture
def forwarder(app: LocalApp) -> Iterator[Forwarder]:
    """The agent's forwarder, pointed at the real local app."""
    forwarder = Forwarder(Target("127.0.0.1", app.port), timeout=5)
    yield forwarder
    forwarder.close()
