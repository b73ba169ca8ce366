"""The wire protocol: round trips, every limit at and one past its edge, hostile input."""

from __future__ import annotations

import base64
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway import protocol as p
from hatchway.protocol import ProtocolError


def reassemble(frames: list[str], shuffle: bool = False) -> p.Message:
    if shuffle:
        frames = random.Random(7).sample(frames, len(frames))
    reassembler = p.Reassembler()
    message = None
    for text in frames:
        frame = p.decode(text)
        if not isinstance(frame, p.Part):
            return frame
        message = reassembler.feed(frame) or message
    assert message is not None and len(reassembler) == 0
    return message


CONTROL_MESSAGES = [
    p.Hello((p.TunnelSpec("myapp"), p.TunnelSpec(None)), agent="hatchway/0.1"),
    p.Welcome((p.TunnelInfo("myapp", "https://myapp.t.example.com/", "https://x/t/myapp/"),), 30.0),
    p.Welcome((p.TunnelInfo("myapp", None, "https://x/t/myapp/"),)),
    p.Ping(12.5),
    p.Pong(12.5),
    p.Error("name_taken", "tunnel name 'myapp' is held by another token"),
]


@pytest.mark.parametrize("message", CONTROL_MESSAGES, ids=lambda m: type(m).__name__)
def test_control_messages_round_trip_in_one_frame(message: p.Message) -> None:
    frames = p.encode(message)
    assert len(frames) == 1
    assert p.decode(frames[0]) == message


@pytest.mark.parametrize(
    "message",
    [
        p.Request("r1", "myapp", "GET", "/"),
        p.Request(
            "r2",
            "myapp",
            "POST",
            "/caf%C3%A9/x",
            "a=1&a=2",
            (("x-a", "1"), ("x-a", "2")),
            b"\x00\xff" * 50_000,
        ),
        p.Response("r3", 204),
        p.Response("r4", 200, (("set-cookie", "a=1"), ("set-cookie", "b=2")), b"hello"),
        p.Response(
            "r5", 502, fault=p.Fault("local app", "connection refused by http://127.0.0.1:3000")
        ),
    ],
    ids=["get", "post-multipart", "204", "cookies", "fault"],
)
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_requests_and_responses_round_trip(message: p.Message, shuffle: bool) -> None:
    assert reassemble(p.encode(message), shuffle) == message


def test_header_values_with_unicode_survive() -> None:
    message = p.Response("r1", 200, (("x-name", "Zoë ✓"),))
    assert reassemble(p.encode(message)) == message


@pytest.mark.parametrize("size", [0, 1, 24_000, 24_600, 1024 * 1024, p.MAX_BODY_BYTES])
def test_every_frame_fits_the_websocket_limit(size: int) -> None:
    frames = p.encode(p.Response("r1", 200, (("x", "y" * 1000),), b"\xab" * size))
    assert all(len(f.encode()) <= p.MAX_FRAME_BYTES for f in frames)
    assert len(frames) <= p.MAX_PARTS


def test_body_at_the_ceiling_passes_and_one_byte_more_is_413() -> None:
    p.Request("r1", "myapp", "POST", "/", body=b"x" * p.MAX_BODY_BYTES)
    with pytest.raises(ProtocolError) as visitor:
        p.Request("r1", "myapp", "POST", "/", body=b"x" * (p.MAX_BODY_BYTES + 1))
    assert visitor.value.status == 413 and "visitor" in str(visitor.value)
    with pytest.raises(ProtocolError) as app:
        p.Response("r1", 200, body=b"x" * (p.MAX_BODY_BYTES + 1))
    assert app.value.status == 502 and "local app" in str(app.value)


def test_frame_at_the_limit_decodes_and_one_byte_more_is_refused() -> None:
    skeleton = '{"type":"ping","ts":1}'
    at_limit = skeleton[:-1] + " " * (p.MAX_FRAME_BYTES - len(skeleton)) + "}"
    assert len(at_limit) == p.MAX_FRAME_BYTES
    assert p.decode(at_limit) == p.Ping(1.0)
    with pytest.raises(ProtocolError) as exc:
        p.decode(at_limit[:-1] + " }")
    assert exc.value.status == 413


