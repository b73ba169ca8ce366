"""The local relay's admin API: the operator's store commands over HTTP on loopback, so that
``hatchway-admin --local`` manages ``hatchway-local``, whose memory store lives in its process.

One request per store call: ``POST /store/<method>`` with a JSON list of arguments, answered
with ``{"result": ...}``. Only the calls ``hatchway_relay.admin`` makes are served. The listener
binds to 127.0.0.1 alone, and every request must carry the admin key
(``Authorization: Bearer``), which ``hatchway-local`` writes to an admin file only its user can
read. ``RemoteStore`` is the client: an ``AdminStore`` whose calls travel this way.

When the relay keeps its metrics in memory (``MemoryMetrics``), ``POST /metrics/<method>``
reads them the same way, for the operator's dashboard; ``RemoteMetrics`` is that client.
``POST /logs/select`` answers ``hatchway-admin --local logs`` from the gateway's access log
(``access_log``); ``RemoteAccessLogs`` is that client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import http.client
import json
import os
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from hatchway.protocol import AccessRules
from hatchway_local.access_log import AccessLog
from hatchway_relay.access_logs import LogQuery, Routing, select
from hatchway_relay.adapters.memory_metrics import MemoryMetrics
from hatchway_relay.ports import (
    Claim,
    ConnectionRecord,
    PoolMember,
    Store,
    TokenLimits,
    TokenRecord,
)

ADMIN_HOST = "127.0.0.1"
"""The admin listener never binds elsewhere: it changes who may use the relay."""

MAX_ADMIN_REQUEST_BYTES = 64 * 1024
"""Largest admin request body accepted (a token record with its reserved names is ~1 KB)."""

ADMIN_TIMEOUT_SECONDS = 10.0
"""How long the client waits for one admin call."""

SHUTDOWN_POLL_SECONDS = 0.05
"""How often the admin API's server looks for a stop (socketserver's default, 0.5 s, made
every stop of the gateway wait about that long)."""

ADMIN_METHODS = frozenset(
    {
        "put_token",
        "get_token",
        "list_tokens",
        "delete_token",
        "get_connection",
        "list_connections",
        "delete_connection",
        "list_claims",
        "release_claim",
        "reserve_name",
        "get_reservation",
        "release_reservation",
    }
)
"""Every store call the operator's commands make; anything else is refused."""

METRICS_METHODS = frozenset({"series", "dimension_values"})
"""The reads of ``MemoryMetrics`` the dashboard makes; nothing writes metrics this way."""

LOGS_METHODS = frozenset({"select"})
"""The one read of the access log: the lines a ``LogQuery`` wants."""

_RECORDS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (TokenRecord, ConnectionRecord, Claim, AccessRules, TokenLimits, PoolMember)
}
"""Records that may cross the wire, nested ones included (a claim's access rules)."""


