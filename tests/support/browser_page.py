"""What the browser tests share: where screenshots go, and a watch on everything a page asks
for and every error it logs (Content-Security-Policy violations included)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Page

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
"""Screenshots land here (removed by `make clean`, ignored by git)."""


@dataclass
class PageWatch:
    """Every URL the page asked for and every error it logged."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def assert_only(self, origin: str) -> None:
        """The page asked nothing of any other origin (data: URIs aside) and logged no error."""
        elsewhere = [u for u in self.requests if not u.startswith((origin, "data:"))]
        assert elsewhere == []
        assert self.errors == []
