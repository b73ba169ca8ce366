"""The DNS reconcile job: reads what the stack wants (ACM validation records included), lists the
Cloudflare zones (the stack's, and any other the token can read, where custom hostnames may
live), applies the planned creates/updates/deletes through the official SDK, checks the zones'
authoritative servers serve the result, and reports it.

Clients are injected (the Lambda's composition root builds them; :func:`main` builds its own for
a run from a shell). The Cloudflare token only ever lives inside the SDK client: no setting,
report, log line or error here holds it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import boto3
import cloudflare
import dns.resolver
from botocore.exceptions import BotoCoreError, ClientError

from .dns_plan import (
    Conflict,
    Create,
    Delete,
    DesiredRecord,
    Plan,
    PlanError,
    StackLayout,
    Update,
    ValidationRecord,
    ZoneRecord,
    desired_records,
    normalise_name,
    outside_zone,
    ownership_marker,
    plan_changes,
)
from .propagation import DNS_PORT, DiscoveryFailed, PropagationCheck, discover_servers

logger = logging.getLogger(__name__)
# Where nobody configured logging (a shell), the plan goes to stdout only, not again to stderr.
logger.addHandler(logging.NullHandler())

LIST_PAGE_SIZE: Final = 500
"""Records per page when listing the zone."""
ZONE_PAGE_SIZE: Final = 50
"""Zones per page when listing the zones the token can read (Cloudflare's maximum)."""
MAX_LIST_PAGES: Final = 100
"""Pages listed at most (50,000 records): a zone beyond that, or a server that never stops
paging, ends the run with an error instead of looping."""
ZONE_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9-]{1,64}$")
TOKEN_ENV: Final = "CLOUDFLARE_API_TOKEN"
"""Where :func:`main` reads the token (the Lambda reads it from Secrets Manager or SSM)."""


class ReconcileError(Exception):
    """The job could not finish; what was applied before stays. Never carries the token."""


class InvalidDnsSettings(ReconcileError, ValueError):
    """The job is configured wrongly: nothing was written."""


def _port(value: str | None) -> int:
    if value is None:
        return DNS_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise InvalidDnsSettings(f"DNS_PORT must be a port number, not {value!r}")
    return int(value)


