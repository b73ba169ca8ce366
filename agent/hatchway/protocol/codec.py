"""The Hatchway wire codec: messages to and from JSON text, bodies packed inline, and WebSocket
frames, with no I/O. ``hatchway.protocol`` defines what the messages are and their limits.

* ``encode`` writes one message of at most ``MAX_MESSAGE_BYTES``, ASCII only; ``split_frames``
  cuts it into frames of at most ``MAX_FRAME_BYTES`` (API Gateway's rule for both directions).
* ``decode`` parses one message; any malformed input, of any shape, raises ``ProtocolError``.
* A body travels as base64, zlib-compressed when that makes it smaller (``packing``); an
  inflated body is bounded, so a small message never becomes a large body.
* A response message carries its stored form (``stored_answer``): its head as JSON, a newline,
  and its packed body as raw bytes, base64-encoded once as a whole. API Gateway writes that
  form to DynamoDB as it is, with no Lambda between (DynamoDB bills writes per KB, and raw
  bytes are a quarter smaller than base64 text); ``unpack_stored`` reads it back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import chain
from typing import Any, TypeVar

from hatchway.protocol import (
    MAX_BLOB_BYTES,
    MAX_BODY_BYTES,
    MAX_BURST,
    MAX_CHUNK_BYTES,
    MAX_CHUNK_SEQ,
    MAX_CUSTOM_URLS,
    MAX_FRAME_BYTES,
    MAX_GUARD_LENGTH,
    MAX_GUARDS,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_INLINE_BODY_BYTES,
    MAX_INLINE_RESPONSE_BYTES,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_TEXT,
    MAX_POOL_MEMBERS,
    MAX_REPORTED_COUNT,
    MAX_SHARE_PATH_LENGTH,
    MAX_SHARE_USES,
    MAX_SHARES_LISTED,
    MAX_TUNNELS_PER_CONNECTION,
    MAX_URL_LENGTH,
    PROTOCOL_VERSION,
    AccessRules,
    Chunk,
    Error,
    Fault,
    Headers,
    Hello,
    Leaving,
    Message,
    Ping,
    Pong,
    ProtocolError,
    Request,
    Response,
    ShareInfo,
    ShareOp,
    ShareReply,
    TunnelHealth,
    TunnelInfo,
    TunnelSpec,
    Undelivered,
    Welcome,
    Working,
    b64,
    sockets,
    validate_id,
    validate_name,
)
from hatchway.protocol.packing import (
    inflate_body,
    pack_body,
    pack_raw,
    packed_size,
    unbase64,
    unpack_body,
)

# --- Frames -----------------------------------------------------------------------------------


def split_frames(text: str) -> list[str]:
    """Cut one encoded message into WebSocket frames of at most ``MAX_FRAME_BYTES`` (sent as a
    text frame and continuation frames). Encoded messages are ASCII: any cut is safe."""
    return [text[i : i + MAX_FRAME_BYTES] for i in range(0, len(text), MAX_FRAME_BYTES)] or [""]


# --- Encoding ---------------------------------------------------------------------------------


_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)
"""One encoder for every message: ``json.dumps`` with options builds a new one per call."""


def _dumps(obj: dict[str, Any]) -> str:
    return _ENCODER.encode(obj)


def _spec_to_dict(spec: TunnelSpec) -> dict[str, Any]:
    # Optional keys only when set, so a plain hello stays short.
    out: dict[str, Any] = {"name": spec.name}
    if spec.basic_auth is not None:
        out["basic_auth"] = spec.basic_auth
    if spec.webhook is not None:
        out["webhook"] = spec.webhook
        out["webhook_secret"] = spec.webhook_secret
    if spec.large_responses != "refuse":
        out["large_responses"] = spec.large_responses
    if spec.access:
        out["access"] = access_to_dict(spec.access)
    if spec.pool:
        out["pool"] = True
    if not spec.gzip:
        out["gzip"] = False
    if spec.stream:
        out["stream"] = True
    return out


def access_to_dict(rules: AccessRules) -> dict[str, Any]:
    return {
        "allow": list(rules.allow),
        "deny": list(rules.deny),
        "rate": rules.rate,
        "burst": rules.burst,
    }


def access_from_dict(obj: object, where: str) -> AccessRules:
    if obj is None:
        return AccessRules()
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where}: access must be an object")
    allow, deny = obj.get("allow", []), obj.get("deny", [])
    if not isinstance(allow, list) or not isinstance(deny, list):
        raise ProtocolError(f"{where}: access ranges must be lists")
    return AccessRules(
        tuple(allow),
        tuple(deny),
        _number(obj, "rate", where, default=0.0),
        _count(obj, "burst", where, MAX_BURST) if "burst" in obj else 0,
    )


def _info_to_dict(info: TunnelInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"name": info.name, "url": info.url, "path_url": info.path_url}
    if info.guards:
        out["guards"] = list(info.guards)
    if info.custom_urls:
        out["custom_urls"] = list(info.custom_urls)
    if info.pool_size:
        out["pool_size"] = info.pool_size
        out["pooled_since"] = info.pooled_since
    return out


def _to_dict(message: Message, compress: bool) -> dict[str, Any]:
    if isinstance(message, Request):
        out: dict[str, Any] = {
            "type": "request",
            "id": message.id,
            "tunnel": message.tunnel,
            "method": message.method,
            "path": message.path,
            "query": message.query,
            "headers": [list(pair) for pair in message.headers],
            "deadline": message.deadline,
            "inline_max": message.inline_max,
        }
        if message.start_by:
            out["start_by"] = message.start_by
        if message.body_url is not None:
            out["body_url"] = message.body_url
            out["body_size"] = message.body_size
        if message.upload_url is not None:
            out["upload_url"] = message.upload_url
        if message.socket:
            out["socket"] = message.socket
        return out | _body_fields(message.body, compress, "visitor's request")
    if isinstance(message, Response):
        stored = b64.encode(stored_answer(message, compress))
        return {"type": "response", "id": message.id, "stored": stored}
    if isinstance(message, Hello):
        out = {
            "type": "hello",
            "version": message.version,
            "agent": message.agent,
            "tunnels": [_spec_to_dict(t) for t in message.tunnels],
        }
        if message.instance:
            out["instance"] = message.instance
        return out
    if isinstance(message, Working):
        return {"type": "working", "id": message.id}
    if isinstance(message, Leaving):
        return {"type": "leaving"}
    if isinstance(message, ShareOp):
        return {
            "type": "share",
            "op": message.op,
            "tunnel": message.tunnel,
            "share_id": message.share_id,
            "expires_in": message.expires_in,
            "methods": list(message.methods),
            "path": message.path,
            "max_uses": message.max_uses,
        }
    if isinstance(message, ShareReply):
        return {
            "type": "shares",
            "link": message.link,
            "shares": [_share_to_dict(share) for share in message.shares],
        }
    if isinstance(message, Welcome):
        return {
            "type": "welcome",
            "heartbeat": message.heartbeat_seconds,
            "now": message.now,
            "tunnels": [_info_to_dict(t) for t in message.tunnels],
        }
    if isinstance(message, Ping):
        out = {"type": "ping", "ts": message.ts}
        if message.served:
            out["served"] = {name: count for name, count in message.served}
        if message.health:
            out["health"] = {name: _health_to_dict(health) for name, health in message.health}
        return out
    if isinstance(message, Pong):
        out = {"type": "pong", "ts": message.ts}
        if message.pools:
            out["pools"] = {name: size for name, size in message.pools}
        return out
    if isinstance(message, Chunk):
        out = {"type": "chunk", "id": message.id, "seq": message.seq}
        out["body"] = b64.encode(message.body)
        if message.end:
            out["end"] = True
        if message.fault is not None:
            out["fault"] = message.fault[:MAX_MESSAGE_TEXT]
        return out
    if isinstance(message, sockets.SocketMessage):
        return sockets.socket_to_dict(message)
    if isinstance(message, Undelivered):  # the platform's shape, not the protocol's
        return {"message": message.message, "connectionId": "", "requestId": message.request_id}
    if isinstance(message, Error):
        text = message.message[:MAX_MESSAGE_TEXT]
        out = {"type": "error", "code": message.code, "message": text}
        if message.id:
            out["id"] = message.id
        return out
    raise TypeError(f"not a message: {message!r}")


def _health_to_dict(health: TunnelHealth) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if health.errors:
        out["errors"] = {cause: count for cause, count in health.errors}
    if health.p50_ms is not None:
        out["p50"], out["p95"] = health.p50_ms, health.p95_ms
    return out


def _body_fields(body: bytes, compress: bool, side: str) -> dict[str, Any]:
    if not body:
        return {}
    text, encoding = pack_body(body, compress)
    if packed_size(text) > MAX_INLINE_BODY_BYTES:
        raise ProtocolError(
            f"{side} body of {len(body)} bytes does not fit in a message; it travels through "
            "the blob store",
            status=413,
        )
    return {"body": text, "enc": encoding} if encoding else {"body": text}


def head_size(message: Request | Response) -> int:
    """What ``MAX_HEAD_BYTES`` bounds: the request line and headers, or the status, headers and
    fault text (every part of a message that is not its body or a blob URL), as encoded."""
    return len(_dumps(_head_of(message)))


_MOST_ENCODED_PER_CHARACTER = 12
"""JSON text one character of a head can take at most: ``\\uXXXX`` twice (a surrogate pair)."""

_MOST_ENCODED_PER_FIELD = 8
"""JSON punctuation one header or head field adds at most (quotes, commas, brackets, key)."""


def _head_fits(message: Request | Response) -> bool:
    """Whether the head is surely within ``MAX_HEAD_BYTES``, from its length alone: a typical
    head is far inside, and this saves encoding it twice."""
    if isinstance(message, Request):
        characters = len(message.method) + len(message.path) + len(message.query)
    else:
        characters = len(message.fault.message) if message.fault else 0
    characters += sum(len(name) + len(value) for name, value in message.headers)
    fields = 2 * len(message.headers) + 6
    bound = characters * _MOST_ENCODED_PER_CHARACTER + fields * _MOST_ENCODED_PER_FIELD
    return bound <= MAX_HEAD_BYTES


def _head_of(message: Request | Response) -> dict[str, Any]:
    headers = [list(pair) for pair in message.headers]
    if isinstance(message, Request):
        return {"m": message.method, "p": message.path, "q": message.query, "h": headers}
    fault = message.fault.message[:MAX_MESSAGE_TEXT] if message.fault else ""
    return {"s": message.status, "h": headers, "f": fault}


def encode(message: Message, compress: bool = True) -> str:
    """Encode ``message`` as one WebSocket message of at most ``MAX_MESSAGE_BYTES`` (send it
    in ``split_frames``). ``compress`` lets bodies travel zlib-compressed when that helps."""
    if isinstance(message, Request | Response) and not _head_fits(message):
        head = head_size(message)
        if head > MAX_HEAD_BYTES:
            request = isinstance(message, Request)
            side = "visitor" if request else "local app"
            raise ProtocolError(
                f"{side}'s headers take {head} bytes; at most {MAX_HEAD_BYTES} are carried",
                status=431 if request else 502,
            )
    body = _to_dict(message, compress)
    try:
        text = _dumps(body)
    except ValueError as exc:  # NaN or infinity in a number: JSON has no way to say it
        raise ProtocolError(f"{type(message).__name__} cannot be encoded: {exc}") from None
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            f"{type(message).__name__} of {len(text)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte "
            "message limit",
            status=413,
        )
    return text


# --- Decoding ---------------------------------------------------------------------------------


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"{where}: field {key!r} is missing or has the wrong type")
    return value


def _number(obj: dict[str, Any], key: str, where: str, default: float | None = None) -> float:
    """A finite number (JSON allows 1e999, which Python reads as infinity)."""
    if default is not None and key not in obj:
        return default
    value = float(_field(obj, key, (int, float), where))
    if not math.isfinite(value):
        raise ProtocolError(f"{where}: field {key!r} is not a finite number")
    return value


def _count(obj: dict[str, Any], key: str, where: str, upper: int) -> int:
    value = _field(obj, key, int, where)
    if not 0 <= value <= upper:
        raise ProtocolError(f"{where}: field {key!r} must be 0 to {upper}")
    return int(value)


def _too_deep(obj: dict[str, Any]) -> bool:
    """Nesting deeper than ``MAX_JSON_DEPTH``, found level by level among the containers: no
    string is read (a body can be most of a message)."""
    level: list[Any] = [obj]
    for _ in range(MAX_JSON_DEPTH):
        deeper = []
        for container in level:
            for child in container.values() if type(container) is dict else container:
                if type(child) is list or type(child) is dict:
                    deeper.append(child)
        if not deeper:
            return False
        level = deeper
    return True


_COUNTED_TEXT = 4096
"""Texts up to this long have their brackets counted first (cheaper than walking the parsed
containers, and usually enough to show that they cannot nest too deeply); longer ones are
walked at once, as counting would read every character of their body."""


def decode(text: str | bytes) -> Message:
    """Parse one WebSocket message; any malformed input raises ``ProtocolError``."""
    return _checked(_decode_object, _loads(text))


def _loads(text: str | bytes) -> dict[str, Any]:
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(text)} bytes exceeds {MAX_MESSAGE_BYTES}", status=413)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not valid UTF-8") from None
    try:
        # Nesting past the recursion limit raises RecursionError, never exhausts the stack.
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"message is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    if (
        len(text) > _COUNTED_TEXT or text.count("[") + text.count("{") > MAX_JSON_DEPTH
    ) and _too_deep(obj):
        raise ProtocolError(f"message nests deeper than {MAX_JSON_DEPTH} levels")
    return obj


Decoded = TypeVar("Decoded")


def _checked(decoder: Callable[[dict[str, Any]], Decoded], obj: dict[str, Any]) -> Decoded:
    try:
        return decoder(obj)
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
        # The dataclasses validate themselves; anything they trip over is still bad input.
        raise ProtocolError(f"malformed {str(obj.get('type'))[:20]} message: {exc}") from None


_UNDELIVERED_FIELDS = frozenset({"message", "connectionId", "requestId"})


def _decode_object(obj: dict[str, Any]) -> Message:
    kind = obj.get("type")
    if kind is None and set(obj) == _UNDELIVERED_FIELDS:
        return Undelivered(
            _text(str(obj["message"])[:MAX_MESSAGE_TEXT]), _text(str(obj["requestId"])[:100])
        )
    if kind == "request":
        return _decode_request(obj)
    if kind == "response":
        return _decode_answer(obj)
    if kind == "hello":
        return _decode_hello(obj)
    if kind == "welcome":
        return _decode_welcome(obj)
    if kind == "ping":
        return _decode_ping(obj)
    if kind == "pong":
        pools = obj.get("pools", {})
        if not isinstance(pools, dict) or len(pools) > MAX_TUNNELS_PER_CONNECTION:
            raise ProtocolError("pong: pools must map at most one size per tunnel")
        sizes = tuple(
            (validate_name(name), _count(pools, name, "pong", MAX_POOL_MEMBERS)) for name in pools
        )
        return Pong(_number(obj, "ts", "pong"), sizes)
    if kind == "share":
        return _decode_share_op(obj)
    if kind == "shares":
        listed = _field(obj, "shares", list, "shares")[:MAX_SHARES_LISTED]
        return ShareReply(
            tuple(_share_from_dict(item) for item in listed),
            _optional_str(obj, "link", "shares") or "",
        )
    if kind == "working":
        return Working(validate_id(_field(obj, "id", str, "working")))
    if kind == "chunk":
        end, fault = obj.get("end", False), obj.get("fault")
        if not isinstance(end, bool) or not isinstance(fault, str | None):
            raise ProtocolError("chunk: end must be true or false, and a fault text")
        return Chunk(
            validate_id(_field(obj, "id", str, "chunk")),
            _count(obj, "seq", "chunk", MAX_CHUNK_SEQ),
            unpack_body(_field(obj, "body", str, "chunk"), None, MAX_CHUNK_BYTES, "chunk"),
            end,
            None if fault is None else _text(fault[:MAX_MESSAGE_TEXT]),
        )
    if kind in sockets.SOCKET_TYPES:
        return sockets.socket_from_dict(obj)
    if kind == "leaving":
        return Leaving()
    if kind == "error":
        about = _optional_str(obj, "id", "error")
        return Error(
            _text(_field(obj, "code", str, "error")[:100]),
            _text(_field(obj, "message", str, "error")[:MAX_MESSAGE_TEXT]),
            validate_id(about) if about else "",
        )
    raise ProtocolError(f"unknown message type {str(kind)[:40]!r}")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _decode_ping(obj: dict[str, Any]) -> Ping:
    served = obj.get("served", {})
    if not isinstance(served, dict) or len(served) > MAX_TUNNELS_PER_CONNECTION:
        raise ProtocolError("ping: served must map at most one count per tunnel")
    counts = tuple(
        (validate_name(name), _count(served, name, "ping", MAX_REPORTED_COUNT)) for name in served
    )
    health = obj.get("health", {})
    if not isinstance(health, dict) or len(health) > MAX_TUNNELS_PER_CONNECTION:
        raise ProtocolError("ping: health must map at most one report per tunnel")
    reports = tuple(
        (validate_name(name), _decode_health(report)) for name, report in health.items()
    )
    return Ping(_number(obj, "ts", "ping"), counts, reports)


def _decode_health(report: object) -> TunnelHealth:
    """One tunnel's ``TunnelHealth``; the dataclass checks the bounds, this the shapes."""
    if not isinstance(report, dict):
        raise ProtocolError("ping: a tunnel's health must be an object")
    errors = report.get("errors", {})
    if not isinstance(errors, dict):
        raise ProtocolError("ping: errors must map causes to counts")
    p50, p95 = report.get("p50"), report.get("p95")
    return TunnelHealth(tuple(errors.items()), p50, p95)


