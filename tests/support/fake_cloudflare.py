"""A fake Cloudflare v4 API on loopback: the zone and DNS-record endpoints that Hatchway's DNS
reconcile job and certbot-dns-cloudflare call through the real ``cloudflare`` SDK, nothing more.

It keeps the v4 envelope, bearer-token auth (403 with code 9109 otherwise) and the record rules
that matter to a client: identical records are refused (81058), a CNAME cannot share its name
with an A, AAAA or CNAME record (81053/81054), names outside the zone get the zone appended.
Anything it does not implement (a route, a method, a query parameter, a body field) is answered
with an error in the envelope, so a new SDK call fails a test instead of passing silently.

Records live in a :class:`RecordStore` that a test may also change directly (to plant a foreign
or drifted record) and that :mod:`support.authoritative_dns` serves over DNS.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import socket
import socketserver
import threading
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, urlsplit

HOST: Final = "127.0.0.1"
API_ROOT: Final = "/client/v4"
"""Path prefix of every endpoint, as in ``https://api.cloudflare.com/client/v4``."""
AUTOMATIC_TTL: Final = 1
"""Cloudflare's TTL value meaning "automatic"."""
MIN_TTL: Final = 60
MAX_TTL: Final = 86400
MAX_COMMENT_CHARS: Final = 100
"""Longest record comment a Free plan zone accepts."""
DEFAULT_PER_PAGE: Final = 100
MAX_PER_PAGE: Final = 5_000_000
MAX_PAGE_NUMBER: Final = 1_000_000
MAX_BODY_BYTES: Final = 64 * 1024
"""Request bodies beyond this are refused: no client of ours sends anything close."""
SERVE_POLL_INTERVAL: Final = 0.02
"""How often the serving loop looks for a shutdown request: bounds how long ``__exit__`` takes."""
IDLE_CONNECTION_TIMEOUT: Final = 5.0
"""How long a kept-alive connection may sit idle before its handler thread ends."""
SUPPORTED_TYPES: Final = frozenset({"A", "AAAA", "CNAME", "TXT", "NS"})
PROXIABLE_TYPES: Final = frozenset({"A", "AAAA", "CNAME"})
ADDRESS_TYPES: Final = frozenset({"A", "AAAA", "CNAME"})
"""Types that cannot share a name with a CNAME record (Cloudflare's rule)."""
ZONE_NAME_SERVERS: Final = ("ns1.fake-cloudflare.test", "ns2.fake-cloudflare.test")
FAKE_ACCOUNT: Final = {"id": "0" * 32, "name": "hatchway tests"}

# Cloudflare's own error codes for the cases clients react to (1004 stands for every validation
# failure here, where Cloudflare has finer codes).
CODE_INVALID_TOKEN: Final = 9109
CODE_NO_ROUTE: Final = 7000
CODE_BAD_IDENTIFIER: Final = 7003
CODE_VALIDATION: Final = 1004
CODE_CNAME_TAKEN_NAME: Final = 81053
CODE_CNAME_EXISTS: Final = 81054
CODE_RECORD_NOT_FOUND: Final = 81044
CODE_IDENTICAL_RECORD: Final = 81058
# Codes the fake invents for what it does not implement; never sent by the real API.
CODE_METHOD_NOT_ALLOWED: Final = 7001
CODE_UNSUPPORTED: Final = 99999

LIST_PARAMS: Final = frozenset(
    {"type", "name", "name.exact", "content", "content.exact", "comment.exact", "match"}
    | {"page", "per_page"}
)
ZONE_LIST_PARAMS: Final = frozenset({"name", "page", "per_page"})
RECORD_FIELDS: Final = frozenset({"type", "name", "content", "ttl", "proxied", "comment", "tags"})
STORE_FIELDS: Final = frozenset({"type", "name", "content", "ttl", "proxied", "comment"})

T = TypeVar("T")


def normalise_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


