"""A small authoritative DNS server on loopback that serves a :class:`RecordStore`'s records for
given zones, over UDP and TCP on one ephemeral port, the way Cloudflare's name servers would.

It answers A, AAAA, CNAME, TXT and NS from the store (plus a synthesised SOA at each apex),
tells NXDOMAIN from an existing name without data (both with the SOA in the authority section,
so resolvers and pebble cache and report correctly), expands ``*.`` wildcards as RFC 4592 says,
hides proxied records behind Cloudflare-style proxy addresses, and refuses names outside its
zones. It never recurses and never forwards: nothing leaves loopback.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final

from dnslib import AAAA, CNAME, NS, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord
from dnslib.server import DNSHandler, DNSServer

from support.fake_cloudflare import RecordStore, normalise_name

HOST: Final = "127.0.0.1"
AUTOMATIC_TTL: Final = 1
"""The store's TTL value meaning "automatic"."""
AUTOMATIC_TTL_SECONDS: Final = 300
"""What Cloudflare serves for an automatic TTL."""
NEGATIVE_TTL_SECONDS: Final = 60
"""SOA minimum: how long a resolver may cache "no such record"."""
SOA_TIMERS: Final = (1, 10000, 2400, 604800, NEGATIVE_TTL_SECONDS)
"""Serial, refresh, retry, expire, minimum."""
MAX_UDP_PAYLOAD: Final = 512
"""Answers over this are truncated on UDP (no EDNS here), so clients retry over TCP."""
MAX_TXT_CHUNK: Final = 255
"""Longest character-string in a TXT record."""
PROXY_ADDRESSES: Final = {"A": "192.0.2.1", "AAAA": "2001:db8::1"}
"""What a proxied record resolves to instead of its content (documentation addresses)."""
SERVED_TYPES: Final = frozenset({"A", "AAAA", "CNAME", "TXT", "NS"})
PROXIABLE_TYPES: Final = frozenset({"A", "AAAA", "CNAME"})
BIND_ATTEMPTS: Final = 20
"""Tries at finding a port free for both UDP and TCP."""
SERVE_POLL_INTERVAL: Final = 0.02
"""How often each serving loop looks for a shutdown request: bounds how long exit takes."""
QUOTED_STRING: Final = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _rdata(rtype: str, value: str) -> Any:
    if rtype == "SOA":
        return SOA(f"ns1.{value}.", f"hostmaster.{value}.", SOA_TIMERS)
    if rtype == "A":
        return A(value)
    if rtype == "AAAA":
        return AAAA(value)
    if rtype == "CNAME":
        return CNAME(value + ".")
    if rtype == "NS":
        return NS(value + ".")
    return TXT(_txt_strings(value))


def _txt_strings(content: str) -> list[str]:
    """Cloudflare accepts TXT content bare or as quoted strings; both end up as strings here."""
    quoted = QUOTED_STRING.findall(content)
    if quoted and content.strip().startswith('"'):
        return [re.sub(r"\\(.)", r"\1", part) for part in quoted]
    return [content[i : i + MAX_TXT_CHUNK] for i in range(0, len(content), MAX_TXT_CHUNK)] or [""]


