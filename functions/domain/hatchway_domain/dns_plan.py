"""The DNS reconcile job's decisions, free of I/O: which records a stack wants in its Cloudflare
zone, and which creates, updates and deletes bring the zone there without touching anything the
stack does not own.

Ownership is a marker in Cloudflare's ``comment`` field, one per stack. A record is the stack's
only if its comment is exactly that marker; every other record is foreign and is never written.
A foreign record on a name the stack wants is a conflict: it stays, and the conflict is reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal

RecordType = Literal["A", "AAAA", "CNAME", "TXT"]

MARKER_PREFIX: Final = "managed by hatchway stack "
MAX_COMMENT_CHARS: Final = 100
"""Longest record comment Cloudflare accepts on every plan (Free plan limit)."""
MARKER_HASH_CHARS: Final = 10
"""Hex digits of the stack name's hash that keep a shortened marker unique to its stack."""
AUTOMATIC_TTL: Final = 1
"""Cloudflare's "automatic" TTL (300 s for DNS-only records)."""
EXCLUSIVE_TYPES: Final = frozenset({"CNAME"})
"""A name holding one of these holds nothing else (RFC 1034 §3.6.2)."""
HOSTNAME_PATTERN: Final = re.compile(
    r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z"
)
"""A DNS name as this job writes it: lowercase, no trailing dot, an optional leading ``*.``,
underscores allowed (ACM's validation names start with one)."""


class PlanError(ValueError):
    """The stack asks for records that cannot exist together, or outside its zone."""


def normalise_name(name: str) -> str:
    """Lowercase and without the trailing dot, as Cloudflare shows names."""
    return name.strip().rstrip(".").lower()


def ownership_marker(stack_name: str) -> str:
    """The comment that marks a record as this stack's.

    Cloudflare caps comments, so a long stack name is cut and followed by a hash of the whole
    name: two stacks never share a marker, and the marker never changes for a stack.
    """
    marker = MARKER_PREFIX + stack_name
    if len(marker) <= MAX_COMMENT_CHARS:
        return marker
    digest = hashlib.sha256(stack_name.encode()).hexdigest()[:MARKER_HASH_CHARS]
    return marker[: MAX_COMMENT_CHARS - MARKER_HASH_CHARS - 1] + "~" + digest


def _check_hostname(name: str, what: str) -> str:
    name = normalise_name(name)
    if not HOSTNAME_PATTERN.match(name):
        raise PlanError(f"{what} {name!r} is not a valid DNS name")
    return name


@dataclass(frozen=True, order=True)
class DesiredRecord:
    """A record the stack wants: always DNS-only (API Gateway terminates TLS itself)."""

    name: str
    type: RecordType
    content: str
    purpose: str = field(default="", compare=False)
    """Why the stack wants it, for people reading the plan."""
    ttl: int = field(default=AUTOMATIC_TTL, compare=False)

    def __str__(self) -> str:
        return f"{self.type} {self.name} -> {self.content}"


@dataclass(frozen=True)
class ZoneRecord:
    """A record as it is in the zone right now."""

    id: str
    name: str
    type: str
    content: str
    ttl: int
    proxied: bool
    comment: str | None

    def __str__(self) -> str:
        proxy = ", proxied" if self.proxied else ""
        return f"{self.type} {self.name} -> {self.content} (ttl {self.ttl}{proxy})"

    def satisfies(self, wanted: DesiredRecord) -> bool:
        """True when this record already serves exactly what ``wanted`` asks for."""
        return (
            self.type == wanted.type
            and normalise_name(self.name) == wanted.name
            and _same_content(self.type, self.content, wanted.content)
            and self.ttl == wanted.ttl
            and not self.proxied
        )

    def blocks(self, wanted: DesiredRecord) -> bool:
        """True when this record's presence keeps ``wanted`` from being served as asked."""
        if normalise_name(self.name) != wanted.name:
            return False
        return (
            self.type == wanted.type
            or self.type in EXCLUSIVE_TYPES
            or wanted.type in EXCLUSIVE_TYPES
        )


