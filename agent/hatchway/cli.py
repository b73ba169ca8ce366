"""``hatchway``: the command line. It only parses arguments and wires the pieces together
(``service.Service``, a display from ``display``, settings from ``config``)."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from hatchway import protocol
from hatchway.arenas import limit_malloc_arenas
from hatchway.config import (
    CONFIG_ENV,
    DEFAULT_INSPECT,
    DEFAULT_SERVER,
    INSPECT_ENV,
    ROTATE_ENV,
    SERVER_ENV,
    SETTABLE_KEYS,
    STOP_GRACE_ENV,
    TOKEN_ENV,
    ConfigError,
    Settings,
    config_path,
    dump_toml,
    load_config,
    mask,
    masked,
    named_tunnels,
    parse_inspect_memory,
    resolve_rotate_after,
    resolve_settings,
    resolve_stop_grace,
    set_value,
)
from hatchway.errors import HatchwayError
from hatchway.service import Service
from hatchway.serving import sharing
from hatchway.serving.session import MAX_STOP_GRACE_SECONDS, STOP_GRACE_SECONDS
from hatchway.serving.tunnels import HOST_HEADER_MODES, OptionError, TunnelOptions, tunnel_options
from hatchway.ui.display import JsonLog, LineLog, Listener, ListenerLogHandler, Screen, Status
from hatchway.ui.limits import INSPECT_MEMORY_BYTES
from hatchway.version import __version__

WEBHOOK_SECRET_ENV = "HATCHWAY_WEBHOOK_SECRET"
"""The webhook secret when ``--verify-webhook`` is given without ``--webhook-secret`` (keeps it
out of the process list)."""

LOG_FORMATS = ("auto", "screen", "plain", "json")
"""``auto``: the status screen on a terminal, plain lines otherwise."""

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_CUT_SHORT = 128 + signal.SIGINT
"""A second Ctrl-C (or SIGTERM) quit at once, cutting requests short: the shell's code for a
process ended by SIGINT."""

SETTINGS_HELP = f"""\
settings: each comes from the first of
  1. its flag                (--server, --token, --inspect/--no-inspect)
  2. the environment         ({SERVER_ENV}, {TOKEN_ENV}, {INSPECT_ENV}=ADDR|off)
  3. the config file         (server, token, inspect keys; see `hatchway config show`)
  4. the default             (server {DEFAULT_SERVER}, inspector {DEFAULT_INSPECT})

