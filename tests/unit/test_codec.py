"""The wire codec: every message survives a round trip as one ASCII message of at most
``MAX_MESSAGE_BYTES`` sent in frames of at most ``MAX_FRAME_BYTES``; bodies travel inline
(zlib only when it helps) byte-exact; and any malformed or hostile input, of any shape, is a
``ProtocolError`` and never another exception."""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway import protocol as p
from hatchway.protocol import ProtocolError, codec, packing

SALT = b"s" * p.BASIC_AUTH_SALT_BYTES
HASHED = p.hash_basic_auth("alice:pw", SALT)
GUARDED = p.TunnelSpec("shop", basic_auth=HASHED, webhook="stripe", webhook_secret="whsec_1")
UPLOAD_URL = "https://blobs.example.test/up/r1?X-Amz-Signature=abc"
BODY_URL = "https://blobs.example.test/down/r1?X-Amz-Signature=def"


def random_bytes(size: int, seed: int = 7) -> bytes:
    """Incompressible bytes: zlib cannot make them smaller."""
    return random.Random(seed).randbytes(size)


def wire(message: p.Message) -> dict[str, Any]:
    """The JSON object ``message`` travels as; for a response, the fields of its stored form
    (the head's fields and ``body``, the packed body in base64), which ``decode_object`` packs
    back into one, so that hostile values of each field can be tried."""
    return _fields(codec.encode(message))


def wire_uncompressed(message: p.Message) -> dict[str, Any]:
    """``wire``, with compression off."""
    return _fields(codec.encode(message, compress=False))