def _same_content(record_type: str, have: str, want: str) -> bool:
    if record_type == "CNAME":
        return normalise_name(have) == normalise_name(want)
    return have == want


@dataclass(frozen=True)
class ValidationRecord:
    """One DNS validation record ACM asks for (``ResourceRecord`` of a certificate)."""

    name: str
    type: str
    value: str
    domain: str
    """The certificate name it validates."""


@dataclass(frozen=True)
class StackLayout:
    """What the stack serves under its domain: the input of :func:`desired_records`."""

    domain: str
    """e.g. ``t.example.com``: tunnels answer at ``<name>.t.example.com``."""
    http_target: str | None = None
    """Regional target of the HTTP API's ``*.<domain>`` custom domain
    (``d-xxxx.execute-api.<region>.amazonaws.com``). None while that custom domain does not
    exist: on a first deploy it waits for its certificate, whose validation record comes first."""
    connect_target: str | None = None
    """Regional target of the WebSocket API's ``connect.<domain>`` custom domain, if any."""
    validation: Sequence[ValidationRecord] = ()
    custom_hostnames: Mapping[str, str] = field(default_factory=dict)
    """Per-tunnel hostnames a user brings (``api.mycompany.com``) -> their regional target."""


def desired_records(layout: StackLayout) -> tuple[DesiredRecord, ...]:
    """Every record the stack wants, sorted, each name once.

    ACM gives the wildcard and the apex the same validation record: duplicates merge. Two
    different wishes for one name are a configuration error, raised before anything is written.
    """
    domain = _check_hostname(layout.domain, "domain")
    if domain.startswith("*."):
        raise PlanError(f"the domain {domain!r} must not be a wildcard: the job adds the *.")
    wanted = []
    if layout.http_target:
        wanted.append(
            DesiredRecord(
                f"*.{domain}",
                "CNAME",
                _check_hostname(layout.http_target, "HTTP API target"),
                "tunnels, through the HTTP API custom domain",
            )
        )
    if layout.connect_target:
        wanted.append(
            DesiredRecord(
                f"connect.{domain}",
                "CNAME",
                _check_hostname(layout.connect_target, "WebSocket API target"),
                "agents, through the WebSocket API custom domain",
            )
        )
    for validation in layout.validation:
        if validation.type.upper() != "CNAME":
            raise PlanError(
                f"ACM asks for a {validation.type} validation record for {validation.domain}; "
                "only CNAME validation records are supported"
            )
        wanted.append(
            DesiredRecord(
                _check_hostname(validation.name, "validation record name"),
                "CNAME",
                _check_hostname(validation.value, "validation record value"),
                f"ACM validation of {normalise_name(validation.domain)}",
            )
        )
    for hostname, target in sorted(layout.custom_hostnames.items()):
        wanted.append(
            DesiredRecord(
                _check_hostname(hostname, "custom hostname"),
                "CNAME",
                _check_hostname(target, f"target of {hostname}"),
                "custom hostname",
            )
        )
    by_name: dict[str, DesiredRecord] = {}
    for record in wanted:
        earlier = by_name.setdefault(record.name, record)
        if earlier != record:
            raise PlanError(
                f"{record.name} is wanted twice with different content: {earlier.content} "
                f"({earlier.purpose}) and {record.content} ({record.purpose})"
            )
    return tuple(sorted(by_name.values()))


def outside_zone(records: Iterable[DesiredRecord], zone_name: str) -> list[DesiredRecord]:
    """The records whose name does not belong to ``zone_name``."""
    zone = normalise_name(zone_name)
    return [r for r in records if r.name != zone and not r.name.endswith("." + zone)]


def _why(record: DesiredRecord) -> str:
    return f" ({record.purpose})" if record.purpose else ""


@dataclass(frozen=True)
class Create:
    record: DesiredRecord
    verb: ClassVar[str] = "create"
    past: ClassVar[str] = "created"

    @property
    def summary(self) -> str:
        return f"{self.record}{_why(self.record)}"

    def __str__(self) -> str:
        return f"{self.verb} {self.summary}"