class _ZoneResolver:
    """dnslib's resolver interface over the store; ``resolve`` runs in the servers' threads."""

    def __init__(self, store: RecordStore, zones: Iterable[str]) -> None:
        self.store = store
        self.zones = sorted({normalise_name(zone) for zone in zones}, key=len, reverse=True)
        self.errors: list[str] = []
        self._errors_lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply(ra=0, aa=1)
        try:
            self._answer(request, reply)
        except Exception as error:
            # A bug in the fake must show in the test that met it, not as a silent timeout.
            self.record_error(f"{request.q.qname}: {type(error).__name__}: {error}")
            reply = request.reply(ra=0, aa=0)
            reply.header.rcode = RCODE.SERVFAIL
        if getattr(handler, "protocol", "udp") == "udp" and len(reply.pack()) > MAX_UDP_PAYLOAD:
            # dnslib's own truncation drops the question, which clients reject as a mismatch.
            reply = request.reply(ra=0, aa=1)
            reply.header.tc = 1
        return reply

    def record_error(self, text: str) -> None:
        with self._errors_lock:
            self.errors.append(text)

    def _zone_of(self, name: str) -> str | None:
        for zone in self.zones:
            if name == zone or name.endswith("." + zone):
                return zone
        return None

    def _answer(self, request: DNSRecord, reply: DNSRecord) -> None:
        qname = normalise_name(str(request.q.qname))
        zone = self._zone_of(qname)
        if zone is None:
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return
        records = [
            record
            for record in self.store.records()
            if record["name"] == zone or record["name"].endswith("." + zone)
        ]
        served = self._node(qname, zone, records)
        if served is None:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self._soa(zone))
            return
        qtype = QTYPE[request.q.qtype]
        matching = [item for item in served if qtype in (item[0], "ANY")]
        if not matching and qtype != "CNAME":
            # A CNAME answers every type at its name; the client follows it.
            matching = [item for item in served if item[0] == "CNAME"]
        if not matching:
            reply.add_auth(self._soa(zone))
            return
        for rtype, value, ttl in matching:
            reply.add_answer(
                RR(request.q.qname, getattr(QTYPE, rtype), ttl=ttl, rdata=_rdata(rtype, value))
            )

    def _node(
        self, qname: str, zone: str, records: list[dict[str, Any]]
    ) -> list[tuple[str, str, int]] | None:
        """What is served at ``qname`` as (type, value, ttl); None when the name does not exist."""

        def exists(name: str) -> bool:
            return name == zone or any(
                r["name"] == name or r["name"].endswith("." + name) for r in records
            )

        source = qname
        if not exists(qname):
            encloser = qname.partition(".")[2]
            while not exists(encloser):
                encloser = encloser.partition(".")[2]
            source = "*." + encloser
            if not any(r["name"] == source for r in records):
                return None
        served: list[tuple[str, str, int]] = []
        for record in records:
            if record["name"] != source or record["type"] not in SERVED_TYPES:
                continue
            ttl = AUTOMATIC_TTL_SECONDS if record["ttl"] == AUTOMATIC_TTL else int(record["ttl"])
            if record["proxied"] and record["type"] in PROXIABLE_TYPES:
                served += [(rtype, address, ttl) for rtype, address in PROXY_ADDRESSES.items()]
            else:
                value = record["content"]
                if record["type"] in ("CNAME", "NS"):
                    value = normalise_name(value)
                served.append((record["type"], value, ttl))
        if qname == zone:
            served.append(("SOA", zone, NEGATIVE_TTL_SECONDS))
        return list(dict.fromkeys(served))

    @staticmethod
    def _soa(zone: str) -> RR:
        return RR(zone + ".", QTYPE.SOA, ttl=NEGATIVE_TTL_SECONDS, rdata=_rdata("SOA", zone))


class _QuietLogger:
    """dnslib prints every query by default; the tests read answers, not logs."""

    def __init__(self, resolver: _ZoneResolver) -> None:
        self.resolver = resolver

    def log_error(self, handler: Any, error: Exception) -> None:
        self.resolver.record_error(f"undecodable request: {error}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("log_"):
            return lambda *args: None
        raise AttributeError(name)


class AuthoritativeDNS:
    """The server as a context manager: answering on ``address`` between enter and exit.

    ``errors`` lists requests the fake failed on (answered SERVFAIL); a test may assert it empty.
    """

    def __init__(self, store: RecordStore, zones: Iterable[str]) -> None:
        self._resolver = _ZoneResolver(store, zones)
        self.address: tuple[str, int] = (HOST, 0)
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def errors(self) -> list[str]:
        with self._resolver._errors_lock:
            return list(self._resolver.errors)

    def _bind(self) -> list[DNSServer]:
        logger = _QuietLogger(self._resolver)
        for _ in range(BIND_ATTEMPTS):
            udp = DNSServer(self._resolver, address=HOST, port=0, logger=logger, handler=DNSHandler)
            port = udp.server.server_address[1]
            try:
                tcp = DNSServer(
                    self._resolver,
                    address=HOST,
                    port=port,
                    tcp=True,
                    logger=logger,
                    handler=DNSHandler,
                )
            except OSError:
                # Someone holds this port for TCP: try another one.
                udp.server.server_close()
                continue
            return [udp, tcp]
        raise OSError(f"no loopback port free for both UDP and TCP after {BIND_ATTEMPTS} tries")

    def __enter__(self) -> AuthoritativeDNS:
        # Both sockets are bound (and TCP listening) once _bind returns, so queries sent from now
        # on wait in the kernel until the serving threads read them: the address is ready.
        self._servers = self._bind()
        self.address = (HOST, self._servers[0].server.server_address[1])
        for server in self._servers:
            thread = threading.Thread(
                target=server.server.serve_forever,
                kwargs={"poll_interval": SERVE_POLL_INTERVAL},
                name="authoritative-dns",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers, self._threads = [], []
