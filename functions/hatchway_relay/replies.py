"""What a visitor sent, what its visit waits on, and what the visitor gets back: the relay's
side of one HTTP request, and its own error pages (plain text that says which side failed,
with ``x-hatchway-error``)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from http import HTTPStatus

from hatchway import protocol


@dataclass(frozen=True)
class Visit:
    """A visitor's request as the HTTP API delivered it. ``path`` and ``query`` are raw."""

    method: str
    host: str
    path: str
    query: str = ""
    headers: protocol.Headers = ()
    body: bytes = b""
    source_ip: str = ""
    received_at: float | None = None
    """When the gateway received the request (``requestContext.timeEpoch``): its 30 s
    integration timeout counts from then, cold start included."""
    time_left: float | None = None
    """Seconds the function has left (Lambda's ``get_remaining_time_in_millis``)."""
    socket: str = ""
    """A visitor's WebSocket being opened: its id on the visitor-socket API (``sockets``)."""


@dataclass(frozen=True)
class Route:
    """Where a visitor request goes: the tunnel, the path its app sees, and in path mode the
    ``/t/<name>`` prefix the visitor's browser sees (empty otherwise)."""

    name: str
    path: str
    prefix: str = ""


@dataclass(frozen=True)
class AwaitAnswer:
    """The one thing a visit waits on: the stored answer to ``request_id``, until ``until`` (a
    time), not looked for before ``hint`` seconds from now (see ``Store.wait_response``)."""

    request_id: str
    until: float
    hint: float = 0.0


@dataclass(frozen=True)
class Reply:
    """What the visitor gets back."""

    status: int
    headers: protocol.Headers = ()
    body: bytes = b""


@dataclass(frozen=True)
class AwaitChunk:
    """A streamed body's wait for piece ``seq`` of ``request_id``'s stream, until ``until``."""

    request_id: str
    seq: int
    until: float


BodySteps = Generator[AwaitChunk | bytes, bytes | None, None]
"""A streamed body as steps: it yields each wait for the next stored chunk (``AwaitChunk``; it
is sent back the chunk, or None when none came by then) and each piece of the body to send
(bytes; it is sent back None), and returns at the body's end. ``StreamCut`` raised from it
means the body must be cut, not ended as if whole. Its first step is an empty piece, taken
before anything else: a generator closed before it started would skip its own cleanup."""


class StreamCut(Exception):
    """A streamed body broke off (the app failed, the agent went, a limit passed): the visitor's
    connection is closed mid-body, so that no client takes the part for the whole."""


@dataclass(frozen=True)
class StreamedReply(Reply):
    """A reply whose body follows as the app writes it (a tunnel started with ``--stream``)."""

    body_steps: BodySteps | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class AgentReply(Reply):
    """A reply the agent made (its fault answer, as an error page): the agent counts it in its
    own pings, so the relay does not count it again."""


def error_reply(
    status: int, code: str, message: str, extra_headers: protocol.Headers = ()
) -> Reply:
    """A plain-text error page; ``x-hatchway-error`` lets scripts tell our errors from the app's."""
    reason = _REASONS.get(status) or _phrase(status)
    body = f"{status} {reason}\n\n{message}\n\n-- hatchway relay\n".encode()
    return Reply(
        status,
        (
            ("content-type", "text/plain; charset=utf-8"),
            ("cache-control", "no-store"),
            ("x-hatchway-error", code),
            *extra_headers,
        ),
        body,
    )


def _phrase(status: int) -> str:
    """The status's reason phrase (RFC 9110), whatever the status."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