def state_dir() -> Path:
    """Where ``hatchway-local`` keeps its state: ``$XDG_STATE_HOME/hatchway`` (by default
    ``~/.local/state/hatchway``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "hatchway"


def default_admin_file() -> Path:
    """Where ``hatchway-local`` tells ``hatchway-admin --local`` how to reach it."""
    return state_dir() / "local-admin.json"


def default_state_file() -> Path:
    """Where ``hatchway-local`` keeps what an operator creates (``SqliteStore``)."""
    return state_dir() / "local.db"


def default_access_log_file() -> Path:
    """Where ``hatchway-local`` appends its access-log lines (the stack's JSON lines)."""
    return state_dir() / "access.log"


class AdminError(Exception):
    """The admin API refused or failed a call; the message says why."""


# --- Wire format ----------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """JSON-ready form of a store argument or result; records carry their type's name."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"record": type(value).__name__, **{k: encode(v) for k, v in vars(value).items()}}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of ``encode``: records rebuilt (nested ones too), their lists back to
    tuples."""
    if isinstance(value, dict) and value.get("record") in _RECORDS:
        fields = {k: _field(decode(v)) for k, v in value.items() if k != "record"}
        return _RECORDS[value["record"]](**fields)
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _field(value: Any) -> Any:
    """A record's field: records hold tuples where JSON has lists, nested ones too (a claim's
    errors by cause are pairs)."""
    return tuple(_field(v) for v in value) if isinstance(value, list) else value


# --- Server ---------------------------------------------------------------------------------


class AdminServer:
    """Serves ``store``'s admin calls on 127.0.0.1. ``on_forget`` hears every connection the
    operator's commands forget (a revoked token's), so the gateway can close its socket too.
    ``metrics``: the relay's in-memory metrics, if it keeps any, for the dashboard's charts."""

    def __init__(
        self,
        store: Store,
        key: str | None = None,
        on_forget: Callable[[str], object] | None = None,
        metrics: MemoryMetrics | None = None,
        access_log: AccessLog | None = None,
        routing: Routing | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.access_log = access_log
        self.routing = routing or Routing()
        self.key = key or secrets.token_urlsafe(32)
        self.on_forget = on_forget
        # Operator commands are rare; one at a time keeps the store's view simple.
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((ADMIN_HOST, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            # It looks for a shutdown this often: a stop waits at most this long for it.
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name="hatchway-admin-api",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AdminServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def write_admin_file(self, path: Path) -> None:
        """Tell ``hatchway-admin --local`` where we are, readable by this user only."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump({"url": self.url, "key": self.key}, out)
        os.replace(partial, path)

    def remove_admin_file(self, path: Path) -> None:
        """Delete the admin file if it still points at this server (another may have started)."""
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text()).get("url") == self.url:
                path.unlink()

    def call(self, method: str, args: list[Any]) -> Any:
        if method not in ADMIN_METHODS:
            raise AdminError(f"unknown admin call {method!r}")
        with self._lock:
            result = getattr(self.store, method)(*[decode(a) for a in args])
        if method == "delete_connection" and self.on_forget is not None:
            self.on_forget(args[0])
        return encode(result)

    def read_metrics(self, method: str, args: list[Any]) -> Any:
        if method not in METRICS_METHODS:
            raise AdminError(f"unknown metrics call {method!r}")
        if self.metrics is None:
            raise NoMetricsKept("this hatchway-local keeps no metrics")
        return getattr(self.metrics, method)(*args)

    def read_logs(self, method: str, args: list[Any]) -> Any:
        """``select``: the access-log entries of ``LogQuery(*args)``, oldest first."""
        if method not in LOGS_METHODS:
            raise AdminError(f"unknown logs call {method!r}")
        if self.access_log is None:
            raise AdminError("this hatchway-local writes no access log")
        return select(self.access_log.lines(), LogQuery(*args), self.routing)


class NoMetricsKept(AdminError):
    """The relay behind the admin API was started without in-memory metrics."""


