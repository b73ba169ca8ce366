"""Custom hostnames as operators write them: ``HOSTNAME=TUNNEL`` pairs."""

from __future__ import annotations

import pytest

from hatchway_relay.hostnames import (
    MAX_CUSTOM_HOSTNAMES,
    InvalidHostnames,
    hostnames_of,
    parse_custom_hostnames,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("api.mycompany.com=myapp", {"api.mycompany.com": "myapp"}),
        (
            " API.MyCompany.com.=myapp ,hooks.mycompany.com=myapp  b.example.org=b ",
            {"api.mycompany.com": "myapp", "hooks.mycompany.com": "myapp", "b.example.org": "b"},
        ),
        (["x.example.com=a", "y.example.com=b"], {"x.example.com": "a", "y.example.com": "b"}),
    ],
)
def test_pairs_are_read_and_normalised(text: str | list[str], expected: dict[str, str]) -> None:
    assert parse_custom_hostnames(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("api.mycompany.com", "must read HOSTNAME=TUNNEL"),
        ("=myapp", "must read HOSTNAME=TUNNEL"),
        ("api.mycompany.com=", "must read HOSTNAME=TUNNEL"),
        ("*.mycompany.com=myapp", "is not a hostname"),
        ("localhost=myapp", "is not a hostname"),
        ("a_b.mycompany.com=myapp", "is not a hostname"),
        (("a" * 63 + ".") * 4 + "com=myapp", "is not a hostname"),
        ("api.mycompany.com=My_App", "is not a tunnel name"),
        ("a.example.com=x a.example.com=y", "listed twice"),
        (
            " ".join(f"h{i}.example.com=x" for i in range(MAX_CUSTOM_HOSTNAMES + 1)),
            f"at most {MAX_CUSTOM_HOSTNAMES}",
        ),
    ],
)
def test_what_cannot_be_served_is_refused_with_the_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidHostnames, match=says):
        parse_custom_hostnames(text)


def test_the_limit_itself_is_accepted() -> None:
    text = " ".join(f"h{i}.example.com=x" for i in range(MAX_CUSTOM_HOSTNAMES))
    assert len(parse_custom_hostnames(text)) == MAX_CUSTOM_HOSTNAMES


def test_a_tunnels_hostnames_are_listed_sorted() -> None:
    mapping = {"z.example.com": "a", "b.example.com": "a", "c.example.com": "other"}
    assert hostnames_of("a", mapping) == ("b.example.com", "z.example.com")
    assert hostnames_of("none", mapping) == ()