def _text(value: str) -> str:
    """Human-readable text as it can be shown and logged: a lone surrogate (valid in JSON,
    not encodable as UTF-8) becomes U+FFFD."""
    return value if value.isascii() else _LONE_SURROGATE.sub("\ufffd", value)


def _decode_hello(obj: dict[str, Any]) -> Hello:
    version = _field(obj, "version", int, "hello")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"agent speaks protocol {version}; this relay speaks {PROTOCOL_VERSION}: "
            "upgrade the agent or the relay"
        )
    tunnels = _field(obj, "tunnels", list, "hello")
    if not 1 <= len(tunnels) <= MAX_TUNNELS_PER_CONNECTION:
        raise ProtocolError(
            f"agent asked for {len(tunnels)} tunnels; one connection serves "
            f"1 to {MAX_TUNNELS_PER_CONNECTION}"
        )
    specs = []
    for item in tunnels:
        keys = ("name", "basic_auth", "webhook", "webhook_secret", "large_responses")
        if not isinstance(item, dict) or not all(
            isinstance(item.get(key), str | None) for key in keys
        ):
            raise ProtocolError(
                "hello: each tunnel must be an object with an optional name and optional "
                "string options"
            )
        if not all(isinstance(item.get(f, True), bool) for f in ("pool", "gzip", "stream")):
            raise ProtocolError("hello: a tunnel's pool, gzip and stream must be true or false")
        specs.append(
            TunnelSpec(
                item.get("name"),
                basic_auth=item.get("basic_auth"),
                webhook=item.get("webhook"),
                webhook_secret=item.get("webhook_secret"),
                large_responses=item.get("large_responses") or "refuse",
                access=access_from_dict(item.get("access"), "hello"),
                pool=item.get("pool", False),
                gzip=item.get("gzip", True),
                stream=item.get("stream", False),
            )
        )
    agent = _optional_str(obj, "agent", "hello") or ""
    instance = _optional_str(obj, "instance", "hello") or ""
    return Hello(tuple(specs), agent=_text(str(agent)[:200]), version=version, instance=instance)