def _fields(text: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(text)
    if obj.get("type") != "response":
        return obj
    head, _, packed = base64.b64decode(obj["stored"]).partition(b"\n")
    fields: dict[str, Any] = json.loads(head)
    if packed:
        fields["body"] = base64.b64encode(packed).decode()
    return fields


def _stored(fields: dict[str, Any]) -> dict[str, Any]:
    """A response message whose stored form holds ``fields``: ``body`` (base64, as ``wire``
    gives it) becomes the raw bytes after the head; any other ``body`` stays in the head, where
    a stored form must not have one."""
    head = dict(fields)
    body = head.get("body", "")
    packed = b""
    if isinstance(body, str):
        try:
            packed = base64.b64decode(body, validate=True)
            head.pop("body", None)
        except ValueError:
            pass
    stored = json.dumps(head).encode("utf-8", "surrogatepass") + b"\n" + packed
    return {"type": "response", "id": head.get("id"), "stored": base64.b64encode(stored).decode()}


def decode_object(obj: object) -> p.Message:
    if isinstance(obj, dict) and obj.get("type") == "response" and "stored" not in obj:
        obj = _stored(obj)
    return codec.decode(json.dumps(obj))


def head_bytes(message: p.Request | p.Response) -> int:
    """The head size ``encode`` measures (request line and headers, or status, headers and
    fault)."""
    return codec.head_size(message)


# --- Round trips ------------------------------------------------------------------------------

MESSAGES = [
    pytest.param(p.Hello((p.TunnelSpec("myapp"), p.TunnelSpec(None)), "hatchway/2"), id="hello"),
    pytest.param(p.Hello((GUARDED, p.TunnelSpec(None))), id="hello-guarded"),
    pytest.param(p.Hello((p.TunnelSpec("big", large_responses="redirect"),)), id="hello-redirect"),
    pytest.param(p.Hello((p.TunnelSpec("raw", gzip=False),)), id="hello-no-gzip"),
    pytest.param(p.Hello((p.TunnelSpec("live", stream=True),)), id="hello-stream"),
    pytest.param(
        p.Response("r11", 200, (("content-type", "text/event-stream"),), streamed=True),
        id="streamed",
    ),
    pytest.param(p.Chunk("r11", 0, b"data: 1\n\n"), id="chunk"),
    pytest.param(p.Chunk("r11", 7, b"\x00\xff" * 100, end=True), id="chunk-last"),
    pytest.param(p.Chunk("r11", 8, end=True, fault="the app closed mid-stream"), id="chunk-cut"),
    pytest.param(
        p.Welcome((p.TunnelInfo("myapp", "https://myapp.t.example.com/", "https://x/t/myapp/"),)),
        id="welcome",
    ),
    pytest.param(p.Welcome((p.TunnelInfo("a", None, "https://x/t/a/"),), 1.0), id="welcome-1s"),
    pytest.param(p.Welcome((), p.MAX_HEARTBEAT_SECONDS), id="welcome-540s"),
    pytest.param(
        p.Welcome(
            (p.TunnelInfo("shop", None, "https://x/t/shop/", GUARDED.guards, ("https://c.test/",)),)
        ),
        id="welcome-guarded",
    ),
    pytest.param(p.Ping(12.5), id="ping"),
    pytest.param(p.Ping(1.7e9, (("myapp", 3), ("other", 0))), id="ping-served"),
    pytest.param(
        p.Ping(
            1.7e9,
            (("myapp", 7), ("other", 1)),
            (
                ("myapp", p.TunnelHealth((("local-app-refused", 2), ("app-5xx", 1)), 3, 41)),
                ("other", p.TunnelHealth((), 0, 0)),
            ),
        ),
        id="ping-health",
    ),
    pytest.param(p.Pong(12.5), id="pong"),
    pytest.param(p.Leaving(), id="leaving"),
    pytest.param(p.Pong(12.5, (("shop", 3), ("web", 1))), id="pong-pools"),
    pytest.param(p.Hello((p.TunnelSpec("shop", pool=True),), instance="i-1"), id="hello-pool"),
    pytest.param(
        p.Welcome(
            (p.TunnelInfo("shop", None, "https://x/t/shop/", pool_size=3, pooled_since=1.5),)
        ),
        id="welcome-pool",
    ),
    pytest.param(p.Error("name_taken", "tunnel name 'myapp' is held by another token"), id="error"),
    pytest.param(p.Request("r1", "myapp", "GET", "/"), id="get"),
    pytest.param(
        p.Request(
            "r2",
            "myapp",
            "POST",
            "/caf%C3%A9/x",
            "a=1&a=2",
            (("x-a", "1"), ("x-a", "2"), ("x-name", "Zoë ✓")),
            b"\x00\xff" * 20_000,
            deadline=1_700_000_000.25,
        ),
        id="post",
    ),
    pytest.param(
        p.Request("r3", "myapp", "PUT", "/up", body_url=BODY_URL, body_size=p.MAX_BODY_BYTES),
        id="request-body-by-url",
    ),
    pytest.param(
        p.Request("r4", "myapp", "GET", "/big", upload_url=UPLOAD_URL, inline_max=0),
        id="request-upload-url",
    ),
    pytest.param(p.Response("r5", 204), id="204"),
    pytest.param(
        p.Response("r6", 200, (("set-cookie", "a=1"), ("set-cookie", "b=2")), b"hello"),
        id="cookies",
    ),
    pytest.param(p.Response("r7", 200, body=b"<html>" + b"a" * 50_000), id="compressible"),
    pytest.param(p.Response("r8", 200, body=random_bytes(50_000)), id="incompressible"),
    pytest.param(
        p.Response("r9", 502, fault=p.Fault("local app", "connection refused by 127.0.0.1:3000")),
        id="fault",
    ),
    pytest.param(p.Response("r10", 200, (("content-type", "video/mp4"),), uploaded=9), id="blob"),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_every_message_round_trips_as_text_and_as_bytes(message: p.Message) -> None:
    text = codec.encode(message)
    assert codec.decode(text) == message
    assert codec.decode(text.encode("ascii")) == message


ANSWERS = [m for m in MESSAGES if isinstance(m.values[0], p.Response)]


@pytest.mark.parametrize("message", ANSWERS)
def test_an_answer_carries_its_stored_form_which_gives_it_back(message: p.Message) -> None:
    assert isinstance(message, p.Response)
    obj = json.loads(codec.encode(message))
    assert set(obj) == {"type", "id", "stored"} and obj["id"] == message.id
    stored = base64.b64decode(obj["stored"])
    assert stored == codec.stored_answer(message)  # the same answer, the same bytes
    head, _, packed = stored.partition(b"\n")
    fields = json.loads(head)
    assert fields["type"] == "response" and fields["id"] == message.id
    if fields.get("enc") == "zlib":  # compressed bytes stay compressed, with no base64
        assert zlib.decompress(packed) == message.body
    else:
        assert packed == message.body
    # A reader gets the zlib stream too, to pass it on without compressing again.
    stream = packed if fields.get("enc") == "zlib" else None
    assert codec.unpack_stored(stored) == (message, stream)


def test_leaving_is_one_bare_type_that_api_gateway_routes_to_the_websocket_function() -> None:
    # Only "response" and "working" have routes of their own (template.yaml): anything else,
    # "leaving" included, reaches $default, where the relay's code reads it.
    assert wire(p.Leaving()) == {"type": "leaving"}


def test_an_answer_whose_stored_form_answers_another_request_is_a_protocol_error() -> None:
    other = base64.b64encode(codec.stored_answer(p.Response("r2", 200, body=b"x"))).decode()
    with pytest.raises(ProtocolError, match="another request"):
        codec.decode(json.dumps({"type": "response", "id": "r1", "stored": other}))


@pytest.mark.parametrize(
    "stored", ["", "not base64!", base64.b64encode(b"no newline").decode(), 5, None]
)
def test_an_answer_without_a_readable_stored_form_is_a_protocol_error(stored: object) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(json.dumps({"type": "response", "id": "r1", "stored": stored}))


def test_the_largest_inline_answer_with_the_largest_head_fits_one_message() -> None:
    value = "v" * 990
    headers = tuple((f"x-h{i:02}", value) for i in range(16))
    while codec.head_size(p.Response("r1", 200, headers)) > p.MAX_HEAD_BYTES:
        headers = headers[:-1]
    body = random_bytes(p.MAX_INLINE_RESPONSE_BYTES)  # incompressible: packed as it is
    text = codec.encode(p.Response("r" * p.MAX_ID_LENGTH, 200, headers, body))
    assert len(text) <= p.MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError) as refused:
        codec.encode(p.Response("r1", 200, headers, body + b"x"))
    assert refused.value.status == 413


@pytest.mark.parametrize(
    "stored",
    [b"no newline", b"not json\n", b'{"type":"ping","ts":1}\n', b'{"type":"response"}\n'],
)
def test_a_damaged_stored_response_is_a_protocol_error(stored: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.unpack_stored(stored)


@pytest.mark.parametrize("message", MESSAGES)
def test_an_encoded_message_is_ascii_json_within_the_message_limit(message: p.Message) -> None:
    text = codec.encode(message)
    assert text.isascii() and len(text) <= p.MAX_MESSAGE_BYTES
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("message", MESSAGES)
def test_an_encoded_message_splits_into_frames_that_join_back(message: p.Message) -> None:
    text = codec.encode(message)
    frames = codec.split_frames(text)
    assert all(len(frame.encode()) <= p.MAX_FRAME_BYTES for frame in frames)
    assert "".join(frames) == text


def test_a_plain_hello_carries_only_the_names() -> None:
    assert wire(p.Hello((p.TunnelSpec("a"),)))["tunnels"] == [{"name": "a"}]


def test_a_full_hello_of_guarded_tunnels_fits_in_one_frame() -> None:
    spec = p.TunnelSpec(
        "a" * 63,
        basic_auth=HASHED,
        webhook="github",
        webhook_secret="s" * p.MAX_WEBHOOK_SECRET_LENGTH,
        large_responses="redirect",
    )
    text = codec.encode(p.Hello((spec,) * p.MAX_TUNNELS_PER_CONNECTION))
    assert codec.split_frames(text) == [text]


def test_a_welcome_lists_at_most_the_first_custom_urls() -> None:
    urls = tuple(f"https://h{i}.mycompany.test/" for i in range(p.MAX_CUSTOM_URLS + 2))
    decoded = codec.decode(
        codec.encode(p.Welcome((p.TunnelInfo("shop", None, "https://x/t/shop/", (), urls),)))
    )
    assert isinstance(decoded, p.Welcome)
    assert decoded.tunnels[0].custom_urls == urls[: p.MAX_CUSTOM_URLS]
    assert "custom_urls" not in wire(p.Welcome((p.TunnelInfo("a", None, "https://x/t/a/"),)))


@pytest.mark.parametrize(
    "custom_urls",
    [
        pytest.param("https://a.test/", id="not a list"),
        pytest.param([7], id="not strings"),
        pytest.param(["https://" + "a" * p.MAX_URL_LENGTH], id="over the length limit"),
    ],
)
def test_bad_custom_urls_in_a_welcome_are_refused(custom_urls: object) -> None:
    obj = wire(p.Welcome((p.TunnelInfo("a", None, "https://x/t/a/"),)))
    obj["tunnels"][0]["custom_urls"] = custom_urls
    with pytest.raises(ProtocolError, match="custom_urls"):
        decode_object(obj)


@pytest.mark.parametrize(
    ("message", "read"),
    [
        pytest.param(p.Error("crash", "x" * 5000), lambda m: m.message, id="error"),
        pytest.param(
            p.Response("r1", 502, fault=p.Fault("agent", "x" * 5000)),
            lambda m: m.fault.message,
            id="fault",
        ),
    ],
)
def test_human_readable_text_is_cut_to_the_message_text_limit(
    message: p.Message, read: Any
) -> None:
    assert read(codec.decode(codec.encode(message))) == "x" * p.MAX_MESSAGE_TEXT


# --- Bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "compress", "encoding"),
    [
        pytest.param(b"", True, None, id="empty"),
        pytest.param(b"a" * (p.MIN_COMPRESS_BYTES - 1), True, None, id="too short to compress"),
        pytest.param(b"a" * p.MIN_COMPRESS_BYTES, True, "zlib", id="short compressible"),
        pytest.param(b'{"items": []}' * 5000, True, "zlib", id="json"),
        pytest.param(b"a" * 100_000, False, None, id="compression off"),
        pytest.param(random_bytes(4096), True, None, id="incompressible"),
        pytest.param(
            random_bytes(4000) + b"a" * 400, True, None, id="compresses by less than an eighth"
        ),
    ],
)
def test_compression_is_used_only_when_it_helps_and_bodies_stay_byte_exact(
    body: bytes, compress: bool, encoding: str | None
) -> None:
    text, used = packing.pack_body(body, compress)
    assert used == encoding
    assert text.isascii()
    assert packing.packed_size(text) == len(base64.b64decode(text))
    if used == "zlib":
        assert packing.packed_size(text) <= len(body) - len(body) // 8
    assert packing.unpack_body(text, used, len(body), "test") == body


def test_a_message_without_compression_carries_no_encoding() -> None:
    message = p.Response("r1", 200, body=b"a" * 10_000)
    assert wire(message)["enc"] == "zlib"
    plain = wire_uncompressed(message)
    assert "enc" not in plain and base64.b64decode(plain["body"]) == message.body
    assert codec.decode(codec.encode(message, compress=False)) == message


def test_an_empty_body_is_left_out() -> None:
    assert "body" not in wire(p.Response("r1", 204))
    assert "body" not in wire(p.Request("r1", "a", "GET", "/"))


SIDES = [
    pytest.param(lambda body: p.Request("r1", "myapp", "POST", "/", body=body), id="request"),
    pytest.param(lambda body: p.Response("r1", 200, body=body), id="response"),
]
INLINE_LIMITS = {"request": p.MAX_INLINE_BODY_BYTES, "response": p.MAX_INLINE_RESPONSE_BYTES}


@pytest.mark.parametrize(("build", "side"), [(s.values[0], s.id) for s in SIDES])
def test_an_incompressible_body_at_the_inline_limit_travels_and_one_byte_more_is_413(
    build: Any, side: str
) -> None:
    fits = build(random_bytes(INLINE_LIMITS[side]))
    assert codec.decode(codec.encode(fits)) == fits
    with pytest.raises(ProtocolError) as too_big:
        codec.encode(build(random_bytes(INLINE_LIMITS[side] + 1)))
    assert too_big.value.status == 413
    assert "blob store" in str(too_big.value)


@pytest.mark.parametrize("build", SIDES)
def test_a_body_at_the_ceiling_travels_inline_when_it_compresses_under_the_limit(
    build: Any,
) -> None:
    message = build(b"\x00" * p.MAX_BODY_BYTES)
    text = codec.encode(message)
    assert len(text) < p.MAX_FRAME_BYTES
    assert codec.decode(text) == message


def test_an_answer_above_the_ceiling_is_413_however_well_it_compresses() -> None:
    with pytest.raises(ProtocolError) as refused:
        codec.encode(p.Response("r1", 200, body=b"x" * (p.MAX_BODY_BYTES + 1)))
    assert refused.value.status == 413 and "at most" in str(refused.value)


def test_the_largest_request_fits_in_one_message() -> None:
    def request(headers: p.Headers) -> p.Request:
        return p.Request("r1", "a" * 63, "A" * 20, "/", headers=headers)

    filler = p.MAX_HEAD_BYTES - head_bytes(request((("x-big", ""),)))
    largest = p.Request(
        "r" * p.MAX_ID_LENGTH,
        "a" * 63,
        "A" * 20,
        "/",
        headers=(("x-big", "v" * filler),),
        body=random_bytes(p.MAX_INLINE_BODY_BYTES),
        deadline=1_700_000_000.123456,
        upload_url="https://" + "u" * (p.MAX_BLOB_URL_LENGTH - 8),
    )
    text = codec.encode(largest)
    assert len(text) <= p.MAX_MESSAGE_BYTES
    assert len(codec.split_frames(text)) == p.MAX_MESSAGE_BYTES // p.MAX_FRAME_BYTES
    assert codec.decode(text) == largest


def zlib_body(data: bytes, enc: object = "zlib") -> dict[str, Any]:
    obj = wire(p.Response("r1", 200))
    return obj | {"body": base64.b64encode(data).decode(), "enc": enc}


def test_a_compressed_body_inflating_to_the_ceiling_is_accepted() -> None:
    decoded = decode_object(zlib_body(zlib.compress(b"\x00" * p.MAX_BODY_BYTES, 9)))
    assert isinstance(decoded, p.Response) and len(decoded.body) == p.MAX_BODY_BYTES


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(zlib.compress(b"\x00" * (p.MAX_BODY_BYTES + 1), 9), id="one byte over"),
        pytest.param(zlib.compress(b"\x00" * 64 * 1024 * 1024, 9), id="64 MiB bomb"),
        pytest.param(zlib.compress(b"hello" * 1000)[:-6], id="truncated stream"),
        pytest.param(b"hello, not zlib at all", id="not zlib"),
        pytest.param(b"", id="empty stream"),
    ],
)
def test_a_compressed_body_that_is_corrupt_or_inflates_beyond_the_ceiling_is_refused(
    body: bytes,
) -> None:
    assert len(body) < p.MAX_MESSAGE_BYTES
    with pytest.raises(ProtocolError):
        decode_object(zlib_body(body))


