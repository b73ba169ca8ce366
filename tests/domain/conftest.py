"""Fixtures shared by the domain jobs' tests."""

from __future__ import annotations

import dns.resolver
import pytest


@pytest.fixture
def no_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may read /etc/resolv.conf or ask a resolver beyond loopback: DNS questions go
    only to the test's own server."""

    def refuse(self: dns.resolver.Resolver, source: object) -> None:
        raise AssertionError("the system resolver configuration was consulted")

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", refuse)