def _decode_welcome(obj: dict[str, Any]) -> Welcome:
    infos = []
    for item in _field(obj, "tunnels", list, "welcome")[:MAX_TUNNELS_PER_CONNECTION]:
        if not isinstance(item, dict):
            raise ProtocolError("welcome: each tunnel must be an object")
        guards = item.get("guards", [])
        if not isinstance(guards, list) or not all(isinstance(g, str) for g in guards):
            raise ProtocolError("welcome: guards must be a list of strings")
        custom_urls = item.get("custom_urls", [])
        if not isinstance(custom_urls, list) or not all(
            isinstance(u, str) and len(u) <= MAX_URL_LENGTH for u in custom_urls
        ):
            raise ProtocolError(
                f"welcome: custom_urls must be a list of URLs of at most {MAX_URL_LENGTH} "
                "characters"
            )
        infos.append(
            TunnelInfo(
                name=_field(item, "name", str, "welcome"),
                url=_optional_str(item, "url", "welcome"),
                path_url=_field(item, "path_url", str, "welcome"),
                guards=tuple(g[:MAX_GUARD_LENGTH] for g in guards[:MAX_GUARDS]),
                custom_urls=tuple(custom_urls[:MAX_CUSTOM_URLS]),
                pool_size=_count(item, "pool_size", "welcome", MAX_POOL_MEMBERS)
                if "pool_size" in item
                else 0,
                pooled_since=_number(item, "pooled_since", "welcome", default=0.0),
            )
        )
    return Welcome(
        tuple(infos),
        heartbeat_seconds=_number(obj, "heartbeat", "welcome"),
        now=_number(obj, "now", "welcome", default=0.0),
    )


