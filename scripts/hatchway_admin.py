"""hatchway-admin: manage a relay's agent tokens, reserved names and live tunnels.

    scripts/hatchway-admin --stack hatchway token create --name laptop [--reserve myapp]
    scripts/hatchway-admin --table NAME [--region R] [--endpoint URL] token list
    scripts/hatchway-admin --local token create --name ci
    scripts/hatchway-admin --local [--admin-file PATH] token revoke TOKEN_ID
    scripts/hatchway-admin ... reserve|release NAME --token-id TOKEN_ID
    scripts/hatchway-admin ... tunnels
    scripts/hatchway-admin ... dashboard [--port 4050]
    scripts/hatchway-admin --stack hatchway logs --tunnel myapp [--since 30] [--json]
    scripts/hatchway-admin --local logs --agents
    scripts/hatchway-admin ... token create --name ci --rate-limit 50/s --max-tunnels 3 \
        --max-requests-per-day 100000

Where the relay keeps its state, one of: --stack (a deployed stack: its TableName output),
--table (the DynamoDB table itself; --endpoint for a local DynamoDB, as used by
`hatchway-local --store dynamodb`), or --local (a running `hatchway-local`, through its admin
API on 127.0.0.1; --admin-file when it was started with one). ``logs`` reads the access logs:
the stack's log groups (CloudWatch Logs), or hatchway-local's latest lines; not with --table.
This script only parses and wires; hatchway_relay.admin and hatchway_relay.access_logs do the
work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hatchway_relay.access_logs import LogQuery
    from hatchway_relay.admin import AdminStore
    from hatchway_relay.ports import TokenLimits

DEFAULT_SINCE_MINUTES = 60.0
"""How far back ``logs`` looks unless told."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatchway-admin", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="a deployed Hatchway stack's name")
    where.add_argument("--table", help="the relay's DynamoDB table")
    # --local takes no value: an optional one swallowed the command after it ("--local token
    # create" read "token" as a file name). The file has an option of its own.
    where.add_argument(
        "--local", action="store_true", help="a running hatchway-local on this machine"
    )
    parser.add_argument(
        "--admin-file",
        type=Path,
        help="with --local: the file hatchway-local wrote (default: $XDG_STATE_HOME/hatchway/"
        "local-admin.json, or hatchway-local's --admin-file)",
    )
    parser.add_argument("--region", help="AWS region (default: the environment's)")
    parser.add_argument("--endpoint", help="DynamoDB endpoint URL, e.g. a local one")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="agent tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="make a token; it is shown once")
    create.add_argument("--name", required=True, help="a label, e.g. the laptop it is for")
    create.add_argument("--reserve", action="append", default=[], help="a name only it may use")
    create.add_argument(
        "--rate-limit",
        metavar="N/s|N/m",
        help="requests a second (or a minute) across all its tunnels; above: 429",
    )
    create.add_argument("--rate-burst", type=int, help="requests let through at once (default N)")
    create.add_argument("--max-tunnels", type=int, default=0, help="tunnels one agent may serve")
    create.add_argument(
        "--max-requests-per-day", type=int, default=0, help="requests a UTC day, all tunnels"
    )
    token.add_parser("list", help="list tokens (ids, never the tokens)")
    revoke = token.add_parser("revoke", help="delete a token by its id; its tunnels stop")
    revoke.add_argument("token_id")
    for action, text in (("reserve", "keep a name for one token"), ("release", "free it")):
        sub = commands.add_parser(action, help=text)
        sub.add_argument("name")
        sub.add_argument("--token-id", required=True)
    commands.add_parser("tunnels", help="live tunnels: name, token, since, served, errors, latency")
    logs = commands.add_parser(
        "logs", help="access logs: visitors' requests (of one tunnel), or agents' events"
    )
    logs.add_argument("--tunnel", metavar="NAME", help="only the visitors of this tunnel")
    logs.add_argument(
        "--agents",
        action="store_true",
        help="agents' connects, messages and disconnects instead of visitors' requests",
    )
    logs.add_argument(
        "--since",
        type=float,
        default=DEFAULT_SINCE_MINUTES,
        metavar="MINUTES",
        help="how far back to look (default %(default)g)",
    )
    logs.add_argument("--limit", type=int, default=100, help="the latest N lines (default 100)")
    logs.add_argument("--json", action="store_true", help="the lines as logged, JSON")
    dashboard = commands.add_parser(
        "dashboard", help="a web page on 127.0.0.1: tokens, names, live tunnels, metrics"
    )
    dashboard.add_argument(
        "--port", type=int, default=4050, help="port on 127.0.0.1 (default 4050, or the next free)"
    )
    dashboard.add_argument(
        "--refresh",
        type=float,
        help="seconds between the page's updates (default: 2 with --local, else 5)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.admin_file is not None and not args.local:
        parser.error("--admin-file goes with --local")
    from hatchway.protocol import ProtocolError
    from hatchway_local.admin_api import AdminError

    try:
        if args.command == "logs":
            return show_logs(args)
        store = open_store(args)
        return run(args, store)
    except (AdminError, LookupError) as exc:
        print(f"hatchway-admin: {exc}", file=sys.stderr)
        return 1
    except ProtocolError as exc:
        print(f"hatchway-admin: {exc}", file=sys.stderr)
        return 2


def open_store(args: argparse.Namespace) -> AdminStore:
    """The relay's state, wherever the flags say it is."""
    if args.local:
        from hatchway_local.admin_api import RemoteStore, default_admin_file

        return RemoteStore.from_admin_file(args.admin_file or default_admin_file())
    import boto3

    from hatchway_relay.adapters.dynamo_store import DynamoStore

    table = args.table or stack_output(boto3, args.stack, "TableName", args.region)
    resource = boto3.resource("dynamodb", region_name=args.region, endpoint_url=args.endpoint)
    return DynamoStore(resource.Table(table))


def describe_stack(boto3: Any, stack: str, region: str | None) -> dict[str, Any]:
    """A deployed stack's description (outputs, parameters)."""
    from botocore.exceptions import ClientError

    cloudformation = boto3.client("cloudformation", region_name=region)
    try:
        return dict(cloudformation.describe_stacks(StackName=stack)["Stacks"][0])
    except ClientError as exc:
        raise LookupError(f"cannot read stack {stack!r}: {exc}") from None


def stack_output(boto3: Any, stack: str, key: str, region: str | None) -> str:
    """One output of a deployed stack, e.g. its TableName."""
    for output in describe_stack(boto3, stack, region).get("Outputs", []):
        if output["OutputKey"] == key:
            return str(output["OutputValue"])
    raise LookupError(f"stack {stack!r} has no {key} output: is it a Hatchway stack?")


def open_access_logs(args: argparse.Namespace) -> Any:
    """The access logs, wherever the flags say the relay is: a ``read(query, now)``."""
    if args.local:
        from hatchway_local.admin_api import RemoteAccessLogs, default_admin_file

        return RemoteAccessLogs.from_admin_file(args.admin_file or default_admin_file())
    if not args.stack:
        raise LookupError("logs needs --stack (its access log groups are outputs) or --local")
    import boto3

    from hatchway_relay.access_logs import Routing
    from hatchway_relay.adapters.cloudwatch_access_logs import CloudWatchAccessLogs
    from hatchway_relay.hostnames import parse_custom_hostnames

    described = describe_stack(boto3, args.stack, args.region)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue", "") for p in described.get("Parameters", [])
    }
    if "VisitorAccessLogGroup" not in outputs:
        raise LookupError(
            f"stack {args.stack!r} writes no access logs: deploy it with AccessLogs=true"
        )
    routing = Routing(
        parameters.get("DomainName", ""),
        parse_custom_hostnames(parameters.get("CustomHostnames", "")),
    )
    client = boto3.client("logs", region_name=args.region)
    return CloudWatchAccessLogs(
        client, outputs["VisitorAccessLogGroup"], outputs["AgentAccessLogGroup"], routing
    )


