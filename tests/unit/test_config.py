"""Agent settings: flag > environment > config file > default; the file is private; the
``hatchway config`` commands never print a secret; named tunnels come from the file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hatchway.cli import main
from hatchway.config import (
    DEFAULT_INSPECT,
    DEFAULT_SERVER,
    ConfigError,
    config_path,
    load_config,
    named_tunnels,
    resolve_settings,
    update_config,
    write_config,
)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "hatchway" / "config.toml"
    monkeypatch.setenv("HATCHWAY_CONFIG", str(path))
    monkeypatch.delenv("HATCHWAY_SERVER", raising=False)
    monkeypatch.delenv("HATCHWAY_TOKEN", raising=False)
    return path


def test_config_location_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HATCHWAY_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "hatchway" / "config.toml"


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        ("ws://flag", "ws://env", "ws://file", "ws://flag"),
        (None, "ws://env", "ws://file", "ws://env"),
        (None, None, "ws://file", "ws://file"),
        (None, None, None, DEFAULT_SERVER),
    ],
)
def test_precedence(
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    env: str | None,
    file: str | None,
    expected: str,
) -> None:
    if env:
        monkeypatch.setenv("HATCHWAY_SERVER", env)
        monkeypatch.setenv("HATCHWAY_TOKEN", "env-token")
    if file:
        update_config(server=file, token="file-token")
    settings = resolve_settings(flag, "flag-token" if flag else None)
    assert settings.server == expected
    assert settings.token == {
        "ws://flag": "flag-token",
        "ws://env": "env-token",
        "ws://file": "file-token",
    }.get(expected)


def test_file_is_private_and_values_round_trip(config: Path) -> None:
    tricky = 'quote " backslash \\ tab \t newline \n unicode ✓'
    update_config(token="hw_abc", server=tricky)
    update_config(token="hw_new")  # merges, keeps the server
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert load_config() == {"token": "hw_new", "server": tricky}


def test_a_broken_file_is_reported_by_name(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("token = [unterminated")
    with pytest.raises(ConfigError, match=str(config)):
        load_config()


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        ("127.0.0.1:5000", "127.0.0.1:6000", "127.0.0.1:7000", "127.0.0.1:5000"),
        ("off", "127.0.0.1:6000", "127.0.0.1:7000", None),  # what --no-inspect passes
        (None, "127.0.0.1:6000", "127.0.0.1:7000", "127.0.0.1:6000"),
        (None, "off", "127.0.0.1:7000", None),
        (None, None, "127.0.0.1:7000", "127.0.0.1:7000"),
        (None, None, False, None),  # inspect = false in the file
        (None, None, None, DEFAULT_INSPECT),
    ],
)
def test_inspector_address_precedence(
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    env: str | None,
    file: str | bool | None,
    expected: str | None,
) -> None:
    monkeypatch.delenv("HATCHWAY_INSPECT", raising=False)
    if env:
        monkeypatch.setenv("HATCHWAY_INSPECT", env)
    if file is not None:
        write_config({"inspect": file})
    assert resolve_settings(inspect=flag).inspect == expected


def test_each_setting_resolves_on_its_own(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    update_config(server="ws://file", token="file-token")
    monkeypatch.setenv("HATCHWAY_TOKEN", "env-token")
    settings = resolve_settings()
    assert (settings.server, settings.token) == ("ws://file", "env-token")
    assert "env-token" not in repr(settings)


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_config_commands_write_a_private_file_and_never_print_the_token(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "hw_0123456789abcdefghij"
    assert run_cli("config", "add-token", token, capsys=capsys)[0] == 0
    assert run_cli("config", "set", "server", "wss://connect.example.test", capsys=capsys)[0] == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert load_config() == {"token": token, "server": "wss://connect.example.test"}
    code, shown, _ = run_cli("config", "show", capsys=capsys)
    assert code == 0 and str(config) in shown and "wss://connect.example.test" in shown
    assert token not in shown and token[:4] in shown
    printed = [run_cli("config", "set", "token", token, capsys=capsys)[1]]
    printed.append(run_cli("config", "path", capsys=capsys)[1])
    assert all(token not in text for text in printed)
    assert printed[1].strip() == str(config)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["config", "set", "server", "http://not-a-websocket"], "ws:// or wss://"),
        (["config", "add-token", "two words"], "one word"),
    ],
)
def test_config_commands_refuse_bad_values_and_write_nothing(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    code, _, err = run_cli(*argv, capsys=capsys)
    assert code == 2 and says in err
    assert not config.exists()


def test_saving_a_setting_keeps_the_named_tunnels(config: Path) -> None:
    tables = {"tunnels": {"web": {"target": "3000", "request_header_add": ["X-A: 1", "X-B: 2"]}}}
    write_config({"server": "ws://old", **tables})
    update_config(server="ws://new")
    assert load_config() == {"server": "ws://new", **tables}


def test_show_masks_every_secret(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(
        {
            "token": "hw_secret-token-123456",
            "tunnels": {
                "api": {
                    "target": "8000",
                    "basic_auth": "alice:pa55word",
                    "verify_webhook": "github",
                    "webhook_secret": "gh-webhook-secret",
                }
            },
        }
    )
    shown = run_cli("config", "show", capsys=capsys)[1]
    assert "alice" in shown and "github" in shown
    for secret in ("hw_secret-token-123456", "pa55word", "gh-webhook-secret"):
        assert secret not in shown


NAMED = {
    "tunnels": {
        "web": {"target": "3000", "subdomain": "myweb"},
        "api": {
            "target": "localhost:8000",
            "subdomain": "myapi",  # "api" itself is a name no tunnel may have
            "host_header": "rewrite",
            "basic_auth": "user:pass",
            "response_header_remove": ["Server"],
            "large_responses": "redirect",
            "gzip": False,
            "stream": True,
        },
        "hook": {"target": 9000, "verify_webhook": "stripe", "webhook_secret": "whsec_x"},
    }
}


def test_named_tunnels_are_read_from_the_file(config: Path) -> None:
    write_config(NAMED)
    web, api = named_tunnels(["web", "api"])
    assert (web.label, web.target.port, web.subdomain) == ("web", 3000, "myweb")
    assert (api.target.host, api.host_header, api.basic_auth) == (
        "localhost",
        "rewrite",
        "user:pass",
    )
    assert api.response_header_remove == ("Server",)
    assert (web.large_responses, api.large_responses) == ("refuse", "redirect")
    assert api.spec().large_responses == "redirect"
    assert (web.spec().gzip, api.spec().gzip) == (True, False)
    assert (web.spec().stream, api.spec().stream) == (False, True)
    assert [t.label for t in named_tunnels([], every=True)] == ["web", "api", "hook"]
    # A table's label is its tunnel's name unless subdomain gives another.
    assert [t.subdomain for t in named_tunnels([], every=True)] == ["myweb", "myapi", "hook"]


def test_a_named_tunnel_may_join_a_pool(config: Path) -> None:
    write_config({"tunnels": {"shop": {"target": 3000, "subdomain": "shop", "pool": True}}})
    (shop,) = named_tunnels(["shop"])
    assert shop.pool and shop.spec().pool


@pytest.mark.parametrize(
    ("tables", "labels", "says"),
    [
        ({}, ["web"], "defines no tunnels"),
        (NAMED, ["nope"], "defines no tunnel 'nope'; it defines: web, api, hook"),
        (NAMED, [], "name the tunnels to start"),
        ({"tunnels": {"x": {"target": "3000", "colour": "red"}}}, ["x"], "unknown key 'colour'"),
        ({"tunnels": {"x": {"subdomain": "a"}}}, ["x"], "target"),
        ({"tunnels": {"x": {"target": "3000", "subdomain": 5}}}, ["x"], "subdomain must be"),
        ({"tunnels": {"x": {"target": "3000", "host_header": "a b"}}}, ["x"], "host-header"),
        (
            {"tunnels": {"x": {"target": "3000", "request_header_add": [1]}}},
            ["x"],
            "list of strings",
        ),
        (
            {"tunnels": {"x": {"target": "3000", "verify_webhook": "github"}}},
            ["x"],
            "go together",
        ),
        ({"tunnels": {"x": {"target": "3000", "basic_auth": "nopass"}}}, ["x"], "user:password"),
        (
            {"tunnels": {"x": {"target": "3000", "large_responses": "stream"}}},
            ["x"],
            "large-responses: give redirect or refuse",
        ),
        ({"tunnels": {"x": {"target": "3000", "pool": "yes"}}}, ["x"], "true or false"),
        ({"tunnels": {"My App": {"target": "3000"}}}, ["My App"], "cannot be a tunnel's name"),
        ({"tunnels": {"admin": {"target": "3000"}}}, ["admin"], "a name no tunnel may have"),
    ],
)
def test_named_tunnel_errors_name_the_file_and_the_problem(
    config: Path, tables: dict[str, object], labels: list[str], says: str
) -> None:
    write_config(tables)
    with pytest.raises(ConfigError) as refused:
        named_tunnels(labels)
    assert says in str(refused.value) and str(config) in str(refused.value)