# --- Frames -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length",
    [
        0,
        1,
        p.MAX_FRAME_BYTES - 1,
        p.MAX_FRAME_BYTES,
        p.MAX_FRAME_BYTES + 1,
        p.MAX_MESSAGE_BYTES - 1,
        p.MAX_MESSAGE_BYTES,
    ],
)
def test_split_frames_cuts_into_full_frames_that_join_back(length: int) -> None:
    text = "".join(random.Random(length).choices("abc{}[]\"'\\", k=length))
    frames = codec.split_frames(text)
    assert "".join(frames) == text
    assert all(len(frame) <= p.MAX_FRAME_BYTES for frame in frames)
    assert all(len(frame) == p.MAX_FRAME_BYTES for frame in frames[:-1])
    assert len(frames) == max(1, math.ceil(length / p.MAX_FRAME_BYTES))


# --- Heads and message size -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "status"),
    [
        pytest.param(lambda h: p.Request("r1", "myapp", "GET", "/", headers=h), 431, id="visitor"),
        pytest.param(lambda h: p.Response("r1", 200, headers=h), 502, id="local app"),
    ],
)
def test_a_head_at_the_limit_travels_and_one_byte_more_is_refused(build: Any, status: int) -> None:
    def with_head_of(size: int) -> p.Message:
        empty = head_bytes(build((("x-big", ""),)))
        message: p.Message = build((("x-big", "v" * (size - empty)),))
        return message

    fits = with_head_of(p.MAX_HEAD_BYTES)
    assert codec.decode(codec.encode(fits)) == fits
    with pytest.raises(ProtocolError) as too_big:
        codec.encode(with_head_of(p.MAX_HEAD_BYTES + 1))
    assert too_big.value.status == status


