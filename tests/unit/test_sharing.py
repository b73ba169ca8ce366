"""The agent's share-link helpers: durations as people write them, and the listing's lines."""

from __future__ import annotations

import pytest

from hatchway import protocol
from hatchway.serving.sharing import describe, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("45", 45), (" 1.5h ", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2w", "0s", "-5m", "31d", "soon"])
def test_durations_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("share", "line"),
    [
        (
            protocol.ShareInfo("abc", "app", ("GET", "HEAD"), "/r/", 1000 + 7200, 5, 2),
            "abc  app  GET,HEAD /r/  2/5 uses  expires in 2.0 h",
        ),
        (
            protocol.ShareInfo("abc", "app", ("GET",), "/", 1000 + 600),
            "abc  app  GET /  0 uses  expires in 10 min",
        ),
        (protocol.ShareInfo("abc", "app", ("GET",), "/", 999), "abc  app  GET /  0 uses  expired"),
        (
            protocol.ShareInfo("abc", "app", ("GET",), "/", 5000, revoked=True),
            "abc  app  GET /  0 uses  revoked",
        ),
    ],
)
def test_listing_lines(share: protocol.ShareInfo, line: str) -> None:
    assert describe(share, now=1000) == line