def _headers_from(obj: dict[str, Any], where: str, status: int = 431) -> Headers:
    raw = _field(obj, "headers", list, where)
    if len(raw) > MAX_HEADERS:
        raise ProtocolError(f"{where}: more than {MAX_HEADERS} headers", status=status)
    # The shapes of all pairs at once (JSON gives exact types); the message's own check then
    # reads their text.
    if set(map(type, raw)) <= {list} and set(map(len, raw)) <= {2}:
        pairs = tuple([(name, value) for name, value in raw])
        if set(map(type, chain.from_iterable(pairs))) <= {str}:
            return pairs
    raise ProtocolError(f"{where}: each header must be a [name, value] pair of strings")


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{where}: field {key!r} must be a string")
    return value


def _decode_request(obj: dict[str, Any]) -> Request:
    request_id = validate_id(_field(obj, "id", str, "request"))
    where = f"request {request_id}"
    body_url = _optional_str(obj, "body_url", where)
    return Request(
        id=request_id,
        tunnel=_field(obj, "tunnel", str, where),
        method=_field(obj, "method", str, where),
        path=_field(obj, "path", str, where),
        query=_field(obj, "query", str, where),
        headers=_headers_from(obj, where),
        body=_inline_body(obj, where, MAX_BODY_BYTES),
        deadline=_number(obj, "deadline", where, default=0.0),
        body_url=body_url,
        body_size=_count(obj, "body_size", where, MAX_BODY_BYTES) if body_url else 0,
        upload_url=_optional_str(obj, "upload_url", where),
        inline_max=(
            _count(obj, "inline_max", where, MAX_INLINE_RESPONSE_BYTES)
            if "inline_max" in obj
            else MAX_INLINE_RESPONSE_BYTES
        ),
        start_by=_number(obj, "start_by", where, default=0.0),
        socket=_optional_str(obj, "socket", where) or "",
    )


