"""Agent settings: flag > environment > config file > default; the file is private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hatchway.config import (
    DEFAULT_SERVER,
    ConfigError,
    config_path,
    load_config,
    resolve_settings,
    update_config,
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