def _split(value: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[,\s]+", value) if part)


@dataclass(frozen=True)
class Settings:
    """What the stack wants in which zone, as the Lambda's environment describes it."""

    domain: str
    zone_id: str
    stack_name: str
    """Names the ownership marker: records carrying another stack's marker are foreign."""
    http_target: str | None = None
    """Regional target of ``*.<domain>``; None (no wildcard record) until that custom domain
    exists, so a first run can already write the certificate's validation record."""
    connect_target: str | None = None
    certificate_arns: tuple[str, ...] = ()
    """ACM certificates whose DNS validation records the zone must hold."""
    custom_hostnames: tuple[tuple[str, str], ...] = ()
    """(hostname, regional target) pairs a user brings for reserved tunnels (the composition
    root fills them in from ``custom_domains``)."""
    token_source: str | None = None
    """Secret name/ARN or SSM parameter holding the Cloudflare token (read by the caller)."""
    name_servers: tuple[str, ...] = ()
    """Addresses to check propagation against; empty: the zone's NS records decide."""
    dns_port: int = DNS_PORT
    """Port those servers answer on (53 but in tests)."""

    def __post_init__(self) -> None:
        for name in ("domain", "zone_id", "stack_name"):
            if not str(getattr(self, name)).strip():
                raise InvalidDnsSettings(f"the DNS job needs a {name.replace('_', ' ')}")
        if not ZONE_ID_PATTERN.match(self.zone_id):
            raise InvalidDnsSettings(f"{self.zone_id!r} is not a Cloudflare zone id")
        object.__setattr__(self, "domain", normalise_name(self.domain))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from the Lambda's environment:

        ``DOMAIN_NAME``, ``CLOUDFLARE_ZONE_ID``, ``STACK_NAME`` (required); ``HTTP_API_TARGET``,
        ``CONNECT_API_TARGET``, ``CERTIFICATE_ARNS`` (comma or space separated),
        ``CLOUDFLARE_API_TOKEN_SECRET``, ``DNS_NAME_SERVERS`` (comma or space separated
        addresses), ``DNS_PORT``. Empty values count as unset. Custom hostnames' targets come from
        ``custom_domains``, which keeps their API Gateway domains.
        """

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            domain=get("DOMAIN_NAME") or "",
            zone_id=get("CLOUDFLARE_ZONE_ID") or "",
            http_target=get("HTTP_API_TARGET"),
            stack_name=get("STACK_NAME") or "",
            connect_target=get("CONNECT_API_TARGET"),
            certificate_arns=_split(get("CERTIFICATE_ARNS") or ""),
            token_source=get("CLOUDFLARE_API_TOKEN_SECRET"),
            name_servers=_split(get("DNS_NAME_SERVERS") or ""),
            dns_port=_port(get("DNS_PORT")),
        )

    @property
    def marker(self) -> str:
        return ownership_marker(self.stack_name)

    def layout(self, validation: Sequence[ValidationRecord] = ()) -> StackLayout:
        return StackLayout(
            domain=self.domain,
            http_target=self.http_target,
            connect_target=self.connect_target,
            validation=tuple(validation),
            custom_hostnames=dict(self.custom_hostnames),
        )


@dataclass(frozen=True)
class Report:
    """The outcome of one run. In a dry run the changes are the planned ones, none applied."""

    zone_name: str
    dry_run: bool = False
    created: tuple[Create, ...] = ()
    updated: tuple[Update, ...] = ()
    deleted: tuple[Delete, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    unpropagated: tuple[DesiredRecord, ...] = ()
    propagation_error: str | None = None
    foreign_satisfied: tuple[DesiredRecord, ...] = ()

    @property
    def drift_repaired(self) -> int:
        """Records written to bring the zone back to what the stack wants (the metric)."""
        if self.dry_run:
            return 0
        return len(self.created) + len(self.updated) + len(self.deleted)

    @property
    def failed(self) -> bool:
        """True when the alarm should fire: a conflict, or records the zone does not serve."""
        return bool(self.conflicts or self.unpropagated or self.propagation_error)

    def lines(self) -> list[str]:
        """The run in plain words: a summary, then one line per change and per problem."""
        changes: list[Create | Update | Delete] = [*self.deleted, *self.updated, *self.created]
        counts = (
            f"{len(self.created)} to create, {len(self.updated)} to repair, "
            f"{len(self.deleted)} to delete"
            if self.dry_run
            else f"{len(self.created)} created, {len(self.updated)} repaired, "
            f"{len(self.deleted)} deleted"
        )
        head = f"zone {self.zone_name}: {counts}, {len(self.conflicts)} conflict(s)"
        if self.dry_run:
            head += " (dry run: nothing was written)"
        else:
            head += f", {len(self.unpropagated)} not served yet"
        lines = [head]
        lines += [f"would {c}" if self.dry_run else f"{c.past} {c.summary}" for c in changes]
        lines += [str(conflict) for conflict in self.conflicts]
        lines += [
            f"already served by a record this stack does not own (left alone): {record}"
            for record in self.foreign_satisfied
        ]
        lines += [
            f"not served yet by every authoritative name server: {record}"
            for record in self.unpropagated
        ]
        if self.propagation_error:
            lines.append(f"propagation not checked: {self.propagation_error}")
        if not changes and not self.conflicts and not self.failed:
            lines.append("every wanted record is in place")
        return lines

    def raise_if_failed(self) -> None:
        if self.failed:
            raise ReconcileError("; ".join(self.lines()))


def read_validation_records(acm_client: Any, arns: Sequence[str]) -> tuple[ValidationRecord, ...]:
    """The DNS validation records ACM asks for, for each certificate in ``arns``.

    Imported certificates have none. A DNS-validated certificate whose record ACM has not
    published yet (the first seconds after the request) stops the run before any write: without
    its record the plan would look complete and a later run would be needed anyway.
    """
    records: list[ValidationRecord] = []
    for arn in arns:
        try:
            certificate = acm_client.describe_certificate(CertificateArn=arn)["Certificate"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "unknown")
            raise ReconcileError(
                f"cannot read certificate {arn} from ACM ({code}): check the ARN and that the "
                "function may call acm:DescribeCertificate"
            ) from None
        except BotoCoreError as error:
            raise ReconcileError(
                f"cannot read certificate {arn} from ACM ({type(error).__name__})"
            ) from None
        for option in certificate.get("DomainValidationOptions") or ():
            if option.get("ValidationMethod", "DNS") != "DNS":
                continue
            resource = option.get("ResourceRecord")
            if not resource:
                raise ReconcileError(
                    f"ACM has not published the DNS validation record for "
                    f"{option.get('DomainName')} of {arn} yet; the next run writes it"
                )
            records.append(
                ValidationRecord(
                    name=str(resource["Name"]),
                    type=str(resource["Type"]),
                    value=str(resource["Value"]),
                    domain=str(option.get("DomainName", "")),
                )
            )
    return tuple(records)


def _cloudflare_problem(error: cloudflare.APIError) -> str:
    """What Cloudflare said, from the response body only (request headers never appear)."""
    if isinstance(error, cloudflare.APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        errors = body.get("errors") or []
        said = "; ".join(
            f"{item.get('code')}: {item.get('message')}"
            for item in errors
            if isinstance(item, dict)
        )
        return f"HTTP {error.status_code}" + (f" ({said})" if said else "")
    if isinstance(error, cloudflare.APIConnectionError):
        return "the Cloudflare API could not be reached"
    return type(error).__name__


def fetch_zone_name(client: cloudflare.Cloudflare, zone_id: str) -> str:
    try:
        zone = client.zones.get(zone_id=zone_id)
    except cloudflare.APIError as error:
        raise ReconcileError(
            f"cannot read Cloudflare zone {zone_id}: {_cloudflare_problem(error)}; check the zone "
            "id and that the token may read it (Zone:Read)"
        ) from None
    if zone is None or not zone.name:
        raise ReconcileError(f"Cloudflare returned no zone for id {zone_id}")
    return normalise_name(zone.name)


@dataclass(frozen=True)
class Zone:
    id: str
    name: str


def _every_page(
    fetch: Callable[[int, int], Any], page_size: int, listing: str, unit: str
) -> list[Any]:
    """The items of every page ``fetch(page, per_page)`` returns, until a short page; bounded
    by :data:`MAX_LIST_PAGES`, so a server that never stops paging ends the run with an error.
    ``listing`` names what is listed, ``unit`` what one item is, for the errors."""
    items: list[Any] = []
    for number in range(1, MAX_LIST_PAGES + 1):
        try:
            page = fetch(number, page_size)
        except cloudflare.APIError as error:
            raise ReconcileError(f"cannot list {listing}: {_cloudflare_problem(error)}") from None
        found = page.result or []
        items += found
        if len(found) < page_size:
            return items
    raise ReconcileError(f"{listing} run to more than {MAX_LIST_PAGES} pages of {page_size} {unit}")


def list_zones(client: cloudflare.Cloudflare, *, page_size: int = ZONE_PAGE_SIZE) -> list[Zone]:
    """Every zone the token can read."""
    items = _every_page(
        lambda page, per_page: client.zones.list(page=page, per_page=per_page),
        page_size,
        "the zones the token can read",
        "zones",
    )
    return [Zone(str(item.id), normalise_name(str(item.name))) for item in items]


def zone_holding(name: str, zones: Sequence[Zone]) -> Zone | None:
    """The most specific zone ``name`` belongs to, if the token can read one."""
    holding = [z for z in zones if name == z.name or name.endswith("." + z.name)]
    return max(holding, key=lambda z: len(z.name), default=None)


def _zone_record(item: Any) -> ZoneRecord:
    return ZoneRecord(
        id=str(item.id),
        name=normalise_name(str(item.name)),
        type=str(item.type),
        content=str(getattr(item, "content", None) or ""),
        ttl=int(item.ttl),
        proxied=bool(getattr(item, "proxied", False)),
        comment=getattr(item, "comment", None) or None,
    )


def list_zone_records(
    client: cloudflare.Cloudflare, zone_id: str, *, page_size: int = LIST_PAGE_SIZE
) -> list[ZoneRecord]:
    """Every record in the zone."""
    items = _every_page(
        lambda page, per_page: client.dns.records.list(
            zone_id=zone_id, page=page, per_page=per_page
        ),
        page_size,
        f"the records of zone {zone_id}",
        "records",
    )
    return [_zone_record(item) for item in items]


def apply_plan(client: cloudflare.Cloudflare, zone_id: str, plan: Plan, marker: str) -> None:
    """Writes the plan's changes in order; stops at the first one Cloudflare refuses."""
    for done, change in enumerate(plan.changes):
        try:
            if isinstance(change, Delete):
                client.dns.records.delete(change.current.id, zone_id=zone_id)
            else:
                wanted = change.wanted if isinstance(change, Update) else change.record
                record: dict[str, Any] = {
                    "name": wanted.name,
                    "type": wanted.type,
                    "content": wanted.content,
                    "ttl": wanted.ttl,
                    "proxied": False,  # DNS-only: API Gateway terminates TLS itself
                    "comment": marker,
                }
                if isinstance(change, Update):
                    client.dns.records.update(change.current.id, zone_id=zone_id, **record)
                else:
                    client.dns.records.create(zone_id=zone_id, **record)
        except cloudflare.APIError as error:
            raise ReconcileError(
                f"Cloudflare refused to {change}: {_cloudflare_problem(error)} "
                f"({done} of {len(plan.changes)} changes were applied before it)"
            ) from None
        logger.info("%s %s", change.past, change.summary)


def _check_propagation(
    records: Sequence[DesiredRecord],
    zone_name: str,
    settings: Settings,
    propagation: PropagationCheck | None,
    resolver: dns.resolver.Resolver | None,
) -> tuple[tuple[DesiredRecord, ...], str | None]:
    if not records:
        return (), None
    if propagation is None:
        try:
            servers = settings.name_servers or discover_servers(
                zone_name, resolver if resolver is not None else dns.resolver.Resolver()
            )
        except DiscoveryFailed as error:
            return (), str(error)
        propagation = PropagationCheck(servers, port=settings.dns_port)
    return propagation.missing(records), None


def run(
    settings: Settings,
    *,
    cloudflare_client: cloudflare.Cloudflare,
    acm_client: Any,
    dry_run: bool = False,
    propagation: PropagationCheck | None = None,
    resolver: dns.resolver.Resolver | None = None,
) -> Report:
    """One reconcile: plan, apply (unless ``dry_run``), check propagation, report.

    ``propagation`` fixes which servers are asked (tests point it at a local server); without
    it, ``settings.name_servers`` or else the zone's NS records, found through ``resolver``
    (the system's by default), decide. Configuration and API errors raise
    :class:`ReconcileError`; conflicts and unpropagated records are in the report
    (see :attr:`Report.failed`).
    """
    validation = read_validation_records(acm_client, settings.certificate_arns)
    try:
        desired = desired_records(settings.layout(validation))
    except PlanError as error:
        raise InvalidDnsSettings(str(error)) from None
    by_zone = _records_by_zone(cloudflare_client, settings.zone_id, desired)
    plans = {
        zone: plan_changes(wanted, list_zone_records(cloudflare_client, zone.id), settings.marker)
        for zone, wanted in by_zone.items()
    }
    for zone, plan in plans.items():
        for line in plan.lines():
            logger.info("plan for %s: %s", zone.name, line)
    unpropagated: list[DesiredRecord] = []
    propagation_errors: list[str] = []
    if not dry_run:
        for zone, plan in plans.items():
            apply_plan(cloudflare_client, zone.id, plan, settings.marker)
        for zone, plan in plans.items():
            conflicted = {conflict.wanted for conflict in plan.conflicts}
            missing, unchecked = _check_propagation(
                [r for r in by_zone[zone] if r not in conflicted],
                zone.name,
                settings,
                propagation,
                resolver,
            )
            unpropagated += missing
            propagation_errors += [unchecked] if unchecked else []
    every = list(plans.values())
    touched = [z.name for z, wanted in by_zone.items() if wanted or plans[z].changes]
    report = Report(
        zone_name=", ".join(touched or [next(iter(by_zone)).name]),
        dry_run=dry_run,
        created=tuple(c for plan in every for c in plan.creates),
        updated=tuple(c for plan in every for c in plan.updates),
        deleted=tuple(c for plan in every for c in plan.deletes),
        conflicts=tuple(c for plan in every for c in plan.conflicts),
        unpropagated=tuple(unpropagated),
        propagation_error="; ".join(propagation_errors) or None,
        foreign_satisfied=tuple(r for plan in every for r in plan.foreign_satisfied),
    )
    for line in report.lines():
        (logger.warning if report.failed else logger.info)("%s", line)
    return report


def _records_by_zone(
    client: cloudflare.Cloudflare, zone_id: str, desired: Sequence[DesiredRecord]
) -> dict[Zone, list[DesiredRecord]]:
    """The wanted records grouped by the zone that holds them: the stack's zone first, then
    every other zone the token can read (custom hostnames may live in their own zones), each
    also with no wanted record, so that records this stack left there are removed."""
    stack_zone = Zone(zone_id, fetch_zone_name(client, zone_id))
    outside = outside_zone(desired, stack_zone.name)
    others = [zone for zone in list_zones(client) if zone.id != zone_id]
    by_zone: dict[Zone, list[DesiredRecord]] = {stack_zone: []}
    by_zone.update((zone, []) for zone in others)
    unheld: list[str] = []
    for record in desired:
        holder = zone_holding(record.name, others) if record in outside else stack_zone
        if holder is None:
            unheld.append(record.name)
        else:
            by_zone[holder].append(record)
    if unheld:
        raise InvalidDnsSettings(
            f"no Cloudflare zone the token can read holds {', '.join(unheld)}: add the zone to "
            "the token's permissions (Zone:DNS:Edit, Zone:Read), or use a hostname in a zone it "
            "can read"
        )
    return by_zone


def _hostname_pair(text: str) -> tuple[str, str]:
    hostname, separator, target = text.partition("=")
    if not separator or not hostname or not target:
        raise argparse.ArgumentTypeError(f"expected HOSTNAME=TARGET, not {text!r}")
    return hostname, target


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hatchway_domain.dns_reconcile",
        description=(
            "Show the Cloudflare DNS changes a Hatchway stack needs, or make them with --apply. "
            f"The API token is read from ${TOKEN_ENV}."
        ),
    )
    parser.add_argument("--zone-id", required=True, help="Cloudflare zone id")
    parser.add_argument("--domain", required=True, help="tunnel domain, e.g. t.example.com")
    parser.add_argument("--http-target", help="regional target of the *.<domain> custom domain")
    parser.add_argument("--connect-target", help="regional target of connect.<domain>")
    parser.add_argument(
        "--stack-name", required=True, help="stack whose records these are (ownership marker)"
    )
    parser.add_argument(
        "--certificate-arn", action="append", default=[], help="ACM certificate to validate"
    )
    parser.add_argument(
        "--custom-hostname",
        action="append",
        default=[],
        type=_hostname_pair,
        metavar="HOSTNAME=TARGET",
        help="a user's hostname and its regional target",
    )
    parser.add_argument("--region", help="AWS region of the certificates")
    parser.add_argument("--base-url", help="Cloudflare API URL (default: the SDK's)")
    parser.add_argument(
        "--name-server",
        action="append",
        default=[],
        help="address to check propagation against (default: the zone's NS records)",
    )
    parser.add_argument("--dns-port", type=int, default=DNS_PORT, help=argparse.SUPPRESS)
    parser.add_argument("--apply", action="store_true", help="write the changes (default: plan)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Plan (default) or apply from a shell; 0 when all is in place, 1 on a problem."""
    args = _parser().parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        print(f"error: set {TOKEN_ENV} to a Cloudflare API token (Zone:DNS:Edit)", file=sys.stderr)
        return 2
    try:
        settings = Settings(
            domain=args.domain,
            zone_id=args.zone_id,
            http_target=args.http_target,
            stack_name=args.stack_name,
            connect_target=args.connect_target,
            certificate_arns=tuple(args.certificate_arn),
            custom_hostnames=tuple(args.custom_hostname),
            name_servers=tuple(args.name_server),
            dns_port=args.dns_port,
        )
        acm_client = None
        if settings.certificate_arns:
            acm_client = boto3.client("acm", region_name=args.region)
        client = cloudflare.Cloudflare(api_token=token, base_url=args.base_url)
        report = run(
            settings, cloudflare_client=client, acm_client=acm_client, dry_run=not args.apply
        )
    except ReconcileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    if report.dry_run and (report.created or report.updated or report.deleted):
        print("run again with --apply to make these changes")
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