def test_non_ascii_header_values_count_as_their_escaped_json() -> None:
    # "é" travels as "\u00e9": six bytes of head each.
    headers = (("x", "é" * (p.MAX_HEAD_BYTES // 6)),)
    with pytest.raises(ProtocolError) as too_big:
        codec.encode(p.Request("r1", "myapp", "GET", "/", headers=headers))
    assert too_big.value.status == 431


def test_the_path_and_query_count_toward_the_head() -> None:
    long_target = p.Request("r1", "myapp", "GET", "/" + "a" * p.MAX_HEAD_BYTES)
    with pytest.raises(ProtocolError) as too_big:
        codec.encode(long_target)
    assert too_big.value.status in (414, 431)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        pytest.param("request", 431, id="visitor"),
        pytest.param(
            "response",
            502,
            id="local app",
        ),
    ],
)
def test_the_header_count_is_limited_when_decoding(kind: str, status: int) -> None:
    message = p.Request("r1", "myapp", "GET", "/") if kind == "request" else p.Response("r1", 200)
    obj = wire(message)
    obj["headers"] = [["x", "1"]] * p.MAX_HEADERS
    decoded = decode_object(obj)
    assert isinstance(decoded, p.Request | p.Response)
    assert len(decoded.headers) == p.MAX_HEADERS
    obj["headers"] = [["x", "1"]] * (p.MAX_HEADERS + 1)
    with pytest.raises(ProtocolError) as too_many:
        decode_object(obj)
    assert too_many.value.status == status


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
def test_a_message_at_the_limit_decodes_and_one_byte_more_is_413(as_bytes: bool) -> None:
    skeleton = '{"type":"ping","ts":1}'
    at_limit = skeleton[:-1] + " " * (p.MAX_MESSAGE_BYTES - len(skeleton)) + "}"
    over = at_limit[:-1] + " }"
    assert len(at_limit) == p.MAX_MESSAGE_BYTES
    assert codec.decode(at_limit.encode() if as_bytes else at_limit) == p.Ping(1.0)
    with pytest.raises(ProtocolError) as too_big:
        codec.decode(over.encode() if as_bytes else over)
    assert too_big.value.status == 413


# --- Hostile input ----------------------------------------------------------------------------


def field(message: p.Message, **changes: object) -> str:
    """``message`` on the wire with some fields replaced (None removes a field)."""
    obj = wire(message) | changes
    return json.dumps({k: v for k, v in obj.items() if v is not None})


def raw(message: p.Message, key: str, literal: str) -> str:
    """``message`` on the wire with ``key`` set to a raw JSON literal such as ``1e400``."""
    obj = wire(message)
    obj[key] = "@@"
    return json.dumps(obj).replace('"@@"', literal)


PING = p.Ping(1.0)
PONG = p.Pong(1.0)
WELCOME = p.Welcome((p.TunnelInfo("a", None, "https://x/t/a/"),))
HELLO = p.Hello((p.TunnelSpec("a"),))
REQUEST = p.Request("r1", "myapp", "GET", "/")
RESPONSE = p.Response("r1", 200, body=b"hello")
HUGE = "9" * 400
CHUNK = p.Chunk("r1", 0, b"data")

HOSTILE = [
    # Not a message at all
    pytest.param("", id="empty"),
    pytest.param("{not json", id="broken json"),
    pytest.param("null", id="null"),
    pytest.param("[1, 2]", id="a list"),
    pytest.param('"hello"', id="a string"),
    pytest.param("42", id="a number"),
    pytest.param("\x00", id="NUL"),
    pytest.param("\ud800", id="lone surrogate"),
    pytest.param(b"\xff\xfe{}", id="bytes not utf-8"),
    pytest.param("x" * (p.MAX_MESSAGE_BYTES + 1), id="over the message limit"),
    pytest.param('{"no": "type"}', id="no type"),
    pytest.param('{"type": "teleport"}', id="unknown type"),
    pytest.param('{"type": 1}', id="type not a string"),
    pytest.param('{"type": ["ping"]}', id="type a list"),
    # Deep nesting (recursion) within one frame
    pytest.param("[" * 1000, id="1000 ["),
    pytest.param("[" * 1000 + "]" * 1000, id="1000 balanced []"),
    pytest.param('{"a":' * 1000, id="1000 {"),
    pytest.param("[{" * 500, id="500 [{"),
    pytest.param('{"type":"ping","ts":1,"x":' + "[" * 1000 + "]" * 1000 + "}", id="deep field"),
    pytest.param("[" * 10_000 + "]" * 10_000, id="10000 balanced []"),
    pytest.param("]" * 20 + "[" * 20, id="closing before opening"),
    # Numbers out of range
    pytest.param(raw(PING, "ts", "1e400"), id="ts 1e400"),
    pytest.param(raw(PING, "ts", "-1e400"), id="ts -1e400"),
    pytest.param(raw(PING, "ts", HUGE), id="ts 400-digit integer"),
    pytest.param(raw(PING, "ts", "9" * 5000), id="ts 5000-digit integer"),
    pytest.param(raw(PING, "ts", "NaN"), id="ts NaN"),
    pytest.param(raw(PING, "ts", "Infinity"), id="ts Infinity"),
    pytest.param(raw(PONG, "ts", "1e400"), id="pong ts 1e400"),
    pytest.param(raw(WELCOME, "heartbeat", "1e400"), id="heartbeat 1e400"),
    pytest.param(raw(WELCOME, "heartbeat", HUGE), id="heartbeat 400-digit integer"),
    pytest.param(raw(WELCOME, "heartbeat", "NaN"), id="heartbeat NaN"),
    pytest.param(raw(WELCOME, "heartbeat", "-Infinity"), id="heartbeat -Infinity"),
    pytest.param(raw(WELCOME, "heartbeat", "-1"), id="heartbeat negative"),
    pytest.param(raw(WELCOME, "heartbeat", "0"), id="heartbeat 0"),
    pytest.param(raw(WELCOME, "heartbeat", "0.5"), id="heartbeat 0.5"),
    pytest.param(raw(WELCOME, "heartbeat", "541"), id="heartbeat 541"),
    pytest.param(raw(WELCOME, "heartbeat", "1e308"), id="heartbeat 1e308"),
    pytest.param(field(WELCOME, heartbeat=None), id="heartbeat missing"),
    pytest.param(raw(REQUEST, "deadline", "1e400"), id="deadline 1e400"),
    pytest.param(raw(REQUEST, "deadline", HUGE), id="deadline 400-digit integer"),
    pytest.param(raw(REQUEST, "deadline", "NaN"), id="deadline NaN"),
    pytest.param(raw(RESPONSE, "status", HUGE), id="status 400-digit integer"),
    pytest.param(raw(RESPONSE, "uploaded", HUGE), id="uploaded 400-digit integer"),
    pytest.param(field(PING, served={"a": 2**60}), id="served count huge"),
    pytest.param(field(PING, served={"a": -1}), id="served count negative"),
    pytest.param(field(PING, served={"Bad": 1}), id="served bad name"),
    pytest.param(field(PING, served={f"t{i}": 1 for i in range(17)}), id="served 17 tunnels"),
    # Bodies
    pytest.param(field(RESPONSE, body="not base64!"), id="body not base64"),
    pytest.param(field(RESPONSE, body="aGVsbG8"), id="body bad padding"),
    pytest.param(field(RESPONSE, body=" aGVsbG8="), id="body with whitespace"),
    pytest.param(field(RESPONSE, body="aGVsbG8=\n"), id="body with newline"),
    pytest.param(field(RESPONSE, body="aGVsbé8="), id="body non-ascii"),
    pytest.param(field(RESPONSE, body="aGVs\ud800"), id="body lone surrogate"),
    pytest.param(field(RESPONSE, body="٣٣٣٣"), id="body arabic digits"),
    pytest.param(field(RESPONSE, body=5), id="body a number"),
    pytest.param(field(RESPONSE, body=["aGVsbG8="]), id="body a list"),
    pytest.param(field(RESPONSE, body={"b": "aGVsbG8="}), id="body an object"),
    pytest.param(field(RESPONSE, body=True), id="body true"),
    pytest.param(field(RESPONSE, enc="gzip"), id="enc gzip"),
    pytest.param(field(RESPONSE, enc="ZLIB"), id="enc ZLIB"),
    pytest.param(field(RESPONSE, enc=""), id="enc empty"),
    pytest.param(field(RESPONSE, enc=5), id="enc a number"),
    pytest.param(field(RESPONSE, enc=["zlib"]), id="enc a list"),
    pytest.param(field(RESPONSE, enc="zlib"), id="enc zlib on plain bytes"),
    pytest.param(field(REQUEST, body="not base64!"), id="request body not base64"),
    pytest.param(field(REQUEST, body_url="ftp://x/", body_size=1), id="body_url not http"),
    pytest.param(field(REQUEST, body_url="https://x/", body_size=-1), id="body_size negative"),
    pytest.param(
        field(REQUEST, body_url="https://x/", body_size=p.MAX_BODY_BYTES + 1), id="body_size over"
    ),
    pytest.param(field(REQUEST, body_url="https://x/"), id="body_url without size"),
    pytest.param(field(REQUEST, upload_url="javascript:x"), id="upload_url not http"),
    pytest.param(field(REQUEST, inline_max=p.MAX_INLINE_BODY_BYTES + 1), id="inline_max over"),
    pytest.param(field(RESPONSE, uploaded=-1, body=None), id="uploaded negative"),
    pytest.param(field(RESPONSE, uploaded=p.MAX_BLOB_BYTES + 1, body=None), id="uploaded over"),
    pytest.param(field(RESPONSE, uploaded=5), id="uploaded and a body"),
    # Ids, statuses, methods, names, targets, headers
    *(
        pytest.param(field(message, id=bad), id=f"{kind} id {label}")
        for message, kind in ((REQUEST, "request"), (RESPONSE, "response"))
        for bad, label in (
            ("", "empty"),
            ("../../etc", "path"),
            ("x" * (p.MAX_ID_LENGTH + 1), "too long"),
            ("r\u00e91", "non-ascii"),
            ("r\n1", "newline"),
            (1, "a number"),
            (None, "missing"),
        )
    ),
    *(
        pytest.param(field(RESPONSE, status=bad), id=f"status {bad!r}")
        for bad in (99, 600, 0, -1, "200", 200.0, True, None)
    ),
    *(
        pytest.param(field(REQUEST, method=bad), id=f"method {bad!r}")
        for bad in ("get", "", "G E T", "A" * 21, "GET\r\n", "GÉT", 5, None)
    ),
    *(
        pytest.param(field(REQUEST, tunnel=bad), id=f"tunnel {bad!r}")
        for bad in ("Bad", "connect", "", "-a", "a" * 64, None)
    ),
    pytest.param(field(REQUEST, path=None), id="path missing"),
    pytest.param(field(REQUEST, query=None), id="query missing"),
    pytest.param(field(REQUEST, headers={"x": "y"}), id="headers an object"),
    pytest.param(field(REQUEST, headers=[["x"]]), id="header without value"),
    pytest.param(field(REQUEST, headers=[["x", "y", "z"]]), id="header with three items"),
    pytest.param(field(REQUEST, headers=["x: y"]), id="header a string"),
    pytest.param(field(REQUEST, headers=[["bad name", "v"]]), id="header name with space"),
    pytest.param(field(REQUEST, headers=[["x", "a\r\nInjected: yes"]]), id="header CRLF"),
    pytest.param(field(RESPONSE, headers=[["x", "a\r\nSet-Cookie: x"]]), id="response CRLF"),
    pytest.param(field(RESPONSE, headers=[["x", "a"]] * 201), id="response 201 headers"),
    pytest.param(field(RESPONSE, fault="nope"), id="fault a string"),
    pytest.param(field(RESPONSE, fault={"side": "agent"}), id="fault without message"),
    pytest.param(field(RESPONSE, fault={"side": 1, "message": "x"}), id="fault side a number"),
    # Hello and welcome
    pytest.param(field(HELLO, version=1), id="hello version 1"),
    pytest.param(field(HELLO, version=3), id="hello version 3"),
    pytest.param(field(HELLO, version="2"), id="hello version a string"),
    pytest.param(field(HELLO, version=2.0), id="hello version a float"),
    pytest.param(field(HELLO, tunnels=[]), id="hello no tunnels"),
    pytest.param(field(HELLO, tunnels=[{}] * 17), id="hello 17 tunnels"),
    pytest.param(field(HELLO, tunnels="myapp"), id="hello tunnels a string"),
    pytest.param(field(HELLO, tunnels=["myapp"]), id="hello tunnel a string"),
    pytest.param(field(HELLO, tunnels=[{"name": "Bad Name"}]), id="hello bad name"),
    pytest.param(field(HELLO, tunnels=[{"name": 5}]), id="hello name a number"),
    pytest.param(field(HELLO, tunnels=[{"webhook": ["github"]}]), id="hello webhook a list"),
    pytest.param(field(HELLO, tunnels=[{"basic_auth": "alice:pw"}]), id="hello password"),
    pytest.param(field(HELLO, tunnels=[{"large_responses": "stream"}]), id="hello bad mode"),
    pytest.param(field(CHUNK, seq=-1), id="chunk number below 0"),
    pytest.param(field(CHUNK, seq=p.MAX_CHUNK_SEQ + 1), id="chunk number past its limit"),
    pytest.param(
        field(CHUNK, body=base64.b64encode(b"x" * (p.MAX_CHUNK_BYTES + 1)).decode()),
        id="chunk body past its limit",
    ),
    pytest.param(field(CHUNK, fault="cut"), id="chunk fault without end"),
    pytest.param(
        field(
            RESPONSE,
            stored=base64.b64encode(
                b'{"type":"response","id":"r1","status":200,"headers":[],"streamed":true}\nbody'
            ).decode(),
        ),
        id="streamed response with a body",
    ),
    pytest.param(field(WELCOME, tunnels={"a": {}}), id="welcome tunnels an object"),
    pytest.param(field(WELCOME, tunnels=["a"]), id="welcome tunnel a string"),
    pytest.param(field(WELCOME, tunnels=[{"name": "a"}]), id="welcome without path_url"),
    pytest.param(
        field(WELCOME, tunnels=[{"name": "a", "path_url": "x", "guards": "basic_auth"}]),
        id="welcome guards a string",
    ),
    pytest.param('{"type": "error", "code": 5, "message": "x"}', id="error code a number"),
    pytest.param('{"type": "error", "code": "x"}', id="error without message"),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_raises_protocol_error_and_nothing_else(text: str | bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(text)


def test_nesting_counts_containers_up_to_the_limit_and_never_brackets_in_strings() -> None:
    def ping_with(extra: str) -> str:
        return '{"type":"ping","ts":1,"x":' + extra + "}"

    deepest = p.MAX_JSON_DEPTH - 1  # the message's own object is the first level
    assert codec.decode(ping_with("[" * deepest + "]" * deepest)) == p.Ping(1.0)
    assert codec.decode(ping_with('"' + "[{" * 50 + '"')) == p.Ping(1.0)
    with pytest.raises(ProtocolError, match="nests deeper"):
        codec.decode(ping_with("[" * (deepest + 1) + "]" * (deepest + 1)))
    with pytest.raises(ProtocolError, match="nests deeper"):
        codec.decode(ping_with('[1,{"a":' + "[" * deepest + "]" * deepest + "}]"))


def test_a_response_with_many_headers_and_a_large_body_decodes() -> None:
    headers = tuple((f"x-h{i}", "[{" * 5) for i in range(20))
    response = p.Response("r1", 200, headers, bytes(range(256)) * 200)
    assert codec.decode(codec.encode(response, compress=False)) == response


def fault_text(key: str) -> Any:
    def build(text: str) -> dict[str, Any]:
        fault = {"side": "agent", "message": "m"} | {key: text}
        return wire(p.Response("r1", 502)) | {"fault": fault}

    return build


SURROGATE_TEXTS = [
    pytest.param(fault_text("message"), lambda m: m.fault.message, id="fault message"),
    pytest.param(fault_text("side"), lambda m: m.fault.side, id="fault side"),
    pytest.param(
        lambda text: {"type": "error", "code": "x", "message": text},
        lambda m: m.message,
        id="error message",
    ),
    pytest.param(
        lambda text: {"type": "error", "code": text, "message": "x"},
        lambda m: m.code,
        id="error code",
    ),
    pytest.param(lambda text: wire(HELLO) | {"agent": text}, lambda m: m.agent, id="agent"),
]


@pytest.mark.parametrize(("build", "read"), SURROGATE_TEXTS)
@pytest.mark.parametrize("text", ["\ud800", "oops \udfff\ud800 x", "\udcff" * 2000])
def test_human_readable_text_with_lone_surrogates_decodes_to_printable_utf8(
    build: Any, read: Any, text: str
) -> None:
    decoded = read(decode_object(build(text)))
    assert isinstance(decoded, str) and len(decoded) <= p.MAX_MESSAGE_TEXT
    decoded.encode("utf-8")


# --- Wrong types in every field ---------------------------------------------------------------

SAMPLES: dict[str, object] = {
    "null": None,
    "bool": True,
    "int": 7,
    "float": 1.5,
    "str": "x",
    "list": [],
    "object": {},
}

FULL_REQUEST = p.Request(
    "r1", "shop", "POST", "/", "q=1", (("a", "b"),), b"x" * 1000, 5.0, None, 0, UPLOAD_URL, 100
)
TYPED_MESSAGES = {
    "hello": p.Hello(
        (p.TunnelSpec("shop", HASHED, "github", "s3cret", "redirect"),), agent="hatchway/2"
    ),
    "welcome": p.Welcome(
        (p.TunnelInfo("shop", "https://u/", "https://x/t/shop/", ("basic_auth",), ("https://c/",)),)
    ),
    "ping": p.Ping(1.0, (("shop", 3),)),
    "pong": PONG,
    "error": p.Error("code", "message"),
    "request": FULL_REQUEST,
    "request-by-url": p.Request("r2", "shop", "POST", "/", body_url=BODY_URL, body_size=10),
    "response": p.Response("r1", 502, (("a", "b"),), b"x" * 1000, p.Fault("agent", "m")),
    "response-uploaded": p.Response("r2", 200, uploaded=5),
    "hello-pool": p.Hello((p.TunnelSpec("shop", pool=True),)),
    "hello-no-gzip": p.Hello((p.TunnelSpec("shop", gzip=False),)),
    "hello-stream": p.Hello((p.TunnelSpec("shop", stream=True),)),
    "chunk": p.Chunk("r1", 3, b"x", end=True, fault="cut"),
    "welcome-pool": p.Welcome(
        (p.TunnelInfo("shop", None, "https://x/t/shop/", pool_size=2, pooled_since=1.0),)
    ),
    "pong-pools": p.Pong(1.0, (("shop", 2),)),
    "ping-health": p.Ping(
        1.0, (("shop", 3),), (("shop", p.TunnelHealth((("app-5xx", 2),), 12, 80)),)
    ),
}

# (message, path to the field, the JSON types the field may hold)
FIELD_TYPES: list[tuple[str, tuple[str | int, ...], set[str]]] = [
    ("hello", ("version",), {"int"}),
    ("hello", ("tunnels",), {"list"}),
    ("hello", ("tunnels", 0), {"object"}),
    *(
        ("hello", ("tunnels", 0, key), {"str", "null"})
        for key in ("name", "basic_auth", "webhook", "webhook_secret", "large_responses")
    ),
    ("welcome", ("heartbeat",), {"int", "float"}),
    ("welcome", ("tunnels",), {"list"}),
    ("welcome", ("tunnels", 0), {"object"}),
    ("welcome", ("tunnels", 0, "name"), {"str"}),
    ("welcome", ("tunnels", 0, "path_url"), {"str"}),
    ("welcome", ("tunnels", 0, "guards"), {"list"}),
    ("welcome", ("tunnels", 0, "guards", 0), {"str"}),
    ("welcome", ("tunnels", 0, "custom_urls"), {"list"}),
    ("welcome", ("tunnels", 0, "custom_urls", 0), {"str"}),
    ("ping", ("ts",), {"int", "float"}),
    ("ping", ("served",), {"object"}),
    ("ping", ("served", "shop"), {"int"}),
    ("pong", ("ts",), {"int", "float"}),
    ("error", ("code",), {"str"}),
    ("error", ("message",), {"str"}),
    *(("request", (key,), {"str"}) for key in ("id", "tunnel", "method", "path", "query")),
    *(("request", (key,), {"str", "null"}) for key in ("body", "enc")),
    ("request", ("headers",), {"list"}),
    ("request", ("headers", 0), {"list"}),
    ("request", ("headers", 0, 0), {"str"}),
    ("request", ("headers", 0, 1), {"str"}),
    ("request", ("deadline",), {"int", "float"}),
    ("request", ("inline_max",), {"int"}),
    ("request", ("upload_url",), {"str", "null"}),
    ("request-by-url", ("body_url",), {"str", "null"}),
    ("request-by-url", ("body_size",), {"int"}),
    ("response", ("id",), {"str"}),
    *(("response", (key,), {"str", "null"}) for key in ("body", "enc")),
    ("response", ("status",), {"int"}),
    ("response", ("headers",), {"list"}),
    ("response", ("headers", 0), {"list"}),
    ("response", ("headers", 0, 0), {"str"}),
    ("response", ("headers", 0, 1), {"str"}),
    ("response", ("fault",), {"object", "null"}),
    ("response", ("fault", "side"), {"str"}),
    ("response", ("fault", "message"), {"str"}),
    ("response-uploaded", ("uploaded",), {"int", "null"}),
    ("hello-pool", ("tunnels", 0, "pool"), {"bool"}),
    ("hello-no-gzip", ("tunnels", 0, "gzip"), {"bool"}),
    ("hello-stream", ("tunnels", 0, "stream"), {"bool"}),
    ("chunk", ("id",), {"str"}),
    ("chunk", ("seq",), {"int"}),
    ("chunk", ("body",), {"str"}),
    ("chunk", ("end",), {"bool"}),
    ("chunk", ("fault",), {"str", "null"}),
    ("welcome-pool", ("tunnels", 0, "pool_size"), {"int"}),
    ("welcome-pool", ("tunnels", 0, "pooled_since"), {"int", "float"}),
    ("pong-pools", ("pools",), {"object"}),
    ("pong-pools", ("pools", "shop"), {"int"}),
    ("ping-health", ("health",), {"object"}),
    ("ping-health", ("health", "shop"), {"object"}),
    ("ping-health", ("health", "shop", "errors"), {"object"}),
    ("ping-health", ("health", "shop", "errors", "app-5xx"), {"int"}),
    ("ping-health", ("health", "shop", "p50"), {"int"}),
    ("ping-health", ("health", "shop", "p95"), {"int"}),
]
LAX_FIELDS: dict[tuple[str, tuple[str | int, ...]], str] = {}
FIELD_TYPES += [
    ("hello", ("agent",), {"str", "null"}),
    ("welcome", ("tunnels", 0, "url"), {"str", "null"}),
]


def field_case(kind: str, path: tuple[str | int, ...], allowed: set[str]) -> Any:
    label = f"{kind}." + ".".join(str(key) for key in path)
    lax = LAX_FIELDS.get((kind, path))
    marks = [pytest.mark.xfail(strict=True, reason=lax)] if lax else []
    return pytest.param(kind, path, allowed, id=label, marks=marks)


@pytest.mark.parametrize(("kind", "path", "allowed"), [field_case(*f) for f in FIELD_TYPES])
def test_a_field_of_the_wrong_json_type_is_a_protocol_error(
    kind: str, path: tuple[str | int, ...], allowed: set[str]
) -> None:
    accepted = []
    for json_type, sample in SAMPLES.items():
        if json_type in allowed:
            continue
        obj = wire(TYPED_MESSAGES[kind])
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(sample)
        try:
            decode_object(obj)
        except ProtocolError:
            continue
        accepted.append(json_type)
    assert not accepted, f"accepted a {', '.join(accepted)} where only {allowed} belongs"


# --- Fuzzing ----------------------------------------------------------------------------------

WIRE_KEYS = sorted(
    {key for message in TYPED_MESSAGES.values() for key in wire(message)}
    | {"heartbeat", "served", "custom_urls", "guards", "fault", "uploaded", "body_url"}
)
TYPES = ["hello", "welcome", "ping", "pong", "error", "request", "response"]
VALID_TEXTS = [codec.encode(message) for message in TYPED_MESSAGES.values()]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(TYPES + WIRE_KEYS + ["zlib", "/", "r1", "shop", "AAAA", "\ud800"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(WIRE_KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={key: json_values for key in WIRE_KEYS if key != "type"},
)


def decodes_or_refuses(text: str | bytes) -> None:
    """The decoder's whole contract: a protocol message, or a ProtocolError."""
    try:
        message = codec.decode(text)
    except ProtocolError:
        return
    assert isinstance(message, p.Message)


def replace_somewhere(obj: Any, data: st.DataObject) -> Any:
    """``obj`` with one value, anywhere in it, replaced by an arbitrary JSON value."""
    if isinstance(obj, dict) and obj and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(obj)))
        return obj | {key: replace_somewhere(obj[key], data)}
    if isinstance(obj, list) and obj and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(obj) - 1))
        return [*obj[:index], replace_somewhere(obj[index], data), *obj[index + 1 :]]
    return data.draw(json_values)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_fuzz_arbitrary_text_is_a_message_or_a_protocol_error(text: str | bytes) -> None:
    decodes_or_refuses(text)


@settings(max_examples=200, deadline=None)
@given(json_values | json_messages)
def test_fuzz_arbitrary_json_is_a_message_or_a_protocol_error(value: object) -> None:
    decodes_or_refuses(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID_TEXTS), st.data())
