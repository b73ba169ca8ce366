"""``run_local``: the whole relay on one machine — gateway, store, blob store, poster, relay
core and handlers wired together and served from a background thread, for the CLI and for
tests."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hatchway import protocol
from hatchway_local.access_log import AccessLog
from hatchway_local.admin_api import AdminServer
from hatchway_local.concurrency import LAMBDA_ACCOUNT_CONCURRENCY, LambdaConcurrency
from hatchway_local.event_loop import new_event_loop
from hatchway_local.gateway import Gateway
from hatchway_local.integrations import AnswerWrites, DynamoDBWrites, MemoryWrites, load_routes
from hatchway_local.local_poster import LocalPoster, LocalSocketPoster
from hatchway_local.management import MANAGEMENT_HOST, management_url
from hatchway_local.platform import (
    HTTP_FUNCTION_TIMEOUT_SECONDS,
    HTTP_INTEGRATION_TIMEOUT_SECONDS,
    GatewayLimits,
)
from hatchway_relay.access_logs import Routing
from hatchway_relay.adapters.memory_blobs import MemoryBlobStore
from hatchway_relay.adapters.memory_metrics import MemoryMetrics
from hatchway_relay.adapters.memory_store import MemoryStore
from hatchway_relay.adapters.sqlite_store import SqliteStore
from hatchway_relay.config import REFUSAL_FLUSH_SECONDS
from hatchway_relay.core import Relay, RelayConfig
from hatchway_relay.handlers import http as http_handlers
from hatchway_relay.handlers import visitor_socket as visitor_socket_handlers
from hatchway_relay.handlers import websocket as ws_handlers
from hatchway_relay.ports import BlobStore, Poster, Store, SystemClock
from hatchway_relay.prices import stored_response_limit
from hatchway_relay.tokens import hash_token

if TYPE_CHECKING:  # boto3 is imported only for the DynamoDB store
    from hatchway_relay.adapters.dynamo_store import DynamoStore

STARTUP_TIMEOUT_SECONDS = 30.0

STORED_RESPONSE_OVERHEAD_BYTES = 1024
"""What a stored response item holds besides the packed body (ids, headers, attribute names)."""

BASE64_NUMERATOR, BASE64_DENOMINATOR = 3, 4
"""A packed body travels base64-encoded: 3 bytes of body per 4 stored."""

DEFAULT_BUCKET = "hatchway-blobs"

TOKEN_LABEL = "hatchway-local --token"
"""The label of a token ``hatchway-local`` was started with (or made itself), in listings."""


def dynamodb_inline_response_bytes() -> int:
    """The largest packed response body worth storing in DynamoDB rather than S3 (``prices``)."""
    stored = stored_response_limit() - STORED_RESPONSE_OVERHEAD_BYTES
    return stored * BASE64_NUMERATOR // BASE64_DENOMINATOR


def _gateway_base(tls: bool, host: str, domain: str, port: int) -> str:
    """The gateway as agents reach it: with TLS, the name the certificate covers
    (``connect.<domain>``, as on AWS)."""
    if tls:
        return f"https://connect.{domain}:{port}"
    return f"http://{host}:{port}"


def _path_mode_base(scheme: str, host: str, domain: str, port: int) -> str:
    """Path-mode URLs: on the domain itself with TLS (its certificate covers no address)."""
    return f"{scheme}://{domain if scheme == 'https' else host}:{port}/t/{{name}}/"


@dataclass
class LocalServer:
    host: str
    port: int
    domain: str
    relay: Relay
    store: Store
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    admin: AdminServer
    """The operator's store commands on 127.0.0.1 (``hatchway-admin --local``)."""

    tls: bool = False
    blobs: BlobStore | None = None

    @property
    def agent_url(self) -> str:
        base = _gateway_base(self.tls, self.host, self.domain, self.port)
        return "ws" + base.removeprefix("http") + "/connect"

    @property
    def public_base(self) -> str:
        scheme = "https" if self.tls else "http"
        return (
            f"{scheme}://{{name}}.{self.domain}:{self.port}/ and "
            f"{_path_mode_base(scheme, self.host, self.domain, self.port)}"
        )

    def connection_ids(self) -> list[str]:
        return list(self.gateway.connections)

    def close_connection(self, connection_id: str) -> bool:
        """Close an agent's socket from the server side, as deleting the connection does."""
        future = asyncio.run_coroutine_threadsafe(
            self.gateway.close_connection(connection_id), self.loop
        )
        return future.result(10)


