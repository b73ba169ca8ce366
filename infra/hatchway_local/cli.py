"""``hatchway-local``: the whole relay on one machine. It only parses arguments and wires
``run_local``; with no ``--token`` it saves a token where ``hatchway http`` finds it."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from hatchway import protocol
from hatchway.config import ConfigError, config_path, load_config, update_config
from hatchway_local.admin_api import (
    default_access_log_file,
    default_admin_file,
    default_state_file,
)
from hatchway_local.concurrency import LAMBDA_ACCOUNT_CONCURRENCY
from hatchway_local.event_loop import EVENT_LOOPS, LOOP_ENVIRONMENT_VARIABLE
from hatchway_local.server import DEFAULT_BUCKET, run_local
from hatchway_local.tls import (
    TRUST_ROOTS_ENV,
    ManagedCertificate,
    extra_root_files,
    trust_bundle,
)
from hatchway_relay.hostnames import InvalidHostnames, parse_custom_hostnames
from hatchway_relay.tokens import generate_token

DNS_PROPAGATION_SECONDS = 30
"""The scheduled certificate job's wait too: Cloudflare serves a new record within seconds."""


class _DefaultsShown(argparse.HelpFormatter):
    """Help that names each option's default, where it has one worth naming."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        empty = action.default in (None, [], False) or action.default is argparse.SUPPRESS
        if "%(default)" in text or empty or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hatchway-local",
        description="Run the Hatchway relay on this machine.",
        formatter_class=_DefaultsShown,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port for agents and visitors")
    parser.add_argument("--domain", default="localhost", help="tunnels are <name>.<domain>:<port>")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        help="accepted agent token (repeatable; default: the token saved in the agent's config "
        "file, else a new one, printed once and saved there)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "memory", "dynamodb"),
        default="sqlite",
        help="where the relay's state lives: tokens, reservations and share links in a SQLite "
        "file that survives restarts (sqlite, the default), nothing kept past this process "
        "(memory: for tests and throw-away runs), or DynamoDB (the production adapters)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=None,
        metavar="FILE",
        help="the SQLite file of --store sqlite (default: $XDG_STATE_HOME/hatchway/local.db)",
    )
    parser.add_argument(
        "--access-log",
        default=None,
        metavar="FILE|off",
        help="append an access-log line (the AWS stack's JSON format) per visitor request and "
        "agent event to FILE (default: $XDG_STATE_HOME/hatchway/access.log); off: none. "
        "hatchway-admin --local logs reads the latest either way",
    )
    parser.add_argument(
        "--dynamodb-endpoint", metavar="URL", help="DynamoDB endpoint URL (e.g. a local one)"
    )
    parser.add_argument("--table", default="hatchway", help="DynamoDB table name")
    parser.add_argument(
        "--response-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for an agent's answer (default: "
        f"{protocol.RESPONSE_TIMEOUT_SECONDS:g}, under the HTTP API's 30)",
    )
    blobs = parser.add_argument_group("large bodies")
    blobs.add_argument(
        "--blob-store",
        choices=("memory", "s3"),
        default=None,
        help="where bodies too large for a message go: served by this relay (memory) or an "
        "S3 bucket; default: s3 when --s3-endpoint is given, else memory",
    )
    blobs.add_argument("--s3-endpoint", metavar="URL", help="S3 endpoint URL (e.g. a local one)")
    blobs.add_argument(
        "--bucket",
        default=DEFAULT_BUCKET,
        help="S3 bucket, created if missing (default: %(default)s)",
    )
    lam = parser.add_argument_group(
        "Lambda concurrency (as AWS counts it: one pool per account; over it, throttled)"
    )
    lam.add_argument(
        "--account-concurrency",
        type=int,
        default=LAMBDA_ACCOUNT_CONCURRENCY,
        help="the account's concurrent-executions quota (default: %(default)s, AWS's default)",
    )
    lam.add_argument(
        "--websocket-reserved-concurrency",
        type=int,
        default=None,
        help="reserved for the WebSocket function (template: WebSocketReservedConcurrency; "
        "default: none, it shares the account pool)",
    )
    lam.add_argument(
        "--http-max-concurrency",
        type=int,
        default=None,
        help="cap of the HTTP function, set as its reserved concurrency (template: "
        "HttpMaxConcurrency; default: none, it shares the account pool)",
    )
    parser.add_argument(
        "--custom-hostname",
        action="append",
        default=[],
        metavar="HOSTNAME=TUNNEL",
        help="serve a hostname of yours from a reserved tunnel (repeatable); point its DNS here",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=None,
        help="the gateway's event loop: uvloop when installed (auto, the default; "
        f"${LOOP_ENVIRONMENT_VARIABLE} sets it too), or asyncio's own",
    )
    parser.add_argument(
        "--admin-file",
        type=Path,
        default=None,
        help="where hatchway-admin --local finds this relay (default: "
        "$XDG_STATE_HOME/hatchway/local-admin.json)",
    )
    tls = parser.add_argument_group("TLS for --domain (certbot DNS-01 through Cloudflare)")
    tls.add_argument(
        "--tls",
        choices=("off", "letsencrypt"),
        default="off",
        help="letsencrypt: obtain a certificate for --domain and serve HTTPS only",
    )
    tls.add_argument(
        "--acme-directory",
        default="production",
        metavar="URL|production|staging",
        help="ACME directory URL, or production / staging (Let's Encrypt's; staging's roots are "
        "downloaded from letsencrypt.org unless --acme-trust-roots is given)",
    )
    tls.add_argument(
        "--acme-trust-roots",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="PEM roots trusted besides the public ones, for the ACME server's HTTPS and the "
        f"certificate's chain (repeatable; default: ${TRUST_ROOTS_ENV}; $SSL_CERT_FILE is "
        "added too)",
    )
    tls.add_argument(
        "--dns-propagation-seconds",
        type=int,
        metavar="SECONDS",
        default=DNS_PROPAGATION_SECONDS,
        help="wait after writing the DNS-01 records before validation",
    )
    tls.add_argument("--acme-email", metavar="EMAIL", help="contact address for expiry notices")
    tls.add_argument(
        "--cloudflare-token-secret",
        help="Secrets Manager secret or SSM parameter (/name) holding the Cloudflare API token; "
        "default: the CLOUDFLARE_API_TOKEN environment variable",
    )
    tls.add_argument(
        "--tls-state-dir",
        type=Path,
        default=None,
        help="where certbot's state lives (default: $XDG_STATE_HOME/hatchway/tls)",
    )
    return parser


def _managed_certificate(args: argparse.Namespace) -> ManagedCertificate:
    """The gateway's certificate for ``*.<domain>`` and ``<domain>``, obtained or renewed now."""
    from hatchway_domain.certificates import Settings
    from hatchway_domain.secrets import ApiToken, read_cloudflare_token

    if args.domain in ("localhost", ""):
        raise ValueError("--tls letsencrypt needs --domain: a zone of yours on Cloudflare")
    if args.cloudflare_token_secret:
        import boto3

        token = read_cloudflare_token(
            args.cloudflare_token_secret,
            secretsmanager=boto3.client("secretsmanager"),
            ssm=boto3.client("ssm"),
        )
    elif os.environ.get("CLOUDFLARE_API_TOKEN"):
        token = ApiToken(os.environ["CLOUDFLARE_API_TOKEN"])
    else:
        raise ValueError("set CLOUDFLARE_API_TOKEN or pass --cloudflare-token-secret")
    settings = Settings(
        domains=(f"*.{args.domain}", args.domain),
        acme_directory=args.acme_directory,
        email=args.acme_email,
        propagation_seconds=args.dns_propagation_seconds,
        cloudflare_base_url=os.environ.get("CLOUDFLARE_BASE_URL"),
    )
    state = args.tls_state_dir or default_admin_file().parent / "tls"
    extra = extra_root_files(args.acme_trust_roots, os.environ)
    bundle = trust_bundle(extra, settings.acme_directory, state)
    if bundle is not None:
        # One file for both checks: certbot's HTTPS to the ACME server, and the chain's root.
        settings = dataclasses.replace(
            settings, acme_ca_bundle=str(bundle), trust_roots_file=str(bundle)
        )
    managed = ManagedCertificate(settings, state, token)
    managed.refresh()
    managed.start_renewals()
    return managed


