"""hatchway-admin: manage agent tokens in a relay's DynamoDB table.

    scripts/hatchway-admin --table NAME [--region R] [--endpoint URL] token create --name laptop
    scripts/hatchway-admin --table NAME token list
    scripts/hatchway-admin --table NAME token revoke TOKEN_ID
    scripts/hatchway-admin --table NAME reserve|release NAME --token-id TOKEN_ID
    scripts/hatchway-admin --table NAME tunnels

The table is the stack's TableName output; --endpoint points at a local DynamoDB (for
`hatchway-local --store dynamodb`). This script only parses and wires; hatchway_relay.admin
does the work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatchway-admin", description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="the relay's DynamoDB table")
    parser.add_argument("--region", help="AWS region (default: the environment's)")
    parser.add_argument("--endpoint", help="DynamoDB endpoint URL, e.g. a local one")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="agent tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="make a token; it is shown once")
    create.add_argument("--name", required=True, help="a label, e.g. the laptop it is for")
    create.add_argument("--reserve", action="append", default=[], help="a name only it may use")
    token.add_parser("list", help="list tokens (ids, never the tokens)")
    revoke = token.add_parser("revoke", help="delete a token by its id")
    revoke.add_argument("token_id")
    for action, text in (("reserve", "keep a name for one token"), ("release", "free it")):
        sub = commands.add_parser(action, help=text)
        sub.add_argument("name")
        sub.add_argument("--token-id", required=True)
    commands.add_parser("tunnels", help="live tunnels: name, token, connected since")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import boto3

    from hatchway.protocol import ProtocolError
    from hatchway_relay import admin
    from hatchway_relay.adapters.dynamo_store import DynamoStore

    resource = boto3.resource("dynamodb", region_name=args.region, endpoint_url=args.endpoint)
    store = DynamoStore(resource.Table(args.table))
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
            print(f"{tunnel.name}  {tunnel.token_id}  {tunnel.token_label or '-'}  since {since}")
    elif args.action == "create":
        try:
            new = admin.create_token(store, args.name, tuple(args.reserve))
        except ProtocolError as exc:
            print(f"hatchway-admin: {exc}", file=sys.stderr)
            return 2
        print(f"token {new.token}")
        print(f"id    {new.record.token_id}  (shown once: the relay keeps only its hash)")
    elif args.action == "list":
        for record in admin.list_tokens(store):
            created = dt.datetime.fromtimestamp(record.created_at, dt.UTC).strftime(
                "%Y-%m-%d %H:%M"
            )
            reserved = ",".join(record.reserved) or "-"
            print(f"{record.token_id}  {created}  {record.label or '-'}  reserved={reserved}")
    elif args.action == "revoke":
        if admin.revoke_token(store, args.token_id) is None:
            print(f"hatchway-admin: no token with id {args.token_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.token_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