def test_fuzz_mutated_messages_are_messages_or_protocol_errors(text: str, data: Any) -> None:
    obj = replace_somewhere(json.loads(text), data)
    decodes_or_refuses(json.dumps(obj))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VALID_TEXTS), st.data())
def test_fuzz_spliced_messages_are_messages_or_protocol_errors(text: str, data: Any) -> None:
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 20)))
    inserted = data.draw(st.text(alphabet='[]{}",:0123456789.eE-+tfnul\\ \ud800x', max_size=20))
    decodes_or_refuses(text[:start] + inserted + text[end:])


HEADER_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00") | (
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
)
"""What a header value may hold: text, and the surrogates that carry non-UTF-8 bytes."""


header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True)
header_values = st.text(HEADER_TEXT, max_size=50)
bodies = st.one_of(
    st.binary(max_size=100_000),
    st.integers(0, 100_000).map(random_bytes),
    st.tuples(st.binary(min_size=1, max_size=50), st.integers(1, 4000)).map(lambda t: t[0] * t[1]),
)


@settings(max_examples=200, deadline=None)
@given(
    body=bodies,
    headers=st.lists(st.tuples(header_names, header_values), max_size=20),
    as_response=st.booleans(),
)
def test_fuzz_any_body_and_header_values_survive_byte_exact(
    body: bytes, headers: list[tuple[str, str]], as_response: bool
) -> None:
    message: p.Message = (
        p.Response("r1", 200, tuple(headers), body)
        if as_response
        else p.Request("r1", "myapp", "POST", "/upload", "a=1", tuple(headers), body)
    )
    packed, _ = packing.pack_body(body)
    if packing.packed_size(packed) > p.MAX_INLINE_BODY_BYTES:
        with pytest.raises(ProtocolError) as too_big:
            codec.encode(message)
        assert too_big.value.status == 413
        return
    text = codec.encode(message)
    assert text.isascii() and len(text) <= p.MAX_MESSAGE_BYTES
    assert codec.decode("".join(codec.split_frames(text))) == message