class RecordStore:
    """The zone contents, shared by the fake API and the DNS server; safe across threads.

    Direct changes skip the API's rules on purpose: a test may plant what the API would refuse.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}

    def records(self, zone_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of the records (of one zone, if given), oldest first."""
        with self._lock:
            return [
                dict(record)
                for record in self._records.values()
                if zone_id is None or record["zone_id"] == zone_id
            ]

    def get(self, record_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(record_id)
            return dict(record) if record is not None else None

    def add(
        self,
        zone_id: str,
        type: str,
        name: str,
        content: str,
        ttl: int = AUTOMATIC_TTL,
        proxied: bool = False,
        comment: str | None = None,
    ) -> dict[str, Any]:
        now = _now()
        record = {
            "id": uuid.uuid4().hex,
            "zone_id": zone_id,
            "type": type.upper(),
            "name": normalise_name(name),
            "content": content,
            "ttl": ttl,
            "proxied": proxied,
            "comment": comment,
            "created_on": now,
            "modified_on": now,
        }
        with self._lock:
            self._records[record["id"]] = record
        return dict(record)

    def update(self, record_id: str, **fields: Any) -> None:
        unknown = set(fields) - STORE_FIELDS
        if unknown:
            raise ValueError(f"not a record field: {', '.join(sorted(unknown))}")
        if "name" in fields:
            fields["name"] = normalise_name(fields["name"])
        if "type" in fields:
            fields["type"] = str(fields["type"]).upper()
        with self._lock:
            record = self._records[record_id]
            record.update(fields, modified_on=_now())

    def delete(self, record_id: str) -> None:
        with self._lock:
            del self._records[record_id]

    def atomically(self, action: Callable[[], T]) -> T:
        """Runs ``action`` under the store's lock: a check and the write it allows are one step."""
        with self._lock:
            return action()


class ApiError(Exception):
    """An answer in the v4 error envelope."""

    def __init__(self, status: HTTPStatus, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _unsupported(what: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, CODE_UNSUPPORTED, f"not supported by the fake: {what}")


def _validation(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, CODE_VALIDATION, f"DNS Validation Error: {message}")


def _page_numbers(query: Mapping[str, str]) -> tuple[int, int]:
    def whole(name: str, default: int, maximum: int) -> int:
        raw = query.get(name)
        if raw is None:
            return default
        try:
            number = float(raw)
        except ValueError:
            raise _validation(f"{name} must be a number") from None
        if not number.is_integer() or not 1 <= number <= maximum:
            raise _validation(f"{name} must be a whole number in 1..{maximum}")
        return int(number)

    return whole("page", 1, MAX_PAGE_NUMBER), whole("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)


def _paginate(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    page, per_page = _page_numbers(query)
    chunk = items[(page - 1) * per_page : page * per_page]
    return {
        "result": chunk,
        "result_info": {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(items),
            "total_pages": -(-len(items) // per_page),
        },
    }


class _Api:
    """The endpoints, free of HTTP plumbing: each takes parsed input and returns the result part
    of the envelope (plus ``result_info`` for lists)."""

    RECORDS: Final = re.compile(r"^/zones/(?P<zone>[^/]+)/dns_records(?:/(?P<record>[^/]+))?$")
    ZONE: Final = re.compile(r"^/zones/(?P<zone>[^/]+)$")

    def __init__(self, zones: Mapping[str, str], store: RecordStore) -> None:
        self.zone_names = {zone_id: normalise_name(name) for name, zone_id in zones.items()}
        self.store = store
        self.created_on = _now()

    def dispatch(self, method: str, path: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        if path == "/zones":
            self._allow(method, {"GET"})
            return self._list_zones(query)
        if match := self.ZONE.match(path):
            self._allow(method, {"GET"})
            self._no_params(query)
            return {"result": self._zone(self._zone_id(match["zone"]))}
        if match := self.RECORDS.match(path):
            zone_id = self._zone_id(match["zone"])
            record_id = match["record"]
            if record_id is None:
                self._allow(method, {"GET", "POST"})
                if method == "GET":
                    return self._list_records(zone_id, query)
                self._no_params(query)
                return {"result": self._create(zone_id, body)}
            self._allow(method, {"GET", "PUT", "PATCH", "DELETE"})
            self._no_params(query)
            if method == "GET":
                return {"result": self._present(self._record(zone_id, record_id))}
            if method == "DELETE":
                self.store.atomically(lambda: self._delete(zone_id, record_id))
                return {"result": {"id": record_id}}
            return {"result": self._write(zone_id, record_id, body, replace=method == "PUT")}
        raise ApiError(HTTPStatus.NOT_FOUND, CODE_NO_ROUTE, "No route for that URI")

    @staticmethod
    def _allow(method: str, allowed: set[str]) -> None:
        if method not in allowed:
            raise ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED, CODE_METHOD_NOT_ALLOWED, "Method not allowed"
            )

    @staticmethod
    def _no_params(query: Mapping[str, str]) -> None:
        if query:
            raise _unsupported(f"query parameters {', '.join(sorted(query))} on this endpoint")

    def _zone_id(self, zone_id: str) -> str:
        if zone_id not in self.zone_names:
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                CODE_BAD_IDENTIFIER,
                f"Could not route to /zones/{zone_id}, perhaps your object identifier is invalid?",
            )
        return zone_id

    def _zone(self, zone_id: str) -> dict[str, Any]:
        return {
            "id": zone_id,
            "name": self.zone_names[zone_id],
            "status": "active",
            "paused": False,
            "type": "full",
            "development_mode": 0,
            "name_servers": list(ZONE_NAME_SERVERS),
            "original_name_servers": None,
            "original_registrar": None,
            "original_dnshost": None,
            "account": dict(FAKE_ACCOUNT),
            "owner": {"id": None, "type": "user", "email": None},
            "meta": {"phishing_detected": False},
            "permissions": ["#dns_records:edit", "#zone:read"],
            "created_on": self.created_on,
            "modified_on": self.created_on,
            "activated_on": self.created_on,
        }

    def _list_zones(self, query: dict[str, str]) -> dict[str, Any]:
        unknown = set(query) - ZONE_LIST_PARAMS
        if unknown:
            raise _unsupported(f"zone list parameters {', '.join(sorted(unknown))}")
        wanted = normalise_name(query["name"]) if "name" in query else None
        zones = [
            self._zone(zone_id)
            for zone_id, name in self.zone_names.items()
            if wanted is None or name == wanted
        ]
        return _paginate(zones, query)

    def _record(self, zone_id: str, record_id: str) -> dict[str, Any]:
        record = self.store.get(record_id)
        if record is None or record["zone_id"] != zone_id:
            raise ApiError(HTTPStatus.NOT_FOUND, CODE_RECORD_NOT_FOUND, "Record does not exist.")
        return record

    def _delete(self, zone_id: str, record_id: str) -> None:
        self._record(zone_id, record_id)
        self.store.delete(record_id)

    def _present(self, record: dict[str, Any]) -> dict[str, Any]:
        """A stored record as the API shows it: with the fields every record answer carries."""
        return dict(
            record,
            zone_name=self.zone_names[record["zone_id"]],
            proxiable=record["type"] in PROXIABLE_TYPES,
            tags=[],
            settings={},
            meta={},
            comment_modified_on=record["modified_on"] if record["comment"] else None,
        )

    def _list_records(self, zone_id: str, query: dict[str, str]) -> dict[str, Any]:
        unknown = set(query) - LIST_PARAMS
        if unknown:
            raise _unsupported(f"record list parameters {', '.join(sorted(unknown))}")
        if query.get("match", "all") != "all":
            raise _unsupported("match=any")
        name = query.get("name.exact", query.get("name"))
        content = query.get("content.exact", query.get("content"))
        kept = [
            self._present(record)
            for record in self.store.records(zone_id)
            if ("type" not in query or record["type"] == query["type"].upper())
            and (name is None or record["name"] == normalise_name(name))
            and (content is None or record["content"] == content)
            and ("comment.exact" not in query or record["comment"] == query["comment.exact"])
        ]
        return _paginate(kept, query)

    def _full_name(self, zone_id: str, name: str) -> str:
        zone = self.zone_names[zone_id]
        name = normalise_name(name)
        if name in ("", "@"):
            return zone
        # Cloudflare reads a name outside the zone as relative to it.
        return name if name == zone or name.endswith("." + zone) else f"{name}.{zone}"

    def _fields(self, zone_id: str, body: Any, base: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _validation("the request body must be a JSON object")
        unknown = set(body) - RECORD_FIELDS
        if unknown:
            raise _unsupported(f"record fields {', '.join(sorted(unknown))}")
        if body.get("tags"):
            raise _unsupported("record tags")
        fields = dict(base)
        fields.update({key: value for key, value in body.items() if key != "tags"})
        for required in ("type", "name", "content"):
            if not isinstance(fields.get(required), str) or not fields[required].strip():
                raise _validation(f"{required} is required")
        fields["type"] = fields["type"].upper()
        if fields["type"] not in SUPPORTED_TYPES:
            raise _unsupported(f"record type {fields['type']}")
        fields["name"] = self._full_name(zone_id, fields["name"])
        if fields["type"] in ("A", "AAAA"):
            version = 4 if fields["type"] == "A" else 6
            try:
                address = ipaddress.ip_address(fields["content"])
            except ValueError:
                address = None
            if address is None or address.version != version:
                raise _validation(f"content for {fields['type']} record is invalid")
        if fields["type"] in ("CNAME", "NS"):
            fields["content"] = normalise_name(fields["content"])
        ttl = fields.get("ttl", AUTOMATIC_TTL)
        if not isinstance(ttl, int) or isinstance(ttl, bool):
            raise _validation("ttl must be a whole number")
        if ttl != AUTOMATIC_TTL and not MIN_TTL <= ttl <= MAX_TTL:
            raise _validation(f"ttl must be {AUTOMATIC_TTL} (automatic) or {MIN_TTL}..{MAX_TTL}")
        fields["ttl"] = ttl
        proxied = fields.get("proxied", False)
        if not isinstance(proxied, bool):
            raise _validation("proxied must be a boolean")
        if proxied and fields["type"] not in PROXIABLE_TYPES:
            raise _validation(f"{fields['type']} records cannot be proxied")
        fields["proxied"] = proxied
        comment = fields.get("comment")
        if comment is not None and (
            not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS
        ):
            raise _validation(f"comment must be a string of at most {MAX_COMMENT_CHARS} characters")
        fields["comment"] = comment or None
        return fields

    def _check_clashes(self, zone_id: str, fields: Mapping[str, Any], own_id: str | None) -> None:
        for other in self.store.records(zone_id):
            if other["id"] == own_id or other["name"] != fields["name"]:
                continue
            if other["type"] == fields["type"] and other["content"] == fields["content"]:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    CODE_IDENTICAL_RECORD,
                    "An identical record already exists.",
                )
            if fields["type"] == "CNAME" and other["type"] in ADDRESS_TYPES:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    CODE_CNAME_TAKEN_NAME,
                    "An A, AAAA, or CNAME record with that host already exists.",
                )
            if other["type"] == "CNAME" and fields["type"] in ADDRESS_TYPES:
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    CODE_CNAME_EXISTS,
                    "A CNAME record with that host already exists.",
                )

    def _create(self, zone_id: str, body: Any) -> dict[str, Any]:
        fields = self._fields(zone_id, body, {})

        def create() -> dict[str, Any]:
            self._check_clashes(zone_id, fields, None)
            return self.store.add(
                zone_id,
                fields["type"],
                fields["name"],
                fields["content"],
                ttl=fields["ttl"],
                proxied=fields["proxied"],
                comment=fields["comment"],
            )

        return self._present(self.store.atomically(create))

    def _write(self, zone_id: str, record_id: str, body: Any, *, replace: bool) -> dict[str, Any]:
        def write() -> dict[str, Any]:
            current = self._record(zone_id, record_id)
            # PUT overwrites: what the body leaves out takes its default; PATCH keeps it.
            base = {key: current[key] for key in ("type", "name", "content")}
            if not replace:
                base.update({key: current[key] for key in ("ttl", "proxied", "comment")})
            fields = self._fields(zone_id, body, base)
            self._check_clashes(zone_id, fields, record_id)
            self.store.update(record_id, **{key: fields[key] for key in STORE_FIELDS})
            return self._record(zone_id, record_id)

        return self._present(self.store.atomically(write))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_TIMEOUT
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Our answers leave in two writes (headers, body): without NODELAY, Nagle holds the body
        # until the client's delayed ACK, ~40 ms per call.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        # The same in the other direction: httpx sends a request body as a second segment, held
        # by its Nagle until this side ACKs the headers. Linux's quick-ACK mode is transient, so
        # it is asked for again before every request.
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if quickack is not None:
            self.request.setsockopt(socket.IPPROTO_TCP, quickack, 1)
        super().handle_one_request()

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            # The body stays unread, so the connection cannot carry another request.
            self.close_connection = True
            raise _validation("missing, malformed or too large request body")
        return bytes(self.rfile.read(length)) if length else b""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on ``FakeCloudflare.calls`` instead."""

    def _serve(self) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        path = url.path
        fake._record_call(self.command, path.removeprefix(API_ROOT) or "/")
        try:
            raw = self._read_body()
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                raise ApiError(HTTPStatus.FORBIDDEN, CODE_INVALID_TOKEN, "Invalid access token")
            if not path.startswith(API_ROOT + "/"):
                raise ApiError(HTTPStatus.NOT_FOUND, CODE_NO_ROUTE, "No route for that URI")
            pairs = parse_qsl(url.query, keep_blank_values=True)
            query = dict(pairs)
            if len(query) != len(pairs):
                raise _unsupported("a repeated query parameter")
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                raise _validation("the request body is not JSON") from None
            answer = fake._api.dispatch(self.command, path.removeprefix(API_ROOT), query, body)
            status = HTTPStatus.OK
            envelope = {"success": True, "errors": [], "messages": [], **answer}
        except ApiError as error:
            status = error.status
            envelope = {
                "success": False,
                "errors": [{"code": error.code, "message": error.message}],
                "messages": [],
                "result": None,
            }
        data = json.dumps(envelope).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _ack_quickly(self) -> None:
        # httpx sends a body in a second segment, which the client's Nagle holds back until this
        # side ACKs the headers: ask Linux to ACK the next segments at once, not ~40 ms later.
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if quickack is not None:
            self.request.setsockopt(socket.IPPROTO_TCP, quickack, 1)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeCloudflare

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks up the host's FQDN, a name lookup nobody reads here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, int(self.server_address[1])


class FakeCloudflare:
    """The fake API as a context manager: listening on ``base_url`` between enter and exit.

    ``calls`` logs every request as (method, path below ``/client/v4``, without the query),
    refused ones included, e.g. ``("POST", "/zones/<id>/dns_records")``.
    """

    def __init__(
        self,
        zones: Mapping[str, str],
        token: str = "cf-test-token",
        store: RecordStore | None = None,
    ) -> None:
        self.token = token
        self.store = store if store is not None else RecordStore()
        self.calls: list[tuple[str, str]] = []
        self.base_url = ""
        self._api = _Api(zones, self.store)
        self._calls_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        # The token stays out of test output even when a fixture is printed.
        return f"FakeCloudflare(base_url={self.base_url!r}, zones={self._api.zone_names!r})"

    def _record_call(self, method: str, path: str) -> None:
        with self._calls_lock:
            self.calls.append((method, path))

    def writes(self) -> list[tuple[str, str]]:
        """The calls that could have changed a record."""
        with self._calls_lock:
            return [call for call in self.calls if call[0] != "GET"]

    def __enter__(self) -> FakeCloudflare:
        server = _Server((HOST, 0), _Handler)
        server.fake = self
        # Bound and listening once the constructor returns: connections made from now on queue
        # in the backlog until serve_forever picks them up, so the URL is ready to hand out.
        self._server = server
        self.base_url = f"http://{HOST}:{server.server_address[1]}{API_ROOT}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SERVE_POLL_INTERVAL},
            name="fake-cloudflare",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