@dataclass(frozen=True)
class Update:
    current: ZoneRecord
    wanted: DesiredRecord
    verb: ClassVar[str] = "repair"
    past: ClassVar[str] = "repaired"

    @property
    def summary(self) -> str:
        return f"{self.current} to {self.wanted}{_why(self.wanted)}"

    def __str__(self) -> str:
        return f"{self.verb} {self.summary}"


@dataclass(frozen=True)
class Delete:
    current: ZoneRecord
    verb: ClassVar[str] = "delete"
    past: ClassVar[str] = "deleted"

    @property
    def summary(self) -> str:
        return f"{self.current} (owned by this stack, no longer wanted)"

    def __str__(self) -> str:
        return f"{self.verb} {self.summary}"


Change = Create | Update | Delete


@dataclass(frozen=True)
class Conflict:
    """A foreign record sits where the stack wants one of its own; it is left as it is."""

    wanted: DesiredRecord
    foreign: tuple[ZoneRecord, ...]

    def __str__(self) -> str:
        held = "; ".join(
            f"{record} with comment {record.comment!r}" if record.comment else str(record)
            for record in self.foreign
        )
        return (
            f"conflict: {self.wanted}{_why(self.wanted)} is wanted, but {held} is not "
            "managed by this stack and was left alone; delete it in Cloudflare to let the job "
            "create its record"
        )


@dataclass(frozen=True)
class Plan:
    """Changes in the order they must be applied: deletes free names before creates use them."""

    changes: tuple[Change, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    foreign_satisfied: tuple[DesiredRecord, ...] = ()
    """Wanted records already served exactly by a foreign record: fine, and left alone."""

    @property
    def creates(self) -> tuple[Create, ...]:
        return tuple(c for c in self.changes if isinstance(c, Create))

    @property
    def updates(self) -> tuple[Update, ...]:
        return tuple(c for c in self.changes if isinstance(c, Update))

    @property
    def deletes(self) -> tuple[Delete, ...]:
        return tuple(c for c in self.changes if isinstance(c, Delete))

    def lines(self) -> list[str]:
        """The plan in plain words, one line per change or conflict."""
        if not self.changes and not self.conflicts:
            return ["nothing to change: every wanted record is in place"]
        return [str(item) for item in (*self.changes, *self.conflicts)]


def plan_changes(
    desired: Iterable[DesiredRecord], actual: Iterable[ZoneRecord], marker: str
) -> Plan:
    """What to change in a zone holding ``actual`` so that it serves ``desired``.

    Only records whose comment is ``marker`` are ever updated or deleted. Where the stack owns
    several records for one wanted name and type, it keeps one (a matching one if it can) and
    deletes the others. Its records on a name held by a foreign record stay as they are.
    """
    records = list(actual)
    owned = sorted((r for r in records if r.comment == marker), key=lambda r: r.id)
    foreign = [r for r in records if r.comment != marker]
    kept: set[str] = set()
    creates: list[Create] = []
    updates: list[Update] = []
    conflicts: list[Conflict] = []
    satisfied: list[DesiredRecord] = []
    for wanted in sorted(desired):
        mine = [r for r in owned if r.blocks(wanted)]
        blocking = [r for r in foreign if r.blocks(wanted)]
        if blocking:
            kept.update(r.id for r in mine)
            if len(blocking) == 1 and blocking[0].satisfies(wanted):
                satisfied.append(wanted)
            else:
                conflicts.append(Conflict(wanted, tuple(blocking)))
            continue
        same_type = [r for r in mine if r.type == wanted.type]
        if not same_type:
            creates.append(Create(wanted))
            continue
        keep = next((r for r in same_type if r.satisfies(wanted)), same_type[0])
        kept.add(keep.id)
        if not keep.satisfies(wanted):
            updates.append(Update(keep, wanted))
    deletes = [Delete(r) for r in owned if r.id not in kept]
    return Plan(
        changes=(*deletes, *updates, *creates),
        conflicts=tuple(conflicts),
        foreign_satisfied=tuple(satisfied),
    )