def log_query(args: argparse.Namespace, now: float) -> LogQuery:
    """What ``logs`` was asked for."""
    from hatchway.protocol import ProtocolError
    from hatchway_relay.access_logs import LogQuery

    if args.since <= 0:
        raise ProtocolError("--since must be a positive number of minutes")
    try:
        return LogQuery(args.tunnel, args.agents, now - args.since * 60, args.limit)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def show_logs(args: argparse.Namespace) -> int:
    from hatchway_relay.access_logs import as_lines, describe

    now = time.time()
    query = log_query(args, now)
    entries = open_access_logs(args).read(query, now)
    if not entries:
        whose = "agents' " if args.agents else f"tunnel {args.tunnel}'s " if args.tunnel else ""
        print(
            f"hatchway-admin: no {whose}access-log lines in the last {args.since:g} minutes",
            file=sys.stderr,
        )
        return 0
    for line in as_lines(entries) if args.json else map(describe, entries):
        print(line)
    return 0


def token_limits(args: argparse.Namespace) -> TokenLimits:
    """The limits ``token create`` was given (the same rate syntax as ``hatchway http``)."""
    from hatchway.protocol import ProtocolError
    from hatchway.serving.tunnels import OptionError, access_rules
    from hatchway_relay.ports import TokenLimits

    try:
        rules = access_rules(rate_limit=args.rate_limit, rate_burst=args.rate_burst)
    except OptionError as exc:
        raise ProtocolError(str(exc)) from None
    for flag, value in (
        ("max-tunnels", args.max_tunnels),
        ("max-requests-per-day", args.max_requests_per_day),
    ):
        if value < 0:
            raise ProtocolError(f"--{flag} cannot be negative")
    return TokenLimits(rules.rate, rules.burst, args.max_tunnels, args.max_requests_per_day)