def _decode_answer(obj: dict[str, Any]) -> Response:
    """A response message: its id, and its stored form, which must answer that same id."""
    response_id = validate_id(_field(obj, "id", str, "response"))
    stored = _field(obj, "stored", str, f"response {response_id}")
    response, _ = unpack_stored(unbase64(stored, f"response {response_id}"))
    if response.id != response_id:
        raise ProtocolError(f"response {response_id}: its stored form answers another request")
    return response


def _decode_response(obj: dict[str, Any], packed: bytes) -> Response:
    """A stored response's head (``obj``) with its body's packed bytes."""
    response_id = validate_id(_field(obj, "id", str, "response"))
    where = f"response {response_id}"
    fault = obj.get("fault")
    if fault is not None:
        if not isinstance(fault, dict):
            raise ProtocolError(f"{where}: fault must be an object", status=502)
        fault = Fault(
            side=_text(_field(fault, "side", str, where)[:40]),
            message=_text(_field(fault, "message", str, where)[:MAX_MESSAGE_TEXT]),
        )
    uploaded = obj.get("uploaded")
    return Response(
        id=response_id,
        status=_field(obj, "status", int, where),
        headers=_headers_from(obj, where, status=502),
        body=inflate_body(packed, _optional_str(obj, "enc", where), MAX_BODY_BYTES, where),
        fault=fault,
        uploaded=None if uploaded is None else _count(obj, "uploaded", where, MAX_BLOB_BYTES),
        streamed=_field(obj, "streamed", bool, where) if "streamed" in obj else False,
    )