def _tokens(given: list[str]) -> list[str]:
    """The tokens to accept; with none given, the saved one or a new one saved for the agent."""
    if given:
        return given
    saved = load_config().get("token")
    if isinstance(saved, str) and saved:
        print(f"hatchway-local: using the agent token saved in {config_path()}", flush=True)
        return [saved]
    token = generate_token()
    path = update_config(token=token)
    print(f"hatchway-local: new agent token {token}", flush=True)
    print(f"hatchway-local: saved in {path}, where `hatchway http` finds it", flush=True)
    return [token]


def _access_log_file(option: str | None) -> Path | None:
    """``--access-log``: a file, the default one, or none (``off``)."""
    if option == "off":
        return None
    return Path(option) if option else default_access_log_file()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="hatchway-local: %(message)s")
    try:
        custom_hostnames = parse_custom_hostnames(args.custom_hostname)
        tokens = _tokens(args.token)
    except (ConfigError, InvalidHostnames) as exc:
        print(f"hatchway-local: {exc}", file=sys.stderr)
        return 2
    managed: ManagedCertificate | None = None
    if args.tls == "letsencrypt":
        try:
            managed = _managed_certificate(args)
        except Exception as exc:  # say why and stop: serving plain HTTP instead would mislead
            print(f"hatchway-local: no certificate: {exc}", file=sys.stderr)
            return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with run_local(
            host=args.host,
            port=args.port,
            domain=args.domain,
            tokens=tokens,
            store=args.store,
            state_file=args.state or default_state_file(),
            dynamodb_endpoint=args.dynamodb_endpoint,
            table_name=args.table,
            response_timeout=args.response_timeout,
            ssl_context=managed.context if managed else None,
            custom_hostnames=custom_hostnames,
            account_concurrency=args.account_concurrency,
            websocket_reserved_concurrency=args.websocket_reserved_concurrency,
            http_max_concurrency=args.http_max_concurrency,
            blob_store=args.blob_store,
            s3_endpoint=args.s3_endpoint,
            bucket=args.bucket,
            access_log_file=_access_log_file(args.access_log),
            event_loop=args.event_loop,
        ) as server:
            admin_file = args.admin_file or default_admin_file()
            server.admin.write_admin_file(admin_file)
            try:
                print(
                    f"hatchway-local ready  agent={server.agent_url}  public={server.public_base}",
                    flush=True,
                )
                while not stop.wait(1.0):
                    pass
            finally:
                server.admin.remove_admin_file(admin_file)
    except ValueError as exc:  # a setting Lambda would refuse too
        print(f"hatchway-local: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hatchway-local: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if managed is not None:
            managed.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