def test_head_at_the_limit_passes_and_beyond_is_431() -> None:
    def request_with_header_of(length: int) -> p.Request:
        return p.Request("r1", "myapp", "GET", "/", headers=(("x-big", "v" * length),))

    empty_head = len(
        json.dumps(
            {
                "tunnel": "myapp",
                "method": "GET",
                "path": "/",
                "query": "",
                "headers": [["x-big", ""]],
            },
            separators=(",", ":"),
        )
    )
    fits = request_with_header_of(p.MAX_HEAD_BYTES - empty_head)
    assert reassemble(p.encode(fits)) == fits
    with pytest.raises(ProtocolError) as exc:
        p.encode(request_with_header_of(p.MAX_HEAD_BYTES - empty_head + 1))
    assert exc.value.status == 431


def test_header_count_at_the_limit_passes_and_beyond_is_431() -> None:
    p.Request("r1", "myapp", "GET", "/", headers=(("x", "1"),) * p.MAX_HEADERS)
    with pytest.raises(ProtocolError) as exc:
        p.Request("r1", "myapp", "GET", "/", headers=(("x", "1"),) * (p.MAX_HEADERS + 1))
    assert exc.value.status == 431


def test_hello_tunnel_count_limit() -> None:
    p.Hello((p.TunnelSpec(None),) * p.MAX_TUNNELS_PER_CONNECTION)
    with pytest.raises(ProtocolError):
        p.Hello((p.TunnelSpec(None),) * (p.MAX_TUNNELS_PER_CONNECTION + 1))
    with pytest.raises(ProtocolError):
        p.Hello(())


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("my-app-2", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-app", False),
        ("app-", False),
        ("My-App", False),
        ("my_app", False),
        ("my.app", False),
        ("", False),
        ("connect", False),
    ],
)
def test_tunnel_names(name: str, valid: bool) -> None:
    if valid:
        assert p.validate_name(name) == name
    else:
        with pytest.raises(ProtocolError):
            p.validate_name(name)


def part(kind: str = "response", **fields: object) -> str:
    frame: dict[str, object] = {"type": kind, "id": "r1", "part": 0, "parts": 1, "body": ""}
    frame["head"] = {"status": 200, "headers": []}
    frame.update(fields)
    return json.dumps({k: v for k, v in frame.items() if v is not None})


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        "[1, 2]",
        '"hello"',
        '{"type": "teleport"}',
        '{"no": "type"}',
        '{"type": "hello", "version": 999, "tunnels": [{}]}',
        '{"type": "hello", "version": 1, "tunnels": [{"name": "Bad Name"}]}',
        '{"type": "hello", "version": 1, "tunnels": "myapp"}',
        '{"type": "ping", "ts": "soon"}',
        '{"type": "ping", "ts": true}',
        '{"type": "error", "code": 5, "message": "x"}',
        part(id="../../etc"),
        part(id="x" * (p.MAX_ID_LENGTH + 1)),
        part(parts=0),
        part(parts=p.MAX_PARTS + 1),
        part(part=1, parts=1),
        part(part=-1),
        part(body="not base64!"),
        part(head=None),
        part(part=1, parts=2, head={"status": 200, "headers": []}),
        "x" * (p.MAX_FRAME_BYTES + 1),
    ],
)
def test_malformed_frames_raise_protocol_error(text: str) -> None:
    with pytest.raises(ProtocolError):
        p.decode(text)


@pytest.mark.parametrize(
    "head",
    [
        {"status": 99, "headers": []},
        {"status": "200", "headers": []},
        {"status": 200, "headers": [["x"]]},
        {"status": 200, "headers": [["bad name", "v"]]},
        {"status": 200, "headers": [["x", "a\r\nInjected: yes"]]},
        {"status": 200, "headers": {"x": "y"}},
        {"status": 200, "headers": [], "fault": "nope"},
    ],
)
def test_malformed_heads_raise_protocol_error_on_assembly(head: dict[str, object]) -> None:
    frame = p.decode(part(head=head))
    assert isinstance(frame, p.Part)
    with pytest.raises(ProtocolError):
        p.Reassembler().feed(frame)


def test_duplicate_part_is_refused() -> None:
    frames = p.encode(p.Response("r1", 200, body=b"z" * 100_000))
    reassembler = p.Reassembler()
    first = p.decode(frames[1])
    assert isinstance(first, p.Part)
    reassembler.feed(first)
    with pytest.raises(ProtocolError, match="twice"):
        reassembler.feed(first)


