"""Address rules and rate limits as users give them (flags, config tables, the Python API),
what the hello asks the relay to confirm, and tokens kept out of server URLs. No relay."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hatchway import cli, protocol
from hatchway.config import (
    QUERY_TOKEN_NOTE,
    ConfigError,
    named_tunnels,
    resolve_settings,
    set_value,
    split_query_token,
)
from hatchway.serving.tunnels import (
    OptionError,
    TunnelOptions,
    access_rules,
    describe,
    tunnel_options,
)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("HATCHWAY_CONFIG", str(path))
    for name in ("HATCHWAY_SERVER", "HATCHWAY_TOKEN", "HATCHWAY_INSPECT"):
        monkeypatch.delenv(name, raising=False)
    return path


def flags(*argv: str) -> TunnelOptions:
    args = cli.build_parser().parse_args(["http", *argv])
    return cli._tunnels(args)[0]


def test_cidr_and_rate_flags_fill_the_access_rules_the_hello_carries() -> None:
    options = flags(
        "3000",
        "--allow-cidr",
        "203.0.113.0/24",
        "--allow-cidr",
        "2001:db8::/32",
        "--deny-cidr",
        "10.0.0.0/8",
        "--rate-limit",
        "20/s",
        "--rate-burst",
        "40",
    )
    assert options.access == protocol.AccessRules(
        allow=("203.0.113.0/24", "2001:db8::/32"), deny=("10.0.0.0/8",), rate=20.0, burst=40
    )
    spec = options.spec()
    assert spec.access == options.access
    # The agent serves the tunnel only if the relay's welcome confirms both guards.
    assert spec.guards == ("ip_rules", "rate_limit")
    assert flags("3000").access == protocol.AccessRules()
    assert flags("3000").spec().guards == ()


@pytest.mark.parametrize(
    ("given", "rate", "burst"),
    [
        ("20/s", 20.0, 20),
        ("600/m", 10.0, 600),
        ("20/m", 20 / 60, 20),  # twenty at once, then one every three seconds
        (" 1.5 / s ", 1.5, 2),
        (5, 5.0, 5),  # the Python API may give a number: per second
    ],
)
def test_a_rate_limit_is_per_second_or_minute_with_a_window_as_its_burst(
    given: str | float, rate: float, burst: int
) -> None:
    rules = access_rules(rate_limit=given)
    assert rules.rate == pytest.approx(rate) and rules.burst == burst


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"rate_limit": "20"}, "20/s or 600/m"),
        ({"rate_limit": "20/h"}, "20/s or 600/m"),
        ({"rate_limit": "0/s"}, "20/s or 600/m"),
        ({"rate_limit": "20001/s"}, "10000"),
        ({"rate_burst": 4}, "goes with rate-limit"),
        ({"rate_limit": "2/s", "rate_burst": 0}, "at least 1"),
        ({"allow_cidr": ["203.0.113.0/33"]}, "not an address range"),
        ({"deny_cidr": ["example.com"]}, "not an address range"),
        ({"allow_cidr": [f"10.{i}.0.0/16" for i in range(33)]}, "at most 32"),
    ],
)
def test_unusable_access_options_name_the_problem(changes: dict, says: str) -> None:
    with pytest.raises(OptionError, match=says):
        tunnel_options(3000, **changes)


def test_one_range_given_as_a_string_is_one_range() -> None:
    assert access_rules(allow_cidr="198.51.100.7").allow == ("198.51.100.7/32",)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["http", "3000", "--allow-cidr", "nope"], "not an address range"),
        (["http", "3000", "--rate-limit", "fast"], "rate-limit"),
        (["http", "3000", "--rate-burst", "3"], "rate-burst"),
    ],
)
def test_bad_access_flags_are_usage_errors(
    argv: list[str], says: str, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*argv, "--token", "hw_x"]) == 2
    assert says in capsys.readouterr().err


def test_named_tunnels_carry_access_rules(config: Path) -> None:
    config.write_text(
        "[tunnels.web]\n"
        'target = "3000"\n'
        'allow_cidr = ["203.0.113.0/24", "::1"]\n'
        'deny_cidr = "203.0.113.9"\n'
        'rate_limit = "120/m"\n'
        "rate_burst = 10\n"
    )
    (web,) = named_tunnels(["web"])
    assert web.access == protocol.AccessRules(
        allow=("203.0.113.0/24", "::1/128"), deny=("203.0.113.9/32",), rate=2.0, burst=10
    )
    assert describe(web)["allow_cidr"] == ["203.0.113.0/24", "::1/128"]
    assert describe(web)["rate_limit"] == "2/s burst 10"


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('rate_burst = "10"\nrate_limit = "1/s"', "rate_burst must be a whole number"),
        ("rate_limit = 20", "rate_limit must be a string"),
        ('allow_cidr = ["bad"]', "not an address range"),
    ],
)
def test_bad_access_keys_in_the_file_name_the_table(config: Path, table: str, says: str) -> None:
    config.write_text(f'[tunnels.web]\ntarget = "3000"\n{table}\n')
    with pytest.raises(ConfigError, match=says) as raised:
        named_tunnels(["web"])
    assert "[tunnels.web]" in str(raised.value)


def test_a_token_in_the_server_url_moves_to_the_header_with_a_warning(config: Path) -> None:
    assert split_query_token("wss://r.test/connect?token=hw_q&x=1") == (
        "wss://r.test/connect?x=1",
        "hw_q",
    )
    assert split_query_token("wss://r.test/connect") == ("wss://r.test/connect", None)
    settings = resolve_settings("wss://r.test/connect?token=hw_secret-q")
    assert settings.server == "wss://r.test/connect"
    assert settings.token == "hw_secret-q"
    assert settings.notes == (QUERY_TOKEN_NOTE,)
    assert "hw_secret-q" not in repr(settings)
    # The header form (flag, environment, file) wins; the URL's copy is still dropped.
    settings = resolve_settings("wss://r.test/connect?token=hw_q", "hw_flag")
    assert (settings.server, settings.token) == ("wss://r.test/connect", "hw_flag")
    assert resolve_settings("wss://r.test/connect").notes == ()


def test_the_config_file_refuses_a_server_url_holding_a_token(config: Path) -> None:
    with pytest.raises(ConfigError, match="add-token"):
        set_value("server", "wss://r.test/connect?token=hw_q")
    assert not config.exists()


def test_add_token_reads_the_token_from_stdin_to_keep_it_out_of_the_history(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hw_from-stdin-0123456789\n"))
    assert cli.main(["config", "add-token"]) == 0
    assert 'token = "hw_from-stdin-0123456789"' in config.read_text()
    assert "hw_from-stdin-0123456789" not in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["config", "add-token", "-"]) == 2  # nothing typed: refused, file kept
    assert 'token = "hw_from-stdin-0123456789"' in config.read_text()
