"""The local gateway's access logs, written as API Gateway writes the stack's: the very formats
``template.yaml`` gives its APIs (``AccessLogSettings``), each ``$context`` variable put in
from what the gateway knows of a visitor request or an agent's connect, message or disconnect.
One JSON line each, to a file (rotated once it grows past a limit), to listeners
(``make cost`` measures them) and to a bounded memory that ``hatchway-admin --local logs``
reads through the admin API.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from hatchway_local.integrations import stack_resources
from hatchway_relay.access_logs import NO_VALUE

KEPT_LINES = 10_000
"""Lines kept in memory for ``hatchway-admin --local logs`` (about 3 MB)."""

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Past this the access-log file is renamed to ``<file>.1`` (replacing the one before) and a
new one started: a gateway left running does not fill the disk."""

_VARIABLE = re.compile(r"\$context\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)")
"""A ``$context`` variable in a format: dotted names (``identity.sourceIp``)."""

_STAGES = {
    "visitors": "HttpApi",
    "agents": "WebSocketStage",
    "visitor_sockets": "VisitorSocketStage",
}
"""Which template resource carries each API's ``AccessLogSettings``."""


@dataclass(frozen=True)
class AccessLogFormats:
    """The template's formats: the HTTP API's (visitors), the agents' WebSocket API's and the
    visitor-socket API's (the agents' format when the template gives it none)."""

    visitors: str
    agents: str
    visitor_sockets: str = ""

    def __post_init__(self) -> None:
        if not self.visitor_sockets:
            object.__setattr__(self, "visitor_sockets", self.agents)


def load_formats(text: str | None = None) -> AccessLogFormats:
    """The formats from the stack's template (``text``, else the one this package carries)."""
    resources = stack_resources(text)
    found = {}
    for kind, resource in _STAGES.items():
        if resource not in resources or "AccessLogSettings" not in resources[resource].get(
            "Properties", {}
        ):
            continue  # a template from before the visitor-socket API
        setting = resources[resource]["Properties"]["AccessLogSettings"]
        # On in the template unless its parameter turns it off: the settings are the If's first
        # branch.
        settings = setting["Fn::If"][1] if "Fn::If" in setting else setting
        found[kind] = str(settings["Format"])
    return AccessLogFormats(**found)


def render(text: str, context: Mapping[str, object]) -> str:
    """``text`` with each ``$context.<name>`` replaced by ``context[name]``: escaped to stay
    inside its JSON string, ``-`` where there is no value (as API Gateway writes it)."""
    pieces = _pieces(text)
    out = [pieces[0]]
    for index in range(1, len(pieces), 2):
        out.append(_json_string_content(context.get(pieces[index])))
        out.append(pieces[index + 1])
    return "".join(out)


@functools.lru_cache(maxsize=8)
def _pieces(text: str) -> tuple[str, ...]:
    """``text`` split once into literal text and variable names, alternating (literal first
    and last): the formats are few and a line is written for every request."""
    return tuple(_VARIABLE.split(text))


_NEEDS_JSON_ESCAPE = re.compile(r'["\\\x00-\x1f\x80-\U0010ffff]')
"""What ``json.dumps`` would change in a string (with ``ensure_ascii``, everything beyond ASCII)."""


def _json_string_content(value: object) -> str:
    if value is None or value == "":
        return NO_VALUE
    text = str(value)
    if _NEEDS_JSON_ESCAPE.search(text) is None:  # ids, addresses, numbers: most values
        return text
    return json.dumps(text)[1:-1]


@dataclass
class VisitorOutcome:
    """What a visitor request's line needs besides the request and the answer: its id (the
    one its event carries), when it arrived, and how the integration failed, if it did."""

    request_id: str
    received: float
    integration_error: str | None = None


def visitor_context(
    request: web.BaseRequest, response: web.StreamResponse, outcome: VisitorOutcome
) -> dict[str, object]:
    """The HTTP API's ``$context`` for one visitor request, answered just now."""
    body = getattr(response, "body", None)
    received = outcome.received
    return {
        "requestId": outcome.request_id,
        "requestTimeEpoch": int(received * 1000),
        "identity.sourceIp": request.remote or "",
        "domainName": request.headers.get("Host", "").rsplit(":", 1)[0],
        "httpMethod": request.method,
        "path": request.raw_path.split("?", 1)[0],
        "status": response.status,
        "responseLatency": round((time.time() - received) * 1000),
        "responseLength": len(body) if isinstance(body, bytes | bytearray) else 0,
        "integration.error": outcome.integration_error,
    }


def agent_context(
    event: Mapping[str, Any],
    route: str,
    status: int,
    started: float,
    finished: float,
    integration_error: str | None,
) -> dict[str, object]:
    """The WebSocket API's ``$context`` for one connect, message or disconnect (``event`` is
    the one the gateway built for it; ``route`` the route it took)."""
    context = event["requestContext"]
    return {
        "requestId": context["requestId"],
        "requestTimeEpoch": context["requestTimeEpoch"],
        "identity.sourceIp": context["identity"]["sourceIp"],
        "domainName": context["domainName"],
        "routeKey": route,
        "eventType": context["eventType"],
        "connectionId": context["connectionId"],
        "status": status,
        "integrationLatency": round((finished - started) * 1000),
        "integration.error": integration_error,
    }


class AccessLog:
    """Where the gateway's access-log lines go. Thread-safe: lines come from the event loop
    and, for the operator's reads, from the admin API's threads."""

    def __init__(
        self,
        formats: AccessLogFormats | None = None,
        path: Path | None = None,
        kept: int = KEPT_LINES,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.formats = formats or load_formats()
        self.path = path
        self.max_file_bytes = max_file_bytes
        self._kept: deque[str] = deque(maxlen=kept)
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._file_bytes = 0
        """The file's size, counted here: asking the file (``tell``) cost a system call a line."""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    def visitor(self, context: Mapping[str, object]) -> str:
        return self._write(render(self.formats.visitors, context))

    def agent(self, context: Mapping[str, object]) -> str:
        return self._write(render(self.formats.agents, context))

    def visitor_socket(self, context: Mapping[str, object]) -> str:
        """A visitor-socket API line (its ``$context`` is the agents' API's kind)."""
        return self._write(render(self.formats.visitor_sockets, context))

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every line from now on (``make cost`` counts their bytes)."""
        self._listeners.append(listener)

    def lines(self) -> list[str]:
        """The lines kept in memory, oldest first."""
        with self._lock:
            return list(self._kept)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _write(self, line: str) -> str:
        with self._lock:
            self._kept.append(line)
            if self._file is not None:
                data = (line + "\n").encode("utf-8")
                self._file.write(data)
                self._file.flush()
                self._file_bytes += len(data)
                if self._file_bytes > self.max_file_bytes:
                    self._rotate()
        for listener in self._listeners:
            listener(line)
        return line

    def _rotate(self) -> None:
        assert self._file is not None and self.path is not None
        self._file.close()
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._open()

    def _open(self) -> None:
        assert self.path is not None
        self._file = self.path.open("ab")
        self._file_bytes = self._file.seek(0, os.SEEK_END)
