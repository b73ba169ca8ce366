"""Where the agent's settings come from, and the config file that holds them.

Every setting resolves the same way, for the CLI and the Python API alike:

    command-line flag (or API argument)  >  environment variable  >  config file  >  default

========  ======================  =====================  ===========================
setting   flag / argument         environment            default
========  ======================  =====================  ===========================
server    ``--server``            ``HATCHWAY_SERVER``    ``ws://127.0.0.1:8080/connect``
token     ``--token``             ``HATCHWAY_TOKEN``     none (the relay refuses)
inspect   ``--inspect ADDR``,     ``HATCHWAY_INSPECT``   ``127.0.0.1:4040``
          ``--no-inspect``        (``off`` disables)
rotate    ``--rotate-after S``    ``HATCHWAY_ROTATE_     ``CONNECTION_ROTATE_SECONDS``
                                  SECONDS``              (1 h 50 min; not in the file)
stop      ``--stop-grace S``      ``HATCHWAY_STOP_       ``STOP_GRACE_SECONDS``
grace                             GRACE``                (25 s; not in the file)
========  ======================  =====================  ===========================

The file is ``$HATCHWAY_CONFIG``, else ``$XDG_CONFIG_HOME/hatchway/config.toml``, else
``~/.config/hatchway/config.toml``. It holds the token, so it is written mode 0600 (atomically:
a crash leaves the old file or the new one). Named tunnels live in ``[tunnels.<label>]`` tables
whose keys are the ``hatchway http`` options with underscores::

    server = "wss://connect.t.example.com"
    token = "hw_..."
    [tunnels.web]
    target = "3000"
    subdomain = "myweb"
    [tunnels.api]
    target = "localhost:8000"
    host_header = "rewrite"
    basic_auth = "user:pass"
    request_header_add = ["X-Env: dev"]
    large_responses = "redirect"
    allow_cidr = ["203.0.113.0/24"]
    rate_limit = "20/s"
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hatchway import protocol
from hatchway.serving.session import MAX_STOP_GRACE_SECONDS, STOP_GRACE_SECONDS
from hatchway.serving.tunnels import OptionError, TunnelOptions, tunnel_options
from hatchway.ui.limits import MAX_INSPECT_MEMORY_BYTES

DEFAULT_SERVER = "ws://127.0.0.1:8080/connect"
"""Where ``hatchway-local`` listens by default."""

DEFAULT_INSPECT = "127.0.0.1:4040"
"""Where the inspector listens by default (it moves up to a free port if this one is taken)."""

SERVER_ENV = "HATCHWAY_SERVER"
TOKEN_ENV = "HATCHWAY_TOKEN"
INSPECT_ENV = "HATCHWAY_INSPECT"
CONFIG_ENV = "HATCHWAY_CONFIG"
ROTATE_ENV = "HATCHWAY_ROTATE_SECONDS"
STOP_GRACE_ENV = "HATCHWAY_STOP_GRACE"

MIN_ROTATE_SECONDS = 1.0
"""Shortest connection rotation interval accepted (tests and soak runs use a few seconds): a
new connection costs a hello and a welcome, so anything shorter is a busy loop."""

OFF_VALUES = frozenset({"off", "false", "no", "0", "none"})
"""Values of ``inspect`` (file or environment) that turn the inspector off."""

SETTABLE_KEYS = ("server", "token", "inspect")
"""Top-level keys ``hatchway config set`` writes."""

SECRET_KEYS = frozenset({"token", "webhook_secret"})
"""Keys whose values ``hatchway config show`` masks."""

MASK_VISIBLE_CHARS = 4
"""Leading characters of a secret that ``config show`` keeps, so a user can tell tokens apart."""

TUNNEL_STRING_KEYS = (
    "target",
    "subdomain",
    "host_header",
    "basic_auth",
    "verify_webhook",
    "webhook_secret",
    "large_responses",
    "rate_limit",
)
TUNNEL_LIST_KEYS = (
    "request_header_add",
    "request_header_remove",
    "response_header_add",
    "response_header_remove",
    "allow_cidr",
    "deny_cidr",
)
TUNNEL_INT_KEYS = ("rate_burst",)
TUNNEL_BOOL_KEYS = ("pool", "gzip", "stream")
"""What a ``[tunnels.<label>]`` table may hold: the ``hatchway http`` options."""

QUERY_TOKEN_NOTE = (
    "the server URL carried the token in its query string (?token=), where proxies and access "
    "logs record it; the agent sent it as an Authorization header instead. Give it with "
    "--token, HATCHWAY_TOKEN or `hatchway config add-token`, and drop it from the URL"
)
"""Said when a token arrives in the server URL: the relay accepts that form (for clients that
cannot set headers), but the agent never uses it."""

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(ValueError):
    """The config file, or a setting, cannot be used; the message says where and why."""


def config_path() -> Path:
    """``$HATCHWAY_CONFIG``, else ``$XDG_CONFIG_HOME/hatchway/config.toml``, else ~/.config."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hatchway" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from None
    # Imported only when there is a file to read: its modules stay for the agent's whole life.
    import tomllib

    with handle:
        try:
            return tomllib.load(handle)
        except (tomllib.TOMLDecodeError, OSError) as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc}") from None