def test_pool_fields_are_left_out_unless_used() -> None:
    assert "pool" not in wire(p.Hello((p.TunnelSpec("a"),)))["tunnels"][0]
    plain = wire(p.Welcome((p.TunnelInfo("a", None, "https://x/t/a/"),)))["tunnels"][0]
    assert not {"pool_size", "pooled_since"} & set(plain)
    assert "pools" not in wire(p.Pong(1.0))


@pytest.mark.parametrize(
    ("message", "path", "value"),
    [
        pytest.param("welcome-pool", ("tunnels", 0, "pool_size"), p.MAX_POOL_MEMBERS + 1, id="big"),
        pytest.param("welcome-pool", ("tunnels", 0, "pool_size"), -1, id="negative"),
        pytest.param("pong-pools", ("pools", "shop"), p.MAX_POOL_MEMBERS + 1, id="pong-big"),
        pytest.param("pong-pools", ("pools",), {"Not A Name": 1}, id="pong-bad-name"),
        pytest.param(
            "pong-pools",
            ("pools",),
            {f"t{i}": 1 for i in range(p.MAX_TUNNELS_PER_CONNECTION + 1)},
            id="pong-too-many",
        ),
    ],
)
def test_pool_sizes_out_of_bounds_are_refused(
    message: str, path: tuple[str | int, ...], value: object
) -> None:
    obj = wire(TYPED_MESSAGES[message])
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ProtocolError):
        decode_object(obj)


