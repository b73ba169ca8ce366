"""Where the agent's settings come from: flag, else environment, else the config file, else the
default. The config file holds the server URL and the token, so it is written mode 0600."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER = "ws://127.0.0.1:8080/connect"
"""Where ``hatchway-local`` listens by default."""

SERVER_ENV = "HATCHWAY_SERVER"
TOKEN_ENV = "HATCHWAY_TOKEN"
CONFIG_ENV = "HATCHWAY_CONFIG"


class ConfigError(ValueError):
    """The config file exists but cannot be read."""


def config_path() -> Path:
    """``$HATCHWAY_CONFIG``, else ``$XDG_CONFIG_HOME/hatchway/config.toml``, else ~/.config."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hatchway" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, object]:
    path = path or config_path()
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def update_config(path: Path | None = None, **values: str) -> Path:
    """Merge top-level string settings into the config file; other keys are kept."""
    path = path or config_path()
    merged = {**load_config(path), **values}
    lines = []
    for key, value in merged.items():
        if isinstance(value, str):
            lines.append(f"{key} = {_toml_string(value)}")
        elif isinstance(value, bool | int | float):
            lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Settings:
    server: str
    token: str | None


def resolve_settings(server: str | None = None, token: str | None = None) -> Settings:
    """Flag > environment > config file > default."""
    file = load_config()
    file_server = file.get("server") if isinstance(file.get("server"), str) else None
    file_token = file.get("token") if isinstance(file.get("token"), str) else None
    return Settings(
        server=server or os.environ.get(SERVER_ENV) or file_server or DEFAULT_SERVER,  # type: ignore[arg-type]
        token=token or os.environ.get(TOKEN_ENV) or file_token,  # type: ignore[arg-type]
    )