# --- Writing ----------------------------------------------------------------------------------


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c >= " " and c != "\x7f" else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list) and not any(isinstance(v, dict) for v in value):
        items = [_toml_value(v) for v in value]
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    return None  # dates and arrays of tables: not something this file holds


def dump_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML text for ``data``: its plain values, then each table under its dotted name."""
    blocks: list[str] = []
    plain = [
        f"{_toml_key(key)} = {text}"
        for key, value in data.items()
        if not isinstance(value, dict) and (text := _toml_value(value)) is not None
    ]
    if plain or (prefix and not data):
        blocks.append("\n".join([f"[{prefix[:-1]}]"] * bool(prefix) + plain))
    for key, value in data.items():
        if isinstance(value, dict):
            blocks.append(dump_toml(value, f"{prefix}{_toml_key(key)}.").rstrip("\n"))
    return "\n\n".join(b for b in blocks if b) + "\n" if blocks else ""


def write_config(data: Mapping[str, Any], path: Path | None = None) -> Path:
    """Replace the config file with ``data``, mode 0600 from the first byte, atomically."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Imported here, where the config is written (a command, never a running agent): it brings
    # ``shutil``, ``random`` and compression modules the agent would otherwise not load.
    import tempfile

    descriptor, partial = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
            handle.write(dump_toml(data))
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
    return path


def update_config(path: Path | None = None, **values: str) -> Path:
    """Merge top-level settings into the config file; every other key and table is kept."""
    path = path or config_path()
    return write_config({**load_config(path), **values}, path)


def set_value(key: str, value: str, path: Path | None = None) -> Path:
    """``hatchway config set KEY VALUE``, validated before anything is written."""
    if key not in SETTABLE_KEYS:
        raise ConfigError(f"unknown setting {key!r}; settable: {', '.join(SETTABLE_KEYS)}")
    if key == "server" and not value.startswith(("ws://", "wss://")):
        raise ConfigError(
            f"server must be the relay's WebSocket URL (ws:// or wss://), not {value[:80]!r}"
        )
    if key == "server" and split_query_token(value)[1] is not None:
        raise ConfigError(
            "server: leave the token out of the URL (query strings end up in logs); save it "
            "with `hatchway config add-token TOKEN`"
        )
    if key == "token" and (not value.strip() or any(c.isspace() for c in value)):
        raise ConfigError("token must be one word, as the relay's operator gave it")
    return update_config(path, **{key: value})


def mask(secret: str) -> str:
    """Enough of a secret to recognise it, never enough to use it."""
    if len(secret) <= MASK_VISIBLE_CHARS * 2:
        return "****"
    return f"{secret[:MASK_VISIBLE_CHARS]}…({len(secret)} chars)"