# --- A ping's tunnel health -------------------------------------------------------------------


def ping_with(**health: object) -> dict[str, Any]:
    """A ping on the wire whose one tunnel, ``shop``, reports ``health``."""
    return wire(p.Ping(1.0, (("shop", 5),))) | {"health": {"shop": health}}


def causes(count: int, length: int = 8) -> dict[str, int]:
    return {f"c{i:0{length - 1}d}": 1 for i in range(count)}


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        pytest.param({}, p.TunnelHealth(), id="nothing to say"),
        pytest.param(
            {"errors": causes(p.MAX_ERROR_CAUSES)},
            p.TunnelHealth(tuple(causes(p.MAX_ERROR_CAUSES).items())),
            id="most causes",
        ),
        pytest.param(
            {"errors": {"a" * p.MAX_CAUSE_LENGTH: p.MAX_REPORTED_COUNT}},
            p.TunnelHealth((("a" * p.MAX_CAUSE_LENGTH, p.MAX_REPORTED_COUNT),)),
            id="longest cause, largest count",
        ),
        pytest.param(
            {"p50": p.MAX_LATENCY_MS, "p95": p.MAX_LATENCY_MS},
            p.TunnelHealth((), p.MAX_LATENCY_MS, p.MAX_LATENCY_MS),
            id="slowest latency",
        ),
        pytest.param({"p50": 0, "p95": 0}, p.TunnelHealth((), 0, 0), id="instant"),
        pytest.param({"errors": {}}, p.TunnelHealth(), id="no errors"),
    ],
)
def test_tunnel_health_at_the_limits_decodes(
    health: dict[str, Any], expected: p.TunnelHealth
) -> None:
    decoded = decode_object(ping_with(**health))
    assert isinstance(decoded, p.Ping)
    assert decoded.health == (("shop", expected),)
    assert codec.decode(codec.encode(decoded)) == decoded


