"""Share links end to end, in both store modes: the agent's share client asks the relay over a
WebSocket of its own, a visitor opens the link on a password-protected tunnel, trades it for a
cookie and browses the shared path; the app never sees the secret; a revoked link stops at once."""

from __future__ import annotations

import subprocess

import pytest

import hatchway
from hatchway import protocol
from hatchway.errors import TokenRefused
from hatchway.serving import sharing
from hatchway_local.server import LocalServer
from support.local_app import LocalApp
from support.processes import BIN
from support.visitor import Answer, visit

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("isolated_settings")]

TOKEN = "hw_e2e-token-0123456789"  # what make_relay registers


def get(relay: LocalServer, target: str, cookie: str = "", method: str = "GET") -> Answer:
    headers = [("Cookie", cookie)] if cookie else []
    return visit(relay.port, method, target, f"shared.localhost:{relay.port}", headers)


def test_a_share_link_opens_a_protected_tunnel_for_its_path_only(
    relay: LocalServer, app: LocalApp
) -> None:
    with hatchway.connect(
        app.port, subdomain="shared", server=relay.agent_url, token=TOKEN, basic_auth="a:pw"
    ):
        created = sharing.request(
            relay.agent_url,
            TOKEN,
            protocol.ShareOp("create", "shared", expires_in=600, path="/echo/", max_uses=5),
        )
        link = created.link
        assert link.startswith(f"http://shared.localhost:{relay.port}/echo/?hatchway_share=")
        target = link.split(str(relay.port), 1)[1]

        opened = get(relay, target)
        assert opened.status == 303 and opened.header("Location") == "/echo/"
        cookie = (opened.header("Set-Cookie") or "").split(";")[0]
        assert app.requests == []  # the trade happens at the relay

        inside = get(relay, "/echo/report", cookie)
        assert inside.status == 200
        seen = app.requests[-1]
        assert "hatchway_share" not in repr(seen.headers) and "hatchway_share" not in seen.target

        assert get(relay, "/other", cookie).status == 403  # outside the shared path
        assert get(relay, "/echo/report", cookie, method="POST").status == 403  # GET/HEAD only
        assert get(relay, "/echo/report").status == 401  # no link: the password again

        listed = sharing.request(relay.agent_url, TOKEN, protocol.ShareOp("list", "shared"))
        (share,) = listed.shares
        assert share.uses == 1 and not listed.link  # the secret is never shown again

        sharing.request(relay.agent_url, TOKEN, protocol.ShareOp("revoke", share_id=share.id))
        revoked = get(relay, "/echo/report", cookie)
        assert revoked.status == 403 and revoked.header("x-hatchway-error") == "share-revoked"


def test_share_requests_need_a_known_token(relay: LocalServer) -> None:
    with pytest.raises(TokenRefused):
        sharing.request(relay.agent_url, "hw_wrong-token", protocol.ShareOp("list"))


def test_a_token_cannot_share_a_tunnel_it_does_not_serve(relay: LocalServer) -> None:
    with pytest.raises(sharing.ShareRefused, match="not yours"):
        sharing.request(
            relay.agent_url, TOKEN, protocol.ShareOp("create", "nobodys", expires_in=60)
        )


def hatchway_cli(relay: LocalServer, *words: str) -> subprocess.CompletedProcess[str]:
    """The ``hatchway`` command as a user types it (bounded in time)."""
    argv = [str(BIN / "hatchway"), *words, "--server", relay.agent_url, "--token", TOKEN]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_share_command_creates_lists_and_revokes(relay: LocalServer, app: LocalApp) -> None:
    with hatchway.connect(app.port, subdomain="shared", server=relay.agent_url, token=TOKEN):
        created = hatchway_cli(relay, "share", "shared", "--expires", "10m", "--path", "/echo/")
        assert created.returncode == 0, created.stderr
        link = created.stdout.split("Share link (shown once): ", 1)[1].split()[0]
        assert "/echo/?hatchway_share=" in link
        share_id = link.rsplit("=", 1)[1].split(".", 1)[0]
        listed = hatchway_cli(relay, "share", "list")
        assert share_id in listed.stdout and "GET,HEAD /echo/" in listed.stdout
        assert link.rsplit("=", 1)[1] not in listed.stdout  # the secret is shown once only
        revoked = hatchway_cli(relay, "share", "revoke", share_id)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        wrong = hatchway_cli(relay, "share", "nobodys")
        assert wrong.returncode == 1 and "not yours" in wrong.stderr