def masked(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with every secret masked (tokens, webhook secrets, basic-auth passwords)."""
    shown: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            shown[key] = masked(value)
        elif key in SECRET_KEYS and isinstance(value, str):
            shown[key] = mask(value)
        elif key == "basic_auth" and isinstance(value, str):
            shown[key] = value.partition(":")[0] + ":****"
        else:
            shown[key] = value
    return shown


# --- Resolving --------------------------------------------------------------------------------


def split_query_token(server: str) -> tuple[str, str | None]:
    """``server`` without a ``token`` query parameter, and that token (None if it had none)."""
    parts = urllib.parse.urlsplit(server)
    if not parts.query:
        return server, None
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    tokens = [value for name, value in pairs if name == "token"]
    if not tokens:
        return server, None
    kept = urllib.parse.urlencode([(n, v) for n, v in pairs if n != "token"])
    return urllib.parse.urlunsplit(parts._replace(query=kept)), tokens[-1] or None


@dataclass(frozen=True)
class Settings:
    server: str
    token: str | None
    inspect: str | None = DEFAULT_INSPECT
    """Where the inspector listens; None: not at all."""
    notes: tuple[str, ...] = ()
    """Warnings for the user about how the settings were given (a token in a URL)."""

    def __repr__(self) -> str:
        token = mask(self.token) if self.token else None
        return f"Settings(server={self.server!r}, token={token!r}, inspect={self.inspect!r})"


def _file_string(file: Mapping[str, Any], key: str) -> str | None:
    value = file.get(key)
    if value is False:
        return "off"
    return value if isinstance(value, str) else None


def resolve_settings(
    server: str | None = None, token: str | None = None, inspect: str | None = None
) -> Settings:
    """Flag > environment > config file > default, for each setting on its own.

    ``inspect`` is an address, or ``off`` (what ``--no-inspect`` passes)."""
    file = load_config()
    chosen_inspect = (
        inspect or os.environ.get(INSPECT_ENV) or _file_string(file, "inspect") or DEFAULT_INSPECT
    )
    chosen_server = (
        server or os.environ.get(SERVER_ENV) or _file_string(file, "server") or DEFAULT_SERVER
    )
    # A token in the URL's query string would be logged by every proxy on the way: it moves
    # to the header, and the URL shown and used from here on is without it.
    chosen_server, query_token = split_query_token(chosen_server)
    return Settings(
        server=chosen_server,
        token=token or os.environ.get(TOKEN_ENV) or _file_string(file, "token") or query_token,
        inspect=None if chosen_inspect.strip().lower() in OFF_VALUES else chosen_inspect,
        notes=(QUERY_TOKEN_NOTE,) if query_token is not None else (),
    )


def named_tunnels(
    labels: Sequence[str], every: bool = False, path: Path | None = None
) -> list[TunnelOptions]:
    """The ``[tunnels.<label>]`` tables asked for (all of them with ``every``), validated."""
    path = path or config_path()
    tables = load_config(path).get("tunnels", {})
    if not isinstance(tables, dict) or not all(isinstance(t, dict) for t in tables.values()):
        raise ConfigError(f"{path}: 'tunnels' must hold tables, e.g. [tunnels.web]")
    if not tables:
        raise ConfigError(
            f'{path} defines no tunnels; add e.g.\n  [tunnels.web]\n  target = "3000"'
        )
    wanted = list(tables) if every else list(dict.fromkeys(labels))
    if not wanted:
        raise ConfigError(
            f"name the tunnels to start ({path} defines {', '.join(tables)}) or pass --all"
        )
    unknown = [label for label in wanted if label not in tables]
    if unknown:
        raise ConfigError(
            f"{path} defines no tunnel {unknown[0]!r}; it defines: {', '.join(tables)}"
        )
    return [tunnel_from_table(label, tables[label], path) for label in wanted]


def tunnel_from_table(label: str, table: Mapping[str, Any], path: Path) -> TunnelOptions:
    where = f"{path} [tunnels.{label}]"
    known = (*TUNNEL_STRING_KEYS, *TUNNEL_LIST_KEYS, *TUNNEL_INT_KEYS, *TUNNEL_BOOL_KEYS)
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; a tunnel may set " + ", ".join(known)
        )
    target = table.get("target")
    if isinstance(target, int) and not isinstance(target, bool):
        target = str(target)
    if not isinstance(target, str):
        raise ConfigError(f'{where}: give the local app as target = "3000" or "host:port"')

    def string(key: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string")
        return value

    def strings(key: str) -> list[str]:
        value = table.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where}: {key} must be a list of strings, e.g. ["X-Env: dev"]')
        return value

    def flag(key: str, default: bool = False) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, e.g. {key} = true")
        return value

    def whole(key: str) -> int | None:
        value = table.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}: {key} must be a whole number, e.g. {key} = 40")
        return value

    # The table's label is the tunnel's name unless ``subdomain`` says otherwise: what a
    # user calls [tunnels.web] is what they expect to visit.
    subdomain = string("subdomain")
    if subdomain is None:
        if not protocol.NAME_PATTERN.match(label):
            raise ConfigError(
                f"{where}: {label!r} cannot be a tunnel's name (a DNS label: lowercase letters, "
                'digits, inner hyphens); give one, e.g. subdomain = "web"'
            )
        if label in protocol.RESERVED_NAMES:
            raise ConfigError(
                f"{where}: {label!r} is a name no tunnel may have; give another, e.g. "
                f'subdomain = "{label}-app"'
            )
        subdomain = label
    try:
        return tunnel_options(
            target,
            subdomain=subdomain,
            host_header=string("host_header"),
            request_header_add=strings("request_header_add"),
            request_header_remove=strings("request_header_remove"),
            response_header_add=strings("response_header_add"),
            response_header_remove=strings("response_header_remove"),
            basic_auth=string("basic_auth"),
            verify_webhook=string("verify_webhook"),
            webhook_secret=string("webhook_secret"),
            large_responses=string("large_responses"),
            allow_cidr=strings("allow_cidr"),
            deny_cidr=strings("deny_cidr"),
            rate_limit=string("rate_limit"),
            rate_burst=whole("rate_burst"),
            pool=flag("pool"),
            gzip=flag("gzip", default=True),
            stream=flag("stream"),
            label=label,
        )
    except OptionError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_SIZE_UNITS = {"": 1, "b": 1}
_SIZE_UNITS |= {f"{p}{s}": 1024**n for n, p in enumerate("kmg", 1) for s in ("", "b", "ib")}
"""Sizes count in powers of 1024 whichever way the unit is written (K, KB, KiB...)."""


def parse_inspect_memory(text: str) -> int:
    """``--inspect-memory``: bytes, or a number with K, M or G (powers of 1024), from 1 MiB
    (one large exchange must fit) to ``MAX_INSPECT_MEMORY_BYTES``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ConfigError(f"--inspect-memory: give a size such as 32M or 256MiB, not {text[:40]!r}")
    size = int(float(match.group(1)) * unit)
    if not 1024**2 <= size <= MAX_INSPECT_MEMORY_BYTES:
        raise ConfigError("--inspect-memory: give 1M to 1G (the inspector keeps it in memory)")
    return size


def resolve_rotate_after(flag: float | None) -> float:
    """Seconds between connection rotations: the flag, else ``$HATCHWAY_ROTATE_SECONDS``, else
    the protocol's default, which stays inside the platform's 2 h connection limit."""
    return _seconds(
        flag,
        ("--rotate-after", ROTATE_ENV),
        float(protocol.CONNECTION_ROTATE_SECONDS),
        (MIN_ROTATE_SECONDS, protocol.CONNECTION_ROTATE_SECONDS),
        "the platform closes connections after 2 hours",
    )


def resolve_stop_grace(flag: float | None) -> float:
    """Seconds a stopping agent goes on answering the requests it holds: the flag, else
    ``$HATCHWAY_STOP_GRACE``, else ``STOP_GRACE_SECONDS``."""
    return _seconds(
        flag,
        ("--stop-grace", STOP_GRACE_ENV),
        STOP_GRACE_SECONDS,
        (0.0, MAX_STOP_GRACE_SECONDS),
        "the relay waits no longer than that for an answer",
    )


def _seconds(
    flag: float | None,
    names: tuple[str, str],
    default: float,
    bounds: tuple[float, float],
    why: str,
) -> float:
    """A number of seconds from its flag, else its environment variable (``names``), else
    ``default``; within ``bounds``, else a ``ConfigError`` that names where it came from."""
    text = os.environ.get(names[1])
    where = names[0] if flag is not None else names[1]
    value: float | None = flag
    if value is None and text:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{names[1]}: give a number of seconds, not {text[:40]!r}") from None
    if value is None:
        return default
    low, high = bounds
    if not low <= value <= high:
        raise ConfigError(f"{where}: give {low:g} to {high:g} seconds ({why})")
    return value