def test_a_ping_reports_health_for_every_tunnel_a_connection_may_serve() -> None:
    names = [f"t{i}" for i in range(p.MAX_TUNNELS_PER_CONNECTION)]
    full = p.TunnelHealth(tuple(causes(p.MAX_ERROR_CAUSES, p.MAX_CAUSE_LENGTH).items()), 1, 2)
    ping = p.Ping(
        1.0, tuple((n, p.MAX_REPORTED_COUNT) for n in names), tuple((n, full) for n in names)
    )
    text = codec.encode(ping)
    # The largest report still fits one frame: a ping never needs continuation frames.
    assert len(text) <= p.MAX_FRAME_BYTES
    assert codec.decode(text) == ping


def test_health_is_left_out_unless_there_is_some() -> None:
    assert "health" not in wire(p.Ping(1.0, (("shop", 1),)))
    assert wire(p.Ping(1.0, (), (("shop", p.TunnelHealth()),)))["health"] == {"shop": {}}


@pytest.mark.parametrize(
    "health",
    [
        pytest.param({"errors": causes(p.MAX_ERROR_CAUSES + 1)}, id="one cause too many"),
        pytest.param({"errors": {"a" * (p.MAX_CAUSE_LENGTH + 1): 1}}, id="cause too long"),
        pytest.param({"errors": {"app-5xx": p.MAX_REPORTED_COUNT + 1}}, id="count too large"),
        pytest.param({"errors": {"app-5xx": -1}}, id="count negative"),
        pytest.param({"errors": {"app-5xx": 1.5}}, id="count a fraction"),
        pytest.param({"errors": {"app-5xx": True}}, id="count a boolean"),
        pytest.param({"errors": {"app-5xx": "3"}}, id="count a string"),
        *(
            pytest.param({"errors": {bad: 1}}, id=f"cause {bad!r}")
            for bad in ("", "App-5xx", "5xx", "-x", "a_b", "a b", "a.b", "caf\u00e9", "a\n")
        ),
        pytest.param({"errors": [["app-5xx", 1]]}, id="errors a list"),
        pytest.param({"p50": 1}, id="median alone"),
        pytest.param({"p95": 1}, id="95th alone"),
        pytest.param({"p50": 5, "p95": 4}, id="median above 95th"),
        pytest.param({"p50": 0, "p95": p.MAX_LATENCY_MS + 1}, id="latency too large"),
        pytest.param({"p50": -1, "p95": 1}, id="latency negative"),
        pytest.param({"p50": 1.5, "p95": 2}, id="latency a fraction"),
        pytest.param({"p50": None, "p95": 2}, id="latency null"),
    ],
)
def test_tunnel_health_beyond_the_limits_is_refused(health: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        decode_object(ping_with(**health))


@pytest.mark.parametrize(
    "health",
    [
        pytest.param(
            {f"t{i}": {} for i in range(p.MAX_TUNNELS_PER_CONNECTION + 1)}, id="17 tunnels"
        ),
        pytest.param({"Not A Name": {}}, id="bad tunnel name"),
        pytest.param({"shop": []}, id="report a list"),
        pytest.param({"shop": 3}, id="report a number"),
        pytest.param([{"shop": {}}], id="health a list"),
        pytest.param("shop", id="health a string"),
    ],
)
def test_malformed_health_is_refused(health: object) -> None:
    with pytest.raises(ProtocolError):
        decode_object(wire(p.Ping(1.0)) | {"health": health})


def test_tunnel_health_validates_itself() -> None:
    with pytest.raises(ProtocolError):
        p.TunnelHealth((("app-5xx", 1), ("app-5xx", 2)))  # a cause twice
    with pytest.raises(ProtocolError):
        p.Ping(1.0, (), tuple((f"t{i}", p.TunnelHealth()) for i in range(17)))
    assert not p.TunnelHealth() and p.TunnelHealth((), 0, 0) and p.TunnelHealth((("x", 1),))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcxyz-", min_size=1, max_size=20),
            st.text(alphabet=HEADER_TEXT, max_size=400),
        ),
        max_size=40,
    ),
    st.text(alphabet=HEADER_TEXT, max_size=300),
)
def test_a_head_said_to_fit_by_its_length_does_fit(
    headers: list[tuple[str, str]], fault: str
) -> None:
    """``encode`` skips measuring a head whose length alone bounds it under the limit: the
    bound must never be below the real encoded size."""
    for message in (
        p.Request("r1", "app", "GET", "/" + fault, fault, tuple(headers)),
        p.Response("r1", 502, tuple(headers), fault=p.Fault("agent", fault or "x")),
    ):
        if codec._head_fits(message):
            assert codec.head_size(message) <= p.MAX_HEAD_BYTES
