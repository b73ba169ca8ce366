"""hatchway.protocol.b64: pybase64 when installed, the standard library otherwise, with the
same text, bytes and refusals either way."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.protocol import b64


@pytest.fixture(params=["pybase64", "standard library"])
def implementation(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    if request.param == "standard library":
        monkeypatch.setattr(b64, "_fast", None)
    yield request.param


def test_the_fast_codec_is_in_use_where_the_gateway_runs() -> None:
    assert b64.FAST  # the test environment installs the local gateway, which requires it


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 1000, 1 << 20])
def test_encode_is_standard_base64(implementation: str, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert b64.encode(data) == base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize(
    ("text", "strict", "lenient"),
    [
        ("", b"", b""),
        ("YQ==", b"a", b"a"),
        ("YWJj", b"abc", b"abc"),
        ("YWJj=", b"abc", b"abc"),  # excess padding after a full group: the stdlib accepts it
        ("YWJ", None, None),  # missing padding
        ("YW Jj", None, b"abc"),  # a space: skipped only when lenient
        ("YWJj\n", None, b"abc"),
        ("Y=Jj", None, None),
        ("YWJj€", None, None),  # not ASCII
        ("-_-_", None, b""),  # URL-safe alphabet is not standard base64
    ],
)
def test_decode_accepts_what_the_standard_library_accepts(
    implementation: str, text: str, strict: bytes | None, lenient: bytes | None
) -> None:
    for decode, expected in ((b64.decode, strict), (b64.decode_lenient, lenient)):
        if expected is None:
            with pytest.raises((binascii.Error, ValueError)):
                decode(text)
        else:
            assert decode(text) == expected


@given(st.text(alphabet="ABCabc012+/=\n -_", max_size=24))
def test_any_text_decodes_as_the_standard_library_decodes_it(text: str) -> None:
    def standard(strict: bool) -> bytes | str:
        try:
            return binascii.a2b_base64(text, strict_mode=strict)
        except binascii.Error:
            return "refused"

    def ours(decode: object) -> bytes | str:
        try:
            return decode(text)  # type: ignore[operator,no-any-return]
        except (binascii.Error, ValueError):
            return "refused"

    assert ours(b64.decode) == standard(True)
    assert ours(b64.decode_lenient) == standard(False)
