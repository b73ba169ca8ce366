"""Makes ``tests/support`` importable as ``support`` for every test, and holds the fixtures
every kind of test uses."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support.local_app import LocalApp, run_local_app


@pytest.fixture
def app() -> Iterator[LocalApp]:
    """A real local app on 127.0.0.1, what the agent forwards to."""
    with run_local_app() as local_app:
        yield local_app