def run(args: argparse.Namespace, store: AdminStore) -> int:
    from hatchway.protocol import ProtocolError
    from hatchway_relay import admin

    if args.command == "dashboard":
        from hatchway_local.dashboard import dashboard_sources, serve_dashboard

        sources = dashboard_sources(
            store,
            stack=args.stack,
            region=args.region,
            local=args.local,
            admin_file=args.admin_file,
            refresh_seconds=args.refresh,
        )
        return serve_dashboard(sources, args.port)
    if args.command == "reserve":
        try:
            admin.reserve(store, args.token_id, args.name)
        except (LookupError, ProtocolError) as exc:
            print(f"hatchway-admin: {exc}", file=sys.stderr)
            return 1
        print(f"reserved {args.name} for {args.token_id}")
    elif args.command == "release":
        if not admin.release(store, args.token_id, args.name):
            print(
                f"hatchway-admin: {args.token_id} holds no reservation of {args.name}",
                file=sys.stderr,
            )
            return 1
        print(f"released {args.name}")
    elif args.command == "tunnels":
        for tunnel in admin.live_tunnels(store, time.time()):
            since = dt.datetime.fromtimestamp(tunnel.connected_at, dt.UTC).strftime(
                "%Y-%m-%d %H:%M"
            )
            errors = ",".join(f"{cause}={count}" for cause, count in tunnel.errors)
            print(
                f"{tunnel.name}  {tunnel.token_id}  {tunnel.token_label or '-'}  since {since}  "
                f"agents {tunnel.agents}  served {tunnel.served}"
                + (f"  errors {errors}" if errors else "")
                + (
                    f"  latency p50 {tunnel.latency_p50_ms} ms p95 {tunnel.latency_p95_ms} ms"
                    if tunnel.latency_p95_ms is not None
                    else ""
                )
            )
    elif args.action == "create":
        try:
            new = admin.create_token(store, args.name, tuple(args.reserve), token_limits(args))
        except ProtocolError as exc:
            print(f"hatchway-admin: {exc}", file=sys.stderr)
            return 2
        print(f"token {new.token}")
        print(f"id    {new.record.token_id}  (shown once: the relay keeps only its hash)")
    elif args.action == "list":
        print("id  created (UTC)  label  reserved  limits")
        for record in admin.list_tokens(store):
            created = dt.datetime.fromtimestamp(record.created_at, dt.UTC).strftime(
                "%Y-%m-%d %H:%M"
            )
            reserved = ",".join(record.reserved) or "-"
            limits = record.limits
            shown = (
                f"  limits rate={limits.rate:g}/s tunnels={limits.max_tunnels or '-'} "
                f"day={limits.requests_per_day or '-'}"
                if limits
                else ""
            )
            print(
                f"{record.token_id}  {created}  {record.label or '-'}  reserved={reserved}{shown}"
            )
    elif args.action == "revoke":
        revoked = admin.revoke_token(store, args.token_id)
        if revoked is None:
            print(f"hatchway-admin: no token with id {args.token_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.token_id}; {len(revoked.connections)} open connection(s) cut")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
