"""The test DNS server answers like an authoritative server for the fake Cloudflare zone: what
the store holds, right away, with correct negative answers, over UDP and TCP."""

from __future__ import annotations

from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from support.authoritative_dns import AuthoritativeDNS
from support.fake_cloudflare import RecordStore

ZONE = "example.test"
ZONE_ID = "zone-1"
QUERY_TIMEOUT = 2.0


@pytest.fixture
def store() -> RecordStore:
    records = RecordStore()
    records.add(ZONE_ID, "CNAME", "*.t.example.test", "d-abc.execute-api.eu-west-1.amazonaws.com")
    records.add(
        ZONE_ID, "CNAME", "connect.t.example.test", "d-ws.execute-api.eu-west-1.amazonaws.com"
    )
    records.add(ZONE_ID, "TXT", "_acme-challenge.t.example.test", "token-1")
    records.add(ZONE_ID, "TXT", "_acme-challenge.t.example.test", "token-2")
    records.add(ZONE_ID, "A", "www.deep.example.test", "192.0.2.10")
    records.add(ZONE_ID, "AAAA", "www.deep.example.test", "2001:db8::10", ttl=120)
    records.add(ZONE_ID, "CNAME", "shop.example.test", "shop.host.test", proxied=True)
    records.add(ZONE_ID, "TXT", "long.example.test", "x" * 1500)
    return records


@pytest.fixture
def server(store: RecordStore) -> Iterator[AuthoritativeDNS]:
    with AuthoritativeDNS(store, [ZONE]) as running:
        yield running
    assert running.errors == []


def ask(
    server: AuthoritativeDNS, name: str, kind: str, *, tcp: bool = False
) -> dns.message.Message:
    host, port = server.address
    query = dns.message.make_query(name, kind)
    if tcp:
        return dns.query.tcp(query, host, port=port, timeout=QUERY_TIMEOUT)
    return dns.query.udp(query, host, port=port, timeout=QUERY_TIMEOUT)


def answers(response: dns.message.Message) -> list[str]:
    return sorted(
        f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
        for rrset in response.answer
        for rdata in rrset
    )


@pytest.mark.parametrize(
    ("name", "kind", "expected"),
    [
        pytest.param(
            "connect.t.example.test",
            "CNAME",
            ["connect.t.example.test. 300 CNAME d-ws.execute-api.eu-west-1.amazonaws.com."],
            id="cname",
        ),
        pytest.param(
            "connect.t.example.test",
            "A",
            ["connect.t.example.test. 300 CNAME d-ws.execute-api.eu-west-1.amazonaws.com."],
            id="cname answers other types",
        ),
        pytest.param(
            "myapp.t.example.test",
            "A",
            ["myapp.t.example.test. 300 CNAME d-abc.execute-api.eu-west-1.amazonaws.com."],
            id="wildcard expands",
        ),
        pytest.param(
            "*.t.example.test",
            "CNAME",
            ["*.t.example.test. 300 CNAME d-abc.execute-api.eu-west-1.amazonaws.com."],
            id="wildcard asked literally",
        ),
        pytest.param(
            "_acme-challenge.t.example.test",
            "TXT",
            [
                '_acme-challenge.t.example.test. 300 TXT "token-1"',
                '_acme-challenge.t.example.test. 300 TXT "token-2"',
            ],
            id="txt set",
        ),
        pytest.param(
            "www.deep.example.test",
            "AAAA",
            ["www.deep.example.test. 120 AAAA 2001:db8::10"],
            id="explicit ttl",
        ),
        pytest.param(
            "shop.example.test", "A", ["shop.example.test. 300 A 192.0.2.1"], id="proxied hidden"
        ),
    ],
)
def test_answers_are_authoritative_and_come_from_the_store(
    server: AuthoritativeDNS, name: str, kind: str, expected: list[str]
) -> None:
    response = ask(server, name, kind)

    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert answers(response) == expected


@pytest.mark.parametrize(
    ("name", "kind", "rcode"),
    [
        pytest.param("deep.example.test", "A", dns.rcode.NOERROR, id="empty non-terminal"),
        pytest.param("www.deep.example.test", "TXT", dns.rcode.NOERROR, id="name without type"),
        pytest.param("shop.example.test", "CNAME", dns.rcode.NOERROR, id="proxied cname hidden"),
        pytest.param("example.test", "A", dns.rcode.NOERROR, id="apex without address"),
        pytest.param("nothing.example.test", "A", dns.rcode.NXDOMAIN, id="no such name"),
        pytest.param("a.www.deep.example.test", "A", dns.rcode.NXDOMAIN, id="below a leaf"),
        pytest.param("x.deep.example.test", "A", dns.rcode.NXDOMAIN, id="wildcard is not global"),
    ],
)
def test_negative_answers_carry_the_zone_soa(
    server: AuthoritativeDNS, name: str, kind: str, rcode: int
) -> None:
    response = ask(server, name, kind)

    assert response.rcode() == rcode
    assert response.answer == []
    assert [(str(r.name), dns.rdatatype.to_text(r.rdtype)) for r in response.authority] == [
        ("example.test.", "SOA")
    ]


def test_the_apex_has_an_soa(server: AuthoritativeDNS) -> None:
    response = ask(server, "example.test", "SOA")

    assert [line.split()[2] for line in answers(response)] == ["SOA"]


def test_names_outside_the_zones_are_refused(server: AuthoritativeDNS) -> None:
    response = ask(server, "example.com", "A")

    assert response.rcode() == dns.rcode.REFUSED
    assert not response.flags & dns.flags.AA


def test_tcp_answers_on_the_same_port(server: AuthoritativeDNS) -> None:
    response = ask(server, "connect.t.example.test", "CNAME", tcp=True)

    assert answers(response) == [
        "connect.t.example.test. 300 CNAME d-ws.execute-api.eu-west-1.amazonaws.com."
    ]


def test_a_large_answer_is_truncated_on_udp_and_whole_on_tcp(server: AuthoritativeDNS) -> None:
    host, port = server.address
    query = dns.message.make_query("long.example.test", "TXT")

    over_udp = ask(server, "long.example.test", "TXT")
    whole, used_tcp = dns.query.udp_with_fallback(query, host, port=port, timeout=QUERY_TIMEOUT)

    assert over_udp.flags & dns.flags.TC
    assert used_tcp
    assert b"".join(whole.answer[0][0].strings) == b"x" * 1500


def test_changes_to_the_store_are_served_at_once(
    server: AuthoritativeDNS, store: RecordStore
) -> None:
    record = store.add(ZONE_ID, "TXT", "_acme-challenge.new.example.test", "fresh")
    served = answers(ask(server, "_acme-challenge.new.example.test", "TXT"))
    store.delete(record["id"])
    gone = ask(server, "_acme-challenge.new.example.test", "TXT")

    assert served == ['_acme-challenge.new.example.test. 300 TXT "fresh"']
    assert gone.rcode() == dns.rcode.NXDOMAIN