def test_parts_disagreeing_on_their_count_are_refused() -> None:
    reassembler = p.Reassembler()
    reassembler.feed(p.Part("response", "r1", 0, 3, b"", {"status": 200, "headers": []}))
    with pytest.raises(ProtocolError, match="disagree"):
        reassembler.feed(p.Part("response", "r1", 1, 2, b""))


def test_reassembler_bounds_unfinished_messages() -> None:
    reassembler = p.Reassembler(max_pending=2)
    for i in range(2):
        reassembler.feed(p.Part("response", f"r{i}", 1, 2, b""))
    with pytest.raises(ProtocolError, match="unfinished"):
        reassembler.feed(p.Part("response", "r9", 1, 2, b""))


def test_assemble_refuses_missing_parts() -> None:
    frames = [p.decode(f) for f in p.encode(p.Response("r1", 200, body=b"z" * 100_000))]
    with pytest.raises(ProtocolError, match="missing"):
        p.assemble([f for f in frames if isinstance(f, p.Part)][:-1])


@pytest.mark.parametrize(
    ("path", "query", "ok"),
    [
        ("/", "", True),
        ("/a/b%2F%2Fc", "x=1&x=2", True),
        ("/caf%C3%A9", "", True),
        ("http://evil.example/", "", False),
        ("//evil.example/x", "", False),
        ("evil.example:80", "", False),
        ("/a\r\nHost: evil", "", False),
        ("/a b", "", False),
        ("/a", "x=1 HTTP/1.1\r\nHost: evil", False),
        ("/a\x00", "", False),
        ("", "", False),
    ],
)
def test_request_targets_must_be_plain_paths(path: str, query: str, ok: bool) -> None:
    if ok:
        p.check_target(path, query)
    else:
        with pytest.raises(ProtocolError):
            p.check_target(path, query)


def test_hop_by_hop_headers_and_those_named_by_connection_are_dropped() -> None:
    headers = (
        ("Connection", "keep-alive, X-Secret-Hop"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "5"),
        ("X-Kept", "a"),
        ("x-kept", "b"),
    )
    assert p.strip_hop_by_hop(headers) == (("X-Kept", "a"), ("x-kept", "b"))


@settings(max_examples=60, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=200_000),
        st.integers(0, p.MAX_BODY_BYTES).map(lambda n: random.Random(n).randbytes(n)),
    ),
    headers=st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
            st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=50),
        ),
        max_size=20,
    ),
)
def test_any_body_up_to_the_ceiling_survives_byte_exact(body: bytes, headers: list) -> None:
    request = p.Request("r1", "myapp", "POST", "/upload", "a=1", tuple(headers), body)
    frames = p.encode(request)
    assert all(len(f) <= p.MAX_FRAME_BYTES for f in frames)
    assert reassemble(frames, shuffle=True) == request


def test_frames_are_ascii_json_so_length_is_bytes() -> None:
    frames = p.encode(p.Response("r1", 200, (("x", "日本語" * 500),), b"\x00" * 50_000))
    for text in frames:
        assert text.isascii()
        json.loads(text)
        base64.b64decode(json.loads(text)["body"], validate=True)


# --- Tunnel guards in the hello and the welcome -----------------------------------------------

SALT = b"s" * p.BASIC_AUTH_SALT_BYTES
HASHED = p.hash_basic_auth("alice:pw", SALT)


def test_guarded_hello_and_welcome_round_trip_and_list_their_guards() -> None:
    spec = p.TunnelSpec("shop", basic_auth=HASHED, webhook="stripe", webhook_secret="whsec_1")
    hello = p.Hello((spec, p.TunnelSpec(None)))
    assert p.decode(p.encode(hello)[0]) == hello
    assert spec.guards == ("basic_auth", "webhook:stripe")
    assert p.TunnelSpec("plain").guards == ()
    welcome = p.Welcome((p.TunnelInfo("shop", None, "https://x/t/shop/", spec.guards),))
    assert p.decode(p.encode(welcome)[0]) == welcome


def test_custom_urls_round_trip_within_their_limits() -> None:
    urls = tuple(f"https://h{i}.mycompany.test/" for i in range(p.MAX_CUSTOM_URLS + 2))
    welcome = p.Welcome((p.TunnelInfo("shop", None, "https://x/t/shop/", (), urls),))
    decoded = p.decode(p.encode(welcome)[0])
    assert isinstance(decoded, p.Welcome)
    assert decoded.tunnels[0].custom_urls == urls[: p.MAX_CUSTOM_URLS]
    plain = json.loads(p.encode(p.Welcome((p.TunnelInfo("a", None, "https://x/t/a/"),)))[0])
    assert "custom_urls" not in plain["tunnels"][0]


