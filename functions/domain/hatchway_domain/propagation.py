"""Checks that a zone's authoritative name servers serve the records the DNS job wrote, asking
them directly with dnspython (no recursive resolver, so no cache can make a record look served).

Waiting is bounded: a fixed number of rounds with a fixed pause between them. Which servers to
ask is injectable; in production :func:`discover_servers` finds them from the zone's NS records.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from .dns_plan import DesiredRecord, normalise_name

logger = logging.getLogger(__name__)
# Where nobody configured logging (a shell), the plan goes to stdout only, not again to stderr.
logger.addHandler(logging.NullHandler())

DNS_PORT: Final = 53
PROPAGATION_ATTEMPTS: Final = 6
"""Rounds of queries before a record counts as not propagated."""
PROPAGATION_INTERVAL_SECONDS: Final = 5.0
"""Pause between rounds; with the attempts, Cloudflare's usual few seconds fit easily."""
QUERY_TIMEOUT_SECONDS: Final = 3.0
"""How long one query to one server may take (UDP, then TCP if the answer was truncated)."""
DISCOVERY_LIFETIME_SECONDS: Final = 10.0
"""How long finding the zone's name servers through the recursive resolver may take."""
MAX_SERVERS: Final = 4
"""Authoritative servers asked; Cloudflare assigns two names, each with several addresses."""


class DiscoveryFailed(Exception):
    """The zone's authoritative servers could not be found."""


def discover_servers(zone_name: str, resolver: dns.resolver.Resolver) -> tuple[str, ...]:
    """IPv4 addresses of the zone's name servers, looked up through ``resolver``."""
    zone = normalise_name(zone_name)
    addresses: list[str] = []
    try:
        ns_answer = resolver.resolve(zone, "NS", lifetime=DISCOVERY_LIFETIME_SECONDS)
        hosts = sorted(normalise_name(rdata.to_text()) for rdata in ns_answer)
        for host in hosts:
            a_answer = resolver.resolve(host, "A", lifetime=DISCOVERY_LIFETIME_SECONDS)
            addresses += sorted(rdata.to_text() for rdata in a_answer)
    except dns.exception.DNSException as error:
        raise DiscoveryFailed(
            f"cannot find the name servers of {zone}: {type(error).__name__}: {error}"
        ) from None
    unique = tuple(dict.fromkeys(addresses))[:MAX_SERVERS]
    if not unique:
        raise DiscoveryFailed(f"the zone {zone} has no name server with an IPv4 address")
    return unique


def _served_value(rdata: object, record_type: str) -> str:
    if record_type == "CNAME":
        return normalise_name(str(getattr(rdata, "target", "")))
    if record_type == "TXT":
        return b"".join(getattr(rdata, "strings", ())).decode(errors="replace")
    return str(rdata)


def _same_address(have: str, want: str) -> bool:
    try:
        return ipaddress.ip_address(have) == ipaddress.ip_address(want)
    except ValueError:
        return False


@dataclass(frozen=True)
class PropagationCheck:
    """Asks every one of ``servers`` on ``port`` whether it serves each record."""

    servers: Sequence[str]
    port: int = DNS_PORT
    attempts: int = PROPAGATION_ATTEMPTS
    interval: float = PROPAGATION_INTERVAL_SECONDS
    query_timeout: float = QUERY_TIMEOUT_SECONDS
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("a propagation check needs at least one server to ask")
        if self.attempts < 1:
            raise ValueError("a propagation check needs at least one attempt")

    def missing(self, records: Iterable[DesiredRecord]) -> tuple[DesiredRecord, ...]:
        """The records some server still does not serve after the last round, sorted."""
        pending = sorted(records)
        for attempt in range(1, self.attempts + 1):
            pending = [record for record in pending if not self.served_everywhere(record)]
            if not pending or attempt == self.attempts:
                break
            logger.info(
                "%d record(s) not served by every name server yet (round %d of %d)",
                len(pending),
                attempt,
                self.attempts,
            )
            self.sleep(self.interval)
        return tuple(pending)

    def served_everywhere(self, record: DesiredRecord) -> bool:
        return all(self.served_by(server, record) for server in self.servers)

    def served_by(self, server: str, record: DesiredRecord) -> bool:
        query = dns.message.make_query(dns.name.from_text(record.name), record.type)
        try:
            response, _ = dns.query.udp_with_fallback(
                query, server, timeout=self.query_timeout, port=self.port
            )
        except (dns.exception.DNSException, OSError) as error:
            logger.info("name server %s did not answer for %s: %s", server, record.name, error)
            return False
        if response.rcode() != dns.rcode.NOERROR:
            return False
        wanted_type = dns.rdatatype.from_text(record.type)
        for rrset in response.answer:
            if rrset.rdtype != wanted_type or normalise_name(rrset.name.to_text()) != record.name:
                continue
            for rdata in rrset:
                value = _served_value(rdata, record.type)
                if record.type in ("A", "AAAA"):
                    if _same_address(value, record.content):
                        return True
                elif record.type == "CNAME":
                    if value == normalise_name(record.content):
                        return True
                elif value == record.content:
                    return True
        return False
