"""``hatchway``: the command line. It only parses arguments and wires the session together."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from hatchway import protocol
from hatchway.config import ConfigError, resolve_settings
from hatchway.errors import HatchwayError
from hatchway.forward import Forwarder, parse_target
from hatchway.session import Session


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatchway", description="Give a local app a public URL.")
    commands = parser.add_subparsers(dest="command", required=True)
    http = commands.add_parser("http", help="tunnel HTTP to a local app")
    http.add_argument("target", help="the local app: 3000, host:port or http://host:port")
    http.add_argument("--server", help="relay WebSocket URL (env HATCHWAY_SERVER)")
    http.add_argument("--token", help="agent token (env HATCHWAY_TOKEN)")
    http.add_argument("--subdomain", help="tunnel name to ask for (default: a random one)")
    http.add_argument(
        "--heartbeat", type=float, default=None, help="seconds between pings (default: the relay's)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        target = parse_target(args.target)
        if args.subdomain:
            protocol.validate_name(args.subdomain)
        settings = resolve_settings(args.server, args.token)
    except (ValueError, ConfigError) as exc:
        print(f"hatchway: {exc}", file=sys.stderr)
        return 2
    if not settings.token:
        print(
            "hatchway: no token. Pass --token, set HATCHWAY_TOKEN, or run hatchway-local on this "
            "machine once (it saves one for you).",
            file=sys.stderr,
        )
        return 2

    forwarder = Forwarder(target)

    def ready(welcome: protocol.Welcome) -> None:
        for tunnel in welcome.tunnels:
            for url in (tunnel.url, tunnel.path_url):
                if url:
                    print(f"Forwarding  {url} -> {target.url}", flush=True)

    def done(request: protocol.Request, response: protocol.Response, elapsed_ms: float) -> None:
        print(
            f"{request.method} {request.target} {response.status} {elapsed_ms:.0f} ms", flush=True
        )

    def reconnecting(attempt: int, delay: float, error: BaseException | None) -> None:
        reason = f" ({error})" if error else ""
        print(
            f"hatchway: connection to the relay lost{reason}; retry {attempt} in {delay:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    session = Session(
        settings.server,
        settings.token,
        forwarder,
        (args.subdomain,),
        heartbeat=args.heartbeat,
        on_ready=ready,
        on_request_done=done,
        on_reconnecting=reconnecting,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=session.close, daemon=True).start()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        session.run()
    except HatchwayError as exc:
        print(f"hatchway: {exc}", file=sys.stderr)
        return 1
    finally:
        forwarder.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