config file: ${CONFIG_ENV}, else $XDG_CONFIG_HOME/hatchway/config.toml, else
  ~/.config/hatchway/config.toml (written mode 0600: it holds your token). Named tunnels:

    [tunnels.web]
    target = "3000"
    subdomain = "myweb"
    [tunnels.api]
    target = "localhost:8000"
    host_header = "rewrite"
    basic_auth = "user:pass"
    request_header_add = ["X-Env: dev"]
    large_responses = "redirect"
    allow_cidr = ["203.0.113.0/24", "2001:db8::/32"]
    rate_limit = "20/s"

  then `hatchway start web api` (or --all) serves both over one connection.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help=f"relay WebSocket URL (env {SERVER_ENV})")
    parser.add_argument("--token", help=f"agent token (env {TOKEN_ENV})")
    inspect = parser.add_mutually_exclusive_group()
    inspect.add_argument(
        "--inspect",
        metavar="ADDR",
        help=f"inspector address on loopback (default {DEFAULT_INSPECT}; env {INSPECT_ENV})",
    )
    inspect.add_argument("--no-inspect", action="store_true", help="do not start the inspector")
    parser.add_argument(
        "--inspect-memory",
        metavar="SIZE",
        help="memory the inspector keeps exchanges in, oldest forgotten first (default "
        f"{INSPECT_MEMORY_BYTES // 1024**2}M; 1M to 1G)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="status screen on a terminal (auto), plain lines, or one JSON object per event",
    )
    parser.add_argument(
        "--heartbeat", type=float, default=None, help="seconds between pings (default: the relay's)"
    )
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, take no new requests and answer those in flight for at "
        f"most this long before exiting (default {STOP_GRACE_SECONDS:g}; 0 to "
        f"{MAX_STOP_GRACE_SECONDS:g}; env {STOP_GRACE_ENV}); a second Ctrl-C quits at once",
    )
    parser.add_argument(
        "--rotate-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="open a fresh connection this often, without dropping a request (default: "
        f"{protocol.CONNECTION_ROTATE_SECONDS} s, inside the platform's 2 h limit; env "
        f"{ROTATE_ENV})",
    )


def _tunnel_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="the local app: 3000, host:port or http://host:port")
    parser.add_argument("--subdomain", help="tunnel name to ask for (default: a random one)")
    parser.add_argument(
        "--host-header",
        metavar="|".join(HOST_HEADER_MODES) + "|VALUE",
        help="Host the app sees: the visitor's (preserve, default), the target's host:port "
        "(rewrite), or VALUE",
    )
    for side in ("request", "response"):
        parser.add_argument(
            f"--{side}-header-add",
            action="append",
            default=[],
            metavar='"NAME: VALUE"',
            help=f"add a header to every {side} (repeatable)",
        )
        parser.add_argument(
            f"--{side}-header-remove",
            action="append",
            default=[],
            metavar="NAME",
            help=f"remove a header from every {side} (repeatable)",
        )
    parser.add_argument(
        "--basic-auth",
        metavar="USER:PASS",
        help="the relay asks visitors for this username and password (it stores only a hash)",
    )
    parser.add_argument(
        "--verify-webhook",
        choices=sorted(protocol.WEBHOOK_PROVIDERS),
        help="the relay lets through only deliveries this provider signed with the secret",
    )
    parser.add_argument(
        "--webhook-secret",
        "--secret",
        metavar="SECRET",
        help=f"the webhook signing secret (env {WEBHOOK_SECRET_ENV})",
    )
    parser.add_argument(
        "--allow-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="the relay lets only visitors from this range in, e.g. 203.0.113.0/24 or "
        "2001:db8::/32 (repeatable); others get 403",
    )
    parser.add_argument(
        "--deny-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="the relay refuses visitors from this range with 403 (repeatable)",
    )
    parser.add_argument(
        "--rate-limit",
        metavar="N/s|N/m",
        help="the relay answers 429 with Retry-After above N requests a second or a minute",
    )
    parser.add_argument(
        "--rate-burst",
        type=int,
        metavar="N",
        help="requests let through at once before --rate-limit applies (default: N of it)",
    )
    parser.add_argument(
        "--pool",
        action="store_true",
        help="share --subdomain with other agents of your token that also say --pool: the "
        "relay spreads visitors over all of them",
    )
    parser.add_argument(
        "--large-responses",
        choices=sorted(protocol.LARGE_RESPONSE_MODES),
        default="refuse",
        help=f"a response above {protocol.MAX_BODY_BYTES // 1024} KiB: refused with 413 "
        f"(default), or redirected to the relay's blob store (up to "
        f"{protocol.MAX_BLOB_BYTES // (1024 * 1024)} MiB)",
    )
    parser.add_argument(
        "--no-gzip",
        dest="gzip",
        action="store_false",
        help="send responses to visitors exactly as the app encoded them; by default the relay "
        "gzips compressible ones for visitors that accept gzip (less traffic to pay for)",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        help="pass responses of unknown length (server-sent events, chunked downloads) to "
        "visitors as the app writes them; hatchway-local streams, a relay on AWS refuses it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hatchway",
        description="Give a local app a public URL through your own Hatchway relay.",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hatchway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    http = commands.add_parser(
        "http",
        help="tunnel HTTP to a local app",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _tunnel_flags(http)
    _common(http)

    start = commands.add_parser(
        "start",
        help="start tunnels named in the config file, over one connection",
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    start.add_argument("names", nargs="*", help="[tunnels.NAME] tables of the config file")
    start.add_argument("--all", action="store_true", help="every tunnel in the config file")
    _common(start)

    share = commands.add_parser(
        "share",
        help="share links: let visitors in without the tunnel's password, for a while",
        description="hatchway share TUNNEL [--expires 2h --methods GET,HEAD --path /reports/ "
        "--max-uses N] | hatchway share list [TUNNEL] | hatchway share revoke ID",
    )
    share.add_argument("what", help="the tunnel to share, or list, or revoke")
    share.add_argument("which", nargs="?", help="with list: a tunnel; with revoke: a link's id")
    share.add_argument("--expires", default="1h", help="how long the link works (default 1h)")
    share.add_argument(
        "--methods", default="GET,HEAD", help="the methods it lets through (default GET,HEAD)"
    )
    share.add_argument("--path", default="/", help="the path it is limited to (default /)")
    share.add_argument(
        "--max-uses", type=int, default=0, help="how many times it may be opened (default: any)"
    )
    share.add_argument("--server", help=f"relay WebSocket URL (env {SERVER_ENV})")
    share.add_argument("--token", help=f"agent token (env {TOKEN_ENV})")

    config = commands.add_parser("config", help="show or change the config file")
    actions = config.add_subparsers(dest="action", required=True)
    add_token = actions.add_parser(
        "add-token", help="save the agent token (read from the terminal or stdin when not given)"
    )
    add_token.add_argument(
        "token", nargs="?", help="the token; leave it out to keep it out of the shell's history"
    )
    set_ = actions.add_parser("set", help=f"save a setting ({', '.join(SETTABLE_KEYS)})")
    set_.add_argument("key", choices=SETTABLE_KEYS)
    set_.add_argument("value")
    actions.add_parser("show", help="print the config file, secrets masked")
    actions.add_parser("path", help="print where the config file is")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return _config(args, sys.stdout, sys.stderr)
    if args.command == "share":
        return _share(args, sys.stdout, sys.stderr)
    try:
        tunnels = _tunnels(args)
        inspect = "off" if args.no_inspect else args.inspect
        settings = resolve_settings(args.server, args.token, inspect)
        rotate_after = resolve_rotate_after(args.rotate_after)
        args.stop_grace = resolve_stop_grace(args.stop_grace)
        if args.inspect_memory is not None:
            args.inspect_memory = parse_inspect_memory(args.inspect_memory)
    except (OptionError, ConfigError) as exc:
        print(f"hatchway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for note in settings.notes:
        print(f"hatchway: warning: {note}", file=sys.stderr)
    if not settings.token:
        print(
            "hatchway: no token. Save one with `hatchway config add-token TOKEN` (the relay's "
            f"operator gives it to you), pass --token or set {TOKEN_ENV}. On this machine, "
            "running hatchway-local once saves one for you.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return _serve(settings, tunnels, args, rotate_after)


def _share_op(args: argparse.Namespace) -> protocol.ShareOp:
    if args.what == "list":
        return protocol.ShareOp("list", tunnel=args.which or "")
    if args.what == "revoke":
        if not args.which:
            raise ValueError("say which link to revoke: hatchway share revoke ID (see share list)")
        return protocol.ShareOp("revoke", share_id=args.which)
    methods = tuple(m.strip().upper() for m in args.methods.split(",") if m.strip())
    return protocol.ShareOp(
        "create",
        tunnel=args.what,
        expires_in=sharing.parse_duration(args.expires),
        methods=methods,
        path=args.path,
        max_uses=args.max_uses,
    )


def _share(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``hatchway share``: one operation on the relay's share links, and its answer."""
    try:
        op = _share_op(args)
        settings = resolve_settings(args.server, args.token, "off")
    except (ValueError, ConfigError) as exc:  # ProtocolError is a ValueError
        print(f"hatchway: {exc}", file=err)
        return EXIT_USAGE
    if not settings.token:
        print("hatchway: no token: pass --token, set HATCHWAY_TOKEN or save one", file=err)
        return EXIT_USAGE
    try:
        reply = sharing.request(settings.server, settings.token, op)
    except HatchwayError as exc:
        print(f"hatchway: {exc}", file=err)
        return 1
    if reply.link:
        print(f"Share link (shown once): {reply.link}", file=out)
    now = time.time()
    for share in reply.shares:
        print(sharing.describe(share, now), file=out)
    if not reply.shares and op.op == "list":
        print("no share links", file=out)
    return 0


def _tunnels(args: argparse.Namespace) -> list[TunnelOptions]:
    if args.command == "start":
        return named_tunnels(args.names, every=args.all)
    secret = args.webhook_secret
    if args.verify_webhook and secret is None:
        secret = os.environ.get(WEBHOOK_SECRET_ENV)
    return [
        tunnel_options(
            args.target,
            subdomain=args.subdomain,
            host_header=args.host_header,
            request_header_add=args.request_header_add,
            request_header_remove=args.request_header_remove,
            response_header_add=args.response_header_add,
            response_header_remove=args.response_header_remove,
            basic_auth=args.basic_auth,
            verify_webhook=args.verify_webhook,
            webhook_secret=secret,
            large_responses=args.large_responses,
            allow_cidr=args.allow_cidr,
            deny_cidr=args.deny_cidr,
            rate_limit=args.rate_limit,
            rate_burst=args.rate_burst,
            pool=args.pool,
            gzip=args.gzip,
            stream=args.stream,
        )
    ]


TARGET_PROBE_SECONDS = 0.5
"""How long the start-up look at each local app may take (a connect on this machine)."""


def warn_if_nothing_listens(tunnels: list[TunnelOptions]) -> None:
    """Say at once when nothing listens on a tunnel's local app, rather than leave the user to
    find out from a visitor's 502 (the tunnel still starts: the app may come up later)."""
    for tunnel in tunnels:
        target = tunnel.target
        try:
            socket.create_connection((target.host, target.port), TARGET_PROBE_SECONDS).close()
        except OSError as exc:
            logging.getLogger("hatchway").warning(
                "nothing answers at %s yet (%s): visitors get 502 local-app-refused until "
                "your app listens there",
                target.url,
                exc.strerror or exc,
            )


def display_for(log_format: str, status: Status, out: TextIO, err: TextIO) -> Listener:
    """The status screen on a terminal (or when asked), else plain lines, or JSON."""
    if log_format == "json":
        return JsonLog(status, out)
    if log_format == "screen" or (log_format == "auto" and out.isatty()):
        return Screen(status, out)
    return LineLog(status, out, err)


def service_for(
    settings: Settings,
    tunnels: list[TunnelOptions],
    args: argparse.Namespace,
    rotate_after: float = protocol.CONNECTION_ROTATE_SECONDS,
) -> Service:
    """The service the flags ask for (not started)."""
    return Service(
        settings,
        tunnels,
        inspect=settings.inspect,
        inspect_memory=args.inspect_memory or INSPECT_MEMORY_BYTES,
        retry_at_start=True,
        heartbeat=args.heartbeat,
        rotate_after=rotate_after,
    )


def _serve(
    settings: Settings, tunnels: list[TunnelOptions], args: argparse.Namespace, rotate_after: float
) -> int:
    # The command owns its process (the Python API leaves its host's allocator alone).
    limit_malloc_arenas()
    service = service_for(settings, tunnels, args, rotate_after)
    display = display_for(args.log_format, service.status, sys.stdout, sys.stderr)
    service.listeners.append(display)
    # The agent's warnings go where the user looks, never as raw text over the status screen.
    agent_log = logging.getLogger("hatchway")
    agent_log.addHandler(ListenerLogHandler(display))
    agent_log.propagate = False

    stopping, cut_short = threading.Event(), threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        # Never blocks in the handler: the main thread is inside service.run().
        if stopping.is_set():  # the second signal: at once
            cut_short.set()
            threading.Thread(target=service.close, daemon=True).start()
            return
        stopping.set()
        threading.Thread(
            target=service.stop, args=(args.stop_grace,), name="hatchway-stop", daemon=True
        ).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    warn_if_nothing_listens(tunnels)
    try:
        service.run()
    except HatchwayError as exc:
        if isinstance(display, Screen):  # the screen is gone now: say why on the terminal
            print(f"hatchway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if cut_short.is_set() or service.session.in_flight:
        # Workers still waiting on the local app would hold the interpreter's exit until the
        # app answers (it joins them): the requests were given up, so the process goes now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_CUT_SHORT if cut_short.is_set() else 0)
    return 0


def _read_token() -> str:
    """The token typed at a hidden prompt, or the first line of piped input."""
    if sys.stdin.isatty():
        return getpass.getpass("Agent token (not shown): ").strip()
    return sys.stdin.readline().strip()


def _config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        if args.action == "add-token":
            token = args.token if args.token not in (None, "-") else _read_token()
            path = set_value("token", token)
            print(f"Token {mask(token)} saved to {path}", file=out)
        elif args.action == "set":
            path = set_value(args.key, args.value)
            shown = mask(args.value) if args.key == "token" else args.value
            print(f"{args.key} = {shown} saved to {path}", file=out)
        elif args.action == "path":
            print(config_path(), file=out)
        else:
            path = config_path()
            data = load_config(path)
            print(f"# {path}" + ("" if data else " (no settings yet)"), file=out)
            print(dump_toml(masked(data)), end="", file=out)
    except ConfigError as exc:
        print(f"hatchway: {exc}", file=err)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