def _dynamo_store(endpoint: str | None, table_name: str) -> tuple[DynamoStore, AnswerWrites]:
    """The relay's store on the table, and what the answer integration writes to it with: a
    client of its own, as API Gateway's calls are not the functions' (a resource's client
    would also turn the template's typed values into maps)."""
    import boto3

    from hatchway_relay.adapters.dynamo_store import DynamoStore, create_table

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options: dict[str, Any] = {"region_name": region}
    if endpoint:
        options["endpoint_url"] = endpoint
        # A local endpoint accepts anything; do not make the user invent credentials for it.
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            options.update(aws_access_key_id="local", aws_secret_access_key="local")
    resource = boto3.resource("dynamodb", **options)
    create_table(resource, table_name)
    store = DynamoStore(resource.Table(table_name))
    forget_earlier_connections(store)
    return store, DynamoDBWrites(boto3.client("dynamodb", **options), table_name)


def forget_earlier_connections(store: Any) -> int:
    """Forget every connection a table remembers from an earlier run of this gateway (killed
    before its agents' ``$disconnect`` could land): their sockets died with that process, and
    their claims would otherwise keep the names from a restarted agent until the lease ends.
    A table belongs to one ``hatchway-local``; the count forgotten is returned."""
    from hatchway_relay import admin

    stale = store.list_connections()
    for record in stale:
        admin.forget_connection(store, record.connection_id)
    return len(stale)


def _s3_blobs(endpoint: str | None, bucket: str) -> BlobStore:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from hatchway_relay.adapters.s3_blobs import S3BlobStore

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    options: dict[str, Any] = {"region_name": region}
    if endpoint:
        options["endpoint_url"] = endpoint
        # Local S3 endpoints serve one host: bucket names go in the path, not the hostname.
        options["config"] = Config(signature_version="s3v4", s3={"addressing_style": "path"})
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            options.update(aws_access_key_id="local", aws_secret_access_key="local")
    client = boto3.client("s3", **options)
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        location = {} if region == "us-east-1" else {"LocationConstraint": region}
        client.create_bucket(
            Bucket=bucket, **({"CreateBucketConfiguration": location} if location else {})
        )
    return S3BlobStore(client, bucket)


def _api_gateway_poster(url: str) -> Poster:
    from hatchway_relay.adapters.apigateway_poster import ApiGatewayPoster, make_client

    return ApiGatewayPoster(make_client(url))


