"""Share links from the agent's side: ``hatchway share`` opens its own short WebSocket to the
relay with the user's token, asks for one operation (create, list, revoke) and prints the answer.

No tunnel needs to be running for ``list`` and ``revoke``; ``create`` works for a tunnel the token
serves now or has reserved. The relay answers with the links, and after ``create`` with the new
link, whose secret it shows this once and keeps only hashed.
"""

from __future__ import annotations

import time

from hatchway import protocol
from hatchway.errors import HatchwayError, RelayUnreachable
from hatchway.protocol import codec
from hatchway.serving.connection import send_message
from hatchway.transport import handshake

SHARE_TIMEOUT_SECONDS = 15.0
"""How long one share operation may take, connecting included."""

MAX_MESSAGES_SKIPPED = 16
"""Messages other than the answer a share connection reads past (the relay sends none today)."""


class ShareRefused(HatchwayError):
    """The relay would not do what was asked (not your tunnel, no such link)."""


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``7d`` (or plain seconds) → seconds."""
    value = text.strip().lower()
    unit = DURATION_UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h or 7d") from None
    if not 0 < seconds <= protocol.MAX_SHARE_SECONDS:
        raise ValueError(f"a share link lives 1 s to {protocol.MAX_SHARE_SECONDS // 86400} days")
    return seconds


def request(server: str, token: str, op: protocol.ShareOp) -> protocol.ShareReply:
    """Send ``op`` on a connection of its own and return the relay's answer."""
    link = handshake.connect(server, token, SHARE_TIMEOUT_SECONDS)
    try:
        send_message(link.writer, op)
        deadline = time.monotonic() + SHARE_TIMEOUT_SECONDS
        for _ in range(MAX_MESSAGES_SKIPPED):
            link.sock.settimeout(max(deadline - time.monotonic(), 0.1))
            answer = codec.decode(link.receive_text())
            if isinstance(answer, protocol.ShareReply):
                return answer
            if isinstance(answer, protocol.Error):
                raise ShareRefused(answer.message)
        raise RelayUnreachable(f"the relay at {server} did not answer the share request")
    except protocol.ProtocolError as exc:
        raise RelayUnreachable(f"the relay sent something this agent cannot read: {exc}") from None
    except OSError as exc:
        raise RelayUnreachable(f"the relay at {server} did not answer: {exc}") from None
    finally:
        link.close()


def describe(share: protocol.ShareInfo, now: float) -> str:
    """One line of ``hatchway share list``."""
    if share.revoked:
        state = "revoked"
    elif now >= share.expires_at:
        state = "expired"
    else:
        left = share.expires_at - now
        state = (
            f"expires in {left / 3600:.1f} h" if left >= 3600 else f"expires in {left / 60:.0f} min"
        )
    uses = f"{share.uses}/{share.max_uses} uses" if share.max_uses else f"{share.uses} uses"
    methods = ",".join(share.methods)
    return f"{share.id}  {share.tunnel}  {methods} {share.path}  {uses}  {state}"