def _inline_body(obj: dict[str, Any], where: str, limit: int) -> bytes:
    text = obj.get("body")
    if text is None:
        return b""
    if not isinstance(text, str):
        raise ProtocolError(f"{where}: body must be a base64 string")
    return unpack_body(text, _optional_str(obj, "enc", where), limit, where)


# --- The stored form of a response -------------------------------------------------------------


def stored_answer(message: Response, compress: bool = True) -> bytes:
    """``message``'s stored form: its head as JSON, a newline, then its body packed
    (compressed when that helps) as raw bytes. The same answer always gives the same bytes."""
    head: dict[str, Any] = {
        "type": "response",
        "id": message.id,
        "status": message.status,
        "headers": [list(pair) for pair in message.headers],
    }
    if message.fault is not None:
        text = message.fault.message[:MAX_MESSAGE_TEXT]
        head["fault"] = {"side": message.fault.side, "message": text}
    if message.uploaded is not None:
        head["uploaded"] = message.uploaded
    if message.streamed:
        head["streamed"] = True
    if message.uploaded is not None or message.streamed:  # no body here
        return _dumps(head).encode("ascii") + b"\n"
    packed, encoding = pack_raw(message.body, compress)
    if len(packed) > MAX_INLINE_RESPONSE_BYTES or len(message.body) > MAX_BODY_BYTES:
        raise ProtocolError(
            f"local app's response body of {len(message.body)} bytes does not fit in a message; "
            "it travels through the blob store",
            status=413,
        )
    if encoding:
        head["enc"] = encoding
    return _dumps(head).encode("ascii") + b"\n" + packed