def bind(host: str, port: int) -> socket.socket:
    """Bind first, so that an ephemeral port is known before anything is built around it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


@contextmanager
def serve_gateway(
    gateway: Gateway,
    sock: socket.socket,
    ssl_context: ssl.SSLContext | None = None,
    management_sock: socket.socket | None = None,
    event_loop: str | None = None,
) -> Iterator[asyncio.AbstractEventLoop]:
    """Serve ``gateway`` on a bound socket from a background thread with its own event loop
    (over TLS when ``ssl_context`` is given), and its management API on ``management_sock``
    (plain HTTP on loopback; by default a new ephemeral port: ``gateway.management_url``).
    ``event_loop`` names the loop's kind (``hatchway_local.event_loop``)."""
    loop = new_event_loop(event_loop)  # first: an unknown kind binds nothing more
    if management_sock is None:
        management_sock = bind(MANAGEMENT_HOST, 0)
    gateway.management_url = management_url(management_sock, gateway.management_key)
    runner = gateway.runner(loop)
    management = web.AppRunner(gateway.management_app, access_log=None, handle_signals=False)
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(management.setup())
            loop.run_until_complete(web.SockSite(runner, sock, ssl_context=ssl_context).start())
            loop.run_until_complete(web.SockSite(management, management_sock).start())
            gateway.loop_thread = threading.get_ident()
            gateway.loop = loop
        except BaseException as exc:
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="hatchway-local", daemon=True)
    thread.start()
    if not started.wait(STARTUP_TIMEOUT_SECONDS) or failure:
        raise RuntimeError(f"local gateway failed to start: {failure[:1]}")
    try:
        yield loop
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        asyncio.run_coroutine_threadsafe(management.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        if not thread.is_alive():
            loop.close()  # its selector's and wake-up's descriptors, a dozen on uvloop
        gateway.http_pool.shutdown(wait=False, cancel_futures=True)
        gateway.ws_pool.shutdown(wait=False, cancel_futures=True)
        gateway.socket_pool.shutdown(wait=False, cancel_futures=True)
        gateway.integration_pool.shutdown(wait=False, cancel_futures=True)
        sock.close()
        management_sock.close()


@contextmanager
def run_local(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    domain: str = "localhost",
    tokens: Sequence[str] = (),
    store: str = "memory",
    state_file: Path | None = None,
    dynamodb_endpoint: str | None = None,
    table_name: str = "hatchway",
    response_timeout: float | None = None,
    integration_timeout: float = HTTP_INTEGRATION_TIMEOUT_SECONDS,
    http_function_timeout: float = HTTP_FUNCTION_TIMEOUT_SECONDS,
    idle_timeout: float = 600.0,
    max_connection_seconds: float = float(protocol.MAX_CONNECTION_SECONDS),
    ssl_context: ssl.SSLContext | None = None,
    custom_hostnames: Mapping[str, str] | None = None,
    account_concurrency: int = LAMBDA_ACCOUNT_CONCURRENCY,
    websocket_reserved_concurrency: int | None = None,
    http_max_concurrency: int | None = None,
    blob_store: str | None = None,
    s3_endpoint: str | None = None,
    bucket: str = DEFAULT_BUCKET,
    access_log_file: Path | None = None,
    event_loop: str | None = None,
) -> Iterator[LocalServer]:
    """Serve the relay. ``blob_store`` is ``memory`` (served by this gateway) or ``s3`` (the
    bucket at ``s3_endpoint``, or AWS's S3 without one); by default S3 when an endpoint is
    given. The concurrency knobs mirror the template's (``WebSocketReservedConcurrency``,
    ``HttpMaxConcurrency``) within an account quota of ``account_concurrency``. Access-log
    lines are kept in memory for ``hatchway-admin --local logs``, and appended to
    ``access_log_file`` when one is given."""
    blob_store = blob_store or ("s3" if s3_endpoint else "memory")
    if blob_store not in ("memory", "s3"):
        raise ValueError(f"unknown blob store {blob_store!r}: use memory or s3")
    concurrency = LambdaConcurrency(
        account_concurrency, websocket_reserved_concurrency, http_max_concurrency
    )
    concurrency.validate()  # before binding: a refused setting should not hold the port
    sock = bind(host, port)
    port = sock.getsockname()[1]
    # The management API listens on loopback alone, whatever ``host`` is, and in plain HTTP
    # even when visitors get TLS: only this process's poster calls it.
    management_sock = bind(MANAGEMENT_HOST, 0)
    tls = ssl_context is not None
    access_log = AccessLog(path=access_log_file)

    clock = SystemClock()
    blobs: BlobStore
    if blob_store == "memory":
        memory_blobs = MemoryBlobStore(_gateway_base(tls, host, domain, port), clock)
        blobs = memory_blobs
    else:
        memory_blobs = None
        blobs = _s3_blobs(s3_endpoint, bucket)
    gateway = Gateway(
        # Agents, @connections calls and blob URLs arrive on these names; every other Host is
        # a visitor's.
        {host, "localhost", "127.0.0.1", "[::1]", domain, f"connect.{domain}"},
        GatewayLimits(
            integration_timeout,
            idle_timeout,
            max_connection_seconds,
            http_function_timeout=http_function_timeout,
        ),
        concurrency,
        blobs=memory_blobs,
        # The in-memory store never blocks (SQLite's writes are an operator's rare, short ones)
        # and the local poster does not wait on the loop: invocations can run on the loop
        # itself (HTTP ones as steps, below). DynamoDB calls (and the HTTP poster over the
        # management API) block, so they keep their threads.
        websocket_on_loop=store in ("memory", "sqlite"),
        access_log=access_log,
    )
    watched: MemoryStore | None = None
    writes: AnswerWrites
    if store in ("memory", "sqlite"):
        if store == "sqlite":
            if state_file is None:
                raise ValueError("--store sqlite needs a state file")
            watched = SqliteStore(state_file, clock)
        else:
            watched = MemoryStore(clock)
        chosen_store: Store = watched
        writes = MemoryWrites(watched, table_name)
        poster: Poster = LocalPoster(gateway)
        inline_response_bytes = protocol.MAX_INLINE_RESPONSE_BYTES
    elif store == "dynamodb":
        chosen_store, writes = _dynamo_store(dynamodb_endpoint, table_name)
        # The production poster, talking HTTP to this gateway's own @connections endpoint.
        poster = _api_gateway_poster(management_url(management_sock, gateway.management_key))
        inline_response_bytes = dynamodb_inline_response_bytes()
    else:
        raise ValueError(f"unknown store {store!r}: use sqlite, memory or dynamodb")
    scheme = "https" if tls else "http"
    config = RelayConfig(
        path_url=_path_mode_base(scheme, host, domain, port),
        subdomain_url=f"{scheme}://{{name}}.{domain}:{port}/",
        domain=domain,
        custom_hostnames=dict(custom_hostnames or {}),
        custom_hostname_url=f"{scheme}://{{host}}:{port}/",
        inline_response_bytes=inline_response_bytes,
        # In memory a write is free: every refusal is counted at once.
        refusal_flush_seconds=0.0 if store in ("memory", "sqlite") else REFUSAL_FLUSH_SECONDS,
        response_timeout=response_timeout or protocol.RESPONSE_TIMEOUT_SECONDS,
        # This gateway writes a reply's body as it comes (API Gateway's HTTP API cannot),
        # and passes visitors' binary WebSocket messages (API Gateway closes them, 1003).
        streams=True,
        socket_binary=True,
    )
    relay = Relay(
        chosen_store, poster, clock, config, blobs=blobs, sockets=LocalSocketPoster(gateway)
    )
    # The relay's own metrics, kept in memory for a day: the operator's dashboard charts them.
    metrics = MemoryMetrics(clock)
    for token in tokens:
        # A token this box keeps already (SQLite) keeps its record: its limits, its creation
        # and last use are the operator's, not reset by a restart.
        if chosen_store.get_token(hash_token(token)) is None:
            relay.add_token(token, TOKEN_LABEL)
    # Visits run on the loop only when nothing they call blocks: the store and the blob
    # store both in memory (an S3 blob store is reached over the network).
    on_loop = watched if memory_blobs is not None else None
    # Agents' answers are stored by the template's own integration, as on AWS.
    gateway.set_integrations(load_routes(table_name), writes)
    gateway.set_handlers(
        ws_handlers.make_handler(relay),
        http_handlers.make_handler(relay, metrics),
        http_handlers.make_stepping_handler(relay, metrics, body_as_bytes=True),
        answers=on_loop,
    )
    gateway.chunks = chosen_store
    # Visitors' WebSockets: the gateway plays the front a relay on AWS puts before them.
    gateway.set_socket_handler(visitor_socket_handlers.make_handler(relay))

    with serve_gateway(gateway, sock, ssl_context, management_sock, event_loop) as loop:

        def close_socket(connection_id: str) -> None:
            # A revoked token's agents lose their sockets at once, not at their next heartbeat.
            asyncio.run_coroutine_threadsafe(gateway.close_connection(connection_id), loop)

        admin = AdminServer(
            chosen_store,
            on_forget=close_socket,
            metrics=metrics,
            access_log=access_log,
            routing=Routing(domain, config.custom_hostnames),
        ).start()
        try:
            yield LocalServer(
                host,
                port,
                domain,
                relay,
                chosen_store,
                gateway,
                loop,
                admin,
                tls,
                blobs,
            )
        finally:
            admin.close()
            access_log.close()
            if isinstance(chosen_store, SqliteStore):
                chosen_store.close()
