"""Propagation is judged by asking the zone's authoritative servers directly, with a bounded
number of rounds; the servers come from the zone's NS records unless given."""

from __future__ import annotations

from collections.abc import Iterator

import dns.resolver
import pytest

from hatchway_domain.dns_plan import DesiredRecord
from hatchway_domain.propagation import DiscoveryFailed, PropagationCheck, discover_servers
from support.authoritative_dns import AuthoritativeDNS
from support.fake_cloudflare import RecordStore

pytestmark = pytest.mark.usefixtures("no_system_resolver")

ZONE = "example.test"
ZONE_ID = "zone-1"
WILDCARD = DesiredRecord("*.t.example.test", "CNAME", "d-abc.execute-api.eu-west-1.amazonaws.com")
CONNECT = DesiredRecord(
    "connect.t.example.test", "CNAME", "d-ws.execute-api.eu-west-1.amazonaws.com"
)
ADDRESS = DesiredRecord("ip.example.test", "AAAA", "2001:db8::7")
TXT = DesiredRecord("note.example.test", "TXT", "hello")


@pytest.fixture
def store() -> RecordStore:
    records = RecordStore()
    records.add(ZONE_ID, "CNAME", WILDCARD.name, WILDCARD.content + ".")
    records.add(ZONE_ID, "CNAME", CONNECT.name, CONNECT.content.upper())
    records.add(ZONE_ID, "AAAA", ADDRESS.name, "2001:0db8:0:0::7")
    records.add(ZONE_ID, "TXT", TXT.name, "hello")
    return records


@pytest.fixture
def server(store: RecordStore) -> Iterator[AuthoritativeDNS]:
    with AuthoritativeDNS(store, [ZONE]) as running:
        yield running


def check(
    server: AuthoritativeDNS, sleeps: list[float], *, attempts: int = 6, interval: float = 5.0
) -> PropagationCheck:
    host, port = server.address
    return PropagationCheck(
        (host,), port=port, attempts=attempts, interval=interval, sleep=sleeps.append
    )


def test_records_served_by_the_authoritative_server_count_as_propagated(
    server: AuthoritativeDNS,
) -> None:
    sleeps: list[float] = []

    missing = check(server, sleeps).missing([WILDCARD, CONNECT, ADDRESS, TXT])

    assert missing == ()
    assert sleeps == []


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(DesiredRecord("absent.example.test", "CNAME", "x.test"), id="absent"),
        pytest.param(DesiredRecord(CONNECT.name, "CNAME", "d-other.test"), id="other target"),
        pytest.param(DesiredRecord(TXT.name, "TXT", "goodbye"), id="other text"),
    ],
)
def test_a_record_not_served_as_wanted_is_reported_after_bounded_rounds(
    server: AuthoritativeDNS, record: DesiredRecord
) -> None:
    sleeps: list[float] = []

    missing = check(server, sleeps, attempts=3, interval=0.25).missing([WILDCARD, record])

    assert missing == (record,)
    assert sleeps == [0.25, 0.25]


def test_a_record_that_appears_between_rounds_counts_as_propagated(
    server: AuthoritativeDNS, store: RecordStore
) -> None:
    late = DesiredRecord("late.example.test", "CNAME", "target.test")

    def publish_then_wait(seconds: float) -> None:
        store.add(ZONE_ID, "CNAME", late.name, late.content)

    host, port = server.address
    propagation = PropagationCheck((host,), port=port, attempts=3, sleep=publish_then_wait)

    assert propagation.missing([late]) == ()


def test_an_unreachable_server_counts_as_not_serving(server: AuthoritativeDNS) -> None:
    host, port = server.address
    server.__exit__(None, None, None)

    propagation = PropagationCheck((host,), port=port, attempts=1, query_timeout=0.2)

    assert propagation.missing([CONNECT]) == (CONNECT,)


def test_servers_are_found_from_the_zone_ns_records(
    server: AuthoritativeDNS, store: RecordStore
) -> None:
    store.add(ZONE_ID, "NS", ZONE, "ns1.example.test")
    store.add(ZONE_ID, "NS", ZONE, "ns2.example.test")
    store.add(ZONE_ID, "A", "ns1.example.test", "127.0.0.1")
    store.add(ZONE_ID, "A", "ns2.example.test", "127.0.0.2")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.address[0]]
    resolver.port = server.address[1]

    assert discover_servers(ZONE + ".", resolver) == ("127.0.0.1", "127.0.0.2")


def test_a_zone_without_name_servers_is_a_clear_error(server: AuthoritativeDNS) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.address[0]]
    resolver.port = server.address[1]

    with pytest.raises(DiscoveryFailed, match=r"cannot find the name servers of example\.test"):
        discover_servers(ZONE, resolver)


def test_a_check_without_servers_or_attempts_is_refused() -> None:
    with pytest.raises(ValueError, match="server"):
        PropagationCheck(())
    with pytest.raises(ValueError, match="attempt"):
        PropagationCheck(("127.0.0.1",), attempts=0)
