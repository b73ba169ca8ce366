"""Where a relay is reachable and its timing: one value the composition roots build (from the
Lambda environment, or ``hatchway-local``'s options) and every part of the relay reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hatchway import protocol

LIVENESS_CHECK_SECONDS = 0.5
"""How often a waiting visitor request checks that its agent is still connected."""

REFUSAL_FLUSH_SECONDS = 10.0
"""A warm relay function adds what it answered for a tunnel itself (refusals, its own 502s and
504s) to the tunnel's claim at most this often: one write per tunnel per interval, however many
visitors a rate limit turns away (a refusal must not cost a write of its own)."""


@dataclass(frozen=True)
class RelayConfig:
    """Where the relay is reachable, and its timing. URL templates contain ``{name}``."""

    path_url: str
    subdomain_url: str | None = None
    domain: str | None = None
    custom_hostnames: Mapping[str, str] = field(default_factory=dict)
    """Hostnames users bring -> the tunnel each serves (see ``hostnames``)."""
    custom_hostname_url: str = "https://{host}/"
    """How a custom hostname's URL is shown to its agent."""
    response_timeout: float = protocol.RESPONSE_TIMEOUT_SECONDS
    heartbeat_seconds: float = protocol.HEARTBEAT_SECONDS
    claim_lease_seconds: float = protocol.CLAIM_LEASE_SECONDS
    liveness_check_seconds: float = LIVENESS_CHECK_SECONDS
    agent_silence_seconds: float = protocol.AGENT_SILENCE_SECONDS
    restart_hold_seconds: float = protocol.RESTART_HOLD_SECONDS
    """How long visitors of a name whose lone agent left wait for its restart."""
    refusal_flush_seconds: float = REFUSAL_FLUSH_SECONDS
    """0 on a store where a write is free (``hatchway-local``'s memory): every one at once."""
    streams: bool = False
    """Whether the front in use passes a response on as it comes: ``hatchway-local``'s does;
    API Gateway's HTTP API buffers every Lambda response, so a relay on AWS refuses tunnels
    that ask to stream (see ``docs/aws.md``)."""
    socket_binary: bool = False
    """Whether visitors' sockets carry binary messages: ``hatchway-local``'s do; API Gateway's
    WebSocket API closes a visitor's binary message with 1003, so a relay on AWS carries text
    only and closes a socket whose app sends binary, in words."""
    front_secret: str | None = None
    """The secret the front (CloudFront) sends with each visitor socket it passes on; a
    ``$connect`` without it is refused. None: no front (``hatchway-local`` is its own)."""
    inline_response_bytes: int = protocol.MAX_INLINE_RESPONSE_BYTES
    """Largest packed response body an agent sends inline; larger ones go to the blob store.
    On DynamoDB this is where one stored item stops being cheaper than S3 (``prices``)."""