def _handler_for(server: AdminServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), server.key.encode()):
                self._answer(401, {"error": "the admin key is missing or wrong"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_ADMIN_REQUEST_BYTES:
                self._answer(
                    413, {"error": f"admin requests are at most {MAX_ADMIN_REQUEST_BYTES} bytes"}
                )
                return
            kind, _, method = self.path.lstrip("/").partition("/")
            call = {
                "store": server.call,
                "metrics": server.read_metrics,
                "logs": server.read_logs,
            }.get(kind)
            try:
                args = json.loads(self.rfile.read(length) or b"[]")
                if not isinstance(args, list):
                    raise ValueError("arguments must be a JSON list")
                if call is None:
                    raise AdminError(f"no such admin path {self.path!r}")
                self._answer(200, {"result": call(method, args)})
            except NoMetricsKept as exc:
                self._answer(404, {"error": str(exc), "code": "no-metrics"})
            except (AdminError, ValueError, TypeError, KeyError) as exc:
                self._answer(400, {"error": str(exc)})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests carry the admin key in a header; never echo them anywhere

    return Handler


# --- Client ---------------------------------------------------------------------------------


class _AdminClient:
    """One admin API, reached on loopback with its key."""

    _kind = "store"

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or parts.port is None:
            raise AdminError(f"the local admin API must be on loopback, not {url!r}")
        self._host, self._port, self._key = parts.hostname, parts.port, key

    @classmethod
    def from_admin_file(cls, path: Path) -> Self:
        try:
            found = json.loads(path.read_text())
            return cls(found["url"], found["key"])
        except FileNotFoundError:
            raise AdminError(
                f"no running hatchway-local found ({path} is missing): start it first"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise AdminError(f"{path} is not a hatchway-local admin file: {exc}") from None

    def _call(self, method: str, *args: Any) -> Any:
        body = json.dumps(encode(list(args))).encode()
        connection = http.client.HTTPConnection(
            self._host, self._port, timeout=ADMIN_TIMEOUT_SECONDS
        )
        try:
            connection.request(
                "POST",
                f"/{self._kind}/{method}",
                body,
                {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
            )
            response = connection.getresponse()
            answer = json.loads(response.read() or b"{}")
        except OSError as exc:
            raise AdminError(
                f"hatchway-local's admin API at {self._host}:{self._port} did not answer ({exc}); "
                "is hatchway-local still running?"
            ) from None
        finally:
            connection.close()
        if response.status == 404 and answer.get("code") == "no-metrics":
            raise NoMetricsKept(str(answer["error"]))
        if response.status != 200:
            raise AdminError(
                f"hatchway-local refused {method}: {answer.get('error', response.status)}"
            )
        return decode(answer["result"])


class RemoteStore(_AdminClient):
    """The ``AdminStore`` calls of a ``hatchway-local`` process, over its admin API."""

    def put_token(self, record: TokenRecord) -> None:
        self._call("put_token", record)

    def get_token(self, token_hash: str) -> TokenRecord | None:
        result: TokenRecord | None = self._call("get_token", token_hash)
        return result

    def list_tokens(self) -> list[TokenRecord]:
        result: list[TokenRecord] = self._call("list_tokens")
        return result

    def delete_token(self, token_hash: str) -> None:
        self._call("delete_token", token_hash)

    def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        result: ConnectionRecord | None = self._call("get_connection", connection_id)
        return result

    def list_connections(self) -> list[ConnectionRecord]:
        result: list[ConnectionRecord] = self._call("list_connections")
        return result

    def delete_connection(self, connection_id: str) -> None:
        self._call("delete_connection", connection_id)

    def list_claims(self) -> list[Claim]:
        result: list[Claim] = self._call("list_claims")
        return result

    def release_claim(self, name: str, connection_id: str) -> bool:
        return bool(self._call("release_claim", name, connection_id))

    def reserve_name(self, name: str, token_id: str) -> bool:
        return bool(self._call("reserve_name", name, token_id))

    def get_reservation(self, name: str) -> str | None:
        result: str | None = self._call("get_reservation", name)
        return result

    def release_reservation(self, name: str, token_id: str) -> bool:
        return bool(self._call("release_reservation", name, token_id))


class RemoteMetrics(_AdminClient):
    """The reads of a ``hatchway-local`` process's ``MemoryMetrics``, over its admin API; they
    raise ``NoMetricsKept`` when it keeps none."""

    _kind = "metrics"

    def series(
        self,
        name: str,
        dimensions: dict[str, str] | None,
        start: float,
        end: float,
        period: int,
        stat: str,
    ) -> list[tuple[float, float]]:
        found = self._call("series", name, dimensions, start, end, period, stat)
        return [(float(t), float(v)) for t, v in found]

    def dimension_values(self, name: str, dimension: str, since: float = 0.0) -> list[str]:
        return [str(v) for v in self._call("dimension_values", name, dimension, since)]


class RemoteAccessLogs(_AdminClient):
    """A ``hatchway-local`` process's access log, read over its admin API."""

    _kind = "logs"

    def read(self, query: LogQuery, now: float) -> list[dict[str, str]]:
        found = self._call("select", query.tunnel, query.agents, query.since, query.limit)
        return [{str(k): str(v) for k, v in entry.items()} for entry in found]
