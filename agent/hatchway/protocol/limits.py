"""The Hatchway protocol's limits: every number that bounds what crosses the WebSocket, each
with where it comes from (API Gateway's and Lambda's rules, mostly). Nothing else defines one.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = 2
"""Bumped on any incompatible change; the relay refuses a hello with another version."""

# --- Limits -----------------------------------------------------------------------------------

MAX_FRAME_BYTES = 32 * 1024
"""Largest WebSocket frame either side sends (API Gateway's WebSocket frame size limit)."""

MAX_MESSAGE_BYTES = 128 * 1024
"""Largest WebSocket message (API Gateway's message limit; beyond it the socket closes 1009)."""

MAX_BODY_BYTES = 4 * 1024 * 1024 + 256 * 1024
"""Largest request or response body that passes through a Lambda function (4.25 MiB). Base64
makes it 5.67 MiB, which leaves room for headers inside Lambda's 6 MB synchronous payload limit
that both directions pass through."""

MAX_BLOB_BYTES = 64 * 1024 * 1024
"""Largest response body a tunnel that opted in (``large_responses="redirect"``) may hand the
relay's blob store; visitors fetch it straight from there, not through Lambda."""

MAX_HEAD_BYTES = 16 * 1024
"""Largest encoded head (method, path, query, headers; or status and headers) of one message."""

MAX_ANSWER_FIELDS_BYTES = 512
"""What an answer's message and stored form hold besides the head and the body: type, id,
status, body encoding, and the JSON around them."""

MAX_STORED_ANSWER_BYTES = (MAX_MESSAGE_BYTES - MAX_ANSWER_FIELDS_BYTES) // 4 * 3
"""Largest stored form of an answer (its head, a newline, the packed body): the message carries
it base64-encoded, and API Gateway writes it to DynamoDB as it is."""

MAX_BLOB_URL_LENGTH = 4096
"""Longest presigned blob URL a request carries (S3's carry a session token: ~1.5 KB)."""

MAX_INLINE_BODY_BYTES = 80 * 1024
"""Largest encoded (possibly compressed) body carried inside a message: with the largest head
and blob URL it still fits ``MAX_MESSAGE_BYTES`` after base64."""

MAX_INLINE_RESPONSE_BYTES = MAX_STORED_ANSWER_BYTES - MAX_HEAD_BYTES - MAX_ANSWER_FIELDS_BYTES
"""Largest packed response body an answer carries inline, so that the largest head still fits
(a little under ``MAX_INLINE_BODY_BYTES``: the head travels base64-encoded too)."""

MIN_COMPRESS_BYTES = 512
"""Bodies shorter than this are never compressed: zlib's gain cannot pay for its header."""

MAX_HEADERS = 200
"""Most header lines in one request or response head."""

MAX_ID_LENGTH = 64
"""Longest request id."""

MAX_TUNNELS_PER_CONNECTION = 16
"""Most tunnels one agent connection may claim in its hello."""

NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
"""A tunnel name is one DNS label: lowercase letters, digits and inner hyphens, 1-63 chars."""

RESERVED_NAMES = frozenset({"connect", "www", "api", "admin", "t"})
"""Names no agent may claim: ``connect`` is the agent endpoint on a custom domain."""

MAX_GUARDS = 8
"""Most guard names a welcome lists per tunnel (there are two kinds today)."""

MAX_GUARD_LENGTH = 40
"""Longest guard name (``basic_auth``, ``webhook:<provider>``)."""

MAX_CUSTOM_URLS = 8
"""Most custom-hostname URLs a welcome lists per tunnel (the relay lists the first ones)."""

MAX_URL_LENGTH = 300
"""Longest URL a welcome carries: a 253-character hostname with scheme, port and slash."""

MAX_MESSAGE_TEXT = 1024
"""Longest human-readable message carried in an error or a fault."""

HEARTBEAT_SECONDS = 60.0
"""How often an agent pings by default; well inside API Gateway's 10 minute idle timeout."""

MIN_HEARTBEAT_SECONDS = 1.0
MAX_HEARTBEAT_SECONDS = 540.0
"""Heartbeats a welcome may ask for: not a busy loop, and inside the 10 minute idle timeout."""

CLAIM_LEASE_SECONDS = 600.0
"""How long a tunnel claim lasts without a ping from its connection (the idle timeout)."""

MAX_POOL_MEMBERS = 32
"""Most agents one pool (several agents serving one name, ``TunnelSpec.pool``) may hold: the
claim lists every member in one DynamoDB item (400 KB at most; a member takes ~200 bytes), and
a waiting relay function spreads requests over what it read."""

FAULT_CODES = {413: "response-too-large", 503: "tunnel-busy", 504: "local-app-timeout"}
"""Statuses an agent's fault may ask the relay to answer with, and the error code the visitor
sees for each (any other status in a fault becomes 502, ``local-app-error`` or
``agent-error``); the agent counts its answers under the same names."""

MAX_ERROR_CAUSES = 8
"""Most error causes one ping reports per tunnel (the agent sends the most frequent). The relay
keeps them in the claim item each ping rewrites anyway, so they must stay small: eight causes
are ~250 bytes, times ``MAX_POOL_MEMBERS`` still far below DynamoDB's 400 KB item."""

MAX_CAUSE_LENGTH = 32
"""Longest error cause name (``local-app-refused``, ``app-5xx``, the relay's error codes)."""

MAX_REPORTED_COUNT = 2**53
"""Largest count a ping carries: JSON numbers (and the dashboard's JavaScript) are exact up to
it, and no connection lives long enough to answer more."""

MAX_LATENCY_MS = 60 * 60 * 1000
"""Largest latency a ping reports, in milliseconds: an answer that took longer (an app that
answered long after the relay gave up) is reported as this."""

MAX_CONNECTION_SECONDS = 2 * 60 * 60
"""API Gateway closes every WebSocket connection after two hours."""

CONNECTION_ROTATE_SECONDS = MAX_CONNECTION_SECONDS - 10 * 60
"""Agents open a fresh connection this long after connecting, before the platform cuts them off."""

WEBHOOK_PROVIDERS = frozenset({"github", "stripe", "slack"})
"""Webhook senders whose signatures the relay can verify for a tunnel (see relay guards)."""

LARGE_RESPONSE_MODES = frozenset({"refuse", "redirect"})
"""What the relay does with a response body above ``MAX_BODY_BYTES``: answer 413 naming the
limit (the default), or redirect the visitor (302) to a short-lived URL of the blob."""

MAX_CIDRS = 32
"""Most address ranges one tunnel's allow-list (and, separately, its deny-list) may hold."""

MAX_RATE_PER_SECOND = 10_000.0
"""Highest per-tunnel request rate a tunnel may ask the relay to enforce (above it the
platform's own throttles apply first)."""

MAX_BURST = 100_000
"""Largest burst a per-tunnel rate limit may allow."""

SHARE_OPS = frozenset({"create", "list", "revoke"})
"""What an agent may ask of the relay about share links (``ShareOp``)."""

MAX_SHARE_SECONDS = 30 * 24 * 3600
"""Longest a share link may live (30 days)."""

MAX_SHARES_LISTED = 100
"""Most share links one ``ShareReply`` lists."""

MAX_SHARE_PATH_LENGTH = 512
"""Longest path prefix a share link may be limited to."""

MAX_SHARE_USES = 1_000_000
"""Largest use count a share link may be limited to."""

MAX_WEBHOOK_SECRET_LENGTH = 256
"""Longest webhook signing secret an agent may hand the relay (providers use 32-72 chars)."""

MAX_BASIC_AUTH_LENGTH = 256
"""Longest ``user:password`` a tunnel may be protected with."""

BASIC_AUTH_SCHEME = "pbkdf2-sha256"
"""How the agent hashes a tunnel's basic-auth credentials before sending them: the relay only
ever holds (and stores) this salted hash, never the password."""

BASIC_AUTH_ITERATIONS = 10_000
"""PBKDF2 rounds the agent uses. The relay repeats the derivation for each new credential a
visitor presents (about 3 ms), so this balances a leaked table against per-request cost."""

MIN_BASIC_AUTH_ITERATIONS = 1_000
MAX_BASIC_AUTH_ITERATIONS = 100_000
"""Rounds the relay accepts in a hash: enough to matter, and bounded so that one tunnel cannot
make the relay spend more than ~30 ms of CPU on a visitor's guess."""

BASIC_AUTH_SALT_BYTES = 16
"""Random salt per tunnel per agent run."""

RESPONSE_TIMEOUT_SECONDS = 28.0
"""How long the relay waits for an agent's response: under the HTTP API's 30 s ceiling, so the
visitor gets the relay's own 504 page instead of the gateway's bare one."""

MAX_CHUNK_BYTES = 64 * 1024
"""Most bytes of a streamed response one ``Chunk`` message carries: with base64 and its fields
it stays well inside ``MAX_MESSAGE_BYTES``. An app writing faster fills several."""

MAX_CHUNK_SEQ = 2**31 - 1
"""Highest chunk number: far beyond what ``STREAM_MAX_SECONDS`` of writes can reach."""

STREAM_IDLE_SECONDS = 120.0
"""A streamed response (a tunnel started with ``--stream``) ends, cut, when the local app sends
nothing for this long: SSE servers send a comment every 15 to 30 s to keep proxies open."""

STREAM_MAX_SECONDS = 3600.0
"""The longest a streamed response may run; a visitor's EventSource reconnects by itself."""

STREAM_ROTATE_SECONDS = MAX_CONNECTION_SECONDS - STREAM_MAX_SECONDS - 10 * 60
"""An agent serving a tunnel with ``--stream`` opens a fresh connection this long after
connecting (instead of after ``CONNECTION_ROTATE_SECONDS``). A stream stays on the connection
its request came on until it ends, as the relay reads its chunks from that connection only; so
the connection a rotation leaves behind must have room for a whole stream before the platform's
cut: ``STREAM_MAX_SECONDS``, ``STREAM_IDLE_SECONDS`` of silence, and a margin."""

WORKING_MARK_SECONDS = 3.0
"""An agent tells the relay about a request it has held this long without answering (``Working``),
so the relay can tell a slow app behind a live agent from an agent that stopped reacting."""

AGENT_SILENCE_SECONDS = 8.0
"""A request that has neither an answer nor a ``Working`` mark this long after it was posted
gets 502 agent-unresponsive: the agent is connected but not reacting (stopped, or stuck)."""

RESTART_HOLD_SECONDS = 10.0
"""How long the relay holds a visitor request for a tunnel whose lone agent said it is leaving
(``Leaving``), waiting for an agent of the same token to claim the name again (a restart):
time for a process to start and say hello, well within ``RESPONSE_TIMEOUT_SECONDS``."""

MAX_INSTANCE_LENGTH = 64
"""Longest agent instance id (random per agent process)."""

MAX_JSON_DEPTH = 8
"""Deepest nesting a message may have (ours has 4); deeper input is refused. The parser cannot
be made to exhaust the stack first: its recursion stops at the interpreter's limit, and that
error is a refusal too."""

# HTTP/1.1 hop-by-hop headers (RFC 9110 section 7.6.1): meaningful for one connection only, so
# neither the relay nor the agent forwards them. Content-Length is recomputed from the body.
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

# --- Visitors' WebSockets ----------------------------------------------------------------------

MAX_SOCKET_MESSAGE_BYTES = MAX_STORED_ANSWER_BYTES
"""Most bytes of one WebSocket message between a visitor and the local app, either way: it
crosses the relay base64-encoded inside one protocol message (``SocketFrame``), which must fit
``MAX_MESSAGE_BYTES``. API Gateway itself takes visitor messages up to 128 KB; larger ones than
this close the socket with 1009 and a reason that names this limit."""

SOCKET_IDLE_SECONDS = 10 * 60
"""API Gateway closes a WebSocket with no message either way for this long (1001); the agent
closes the app's side of a socket idle this long too, in case the relay's close never came."""

SOCKET_MAX_SECONDS = MAX_CONNECTION_SECONDS
"""API Gateway closes any WebSocket this long after it opened (1001); a visitor's socket too."""

SOCKET_ACK_SECONDS = 30.0
"""How long the agent waits for the relay to confirm one app message reached the visitor
(``SocketAck``) before it closes the socket (1011): the next message waits for the confirmation,
which is what keeps a socket's messages in order across concurrent relay invocations."""

MAX_SOCKETS_PER_CONNECTION = 256
"""Most visitor WebSockets one agent connection carries at once; a visitor past it is refused
with 503 before the app is reached."""

MAX_SOCKET_ID_LENGTH = 128
"""Longest visitor socket id (API Gateway connection ids are 16 characters of base64)."""

MAX_CLOSE_REASON_BYTES = 123
"""Longest close reason a WebSocket close frame carries (RFC 6455 5.5: 125 bytes of payload,
two of them the code)."""

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
"""The visitor left, the agent stopped, or API Gateway's idle or duration limit was reached."""
CLOSE_UNSUPPORTED_DATA = 1003
"""A binary message where the relay carries text only (API Gateway's WebSocket API)."""
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
"""A message past ``MAX_SOCKET_MESSAGE_BYTES``."""
CLOSE_INTERNAL = 1011
"""The other side failed: the app, the agent or the relay (the reason says which)."""