def unpack_stored(data: bytes) -> tuple[Response, bytes | None]:
    """The response stored as ``data`` (``stored_answer``; any damage raises ``ProtocolError``),
    and the zlib stream its body came in if packed, checked whole, for a reader to pass on."""
    head, newline, raw = data.partition(b"\n")
    if not newline:
        raise ProtocolError("stored response has no head", status=502)
    try:
        obj = json.loads(head)
    except (ValueError, RecursionError):
        raise ProtocolError("stored response head is not JSON", status=502) from None
    if not isinstance(obj, dict) or obj.get("type") != "response" or "body" in obj:
        raise ProtocolError("stored response is not a response", status=502)
    response = _decode_response(obj, raw)
    return response, raw if obj.get("enc") == "zlib" and response.body else None


# --- Share links -------------------------------------------------------------------------------


def _share_to_dict(share: ShareInfo) -> dict[str, Any]:
    return {
        "id": share.id,
        "tunnel": share.tunnel,
        "methods": list(share.methods),
        "path": share.path,
        "expires_at": share.expires_at,
        "max_uses": share.max_uses,
        "uses": share.uses,
        "revoked": share.revoked,
    }


def _share_from_dict(item: object) -> ShareInfo:
    if not isinstance(item, dict):
        raise ProtocolError("shares: each link must be an object")
    methods = _field(item, "methods", list, "shares")
    if not all(isinstance(m, str) for m in methods):
        raise ProtocolError("shares: methods must be strings")
    return ShareInfo(
        id=validate_id(_field(item, "id", str, "shares")),
        tunnel=validate_name(_field(item, "tunnel", str, "shares")),
        methods=tuple(m[:20] for m in methods[:16]),
        path=_text(_field(item, "path", str, "shares")[:MAX_SHARE_PATH_LENGTH]),
        expires_at=_number(item, "expires_at", "shares"),
        max_uses=_count(item, "max_uses", "shares", MAX_SHARE_USES),
        uses=_count(item, "uses", "shares", 2**53),
        revoked=bool(_field(item, "revoked", bool, "shares")),
    )


def _decode_share_op(obj: dict[str, Any]) -> ShareOp:
    methods = obj.get("methods", ["GET", "HEAD"])
    if (
        not isinstance(methods, list)
        or len(methods) > 16
        or not all(isinstance(m, str) for m in methods)
    ):
        raise ProtocolError("share: methods must be a list of HTTP methods")
    return ShareOp(
        op=_field(obj, "op", str, "share"),
        tunnel=_optional_str(obj, "tunnel", "share") or "",
        share_id=_optional_str(obj, "share_id", "share") or "",
        expires_in=_number(obj, "expires_in", "share", default=0.0),
        methods=tuple(methods),
        path=_optional_str(obj, "path", "share") or "/",
        max_uses=_count(obj, "max_uses", "share", MAX_SHARE_USES) if "max_uses" in obj else 0,
    )
