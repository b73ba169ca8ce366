"""Reading the access logs: which lines a query wants, whose tunnel a visitor's line belongs to,
and how a line reads to an operator. Sans-IO: the lines come from CloudWatch Logs
(``adapters.cloudwatch_access_logs``) or from ``hatchway-local`` (its admin API), both written
in the template's formats (``AccessLogSettings``: one JSON object a line, every value a string,
``"-"`` where API Gateway has none).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from hatchway import protocol

NO_VALUE: Final = "-"
"""What API Gateway writes for a ``$context`` variable that has no value."""

PATH_MODE_PREFIX: Final = "/t/"
"""Path mode's prefix: ``/t/<name>/...`` on the API's own URL (as ``visits`` routes it)."""

DEFAULT_SINCE_SECONDS: Final = 3600.0
"""How far back ``hatchway-admin logs`` looks unless told."""

DEFAULT_LIMIT: Final = 100
"""Lines ``hatchway-admin logs`` shows unless told: the latest ones."""

MAX_LIMIT: Final = 10_000
"""Most lines one query returns (CloudWatch pages of up to 10,000 events; the local gateway
keeps 10,000)."""


@dataclass(frozen=True)
class LogQuery:
    """What an operator asks for: the visitors' lines (of one tunnel, or all), or the agents'
    (connects, messages, disconnects), since a time, at most ``limit`` of the latest."""

    tunnel: str | None = None
    agents: bool = False
    since: float = 0.0
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.tunnel is not None and not protocol.NAME_PATTERN.match(self.tunnel):
            raise ValueError(f"{self.tunnel!r} is not a tunnel name")


@dataclass(frozen=True)
class Routing:
    """How visitors' hosts and paths name tunnels on one relay (its ``DomainName`` and
    ``CustomHostnames``)."""

    domain: str = ""
    custom_hostnames: Mapping[str, str] | None = None


def tunnel_of(host: str, path: str, routing: Routing) -> str | None:
    """The tunnel a visitor's request was for, the way the relay routes it: a custom hostname,
    then ``<name>.<domain>``, then path mode's ``/t/<name>/``; None if none of them."""
    host = host.lower().rsplit(":", 1)[0] if "]" not in host else host.lower()
    custom = (routing.custom_hostnames or {}).get(host)
    if custom is not None:
        return custom
    domain = routing.domain.lower()
    if domain and host.endswith("." + domain):
        label = host[: -len(domain) - 1]
        if "." not in label and protocol.NAME_PATTERN.match(label):
            return label
    if path.startswith(PATH_MODE_PREFIX):
        name = path[len(PATH_MODE_PREFIX) :].partition("/")[0]
        if protocol.NAME_PATTERN.match(name):
            return name
    return None


def parse(line: str) -> dict[str, str] | None:
    """One access-log line as its fields, or None if it is not one (a blank or foreign line)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or "requestId" not in entry:
        return None
    return {str(k): str(v) for k, v in entry.items()}


def is_agent_line(entry: Mapping[str, str]) -> bool:
    """A WebSocket API line (it names a connection), rather than a visitor's request."""
    return "connectionId" in entry


def epoch_seconds(entry: Mapping[str, str]) -> float:
    """When the request or message arrived (``time``: epoch milliseconds), 0 if unknown."""
    try:
        return int(entry.get("time", NO_VALUE)) / 1000
    except ValueError:
        return 0.0


def select(lines: Iterable[str], query: LogQuery, routing: Routing) -> list[dict[str, str]]:
    """The entries ``query`` wants, oldest first: at most ``query.limit`` of the latest."""
    chosen = []
    for line in lines:
        entry = parse(line)
        if entry is None or is_agent_line(entry) != query.agents:
            continue
        if epoch_seconds(entry) < query.since:
            continue
        any_tunnel = query.tunnel is None or query.agents
        if not any_tunnel and tunnel_of(entry.get("host", ""), entry.get("path", ""), routing) != (
            query.tunnel
        ):
            continue
        chosen.append(entry)
    chosen.sort(key=epoch_seconds)
    return chosen[-query.limit :]


def filter_pattern(query: LogQuery, routing: Routing) -> str:
    """A CloudWatch Logs filter pattern that keeps at least the lines ``query`` wants (``select``
    then decides): the tunnel's name and its custom hostnames as quoted terms, any of them."""
    if query.tunnel is None or query.agents:
        return ""
    hostnames = (routing.custom_hostnames or {}).items()
    terms = [query.tunnel, *sorted(host for host, name in hostnames if name == query.tunnel)]
    if len(terms) == 1:
        return f'"{terms[0]}"'
    return " ".join(f'?"{term}"' for term in terms)


def describe(entry: Mapping[str, str]) -> str:
    """One entry as an operator reads it: time (UTC), source, what, status, latency, and the
    integration's error if there was one."""
    when = dt.datetime.fromtimestamp(epoch_seconds(entry), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    if is_agent_line(entry):
        what = entry.get("route", NO_VALUE)
        what += f"  connection {entry.get('connectionId', NO_VALUE)}"
    else:
        what = f"{entry.get('method', NO_VALUE)} {entry.get('host', NO_VALUE)}"
        what += entry.get("path", NO_VALUE)
    text = (
        f"{when}  {entry.get('ip', NO_VALUE)}  {what}  {entry.get('status', NO_VALUE)}  "
        f"{entry.get('latencyMs', NO_VALUE)} ms  {entry.get('requestId', NO_VALUE)}"
    )
    error = entry.get("integrationError", NO_VALUE)
    return text + (f"  error: {error}" if error not in ("", NO_VALUE) else "")


def as_lines(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """Entries back as JSON lines (``hatchway-admin logs --json``)."""
    return [json.dumps(dict(entry), separators=(",", ":")) for entry in entries]