@pytest.mark.parametrize(
    "custom_urls",
    [
        pytest.param("https://a.test/", id="not a list"),
        pytest.param([7], id="not strings"),
        pytest.param(["https://" + "a" * p.MAX_URL_LENGTH], id="over the length limit"),
    ],
)
def test_bad_custom_urls_in_a_welcome_are_refused(custom_urls: object) -> None:
    frame = json.loads(p.encode(p.Welcome((p.TunnelInfo("a", None, "https://x/t/a/"),)))[0])
    frame["tunnels"][0]["custom_urls"] = custom_urls
    with pytest.raises(p.ProtocolError, match="custom_urls"):
        p.decode(json.dumps(frame))


def test_a_plain_hello_reads_as_before_guards_existed() -> None:
    assert json.loads(p.encode(p.Hello((p.TunnelSpec("a"),)))[0])["tunnels"] == [{"name": "a"}]


def test_basic_auth_leaves_the_agent_only_as_a_salted_hash() -> None:
    iterations, salt, digest = p.parse_basic_auth_hash(HASHED)
    assert (iterations, salt) == (p.BASIC_AUTH_ITERATIONS, SALT)
    assert digest == p.derive_basic_auth(b"alice:pw", SALT, iterations)
    assert "alice" not in HASHED
    assert p.hash_basic_auth("alice:pw", b"t" * p.BASIC_AUTH_SALT_BYTES) != HASHED


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"basic_auth": "alice:pw"}, id="a password instead of a hash"),
        pytest.param({"basic_auth": HASHED.replace("10000", "999")}, id="too few rounds"),
        pytest.param({"basic_auth": HASHED.replace("10000", "1000000")}, id="too many rounds"),
        pytest.param(
            {"basic_auth": p.hash_basic_auth("a:b", b"short")}, id="salt shorter than required"
        ),
        pytest.param({"webhook": "github"}, id="provider without secret"),
        pytest.param({"webhook_secret": "s3cret"}, id="secret without provider"),
        pytest.param({"webhook": "gitlab", "webhook_secret": "s3cret"}, id="unknown provider"),
        pytest.param({"webhook": "github", "webhook_secret": ""}, id="empty secret"),
        pytest.param(
            {"webhook": "github", "webhook_secret": "s" * (p.MAX_WEBHOOK_SECRET_LENGTH + 1)},
            id="secret one past the limit",
        ),
        pytest.param({"webhook": "github", "webhook_secret": "s3cret\n"}, id="control character"),
    ],
)
def test_invalid_guards_are_refused_without_repeating_secrets(fields: dict[str, str]) -> None:
    with pytest.raises(ProtocolError) as refused:
        p.TunnelSpec("shop", **fields)
    assert "s3cret" not in str(refused.value) and "alice:pw" not in str(refused.value)
    hello = {"type": "hello", "version": p.PROTOCOL_VERSION, "tunnels": [{"name": "a", **fields}]}
    with pytest.raises(ProtocolError):
        p.decode(json.dumps(hello))


def test_the_longest_secret_fits_and_guard_fields_must_be_strings() -> None:
    p.TunnelSpec("a", webhook="slack", webhook_secret="s" * p.MAX_WEBHOOK_SECRET_LENGTH)
    hello = {"type": "hello", "version": 1, "tunnels": [{"name": "a", "webhook": ["github"]}]}
    with pytest.raises(ProtocolError, match="string guards"):
        p.decode(json.dumps(hello))


def test_a_full_hello_of_guarded_tunnels_fits_in_one_frame() -> None:
    spec = p.TunnelSpec(
        "a" * 63,
        basic_auth=HASHED,
        webhook="github",
        webhook_secret="s" * p.MAX_WEBHOOK_SECRET_LENGTH,
    )
    assert len(p.encode(p.Hello((spec,) * p.MAX_TUNNELS_PER_CONNECTION))) == 1


def test_secrets_stay_out_of_reprs() -> None:
    spec = p.TunnelSpec("shop", basic_auth=HASHED, webhook="github", webhook_secret="s3cret")
    for text in (repr(spec), repr(p.Hello((spec,)))):
        assert "s3cret" not in text and HASHED not in text
